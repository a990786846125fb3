//! The second tier of the delivery queues: one ready queue per (egress source, site,
//! route), holding the jobs whose attempt is due, with the limits that apply to that
//! source talking to that site: connections at once, messages per connection, messages
//! per minute. Plain data with time passed in; the engine's connection tasks drive it.
//!
//! ```text
//!  scheduled (time-ordered, per message)      ready (per source × site × route)
//!  ─────────────────────────────────────      ───────────────────────────────────────
//!  retry heap ──due──▶ router: route each  ──▶ [s1 × mx.gmail]    ◀── connections ≤ N,
//!                      pending recipient,      [s2 × mx.gmail]        messages/conn ≤ M,
//!                      pick a source, look     [s1 × mx.example]      messages/min ≤ R
//!                      up the site (MX set)
//! ```
//!
//! A job is one message's recipients that go to the same site from the same source: they
//! travel in one transaction (or a few, when the remote limits recipients per
//! transaction). Connection tasks take jobs while the queue has any, reuse their
//! connection (RSET between transactions when needed), and wait a short idle time for more
//! before they close.
//!
//! A site is often shared: every account's mail to one provider (or to the smarthost)
//! meets in the same ready queue. Its jobs are therefore not one FIFO but one per account,
//! served by deficit round robin with the account's weight (one job per turn and weight),
//! so when a big account has thousands of jobs waiting for the site's connections, another
//! account's job is taken by the next free connection after at most one round.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::config::egress::Shaping;
use crate::message::{Envelope, MessageId};
use crate::route::plan::Hop;
use crate::schedule::Drr;

/// A ready queue's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadyKey {
    /// The generation of delivery settings that routed the queue's jobs (a reload makes a
    /// new one; indexes below mean what that generation's tables say).
    pub generation: u64,
    /// Index into the egress sources.
    pub source: usize,
    /// The site: the sorted MX set (or smarthost) as [`crate::route::plan::site`] names it.
    pub site: Rc<str>,
    /// The route whose TLS, AUTH and limits apply (`None`: the defaults).
    pub route: Option<usize>,
}

/// Recipients of one message for one ready queue.
#[derive(Debug)]
pub struct Job {
    pub id: MessageId,
    pub envelope: Rc<Envelope>,
    /// The message as it goes out: trace header, then body.
    pub chunks: Rc<[Bytes]>,
    /// Indexes into the envelope's recipients.
    pub rcpts: Vec<usize>,
    /// The hosts of the site, in the order to try them.
    pub hops: Rc<[Hop]>,
    /// The pool that routed these recipients (the site class of the metrics).
    pub pool: usize,
    /// When the message's attempt was due, ms since the Unix epoch.
    pub due_ms: u64,
}

/// What the engine does after a job was queued.
#[derive(Debug, PartialEq, Eq)]
pub enum OnPush {
    /// An idle connection of this queue was woken and will take it.
    Woken,
    /// Start a new connection task (the queue counted it already).
    Spawn,
    /// Every allowed connection is busy: a busy one takes it when done.
    Wait,
}

/// What a connection task gets when it asks for work.
#[derive(Debug)]
pub enum Take {
    Job(Job),
    /// The rate limit holds the next job back until this time.
    NotBefore(u64),
    Empty,
}

/// One ready queue.
#[derive(Debug)]
pub struct ReadyQueue {
    /// Per account, one job per turn and weight.
    jobs: Drr<Rc<str>, Job>,
    shaping: Shaping,
    rate: Rate,
    /// Connection tasks alive (connecting, busy or idle).
    connections: usize,
    /// Idle connection tasks waiting for a job; a dropped receiver is a task that gave up.
    idle: VecDeque<oneshot::Sender<()>>,
    /// A reload replaced the settings this queue was made with: no more jobs come.
    retired: bool,
}

impl ReadyQueue {
    pub fn new(shaping: Shaping) -> ReadyQueue {
        ReadyQueue {
            jobs: Drr::new(1),
            rate: Rate::per_minute(shaping.messages_per_minute_max_count),
            shaping,
            connections: 0,
            idle: VecDeque::new(),
            retired: false,
        }
    }

