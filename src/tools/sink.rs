//! `corerelay sink`: an SMTP server that plays the remote MX in tests and benchmarks. It
//! accepts every message (or answers with a scripted sequence of codes, or refuses a
//! random share of them), counts messages and bytes, optionally stores each message in a
//! maildir, and prints a summary when it is stopped with SIGINT or SIGTERM, or asked with
//! SIGUSR1 (it then goes on). The summary has a line per account of `corerelay load`'s
//! messages (`X-Load-Account`): count, messages per second, and the end-to-end latency
//! from the load's send time (`X-Load-Sent-Us`) to arrival here, p50 / p99 / max (see
//! [`super::latency`]); `--json-summary FILE` writes the same as JSON each time.
//!
//! A slow or stalled remote MX is played with `--delay-ms N` (each reply to the end of a
//! message waits N ms) and `--pause-file PATH` (while PATH exists, replies to the end of a
//! message are held); both with the plain sink, not with a script.
//!
//! With a maildir, every refusal of a message that carries `X-Load-Id` is appended to
//! `<maildir>/refused.log` as `<code> <id>`, so a soak test can tell which acknowledged
//! messages ended as failures rather than deliveries.
//!
//! It runs the relay's own sans-IO session and connection driver, so it speaks exactly the
//! SMTP corerelay speaks, on one or more glommio executors. With `--tls` it offers
//! STARTTLS with a self-signed certificate (for outbound TLS tests). With a script
//! (per-recipient replies, CHUNKING, a record file…) the scripted server of
//! [`super::scripted`] plays the remote MX instead.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::ingress::connection::{Handler, Hello, Timeouts, drive};
use crate::ingress::listener;
use crate::ingress::stream::Stream;
use crate::ingress::tls::{self, TlsSnapshot};
use crate::smtp::reply::{Enhanced, Reply, catalogue};
use crate::smtp::server::{Credentials, Options, Policy, Session, SessionConfig, Transaction};

/// What the sink is asked to do.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub listen: SocketAddr,
    pub maildir: Option<PathBuf>,
    /// Replies to successive messages, by code; after the list, `then` for every message.
    pub replies: Vec<u16>,
    pub then: u16,
    /// Refuse this percentage of the messages that would be accepted, each with 451 or 550
    /// at even odds (fault injection for soak tests).
    pub random_fail_percent: u8,
    pub cores: usize,
    /// Offer STARTTLS with a self-signed certificate.
    pub tls: bool,
    /// Behaviours for the delivery tests; when any is asked, [`super::scripted`] serves.
    pub script: super::scripted::Script,
    /// Wait this long before answering the end of each message.
    pub delay: Duration,
    /// While this file exists, hold the answer to the end of each message.
    pub pause_file: Option<PathBuf>,
    /// Write the summary as JSON to this file whenever it is printed.
    pub json_summary: Option<PathBuf>,
}

/// Counters shared by the sink's executors (a test tool: atomics are fine here).
#[derive(Default)]
pub struct SinkStats {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub refused: AtomicU64,
    script_pos: AtomicUsize,
    /// Microseconds after start of the first and last accepted message.
    first_us: AtomicU64,
    last_us: AtomicU64,
    /// End-to-end figures per account of the load's messages.
    pub arrivals: super::latency::Arrivals,
}

/// The summary as `--json-summary` writes it.
#[derive(serde::Serialize)]
struct JsonSummary {
    messages: u64,
    bytes: u64,
    refused: u64,
    messages_per_second: f64,
    accounts: Vec<super::latency::AccountSummary>,
}

impl SinkStats {
    /// The reply code for the next message by `--reply`/`--then`.
    pub(crate) fn scripted_reply(&self, options: &SinkOptions) -> u16 {
        let pos = self.script_pos.fetch_add(1, Ordering::Relaxed);
        options.replies.get(pos).copied().unwrap_or(options.then)
    }

