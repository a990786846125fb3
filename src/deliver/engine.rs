//! The per-core delivery engine: the scheduler that makes messages due, the router that
//! turns a due message into jobs on the ready queues, and the state they share. The
//! connection tasks that work the ready queues are in `dispatch.rs`; routing itself (and
//! re-routing after a reload) is in `routing.rs`; what happens to the
//! outcomes (spool, retries, bounces) is in `settle.rs`.
//!
//! ```text
//!  enqueue / retry due ─▶ due line ─▶ router: per pending recipient, egress decision
//!                                     (pool, route) → target (smarthost | MX) → hops
//!                                     (DNS) → site; source = the pool's next turn
//!                                            │ one job per (source, site, route)
//!                                            ▼
//!                         ready queue (source × site × route) ─▶ connection tasks
//!                                            │ outcomes per recipient
//!                                            ▼
//!                         settle: delivered now; at the attempt's end failures bounce,
//!                         deferrals reschedule (or expire and bounce)
//! ```
//!
//! Everything here runs on the owner core; queues are `RefCell`s whose borrows never
//! cross an `.await`. Time comes from the injected [`Clock`].
//!
//! Fairness: the due line and every ready queue are served per account by deficit round
//! robin with the account's `weight` (see [`super::queue`] and [`super::ready`]); the
//! engine only tells them each message's weight. The runtime starts the engine in the
//! core's throughput task queue, so every task it spawns (router, routing, connections,
//! settling) yields to SMTP sessions under load.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::{Semaphore, StaticPermit};

use super::clock::{Clock, SystemClock};
use super::lend::Lender;
use super::queue::{Attempt, Entry, Queue, Queued};
use super::ready::{ReadyKey, ReadyQueue};
use super::routing::Routed;
use super::settings::Settings;
use super::tls::{TlsClients, TlsMemory};
use super::transform::Transform;
use crate::config::Config;
use crate::message::{Envelope, IdGenerator, Message, MessageId};
use crate::observe::{Event, Log};
use crate::route::resolver::{DnsError, Resolver};
use crate::spool::{RecoveredMessage, Spool};

/// How often the scheduler looks at the clock when nothing is due sooner.
pub const SCHEDULER_TICK: Duration = Duration::from_millis(200);
/// Messages routed into the ready queues at once per core (their jobs hold the message
/// bytes); more due messages wait in the due line.
pub const ROUTED_MESSAGES_MAX_COUNT: usize = 4096;
/// Notifications corerelay writes get ids with this bit in the core field, so they never
/// collide with the ids ingress gives out on the same core.
const LOCAL_ID_CORE_FLAG: u16 = 0x8000;

/// A core's delivery engine.
pub struct Deliverer {
    /// Routing, limits, timeouts, retries and bounces; replaced whole by a reload.
    pub(super) settings: RefCell<Rc<Settings>>,
    /// The generation whose stale ready queues were last retired.
    pub(super) retired: Cell<u64>,
    pub(super) hostname: String,
    memory_max_bytes: usize,
    pub(super) clock: Rc<dyn Clock>,
    pub(super) queue: RefCell<Queue>,
    /// Counts the messages in the due line; the router waits on it.
    due: Semaphore,
    /// Messages routed and not yet settled.
    routed: Rc<Semaphore>,
    /// Outbound connections open (or opening) on this core.
    pub(super) connections: Rc<Semaphore>,
    pub(super) ready: RefCell<HashMap<ReadyKey, Rc<RefCell<ReadyQueue>>>>,
    /// Each account's DRR weight; accounts not listed weigh 1.
    weights: RefCell<HashMap<String, u32>>,
    pub(super) tls: TlsClients,
    pub(super) tls_memory: RefCell<TlsMemory>,
    pub(super) ids: RefCell<IdGenerator>,
    pub(super) spool: Spool,
    pub(super) resolver: Resolver,
    pub(super) log: Log,
    /// Tracking rewrite and DKIM signing per account; replaced whole by a reload.
    pub(super) transform: RefCell<Arc<Transform>>,
    /// Other cores that can do this core's transforms (none until set, or on one core).
    pub(super) lender: RefCell<Option<Rc<Lender>>>,
}

impl Deliverer {
    /// The engine of core `core`, on the system clock.
    pub fn new(
        config: &Config,
        core: usize,
        spool: Spool,
        resolver: Resolver,
        log: Log,
    ) -> Result<Rc<Deliverer>, String> {
        Deliverer::with_clock(config, core, spool, resolver, log, Rc::new(SystemClock))
    }

