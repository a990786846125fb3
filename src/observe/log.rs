//! The per-core log ring: each core records what happens to connections and messages as
//! structured one-line JSON records in its own bounded ring, and a task on the same core
//! drains the ring to its own file `<log-dir>/core-N.log`.
//!
//! This is the fix for the failure corerelay comes from (threads crashing on one shared log
//! file): no lock, no shared file, and the data path never waits for the log. When the
//! ring is full a record is dropped and counted; when the file cannot be written the batch
//! is dropped and counted, and the file is reopened on the next batch.

use std::cell::Cell;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::io::{BufferedFile, OpenOptions};
use serde::Serialize;

use super::metrics::CoreMetrics;
use crate::message::MessageId;

/// What happened. Field names are the JSON keys; `event` is the record's kind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The relay started on this core.
    Start { listen: String, accounts: usize },
    /// Spool recovery on start.
    Recovered {
        segments: usize,
        records: usize,
        messages: usize,
        corrupt_records: usize,
    },
    /// A client connected.
    Connect { peer: IpAddr },
    /// A client's MAIL, RCPT or message was refused.
    Reject {
        peer: IpAddr,
        account: Option<String>,
        from: String,
        reply: String,
    },
    /// A message was acknowledged with 250 (logged by the core the client is on).
    Accept {
        msg: MessageId,
        account: String,
        peer: IpAddr,
        from: String,
        rcpts: usize,
        size: usize,
    },
    /// A message was spooled durably (logged by the owner core).
    Spooled {
        msg: MessageId,
        account: String,
        size: usize,
    },
    /// A delivery attempt started towards a host.
    Attempt {
        msg: MessageId,
        account: String,
        rcpts: usize,
        host: String,
    },
    Delivered {
        msg: MessageId,
        account: String,
        rcpt: String,
        host: String,
        reply: String,
    },
    Deferred {
        msg: MessageId,
        account: String,
        rcpt: String,
        reason: String,
        attempts: u32,
        next_ms: u64,
    },
    Failed {
        msg: MessageId,
        account: String,
        rcpt: String,
        reason: String,
    },
    /// A delivery status notification about `msg` was queued for its sender.
    Bounced {
        msg: MessageId,
        account: String,
        dsn: MessageId,
        /// `failed` or `delayed`.
        action: &'static str,
        rcpts: usize,
    },
    /// Something went wrong inside corerelay that is not about one message.
    Error { what: String },
    /// A tracking pixel was fetched (written to the core's event log).
    Open {
        account: String,
        msg: MessageId,
        rcpt: String,
        user_agent: String,
        client: IpAddr,
    },
    /// A tracked link was followed.
    Click {
        account: String,
        msg: MessageId,
        rcpt: String,
        url: String,
        user_agent: String,
        client: IpAddr,
    },
    /// A one-click unsubscribe (RFC 8058) was posted.
    Unsubscribe {
        account: String,
        msg: MessageId,
        rcpt: String,
        user_agent: String,
        client: IpAddr,
    },
    /// The process was asked to stop; `connections` were open on this core.
    Stopping { connections: usize },
    /// The core stopped; `connections_cut` were still open when the grace period ended.
    Stopped { connections_cut: usize },
    /// A new configuration was swapped in on this core.
    Reloaded {
        generation: u64,
        accounts: usize,
        /// Routing or delivery settings changed: new routing decisions use them.
        egress_changed: bool,
        needs_restart: String,
    },
    /// A new configuration was refused; the running one stays.
    ReloadRefused { reason: String },
    /// A tracking request carried a token that does not verify (answered 404).
    BadToken { reason: &'static str, client: IpAddr },
}

#[derive(Serialize)]
struct Record<'a> {
    ts: &'a str,
    core: usize,
    #[serde(flatten)]
    event: &'a Event,
}

/// Counters of what the ring lost, and the request to reopen the file.
#[derive(Debug, Default)]
pub struct LogDrops {
    /// Set by a reload: the drain closes and reopens its file before the next write, so
    /// logrotate can move the old one away.
    pub reopen: Cell<bool>,
    /// Records dropped because the ring was full.
    pub ring_full: Cell<u64>,
    /// Records dropped because the file could not be written.
    pub write_failed: Cell<u64>,
}

/// A core's handle to its log ring. Cheap to clone; every task on the core holds one.
/// Every event it records is also counted in the core's metrics, so logs and counters
/// share one vocabulary.
#[derive(Clone)]
pub struct Log {
    core: usize,
    tx: Rc<LocalSender<(u64, Event)>>,
    drops: Rc<LogDrops>,
    metrics: Rc<CoreMetrics>,
    /// Counts what this ring drops: the log ring's or the event ring's counter.
    dropped: metrics::Counter,
}

