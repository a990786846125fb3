//! The group committer: one task per spool stream (a core has two, see `stream`) that
//! turns every record submitted since the last write into one DMA write and one
//! fdatasync, then answers all of their waiters.
//!
//! While a batch is being written and synced, new submissions wait in the bounded channel
//! and form the next batch; when more are pending than one batch takes, the batch is filled
//! by deficit round robin over accounts (see `fair`). A batch is serialised straight from the submissions' `Bytes`
//! parts into one block-aligned DMA buffer (the only copy of a message's bytes on its way to
//! disk), zero padded to the block. The index is updated only after the fdatasync, so it
//! always describes what is durable, and a waiter hears `Ok` only then.
//!
//! Segments are recycled: a reclaimed segment of this core's directory is renamed to a free
//! file (up to [`FREE_MAX_COUNT`]) and becomes the next new segment. Writing over blocks
//! that are already allocated and written needs no metadata change, so the fdatasync only
//! flushes data: measured on ext4/virtio, p50 about 120 µs instead of 230-300 µs, and 7-13%
//! instead of 25-40% of syncs waiting for a ~4 ms journal commit. Each batch ends with an
//! End marker block (see `record`) so the stale bytes of the file's previous life are
//! never read as records or as damage.
//!
//! Prepared segments: while the spool grows (nothing reclaimed yet, or a backlog), there is
//! no reclaimed file to reuse, and every commit into a brand-new file also allocates its
//! blocks and journals the file's new size; on ext4 the write then goes through io_uring's
//! worker threads instead of being issued at once, and a core saturated by one sender took
//! 15-20% fewer messages/s (BENCHMARKS.md). So once the active segment is half full and
//! fewer than `prepared_count` free files wait, [`prepare`] writes one full of zeros in the
//! background (a separate task, in chunks, never holding the committer).
//!
//! Blocking commits: the express stream writes and syncs its batches with blocking system
//! calls while its time budget lasts (see `blocking` for why and what bounds it); the bulk
//! stream, and the express stream out of budget, go through io_uring.
//!
//! On a failed write or sync the segment is sealed (its tail is unknown, so it is never
//! written again), every waiter of the batch gets the error, and the next batch starts a new
//! segment. When the disk recovers, commits resume by themselves.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::local_channel::LocalReceiver;
use glommio::io::{Directory, DmaFile};

use super::blocking::{self, Budget};
use super::fair::{Fairness, Pending};
use super::index::{Index, Location, RelocationPolicy, SegKey};
use super::payload::{self, UpdatePayload};
use super::record::{self, BLOCK_BYTES, RecordKind};
use super::segment::{self, SegmentFile};
use super::{SpoolError, SpoolStats};
use crate::message::MessageId;

/// Reclaimed segments kept for reuse. Two cover a rotation while another reclaim is due;
/// more would only hold disk space.
pub const FREE_MAX_COUNT: usize = 2;

/// The bounds the committer works within.
pub struct Limits {
    pub segment_max_bytes: u64,
    pub batch_max_count: usize,
    pub batch_max_bytes: usize,
    pub relocation: RelocationPolicy,
    /// Written free files to keep ready (at most [`FREE_MAX_COUNT`]).
    pub prepared_count: usize,
}

/// What the index learns once a record is durable.
pub enum Effect {
    Message { id: MessageId, rcpt_count: usize },
    Update(UpdatePayload),
    Done(MessageId),
}

/// One record waiting to be committed.
pub struct Submission {
    pub kind: RecordKind,
    pub parts: Vec<Bytes>,
    pub payload_len: usize,
    pub effect: Effect,
    /// Told the outcome after the fdatasync; `None` for the committer's own relocations.
    pub reply: Option<oneshot::Sender<io::Result<()>>>,
    /// The account whose message this is, when the caller knows (its DRR flow).
    pub account: Option<Rc<str>>,
}

impl Submission {
    /// A small record of no account (delivery progress, completion).
    pub(super) fn system(kind: RecordKind, part: Bytes, effect: Effect) -> Submission {
        Submission {
            kind,
            payload_len: part.len(),
            parts: vec![part],
            effect,
            reply: None,
            account: None,
        }
    }

    pub(super) fn record_len(&self) -> usize {
        record::record_len(self.payload_len)
    }
}

