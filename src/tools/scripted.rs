//! `corerelay sink` with a script: an SMTP server that plays a particular remote MX for
//! the delivery tests. It answers per recipient (`--rcpt-reply ADDR=CODE,...`), limits
//! recipients per transaction (`--max-rcpts`, answered `452 4.5.3`), drops connections in
//! the middle of DATA (`--drop-mid-data N`), offers or refuses PIPELINING, CHUNKING (BDAT),
//! STARTTLS (a self-signed certificate made at start, or a broken handshake) and AUTH,
//! announces a SIZE, and
//! records every message it takes, with the peer's source address and the connection it
//! came on (`--record FILE`, see [`super::record`]).
//!
//! Remote MXes are not corerelay, so this is its own small server rather than the relay's
//! session: it reuses the relay's command parser and DATA receiver, and keeps each
//! behaviour a flag.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;

use super::record::{Record, Recorder};
use super::sink::{SinkOptions, SinkStats};
use crate::ingress::listener;
use crate::ingress::tls::TlsSnapshot;
use crate::smtp::command::{self, Command};
use crate::smtp::data::{DataProgress, DataReceiver};
use crate::smtp::reply::{Enhanced, Reply};

/// What the script asks of the sink beyond accepting mail.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Lower-case address → reply codes to successive RCPTs for it (the last repeats).
    pub rcpt_replies: HashMap<String, Vec<u16>>,
    /// Drop the connection in the middle of DATA for this many messages.
    pub drop_mid_data_count: usize,
    pub no_pipelining: bool,
    pub chunking: bool,
    pub starttls: bool,
    /// Offer STARTTLS, answer 220, then send bytes that are not TLS and hang up.
    pub broken_tls: bool,
    /// Offer AUTH PLAIN LOGIN (over TLS only) and require it before MAIL.
    pub auth: Option<(String, String)>,
    pub size_max_bytes: Option<u64>,
    pub rcpts_per_transaction_max_count: Option<usize>,
    pub record: Option<PathBuf>,
}

impl Script {
    /// Whether any scripted behaviour is asked for (else the plain sink serves).
    /// `--tls` alone is served by the plain sink, which offers STARTTLS too.
    pub fn is_active(&self) -> bool {
        !self.rcpt_replies.is_empty()
            || self.drop_mid_data_count > 0
            || self.no_pipelining
            || self.chunking
            || self.broken_tls
            || self.auth.is_some()
            || self.size_max_bytes.is_some()
            || self.rcpts_per_transaction_max_count.is_some()
            || self.record.is_some()
    }

