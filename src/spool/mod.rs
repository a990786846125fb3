//! The per-core durable spool: every accepted message is appended to this core's segment
//! files and the client's `250` waits for the fdatasync that covers its record; delivery
//! progress and completion are appended the same way, and segments whose messages are all
//! finished are reclaimed. A crash, `kill -9` or a full disk never loses an acknowledged
//! message and never corrupts the spool: damage is found by checksum and skipped.
//!
//! One [`Spool`] per core, used only on that core's executor; it runs two segment streams,
//! bulk and express (see [`Spool`] for why), each with its own directory tree, index and
//! committer. Its parts:
//! - `stream`: one stream: its committer's channel, recovery at open, the record calls.
//! - `record`: the pure on-disk framing (header, CRCs, padding, End marker, the scanner).
//! - `payload`: the pure Message / Update / Done payloads.
//! - `index`: the pure in-memory index: live messages, their state, which segments can go
//!   (and why oldest-first is correct), relocation candidates.
//! - `segment`: files and directories: naming, adoption, locking, create/read/delete.
//! - `commit`: the group committer task, segment rotation and reuse, reclaiming,
//!   relocation.
//! - `blocking`: the express stream's budgeted blocking write and fdatasync.
//! - `recover`: the scan and fold at open.
//!
//! Directory layout: `<dir>/core-<N>/seg-<seq:016x>.log` (plus up to two `free-*.log`
//! files kept for reuse, and `lock`) for the bulk stream, the same under `<dir>/express/`
//! for the express stream. Core `i` of `n` adopts every `core-<j>` with
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

mod blocking;
mod commit;
mod fair;
mod index;
pub mod payload;
pub mod record;
mod recover;
mod segment;
mod stream;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::TaskQueueHandle;
use serde::{Deserialize, Serialize};

use crate::config::SpoolConfig;
use crate::message::{Message, MessageId};
use commit::Limits;
use index::RelocationPolicy;
use stream::Stream;

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

impl RecoveryReport {
    /// Adds what another stream's recovery found.
    fn absorb(&mut self, other: &RecoveryReport) {
        self.segments += other.segments;
        self.records += other.records;
        self.messages += other.messages;
        self.corrupt_records += other.corrupt_records;
        self.bytes += other.bytes;
    }
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
    /// Of those, records made durable by the express stream.
    pub express_records: u64,
    /// Free files written ahead of need (`spool.prepared_segment_count`), and segments that
    /// started as new empty files because none was ready.
    pub prepared_segments: u64,
    pub fresh_segments: u64,
    /// Commits made with blocking system calls (`spool.express_blocking_budget_ms`; only the
    /// express stream's).
    pub blocking_commits: u64,
}

/// This core's spool: two segment streams, bulk and express, under one API. Cheap to
/// clone; every clone talks to the same committers.
///
/// Why two: a stream commits one batch at a time (a write, then an fdatasync), so under a
/// big sender's steady flow every record waits for the batch in progress and then its own,
/// whoever it belongs to. A new message of an account that has no other message waiting
/// for its commit goes to the express stream (`spool.express`), whose batches then hold at
/// most one new message per account (plus the progress records of its own messages): a
/// small sender's `250` waits for a small write and one fdatasync of its own, running
/// beside the bulk stream's, not behind it. Every record about a message goes to the
/// stream its Message record is in, so each stream keeps its own ordering rules.
#[derive(Clone)]
pub struct Spool {
    bulk: Stream,
    express: Stream,
    /// New messages of accounts with nothing waiting go to the express stream.
    express_enabled: bool,
    /// New messages of each account waiting for their commit now, in either stream.
    waiting: Rc<RefCell<HashMap<Rc<str>, usize>>>,
}

/// Counts one new message of an account as waiting for its commit while it lives.
struct Waiting {
    map: Rc<RefCell<HashMap<Rc<str>, usize>>>,
    account: Rc<str>,
}

impl Waiting {
    /// Counts the message and returns how many of the account's were waiting before it.
    fn enter(map: &Rc<RefCell<HashMap<Rc<str>, usize>>>, account: Rc<str>) -> (Waiting, usize) {
        let before = {
            let mut m = map.borrow_mut();
            let n = m.entry(account.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let guard = Waiting {
            map: map.clone(),
            account,
        };
        (guard, before)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut m = self.map.borrow_mut();
        if let Some(n) = m.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.account);
            }
        }
    }
}

/// The express stream's directory tree, inside the spool directory.
pub fn express_dir(dir: &Path) -> PathBuf {
    dir.join("express")
}

impl Spool {
    /// Opens this core's spool (both streams), recovers what it adopts, spawns the
    /// committers on the current executor, in the current task queue. The express stream is
    /// always opened, so what a previous run left in it is recovered even when
    /// `spool.express` is now off.
    pub async fn open(
        config: &SpoolConfig,
        core: usize,
        cores: usize,
    ) -> Result<(Spool, Vec<RecoveredMessage>, RecoveryReport), SpoolError> {
        Spool::open_in(config, core, cores, None).await
    }

