//! One outbound SMTP connection: the thin glommio driver around the sans-IO client of
//! [`crate::smtp::client`].
//!
//! It owns the socket, the bounded reply buffer and the bounded send buffer, applies one
//! timeout per phase, and turns every way a session can go wrong into an
//! [`AttemptError`] that says in which [`Phase`] it happened. What the replies mean for
//! each recipient is decided elsewhere, once, by [`super::outcome::classify`].
//!
//! Opening a connection ([`Connection::dial`]) connects from the egress source's address,
//! reads the greeting, says EHLO with the source's name, upgrades with STARTTLS as the
//! route's TLS policy asks (and says EHLO again), and authenticates to a smarthost that
//! needs it. Credentials are only ever sent over TLS.
//!
//! A connection is reused for several transactions while it stays usable: after any I/O
//! error, timeout, protocol error or `421` it is not, and the caller drops it.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

use super::stream::{self, Stream};
use crate::config::DeliveryConfig;
use crate::config::egress::{Credentials, PhaseTimeouts};
use crate::message::BodyType;
pub use crate::smtp::client::Phase;
use crate::smtp::client::{
    Capabilities, Command, DataWriter, Next, ReplyReader, Transaction, TransactionResult, Unsendable,
    choose_eight_bit, parse_ehlo,
};
use crate::smtp::reply::Reply;
use futures_rustls::TlsConnector;

/// The send buffer the body is copied into, dot-stuffed, between writes.
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// QUIT is a courtesy: wait for its reply at most this long (or the command timeout, if
/// shorter), so a silent server does not hold a delivery slot for minutes.
pub const QUIT_WAIT_MAX: Duration = Duration::from_secs(5);

/// How long each phase may take. RFC 5321 §4.5.3.2 names per-command minimums; these
/// come from `[delivery]` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    /// Sending one command (or a pipelined group) and reading each reply.
    pub command: Duration,
    /// Each write of the body, and the reply to the final dot.
    pub data: Duration,
}

impl Timeouts {
    /// These timeouts with a route's own where it sets them.
    pub fn with(self, own: PhaseTimeouts) -> Timeouts {
        Timeouts {
            connect: own.connect.unwrap_or(self.connect),
            greeting: own.greeting.unwrap_or(self.greeting),
            command: own.command.unwrap_or(self.command),
            data: own.data.unwrap_or(self.data),
        }
    }
}

impl From<&DeliveryConfig> for Timeouts {
    fn from(c: &DeliveryConfig) -> Timeouts {
        Timeouts {
            connect: c.connect_timeout,
            greeting: c.greeting_timeout,
            command: c.command_timeout,
            data: c.data_timeout,
        }
    }
}

/// Why an attempt did not produce a [`TransactionResult`].
#[derive(Debug)]
pub enum AttemptError {
    Connect(io::Error),
    Timeout(Phase),
    Io(Phase, io::Error),
    /// An unparsable or oversized reply, or a reply that makes no sense where it came.
    Protocol(Phase, String),
    /// The greeting, EHLO/HELO or RSET was refused.
    Refused(Phase, Reply),
    /// The message was not offered: this server cannot take it as it is (nothing sent).
    Unsendable(Unsendable),
    /// The TLS handshake after STARTTLS failed; the connection is gone.
    Tls(String),
    /// The policy requires TLS and this server does not offer STARTTLS.
    TlsUnavailable,
    /// The transaction broke after some replies came back; `partial` keeps them so the
    /// recipients already decided (say, a 550 to RCPT) stay decided.
    Interrupted {
        partial: Box<TransactionResult>,
        cause: Box<AttemptError>,
    },
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Connect(e) => write!(f, "connect failed: {e}"),
            AttemptError::Timeout(phase) => write!(f, "timed out at {phase}"),
            AttemptError::Io(phase, e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "connection closed by the server at {phase}")
            }
            AttemptError::Io(phase, e) => write!(f, "I/O error at {phase}: {e}"),
            AttemptError::Protocol(phase, why) => write!(f, "protocol error at {phase}: {why}"),
            AttemptError::Refused(phase, reply) => write!(f, "refused at {phase}: {reply}"),
            AttemptError::Unsendable(why) => write!(f, "not sent: {why}"),
            AttemptError::Tls(why) => f.write_str(why),
            AttemptError::TlsUnavailable => {
                f.write_str("TLS is required but the server does not offer STARTTLS")
            }
            AttemptError::Interrupted { cause, .. } => cause.fmt(f),
        }
    }
}

