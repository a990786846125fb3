//! `corerelay load`: a load generator. It sends N messages of a given size over C
//! concurrent connections (several messages per connection), and reports messages per
//! second and the latency of the reply to the end of DATA (p50 / p99 / max) — the time a
//! sending service waits for corerelay's `250`.
//!
//! It can play several sending accounts at once (see [`super::scenario`]): each with its
//! own source address, sender, count, size, rate and connections, and the report gives the
//! figures per account as well as in all.
//!
//! Every message carries `X-Load-Id` (run id and sequence number), `X-Load-Account` (the
//! account's name) and `X-Load-Sent-Us` (send time), so a sink can match what arrived
//! against what was acknowledged, and measure each account's end-to-end latency.
//!
//! With `retry_for` set, the load behaves like a sending service whose relay goes away
//! (a crash, a restart): a message whose connection failed before its reply is sent again,
//! with the same id, until it is answered or `retry_for` has passed since its first try.
//! That is how the crash tests drive the relay through `kill -9`s, and why a message the
//! relay spooled but could not acknowledge before it died may arrive twice (at-least-once).
//!
//! The body is plain text by default. With [`BodyKind::Html`] it is what a sending service
//! sends: a `multipart/alternative` newsletter with a short text part and a quoted-printable
//! HTML part holding a link every few hundred bytes and a `</body>`, so a relay that tracks
//! opens and clicks has links to rewrite and a place for its pixel. Either body is built once
//! per account, not per message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

mod newsletter;

use super::latency::percentile_ms;
use super::scenario::AccountLoad;
use crate::deliver::connection::{Connection, Dial, Timeouts, TlsMode};
use crate::message::BodyType;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: SocketAddr,
    pub to: String,
    pub per_connection: usize,
    pub cores: usize,
    /// Write the ids of acknowledged messages to this file, one per line.
    pub ack_log: Option<PathBuf>,
    /// How long one message is retried after connection failures (zero: not retried).
    pub retry_for: Duration,
    /// The accounts sending at once (at least one).
    pub accounts: Vec<AccountLoad>,
    /// What every message's body looks like.
    pub body: BodyKind,
}

/// The kind of body the messages carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyKind {
    /// `text/plain` lines of filler.
    #[default]
    Text,
    /// A `multipart/alternative` newsletter: a short text part and an HTML part with links.
    Html,
}

impl std::str::FromStr for BodyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<BodyKind, String> {
        match s {
            "text" => Ok(BodyKind::Text),
            "html" => Ok(BodyKind::Html),
            _ => Err(format!("unknown body kind `{s}` (text or html)")),
        }
    }
}

impl BodyKind {
    /// The body of about `size_bytes`, built once per account.
    fn build(self, size_bytes: usize) -> Bytes {
        match self {
            BodyKind::Text => Bytes::from(filler(size_bytes)),
            BodyKind::Html => Bytes::from(newsletter::message_body(size_bytes)),
        }
    }

    /// The Content-Type header's value for this body.
    fn content_type(self) -> &'static str {
        match self {
            BodyKind::Text => "text/plain; charset=us-ascii",
            BodyKind::Html => newsletter::CONTENT_TYPE,
        }
    }
}

/// What the connection tasks of one account measured.
#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u64>,
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

/// The figures of one account, or of the whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    /// Failed attempts (connection refused or lost before the reply).
    pub errors: u64,
    /// Messages given up after failed attempts (never answered).
    pub abandoned: u64,
    pub messages_per_second: f64,
    /// The reply to the end of the message (250 or a refusal), from the final dot.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Figures {
    fn of(r: &mut TaskResult, seconds: f64) -> Figures {
        r.latencies_us.sort_unstable();
        let l = &r.latencies_us;
        let acked = r.acked_ids.len() as u64;
        Figures {
            sent: l.len() as u64 + r.abandoned,
            acked,
            refused: r.refused,
            errors: r.errors,
            abandoned: r.abandoned,
            messages_per_second: acked as f64 / seconds.max(1e-9),
            p50_ms: percentile_ms(l, 0.50),
            p99_ms: percentile_ms(l, 0.99),
            max_ms: percentile_ms(l, 1.0),
        }
    }
}

/// One account's part of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountReport {
    pub account: String,
    /// From the start until the account's last reply.
    pub seconds: f64,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The outcome of a run: the figures of all accounts together, then of each.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub seconds: f64,
    #[serde(flatten)]
    pub total: Figures,
    pub accounts: Vec<AccountReport>,
}

