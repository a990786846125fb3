//! The first tier of the per-core delivery queues, as plain data: the messages this core
//! owns that still have recipients to deliver to, the time-ordered retry schedule, and the
//! line of messages whose attempt is due. No executor here; [`super::engine`] drives it.
//!
//! A message waiting for a retry sits in the `scheduled` heap keyed by its due time and
//! costs nothing until then; when due it moves to the `due` line, from which the router
//! takes it, routes its pending recipients and hands them as jobs to the second tier, the
//! ready queues per source and site ([`super::ready`]). While its jobs are out, the entry
//! holds the [`Attempt`]: what the jobs decided so far.
//!
//! The due line is fair: one FIFO per account, served by deficit round robin with the
//! account's weight ([`crate::schedule::Drr`], one message per turn and weight), so a
//! backlog of 50,000 due messages in one account delays another account's next message
//! by one round, not by the backlog. Whatever runs per message after the router (the
//! rewrite and signing stage, the routing itself) therefore meets the accounts in DRR
//! order too. The queue also counts each account's queued bytes, which the owner checks
//! against the account's `queued_max_bytes`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;

use bytes::Bytes;
use glommio::sync::StaticPermit;

use super::outcome::Reason;
use crate::message::{Envelope, Message, MessageId};
use crate::schedule::Drr;
use crate::spool::RcptState;

/// One attempt in progress: the jobs still out, and the outcomes that wait for the end of
/// the attempt (deferrals and failures are settled together, so one DSN covers them).
#[derive(Debug)]
pub struct Attempt {
    pub jobs_left: usize,
    pub deferred: Vec<(usize, Reason)>,
    pub failed: Vec<(usize, Reason)>,
    /// The message as it went out, for the DSN.
    pub chunks: Rc<[Bytes]>,
    /// The router's slot, released when the attempt is settled.
    pub permit: Option<StaticPermit>,
}

/// One message this core is delivering.
#[derive(Debug)]
pub struct Entry {
    pub envelope: Rc<Envelope>,
    /// The account (the DRR key of the due line).
    pub account: Rc<str>,
    /// The account's DRR weight.
    pub weight: u32,
    /// The message's size as queued (trace and body when it was queued), counted in the
    /// account's queued bytes until it is removed.
    pub size_bytes: u64,
    /// The trace header and body, while held in memory; `None` means "read it back from the
    /// spool when its attempt comes".
    pub data: Option<(Bytes, Vec<Bytes>)>,
    /// Bytes held by `data`.
    pub data_bytes: usize,
    /// Per recipient, in envelope order.
    pub states: Vec<RcptState>,
    pub attempts: u32,
    /// True while an attempt is out (it is then neither due nor scheduled).
    pub in_flight: bool,
    /// When the current (or last) attempt was due, ms since the Unix epoch.
    pub due_ms: u64,
    pub attempt: Option<Attempt>,
}

impl Entry {
    pub fn new(message: Message) -> Entry {
        let states = vec![RcptState::Pending; message.envelope.rcpts.len()];
        let data_bytes = message.trace.len() + message.body_len();
        Entry {
            account: Rc::from(message.envelope.account.as_str()),
            weight: 1,
            size_bytes: data_bytes as u64,
            envelope: Rc::new(message.envelope),
            data: Some((message.trace, message.body)),
            data_bytes,
            states,
            attempts: 0,
            in_flight: false,
            due_ms: 0,
            attempt: None,
        }
    }

    /// Indexes of the recipients still to be delivered.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.states.len())
            .filter(|&i| self.states[i] == RcptState::Pending)
            .collect()
    }

    pub fn is_finished(&self) -> bool {
        !self.states.contains(&RcptState::Pending)
    }
}

/// What one account has queued (due, scheduled or in flight).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queued {
    pub messages: usize,
    pub bytes: u64,
}

/// The queue: entries by id, the retry heap and the due line.
#[derive(Debug)]
pub struct Queue {
    entries: HashMap<MessageId, Entry>,
    scheduled: BinaryHeap<Reverse<(u64, MessageId)>>,
    /// Due messages per account, one message per turn (times the weight).
    due: Drr<Rc<str>, MessageId>,
    /// Bytes of message data held in memory across all entries.
    memory_bytes: usize,
    /// Bytes queued per account (entries' `size_bytes`); accounts with none are absent.
    queued: HashMap<Rc<str>, Queued>,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            entries: HashMap::new(),
            scheduled: BinaryHeap::new(),
            due: Drr::new(1),
            memory_bytes: 0,
            queued: HashMap::new(),
        }
    }
}