    pub fn shaping(&self) -> Shaping {
        self.shaping
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Nothing queued and no connection: the queue can be dropped.
    pub fn is_unused(&self) -> bool {
        self.jobs.is_empty() && self.connections == 0
    }

    /// Queues a job of an account of `weight` and says who takes it: an idle connection, a
    /// new one, or a busy one.
    pub fn push(&mut self, job: Job, weight: u32) -> OnPush {
        let account = Rc::from(job.envelope.account.as_str());
        self.jobs.push(account, job, 1, weight);
        while let Some(waiter) = self.idle.pop_front() {
            if waiter.send(()).is_ok() {
                return OnPush::Woken;
            }
        }
        if self.connections < self.shaping.connections_max_count {
            self.connections += 1;
            return OnPush::Spawn;
        }
        OnPush::Wait
    }

    /// The next job for a connection task, if the rate limit allows one at `now_ms`.
    pub fn take(&mut self, now_ms: u64) -> Take {
        if self.jobs.is_empty() {
            return Take::Empty;
        }
        if let Err(not_before_ms) = self.rate.try_take(now_ms) {
            return Take::NotBefore(not_before_ms);
        }
        match self.jobs.pop() {
            Some((_, job)) => Take::Job(job),
            None => Take::Empty,
        }
    }

    /// A connection task waits for a job; the receiver fires when one is pushed.
    pub fn wait(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        // Tasks that gave up waiting leave dead senders; drop them here so the list stays
        // as long as the number of live waiters.
        self.idle.retain(|w| !w.is_canceled());
        self.idle.push_back(tx);
        rx
    }

    /// Every queued job, taken out (to be deferred when the site cannot be reached).
    pub fn drain(&mut self) -> Vec<Job> {
        std::iter::from_fn(|| self.jobs.pop().map(|(_, job)| job)).collect()
    }

    /// Takes every queued job out for routing under new settings, and lets the idle
    /// connection tasks go (their wait ends at once, and they close).
    pub fn retire(&mut self) -> Vec<Job> {
        self.retired = true;
        self.idle.clear();
        self.drain()
    }

    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// A connection task ended.
    pub fn connection_ended(&mut self) {
        self.connections = self.connections.saturating_sub(1);
    }
}

/// Messages per minute as an even spacing: each start takes the next slot, so the rate
/// holds across all connections of a queue without bursts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// 0: no limit.
    interval_ms: u64,
    next_ms: u64,
}

impl Rate {
    pub fn per_minute(count: u32) -> Rate {
        Rate {
            interval_ms: match count {
                0 => 0,
                n => (60_000 / u64::from(n)).max(1),
            },
            next_ms: 0,
        }
    }

