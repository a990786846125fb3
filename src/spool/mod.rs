//! The per-core durable spool: every accepted message is appended to this core's segment
//! files and the client's `250` waits for the fdatasync that covers its record; delivery
//! progress and completion are appended the same way, and segments whose messages are all
//! finished are reclaimed. A crash, `kill -9` or a full disk never loses an acknowledged
//! message and never corrupts the spool: damage is found by checksum and skipped.
//!
//! One [`Spool`] per core, used only on that core's executor. Its parts:
//! - `record`: the pure on-disk framing (header, CRCs, padding, End marker, the scanner).
//! - `payload`: the pure Message / Update / Done payloads.
//! - `index`: the pure in-memory index: live messages, their state, which segments can go
//!   (and why oldest-first is correct), relocation candidates.
//! - `segment`: files and directories: naming, adoption, locking, create/read/delete.
//! - `commit`: the group committer task, segment rotation and reuse, reclaiming,
//!   relocation.
//! - `recover`: the scan and fold at open.
//!
//! Directory layout: `<dir>/core-<N>/seg-<seq:016x>.log` (plus up to two `free-*.log`
//! files kept for reuse, and `lock`). Core `i` of `n` adopts every `core-<j>` with
//! `j % n == i` (the core count may change between runs), and writes only to new segments
//! in its own `core-<i>`. Messages found in another core's directory are relocated (copied
//! with their state) into this core's directory in the background, after which the foreign
//! segments are reclaimed like any other, so each directory again holds everything about
//! its messages.
//!
//! Errors: an I/O failure answers the waiting calls with [`SpoolError::Io`] (the client then
//! gets `452 4.3.1`), seals the segment, and the next batch starts a new one; nothing
//! panics and the core stays up.
//!
//! Open the spool before any other `DmaFile` on the executor: see
//! `segment::prime_iopoll_probe` for the glommio trap this avoids.

mod commit;
mod fair;
mod index;
pub mod payload;
pub mod record;
mod recover;
mod segment;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use futures_channel::oneshot;
use glommio::Task;
use glommio::channels::local_channel::{self, LocalSender};
use serde::{Deserialize, Serialize};

use crate::config::SpoolConfig;
use crate::message::{Message, MessageId};
use commit::{Effect, Limits, Shared, State, Submission};
use index::RelocationPolicy;
use payload::{DonePayload, UpdatePayload};
use record::RecordKind;

/// Where delivery stands for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RcptState {
    Pending,
    Delivered,
    Failed,
}

/// A live message found at open, with its delivery state.
#[derive(Debug)]
pub struct RecoveredMessage {
    /// The message; its body is one chunk, or empty when `body_loaded` is false.
    pub message: Message,
    /// False when recovery left the body on disk to stay within `spool.memory_max_bytes`:
    /// read it with [`Spool::load`] when it is needed.
    pub body_loaded: bool,
    /// One per envelope recipient, in envelope order.
    pub rcpt_states: Vec<RcptState>,
    pub attempts: u32,
    pub next_attempt_ms: u64,
}

/// What recovery found. `corrupt_records` counts damaged regions (and records this version
/// cannot read); each is worth a log line.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: usize,
    pub messages: usize,
    pub corrupt_records: usize,
    pub bytes: u64,
}

/// Delivery progress to record: recipients whose state changed (index into the envelope's
/// recipients; indexes beyond it are ignored), the attempt count, the next attempt time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub rcpt_states: Vec<(u32, RcptState)>,
    pub attempts: u32,
    pub next_attempt_ms: u64,
}