/// The spool's per-core state, shared by the handles and the committer.
pub struct Shared {
    pub limits: Limits,
    pub core: usize,
    pub own_dir: PathBuf,
    pub state: RefCell<State>,
    /// The DRR quantum and account weights of the commit batches.
    pub fairness: RefCell<Fairness>,
    /// Where the committer records its fdatasync times and batch sizes.
    pub metrics: RefCell<CommitMetrics>,
    /// Wakes [`prepare`] (the committer signals it when the active segment is half full);
    /// closed when the stream closes.
    pub prepare_wake: glommio::sync::Semaphore,
}

/// The committer's histograms (no-ops until the core sets its own).
#[derive(Clone)]
pub struct CommitMetrics {
    pub fsync_seconds: metrics::Histogram,
    pub commit_records: metrics::Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        CommitMetrics {
            fsync_seconds: metrics::Histogram::noop(),
            commit_records: metrics::Histogram::noop(),
        }
    }
}

pub struct State {
    pub index: Index,
    pub segments: BTreeMap<SegKey, SegmentFile>,
    pub dirs: HashMap<usize, Rc<Directory>>,
    /// The segment batches go to; `None` until the first batch and after a seal.
    pub active: Option<SegKey>,
    pub next_seq: u64,
    pub commits: u64,
    pub records: u64,
    /// Set when a relocation or a commit failed; cleared when a new segment is created, so a
    /// broken disk is not hammered with relocation reads.
    pub relocation_paused: bool,
    /// Finished messages whose Done record could not be written: it goes again with the
    /// next batch that has work of its own (so a failing disk is not retried in a loop).
    /// At most one entry per live message.
    pub done_retry: Vec<MessageId>,
    /// Free files of the own directory, ready to become segments.
    pub free: Vec<PathBuf>,
    /// Free files written by [`prepare`], and segments that had to start as new empty files
    /// (no free file was ready), since open.
    pub prepared: u64,
    pub fresh: u64,
    /// What is left of the blocking commits' budget (`None`: this stream never blocks), and
    /// the commits done blocking since open.
    pub blocking: Option<Budget>,
    pub blocking_commits: u64,
    /// Held for the spool's lifetime.
    pub _locks: Vec<File>,
}

impl Shared {
    pub fn stats(&self) -> SpoolStats {
        let st = self.state.borrow();
        SpoolStats {
            segments: st.segments.len(),
            live_messages: st.index.live_count(),
            bytes: st.segments.values().map(|s| s.size_bytes).sum(),
            commits: st.commits,
            records: st.records,
            express_records: 0,
            prepared_segments: st.prepared,
            fresh_segments: st.fresh,
            blocking_commits: st.blocking_commits,
        }
    }

    /// Reads the Message record of a live message, checksums verified; returns the payload
    /// (copied once out of the DMA buffer).
    pub async fn read_message_record(&self, id: MessageId) -> Result<Bytes, SpoolError> {
        let (loc, file) = {
            let st = self.state.borrow();
            let loc = st.index.location(id).ok_or(SpoolError::Unknown(id))?;
            let file = st.segments.get(&loc.seg).map(|s| s.file.clone());
            (loc, file.ok_or(SpoolError::Unknown(id))?)
        };
        let bytes = file
            .read_at(loc.offset, loc.len as usize)
            .await
            .map_err(io_error)?;
        match record::decode_one(&bytes, loc.seg.seq) {
            Some((h, payload)) if h.kind == RecordKind::Message as u8 && h.version == record::VERSION => {
                Ok(Bytes::copy_from_slice(payload))
            }
            // An older record is upgraded as it is read, so what loads and relocation see
            // (and what relocation writes under the current version) is the current layout.
            Some((h, payload)) if h.kind == RecordKind::Message as u8 && record::readable(h.version) => {
                super::payload::upgrade_message(h.version, payload).ok_or_else(|| {
                    SpoolError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("spool record of {id} (version {}) does not decode", h.version),
                    ))
                })
            }
            _ => Err(SpoolError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "spool record of {id} at {}:{} is damaged",
                    loc.seg.seq, loc.offset
                ),
            ))),
        }
    }
}

fn io_error(e: glommio::GlommioError<()>) -> SpoolError {
    SpoolError::Io(io::Error::from(e))
}

