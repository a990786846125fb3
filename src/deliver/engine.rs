//! The per-core delivery engine: workers take due messages from the [`Queue`], deliver
//! each pending recipient group once over a warm or new connection, classify what happened,
//! write the progress to the spool, and either finish the message or schedule its retry.
//!
//! Everything here runs on the owner core; the queue and the connection pool are plain
//! `RefCell`s whose borrows never cross an `.await`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::Semaphore;

use super::connection::{AttemptError, Connection, Phase, Timeouts};
use super::outcome::{Outcome, Remote, classify};
use super::pool::Pool;
use super::queue::{Entry, Queue};
use super::retry::{self, Next};
use crate::config::DeliveryConfig;
use crate::message::{BodyType, Envelope, Message, MessageId};
use crate::observe::log::now_ms;
use crate::observe::{Event, Log};
use crate::route::plan::{self, Hop, Route};
use crate::route::resolver::{DnsError, Resolver};
use crate::spool::{RcptState, RecoveredMessage, Spool, Update};

/// Hosts tried per route in one attempt, and addresses tried per host.
const HOSTS_PER_ATTEMPT_MAX_COUNT: usize = 5;
const ADDRS_PER_HOST_MAX_COUNT: usize = 2;
/// How often the scheduler looks for due retries when nothing is due sooner.
const SCHEDULER_TICK: Duration = Duration::from_millis(200);

/// A core's delivery engine.
pub struct Deliverer {
    config: DeliveryConfig,
    memory_max_bytes: usize,
    timeouts: Timeouts,
    queue: RefCell<Queue>,
    /// Counts the messages in the ready line; workers wait on it.
    ready: Semaphore,
    pool: RefCell<Pool>,
    spool: Spool,
    resolver: Resolver,
    log: Log,
}

impl Deliverer {
    pub fn new(
        config: DeliveryConfig,
        memory_max_bytes: usize,
        spool: Spool,
        resolver: Resolver,
        log: Log,
    ) -> Rc<Deliverer> {
        let timeouts = Timeouts::from(&config);
        Rc::new(Deliverer {
            config,
            memory_max_bytes,
            timeouts,
            queue: RefCell::new(Queue::default()),
            ready: Semaphore::new(0),
            pool: RefCell::new(Pool::default()),
            spool,
            resolver,
            log,
        })
    }

    /// Starts the workers, the retry scheduler and the idle-connection reaper on this core.
    pub fn start(self: &Rc<Self>) {
        for _ in 0..self.config.concurrency_per_core_max_count {
            let me = self.clone();
            glommio::spawn_local(async move { me.worker().await }).detach();
        }
        let me = self.clone();
        glommio::spawn_local(async move { me.scheduler().await }).detach();
        let me = self.clone();
        glommio::spawn_local(async move { me.reaper().await }).detach();
    }

    /// Queues a message that was just spooled: its first attempt is due now.
    pub fn enqueue(&self, message: Message) {
        let id = message.envelope.id;
        self.insert(id, Entry::new(message), None);
    }

    /// Queues a message recovered from the spool at start.
    pub fn enqueue_recovered(&self, recovered: RecoveredMessage) {
        let id = recovered.message.envelope.id;
        let mut entry = Entry::new(recovered.message);
        if !recovered.body_loaded {
            entry.data = None;
        }
        if recovered.rcpt_states.len() == entry.states.len() {
            entry.states = recovered.rcpt_states;
        }
        entry.attempts = recovered.attempts;
        let due = (recovered.next_attempt_ms > now_ms()).then_some(recovered.next_attempt_ms);
        self.insert(id, entry, due);
    }

    fn insert(&self, id: MessageId, entry: Entry, due_ms: Option<u64>) {
        let mut q = self.queue.borrow_mut();
        if q.insert(id, entry, due_ms) {
            if q.memory_bytes() > self.memory_max_bytes {
                // Over the memory budget: the spool has it; read it back when it is due.
                q.evict_data(&id);
            }
            if due_ms.is_none() {
                self.ready.signal(1);
            }
        }
    }

