//! The connection tasks of the ready queues: each takes jobs from its queue one after the
//! other over one connection (reused, RSET in between when needed), opens that connection
//! from the queue's source with the route's TLS policy and AUTH, and waits a short idle
//! time for more jobs before it says QUIT.
//!
//! Limits: a queue has at most its route's `connections_max_count` tasks; a connection
//! carries at most `messages_per_connection_max_count` transactions; the queue's rate
//! spaces message starts; the route's phase timeouts override `[delivery]`'s; the core runs
//! at most `delivery.concurrency_per_core_max_count` connections in all (idle ones
//! included, for at most `delivery.idle_connection_ms`).
//!
//! Hosts: the site's hosts in MX order, at most [`HOSTS_PER_ATTEMPT_MAX_COUNT`] and
//! [`ADDRS_PER_HOST_MAX_COUNT`] addresses each, the next one tried when a connection
//! fails or a greeting or EHLO is refused (RFC 5321 §5.1). A site that cannot be reached
//! defers every job waiting in its queue at once, instead of every job paying the same
//! connect timeouts in turn.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;

use super::connection::{AttemptError, Connection, Dial, Phase, Timeouts, TlsMode};
use super::engine::{Deliverer, SCHEDULER_TICK};
use super::outcome::{Outcome, Reason, Remote, classify, too_many_recipients};
use super::ready::{Job, ReadyKey, ReadyQueue, Take};
use super::settings::Settings;
use crate::config::egress::{Credentials, SourceConfig, TlsPolicy, TlsSettings};
use crate::observe::Event;
use crate::smtp::client::TransactionResult;
use crate::smtp::reply::Enhanced;

/// Hosts tried per connection attempt, and addresses tried per host.
pub const HOSTS_PER_ATTEMPT_MAX_COUNT: usize = 5;
pub const ADDRS_PER_HOST_MAX_COUNT: usize = 2;

/// What one transaction gave, and the host and address it was with.
type Sent = (Result<TransactionResult, AttemptError>, String, SocketAddr);

/// A ready queue and the settings it was made with: what a connection task works under.
#[derive(Clone, Copy)]
struct Route<'a> {
    key: &'a ReadyKey,
    settings: &'a Settings,
}

/// An open connection and the name of the host it goes to.
struct Open {
    conn: Connection,
    host: String,
}

impl Deliverer {
    /// Works one ready queue until it has been empty for `delivery.idle_connection_ms`, or
    /// until a reload retires the queue. `settings` is the generation that made the queue:
    /// the connection's source, TLS, limits and timeouts stay those for its whole life.
    pub(super) async fn connection_task(
        self: Rc<Self>,
        key: ReadyKey,
        cell: Rc<RefCell<ReadyQueue>>,
        settings: Rc<Settings>,
    ) {
        let slot = self.connections.acquire_static_permit(1).await;
        let mut open: Option<Open> = None;
        let on = Route {
            key: &key,
            settings: &settings,
        };
        while slot.is_ok() {
            let Some(job) = self.next_job(&cell, settings.delivery.idle_connection).await else {
                break;
            };
            let waited_ms = self.clock.now_ms().saturating_sub(job.due_ms);
            let seconds = waited_ms as f64 / 1000.0;
            self.log.metrics().scheduler_wait(&job.envelope.account, seconds);
            if open.is_none() {
                match self.connect(on, &job).await {
                    Ok(o) => open = Some(o),
                    Err(reason) => {
                        self.site_unreachable(&cell, &settings, job, reason);
                        break;
                    }
                }
            }
            let (host, outcomes) = self.run_job(on, &mut open, &job).await;
            settings.count_outcomes(job.pool, &outcomes);
            if outcomes.iter().any(|(_, o)| matches!(o, Outcome::Delivered(_))) {
                let in_relay_us = crate::observe::log::now_us().saturating_sub(job.id.unix_us());
                let seconds = in_relay_us as f64 / 1e6;
                self.log.metrics().delivery_time(&job.envelope.account, seconds);
            }
            self.settle_job(job.id, host, outcomes);
        }
        cell.borrow_mut().connection_ended();
        let unused = cell.borrow().is_unused();
        if unused {
            let mut ready = self.ready.borrow_mut();
            if ready.get(&key).is_some_and(|c| Rc::ptr_eq(c, &cell)) {
                ready.remove(&key);
            }
        }
        if let Some(o) = open {
            o.conn.quit().await;
        }
        drop(slot);
    }