/// Every waiter gets its own copy of the error (`io::Error` is not `Clone`).
fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// The committer task: runs until every sender is gone and the queue is drained.
pub async fn run(shared: Rc<Shared>, rx: LocalReceiver<Submission>) {
    let limits = &shared.limits;
    let new_pending = |quantum| Pending::new(quantum, limits.batch_max_count, limits.batch_max_bytes);
    let mut quantum = shared.fairness.borrow().quantum_bytes;
    let mut pending = new_pending(quantum);
    let mut open = true;
    loop {
        // The quantum is set after the spool opens (and by a reload): take it up whenever
        // nothing is pending.
        let configured = shared.fairness.borrow().quantum_bytes;
        if configured != quantum && pending.is_empty() {
            quantum = configured;
            pending = new_pending(quantum);
        }
        let mut batch = Batch::new(&shared.limits);
        if open {
            relocations(&shared, &mut batch).await;
        }
        if batch.items.is_empty() && pending.is_empty() {
            if !open {
                break;
            }
            match rx.recv().await {
                Some(s) => pending.push(s, &shared.fairness.borrow()),
                None => {
                    open = false;
                    continue;
                }
            }
        }
        // Everything submitted meanwhile (within the bound) is pending, so the batch is
        // chosen by DRR over all of it rather than by who came first.
        while open && !pending.is_full() {
            match futures_lite::future::poll_once(rx.recv()).await {
                Some(Some(s)) => pending.push(s, &shared.fairness.borrow()),
                Some(None) => open = false,
                None => break,
            }
        }
        pending.fill(&mut batch);
        retry_done(&shared, &mut batch);
        commit(&shared, batch.items).await;
        reclaim(&shared).await;
    }
}

/// The records of one commit, within the batch bounds (a single record may exceed the
/// byte bound on its own; it then goes alone).
pub(super) struct Batch {
    pub(super) items: Vec<Submission>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Batch {
    pub(super) fn new(limits: &Limits) -> Batch {
        Batch {
            items: Vec::new(),
            bytes: 0,
            max_count: limits.batch_max_count.max(1),
            max_bytes: limits.batch_max_bytes,
        }
    }

    pub(super) fn fits(&self, s: &Submission) -> bool {
        self.items.is_empty()
            || (self.items.len() < self.max_count && self.bytes + s.record_len() <= self.max_bytes)
    }

    pub(super) fn full(&self) -> bool {
        self.items.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    pub(super) fn push(&mut self, s: Submission) {
        self.bytes += s.record_len();
        self.items.push(s);
    }
}

/// Writes, syncs, applies and answers one batch.
async fn commit(shared: &Shared, batch: Vec<Submission>) {
    match write_batch(shared, &batch).await {
        Ok(locations) => {
            shared.metrics.borrow().commit_records.record(batch.len() as f64);
            let mut st = shared.state.borrow_mut();
            st.commits += 1;
            st.records += batch.len() as u64;
            for (s, loc) in batch.iter().zip(locations) {
                match &s.effect {
                    Effect::Message { id, rcpt_count } => st.index.apply_message(*id, *rcpt_count, loc),
                    Effect::Update(u) => st.index.apply_update(u),
                    Effect::Done(id) => st.index.apply_done(*id),
                }
            }
            drop(st);
            for s in batch {
                if let Some(reply) = s.reply {
                    // A waiter that gave up is fine: its record is durable regardless.
                    let _ = reply.send(Ok(()));
                }
            }
        }
        Err(e) => {
            let mut st = shared.state.borrow_mut();
            st.relocation_paused = true;
            for s in &batch {
                if let Effect::Done(id) = s.effect
                    && st.index.contains(id)
                    && !st.done_retry.contains(&id)
                {
                    st.done_retry.push(id);
                }
            }
            drop(st);
            for s in batch {
                if let Some(reply) = s.reply {
                    let _ = reply.send(Err(copy_error(&e)));
                }
            }
        }
    }
}

/// One DMA write of the whole batch at the segment's end, then one fdatasync. Returns where
/// each record landed.
async fn write_batch(shared: &Shared, batch: &[Submission]) -> io::Result<Vec<Location>> {
    let (key, file, pos) = active_segment(shared).await?;
    let align = BLOCK_BYTES.max(file.alignment() as usize);
    let total: usize = batch.iter().map(Submission::record_len).sum();
    let body_len = record::align_up(total, align);
    // The End marker block after the batch; the next batch starts on it.
    let len = body_len + align;
    let mut buf = file.alloc_dma_buffer(len);
    let dst = buf.as_bytes_mut();
    let mut locations = Vec::with_capacity(batch.len());
    let mut at = 0;
    for s in batch {
        let n = record::encode_into(&mut dst[at..], s.kind, key.seq, &s.parts);
        locations.push(Location {
            seg: key,
            offset: pos + at as u64,
            len: n as u64,
        });
        at += n;
    }
    // The pool hands out recycled memory: the padding must really be zeros.
    dst[at..].fill(0);
    record::encode_end(&mut dst[body_len..], key.seq);
    let block = {
        let mut st = shared.state.borrow_mut();
        st.blocking.as_mut().is_some_and(|b| b.allows(Instant::now()))
    };
    // Either way: the time the fdatasync took.
    let synced = if block {
        let started = Instant::now();
        let synced = blocking::write_and_sync(&file, buf.as_bytes(), pos);
        let mut st = shared.state.borrow_mut();
        if let Some(budget) = st.blocking.as_mut() {
            budget.charge(started.elapsed());
        }
        st.blocking_commits += u64::from(synced.is_ok());
        synced
    } else {
        async {
            let written = file.write_at(buf, pos).await?;
            if written < len {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short write to a spool segment",
                ));
            }
            let started = Instant::now();
            file.fdatasync().await?;
            Ok(started.elapsed())
        }
        .await
    };
    let result = synced.map(|d| shared.metrics.borrow().fsync_seconds.record(d.as_secs_f64()));
    let mut st = shared.state.borrow_mut();
    let seg = st.segments.get_mut(&key);
    match (result, seg) {
        (Ok(()), Some(seg)) => {
            seg.size_bytes = pos + body_len as u64;
            let half_full = seg.size_bytes >= shared.limits.segment_max_bytes / 2;
            // At most one wake-up pending: the preparer checks what is missing itself.
            if half_full
                && st.free.len() < shared.limits.prepared_count
                && shared.prepare_wake.available() == 0
            {
                shared.prepare_wake.signal(1);
            }
            Ok(locations)
        }
        (result, seg) => {
            if let Some(seg) = seg {
                seg.sealed = true;
                seg.failed = true;
            }
            if st.active == Some(key) {
                st.active = None;
            }
            Err(result
                .err()
                .unwrap_or_else(|| io::Error::other("spool segment vanished")))
        }
    }
}

