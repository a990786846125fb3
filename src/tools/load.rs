//! `corerelay load`: a load generator. It sends N messages of a given size over C
//! concurrent connections (several messages per connection), and reports messages per
//! second and the latency of the reply to the end of DATA (p50 / p99 / max) — the time a
//! sending service waits for corerelay's `250`.
//!
//! Every message carries `X-Load-Id` (run id and sequence number) and `X-Load-Sent-Us` (send
//! time), so a sink can match what arrived against what was acknowledged.
//!
//! With `retry_for` set, the load behaves like a sending service whose relay goes away
//! (a crash, a restart): a message whose connection failed before its reply is sent again,
//! with the same id, until it is answered or `retry_for` has passed since its first try.
//! That is how the crash tests drive the relay through `kill -9`s, and why a message the
//! relay spooled but could not acknowledge before it died may arrive twice (at-least-once).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::deliver::connection::{Connection, Timeouts};
use crate::message::BodyType;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: SocketAddr,
    pub messages: u64,
    pub concurrency: usize,
    pub size_bytes: usize,
    pub from: String,
    pub to: String,
    pub per_connection: usize,
    pub cores: usize,
    /// Write the ids of acknowledged messages to this file, one per line.
    pub ack_log: Option<PathBuf>,
    /// How long one message is retried after connection failures (zero: not retried).
    pub retry_for: Duration,
    /// Messages started per second over all connections (zero: as fast as they go).
    pub rate_per_second: f64,
}

/// What one connection task measured.
#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u32>,
    acked_ids: Vec<String>,
    refused: u64,
    errors: u64,
    abandoned: u64,
}