    /// The next job of the queue, waiting out the rate limit, or for a new job at most the
    /// idle time. `None`: nothing came; the task ends.
    async fn next_job(&self, cell: &Rc<RefCell<ReadyQueue>>, idle: Duration) -> Option<Job> {
        let mut waited = false;
        loop {
            let now = self.clock.now_ms();
            let next = cell.borrow_mut().take(now);
            match next {
                Take::Job(job) => return Some(job),
                Take::Empty if cell.borrow().is_retired() => return None,
                Take::NotBefore(at) => {
                    let pause = Duration::from_millis(at.saturating_sub(now).max(1));
                    glommio::timer::sleep(pause.min(SCHEDULER_TICK)).await;
                }
                Take::Empty if waited => return None,
                Take::Empty => {
                    let waiter = cell.borrow_mut().wait();
                    let woken = async { waiter.await.is_ok() }
                        .or(async {
                            glommio::timer::sleep(idle).await;
                            false
                        })
                        .await;
                    waited = !woken;
                }
            }
        }
    }

    /// Delivers one job: its recipients in transactions of at most the route's recipient
    /// limit, more when the remote counts "too many recipients". Returns the host and the
    /// outcome of each recipient.
    async fn run_job(
        &self,
        on: Route<'_>,
        open: &mut Option<Open>,
        job: &Job,
    ) -> (String, Vec<(usize, Outcome)>) {
        let shaping = on.settings.egress.shaping(on.key.route);
        let limit = shaping.recipients_per_transaction_max_count.max(1);
        let chunks = self.outgoing(job).await;
        let mut waiting: VecDeque<usize> = job.rcpts.iter().copied().collect();
        let mut out = Vec::with_capacity(job.rcpts.len());
        let mut host = String::new();
        while !waiting.is_empty() {
            let batch: Vec<usize> = waiting.drain(..limit.min(waiting.len())).collect();
            let (result, remote_host, peer) = match self.transact(on, open, job, &chunks, &batch).await {
                Ok(done) => done,
                Err(reason) => {
                    let rest = batch.into_iter().chain(waiting.drain(..));
                    out.extend(rest.map(|i| (i, Outcome::Deferred(reason.clone()))));
                    break;
                }
            };
            host = remote_host;
            let remote = Remote {
                host: &host,
                addr: peer,
            };
            let again = match &result {
                Ok(r) => too_many_recipients(r),
                Err(_) => Vec::new(),
            };
            for (k, outcome) in classify(&result, batch.len(), remote).into_iter().enumerate() {
                match again.contains(&k) {
                    true => waiting.push_back(batch[k]),
                    false => out.push((batch[k], outcome)),
                }
            }
            self.retire_if_spent(open, shaping.messages_per_connection_max_count)
                .await;
        }
        (host, out)
    }