    /// Parses `ADDR=CODE[,CODE...]`.
    pub fn parse_rcpt_reply(arg: &str) -> Result<(String, Vec<u16>), String> {
        let (addr, codes) = arg
            .split_once('=')
            .ok_or_else(|| format!("`{arg}` is not ADDR=CODE[,CODE...]"))?;
        let codes = codes
            .split(',')
            .map(|c| c.trim().parse::<u16>().ok().filter(|c| (200..600).contains(c)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("`{arg}`: codes are 200..599"))?;
        Ok((addr.to_ascii_lowercase(), codes))
    }
}

/// What every connection of the scripted sink shares, across its executors.
pub struct Shared {
    pub options: Arc<SinkOptions>,
    pub stats: Arc<SinkStats>,
    pub started: Instant,
    rcpt_attempts: Mutex<HashMap<String, usize>>,
    drops_left: AtomicUsize,
    connections: AtomicU64,
    open: AtomicUsize,
    recorder: Option<Recorder>,
    tls: Option<TlsAcceptor>,
}

impl Shared {
    pub fn new(options: Arc<SinkOptions>, stats: Arc<SinkStats>, started: Instant) -> Result<Shared, String> {
        let script = &options.script;
        let recorder = match &script.record {
            Some(path) => Some(Recorder::create(path)?),
            None => None,
        };
        let tls = match script.starttls {
            true => {
                crate::ingress::tls::ensure_provider();
                Some(TlsSnapshot::self_signed("sink.corerelay.localhost")?.acceptor())
            }
            false => None,
        };
        Ok(Shared {
            drops_left: AtomicUsize::new(script.drop_mid_data_count),
            options,
            stats,
            started,
            rcpt_attempts: Mutex::new(HashMap::new()),
            connections: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            recorder,
            tls,
        })
    }
}

/// Accepts connections on this executor and serves each by the script.
pub async fn serve(
    listen: SocketAddr,
    shared: Arc<Shared>,
    bound: std::sync::mpsc::Sender<()>,
) -> Result<(), String> {
    let listener = listener::bind(listen, 1024).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let _ = bound.send(());
    drop(bound);
    loop {
        let Ok(stream) = listener.accept().await else {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        glommio::spawn_local(async move {
            let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
            shared.open.fetch_add(1, Ordering::Relaxed);
            let _ = Session::new(stream, id, &shared).run().await;
            shared.open.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

/// Input lines and chunks longer than this close the connection.
const LINE_MAX_BYTES: usize = 64 << 10;
const CHUNK_MAX_BYTES: u64 = 64 << 20;
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The envelope being received.
#[derive(Default)]
struct Txn {
    mail_from: String,
    rcpts: Vec<String>,
    body: Vec<Bytes>,
    chunked: bool,
}

struct Session<'a> {
    io: Io,
    id: u64,
    peer: IpAddr,
    local: IpAddr,
    shared: &'a Shared,
    input: BytesMut,
    output: BytesMut,
    helo: bool,
    authed: bool,
    txn: Option<Txn>,
    messages: usize,
}

impl<'a> Session<'a> {
    fn new(stream: TcpStream, id: u64, shared: &'a Shared) -> Session<'a> {
        let unspecified = IpAddr::from([0, 0, 0, 0]);
        let _ = stream.set_nodelay(true);
        Session {
            peer: stream.peer_addr().map(|a| a.ip()).unwrap_or(unspecified),
            local: stream.local_addr().map(|a| a.ip()).unwrap_or(unspecified),
            io: Io::Plain(stream),
            id,
            shared,
            input: BytesMut::with_capacity(16 << 10),
            output: BytesMut::with_capacity(1024),
            helo: false,
            authed: false,
            txn: None,
            messages: 0,
        }
    }

    fn script(&self) -> &Script {
        &self.shared.options.script
    }

    async fn run(mut self) -> io::Result<()> {
        self.say(220, "sink.corerelay.localhost ESMTP scripted sink");
        loop {
            let line = self.line().await?;
            let done = match command::parse(&line) {
                Ok(cmd) => self.command(cmd).await?,
                Err(reply) => {
                    reply.write_to(&mut self.output);
                    false
                }
            };
            if done {
                self.flush().await?;
                return self.io.close().await;
            }
        }
    }

    /// Runs one command; `true` ends the session.
    async fn command(&mut self, cmd: Command) -> io::Result<bool> {
        match cmd {
            Command::Ehlo(_) => self.ehlo(),
            Command::Helo(_) => {
                self.helo = true;
                self.say(250, "sink.corerelay.localhost");
            }
            Command::Starttls => return self.starttls().await.map(|_| false),
            Command::Auth(args) => self.auth(&args).await?,
            Command::Mail { from, .. } => self.mail(from),
            Command::Rcpt { to, .. } => self.rcpt(to),
            Command::Data => return self.data().await,
            Command::Bdat { chunk_bytes, last } => return self.bdat(chunk_bytes, last).await,
            Command::Rset => {
                self.txn = None;
                self.say(250, "2.0.0 reset");
            }
            Command::Noop => self.say(250, "2.0.0 ok"),
            Command::Quit => {
                self.say(221, "2.0.0 bye");
                return Ok(true);
            }
            _ => self.say(502, "5.5.1 not implemented"),
        }
        Ok(false)
    }

    fn ehlo(&mut self) {
        self.helo = true;
        self.txn = None;
        let script = self.script();
        let mut lines = vec!["sink.corerelay.localhost".to_string()];
        if !script.no_pipelining {
            lines.push("PIPELINING".into());
        }
        lines.extend(["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"].map(String::from));
        lines.push(format!("SIZE {}", script.size_max_bytes.unwrap_or(0)));
        if script.chunking {
            lines.push("CHUNKING".into());
        }
        if (script.starttls || script.broken_tls) && !self.io.is_tls() {
            lines.push("STARTTLS".into());
        }
        if script.auth.is_some() && self.io.is_tls() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.reply(Reply {
            code: 250,
            enhanced: None,
            text: lines.join("\n").into(),
        });
    }

    async fn starttls(&mut self) -> io::Result<()> {
        if self.script().broken_tls {
            self.say(220, "2.0.0 ready to start TLS");
            self.flush().await?;
            self.io.write_all(b"this is not a TLS server hello\r\n").await?;
            return Err(io::Error::other("broken TLS, as scripted"));
        }
        let Some(acceptor) = self.shared.tls.clone().filter(|_| !self.io.is_tls()) else {
            self.say(502, "5.5.1 STARTTLS not offered");
            return Ok(());
        };
        self.say(220, "2.0.0 ready to start TLS");
        self.flush().await?;
        if !self.input.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "pipelined data after STARTTLS",
            ));
        }
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Closed) else {
            return Err(io::Error::other("no plain stream"));
        };
        self.io = Io::Tls(Box::new(acceptor.accept(tcp).await?));
        self.helo = false;
        self.txn = None;
        Ok(())
    }

    async fn auth(&mut self, args: &str) -> io::Result<()> {
        let Some((user, password)) = self.script().auth.clone().filter(|_| self.io.is_tls()) else {
            self.say(502, "5.5.1 AUTH not offered");
            return Ok(());
        };
        let mut words = args.split_ascii_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let given = match mechanism.as_str() {
            "PLAIN" => {
                let token = match words.next() {
                    Some(t) => t.to_string(),
                    None => self.challenge("").await?,
                };
                let decoded = STANDARD.decode(token).unwrap_or_default();
                let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
                match parts.as_slice() {
                    [_, u, p] => (u.to_vec(), p.to_vec()),
                    _ => (Vec::new(), Vec::new()),
                }
            }
            "LOGIN" => {
                let u = self.challenge("VXNlcm5hbWU6").await?;
                let p = self.challenge("UGFzc3dvcmQ6").await?;
                (
                    STANDARD.decode(u).unwrap_or_default(),
                    STANDARD.decode(p).unwrap_or_default(),
                )
            }
            _ => {
                self.say(504, "5.5.4 mechanism not supported");
                return Ok(());
            }
        };
        self.authed = given == (user.into_bytes(), password.into_bytes());
        match self.authed {
            true => self.say(235, "2.7.0 authenticated"),
            false => self.say(535, "5.7.8 bad credentials"),
        }
        Ok(())
    }

    /// Sends a `334` challenge and reads the answer line.
    async fn challenge(&mut self, text: &str) -> io::Result<String> {
        self.say(334, text);
        let line = self.line().await?;
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn mail(&mut self, from: String) {
        if !self.helo {
            return self.say(503, "5.5.1 EHLO first");
        }
        if self.script().auth.is_some() && !self.authed {
            return self.say(530, "5.7.0 authentication required");
        }
        self.txn = Some(Txn {
            mail_from: from,
            ..Txn::default()
        });
        self.say(250, "2.1.0 sender ok");
    }

    fn rcpt(&mut self, to: String) {
        let limit = self.script().rcpts_per_transaction_max_count;
        let Some(txn) = &self.txn else {
            return self.say(503, "5.5.1 MAIL first");
        };
        if limit.is_some_and(|max| txn.rcpts.len() >= max) {
            return self.say(452, "4.5.3 too many recipients");
        }
        let code = self.rcpt_code(&to);
        if code >= 400 {
            self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            let reply = Reply::new(
                code,
                Enhanced::new((code / 100) as u8, 0, 0),
                format!("scripted {code} for <{to}>"),
            );
            return self.reply(reply);
        }
        if let Some(txn) = &mut self.txn {
            txn.rcpts.push(to);
        }
        self.say(250, "2.1.5 recipient ok");
    }

    /// The scripted code for this attempt at `to`: successive RCPTs for the same address
    /// walk its list, the last code repeating; unscripted addresses are accepted.
    fn rcpt_code(&self, to: &str) -> u16 {
        let key = to.to_ascii_lowercase();
        let Some(codes) = self.script().rcpt_replies.get(&key) else {
            return 250;
        };
        let mut attempts = self
            .shared
            .rcpt_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = attempts.entry(key).or_insert(0);
        let code = codes.get(*n).or(codes.last()).copied().unwrap_or(250);
        *n += 1;
        code
    }

    async fn data(&mut self) -> io::Result<bool> {
        match &self.txn {
            None => self.say(503, "5.5.1 MAIL first"),
            Some(t) if t.rcpts.is_empty() => self.say(554, "5.5.1 no valid recipients"),
            Some(_) => {
                self.say(354, "go ahead");
                self.flush().await?;
                let drop_now = self
                    .shared
                    .drops_left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
                let mut receiver = DataReceiver::new(1 << 30, 1 << 20);
                let mut body = Vec::new();
                loop {
                    if drop_now && (!self.input.is_empty() || !body.is_empty()) {
                        // Data is flowing: hang up without a word, as a crashing MX would.
                        return Ok(true);
                    }
                    match receiver.feed(&mut self.input, &mut body) {
                        DataProgress::NeedMore => self.read_more().await?,
                        DataProgress::Done(Ok(_)) => break,
                        DataProgress::Done(Err(e)) => {
                            self.txn = None;
                            self.reply(e.reply());
                            return Ok(false);
                        }
                    }
                }
                self.finish(body, false);
            }
        }
        Ok(false)
    }

    async fn bdat(&mut self, chunk_bytes: u64, last: bool) -> io::Result<bool> {
        if !self.script().chunking || chunk_bytes > CHUNK_MAX_BYTES {
            // The chunk's bytes cannot be told from commands: end the session.
            self.say(503, "5.5.1 BDAT not accepted here");
            return Ok(true);
        }
        while (self.input.len() as u64) < chunk_bytes {
            self.read_more().await?;
        }
        let chunk = self.input.split_to(chunk_bytes as usize).freeze();
        let Some(txn) = &mut self.txn else {
            self.say(503, "5.5.1 MAIL first");
            return Ok(false);
        };
        if txn.rcpts.is_empty() {
            self.txn = None;
            self.say(554, "5.5.1 no valid recipients");
            return Ok(false);
        }
        txn.body.push(chunk);
        txn.chunked = true;
        if !last {
            self.say(250, &format!("2.0.0 {chunk_bytes} octets received"));
            return Ok(false);
        }
        let body = std::mem::take(&mut txn.body);
        self.finish(body, true);
        Ok(false)
    }

    /// The end of a message: the scripted reply, counting, storing and recording.
    fn finish(&mut self, body: Vec<Bytes>, chunked: bool) {
        let Some(txn) = self.txn.take() else { return };
        let stats = &self.shared.stats;
        let code = stats.scripted_reply(&self.shared.options);
        let size: usize = body.iter().map(Bytes::len).sum();
        if code >= 400 {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let reply = Reply::new(
                code,
                Enhanced::new((code / 100) as u8, 0, 0),
                format!("scripted reply {code}"),
            );
            return self.reply(reply);
        }
        if let Some(dir) = &self.shared.options.maildir
            && let Err(e) = super::sink::store(dir, &txn.mail_from, &txn.rcpts, &body, self.messages)
        {
            return self.reply(Reply::new(
                451,
                Enhanced::new(4, 3, 0),
                format!("cannot store: {e}"),
            ));
        }
        self.messages += 1;
        stats.accepted(self.shared.started, size);
        stats.arrived(&body);
        if let Some(recorder) = &self.shared.recorder {
            recorder.write(&Record {
                time_ms: crate::observe::log::now_ms(),
                peer: self.peer,
                local: self.local,
                conn: self.id,
                index: self.messages,
                open_connections: self.shared.open.load(Ordering::Relaxed),
                mail_from: &txn.mail_from,
                rcpts: &txn.rcpts,
                size,
                tls: self.io.is_tls(),
                chunked: chunked || txn.chunked,
                load_id: super::record::load_id(&body),
            });
        }
        self.say(250, "2.0.0 queued");
    }

    fn say(&mut self, code: u16, text: &str) {
        self.reply(Reply {
            code,
            enhanced: None,
            text: text.to_string().into(),
        });
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    /// The next command line (without CRLF); replies are flushed before waiting for input,
    /// so pipelined commands get their replies in one write.
    async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") {
                let line = self.input.split_to(end + 2);
                return Ok(line[..end].to_vec());
            }
            if self.input.len() > LINE_MAX_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> io::Result<()> {
        self.flush().await?;
        let mut buf = [0u8; 16 << 10];
        let n = self
            .io
            .read(&mut buf)
            .or(async {
                glommio::timer::sleep(IDLE_TIMEOUT).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.input.extend_from_slice(&buf[..n]);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.io.write_all(&self.output).await?;
            self.io.flush().await?;
            self.output.clear();
        }
        Ok(())
    }
}

/// The sink's side of a connection: plain, or TLS after STARTTLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Closed,
}

impl Io {
    fn is_tls(&self) -> bool {
        matches!(self, Io::Tls(_))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "closed")
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_close(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Io::Closed => Poll::Ready(Ok(())),
        }
    }
}
