//! Recovery at open: lock and scan every segment of every directory this core adopts, in
//! sequence order, and fold the records into the index and the set of live messages.
//!
//! Segments from all adopted directories are merged by `(seq, dir)`. New segments always
//! get a sequence number above every one seen, so for any one message its records are in
//! chronological order in this merge even when they span directories (a relocated copy).
//! Damage is counted, never fatal: a damaged region is skipped and every intact record
//! around it is kept. An I/O error while reading is fatal to `open`, because skipping a
//! segment that could not be read would later let its messages be reclaimed unseen.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::Directory;

use super::index::{Index, Location, SegKey};
use super::payload::{self, DonePayload, UpdatePayload};
use super::record::{self, RecordKind, ScanItem, Scanner};
use super::segment::{self, SegmentFile};
use super::{RecoveredMessage, RecoveryReport, SpoolError};
use crate::message::{Message, MessageId};

/// Everything `open` needs from the previous runs.
pub struct Recovered {
    pub index: Index,
    pub segments: Vec<SegmentFile>,
    pub dirs: HashMap<usize, Rc<Directory>>,
    pub messages: Vec<RecoveredMessage>,
    pub report: RecoveryReport,
    pub next_seq: u64,
    pub locks: Vec<File>,
    /// Reclaimed segments of this core's own directory, ready for reuse.
    pub free: Vec<PathBuf>,
}

/// Bodies of recovered messages are kept in memory up to `memory_max_bytes` in all; the
/// rest stay on disk, so a large backlog cannot exhaust memory at start.
pub async fn recover(
    base: &Path,
    core: usize,
    cores: usize,
    memory_max_bytes: usize,
) -> Result<Recovered, SpoolError> {
    let adopted = segment::adopted_dirs(base, core, cores).map_err(SpoolError::Io)?;
    let mut locks = Vec::with_capacity(adopted.len());
    let mut dirs = HashMap::new();
    let mut found: Vec<(SegKey, PathBuf)> = Vec::new();
    let mut free_files = Vec::new();
    for (j, path) in &adopted {
        locks.push(segment::lock_dir(path)?);
        if locks.len() == 1 {
            segment::prime_iopoll_probe(path).await.map_err(SpoolError::Io)?;
        }
        dirs.insert(*j, segment::open_dir(path).await.map_err(SpoolError::Io)?);
        for seq in segment::list_segments(path).map_err(SpoolError::Io)? {
            found.push((SegKey { seq, dir: *j }, segment::segment_path(path, seq)));
        }
        for seq in segment::list_free(path).map_err(SpoolError::Io)? {
            let free = segment::free_path(path, seq);
            if *j == core {
                free_files.push(free);
            } else {
                // Reuse happens only in the own directory; another core's spares are just
                // disk space. Failing to delete one is harmless.
                let _ = std::fs::remove_file(free);
            }
        }
    }
    found.sort_by_key(|(k, _)| *k);
    let mut fold = Fold {
        body_budget_bytes: memory_max_bytes,
        ..Fold::default()
    };
    let mut segments = Vec::with_capacity(found.len());
    for (key, path) in found {
        let file = segment::open_for_read(&path).await.map_err(SpoolError::Io)?;
        let image = segment::read_all(&file).await.map_err(SpoolError::Io)?;
        fold.index.add_segment(key);
        fold.segment(key, &image);
        segments.push(SegmentFile {
            key,
            path,
            file: Rc::new(file),
            size_bytes: image.len() as u64,
            sealed: true,
            failed: false,
        });
    }
    // Above every segment and every free file of the own directory: a free file keeps the
    // number of the segment it was (or a fresh one), and a new segment reclaimed under a
    // free file's number would replace that file while the free list still names it.
    let free_seqs = free_files.iter().filter_map(|p: &PathBuf| segment::free_seq(p));
    let next_seq = segments
        .iter()
        .map(|s| s.key.seq)
        .chain(free_seqs)
        .map(|seq| seq + 1)
        .max()
        .unwrap_or(1);
    let (index, messages, report) = fold.finish(segments.len());
    Ok(Recovered {
        index,
        segments,
        dirs,
        messages,
        report,
        next_seq,
        locks,
        free: free_files,
    })
}

/// The fold of scanned records into live messages.
#[derive(Default)]
struct Fold {
    index: Index,
    /// Live messages, and whether their body is held.
    messages: HashMap<MessageId, (Message, bool)>,
    report: RecoveryReport,
    /// Bytes of bodies that may still be held / that are held.
    body_budget_bytes: usize,
    body_bytes: usize,
}

impl Fold {
    fn segment(&mut self, key: SegKey, image: &[u8]) {
        self.report.bytes += image.len() as u64;
        for item in Scanner::new(image, key.seq) {
            match item {
                ScanItem::Corrupt { .. } => self.report.corrupt_records += 1,
                ScanItem::Record {
                    offset,
                    len,
                    header,
                    payload,
                } => {
                    let loc = Location {
                        seg: key,
                        offset: offset as u64,
                        len: len as u64,
                    };
                    let kind = RecordKind::from_u8(header.kind).filter(|_| record::readable(header.version));
                    // A record this version does not understand (written by a newer relay)
                    // is counted as damage rather than silently skipped.
                    if kind.is_some_and(|k| self.record(k, header.version, payload, loc)) {
                        self.report.records += 1;
                    } else {
                        self.report.corrupt_records += 1;
                    }
                }
            }
        }
    }

    /// Applies one record; false if its payload does not decode.
    fn record(&mut self, kind: RecordKind, version: u8, payload: &[u8], loc: Location) -> bool {
        match kind {
            RecordKind::Message => {
                let Some(view) = payload::decode_message_of(version, payload) else {
                    return false;
                };
                let id = view.envelope.id;
                self.index.apply_message(id, view.envelope.rcpts.len(), loc);
                // The same id twice (a relocated copy) keeps one message.
                if !self.messages.contains_key(&id) {
                    let keep = self.body_bytes + view.body_len() <= self.body_budget_bytes;
                    let message = if keep {
                        self.body_bytes += view.body_len();
                        view.to_message()
                    } else {
                        view.to_message_without_body()
                    };
                    self.messages.insert(id, (message, keep));
                }
            }
            RecordKind::Update => {
                let Some(u) = payload::decode_small::<UpdatePayload>(payload) else {
                    return false;
                };
                self.index.apply_update(&u);
            }
            RecordKind::Done => {
                let Some(d) = payload::decode_small::<DonePayload>(payload) else {
                    return false;
                };
                self.index.apply_done(d.id);
                if let Some((m, true)) = self.messages.remove(&d.id) {
                    self.body_bytes -= m.body_len();
                }
            }
            // The scanner stops at End markers; one here would be a scanner bug.
            RecordKind::End => return false,
        }
        true
    }

    fn finish(self, segments: usize) -> (Index, Vec<RecoveredMessage>, RecoveryReport) {
        let Fold {
            index,
            messages,
            mut report,
            ..
        } = self;
        let mut out: Vec<RecoveredMessage> = messages
            .into_values()
            .filter_map(|(message, body_loaded)| {
                let state = index.state(message.envelope.id)?.clone();
                Some(RecoveredMessage {
                    message,
                    body_loaded,
                    rcpt_states: state.rcpt_states,
                    attempts: state.attempts,
                    next_attempt_ms: state.next_attempt_ms,
                })
            })
            .collect();
        // Oldest first: ids start with the accept time.
        out.sort_by_key(|r| r.message.envelope.id);
        report.segments = segments;
        report.messages = out.len();
        (index, out, report)
    }
}