impl LoadReport {
    pub fn human(&self) -> String {
        let line = |f: &Figures, seconds: f64| {
            format!(
                "{} acked, {} refused, {} errors, {} abandoned in {seconds:.2} s: {:.0} msg/s; 250 latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                f.acked,
                f.refused,
                f.errors,
                f.abandoned,
                f.messages_per_second,
                f.p50_ms,
                f.p99_ms,
                f.max_ms
            )
        };
        let mut out = format!("corerelay load: {}", line(&self.total, self.seconds));
        if self.accounts.len() > 1 {
            for a in &self.accounts {
                out.push_str(&format!(
                    "\ncorerelay load: account {}: {}",
                    a.account,
                    line(&a.figures, a.seconds)
                ));
            }
        }
        out
    }
}

/// One account as the connection tasks share it.
struct Flow {
    spec: AccountLoad,
    /// The next message number to take.
    next: AtomicU64,
    body: Bytes,
    /// Microseconds after the start of this account's last reply.
    last_us: AtomicU64,
}

/// What every connection task reads.
struct Run {
    options: LoadOptions,
    flows: Vec<Flow>,
    run_id: String,
    started: Instant,
}

/// Runs the load and returns its report.
pub fn run(options: LoadOptions) -> Result<LoadReport, String> {
    if options.accounts.is_empty() {
        return Err("no account to send as".into());
    }
    for a in &options.accounts {
        a.validate()?;
    }
    let run_id = format!("{:x}", crate::observe::log::now_ms());
    let flows = options
        .accounts
        .iter()
        .map(|a| Flow {
            spec: a.clone(),
            next: AtomicU64::new(0),
            body: options.body.build(a.size_bytes),
            last_us: AtomicU64::new(0),
        })
        .collect();
    let cores = options.cores.max(1);
    let accounts = options.accounts.len();
    let ack_log = options.ack_log.clone();
    let run = Arc::new(Run {
        options,
        flows,
        run_id,
        started: Instant::now(),
    });
    let shard_ids = Arc::new(AtomicUsize::new(0));
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(cores))
        .name("corerelay-load")
        .io_memory(512 << 10)
        .on_all_shards({
            let run = run.clone();
            move || {
                let run = run.clone();
                let shard = shard_ids.fetch_add(1, Ordering::Relaxed);
                async move { core_main(run, shard, cores).await }
            }
        })
        .map_err(|e| format!("cannot start executors: {e}"))?;
    let mut per_account: Vec<TaskResult> = (0..accounts).map(|_| TaskResult::default()).collect();
    for r in handles.join_all() {
        for (i, result) in r.map_err(|e| e.to_string())? {
            per_account[i].add(result);
        }
    }
    let seconds = run.started.elapsed().as_secs_f64();
    if let Some(path) = &ack_log {
        let ids: Vec<&str> = per_account
            .iter()
            .flat_map(|r| r.acked_ids.iter().map(String::as_str))
            .collect();
        let mut text = ids.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let reports = per_account
        .iter_mut()
        .zip(&run.flows)
        .map(|(r, flow)| {
            let account_seconds = (flow.last_us.load(Ordering::Relaxed) as f64 / 1e6).max(1e-6);
            AccountReport {
                account: flow.spec.name.clone(),
                seconds: account_seconds,
                figures: Figures::of(r, account_seconds),
            }
        })
        .collect();
    let mut total = TaskResult::default();
    for r in per_account {
        total.add(r);
    }
    Ok(LoadReport {
        seconds,
        total: Figures::of(&mut total, seconds),
        accounts: reports,
    })
}