/// The receiving end, consumed by [`run_drain`].
pub struct LogDrain {
    core: usize,
    rx: LocalReceiver<(u64, Event)>,
    drops: Rc<LogDrops>,
    metrics: Rc<CoreMetrics>,
}

impl Log {
    /// A ring of `capacity` records for `core`, counting into metrics without accounts.
    pub fn new(core: usize, capacity: usize) -> (Log, LogDrain) {
        Self::with_metrics(core, capacity, Rc::new(CoreMetrics::new(core, [])))
    }

    /// A ring of `capacity` records for `core` that also counts every event in `metrics`.
    pub fn with_metrics(core: usize, capacity: usize, metrics: Rc<CoreMetrics>) -> (Log, LogDrain) {
        let dropped = metrics.core.log_dropped_total.clone();
        Self::ring(core, capacity, metrics, dropped)
    }

    /// The core's tracking event ring: like [`Log::with_metrics`], but its drops are
    /// counted apart (`corerelay_events_dropped_total`).
    pub fn events_with_metrics(core: usize, capacity: usize, metrics: Rc<CoreMetrics>) -> (Log, LogDrain) {
        let dropped = metrics.core.events_dropped_total.clone();
        Self::ring(core, capacity, metrics, dropped)
    }

    fn ring(
        core: usize,
        capacity: usize,
        metrics: Rc<CoreMetrics>,
        dropped: metrics::Counter,
    ) -> (Log, LogDrain) {
        let (tx, rx) = local_channel::new_bounded(capacity);
        let drops = Rc::new(LogDrops::default());
        let log = Log {
            core,
            tx: Rc::new(tx),
            drops: drops.clone(),
            metrics: metrics.clone(),
            dropped,
        };
        (
            log,
            LogDrain {
                core,
                rx,
                drops,
                metrics,
            },
        )
    }

    /// Records an event. Never blocks: when the ring is full the event is dropped and
    /// counted (it is still counted in the metrics).
    pub fn emit(&self, event: Event) {
        self.metrics.record(&event);
        if self.tx.try_send((now_ms(), event)).is_err() {
            self.drops.ring_full.set(self.drops.ring_full.get() + 1);
            self.dropped.increment(1);
        }
    }

    /// Asks the drain to reopen its file before its next write (after logrotate).
    pub fn reopen(&self) {
        self.drops.reopen.set(true);
    }

    /// Records queued in the ring and not yet written.
    pub fn pending(&self) -> usize {
        self.tx.len()
    }

    /// The core's metric handles.
    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    /// The core's metric handles, shared (for a second ring on the same core).
    pub fn metrics_rc(&self) -> Rc<CoreMetrics> {
        self.metrics.clone()
    }

    pub fn core(&self) -> usize {
        self.core
    }

    pub fn drops(&self) -> &LogDrops {
        &self.drops
    }
}

/// The path of core `core`'s log file.
pub fn log_path(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core}.log"))
}

/// The path of core `core`'s tracking event log (opens, clicks, unsubscribes).
pub fn events_path(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("events-core-{core}.jsonl"))
}

/// Most records written in one batch; a batch is one write to the file.
const BATCH_MAX_COUNT: usize = 1024;