    /// One transaction on the open connection, opening one first if the job's previous
    /// transaction lost it. A warm connection that the remote closed meanwhile is replaced
    /// once: that failure says nothing about the message.
    async fn transact(
        &self,
        on: Route<'_>,
        open: &mut Option<Open>,
        job: &Job,
        chunks: &[Bytes],
        batch: &[usize],
    ) -> Result<Sent, Reason> {
        let rcpts: Vec<&str> = batch
            .iter()
            .map(|&i| job.envelope.rcpts[i].addr.as_str())
            .collect();
        for _ in 0..2 {
            if open.is_none() {
                *open = Some(self.connect(on, job).await?);
            }
            let Some(o) = open.as_mut() else { break };
            let warm = o.conn.messages_sent() > 0;
            let started = std::time::Instant::now();
            let result = o
                .conn
                .send(&job.envelope.mail_from, &rcpts, chunks, job.envelope.body_type)
                .await;
            let seconds = started.elapsed().as_secs_f64();
            self.log
                .metrics()
                .core
                .delivery_transaction_seconds
                .record(seconds);
            on.settings.record_attempt(job.pool, seconds);
            self.log.emit(Event::Attempt {
                msg: job.id,
                account: job.envelope.account.clone(),
                rcpts: rcpts.len(),
                host: format!("{}[{}]", o.host, o.conn.peer()),
            });
            let stale = warm && matches!(&result, Err(e) if before_recipients(e));
            let (host, peer) = (o.host.clone(), o.conn.peer());
            if !o.conn.is_usable() {
                *open = None;
            }
            if !stale {
                return Ok((result, host, peer));
            }
            *open = None;
        }
        Err(Reason::local(Enhanced::new(4, 4, 2), "the connection was lost"))
    }

    /// The bytes this job sends: the account's tracking rewrite and DKIM signatures applied
    /// to the spooled message (for the job's one recipient when tokens name recipients).
    /// While this core is busy, another core with room does the transform (see
    /// [`super::lend`]); otherwise, or when none answers in time, this core does it.
    async fn outgoing(&self, job: &Job) -> Vec<Bytes> {
        let transform = self.transform.borrow().clone();
        let recipient = match job.rcpts.as_slice() {
            [one] => job.envelope.rcpts[*one].addr.as_str(),
            _ => "",
        };
        let lender = self.lender.borrow().clone();
        let lend = lender.filter(|l| transform.changes(&job.envelope.account) && l.busy(self.in_delivery()));
        if let Some(lender) = lend
            && let Some(chunks) = lender
                .lend(&transform, &job.envelope, &job.chunks, recipient)
                .await
        {
            return chunks;
        }
        transform.apply(&job.envelope, &job.chunks, recipient, self.log.metrics())
    }

    /// Closes a connection that is broken or has carried its share of messages.
    async fn retire_if_spent(&self, open: &mut Option<Open>, messages_max: usize) {
        let spent = open
            .as_ref()
            .is_some_and(|o| !o.conn.is_usable() || o.conn.messages_sent() >= messages_max);
        if spent && let Some(o) = open.take() {
            o.conn.quit().await;
        }
    }

    /// A connection from the queue's source to the first host of the site that answers.
    async fn connect(&self, on: Route<'_>, job: &Job) -> Result<Open, Reason> {
        let (egress, key) = (&on.settings.egress, on.key);
        let source = egress.source(key.source);
        let tls = egress.tls(key.route);
        let auth = egress.auth(key.route);
        let timeouts = on.settings.timeouts.with(egress.timeouts(key.route));
        let mut last = Reason::local(
            Enhanced::new(4, 4, 4),
            format!("no host of {} could be reached", key.site),
        );
        for hop in job.hops.iter().take(HOSTS_PER_ATTEMPT_MAX_COUNT) {
            let addrs = match self.timed_dns(self.resolver.addresses(&hop.host)).await {
                Ok(a) => a,
                Err(e) => {
                    last = Reason::local(Enhanced::new(4, 4, 3), format!("{}: {e}", hop.host));
                    continue;
                }
            };
            // A source address of one IP version can only reach hosts of the same.
            let usable = addrs
                .into_iter()
                .filter(|ip| source.bind.is_none_or(|b| b.is_ipv4() == ip.is_ipv4()));
            for ip in usable.take(ADDRS_PER_HOST_MAX_COUNT) {
                let addr = SocketAddr::new(ip, hop.port);
                match self.dial(source, (tls, &timeouts), auth, &hop.host, addr).await {
                    Ok(conn) => {
                        if conn.is_tls() {
                            self.log.metrics().core.tls_handshakes_out_total.increment(1);
                        }
                        return Ok(Open {
                            conn,
                            host: hop.host.clone(),
                        });
                    }
                    Err(reason) => last = reason,
                }
            }
        }
        Err(last)
    }