/// This core's connections: of all the accounts' connections, every `cores`-th one.
async fn core_main(run: Arc<Run>, shard: usize, cores: usize) -> Vec<(usize, TaskResult)> {
    let all = run
        .flows
        .iter()
        .enumerate()
        .flat_map(|(i, f)| std::iter::repeat_n(i, f.spec.concurrency));
    let tasks: Vec<_> = all
        .enumerate()
        .filter(|(k, _)| k % cores == shard % cores)
        .map(|(_, account)| {
            let run = run.clone();
            glommio::spawn_local(async move { (account, connection_task(&run, account).await) })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// One connection's loop: take message numbers of its account until the account's count
/// is taken or its duration is over (each no earlier than its due time when a rate is
/// set), reconnecting every `per_connection` messages or after an error.
async fn connection_task(run: &Run, account: usize) -> TaskResult {
    let flow = &run.flows[account];
    let spec = &flow.spec;
    let stop_at = spec.duration.map(|d| run.started + d);
    let mut result = TaskResult::default();
    let mut conn: Option<Connection> = None;
    glommio::timer::sleep((run.started + spec.start).saturating_duration_since(Instant::now())).await;
    loop {
        let seq = flow.next.fetch_add(1, Ordering::Relaxed);
        if spec.messages > 0 && seq >= spec.messages {
            break;
        }
        if spec.rate_per_second > 0.0 {
            // Message `seq` is due `seq / rate` seconds after the account's start.
            let due = run.started + spec.start + Duration::from_secs_f64(seq as f64 / spec.rate_per_second);
            if stop_at.is_some_and(|stop| due >= stop) {
                break;
            }
            glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
        }
        if stop_at.is_some_and(|stop| Instant::now() >= stop) {
            break;
        }
        let id = match run.flows.len() {
            1 => format!("{}.{seq}", run.run_id),
            _ => format!("{}.{}.{seq}", run.run_id, spec.name),
        };
        let give_up_at = Instant::now() + run.options.retry_for;
        let mut backoff = RETRY_BACKOFF_MIN;
        let from = sender(&spec.from, seq);
        while !send_one(run, flow, &mut conn, from, &id, &mut result).await {
            result.errors += 1;
            conn = None;
            if Instant::now() >= give_up_at {
                result.abandoned += 1;
                break;
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        let now_us = run.started.elapsed().as_micros() as u64;
        flow.last_us.fetch_max(now_us, Ordering::Relaxed);
        if conn
            .as_ref()
            .is_some_and(|c| c.messages_sent() >= run.options.per_connection)
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
    run: &Run,
    flow: &Flow,
    conn: &mut Option<Connection>,
    from: &str,
    id: &str,
    result: &mut TaskResult,
) -> bool {
    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        greeting: Duration::from_secs(30),
        command: Duration::from_secs(60),
        data: Duration::from_secs(120),
    };
    if conn.is_none() {
        let dial = Dial {
            addr: run.options.target,
            host: "",
            bind: flow.spec.source,
            helo_name: "load.corerelay.localhost",
            tls: TlsMode::Off,
            auth: None,
        };
        match Connection::dial(&dial, &timeouts).await {
            Ok(c) => *conn = Some(c),
            Err(_) => return false,
        }
    }
    let Some(c) = conn.as_mut() else { return false };
    let spec = &flow.spec;
    let chunks = [
        headers(spec, run.options.body, from, &run.options.to, id),
        flow.body.clone(),
    ];
    let t0 = Instant::now();
    let Ok(r) = c
        .send(from, &[run.options.to.as_str()], &chunks, BodyType::SevenBit)
        .await
    else {
        return false;
    };
    result.latencies_us.push(t0.elapsed().as_micros() as u64);
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

/// The header block, stamped with the account and the send time.
fn headers(spec: &AccountLoad, body: BodyKind, from: &str, to: &str, id: &str) -> Bytes {
    let sent_us = super::latency::now_us();
    Bytes::from(format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: corerelay load {id}\r\nMessage-ID: <{id}@load.corerelay.localhost>\r\nX-Load-Id: {id}\r\nX-Load-Account: {account}\r\n{group}X-Load-Sent-Us: {sent_us}\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n",
        account = spec.name,
        content_type = body.content_type(),
        group = spec
            .group
            .as_ref()
            .map(|g| format!("X-Load-Group: {g}\r\n"))
            .unwrap_or_default(),
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
    use super::{BodyKind, filler, headers, sender};
    use crate::tools::scenario::AccountLoad;
    use mail_parser::{HeaderValue, MessageParser, MimeHeaders};

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

    #[test]
    fn html_messages_keep_the_load_headers_and_parse_as_multipart() {
        let spec = AccountLoad {
            name: "shop".into(),
            from: "load@load.example".into(),
            source: None,
            messages: 1,
            size_bytes: 20_480,
            rate_per_second: 0.0,
            concurrency: 1,
            duration: None,
            start: std::time::Duration::ZERO,
            group: None,
        };
        let mut raw = headers(
            &spec,
            BodyKind::Html,
            "load@load.example",
            "sink@sink.example",
            "r.7",
        )
        .to_vec();
        raw.extend_from_slice(&BodyKind::Html.build(spec.size_bytes));
        let m = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(m.header("X-Load-Id"), Some(&HeaderValue::Text("r.7".into())));
        assert_eq!(
            m.header("X-Load-Account"),
            Some(&HeaderValue::Text("shop".into()))
        );
        assert!(m.header("X-Load-Sent-Us").is_some());
        assert_eq!(m.content_type().and_then(|c| c.subtype()), Some("alternative"));
        assert!(m.body_html(0).is_some_and(|h| h.contains("</body>")));

        // The default stays a plain-text body.
        assert_eq!("text".parse::<BodyKind>(), Ok(BodyKind::Text));
        assert_eq!(BodyKind::default(), BodyKind::Text);
        assert!("pdf".parse::<BodyKind>().is_err());
        let text = headers(&spec, BodyKind::Text, "a@x.example", "b@y.example", "r.8");
        assert!(String::from_utf8_lossy(&text).contains("Content-Type: text/plain"));
    }
}