/// Why a spool call failed. `Io` is the disk (temporary for the client: `452 4.3.1`);
/// `TooLarge` is a message above the record limit; `Unknown` is a caller asking about a
/// message that is not live.
#[derive(Debug)]
pub enum SpoolError {
    Io(io::Error),
    Locked(PathBuf),
    TooLarge,
    Unknown(MessageId),
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Io(e) => write!(f, "spool I/O error: {e}"),
            SpoolError::Locked(p) => write!(f, "spool directory {} is in use by another relay", p.display()),
            SpoolError::TooLarge => write!(f, "message exceeds the spool's record size limit"),
            SpoolError::Unknown(id) => write!(f, "message {id} is not in the spool"),
        }
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpoolError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A snapshot of the spool's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub segments: usize,
    pub live_messages: usize,
    pub bytes: u64,
    /// Batches made durable (one fdatasync each).
    pub commits: u64,
    /// Records made durable.
    pub records: u64,
}

/// This core's spool. Cheap to clone; every clone talks to the same committer.
#[derive(Clone)]
pub struct Spool {
    shared: Rc<Shared>,
    handle: Rc<Handle>,
}

/// The submission side, apart from `Shared` so the committer (which holds `Shared`) does
/// not keep its own channel open: when the last handle goes, the channel closes and the
/// committer drains and ends.
struct Handle {
    tx: RefCell<Option<Rc<LocalSender<Submission>>>>,
    task: RefCell<Option<Task<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.detach();
        }
    }
}

fn closed() -> SpoolError {
    SpoolError::Io(io::Error::new(io::ErrorKind::BrokenPipe, "the spool is closed"))
}