impl std::error::Error for AttemptError {}

/// How to open a connection: where to, from where, and with what TLS and AUTH.
#[derive(Clone, Copy)]
pub struct Dial<'a> {
    pub addr: SocketAddr,
    /// The host name the address belongs to: TLS server name, and reasons.
    pub host: &'a str,
    /// The local address to connect from; `None`: the system picks.
    pub bind: Option<IpAddr>,
    pub helo_name: &'a str,
    pub tls: TlsMode<'a>,
    /// Authenticate after TLS (smarthosts).
    pub auth: Option<&'a Credentials>,
}

/// STARTTLS for this connection.
#[derive(Clone, Copy)]
pub enum TlsMode<'a> {
    Off,
    /// When offered; a refused STARTTLS leaves the session in plaintext.
    Opportunistic(&'a TlsConnector),
    /// STARTTLS must be offered, accepted and complete.
    Required(&'a TlsConnector),
}

/// An open SMTP session, past the greeting and EHLO.
pub struct Connection {
    stream: Stream,
    peer: SocketAddr,
    timeouts: Timeouts,
    caps: Capabilities,
    reader: ReplyReader,
    /// Commands and body bytes waiting to be written; at most [`SEND_BUFFER_BYTES`] of
    /// body plus one pipelined command group.
    out: BytesMut,
    /// The last transaction left a MAIL open at the server.
    reset_needed: bool,
    /// False after an error, a timeout or a `421`: the session state is unknown or over.
    usable: bool,
    transactions_count: usize,
}

impl Connection {
    /// A plain connection from the system's choice of address, without TLS or AUTH.
    pub async fn open(
        addr: SocketAddr,
        helo_name: &str,
        timeouts: &Timeouts,
    ) -> Result<Connection, AttemptError> {
        let dial = Dial {
            addr,
            host: "",
            bind: None,
            helo_name,
            tls: TlsMode::Off,
            auth: None,
        };
        Connection::dial(&dial, timeouts).await
    }

    /// TCP connect (with TCP_NODELAY), read greeting (non-2xx → Refused), EHLO (on 5xx
    /// fall back to HELO), STARTTLS and EHLO again as `dial.tls` asks, then AUTH.
    pub async fn dial(dial: &Dial<'_>, timeouts: &Timeouts) -> Result<Connection, AttemptError> {
        let stream = stream::connect(dial.addr, dial.bind, timeouts.connect)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => AttemptError::Timeout(Phase::Connect),
                _ => AttemptError::Connect(e),
            })?;
        let mut conn = Connection {
            stream: Stream::Plain(stream),
            peer: dial.addr,
            timeouts: *timeouts,
            caps: Capabilities::default(),
            reader: ReplyReader::new(),
            out: BytesMut::with_capacity(4096),
            reset_needed: false,
            usable: true,
            transactions_count: 0,
        };
        let greeting = conn.exchange(Phase::Greeting, timeouts.greeting).await?;
        if !is_completion(&greeting) {
            // RFC 5321 §3.1: a server that refuses in its greeting still waits for QUIT.
            conn.quit().await;
            return Err(AttemptError::Refused(Phase::Greeting, greeting));
        }
        match conn.negotiate(dial).await {
            Ok(()) => Ok(conn),
            Err(e @ (AttemptError::Refused(..) | AttemptError::TlsUnavailable)) => {
                conn.quit().await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether another transaction may be started on this connection.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// One transaction. `body` is the message (trace header chunk + body chunks), sent
    /// dot-stuffed after DATA, or as is in BDAT when the server offers CHUNKING. An 8-bit
    /// `body_type` adds BODY=8BITMIME when the server offers it (a body declared 8-bit that
    /// is plain ASCII goes to other servers as 7-bit; one with 8-bit bytes is
    /// [`Unsendable::EightBit`]); BINARYMIME needs BINARYMIME and CHUNKING
    /// ([`Unsendable::Binary`]); SIZE= when offered. A RSET is sent first when
    /// the previous transaction left a MAIL open.
    pub async fn send(
        &mut self,
        mail_from: &str,
        rcpts: &[&str],
        body: &[Bytes],
        body_type: BodyType,
    ) -> Result<TransactionResult, AttemptError> {
        self.check_usable(Phase::Mail)?;
        let declared_eight_bit = body_type == BodyType::EightBitMime;
        let eight_bit =
            choose_eight_bit(declared_eight_bit, &self.caps, body).map_err(AttemptError::Unsendable)?;
        let size_bytes = body.iter().map(|c| c.len() as u64).sum();
        let mut tx = Transaction::new(&self.caps, mail_from, rcpts, size_bytes, eight_bit)
            .and_then(|tx| match body_type {
                BodyType::BinaryMime => tx.with_binary_mime(&self.caps),
                _ => Ok(tx),
            })
            .map_err(AttemptError::Unsendable)?;
        if self.reset_needed {
            self.reset().await?;
        }
        self.transactions_count += 1;
        match self.run(&mut tx, body).await {
            Ok(result) => {
                self.reset_needed = result.reset_needed;
                self.usable = !result.server_closing();
                Ok(result)
            }
            Err(cause) => {
                self.usable = false;
                Err(match tx.partial() {
                    Some(partial) => AttemptError::Interrupted {
                        partial: Box::new(partial),
                        cause: Box::new(cause),
                    },
                    None => cause,
                })
            }
        }
    }

    /// RSET, to reuse the connection after a transaction that did not complete.
    pub async fn reset(&mut self) -> Result<(), AttemptError> {
        self.check_usable(Phase::Rset)?;
        Command::Rset.write_to(&mut self.out);
        let reply = self
            .exchange(Phase::Rset, self.timeouts.command)
            .await
            .inspect_err(|_| self.usable = false)?;
        if !is_completion(&reply) {
            self.usable = false;
            return Err(AttemptError::Refused(Phase::Rset, reply));
        }
        self.reset_needed = false;
        Ok(())
    }

    /// QUIT and close; errors ignored.
    pub async fn quit(mut self) {
        if self.usable {
            Command::Quit.write_to(&mut self.out);
            let wait = self.timeouts.command.min(QUIT_WAIT_MAX);
            let _ = self.exchange(Phase::Quit, wait).await;
        }
        let _ = self.stream.close().await;
    }

    /// Transactions started on this connection so far (MAIL sent, delivered or not):
    /// what `delivery.messages_per_connection_max_count` limits.
    pub fn messages_sent(&self) -> usize {
        self.transactions_count
    }

    /// Drives the transaction's state machine over the socket.
    async fn run(
        &mut self,
        tx: &mut Transaction<'_>,
        body: &[Bytes],
    ) -> Result<TransactionResult, AttemptError> {
        let mut next = tx.start(&mut self.out);
        loop {
            let phase = tx.phase();
            let reply = match next {
                Next::Done(result) => return Ok(result),
                Next::Reply if phase == Phase::DataEnd => self.exchange(phase, self.timeouts.data).await?,
                Next::Reply => self.exchange(phase, self.timeouts.command).await?,
                Next::Body => {
                    self.flush(Phase::Data, self.timeouts.command).await?;
                    self.write_body(body).await?;
                    self.exchange(Phase::DataEnd, self.timeouts.data).await?
                }
                // The chunk follows its BDAT, and with it MAIL and the RCPTs when it went in
                // their flight (then the MAIL reply is the one read here); a server may hold
                // its replies until it has read the chunk, so the data timeout applies.
                Next::Chunk => {
                    self.write_chunk(phase, body).await?;
                    if phase == Phase::Mail {
                        // A server may send the MAIL and RCPT replies while the chunk is still
                        // arriving, and the BDAT reply later. Without TCP_NODELAY on its side
                        // (Postfix) that last reply waits for our ACK of the first, which the
                        // kernel delays up to 40 ms: acknowledge at once. Measured through
                        // Postfix 3.7, one connection, 20 KB: 23 messages/s without this.
                        // Best effort: a socket that refuses it only costs that delay.
                        let _ = self.stream.quickack();
                    }
                    self.exchange(phase, self.timeouts.data).await?
                }
            };
            next = tx
                .on_reply(reply, &mut self.out)
                .map_err(|u| AttemptError::Protocol(u.phase, format!("unexpected reply {}", u.reply)))?;
        }
    }

    /// Copies the body into the send buffer, dot-stuffed, writing whenever it fills; the
    /// terminator stays in the buffer for the exchange that reads the final reply.
    async fn write_body(&mut self, body: &[Bytes]) -> Result<(), AttemptError> {
        let mut writer = DataWriter::new();
        for chunk in body {
            let mut pos = 0;
            while pos < chunk.len() {
                pos += writer.write(&chunk[pos..], &mut self.out, SEND_BUFFER_BYTES);
                if pos < chunk.len() {
                    self.flush(Phase::DataEnd, self.timeouts.data).await?;
                }
            }
        }
        writer.finish(&mut self.out);
        Ok(())
    }

    /// Writes the pending commands (the BDAT, and MAIL and the RCPTs when they go in its
    /// flight) and then the body as stored, straight from its chunks (BDAT: no stuffing, no
    /// copy), in one vectored write when the socket takes it all: one system call, and the
    /// flight reaches the server together, where a write per piece cost a call and a
    /// segment each and could wake the server for the commands alone (BENCHMARKS.md,
    /// fairness round nine).
    /// `phase` is the transaction's: `Mail` when the chunk went with MAIL and the RCPTs, so
    /// a warm connection the server had closed fails before any recipient, as it would
    /// without the chunk, and is replaced.
    async fn write_chunk(&mut self, phase: Phase, body: &[Bytes]) -> Result<(), AttemptError> {
        let io_error = |e| AttemptError::Io(phase, e);
        let pieces = std::iter::once(&self.out[..]).chain(body.iter().map(|c| &c[..]));
        let mut slices: Vec<IoSlice<'_>> = pieces.filter(|p| !p.is_empty()).map(IoSlice::new).collect();
        let stream = &mut self.stream;
        within(self.timeouts.data, phase, async {
            write_all_vectored(stream, &mut slices).await.map_err(io_error)
        })
        .await?;
        self.out.clear();
        Ok(())
    }

    /// Writes the pending bytes, then reads one reply, within `limit`.
    async fn exchange(&mut self, phase: Phase, limit: Duration) -> Result<Reply, AttemptError> {
        within(limit, phase, async {
            write_all(&mut self.stream, &mut self.out, phase).await?;
            read_reply(&mut self.stream, &mut self.reader, phase).await
        })
        .await
    }

    async fn flush(&mut self, phase: Phase, limit: Duration) -> Result<(), AttemptError> {
        within(limit, phase, write_all(&mut self.stream, &mut self.out, phase)).await
    }

    fn check_usable(&self, phase: Phase) -> Result<(), AttemptError> {
        if self.usable {
            return Ok(());
        }
        let e = io::Error::new(io::ErrorKind::NotConnected, "connection is no longer usable");
        Err(AttemptError::Io(phase, e))
    }
}

/// Writes every byte of `slices` (consuming them), as few calls as the writer allows.
async fn write_all_vectored<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        let written = writer.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the peer takes no more data",
            ));
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    writer.flush().await
}