/// Drains the ring into `path` until every [`Log`] handle is dropped.
pub async fn run_drain(drain: LogDrain, path: PathBuf) {
    let mut file: Option<(BufferedFile, u64)> = None;
    let mut batch = Vec::with_capacity(64 << 10);
    let mut ts = Timestamps::default();
    while let Some(first) = drain.rx.recv().await {
        batch.clear();
        let mut count = 0;
        format_record(drain.core, first, &mut ts, &mut batch);
        count += 1;
        // Take whatever else is already queued so one write carries many records.
        while count < BATCH_MAX_COUNT {
            let Some(next) = try_recv(&drain.rx).await else {
                break;
            };
            format_record(drain.core, next, &mut ts, &mut batch);
            count += 1;
        }
        if drain.drops.reopen.replace(false)
            && let Some((f, _)) = file.take()
        {
            let _ = f.close().await;
        }
        if file.is_none() {
            file = open_append(&path).await.ok();
        }
        // The write takes the buffer; the next batch starts with as much room, instead of
        // growing from nothing again.
        let room = batch.capacity();
        let full = std::mem::replace(&mut batch, Vec::with_capacity(room));
        let written = match &mut file {
            Some((f, pos)) => match f.write_at(full, *pos).await {
                Ok(n) => {
                    *pos += n as u64;
                    true
                }
                Err(_) => false,
            },
            None => false,
        };
        if !written {
            // Reopen on the next batch: the directory may have been fixed or rotated.
            file = None;
            drain
                .drops
                .write_failed
                .set(drain.drops.write_failed.get() + count as u64);
            drain.metrics.core.log_write_failed_total.increment(count as u64);
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
    if let Some((f, _)) = file {
        let _ = f.close().await;
    }
}

/// A receive that does not wait: `Some` when a record is already queued.
async fn try_recv<T>(rx: &LocalReceiver<T>) -> Option<T> {
    futures_lite::future::poll_once(rx.recv()).await.flatten()
}

async fn open_append(path: &Path) -> std::io::Result<(BufferedFile, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .buffered_open(path)
        .await
        .map_err(std::io::Error::from)?;
    let size = file.file_size().await.map_err(std::io::Error::from)?;
    Ok((file, size))
}

fn format_record(core: usize, (ts_ms, event): (u64, Event), ts: &mut Timestamps, out: &mut Vec<u8>) {
    let record = Record {
        ts: ts.format(ts_ms),
        core,
        event: &event,
    };
    if serde_json::to_writer(&mut *out, &record).is_ok() {
        out.push(b'\n');
    }
}

/// Formats record times as `2026-11-27T22:31:24.123Z`. Formatting a date is the costly
/// part of a log record (a strftime pattern parsed for every record was 1/5 of the log's
/// CPU), and it changes once a second: the date and time are formatted once per second and
/// only the milliseconds per record.
#[derive(Default)]
struct Timestamps {
    /// The second `text` holds, as Unix seconds.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`; the milliseconds are rewritten in place.
    text: String,
}

impl Timestamps {
    fn format(&mut self, ms: u64) -> &str {
        let second = ms / 1000;
        if self.second != Some(second) {
            self.text = chrono::DateTime::from_timestamp_millis(ms.min(i64::MAX as u64) as i64)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S.000Z").to_string())
                .unwrap_or_default();
            self.second = Some(second);
        }
        let Some(digits) = self.text.len().checked_sub(4) else {
            return &self.text;
        };
        let millis = ms % 1000;
        self.text.truncate(digits);
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            self.text.push(char::from(b'0' + digit as u8));
        }
        self.text.push('Z');
        &self.text
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;

    #[test]
    fn records_reach_the_file_and_overflow_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), 3);
        let p = path.clone();
        LocalExecutorBuilder::default()
            .io_memory(256 << 10)
            .spawn(move || async move {
                let (log, drain) = Log::new(3, 4);
                for i in 0..6 {
                    log.emit(Event::Error {
                        what: format!("e{i}"),
                    });
                }
                assert_eq!(log.drops().ring_full.get(), 2);
                drop(log);
                run_drain(drain, p).await;
            })
            .unwrap()
            .join()
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["event"], "error");
        assert_eq!(lines[0]["core"], 3);
        assert_eq!(lines[3]["what"], "e3");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    }

    /// Issue 7 names log ring and event ring drops apart: a full event ring counts in
    /// `corerelay_events_dropped_total`, not in the log ring's counter.
    #[test]
    fn the_event_ring_counts_its_drops_apart_from_the_log_ring() {
        let text = LocalExecutorBuilder::default()
            .io_memory(256 << 10)
            .spawn(|| async {
                let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
                let core_metrics = metrics::with_local_recorder(&recorder, || CoreMetrics::new(5, []));
                let core_metrics = Rc::new(core_metrics);
                let (events, _events_drain) = Log::events_with_metrics(5, 1, core_metrics.clone());
                let (log, _log_drain) = Log::with_metrics(5, 1, core_metrics);
                for _ in 0..3 {
                    events.emit(Event::Error { what: "e".into() });
                }
                log.emit(Event::Error { what: "l".into() });
                recorder.handle().render()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            text.contains("corerelay_events_dropped_total{core=\"5\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("corerelay_log_dropped_total{core=\"5\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn timestamps_match_a_full_format_across_seconds_and_days() {
        let mut ts = Timestamps::default();
        let starts = [
            0,
            999,
            1_000,
            86_399_999,
            86_400_000,
            1_795_822_404_611,
            4_102_444_799_999,
        ];
        for start in starts {
            for ms in [start, start + 1, start + 998, start + 1_001, start + 60_000] {
                let full = chrono::DateTime::from_timestamp_millis(ms as i64)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string();
                assert_eq!(ts.format(ms), full, "{ms}");
            }
        }
        // Going back in time (a clock step) is formatted correctly too.
        assert_eq!(ts.format(1_000), "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn appends_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), 0);
        for round in 0..2 {
            let p = path.clone();
            LocalExecutorBuilder::default()
                .io_memory(256 << 10)
                .spawn(move || async move {
                    let (log, drain) = Log::new(0, 16);
                    log.emit(Event::Connect {
                        peer: "127.0.0.1".parse().unwrap(),
                    });
                    log.emit(Event::Error {
                        what: format!("round {round}"),
                    });
                    drop(log);
                    run_drain(drain, p).await;
                })
                .unwrap()
                .join()
                .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("round 0") && text.contains("round 1"));
    }
}