    /// Messages queued on this core (ready, scheduled or in flight).
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    async fn worker(self: Rc<Self>) {
        loop {
            if self.ready.acquire(1).await.is_err() {
                return;
            }
            let next = self.queue.borrow_mut().pop_ready();
            if let Some(id) = next {
                self.attempt(id).await;
            }
        }
    }

    async fn scheduler(self: Rc<Self>) {
        loop {
            let now = now_ms();
            let (moved, next) = {
                let mut q = self.queue.borrow_mut();
                (q.promote_due(now), q.next_due_ms())
            };
            if moved > 0 {
                self.ready.signal(moved as u64);
            }
            let wait = next
                .map(|at| Duration::from_millis(at.saturating_sub(now)))
                .unwrap_or(SCHEDULER_TICK)
                .clamp(Duration::from_millis(5), SCHEDULER_TICK);
            glommio::timer::sleep(wait).await;
        }
    }

    async fn reaper(self: Rc<Self>) {
        let idle = self.config.idle_connection;
        loop {
            glommio::timer::sleep(idle.max(Duration::from_millis(100)) / 2).await;
            let expired = self.pool.borrow_mut().expired(idle);
            for conn in expired {
                glommio::spawn_local(conn.quit()).detach();
            }
        }
    }

    /// One attempt at every pending recipient of a message.
    async fn attempt(&self, id: MessageId) {
        let Some((envelope, data, pending)) = self.snapshot(&id) else {
            return;
        };
        let (trace, body) = match data {
            Some(d) => d,
            None => match self.spool.load(id).await {
                Ok(m) => {
                    self.queue
                        .borrow_mut()
                        .restore_data(&id, m.trace.clone(), m.body.clone());
                    (m.trace, m.body)
                }
                Err(e) => {
                    self.log.emit(Event::Error {
                        what: format!("cannot read message {id} back from the spool: {e}"),
                    });
                    let at = now_ms() + retry::delay_after(&self.config.retry_schedule, 1).as_millis() as u64;
                    self.queue.borrow_mut().reschedule(id, at);
                    return;
                }
            },
        };
        let chunks: Vec<Bytes> = std::iter::once(trace).chain(body).collect();
        let mut outcomes = Vec::with_capacity(pending.len());
        for (route, idxs) in self.routes(&envelope, &pending) {
            let group = self.deliver_route(&route, &envelope, &idxs, &chunks).await;
            outcomes.extend(idxs.into_iter().zip(group));
        }
        self.settle(id, &envelope, outcomes).await;
    }

    /// The envelope, data and pending recipients of a queued message.
    #[allow(clippy::type_complexity)]
    fn snapshot(&self, id: &MessageId) -> Option<(Rc<Envelope>, Option<(Bytes, Vec<Bytes>)>, Vec<usize>)> {
        let q = self.queue.borrow();
        let e = q.get(id)?;
        Some((e.envelope.clone(), e.data.clone(), e.pending()))
    }

    /// Groups the pending recipients by route, preserving envelope order within a group.
    fn routes(&self, envelope: &Envelope, pending: &[usize]) -> BTreeMap<RouteKey, Vec<usize>> {
        let mut groups: BTreeMap<RouteKey, Vec<usize>> = BTreeMap::new();
        for &i in pending {
            let route = Route::for_domain(&self.config, envelope.rcpts[i].domain());
            groups.entry(RouteKey(route)).or_default().push(i);
        }
        groups
    }