async fn write_all(stream: &mut Stream, out: &mut BytesMut, phase: Phase) -> Result<(), AttemptError> {
    if out.is_empty() {
        return Ok(());
    }
    let io_error = |e| AttemptError::Io(phase, e);
    stream.write_all(out).await.map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    out.clear();
    Ok(())
}

async fn read_reply(
    stream: &mut Stream,
    reader: &mut ReplyReader,
    phase: Phase,
) -> Result<Reply, AttemptError> {
    loop {
        match reader.next_reply() {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(why) => return Err(AttemptError::Protocol(phase, why.to_string())),
        }
        let n = stream
            .read(reader.read_space())
            .await
            .map_err(|e| AttemptError::Io(phase, e))?;
        if n == 0 {
            let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the server");
            return Err(AttemptError::Io(phase, eof));
        }
        reader.filled(n);
    }
}

/// Runs `fut`, or gives up with [`AttemptError::Timeout`] after `limit`.
async fn within<T>(
    limit: Duration,
    phase: Phase,
    fut: impl Future<Output = Result<T, AttemptError>>,
) -> Result<T, AttemptError> {
    fut.or(async {
        glommio::timer::sleep(limit).await;
        Err(AttemptError::Timeout(phase))
    })
    .await
}

fn is_completion(reply: &Reply) -> bool {
    reply.code / 100 == 2
}

mod negotiate;
#[cfg(test)]
mod tests;