/// The segment to write to and its end, rotating to a new one (a reused free file when
/// there is one) when the active segment is sealed or full.
async fn active_segment(shared: &Shared) -> io::Result<(SegKey, Rc<DmaFile>, u64)> {
    let (key, path, dir, reuse) = {
        let mut st = shared.state.borrow_mut();
        if let Some(k) = st.active
            && let Some(seg) = st.segments.get(&k)
            && !seg.sealed
            && seg.size_bytes < shared.limits.segment_max_bytes
        {
            return Ok((k, seg.file.clone(), seg.size_bytes));
        }
        if let Some(k) = st.active.take()
            && let Some(seg) = st.segments.get_mut(&k)
        {
            seg.sealed = true;
        }
        let seq = st.next_seq;
        // Taken even if creation fails, so a half-created file is never reused.
        st.next_seq += 1;
        let key = SegKey {
            seq,
            dir: shared.core,
        };
        let dir = st.dirs.get(&shared.core).cloned();
        (
            key,
            segment::segment_path(&shared.own_dir, seq),
            dir,
            st.free.pop(),
        )
    };
    let dir = dir.ok_or_else(|| io::Error::other("spool directory handle missing"))?;
    let file = match reuse {
        Some(from) => {
            glommio::io::rename(&from, &path).await?;
            segment::open_for_reuse(&path).await?
        }
        None => {
            shared.state.borrow_mut().fresh += 1;
            segment::create(&path).await?
        }
    };
    let file = Rc::new(file);
    {
        let mut st = shared.state.borrow_mut();
        st.index.add_segment(key);
        st.segments.insert(
            key,
            SegmentFile {
                key,
                path,
                file: file.clone(),
                size_bytes: 0,
                sealed: true,
                failed: false,
            },
        );
    }
    // The new name must be durable before a record in the file is acknowledged.
    dir.sync().await?;
    let mut st = shared.state.borrow_mut();
    if let Some(seg) = st.segments.get_mut(&key) {
        seg.sealed = false;
    }
    st.active = Some(key);
    st.relocation_paused = false;
    Ok((key, file, 0))
}