    /// Counts an accepted message of `size_bytes`.
    pub(crate) fn accepted(&self, started: Instant, size_bytes: usize) {
        let now_us = started.elapsed().as_micros() as u64;
        if self.messages.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_us.store(now_us, Ordering::Relaxed);
        }
        self.last_us.fetch_max(now_us, Ordering::Relaxed);
        self.bytes.fetch_add(size_bytes as u64, Ordering::Relaxed);
    }

    /// Notes the arrival of an accepted message for the per-account figures.
    pub(crate) fn arrived(&self, body: &[bytes::Bytes]) {
        self.arrivals.arrived(body, super::latency::now_us());
    }

    fn rate(&self) -> f64 {
        let n = self.messages.load(Ordering::Relaxed);
        let span_us = self
            .last_us
            .load(Ordering::Relaxed)
            .saturating_sub(self.first_us.load(Ordering::Relaxed));
        if n > 1 && span_us > 0 {
            (n - 1) as f64 * 1e6 / span_us as f64
        } else {
            0.0
        }
    }

    /// One line of counts and the rate between the first and last message, then one line
    /// per account of the load's messages.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "corerelay sink: messages={} bytes={} refused={} rate={:.0}/s",
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.rate()
        );
        for a in self.arrivals.summary() {
            out.push_str("\ncorerelay sink: ");
            out.push_str(&a.human());
        }
        out
    }

    /// The summary as JSON.
    pub fn json(&self) -> String {
        let summary = JsonSummary {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            messages_per_second: self.rate(),
            accounts: self.arrivals.summary(),
        };
        serde_json::to_string(&summary).unwrap_or_default()
    }
}

/// Accepts every sender.
struct AcceptAll;

impl Policy for AcceptAll {
    type Account = ();

    fn identify(&self, _peer: IpAddr, _mail_from: &str) -> Result<(), Reply> {
        Ok(())
    }
}