    /// One connection attempt to one address, with the TLS the policy and the memory of
    /// failed handshakes (per host and port) allow: after a failed handshake under the
    /// opportunistic policy, the same host is tried again at once in plaintext.
    async fn dial(
        &self,
        source: &SourceConfig,
        (tls, timeouts): (TlsSettings, &Timeouts),
        auth: Option<&Credentials>,
        host: &str,
        addr: SocketAddr,
    ) -> Result<Connection, Reason> {
        let now = self.clock.now_ms();
        let memory_key = format!("{host}:{}", addr.port());
        let remembered = self.tls_memory.borrow().is_failing(&memory_key, now);
        let mode = match tls.policy {
            TlsPolicy::Disabled => TlsMode::Off,
            TlsPolicy::Opportunistic if remembered => TlsMode::Off,
            TlsPolicy::Opportunistic => TlsMode::Opportunistic(self.tls.connector(false)),
            TlsPolicy::Required => TlsMode::Required(self.tls.connector(tls.verify)),
        };
        let dial = Dial {
            addr,
            host,
            bind: source.bind,
            helo_name: &source.ehlo,
            tls: mode,
            auth,
        };
        let reason = |e: AttemptError| match classify(&Err(e), 1, Remote { host, addr }).pop() {
            Some(Outcome::Deferred(r) | Outcome::Failed(r)) => r,
            _ => Reason::local(
                Enhanced::new(4, 4, 0),
                format!("{host}[{addr}]: connection failed"),
            ),
        };
        match Connection::dial(&dial, timeouts).await {
            Ok(conn) => Ok(conn),
            Err(AttemptError::Tls(why)) => {
                // Only a handshake that failed without certificate checks says this host's
                // TLS is broken; a certificate that fails verification does not.
                let unverified = tls.policy == TlsPolicy::Opportunistic || !tls.verify;
                if unverified {
                    self.tls_memory.borrow_mut().failed(&memory_key, now);
                }
                if tls.policy != TlsPolicy::Opportunistic {
                    return Err(reason(AttemptError::Tls(why)));
                }
                let plain = Dial {
                    tls: TlsMode::Off,
                    ..dial
                };
                Connection::dial(&plain, timeouts).await.map_err(reason)
            }
            Err(e) => Err(reason(e)),
        }
    }

    /// The site did not answer: this job is deferred, and when no other connection of the
    /// queue is at work, so is every job waiting in it.
    fn site_unreachable(
        self: &Rc<Self>,
        cell: &Rc<RefCell<ReadyQueue>>,
        settings: &Settings,
        job: Job,
        reason: Reason,
    ) {
        let others = {
            let mut q = cell.borrow_mut();
            match q.connections() <= 1 {
                true => q.drain(),
                false => Vec::new(),
            }
        };
        for job in std::iter::once(job).chain(others) {
            let outcomes: Vec<(usize, Outcome)> = job
                .rcpts
                .iter()
                .map(|&i| (i, Outcome::Deferred(reason.clone())))
                .collect();
            settings.count_outcomes(job.pool, &outcomes);
            self.settle_job(job.id, String::new(), outcomes);
        }
    }
}

/// True when an attempt failed before the server said anything about the message, so a
/// warm connection may simply have been closed by the remote meanwhile. A message this
/// server cannot take as it is (`Unsendable`) is decided by the classifier instead, and so
/// is a transaction interrupted after some replies.
fn before_recipients(e: &AttemptError) -> bool {
    let phase = match e {
        AttemptError::Connect(_) => return true,
        AttemptError::Timeout(p)
        | AttemptError::Io(p, _)
        | AttemptError::Protocol(p, _)
        | AttemptError::Refused(p, _) => *p,
        AttemptError::Tls(_) | AttemptError::TlsUnavailable => return true,
        AttemptError::Unsendable(_) | AttemptError::Interrupted { .. } => return false,
    };
    matches!(
        phase,
        Phase::Connect
            | Phase::Greeting
            | Phase::Ehlo
            | Phase::Starttls
            | Phase::Auth
            | Phase::Mail
            | Phase::Rset
    )
}