/// The preparer task: whenever the committer wakes it, writes free files until
/// `prepared_count` wait (each named after a sequence number no segment will take). Runs
/// until the stream closes. A file that fails (a full disk) is removed, and the next wake-up
/// (the next segment half full) tries again: the committer never waits for it.
pub async fn prepare(shared: Rc<Shared>) {
    while shared.prepare_wake.acquire(1).await.is_ok() {
        loop {
            let seq = {
                let mut st = shared.state.borrow_mut();
                if st.free.len() >= shared.limits.prepared_count {
                    break;
                }
                let seq = st.next_seq;
                st.next_seq += 1;
                seq
            };
            let path = segment::free_path(&shared.own_dir, seq);
            if segment::prepare(&path, shared.limits.segment_max_bytes)
                .await
                .is_err()
            {
                let _ = std::fs::remove_file(&path);
                break;
            }
            let mut st = shared.state.borrow_mut();
            // Reclaiming may have filled the free list meanwhile.
            if st.free.len() >= FREE_MAX_COUNT {
                drop(st);
                let _ = std::fs::remove_file(&path);
                break;
            }
            st.free.push(path);
            st.prepared += 1;
        }
    }
}

/// Deletes (or keeps for reuse) the segments nothing needs any more, oldest first (see
/// `index` for why). A `load` still reading a reused file would fail its checksum or
/// segment check rather than return wrong bytes.
async fn reclaim(shared: &Shared) {
    loop {
        let next = {
            let st = shared.state.borrow();
            let key = st.index.reclaimable(st.active).into_iter().next();
            key.and_then(|k| {
                let seg = st.segments.get(&k)?;
                let reuse = k.dir == shared.core && !seg.failed && st.free.len() < FREE_MAX_COUNT;
                let to = reuse.then(|| segment::free_path(&shared.own_dir, k.seq));
                Some((k, seg.path.clone(), to, st.dirs.get(&k.dir)?.clone()))
            })
        };
        let Some((key, path, to, dir)) = next else {
            return;
        };
        let done = match &to {
            Some(to) => segment::rename(&dir, &path, to).await,
            None => segment::delete(&dir, &path).await,
        };
        // On failure the segment stays; the next commit tries again.
        if done.is_err() {
            return;
        }
        let mut st = shared.state.borrow_mut();
        st.segments.remove(&key);
        st.index.remove_segment(key);
        st.free.extend(to);
    }
}

/// Adds the Done records that failed before to a batch that has work of its own, at most
/// a quarter of a batch at a time. They go last: each message they finish is already
/// durable, and nothing else about it is still to come.
fn retry_done(shared: &Shared, batch: &mut Batch) {
    if batch.items.is_empty() {
        return;
    }
    let mut st = shared.state.borrow_mut();
    let take = st
        .done_retry
        .len()
        .min((shared.limits.batch_max_count / 4).max(1));
    let mut ids: Vec<MessageId> = st.done_retry.drain(..take).collect();
    ids.retain(|id| st.index.contains(*id));
    drop(st);
    for id in ids {
        let Some(part) = payload::encode_small(&payload::DonePayload { id }) else {
            continue;
        };
        batch.push(Submission {
            kind: RecordKind::Done,
            payload_len: part.len(),
            parts: vec![part],
            effect: Effect::Done(id),
            reply: None,
            account: None,
        });
    }
}

/// Puts relocation records (each a Message record copied from disk, then an Update with the
/// message's full state) at the front of the batch. They come first because their state is
/// read from the index, which reflects every earlier batch and none of the records still
/// queued, so every queued record is rightly ordered after them.
async fn relocations(shared: &Shared, batch: &mut Batch) {
    let ids = {
        let st = shared.state.borrow();
        if st.relocation_paused {
            return;
        }
        st.index
            .relocation_candidates(shared.core, st.active, &shared.limits.relocation)
    };
    for id in ids {
        let payload = match shared.read_message_record(id).await {
            Ok(p) => p,
            Err(_) => {
                shared.state.borrow_mut().relocation_paused = true;
                return;
            }
        };
        let st = shared.state.borrow();
        let (Some(update), Some(state)) = (st.index.full_update(id), st.index.state(id)) else {
            continue;
        };
        let Some(update_part) = payload::encode_small(&update) else {
            continue;
        };
        let rcpt_count = state.rcpt_states.len();
        batch.push(Submission {
            kind: RecordKind::Message,
            payload_len: payload.len(),
            parts: vec![payload],
            effect: Effect::Message { id, rcpt_count },
            reply: None,
            account: None,
        });
        batch.push(Submission {
            kind: RecordKind::Update,
            payload_len: update_part.len(),
            parts: vec![update_part],
            effect: Effect::Update(update),
            reply: None,
            account: None,
        });
    }
}
