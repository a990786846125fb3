//! The spool's in-memory index, pure: which messages are live, where each one's Message
//! record is, its delivery state, and which segments can go. Recovery folds the records it
//! scans into it; the committer applies every batch to it once the batch is durable, so the
//! index always describes what is on disk.
//!
//! ## Why segments are deleted oldest-first
//!
//! A segment `S` is deleted only when no live message has its (current) Message record in
//! it, it is not the active segment, and every older segment is already gone: the set of
//! segments on disk is always a suffix of the segments ever written (ordered by sequence).
//! Every record about a message is written after that message's Message record, so in a
//! newer or the same segment. Deleting `S` then drops:
//! - Message records of finished messages; their Done records are in `S` or newer. If the
//!   Done survives, recovery sees a Done for an id it never saw and ignores it.
//! - Update and Done records of messages whose Message record is in `S` or older. Those
//!   messages are finished or relocated (no live Message record in a deleted segment), so
//!   no surviving message loses state.
//!
//! Deleting a newer segment `T` before an older pinned `S` would be wrong: `T` may hold the
//! Done of a message whose Message record sits in `S`, and recovery would resurrect it.
//!
//! ## Relocation
//!
//! One long-deferred message would pin the oldest segment, and the suffix rule would then
//! keep every later segment too. A relocation re-appends the message (its Message record
//! and an Update with its full state) to the active segment; the index then points at the
//! new copy and the old segment can go. On recovery a second Message record for a live id
//! moves the location to the newer copy and keeps the state; the full-state Update that
//! follows it re-applies that same state. Messages recovered from another core's directory
//! (after the core count changed) are relocated the same way, so each core's directory
//! again holds everything about its messages.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::RcptState;
use super::payload::UpdatePayload;
use crate::message::MessageId;

/// A segment: its sequence number, then the core directory it lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegKey {
    pub seq: u64,
    pub dir: usize,
}

/// Where a Message record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub seg: SegKey,
    pub offset: u64,
    pub len: u64,
}

/// Delivery state of a live message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveState {
    pub rcpt_states: Vec<RcptState>,
    pub attempts: u32,
    pub next_attempt_ms: u64,
}

#[derive(Debug)]
struct Entry {
    loc: Location,
    state: LiveState,
}

#[derive(Debug, Default)]
struct SegUse {
    ids: HashSet<MessageId>,
    live_bytes: u64,
}

/// When the oldest segment may be relocated.
#[derive(Clone, Copy, Debug)]
pub struct RelocationPolicy {
    /// The oldest segment must have at least this many newer segments behind it, so
    /// messages that are merely in flight are not copied.
    pub newer_segments_min_count: usize,
    /// Its live bytes must be at most this, so relocation copies little to free a lot.
    pub live_max_bytes: u64,
    /// At most this many messages / bytes are relocated per batch.
    pub batch_max_count: usize,
    pub batch_max_bytes: u64,
}

#[derive(Debug, Default)]
pub struct Index {
    live: HashMap<MessageId, Entry>,
    segs: BTreeMap<SegKey, SegUse>,
}

impl Index {
    pub fn add_segment(&mut self, key: SegKey) {
        self.segs.entry(key).or_default();
    }