impl TaskResult {
    fn add(&mut self, other: TaskResult) {
        self.latencies_us.extend(other.latencies_us);
        self.acked_ids.extend(other.acked_ids);
        self.refused += other.refused;
        self.errors += other.errors;
        self.abandoned += other.abandoned;
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    /// Failed attempts (connection refused or lost before the reply).
    pub errors: u64,
    /// Messages given up after failed attempts (never answered).
    pub abandoned: u64,
    pub seconds: f64,
    pub messages_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LoadReport {
    pub fn human(&self) -> String {
        format!(
            "corerelay load: {} acked, {} refused, {} errors, {} abandoned in {:.2} s: {:.0} msg/s; 250 latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.acked,
            self.refused,
            self.errors,
            self.abandoned,
            self.seconds,
            self.messages_per_second,
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

/// Runs the load and returns its report.
pub fn run(options: LoadOptions) -> Result<LoadReport, String> {
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let body = Bytes::from(filler(options.size_bytes));
    let next = Arc::new(AtomicU64::new(0));
    let shard_ids = Arc::new(AtomicUsize::new(0));
    let cores = options.cores.max(1);
    let options = Arc::new(options);
    let started = Instant::now();
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(cores))
        .name("corerelay-load")
        .io_memory(512 << 10)
        .on_all_shards({
            let options = options.clone();
            move || {
                let (options, next, body, run_id) =
                    (options.clone(), next.clone(), body.clone(), run_id.clone());
                let shard = shard_ids.fetch_add(1, Ordering::Relaxed);
                async move { core_main(options, next, body, run_id, shard, cores, started).await }
            }
        })
        .map_err(|e| format!("cannot start executors: {e}"))?;
    let mut total = TaskResult::default();
    for r in handles.join_all() {
        total.add(r.map_err(|e| e.to_string())?);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &options.ack_log {
        let mut text = total.acked_ids.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let mut l = total.latencies_us;
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map(|&v| v as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    let acked = total.acked_ids.len() as u64;
    Ok(LoadReport {
        sent: l.len() as u64 + total.abandoned,
        acked,
        refused: total.refused,
        errors: total.errors,
        abandoned: total.abandoned,
        seconds,
        messages_per_second: acked as f64 / seconds.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: l.last().map(|&v| v as f64 / 1000.0).unwrap_or(0.0),
    })
}

async fn core_main(
    options: Arc<LoadOptions>,
    next: Arc<AtomicU64>,
    body: Bytes,
    run_id: String,
    shard: usize,
    cores: usize,
    started: Instant,
) -> TaskResult {
    // Spread the connections over the cores: this core runs every `cores`-th one.
    let mine = (0..options.concurrency)
        .filter(|i| i % cores == shard % cores)
        .count();
    let tasks: Vec<_> = (0..mine)
        .map(|_| {
            let (options, next, body, run_id) = (options.clone(), next.clone(), body.clone(), run_id.clone());
            glommio::spawn_local(
                async move { connection_task(&options, &next, &body, &run_id, started).await },
            )
        })
        .collect();
    let mut total = TaskResult::default();
    for t in tasks {
        total.add(t.await);
    }
    total
}

/// One connection's loop: take message numbers until N are taken (each no earlier than
/// its due time when a rate is set), reconnecting every `per_connection` messages or after
/// an error.
async fn connection_task(
    options: &LoadOptions,
    next: &AtomicU64,
    body: &Bytes,
    run_id: &str,
    started: Instant,
) -> TaskResult {
    let mut result = TaskResult::default();
    let mut conn: Option<Connection> = None;
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= options.messages {
            break;
        }
        if options.rate_per_second > 0.0 {
            // Message `seq` is due `seq / rate` seconds after the start.
            let due = started + Duration::from_secs_f64(seq as f64 / options.rate_per_second);
            glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
        }
        let id = format!("{run_id}.{seq}");
        let give_up_at = Instant::now() + options.retry_for;
        let mut backoff = RETRY_BACKOFF_MIN;
        let from = sender(&options.from, seq);
        while !send_one(options, &mut conn, from, &id, body, &mut result).await {
            result.errors += 1;
            conn = None;
            if Instant::now() >= give_up_at {
                result.abandoned += 1;
                break;
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        if conn
            .as_ref()
            .is_some_and(|c| c.messages_sent() >= options.per_connection)
            && let Some(c) = conn.take()
        {
            c.quit().await;
        }
    }
    if let Some(c) = conn {
        c.quit().await;
    }
    result
}

/// The pause after a failed attempt, doubling up to the maximum while the target is away.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Sends message `id` once, opening a connection first if there is none. True when the
/// server answered the message (250 or a refusal); false when the connection failed before
/// an answer, so the message may be tried again.
async fn send_one(
    options: &LoadOptions,
    conn: &mut Option<Connection>,
    from: &str,
    id: &str,
    body: &Bytes,
    result: &mut TaskResult,
) -> bool {
    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        greeting: Duration::from_secs(30),
        command: Duration::from_secs(60),
        data: Duration::from_secs(120),
    };
    if conn.is_none() {
        match Connection::open(options.target, "load.corerelay.localhost", &timeouts).await {
            Ok(c) => *conn = Some(c),
            Err(_) => return false,
        }
    }
    let Some(c) = conn.as_mut() else { return false };
    let chunks = [headers(options, from, id), body.clone()];
    let t0 = Instant::now();
    let Ok(r) = c
        .send(from, &[options.to.as_str()], &chunks, BodyType::SevenBit)
        .await
    else {
        return false;
    };
    result
        .latencies_us
        .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
    if r.data.as_ref().is_some_and(|d| d.is_positive()) {
        result.acked_ids.push(id.to_string());
    } else {
        result.refused += 1;
        if c.reset().await.is_err() {
            *conn = None;
        }
    }
    true
}

/// The sender of message `seq`: `from` is one address, or a comma-separated list the
/// messages take in turn (to load several accounts at once).
fn sender(from: &str, seq: u64) -> &str {
    let count = from.split(',').count() as u64;
    from.split(',').nth((seq % count) as usize).unwrap_or(from).trim()
}

fn headers(options: &LoadOptions, from: &str, id: &str) -> Bytes {
    let sent_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    Bytes::from(format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: corerelay load {id}\r\nMessage-ID: <{id}@load.corerelay.localhost>\r\nX-Load-Id: {id}\r\nX-Load-Sent-Us: {sent_us}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        to = options.to,
    ))
}

/// A plain-text body of about `size` bytes in 78-byte lines.
fn filler(size: usize) -> Vec<u8> {
    const LINE: &[u8] = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.";
    let mut out = Vec::with_capacity(size + 80);
    while out.len() + LINE.len() + 2 <= size.max(LINE.len() + 2) {
        out.extend_from_slice(LINE);
        out.extend_from_slice(b"\r\n");
        if out.len() >= size {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{filler, sender};

    #[test]
    fn messages_take_the_senders_in_turn() {
        assert_eq!(sender("a@x.example", 5), "a@x.example");
        let list = "a@x.example, b@y.example";
        let got: Vec<&str> = (0..4).map(|i| sender(list, i)).collect();
        assert_eq!(got, ["a@x.example", "b@y.example", "a@x.example", "b@y.example"]);
    }

    #[test]
    fn filler_is_crlf_lines_of_about_the_size() {
        for size in [0, 100, 2048, 20_480] {
            let f = filler(size);
            assert!(f.ends_with(b"\r\n"));
            assert!(
                f.len() <= size.max(80) && f.len() + 80 > size,
                "{size} → {}",
                f.len()
            );
            assert!(f.split(|&b| b == b'\n').all(|l| l.len() <= 79));
        }
    }
}