    /// Delivers one route's recipients once: the route's hosts in order until one gives
    /// an answer about the recipients.
    async fn deliver_route(
        &self,
        route: &RouteKey,
        envelope: &Envelope,
        idxs: &[usize],
        chunks: &[Bytes],
    ) -> Vec<Outcome> {
        let n = idxs.len();
        let hops = match plan::hops(&self.resolver, &route.0, self.config.mx_port).await {
            Ok(h) if !h.is_empty() => h,
            Ok(_) => return vec![Outcome::Deferred(format!("no hosts for {}", route.describe())); n],
            Err(e) => return vec![dns_outcome(&route.0, &e); n],
        };
        let rcpts: Vec<&str> = idxs.iter().map(|&i| envelope.rcpts[i].addr.as_str()).collect();
        let mut last = format!("no host for {} could be reached", route.describe());
        for hop in hops.iter().take(HOSTS_PER_ATTEMPT_MAX_COUNT) {
            let addrs = match self.resolver.addresses(&hop.host).await {
                Ok(a) => a,
                Err(e) => {
                    last = format!("{}: {e}", hop.host);
                    continue;
                }
            };
            for ip in addrs.into_iter().take(ADDRS_PER_HOST_MAX_COUNT) {
                let addr = SocketAddr::new(ip, hop.port);
                match self.transact(addr, hop, envelope, &rcpts, chunks).await {
                    Transacted::Answered(outcomes) => return outcomes,
                    Transacted::TryNext(reason) => last = reason,
                }
            }
        }
        vec![Outcome::Deferred(last); n]
    }

    /// One transaction with one address, over a pooled connection when there is one.
    async fn transact(
        &self,
        addr: SocketAddr,
        hop: &Hop,
        envelope: &Envelope,
        rcpts: &[&str],
        chunks: &[Bytes],
    ) -> Transacted {
        let eight_bit = envelope.body_type == BodyType::EightBitMime;
        let pooled = self.pool.borrow_mut().take(addr, self.config.idle_connection);
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => match self.open(addr, hop).await {
                Ok(c) => c,
                Err(reason) => return Transacted::TryNext(reason),
            },
        };
        self.log.emit(Event::Attempt {
            msg: envelope.id,
            account: envelope.account.clone(),
            rcpts: rcpts.len(),
            host: format!("{}[{}]", hop.host, addr),
        });
        let mut result = conn.send(&envelope.mail_from, rcpts, chunks, eight_bit).await;
        if reused && matches!(&result, Err(e) if before_recipients(e)) {
            // A warm connection the remote had already closed: not this message's fault.
            conn = match self.open(addr, hop).await {
                Ok(c) => c,
                Err(reason) => return Transacted::TryNext(reason),
            };
            result = conn.send(&envelope.mail_from, rcpts, chunks, eight_bit).await;
        }
        let remote = Remote {
            host: &hop.host,
            addr,
        };
        if let Err(e) = &result
            && before_recipients(e)
        {
            return Transacted::TryNext(format!("{remote}: {e}"));
        }
        let outcomes = classify(&result, rcpts.len(), remote);
        // A healthy connection goes back to the pool; one that served its share is closed
        // politely; a broken one is just dropped.
        let spent = match result.is_ok() && conn.is_usable() {
            true => self
                .pool
                .borrow_mut()
                .put(conn, self.config.messages_per_connection_max_count),
            false => None,
        };
        if let Some(conn) = spent {
            glommio::spawn_local(conn.quit()).detach();
        }
        Transacted::Answered(outcomes)
    }

    async fn open(&self, addr: SocketAddr, hop: &Hop) -> Result<Connection, String> {
        Connection::open(addr, &self.config.helo_name, &self.timeouts)
            .await
            .map_err(|e| format!("{}[{}]: {e}", hop.host, addr))
    }

    /// Applies one attempt's outcomes: log them, write them to the spool, and finish or
    /// reschedule the message.
    async fn settle(&self, id: MessageId, envelope: &Envelope, outcomes: Vec<(usize, Outcome)>) {
        let now = now_ms();
        let mut changes = Vec::new();
        let mut deferred = Vec::new();
        let attempts = {
            let mut q = self.queue.borrow_mut();
            let Some(entry) = q.get_mut(&id) else { return };
            for (i, outcome) in outcomes {
                let rcpt = envelope.rcpts[i].addr.clone();
                match outcome {
                    Outcome::Delivered(reply) => {
                        entry.states[i] = RcptState::Delivered;
                        changes.push((i as u32, RcptState::Delivered));
                        self.log.emit(Event::Delivered {
                            msg: id,
                            account: envelope.account.clone(),
                            rcpt,
                            host: String::new(),
                            reply,
                        });
                    }
                    Outcome::Failed(reason) => {
                        entry.states[i] = RcptState::Failed;
                        changes.push((i as u32, RcptState::Failed));
                        self.log.emit(Event::Failed {
                            msg: id,
                            account: envelope.account.clone(),
                            rcpt,
                            reason,
                        });
                    }
                    Outcome::Deferred(reason) => deferred.push((i, reason)),
                }
            }
            entry.attempts += 1;
            entry.attempts
        };
        if deferred.is_empty() {
            return self.finish(id).await;
        }
        let next = retry::plan(
            &self.config.retry_schedule,
            self.config.message_max_age,
            envelope.received_at_ms,
            attempts,
            now,
        );
        match next {
            Next::Expire => {
                for (i, reason) in deferred {
                    self.log.emit(Event::Failed {
                        msg: id,
                        account: envelope.account.clone(),
                        rcpt: envelope.rcpts[i].addr.clone(),
                        reason: format!("expired after {attempts} attempts; last: {reason}"),
                    });
                }
                self.finish(id).await;
            }
            Next::RetryAt(at) => {
                for (i, reason) in deferred {
                    self.log.emit(Event::Deferred {
                        msg: id,
                        account: envelope.account.clone(),
                        rcpt: envelope.rcpts[i].addr.clone(),
                        reason,
                        attempts,
                        next_ms: at,
                    });
                }
                let update = Update {
                    rcpt_states: changes,
                    attempts,
                    next_attempt_ms: at,
                };
                if let Err(e) = self.spool.update(id, update).await {
                    self.log.emit(Event::Error {
                        what: format!("spool update of {id} failed: {e}"),
                    });
                }
                let mut q = self.queue.borrow_mut();
                q.evict_data(&id);
                q.reschedule(id, at);
            }
        }
    }

    /// Every recipient is delivered or failed: mark the spool record done and forget it.
    async fn finish(&self, id: MessageId) {
        self.queue.borrow_mut().remove(&id);
        if let Err(e) = self.spool.complete(id).await {
            self.log.emit(Event::Error {
                what: format!("spool completion of {id} failed: {e}"),
            });
        }
    }
}