    /// Forgets a deleted segment. The caller checked it holds no live message.
    pub fn remove_segment(&mut self, key: SegKey) {
        debug_assert!(self.segs.get(&key).is_none_or(|u| u.ids.is_empty()));
        self.segs.remove(&key);
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn contains(&self, id: MessageId) -> bool {
        self.live.contains_key(&id)
    }

    pub fn location(&self, id: MessageId) -> Option<Location> {
        self.live.get(&id).map(|e| e.loc)
    }

    pub fn state(&self, id: MessageId) -> Option<&LiveState> {
        self.live.get(&id).map(|e| &e.state)
    }

    /// A Message record became durable. A new id starts with every recipient pending; a
    /// known id (a relocated copy) moves to the new location and keeps its state.
    pub fn apply_message(&mut self, id: MessageId, rcpt_count: usize, loc: Location) {
        let state = match self.live.remove(&id) {
            Some(old) => {
                self.unpin(id, old.loc);
                old.state
            }
            None => LiveState {
                rcpt_states: vec![RcptState::Pending; rcpt_count],
                attempts: 0,
                next_attempt_ms: 0,
            },
        };
        let used = self.segs.entry(loc.seg).or_default();
        used.ids.insert(id);
        used.live_bytes += loc.len;
        self.live.insert(id, Entry { loc, state });
    }

    /// An Update record became durable. Ids that are not live are ignored (their Message
    /// record was reclaimed), as are recipient indexes beyond the envelope.
    pub fn apply_update(&mut self, u: &UpdatePayload) {
        let Some(e) = self.live.get_mut(&u.id) else {
            return;
        };
        for &(i, s) in &u.rcpt_states {
            if let Some(slot) = e.state.rcpt_states.get_mut(i as usize) {
                *slot = s;
            }
        }
        e.state.attempts = u.attempts;
        e.state.next_attempt_ms = u.next_attempt_ms;
    }

    /// A Done record became durable.
    pub fn apply_done(&mut self, id: MessageId) {
        if let Some(old) = self.live.remove(&id) {
            self.unpin(id, old.loc);
        }
    }

    fn unpin(&mut self, id: MessageId, loc: Location) {
        if let Some(u) = self.segs.get_mut(&loc.seg) {
            u.ids.remove(&id);
            u.live_bytes = u.live_bytes.saturating_sub(loc.len);
        }
    }

    /// The state of a live message as one Update record that restores it.
    pub fn full_update(&self, id: MessageId) -> Option<UpdatePayload> {
        let e = self.live.get(&id)?;
        Some(UpdatePayload {
            id,
            rcpt_states: (0u32..)
                .zip(&e.state.rcpt_states)
                .filter(|(_, s)| **s != RcptState::Pending)
                .map(|(i, s)| (i, *s))
                .collect(),
            attempts: e.state.attempts,
            next_attempt_ms: e.state.next_attempt_ms,
        })
    }

    /// The oldest segments that can be deleted now, oldest first (see the module doc).
    pub fn reclaimable(&self, active: Option<SegKey>) -> Vec<SegKey> {
        self.segs
            .iter()
            .take_while(|(k, u)| Some(**k) != active && u.ids.is_empty())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Live messages to re-append to the active segment: first any that live in another
    /// core's directory, then those pinning the oldest segment when `policy` allows it.
    pub fn relocation_candidates(
        &self,
        own_dir: usize,
        active: Option<SegKey>,
        policy: &RelocationPolicy,
    ) -> Vec<MessageId> {
        let foreign = self
            .segs
            .iter()
            .filter(|(k, u)| k.dir != own_dir && !u.ids.is_empty());
        if let Some((_, u)) = foreign.into_iter().next() {
            return self.take_batch(u, policy);
        }
        let Some((pos, (key, oldest))) = self.segs.iter().enumerate().find(|(_, (_, u))| !u.ids.is_empty())
        else {
            return Vec::new();
        };
        let newer_count = self.segs.len() - pos - 1;
        if Some(*key) == active
            || newer_count < policy.newer_segments_min_count
            || oldest.live_bytes > policy.live_max_bytes
        {
            return Vec::new();
        }
        self.take_batch(oldest, policy)
    }

    fn take_batch(&self, u: &SegUse, policy: &RelocationPolicy) -> Vec<MessageId> {
        let mut ids: Vec<MessageId> = u.ids.iter().copied().collect();
        ids.sort_unstable();
        let mut bytes = 0u64;
        let mut out = Vec::new();
        for id in ids {
            let len = self.live.get(&id).map_or(0, |e| e.loc.len);
            if !out.is_empty()
                && (out.len() >= policy.batch_max_count || bytes + len > policy.batch_max_bytes)
            {
                break;
            }
            bytes += len;
            out.push(id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> SegKey {
        SegKey { seq, dir: 0 }
    }

    fn at(seq: u64, offset: u64) -> Location {
        Location {
            seg: key(seq),
            offset,
            len: 100,
        }
    }

    const POLICY: RelocationPolicy = RelocationPolicy {
        newer_segments_min_count: 2,
        live_max_bytes: 1000,
        batch_max_count: 10,
        batch_max_bytes: 1 << 20,
    };

    #[test]
    fn done_in_a_newer_segment_frees_an_older_one_only_in_order() {
        let mut ix = Index::default();
        for s in 1..=3 {
            ix.add_segment(key(s));
        }
        ix.apply_message(MessageId(1), 1, at(1, 0));
        ix.apply_message(MessageId(2), 1, at(2, 0));
        ix.apply_done(MessageId(2));
        // Segment 2 is empty but segment 1 is still pinned: nothing may go yet.
        assert!(ix.reclaimable(Some(key(3))).is_empty());
        ix.apply_done(MessageId(1));
        assert_eq!(ix.reclaimable(Some(key(3))), vec![key(1), key(2)]);
        assert_eq!(ix.reclaimable(Some(key(1))), vec![], "the active segment stays");
    }

    #[test]
    fn updates_apply_and_unknown_ids_are_ignored() {
        let mut ix = Index::default();
        ix.apply_message(MessageId(1), 3, at(1, 0));
        ix.apply_update(&UpdatePayload {
            id: MessageId(1),
            rcpt_states: vec![(1, RcptState::Delivered), (9, RcptState::Failed)],
            attempts: 2,
            next_attempt_ms: 77,
        });
        ix.apply_update(&UpdatePayload {
            id: MessageId(5),
            rcpt_states: vec![(0, RcptState::Failed)],
            attempts: 1,
            next_attempt_ms: 1,
        });
        let s = ix.state(MessageId(1)).unwrap();
        assert_eq!(
            s.rcpt_states,
            vec![RcptState::Pending, RcptState::Delivered, RcptState::Pending]
        );
        assert_eq!((s.attempts, s.next_attempt_ms), (2, 77));
        assert!(!ix.contains(MessageId(5)));
        let full = ix.full_update(MessageId(1)).unwrap();
        assert_eq!(full.rcpt_states, vec![(1, RcptState::Delivered)]);
    }

    #[test]
    fn a_second_message_record_moves_the_location_and_keeps_state() {
        let mut ix = Index::default();
        ix.apply_message(MessageId(1), 2, at(1, 0));
        ix.apply_update(&UpdatePayload {
            id: MessageId(1),
            rcpt_states: vec![(0, RcptState::Failed)],
            attempts: 4,
            next_attempt_ms: 9,
        });
        ix.apply_message(MessageId(1), 2, at(4, 4096));
        assert_eq!(ix.location(MessageId(1)), Some(at(4, 4096)));
        assert_eq!(ix.state(MessageId(1)).unwrap().attempts, 4);
        assert_eq!(ix.live_count(), 1);
        assert_eq!(ix.reclaimable(Some(key(4))), vec![key(1)]);
    }

    #[test]
    fn relocation_picks_foreign_messages_then_a_sparse_oldest_segment() {
        let mut ix = Index::default();
        for s in 1..=4 {
            ix.add_segment(key(s));
        }
        ix.add_segment(SegKey { seq: 9, dir: 1 });
        ix.apply_message(
            MessageId(7),
            1,
            Location {
                seg: SegKey { seq: 9, dir: 1 },
                offset: 0,
                len: 10,
            },
        );
        ix.apply_message(MessageId(1), 1, at(1, 0));
        ix.apply_message(MessageId(2), 1, at(2, 0));
        assert_eq!(
            ix.relocation_candidates(0, Some(key(4)), &POLICY),
            vec![MessageId(7)]
        );
        ix.apply_done(MessageId(7));
        ix.remove_segment(SegKey { seq: 9, dir: 1 });
        // Segment 1 has three newer segments and 100 live bytes: relocate.
        assert_eq!(
            ix.relocation_candidates(0, Some(key(4)), &POLICY),
            vec![MessageId(1)]
        );
        ix.apply_done(MessageId(1));
        ix.remove_segment(key(1));
        // Segment 2 has only two newer segments left, which still qualifies; with a
        // stricter policy it does not.
        let strict = RelocationPolicy {
            newer_segments_min_count: 3,
            ..POLICY
        };
        assert_eq!(
            ix.relocation_candidates(0, Some(key(4)), &POLICY),
            vec![MessageId(2)]
        );
        assert!(ix.relocation_candidates(0, Some(key(4)), &strict).is_empty());
        let dense = RelocationPolicy {
            live_max_bytes: 50,
            ..POLICY
        };
        assert!(ix.relocation_candidates(0, Some(key(4)), &dense).is_empty());
    }
}