/// Runs the sink until SIGINT/SIGTERM, then prints the summary and exits.
pub fn run(options: SinkOptions) -> Result<(), String> {
    if let Some(dir) = &options.maildir {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create maildir {}: {e}", dir.display()))?;
        }
    }
    let (_reserved, listen) =
        listener::reserve(options.listen).map_err(|e| format!("cannot bind {}: {e}", options.listen))?;
    let certificate = if options.tls {
        tls::ensure_provider();
        Some(Arc::new(TlsSnapshot::self_signed("sink.corerelay.localhost")?))
    } else {
        None
    };
    if options.script.is_active() && (options.pause_file.is_some() || !options.delay.is_zero()) {
        return Err("--pause-file and --delay-ms work with the plain sink, not with a script".into());
    }
    let stats = Arc::new(SinkStats::default());
    spawn_signal_thread(stats.clone(), options.json_summary.clone())?;
    let started = Instant::now();
    let cores = options.cores.max(1);
    let options = Arc::new(options);
    // Each core reports once its listener is bound, so "listening on" is printed only when a
    // client can connect (tests connect right after reading it).
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let scripted = match options.script.is_active() {
        true => Some(Arc::new(super::scripted::Shared::new(
            options.clone(),
            stats.clone(),
            started,
        )?)),
        false => None,
    };
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(cores))
        .name("corerelay-sink")
        .io_memory(512 << 10)
        .on_all_shards({
            let stats = stats.clone();
            move || {
                let (stats, options, bound) = (stats.clone(), options.clone(), bound_tx.clone());
                let certificate = certificate.clone();
                let scripted = scripted.clone();
                async move {
                    match scripted {
                        Some(shared) => super::scripted::serve(listen, shared, bound).await,
                        None => serve(listen, options, stats, certificate, started, bound).await,
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start executors: {e}"))?;
    for _ in 0..cores {
        if bound_rx.recv().is_err() {
            break;
        }
    }
    println!("corerelay sink: listening on {listen}");
    for r in handles.join_all() {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// SIGINT/SIGTERM print the summary and exit; SIGUSR1 prints it and carries on, so a
/// benchmark can read the figures while the sink runs.
fn spawn_signal_thread(stats: Arc<SinkStats>, json: Option<PathBuf>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if let Some(path) = &json
                && let Err(e) = std::fs::write(path, stats.json() + "\n")
            {
                eprintln!("corerelay sink: cannot write {}: {e}", path.display());
            }
            println!("{}", stats.summary());
            if signal != SIGUSR1 {
                std::process::exit(0);
            }
        }
    });
    Ok(())
}

async fn serve(
    listen: SocketAddr,
    options: Arc<SinkOptions>,
    stats: Arc<SinkStats>,
    certificate: Option<Arc<TlsSnapshot>>,
    started: Instant,
    bound: std::sync::mpsc::Sender<()>,
) -> Result<(), String> {
    let listener = listener::bind(listen, 1024).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let _ = bound.send(());
    drop(bound);
    let config = Rc::new(SessionConfig {
        hostname: "sink.corerelay.localhost".into(),
        message_max_bytes: 1 << 30,
        recipients_max_count: 100_000,
        command_line_max_bytes: 4096,
        text_line_max_bytes: 1 << 20,
        errors_max_count: 100,
        messages_per_connection_max_count: usize::MAX,
    });
    let acceptor = certificate.map(|c| c.acceptor());
    let session_options = Options {
        starttls: acceptor.is_some(),
        ..Options::default()
    };
    loop {
        let Ok(tcp) = listener.accept().await else {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (options, stats, config) = (options.clone(), stats.clone(), config.clone());
        let acceptor = acceptor.clone();
        glommio::spawn_local(async move {
            let _ = tcp.set_nodelay(true);
            let peer = tcp
                .peer_addr()
                .map(|a| a.ip())
                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let mut session = Session::new(config, AcceptAll, peer).with_options(session_options);
            let mut stream = Stream::Plain(tcp);
            let mut handler = SinkHandler {
                options: &options,
                stats: &stats,
                started,
            };
            let timeouts = Timeouts::uniform(Duration::from_secs(300));
            let _ = drive(
                &mut stream,
                BytesMut::new(),
                &mut session,
                &timeouts,
                acceptor.as_ref(),
                &mut handler,
            )
            .await;
            let _ = stream.close().await;
        })
        .detach();
    }
}

/// The sink's answers: the scripted reply per message; AUTH is not offered.
struct SinkHandler<'a> {
    options: &'a SinkOptions,
    stats: &'a SinkStats,
    started: Instant,
}

impl Handler<()> for SinkHandler<'_> {
    async fn message(&mut self, _hello: &Hello, txn: Transaction<()>) -> Result<(), Reply> {
        receive(self.options, self.stats, self.started, txn).await
    }

    async fn authenticate(&mut self, _credentials: Credentials) -> Result<(), Reply> {
        Err(catalogue::AUTH_FAILED)
    }
}

/// Decides one message: the next scripted reply, storing and counting it when accepted.
async fn receive(
    options: &SinkOptions,
    stats: &SinkStats,
    started: Instant,
    txn: Transaction<()>,
) -> Result<(), Reply> {
    let pos = stats.script_pos.load(Ordering::Relaxed);
    let mut code = stats.scripted_reply(options);
    if code < 400 && rand::random_range(0..100u8) < options.random_fail_percent {
        code = if rand::random::<bool>() { 451 } else { 550 };
    }
    if code >= 400 {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(dir) = &options.maildir {
            note_refusal(dir, code, &txn);
        }
        let class = (code / 100) as u8;
        return Err(Reply::new(
            code,
            Enhanced::new(class, 0, 0),
            format!("Scripted reply {code}"),
        ));
    }
    hold(options).await;
    if let Some(dir) = &options.maildir {
        store(dir, &txn.mail_from, &txn.rcpts, &txn.body, pos).map_err(|e| {
            Reply::new(
                451,
                Enhanced::new(4, 3, 0),
                format!("sink cannot store the message: {e}"),
            )
        })?;
    }
    stats.accepted(started, txn.body_bytes);
    stats.arrived(&txn.body);
    Ok(())
}

/// The slow or stalled MX: waits `--delay-ms`, then while `--pause-file` exists.
async fn hold(options: &SinkOptions) {
    if !options.delay.is_zero() {
        glommio::timer::sleep(options.delay).await;
    }
    if let Some(path) = &options.pause_file {
        while path.exists() {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Appends `<code> <X-Load-Id>` to `<dir>/refused.log` for a message that carries the
/// header (best effort: the note is for test bookkeeping, the reply is what matters).
fn note_refusal(dir: &Path, code: u16, txn: &Transaction<()>) {
    use std::io::Write;
    let Some(first) = txn.body.first() else { return };
    let head = &first[..first.len().min(4096)];
    let Some(at) = head.windows(11).position(|w| w == b"X-Load-Id: ") else {
        return;
    };
    let id: Vec<u8> = head[at + 11..]
        .iter()
        .take_while(|b| !b.is_ascii_whitespace())
        .copied()
        .collect();
    let line = format!("{code} {}\n", String::from_utf8_lossy(&id));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("refused.log"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Writes the message to `<dir>/tmp` and renames it into `<dir>/new` (the maildir rule),
/// with `Return-Path:` and one `Delivered-To:` per recipient prepended as a local delivery
/// agent does.
pub(crate) fn store(
    dir: &Path,
    mail_from: &str,
    rcpts: &[String],
    body: &[bytes::Bytes],
    seq: usize,
) -> std::io::Result<()> {
    use std::io::Write;
    let name = format!(
        "{}.{}_{seq}.corerelay-sink",
        super::latency::now_us(),
        std::process::id()
    );
    let tmp = dir.join("tmp").join(&name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    write!(f, "Return-Path: <{mail_from}>\r\n")?;
    for rcpt in rcpts {
        write!(f, "Delivered-To: {rcpt}\r\n")?;
    }
    for chunk in body {
        f.write_all(chunk)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    std::fs::rename(&tmp, dir.join("new").join(&name))
}