    /// The engine with an injected clock (tests drive time with a `ManualClock`).
    pub fn with_clock(
        config: &Config,
        core: usize,
        spool: Spool,
        resolver: Resolver,
        log: Log,
        clock: Rc<dyn Clock>,
    ) -> Result<Rc<Deliverer>, String> {
        let tls_memory = TlsMemory::new(
            config.egress.tls_failure_memory,
            config.egress.tls_failure_hosts_max_count,
        );
        let tls = TlsClients::new().map_err(|e| format!("outbound TLS: {e}"))?;
        Ok(Rc::new(Deliverer {
            settings: RefCell::new(Rc::new(Settings::new(config, 0, log.metrics()))),
            retired: Cell::new(0),
            hostname: config.server.hostname.clone(),
            memory_max_bytes: config.spool.memory_max_bytes,
            clock,
            queue: RefCell::new(Queue::default()),
            due: Semaphore::new(0),
            routed: Rc::new(Semaphore::new(ROUTED_MESSAGES_MAX_COUNT as u64)),
            connections: Rc::new(Semaphore::new(
                config.delivery.concurrency_per_core_max_count as u64,
            )),
            ready: RefCell::new(HashMap::new()),
            weights: RefCell::new(weights(config)),
            tls,
            tls_memory: RefCell::new(tls_memory),
            ids: RefCell::new(IdGenerator::new((core as u16) | LOCAL_ID_CORE_FLAG)),
            spool,
            resolver,
            log,
            transform: RefCell::new(Arc::new(Transform::default())),
            lender: RefCell::new(None),
        }))
    }

    /// Sets the accounts' tracking and signing (at start, and on reload).
    pub fn set_transform(&self, transform: Arc<Transform>) {
        *self.transform.borrow_mut() = transform;
    }

    /// Lets this core lend transforms to other cores (see [`super::lend`]).
    pub fn set_lender(&self, lender: Rc<Lender>) {
        *self.lender.borrow_mut() = Some(lender);
    }

    /// Messages routed and not yet settled: how busy delivery is on this core.
    pub fn in_delivery(&self) -> usize {
        (ROUTED_MESSAGES_MAX_COUNT as u64).saturating_sub(self.routed.available()) as usize
    }

    /// Transforms this core has in flight at other cores.
    pub fn lent(&self) -> usize {
        self.lender.borrow().as_ref().map_or(0, |l| l.in_flight())
    }

    /// The current delivery settings (one generation; keep the `Rc` for a whole decision).
    pub fn settings(&self) -> Rc<Settings> {
        self.settings.borrow().clone()
    }

    /// Applies a reloaded configuration's routing and delivery settings, when they changed:
    /// the next routing decision uses them. Jobs already waiting in ready queues are routed
    /// again by the scheduler (within [`SCHEDULER_TICK`]); transactions in flight finish
    /// under the settings they started with. Returns whether anything changed.
    pub fn reload(&self, config: &Config) -> bool {
        let current = self.settings();
        if current.same_as(config) {
            return false;
        }
        let next = Settings::new(config, current.generation + 1, self.log.metrics());
        *self.settings.borrow_mut() = Rc::new(next);
        true
    }

    /// Starts the scheduler and the router on this core.
    pub fn start(self: &Rc<Self>) {
        let me = self.clone();
        glommio::spawn_local(async move { me.scheduler().await }).detach();
        let me = self.clone();
        glommio::spawn_local(async move { me.router().await }).detach();
    }

    /// Replaces the accounts' weights (a reload); queued messages keep the weight they
    /// were queued with until their next attempt.
    pub fn set_weights(&self, config: &Config) {
        *self.weights.borrow_mut() = weights(config);
    }

    pub(super) fn weight_of(&self, account: &str) -> u32 {
        self.weights.borrow().get(account).copied().unwrap_or(1)
    }

    /// Bytes of `account`'s messages queued on this core (for its `queued_max_bytes`).
    pub fn queued_bytes(&self, account: &str) -> u64 {
        self.queue.borrow().queued_bytes(account)
    }

    /// Every account with messages queued on this core: its messages and bytes.
    pub fn queued_by_account(&self) -> Vec<(String, Queued)> {
        let q = self.queue.borrow();
        q.queued_by_account().map(|(a, n)| (a.to_string(), n)).collect()
    }

    /// Queues a message that was just spooled: its first attempt is due now.
    pub fn enqueue(&self, message: Message) {
        let id = message.envelope.id;
        let mut entry = Entry::new(message);
        entry.weight = self.weight_of(&entry.account);
        entry.due_ms = self.clock.now_ms();
        self.insert(id, entry, None);
    }

    /// Queues a message recovered from the spool at start.
    pub fn enqueue_recovered(&self, recovered: RecoveredMessage) {
        let id = recovered.message.envelope.id;
        let mut entry = Entry::new(recovered.message);
        entry.weight = self.weight_of(&entry.account);
        if !recovered.body_loaded {
            entry.data = None;
        }
        if recovered.rcpt_states.len() == entry.states.len() {
            entry.states = recovered.rcpt_states;
        }
        entry.attempts = recovered.attempts;
        let now = self.clock.now_ms();
        entry.due_ms = recovered.next_attempt_ms.min(now);
        let due = (recovered.next_attempt_ms > now).then_some(recovered.next_attempt_ms);
        self.insert(id, entry, due);
    }