    /// [`Spool::open`] with the express stream's committer spawned into `express_queue`:
    /// a core puts it in its latency-sensitive queue with the SMTP sessions it answers, so a
    /// small sender's record is taken up without waiting for the queue running to yield.
    pub async fn open_in(
        config: &SpoolConfig,
        core: usize,
        cores: usize,
        express_queue: Option<TaskQueueHandle>,
    ) -> Result<(Spool, Vec<RecoveredMessage>, RecoveryReport), SpoolError> {
        if core >= cores {
            let msg = format!("spool core {core} is not below the core count {cores}");
            return Err(SpoolError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg)));
        }
        let (bulk, mut messages, mut report) =
            Stream::open(config, &config.dir, core, cores, Duration::ZERO, None).await?;
        let express_base = express_dir(&config.dir);
        if !express_base.is_dir() {
            std::fs::create_dir_all(&express_base).map_err(SpoolError::Io)?;
            // The new directory's entry must survive a crash before a record in it is acked.
            std::fs::File::open(&config.dir)
                .and_then(|d| d.sync_all())
                .map_err(SpoolError::Io)?;
        }
        let (express, more, found) = Stream::open(
            config,
            &express_base,
            core,
            cores,
            config.express_blocking_budget,
            express_queue,
        )
        .await?;
        messages.extend(more);
        report.absorb(&found);
        let spool = Spool {
            bulk,
            express,
            express_enabled: config.express,
            waiting: Rc::new(RefCell::new(HashMap::new())),
        };
        Ok((spool, messages, report))
    }

    /// Appends a message; resolves once the record is durable (after the fdatasync covering
    /// it).
    pub async fn append(&self, message: &Message) -> Result<(), SpoolError> {
        let account: Rc<str> = Rc::from(message.envelope.account.as_str());
        let (_waiting, before) = Waiting::enter(&self.waiting, account.clone());
        let stream = if self.express_enabled && before == 0 {
            &self.express
        } else {
            &self.bulk
        };
        stream.append(message, account).await
    }

    /// Records delivery progress durably.
    pub async fn update(&self, id: MessageId, update: Update) -> Result<(), SpoolError> {
        self.stream_of(id).update(id, update).await
    }

    /// The message is finished (every recipient delivered or failed): durable Done record;
    /// segments nothing needs any more are deleted after it. When the record cannot be
    /// written (`Err`), the spool still writes it with a later batch, so the message's
    /// segments are freed once the disk is back rather than at the next restart.
    pub async fn complete(&self, id: MessageId) -> Result<(), SpoolError> {
        self.stream_of(id).complete(id).await
    }

    /// Reads a live message back from disk; its body is one chunk.
    pub async fn load(&self, id: MessageId) -> Result<Message, SpoolError> {
        self.stream_of(id).load(id).await
    }

    /// Both streams' counters together.
    pub fn stats(&self) -> SpoolStats {
        let (b, e) = (self.bulk.stats(), self.express.stats());
        SpoolStats {
            segments: b.segments + e.segments,
            live_messages: b.live_messages + e.live_messages,
            bytes: b.bytes + e.bytes,
            commits: b.commits + e.commits,
            records: b.records + e.records,
            express_records: e.records,
            prepared_segments: b.prepared_segments + e.prepared_segments,
            fresh_segments: b.fresh_segments + e.fresh_segments,
            blocking_commits: b.blocking_commits + e.blocking_commits,
        }
    }

    /// Sets the DRR quantum (bytes per round for weight 1) and the account weights that
    /// fill group commits when more is pending than one takes. The quantum is read when
    /// the committer starts; weights apply to records submitted from now on.
    pub fn set_fairness(&self, quantum_bytes: u64, weights: HashMap<String, u32>) {
        self.express.set_fairness(quantum_bytes, weights.clone());
        self.bulk.set_fairness(quantum_bytes, weights);
    }

    /// Sets the histograms the committers record each fdatasync's time and each group
    /// commit's record count in.
    pub fn set_metrics(&self, fsync_seconds: metrics::Histogram, commit_records: metrics::Histogram) {
        self.express
            .set_metrics(fsync_seconds.clone(), commit_records.clone());
        self.bulk.set_metrics(fsync_seconds, commit_records);
    }

    /// Flushes and stops the committers (pending appends are still committed first). Other
    /// clones of this spool get `Io` errors afterwards.
    pub async fn close(self) {
        self.express.close().await;
        self.bulk.close().await;
    }

    /// The stream a live message's records go to: the one holding its Message record.
    fn stream_of(&self, id: MessageId) -> &Stream {
        if self.express.known(id).is_ok() {
            &self.express
        } else {
            &self.bulk
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
        prepared_count: config.prepared_segment_count.min(commit::FREE_MAX_COUNT),
    }
}

#[cfg(test)]
mod tests;