impl Spool {
    /// Opens this core's spool, recovers what it adopts, spawns the committer on the current
    /// executor.
    pub async fn open(
        config: &SpoolConfig,
        core: usize,
        cores: usize,
    ) -> Result<(Spool, Vec<RecoveredMessage>, RecoveryReport), SpoolError> {
        if core >= cores {
            let msg = format!("spool core {core} is not below the core count {cores}");
            return Err(SpoolError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg)));
        }
        let rec = recover::recover(&config.dir, core, cores, config.memory_max_bytes).await?;
        let segments: BTreeMap<_, _> = rec.segments.into_iter().map(|s| (s.key, s)).collect();
        let shared = Rc::new(Shared {
            limits: limits(config),
            core,
            own_dir: segment::core_dir(&config.dir, core),
            fairness: RefCell::new(fair::Fairness::default()),
            metrics: RefCell::new(commit::CommitMetrics::default()),
            state: RefCell::new(State {
                index: rec.index,
                segments,
                dirs: rec.dirs,
                active: None,
                next_seq: rec.next_seq,
                commits: 0,
                records: 0,
                relocation_paused: false,
                done_retry: Vec::new(),
                free: rec.free,
                _locks: rec.locks,
            }),
        });
        let queue_max_count = config.commit_batch_max_count.max(1).saturating_mul(2);
        let (tx, rx) = local_channel::new_bounded(queue_max_count);
        let task = glommio::spawn_local(commit::run(shared.clone(), rx));
        let handle = Rc::new(Handle {
            tx: RefCell::new(Some(Rc::new(tx))),
            task: RefCell::new(Some(task)),
        });
        Ok((Spool { shared, handle }, rec.messages, rec.report))
    }

    /// Appends a message; resolves once the record is durable (after the fdatasync covering
    /// it).
    pub async fn append(&self, message: &Message) -> Result<(), SpoolError> {
        let mp = payload::message_parts(message).ok_or(SpoolError::TooLarge)?;
        let submission = Submission {
            kind: RecordKind::Message,
            parts: mp.parts,
            payload_len: mp.payload_len,
            effect: Effect::Message {
                id: message.envelope.id,
                rcpt_count: message.envelope.rcpts.len(),
            },
            reply: None,
            account: Some(Rc::from(message.envelope.account.as_str())),
        };
        self.submit(submission).await
    }

    /// Records delivery progress durably.
    pub async fn update(&self, id: MessageId, update: Update) -> Result<(), SpoolError> {
        self.known(id)?;
        let u = UpdatePayload {
            id,
            rcpt_states: update.rcpt_states,
            attempts: update.attempts,
            next_attempt_ms: update.next_attempt_ms,
        };
        let part = payload::encode_small(&u).ok_or(SpoolError::TooLarge)?;
        self.submit(Submission::system(RecordKind::Update, part, Effect::Update(u)))
            .await
    }

    /// The message is finished (every recipient delivered or failed): durable Done record;
    /// segments nothing needs any more are deleted after it. When the record cannot be
    /// written (`Err`), the spool still writes it with a later batch, so the message's
    /// segments are freed once the disk is back rather than at the next restart.
    pub async fn complete(&self, id: MessageId) -> Result<(), SpoolError> {
        self.known(id)?;
        let part = payload::encode_small(&DonePayload { id }).ok_or(SpoolError::TooLarge)?;
        self.submit(Submission::system(RecordKind::Done, part, Effect::Done(id)))
            .await
    }

    /// Reads a live message back from disk; its body is one chunk.
    pub async fn load(&self, id: MessageId) -> Result<Message, SpoolError> {
        let bytes = self.shared.read_message_record(id).await?;
        match payload::decode_message(&bytes) {
            // The trace and body are slices of the one buffer read from disk.
            Some(view) if view.envelope.id == id => Ok(Message {
                trace: bytes.slice_ref(view.trace),
                body: vec![bytes.slice_ref(view.body)],
                envelope: view.envelope,
            }),
            _ => Err(SpoolError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("spool record of {id} does not decode"),
            ))),
        }
    }

    pub fn stats(&self) -> SpoolStats {
        self.shared.stats()
    }

    /// Sets the DRR quantum (bytes per round for weight 1) and the account weights that
    /// fill group commits when more is pending than one takes. The quantum is read when
    /// the committer starts; weights apply to records submitted from now on.
    pub fn set_fairness(&self, quantum_bytes: u64, weights: std::collections::HashMap<String, u32>) {
        *self.shared.fairness.borrow_mut() = fair::Fairness {
            quantum_bytes,
            weights,
        };
    }

    /// Sets the histograms the committer records each fdatasync's time and each group
    /// commit's record count in.
    pub fn set_metrics(&self, fsync_seconds: metrics::Histogram, commit_records: metrics::Histogram) {
        *self.shared.metrics.borrow_mut() = commit::CommitMetrics {
            fsync_seconds,
            commit_records,
        };
    }

    /// Flushes and stops the committer (pending appends are still committed first). Other
    /// clones of this spool get `Io` errors afterwards.
    pub async fn close(self) {
        self.handle.tx.borrow_mut().take();
        let task = self.handle.task.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
    }

    fn known(&self, id: MessageId) -> Result<(), SpoolError> {
        if self.shared.state.borrow().index.contains(id) {
            Ok(())
        } else {
            Err(SpoolError::Unknown(id))
        }
    }

    async fn submit(&self, mut submission: Submission) -> Result<(), SpoolError> {
        if submission.payload_len > record::PAYLOAD_MAX_BYTES {
            return Err(SpoolError::TooLarge);
        }
        let (reply, done) = oneshot::channel();
        submission.reply = Some(reply);
        let tx = self.handle.tx.borrow().clone().ok_or_else(closed)?;
        tx.send(submission).await.map_err(|_| closed())?;
        drop(tx);
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SpoolError::Io(e)),
            Err(oneshot::Canceled) => Err(closed()),
        }
    }
}

/// The committer's bounds from the configuration. Relocation copies at most a quarter of a
/// batch at a time, and only from an oldest segment that is at most a quarter live and has
/// two newer segments behind it (so in-flight messages are not copied needlessly).
fn limits(config: &SpoolConfig) -> Limits {
    let batch_max_count = config.commit_batch_max_count.max(1);
    Limits {
        segment_max_bytes: config.segment_max_bytes,
        batch_max_count,
        batch_max_bytes: config.commit_batch_max_bytes,
        relocation: RelocationPolicy {
            newer_segments_min_count: 2,
            live_max_bytes: config.segment_max_bytes / 4,
            batch_max_count: (batch_max_count / 4).max(1),
            batch_max_bytes: (config.commit_batch_max_bytes / 4) as u64,
        },
    }
}

#[cfg(test)]
mod tests;
