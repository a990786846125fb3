//! Fair group commits: when more records are pending than one commit takes, the batch is
//! filled by deficit round robin over accounts (costs in record bytes, each account's
//! weight times `fairness.spool_quantum_bytes` per round), not in arrival order. A big
//! account with hundreds of records waiting then delays a small account's record by at
//! most about one quantum, instead of by every batch its backlog fills.
//!
//! Records that belong to no account (delivery progress, completions, the committer's own
//! relocations) share one flow of weight 1. Within one flow the order is kept, which is
//! all the spool needs: a message's own records are never pending at the same time (each
//! waits for the previous one to be durable).
//!
//! The committer drains its channel into [`Pending`] before each commit (up to four
//! batches' worth of records and two batches' worth of bytes), so the choice is made over
//! everything submitted meanwhile. Plain data: no executor, no I/O.

use std::collections::HashMap;
use std::rc::Rc;

use super::commit::{Batch, Submission};
use crate::schedule::Drr;

/// The weights the committer serves accounts with; set by the runtime from the config.
#[derive(Debug, Clone)]
pub struct Fairness {
    pub quantum_bytes: u64,
    pub weights: HashMap<String, u32>,
}

impl Default for Fairness {
    fn default() -> Self {
        Fairness {
            quantum_bytes: 65_536,
            weights: HashMap::new(),
        }
    }
}

/// Records submitted and not yet in a batch.
pub struct Pending {
    drr: Drr<Rc<str>, Submission>,
    /// Chosen by the DRR but too large for the last batch: it opens the next one.
    carry: Option<Submission>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    /// The flow of records without an account.
    system: Rc<str>,
}

impl Pending {
    /// Room for four batches of `batch_max_count` records and two of `batch_max_bytes`.
    pub fn new(quantum_bytes: u64, batch_max_count: usize, batch_max_bytes: usize) -> Pending {
        Pending {
            drr: Drr::new(quantum_bytes),
            carry: None,
            bytes: 0,
            max_count: batch_max_count.max(1).saturating_mul(4),
            max_bytes: batch_max_bytes.saturating_mul(2),
            system: Rc::from(""),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.drr.is_empty() && self.carry.is_none()
    }

    /// No more should be taken from the channel before the next commit.
    pub fn is_full(&self) -> bool {
        self.drr.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    pub fn push(&mut self, s: Submission, fairness: &Fairness) {
        let key = s.account.clone().unwrap_or_else(|| self.system.clone());
        let weight = fairness.weights.get(&*key).copied().unwrap_or(1);
        let len = s.record_len();
        self.bytes += len;
        self.drr.push(key, s, len as u64, weight);
    }

    /// Moves records into `batch` in DRR order until it is full or nothing is pending.
    pub fn fill(&mut self, batch: &mut Batch) {
        if let Some(s) = self.carry.take() {
            if !batch.fits(&s) {
                self.carry = Some(s);
                return;
            }
            batch.push(s);
        }
        while !batch.full() {
            let Some((_, s)) = self.drr.pop() else { break };
            self.bytes -= s.record_len();
            if !batch.fits(&s) {
                self.carry = Some(s);
                break;
            }
            batch.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;
    use crate::spool::commit::{Effect, Limits};
    use crate::spool::index::RelocationPolicy;
    use crate::spool::record::RecordKind;
    use bytes::Bytes;

    fn submission(account: Option<&str>, seq: u64, payload_len: usize) -> Submission {
        Submission {
            kind: RecordKind::Done,
            parts: vec![Bytes::from(vec![0u8; payload_len])],
            payload_len,
            effect: Effect::Done(MessageId::new(1, 0, seq)),
            reply: None,
            account: account.map(Rc::from),
        }
    }

    fn limits(count: usize, bytes: usize) -> Limits {
        Limits {
            segment_max_bytes: 1 << 30,
            batch_max_count: count,
            batch_max_bytes: bytes,
            relocation: RelocationPolicy {
                newer_segments_min_count: 2,
                live_max_bytes: 0,
                batch_max_count: 1,
                batch_max_bytes: 0,
            },
            prepared_count: 0,
        }
    }

    fn seqs(batch: &Batch) -> Vec<u64> {
        batch
            .items
            .iter()
            .map(|s| match s.effect {
                Effect::Done(id) => id.0 as u64 & 0xffff,
                _ => unreachable!(),
            })
            .collect()
    }

    /// 200 of a big account's 2 KB records were submitted before one of a small
    /// account's: in arrival order the small one would wait for four commits; by DRR it
    /// is in the first.
    #[test]
    fn a_small_accounts_record_goes_in_the_next_commit() {
        let fairness = Fairness {
            quantum_bytes: 16 << 10,
            weights: HashMap::new(),
        };
        let limits = limits(64, 8 << 20);
        let mut p = Pending::new(fairness.quantum_bytes, 64, 8 << 20);
        for seq in 0..200 {
            p.push(submission(Some("big"), seq, 2000), &fairness);
        }
        p.push(submission(Some("small"), 9000, 2000), &fairness);
        p.push(submission(None, 9001, 100), &fairness);
        let mut batch = Batch::new(&limits);
        p.fill(&mut batch);
        let first = seqs(&batch);
        assert_eq!(first.len(), 64);
        assert!(first.contains(&9000) && first.contains(&9001), "{first:?}");
        let big: Vec<u64> = first.iter().copied().filter(|&s| s < 9000).collect();
        assert!(big.windows(2).all(|w| w[0] < w[1]), "FIFO within an account");
        let mut taken = first.len();
        while !p.is_empty() {
            let mut batch = Batch::new(&limits);
            p.fill(&mut batch);
            taken += batch.items.len();
        }
        assert_eq!(taken, 202);
    }

    /// Weights share a commit in proportion, a record too large for the rest of a batch
    /// opens the next one, and the pending set is bounded.
    #[test]
    fn weights_carry_and_bounds() {
        let mut weights = HashMap::new();
        weights.insert("heavy".to_string(), 3);
        let fairness = Fairness {
            quantum_bytes: 4096,
            weights,
        };
        let mut p = Pending::new(fairness.quantum_bytes, 40, 1 << 20);
        for seq in 0..100 {
            p.push(submission(Some("heavy"), seq, 4000), &fairness);
            p.push(submission(Some("light"), 1000 + seq, 4000), &fairness);
        }
        assert!(p.is_full(), "200 records are above four batches of 40");
        let mut batch = Batch::new(&limits(40, 1 << 20));
        p.fill(&mut batch);
        let heavy = seqs(&batch).iter().filter(|&&s| s < 1000).count();
        assert_eq!((batch.items.len(), heavy), (40, 30));

        let mut p = Pending::new(fairness.quantum_bytes, 10, 64 << 10);
        p.push(submission(Some("a"), 1, 40 << 10), &fairness);
        p.push(submission(Some("a"), 2, 40 << 10), &fairness);
        let mut batch = Batch::new(&limits(10, 64 << 10));
        p.fill(&mut batch);
        assert_eq!(seqs(&batch), vec![1]);
        let mut batch = Batch::new(&limits(10, 64 << 10));
        p.fill(&mut batch);
        assert_eq!(seqs(&batch), vec![2]);
        assert!(p.is_empty());
    }
}