impl Queue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn due_len(&self) -> usize {
        self.due.len()
    }

    pub fn scheduled_len(&self) -> usize {
        self.scheduled.len()
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Bytes of `account`'s messages queued here (due, scheduled or in flight).
    pub fn queued_bytes(&self, account: &str) -> u64 {
        self.queued.get(account).map_or(0, |q| q.bytes)
    }

    /// Every account with queued messages, its queued messages and bytes.
    pub fn queued_by_account(&self) -> impl Iterator<Item = (&str, Queued)> {
        self.queued.iter().map(|(a, q)| (&**a, *q))
    }

    /// Adds an entry; it is due now when `due_ms` is `None`, or scheduled for `due_ms`.
    /// An id already queued is ignored (a spool record seen twice).
    pub fn insert(&mut self, id: MessageId, mut entry: Entry, due_ms: Option<u64>) -> bool {
        if self.entries.contains_key(&id) {
            return false;
        }
        if entry.data.is_some() {
            self.memory_bytes += entry.data_bytes;
        }
        let queued = self.queued.entry(entry.account.clone()).or_default();
        queued.bytes += entry.size_bytes;
        queued.messages += 1;
        match due_ms {
            None => self.due.push(entry.account.clone(), id, 1, entry.weight),
            Some(at) => {
                entry.due_ms = at;
                self.scheduled.push(Reverse((at, id)));
            }
        }
        self.entries.insert(id, entry);
        true
    }

    pub fn get(&self, id: &MessageId) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub fn get_mut(&mut self, id: &MessageId) -> Option<&mut Entry> {
        self.entries.get_mut(id)
    }

    /// Takes the next due message and marks it in flight.
    pub fn pop_due(&mut self) -> Option<MessageId> {
        while let Some((_, id)) = self.due.pop() {
            if let Some(e) = self.entries.get_mut(&id) {
                e.in_flight = true;
                return Some(id);
            }
        }
        None
    }

    /// Moves every scheduled message due at `now_ms` to the due line; returns how many.
    pub fn promote_due(&mut self, now_ms: u64) -> usize {
        let mut moved = 0;
        while let Some(Reverse((at, id))) = self.scheduled.peek().copied() {
            if at > now_ms {
                break;
            }
            self.scheduled.pop();
            if let Some(e) = self.entries.get_mut(&id) {
                e.due_ms = at;
                self.due.push(e.account.clone(), id, 1, e.weight);
                moved += 1;
            }
        }
        moved
    }

    /// When the earliest scheduled message is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.scheduled.peek().map(|Reverse((at, _))| *at)
    }

    /// Puts an in-flight message back on the schedule.
    pub fn reschedule(&mut self, id: MessageId, at_ms: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.in_flight = false;
            e.attempt = None;
            self.scheduled.push(Reverse((at_ms, id)));
        }
    }

    /// Drops the in-memory copy of a message's data (it stays in the spool).
    pub fn evict_data(&mut self, id: &MessageId) {
        if let Some(e) = self.entries.get_mut(id)
            && e.data.take().is_some()
        {
            self.memory_bytes -= e.data_bytes;
        }
    }

    /// Records data read back from the spool for an attempt.
    pub fn restore_data(&mut self, id: &MessageId, trace: Bytes, body: Vec<Bytes>) {
        if let Some(e) = self.entries.get_mut(id)
            && e.data.is_none()
        {
            e.data_bytes = trace.len() + body.iter().map(Bytes::len).sum::<usize>();
            e.data = Some((trace, body));
            self.memory_bytes += e.data_bytes;
        }
    }

    /// Removes a finished message.
    pub fn remove(&mut self, id: &MessageId) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        if e.data.is_some() {
            self.memory_bytes -= e.data_bytes;
        }
        if let Some(queued) = self.queued.get_mut(&e.account) {
            queued.bytes = queued.bytes.saturating_sub(e.size_bytes);
            queued.messages = queued.messages.saturating_sub(1);
            if queued.messages == 0 {
                self.queued.remove(&e.account);
            }
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{BodyType, Recipient};

    fn message(seq: u64, rcpts: usize) -> (MessageId, Message) {
        message_of("a", seq, rcpts)
    }

    fn message_of(account: &str, seq: u64, rcpts: usize) -> (MessageId, Message) {
        let id = MessageId::new(1, 0, seq);
        let envelope = Envelope {
            id,
            account: account.into(),
            received_at_ms: 0,
            source: "127.0.0.1".parse().unwrap(),
            helo: "h".into(),
            mail_from: "s@x.example".into(),
            body_type: BodyType::SevenBit,
            rcpts: (0..rcpts)
                .map(|i| Recipient {
                    addr: format!("r{i}@y.example"),
                    ..Default::default()
                })
                .collect(),
            smtputf8: false,
            dsn_return: None,
            dsn_envid: None,
            auth_user: None,
        };
        let m = Message {
            envelope,
            trace: Bytes::from_static(b"Received: x\r\n"),
            body: vec![Bytes::from_static(b"body\r\n")],
        };
        (id, m)
    }

    #[test]
    fn ready_then_scheduled_in_time_order() {
        let mut q = Queue::default();
        let (a, ma) = message(1, 1);
        let (b, mb) = message(2, 1);
        let (c, mc) = message(3, 2);
        assert!(q.insert(a, Entry::new(ma), Some(500)));
        assert!(q.insert(b, Entry::new(mb), Some(100)));
        assert!(q.insert(c, Entry::new(mc), None));
        assert_eq!(q.memory_bytes(), 3 * 19);
        assert_eq!(q.pop_due(), Some(c));
        assert_eq!(q.pop_due(), None);
        assert_eq!(q.next_due_ms(), Some(100));
        assert_eq!(q.promote_due(99), 0);
        assert_eq!(q.promote_due(500), 2);
        assert_eq!(q.pop_due(), Some(b));
        assert_eq!(q.pop_due(), Some(a));
        assert!(q.get(&a).unwrap().in_flight);
    }

    #[test]
    fn duplicates_eviction_and_removal_keep_memory_count_right() {
        let mut q = Queue::default();
        let (a, ma) = message(1, 3);
        assert!(q.insert(a, Entry::new(ma.clone()), None));
        assert!(!q.insert(a, Entry::new(ma), None));
        q.evict_data(&a);
        assert_eq!(q.memory_bytes(), 0);
        q.restore_data(&a, Bytes::from_static(b"t"), vec![Bytes::from_static(b"bb")]);
        assert_eq!(q.memory_bytes(), 3);
        let e = q.get_mut(&a).unwrap();
        assert_eq!(e.pending(), vec![0, 1, 2]);
        e.states[1] = RcptState::Delivered;
        assert_eq!(e.pending(), vec![0, 2]);
        assert!(!e.is_finished());
        q.remove(&a);
        assert_eq!(q.memory_bytes(), 0);
        assert!(q.is_empty());
        q.reschedule(a, 5);
        assert_eq!(q.promote_due(10), 0, "a removed message is never promoted");
    }

    /// The due line is served by DRR over accounts: a small account's message that became
    /// due after 1,000 of a big account's is taken within one round, both when it is new
    /// and when a retry makes it due; weights share the line in proportion.
    #[test]
    fn the_due_line_takes_accounts_in_turn() {
        let mut q = Queue::default();
        for seq in 0..1000 {
            let (id, m) = message_of("big", seq, 1);
            q.insert(id, Entry::new(m), None);
        }
        let (small, m) = message_of("small", 5000, 1);
        q.insert(small, Entry::new(m), None);
        let (retry, m) = message_of("small", 5001, 1);
        q.insert(retry, Entry::new(m), Some(100));
        assert_eq!(q.queued_bytes("big"), 1000 * 19);
        assert_eq!(q.queued_bytes("small"), 2 * 19);
        let queued = q.queued_by_account().find(|(a, _)| *a == "small").map(|(_, n)| n);
        assert_eq!(
            queued,
            Some(Queued {
                messages: 2,
                bytes: 2 * 19
            })
        );
        let first: Vec<MessageId> = (0..2).filter_map(|_| q.pop_due()).collect();
        assert!(first.contains(&small), "taken within one round: {first:?}");
        assert_eq!(q.promote_due(100), 1);
        let next: Vec<MessageId> = (0..2).filter_map(|_| q.pop_due()).collect();
        assert!(next.contains(&retry), "the retry too: {next:?}");
        q.remove(&small);
        q.remove(&retry);
        assert_eq!(q.queued_bytes("small"), 0);
        assert_eq!(q.queued_by_account().count(), 1);

        let mut weighted = Queue::default();
        for seq in 0..100 {
            for (account, weight) in [("heavy", 3), ("light", 1)] {
                let (id, m) = message_of(account, seq + if weight == 3 { 0 } else { 1000 }, 1);
                let mut e = Entry::new(m);
                e.weight = weight;
                weighted.insert(id, e, None);
            }
        }
        let taken: Vec<MessageId> = (0..40).filter_map(|_| weighted.pop_due()).collect();
        let heavy = taken
            .iter()
            .filter(|id| weighted.get(id).is_some_and(|e| &*e.account == "heavy"))
            .count();
        assert_eq!(heavy, 30, "weight 3 against 1 takes 30 of the first 40");
    }
}