    fn insert(&self, id: MessageId, entry: Entry, due_ms: Option<u64>) {
        let data_held = entry.data.is_some();
        let mut q = self.queue.borrow_mut();
        if q.insert(id, entry, due_ms) {
            if data_held && q.memory_bytes() > self.memory_max_bytes {
                // Over the memory budget: the spool has it; read it back when it is due.
                q.evict_data(&id);
            }
            if due_ms.is_none() {
                self.due.signal(1);
            }
        }
    }

    /// Messages queued on this core (due, scheduled or in flight).
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    /// When the earliest scheduled retry is due, and how many messages are scheduled.
    pub fn next_retry(&self) -> (Option<u64>, usize) {
        let q = self.queue.borrow();
        (q.next_due_ms(), q.scheduled_len())
    }

    /// Attempts made so far for a queued message.
    pub fn attempts(&self, id: MessageId) -> Option<u32> {
        self.queue.borrow().get(&id).map(|e| e.attempts)
    }

    async fn scheduler(self: &Rc<Self>) {
        loop {
            let now = self.clock.now_ms();
            let (moved, next) = {
                let mut q = self.queue.borrow_mut();
                (q.promote_due(now), q.next_due_ms())
            };
            if moved > 0 {
                self.due.signal(moved as u64);
            }
            self.retire_stale_queues();
            let wait = next
                .map(|at| Duration::from_millis(at.saturating_sub(now)))
                .unwrap_or(SCHEDULER_TICK)
                .clamp(Duration::from_millis(5), SCHEDULER_TICK);
            glommio::timer::sleep(wait).await;
        }
    }

    /// Takes due messages, at most [`ROUTED_MESSAGES_MAX_COUNT`] routed at once, and routes
    /// each in its own task (DNS lookups and spool reads run concurrently).
    async fn router(self: Rc<Self>) {
        loop {
            if self.due.acquire(1).await.is_err() {
                return;
            }
            let Ok(permit) = self.routed.acquire_static_permit(1).await else {
                return;
            };
            let next = self.queue.borrow_mut().pop_due();
            if let Some(id) = next {
                let me = self.clone();
                glommio::spawn_local(async move { me.route_message(id, permit).await }).detach();
            }
        }
    }

    /// One attempt at every pending recipient of a message: route them, and hand the jobs
    /// to the ready queues. Recipients whose route fails in DNS are decided right here.
    async fn route_message(self: Rc<Self>, id: MessageId, permit: StaticPermit) {
        let Some((envelope, pending, due_ms)) = self.snapshot(&id) else {
            return;
        };
        let settings = self.settings();
        let Some(chunks) = self.message_bytes(id).await else {
            let delay = super::retry::delay_after(&settings.delivery.retry_schedule, 1);
            let at = self.clock.now_ms() + delay.as_millis() as u64;
            self.queue.borrow_mut().reschedule(id, at);
            return;
        };
        let message = Routed {
            id,
            envelope,
            chunks: chunks.clone(),
            due_ms,
        };
        let planned = self.plan(&settings, &message, pending).await;
        let jobs_left = planned.jobs.len();
        if let Some(entry) = self.queue.borrow_mut().get_mut(&id) {
            entry.attempt = Some(Attempt {
                jobs_left,
                deferred: Vec::new(),
                failed: Vec::new(),
                chunks,
                permit: Some(permit),
            });
        }
        self.record(id, planned.decided);
        if jobs_left == 0 {
            return self.finish_attempt(id, Vec::new()).await;
        }
        for (key, job) in planned.jobs {
            self.dispatch(key, job);
        }
    }

    /// Runs a DNS lookup, counting it and its time (cache hits land in the lowest buckets).
    pub(super) async fn timed_dns<T>(
        &self,
        lookup: impl std::future::Future<Output = Result<T, DnsError>>,
    ) -> Result<T, DnsError> {
        let started = std::time::Instant::now();
        let result = lookup.await;
        let core = &self.log.metrics().core;
        core.dns_lookups_total.increment(1);
        core.dns_lookup_seconds.record(started.elapsed().as_secs_f64());
        if matches!(result, Err(DnsError::Temporary(_))) {
            core.dns_failures_total.increment(1);
        }
        result
    }

    /// The envelope, pending recipients and due time of a queued message.
    fn snapshot(&self, id: &MessageId) -> Option<(Rc<Envelope>, Vec<usize>, u64)> {
        let q = self.queue.borrow();
        let e = q.get(id)?;
        Some((e.envelope.clone(), e.pending(), e.due_ms))
    }

    /// The message's bytes (trace, then body), from memory or read back from the spool.
    async fn message_bytes(&self, id: MessageId) -> Option<Rc<[Bytes]>> {
        let held = self.queue.borrow().get(&id).and_then(|e| e.data.clone());
        let (trace, body) = match held {
            Some(data) => data,
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
                    return None;
                }
            },
        };
        Some(std::iter::once(trace).chain(body).collect())
    }
}

/// The DRR weight of every configured account.
fn weights(config: &Config) -> HashMap<String, u32> {
    config.accounts.iter().map(|a| (a.id.clone(), a.weight)).collect()
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