    /// Takes a slot at `now_ms`, or says when the next one opens.
    pub fn try_take(&mut self, now_ms: u64) -> Result<(), u64> {
        if self.interval_ms == 0 {
            return Ok(());
        }
        if now_ms < self.next_ms {
            return Err(self.next_ms);
        }
        self.next_ms = now_ms + self.interval_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{BodyType, Recipient};

    fn shaping(connections: usize, per_minute: u32) -> Shaping {
        Shaping {
            connections_max_count: connections,
            messages_per_connection_max_count: 10,
            messages_per_minute_max_count: per_minute,
            recipients_per_transaction_max_count: 100,
        }
    }

    fn job(seq: u64) -> Job {
        job_of("a", seq)
    }

    fn job_of(account: &str, seq: u64) -> Job {
        let envelope = Envelope {
            id: MessageId::new(1, 0, seq),
            account: account.into(),
            received_at_ms: 0,
            source: "127.0.0.1".parse().unwrap(),
            helo: "h".into(),
            mail_from: "s@x.example".into(),
            body_type: BodyType::SevenBit,
            rcpts: vec![Recipient {
                addr: "r@y.example".into(),
                ..Recipient::default()
            }],
            smtputf8: false,
            dsn_return: None,
            dsn_envid: None,
            auth_user: None,
        };
        Job {
            id: envelope.id,
            envelope: Rc::new(envelope),
            chunks: Rc::from(vec![Bytes::from_static(b"x\r\n")]),
            rcpts: vec![0],
            hops: Rc::from(Vec::new()),
            pool: 0,
            due_ms: 0,
        }
    }

    fn seq(t: Take) -> u64 {
        match t {
            Take::Job(j) => j.id.0 as u64 & 0xffff,
            other => panic!("expected a job, got {other:?}"),
        }
    }

    impl ReadyQueue {
        fn push_one(&mut self, job: Job) -> OnPush {
            self.push(job, 1)
        }
    }

    /// A site shared by a big and a small account: the small one's jobs, queued after
    /// 500 of the big one's, are taken in turn with the big one's, not after them; with
    /// weights, in proportion.
    #[test]
    fn accounts_take_turns_at_a_shared_site() {
        let mut q = ReadyQueue::new(shaping(1, 0));
        for i in 0..500 {
            q.push(job_of("big", i), 1);
        }
        for i in 1000..1003 {
            q.push(job_of("small", i), 1);
        }
        let order: Vec<u64> = (0..8).map(|_| seq(q.take(0))).collect();
        let smalls: Vec<usize> = (0..order.len()).filter(|&k| order[k] >= 1000).collect();
        assert_eq!(
            smalls.len(),
            3,
            "all three small jobs among the first 8: {order:?}"
        );
        assert!(smalls[2] <= 6, "{order:?}");
        assert_eq!(q.len(), 495);
        assert_eq!(q.drain().len(), 495);

        let mut w = ReadyQueue::new(shaping(1, 0));
        for i in 0..100 {
            w.push(job_of("heavy", i), 4);
            w.push(job_of("light", 1000 + i), 1);
        }
        let heavy = (0..50).filter(|_| seq(w.take(0)) < 1000).count();
        assert_eq!(heavy, 40, "weight 4 against 1 takes 40 of the first 50");
    }

    #[test]
    fn connections_are_spawned_up_to_the_limit_then_jobs_wait() {
        let mut q = ReadyQueue::new(shaping(2, 0));
        assert_eq!(q.push_one(job(1)), OnPush::Spawn);
        assert_eq!(q.push_one(job(2)), OnPush::Spawn);
        assert_eq!(q.push_one(job(3)), OnPush::Wait);
        assert_eq!(q.connections(), 2);
        assert_eq!(seq(q.take(0)), 1);
        assert_eq!(seq(q.take(0)), 2);
        assert_eq!(seq(q.take(0)), 3);
        assert!(matches!(q.take(0), Take::Empty));
        q.connection_ended();
        q.connection_ended();
        assert!(q.is_unused());
    }

    #[test]
    fn an_idle_connection_is_woken_before_a_new_one_is_spawned() {
        let mut q = ReadyQueue::new(shaping(4, 0));
        assert_eq!(q.push_one(job(1)), OnPush::Spawn);
        assert_eq!(seq(q.take(0)), 1);
        let mut woken = q.wait();
        assert_eq!(q.push_one(job(2)), OnPush::Woken);
        assert_eq!(woken.try_recv(), Ok(Some(())));
        // A task that stopped waiting (dropped receiver) is skipped.
        drop(q.wait());
        assert_eq!(q.push_one(job(3)), OnPush::Spawn);
        assert_eq!(q.connections(), 2);
    }

    /// A reload retires a queue: its waiting jobs come out for routing again, its idle
    /// connections are let go, and a connection asking for work finds none.
    #[test]
    fn a_retired_queue_gives_its_jobs_back_and_wakes_its_idle_connections() {
        let mut q = ReadyQueue::new(shaping(1, 0));
        assert_eq!(q.push_one(job(1)), OnPush::Spawn);
        assert_eq!(seq(q.take(0)), 1);
        let mut idle = q.wait();
        q.jobs.push(Rc::from("a"), job(2), 1, 1);
        q.jobs.push(Rc::from("a"), job(3), 1, 1);
        let back: Vec<u64> = q.retire().into_iter().map(|j| j.id.0 as u64 & 0xffff).collect();
        assert_eq!(back, [2, 3]);
        assert!(q.is_retired());
        assert!(idle.try_recv().is_err(), "the idle connection's wait is over");
        assert!(matches!(q.take(0), Take::Empty));
        q.connection_ended();
        assert!(q.is_unused());
    }

    #[test]
    fn the_rate_spaces_message_starts_evenly() {
        let mut q = ReadyQueue::new(shaping(4, 120));
        for i in 0..3 {
            q.push_one(job(i));
        }
        assert_eq!(seq(q.take(1_000)), 0);
        assert!(matches!(q.take(1_200), Take::NotBefore(1_500)));
        assert_eq!(seq(q.take(1_500)), 1);
        assert_eq!(seq(q.take(5_000)), 2);
        assert_eq!(q.drain().len(), 0);
        let mut unlimited = Rate::per_minute(0);
        assert!((0..1000).all(|_| unlimited.try_take(0).is_ok()));
    }
}