/// A route as a map key (ordered so groups are attempted in a stable order).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RouteKey(Route);

impl RouteKey {
    fn describe(&self) -> String {
        match &self.0 {
            Route::Smarthost { host, port } => format!("smarthost {host}:{port}"),
            Route::Mx { domain } => domain.clone(),
        }
    }
}

impl PartialOrd for RouteKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RouteKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.describe().cmp(&other.describe())
    }
}

enum Transacted {
    /// The remote answered about the recipients (or the transaction broke after it had).
    Answered(Vec<Outcome>),
    /// This host gave no answer about the recipients: try the next one.
    TryNext(String),
}

/// True when an attempt failed before the server said anything about the message, so the
/// next host may be tried at once (RFC 5321 §5.1: connection failures and greeting
/// refusals). A message this server cannot take as it is (`Unsendable`) is decided by the
/// classifier instead, and so is a transaction interrupted after some replies.
fn before_recipients(e: &AttemptError) -> bool {
    let phase = match e {
        AttemptError::Connect(_) => return true,
        AttemptError::Timeout(p)
        | AttemptError::Io(p, _)
        | AttemptError::Protocol(p, _)
        | AttemptError::Refused(p, _) => *p,
        AttemptError::Unsendable(_) | AttemptError::Interrupted { .. } => return false,
    };
    matches!(
        phase,
        Phase::Connect | Phase::Greeting | Phase::Ehlo | Phase::Mail
    )
}

/// What a DNS failure means for the recipients of a route.
fn dns_outcome(route: &Route, e: &DnsError) -> Outcome {
    let domain = match route {
        Route::Mx { domain } => domain.as_str(),
        Route::Smarthost { host, .. } => host.as_str(),
    };
    match e {
        DnsError::NullMx(_) => Outcome::Failed(format!("{domain} does not accept mail (null MX, RFC 7505)")),
        DnsError::NotFound(why) => Outcome::Failed(format!("{domain}: domain not found ({why})")),
        DnsError::Temporary(why) => Outcome::Deferred(format!("DNS lookup for {domain} failed: {why}")),
    }
}
