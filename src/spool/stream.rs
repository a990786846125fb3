//! One segment stream of a core's spool: a directory tree of segment files, its index and
//! its group committer. A core's [`super::Spool`] runs two (bulk and express); every record
//! about one message goes to the stream that holds its Message record, so each stream's
//! ordering and oldest-first reclaiming rules (see `index`) hold on their own.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::{Task, TaskQueueHandle};

use super::blocking::Budget;
use super::commit::{self, Effect, Shared, State, Submission};
use super::payload::{self, DonePayload, UpdatePayload};
use super::record::{self, RecordKind};
use super::{
    RecoveredMessage, RecoveryReport, SpoolError, SpoolStats, Update, fair, limits, recover, segment,
};
use crate::config::SpoolConfig;
use crate::message::{Message, MessageId};

/// One stream. Cheap to clone; every clone talks to the same committer.
#[derive(Clone)]
pub(super) struct Stream {
    pub(super) shared: Rc<Shared>,
    handle: Rc<Handle>,
}

/// The submission side, apart from `Shared` so the committer (which holds `Shared`) does
/// not keep its own channel open: when the last handle goes, the channel closes and the
/// committer drains and ends.
struct Handle {
    tx: RefCell<Option<Rc<LocalSender<Submission>>>>,
    task: RefCell<Option<Task<()>>>,
    /// The preparer (`commit::prepare`): cancelled, not awaited, when the stream goes (a
    /// free file it was writing is still a valid, shorter free file).
    preparer: RefCell<Option<Task<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.detach();
        }
        self.preparer.get_mut().take();
    }
}

fn closed() -> SpoolError {
    SpoolError::Io(io::Error::new(io::ErrorKind::BrokenPipe, "the spool is closed"))
}

impl Stream {
    /// Opens this core's stream under `base`, recovers what it adopts, spawns the committer
    /// on the current executor, in `queue` (the current task queue if `None`).
    /// `blocking_budget`: blocked time per second its commits may spend in blocking system
    /// calls (`blocking`; zero: never).
    pub(super) async fn open(
        config: &SpoolConfig,
        base: &Path,
        core: usize,
        cores: usize,
        blocking_budget: Duration,
        queue: Option<TaskQueueHandle>,
    ) -> Result<(Stream, Vec<RecoveredMessage>, RecoveryReport), SpoolError> {
        let rec = recover::recover(base, core, cores, config.memory_max_bytes).await?;
        let segments: BTreeMap<_, _> = rec.segments.into_iter().map(|s| (s.key, s)).collect();
        let shared = Rc::new(Shared {
            limits: limits(config),
            core,
            own_dir: segment::core_dir(base, core),
            fairness: RefCell::new(fair::Fairness::default()),
            metrics: RefCell::new(commit::CommitMetrics::default()),
            prepare_wake: glommio::sync::Semaphore::new(0),
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
                prepared: 0,
                fresh: 0,
                blocking: Budget::new(blocking_budget, Instant::now()),
                blocking_commits: 0,
                _locks: rec.locks,
            }),
        });
        let queue_max_count = config.commit_batch_max_count.max(1).saturating_mul(2);
        let (tx, rx) = local_channel::new_bounded(queue_max_count);
        let committer = commit::run(shared.clone(), rx);
        let task = match queue {
            Some(queue) => glommio::spawn_local_into(committer, queue)
                .map_err(|e| SpoolError::Io(io::Error::other(format!("cannot spawn the committer: {e}"))))?,
            None => glommio::spawn_local(committer),
        };
        let preparer = glommio::spawn_local(commit::prepare(shared.clone()));
        let handle = Rc::new(Handle {
            tx: RefCell::new(Some(Rc::new(tx))),
            task: RefCell::new(Some(task)),
            preparer: RefCell::new(Some(preparer)),
        });
        Ok((Stream { shared, handle }, rec.messages, rec.report))
    }

    /// Appends a message of `account` (its DRR flow); resolves once the record is durable
    /// (after the fdatasync covering it).
    pub(super) async fn append(&self, message: &Message, account: Rc<str>) -> Result<(), SpoolError> {
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
            account: Some(account),
        };
        self.submit(submission).await
    }

    /// Records delivery progress durably.
    pub(super) async fn update(&self, id: MessageId, update: Update) -> Result<(), SpoolError> {
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
    pub(super) async fn complete(&self, id: MessageId) -> Result<(), SpoolError> {
        self.known(id)?;
        let part = payload::encode_small(&DonePayload { id }).ok_or(SpoolError::TooLarge)?;
        self.submit(Submission::system(RecordKind::Done, part, Effect::Done(id)))
            .await
    }

    /// Reads a live message back from disk; its body is one chunk.
    pub(super) async fn load(&self, id: MessageId) -> Result<Message, SpoolError> {
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

    pub(super) fn stats(&self) -> SpoolStats {
        self.shared.stats()
    }

    /// Sets the DRR quantum (bytes per round for weight 1) and the account weights that
    /// fill group commits when more is pending than one takes. The quantum is read when
    /// the committer starts; weights apply to records submitted from now on.
    pub(super) fn set_fairness(&self, quantum_bytes: u64, weights: std::collections::HashMap<String, u32>) {
        *self.shared.fairness.borrow_mut() = fair::Fairness {
            quantum_bytes,
            weights,
        };
    }

    /// Sets the histograms the committer records each fdatasync's time and each group
    /// commit's record count in.
    pub(super) fn set_metrics(&self, fsync_seconds: metrics::Histogram, commit_records: metrics::Histogram) {
        *self.shared.metrics.borrow_mut() = commit::CommitMetrics {
            fsync_seconds,
            commit_records,
        };
    }

    /// Flushes and stops the committer (pending appends are still committed first). Other
    /// clones of this spool get `Io` errors afterwards.
    pub(super) async fn close(self) {
        self.shared.prepare_wake.close();
        self.handle.preparer.borrow_mut().take();
        self.handle.tx.borrow_mut().take();
        let task = self.handle.task.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
    }

    pub(super) fn known(&self, id: MessageId) -> Result<(), SpoolError> {
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
