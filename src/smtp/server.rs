//! The inbound SMTP session as a state machine with no I/O: bytes in, replies and
//! decisions out.
//!
//! The socket driver (in `ingress`) owns the connection and one input buffer. It appends
//! what it reads to the buffer and calls [`Session::step`] until it returns
//! [`Step::NeedMore`], writing every reply into its output buffer, and flushes the output
//! only then. So the replies to a pipelined group (RFC 2920) leave in one write, and a
//! client that does not pipeline gets each reply at once. Three steps hand work to the
//! driver and wait for its answer before the session reads on: [`Step::Message`] (spool
//! it, then [`Session::message_done`]), [`Step::Authenticate`] (check the credentials off
//! the session, then [`Session::auth_done`]) and [`Step::StartTls`] (send the reply, run
//! the handshake, then [`Session::tls_started`]).
//!
//! The session consumes complete lines from the front of the buffer and leaves a partial
//! line there; a line that grows past `command_line_max_bytes` is answered and then skipped
//! without being buffered, so the session never needs more than one command line of input
//! (an AUTH line may be [`AUTH_LINE_MAX_BYTES`], RFC 4954 §4). The per-verb rules live in
//! `server/verbs.rs` and `server/auth.rs`; this file owns the states and framing.
//!
//! Strictness: a command line must end with CRLF. A bare LF ends the line (so the client
//! and the session agree on where it ends) but the line is refused with `500 5.5.2`
//! rather than executed, because a lenient reading of line endings is what SMTP smuggling
//! exploits. STARTTLS must be the last command of its pipelined group: anything after it
//! in the buffer closes the connection (CVE-2011-0411).

mod auth;
mod verbs;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ext;

use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};

use crate::smtp::bdat::ChunkReceiver;
use crate::smtp::command::{self, CommandKind, MailParams, RcptParams};
use crate::smtp::data::{DataProgress, DataReceiver};
use crate::smtp::reply::{Enhanced, Reply, catalogue};

/// RFC 4954 §4: the AUTH command and the responses of its exchange may be this long.
pub const AUTH_LINE_MAX_BYTES: usize = 12_288;

/// The limits and names one session works with; shared by all sessions of a core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub hostname: String,
    pub message_max_bytes: usize,
    pub recipients_max_count: usize,
    pub command_line_max_bytes: usize,
    pub text_line_max_bytes: usize,
    pub errors_max_count: usize,
    pub messages_per_connection_max_count: usize,
}

impl SessionConfig {
    pub fn from_config(config: &crate::config::Config) -> SessionConfig {
        let smtp = &config.smtp;
        SessionConfig {
            hostname: config.server.hostname.clone(),
            message_max_bytes: smtp.message_max_bytes,
            recipients_max_count: smtp.recipients_max_count,
            command_line_max_bytes: smtp.command_line_max_bytes,
            text_line_max_bytes: smtp.text_line_max_bytes,
            errors_max_count: smtp.errors_max_count,
            messages_per_connection_max_count: smtp.messages_per_connection_max_count,
        }
    }
}

/// What the listener a session runs on offers and requires, beyond the extensions every
/// session has. The default offers neither STARTTLS nor AUTH and rejects bare LF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// A TLS configuration is at hand: STARTTLS is offered until TLS is active.
    pub starttls: bool,
    /// Some account has credentials: AUTH PLAIN and LOGIN can be offered.
    pub auth: bool,
    /// AUTH is offered without TLS too.
    pub auth_plaintext_allowed: bool,
    /// MAIL needs TLS first (`530 5.7.0`).
    pub require_tls: bool,
    /// A bare LF in message text is read as CRLF instead of refused.
    pub normalize_bare_lf: bool,
}

/// The EHLO keywords of a session: the extensions every session has, then STARTTLS and
/// AUTH as the listener and the session's state allow.
pub fn extensions(config: &SessionConfig, options: &Options, tls: bool) -> Vec<Extension> {
    let mut list = vec![
        Extension::Pipelining,
        Extension::Size(config.message_max_bytes),
        Extension::EightBitMime,
        Extension::BinaryMime,
        Extension::Chunking,
        Extension::EnhancedStatusCodes,
        Extension::SmtpUtf8,
        Extension::Dsn,
    ];
    if options.starttls && !tls {
        list.push(Extension::StartTls);
    }
    if options.auth && (tls || options.auth_plaintext_allowed) {
        list.push(Extension::Auth);
    }
    list
}

/// One ESMTP extension as announced after EHLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// RFC 2920.
    Pipelining,
    /// RFC 2034.
    EnhancedStatusCodes,
    /// RFC 6152.
    EightBitMime,
    /// RFC 1870, with the largest message accepted.
    Size(usize),
    /// RFC 3030.
    Chunking,
    /// RFC 3030.
    BinaryMime,
    /// RFC 6531.
    SmtpUtf8,
    /// RFC 3461.
    Dsn,
    /// RFC 3207.
    StartTls,
    /// RFC 4954, with the mechanisms offered.
    Auth,
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extension::Pipelining => f.write_str("PIPELINING"),
            Extension::EnhancedStatusCodes => f.write_str("ENHANCEDSTATUSCODES"),
            Extension::EightBitMime => f.write_str("8BITMIME"),
            Extension::Size(max_bytes) => write!(f, "SIZE {max_bytes}"),
            Extension::Chunking => f.write_str("CHUNKING"),
            Extension::BinaryMime => f.write_str("BINARYMIME"),
            Extension::SmtpUtf8 => f.write_str("SMTPUTF8"),
            Extension::Dsn => f.write_str("DSN"),
            Extension::StartTls => f.write_str("STARTTLS"),
            Extension::Auth => f.write_str("AUTH PLAIN LOGIN"),
        }
    }
}

/// What the session asks of the rest of corerelay.
pub trait Policy {
    type Account: Clone;
    /// Called at MAIL FROM of a client that did not authenticate: who is sending, by
    /// source address and sender. Err(reply) refuses the MAIL (e.g. 550 5.7.1).
    fn identify(&self, peer: IpAddr, mail_from: &str) -> Result<Self::Account, Reply>;

    /// Called at MAIL FROM of a client that authenticated as `account`: may it send as
    /// `mail_from`? AUTH identifies the account, so the source address is not consulted.
    fn identify_authenticated(
        &self,
        peer: IpAddr,
        account: &Self::Account,
        mail_from: &str,
    ) -> Result<Self::Account, Reply> {
        let _ = (peer, mail_from);
        Ok(account.clone())
    }

    /// Told of every command line the session reads (for counting), before it runs.
    fn command(&self, kind: CommandKind) {
        let _ = kind;
    }
}

/// What the client sent to authenticate, decoded (RFC 4954 PLAIN or LOGIN).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authorization identity of PLAIN; empty when not given (and for LOGIN).
    pub authzid: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    /// The password is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ authzid: {:?}, username: {:?} }}",
            self.authzid, self.username
        )
    }
}

/// What the driver does next.
#[derive(Debug)]
pub enum Step<A> {
    /// Write this reply and call `step` again.
    Reply(Reply),
    /// The buffer holds no complete command (or no more body): flush the output, read
    /// more input into the buffer, and call `step` again.
    NeedMore,
    /// A message was received: spool it, then call [`Session::message_done`] and send its
    /// reply, before calling `step` again.
    Message(Transaction<A>),
    /// Check these credentials, then call [`Session::auth_done`] and send its reply.
    Authenticate(Credentials),
    /// Write this reply, flush, run the TLS handshake on the connection, then call
    /// [`Session::tls_started`]. The input buffer is empty here, and must be: nothing read
    /// before the handshake may be taken as coming over TLS.
    StartTls(Reply),
    /// Write this reply, flush, and close the connection.
    Close(Reply),
}

/// One received message with its envelope.
#[derive(Debug)]
pub struct Transaction<A> {
    pub mail_from: String,
    pub params: MailParams,
    pub rcpts: Vec<String>,
    /// The DSN parameters of each recipient, in the order of `rcpts`.
    pub rcpt_params: Vec<RcptParams>,
    pub account: A,
    /// The AUTH user name, when the client authenticated.
    pub auth_user: Option<String>,
    /// The message as received (dot-unstuffed after DATA), as slices of the input buffer.
    pub body: Vec<Bytes>,
    pub body_bytes: usize,
}

/// Which timeout the driver applies while waiting for input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Command,
    Data,
}

/// A BDAT transfer in progress: the receiver spans the chunks of one transaction.
#[derive(Debug)]
struct Chunks {
    receiver: ChunkReceiver,
    body: Vec<Bytes>,
}

/// The envelope being built between MAIL and the end of DATA or BDAT LAST.
#[derive(Debug)]
struct Envelope<A> {
    mail_from: String,
    params: MailParams,
    account: A,
    rcpts: Vec<String>,
    rcpt_params: Vec<RcptParams>,
    /// Whether any RCPT was attempted, to tell "no RCPT sent" (503) from "every RCPT
    /// refused" (554) at DATA.
    rcpt_attempted: bool,
    /// Set by the first BDAT; DATA is refused from then on (RFC 3030 §2).
    chunks: Option<Chunks>,
}

/// The step of an AUTH exchange waiting for the client's next (base64) line.
#[derive(Debug)]
enum AuthStep {
    /// PLAIN without an initial response: the whole response comes next.
    Plain,
    LoginUser,
    LoginPassword {
        username: String,
    },
}

/// Where the session is; each input-reading state owns what it needs.
#[derive(Debug)]
enum State {
    Command,
    /// Skipping the rest of a command line that was too long (already answered).
    SkipLine,
    Data {
        receiver: DataReceiver,
        body: Vec<Bytes>,
    },
    /// Reading the payload of a BDAT into the transaction's receiver.
    Chunk {
        chunk_bytes: u64,
        last: bool,
    },
    /// Skipping the payload of a BDAT that cannot be taken, so it is not read as
    /// commands; `reply` is sent once it has been consumed.
    SkipChunk {
        left_bytes: u64,
        reply: Reply,
    },
    /// Waiting for a line of an AUTH exchange.
    AuthResponse(AuthStep),
    /// A message was handed over; waiting for [`Session::message_done`].
    AwaitingOutcome,
    /// Credentials were handed over; waiting for [`Session::auth_done`].
    AwaitingAuth {
        username: String,
    },
    /// STARTTLS was accepted; waiting for [`Session::tls_started`].
    AwaitingTls,
    Closed,
}

/// One inbound SMTP session.
pub struct Session<P: Policy> {
    config: Rc<SessionConfig>,
    options: Options,
    policy: P,
    peer: IpAddr,
    state: State,
    helo: Option<String>,
    /// EHLO (not HELO) was used, so ESMTP parameters are allowed.
    extended: bool,
    tls: bool,
    /// The user name and account of a successful AUTH.
    authenticated: Option<(String, P::Account)>,
    envelope: Option<Envelope<P::Account>>,
    errors_count: usize,
    messages_count: usize,
}

/// How a line was found at the front of the buffer.
enum Line {
    /// A line, CRLF included (or ending in a bare LF).
    Complete(BytesMut),
    NeedMore,
    /// No line end within the limit: answered, and the rest of the line is skipped.
    TooLong,
}

impl<P: Policy> Session<P> {
    pub fn new(config: Rc<SessionConfig>, policy: P, peer: IpAddr) -> Self {
        Session {
            config,
            options: Options::default(),
            policy,
            peer,
            state: State::Command,
            helo: None,
            extended: false,
            tls: false,
            authenticated: None,
            envelope: None,
            errors_count: 0,
            messages_count: 0,
        }
    }

    /// The session with what its listener offers.
    pub fn with_options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// `220 <hostname> ESMTP corerelay`.
    pub fn greeting(&self) -> Reply {
        dynamic(220, format!("{} ESMTP corerelay", self.config.hostname))
    }

    /// Processes at most one command, or a piece of a message, from the front of `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        match self.state {
            State::Command => self.read_command(buf),
            State::SkipLine => self.skip_line(buf),
            State::Data { .. } => self.read_data(buf),
            State::Chunk { .. } => self.read_chunk(buf),
            State::SkipChunk { .. } => self.skip_chunk(buf),
            State::AuthResponse(_) => self.read_auth_response(buf),
            State::AwaitingOutcome | State::AwaitingAuth { .. } | State::AwaitingTls => {
                // The driver must report the outcome before reading on; if it did not, the
                // order of replies is lost, so end the session.
                self.close(Reply::new(
                    421,
                    Enhanced::new(4, 3, 0),
                    "Local error; closing connection",
                ))
            }
            State::Closed => {
                buf.clear();
                Step::NeedMore
            }
        }
    }

    /// Reports the outcome of the message last returned by `step` and returns the reply
    /// for the client: `250` or the given error. The transaction is reset; HELO is kept.
    pub fn message_done(&mut self, result: Result<(), Reply>) -> Reply {
        if matches!(self.state, State::AwaitingOutcome) {
            self.state = State::Command;
            self.messages_count += 1;
        }
        result.err().unwrap_or(catalogue::OK)
    }

    /// Reports the outcome of the credentials last returned by `step`: `235` and the
    /// session is authenticated as that account, or the given error (`535 5.7.8`, or
    /// `454 4.7.0` when throttled). A failure counts as a client error; when it reaches
    /// the limit the reply is `421` and [`Session::is_closed`] turns true.
    pub fn auth_done(&mut self, result: Result<P::Account, Reply>) -> Reply {
        let State::AwaitingAuth { username } = std::mem::replace(&mut self.state, State::Command) else {
            return catalogue::BAD_SEQUENCE;
        };
        match result {
            Ok(account) => {
                self.authenticated = Some((username, account));
                catalogue::AUTH_OK
            }
            Err(reply) => match self.answer(reply) {
                Step::Close(reply) | Step::Reply(reply) => reply,
                _ => catalogue::AUTH_FAILED,
            },
        }
    }

    /// TLS is now active on the connection: the session starts over as RFC 3207 §4.2
    /// asks (no EHLO, no transaction, no authentication). Also called before the greeting
    /// of an implicit-TLS connection.
    pub fn tls_started(&mut self) {
        self.state = State::Command;
        self.helo = None;
        self.extended = false;
        self.envelope = None;
        self.authenticated = None;
        self.tls = true;
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Data { .. } | State::Chunk { .. } | State::SkipChunk { .. } => Phase::Data,
            _ => Phase::Command,
        }
    }

    /// True from DATA's 354 to the end of data, and from the first BDAT of a transaction
    /// to its LAST chunk (including the commands between chunks): the span the whole-
    /// transfer deadline (`smtp.data_end_timeout_ms`) covers.
    pub fn in_transfer(&self) -> bool {
        matches!(self.state, State::Data { .. } | State::Chunk { .. })
            || self.envelope.as_ref().is_some_and(|e| e.chunks.is_some())
    }

    /// The trace-header protocol name (RFC 3848): `ESMTP` after EHLO, `SMTP` after HELO,
    /// with `S` when TLS is active and `A` when the client authenticated.
    pub fn protocol(&self) -> &'static str {
        match (self.extended, self.tls, self.authenticated.is_some()) {
            (false, false, _) => "SMTP",
            (false, true, _) => "SMTPS",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    pub fn tls_active(&self) -> bool {
        self.tls
    }

    /// The AUTH user name, once authenticated.
    pub fn auth_user(&self) -> Option<&str> {
        self.authenticated.as_ref().map(|(user, _)| user.as_str())
    }

    /// Takes one line of at most `max_bytes` (CRLF included) off the front of `buf`.
    fn take_line(&mut self, buf: &mut BytesMut, max_bytes: usize) -> Line {
        let window = &buf[..buf.len().min(max_bytes)];
        match window.iter().position(|&b| b == b'\n') {
            Some(lf) => Line::Complete(buf.split_to(lf + 1)),
            None if buf.len() < max_bytes => Line::NeedMore,
            None => {
                self.state = State::SkipLine;
                Line::TooLong
            }
        }
    }

    fn read_command(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        // AUTH lines carry base64 credentials and may be longer (RFC 4954 §4).
        let is_auth = buf.len() >= 5 && buf[..5].eq_ignore_ascii_case(b"AUTH ");
        let max_bytes = if is_auth {
            AUTH_LINE_MAX_BYTES.max(self.config.command_line_max_bytes)
        } else {
            self.config.command_line_max_bytes
        };
        let line = match self.take_line(buf, max_bytes) {
            Line::Complete(line) => line,
            Line::NeedMore => return Step::NeedMore,
            Line::TooLong => {
                self.policy.command(CommandKind::Other);
                return self.answer(catalogue::LINE_TOO_LONG);
            }
        };
        self.policy.command(CommandKind::of(&line));
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return self.answer(catalogue::BARE_LF_COMMAND);
        };
        match command::parse(text) {
            Ok(command) => self.execute(command, buf),
            Err(reply) => {
                let verb = text.split(|&b| b == b' ').next().unwrap_or_default();
                if let Some(envelope) = &mut self.envelope
                    && verb.eq_ignore_ascii_case(b"RCPT")
                {
                    envelope.rcpt_attempted = true;
                }
                self.answer(reply)
            }
        }
    }

    /// Drops input up to the end of the over-long line, then reads the next command.
    fn skip_line(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                buf.advance(lf + 1);
                self.state = State::Command;
                self.step(buf)
            }
            None => {
                buf.clear();
                Step::NeedMore
            }
        }
    }

    fn read_data(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        let State::Data { receiver, body } = &mut self.state else {
            return Step::NeedMore;
        };
        let result = match receiver.feed(buf, body) {
            DataProgress::NeedMore => return Step::NeedMore,
            DataProgress::Done(result) => result,
        };
        let body = std::mem::take(body);
        self.state = State::Command;
        match result {
            Ok(body_bytes) => self.hand_over(body, body_bytes),
            Err(error) => {
                self.envelope = None;
                self.answer(error.reply())
            }
        }
    }

    fn read_chunk(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        let State::Chunk { chunk_bytes, last } = self.state else {
            return Step::NeedMore;
        };
        let Some(chunks) = self.envelope.as_mut().and_then(|e| e.chunks.as_mut()) else {
            // A chunk is only read into a transaction; should that ever fail, drop it.
            self.state = State::SkipChunk {
                left_bytes: 0,
                reply: catalogue::LOCAL_ERROR,
            };
            return self.skip_chunk(buf);
        };
        if !chunks.receiver.feed(buf, &mut chunks.body) {
            return Step::NeedMore;
        }
        self.state = State::Command;
        if let Some(error) = chunks.receiver.error() {
            // RFC 3030 §2: a failed chunk fails the transaction; BDATs already pipelined
            // behind it find no transaction and are skipped.
            self.envelope = None;
            return self.answer(error.reply());
        }
        if !last {
            return self.answer(Reply::new(
                250,
                Enhanced::new(2, 0, 0),
                format!("{chunk_bytes} octets received"),
            ));
        }
        let mut body = std::mem::take(&mut chunks.body);
        match chunks.receiver.finish(&mut body) {
            Ok(body_bytes) => self.hand_over(body, body_bytes),
            Err(error) => {
                self.envelope = None;
                self.answer(error.reply())
            }
        }
    }

    /// The end of a message: the envelope and body become a [`Transaction`].
    fn hand_over(&mut self, body: Vec<Bytes>, body_bytes: usize) -> Step<P::Account> {
        let Some(envelope) = self.envelope.take() else {
            // A message is only received with an envelope; should that ever fail, refuse
            // the message rather than lose the session.
            return self.answer(catalogue::LOCAL_ERROR);
        };
        self.state = State::AwaitingOutcome;
        Step::Message(Transaction {
            mail_from: envelope.mail_from,
            params: envelope.params,
            rcpts: envelope.rcpts,
            rcpt_params: envelope.rcpt_params,
            account: envelope.account,
            auth_user: self.auth_user().map(str::to_string),
            body,
            body_bytes,
        })
    }

    fn skip_chunk(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        let State::SkipChunk { left_bytes, .. } = &mut self.state else {
            return Step::NeedMore;
        };
        let skip = buf.len().min(usize::try_from(*left_bytes).unwrap_or(usize::MAX));
        buf.advance(skip);
        *left_bytes -= skip as u64;
        if *left_bytes > 0 {
            return Step::NeedMore;
        }
        let State::SkipChunk { reply, .. } = std::mem::replace(&mut self.state, State::Command) else {
            return Step::NeedMore;
        };
        self.answer(reply)
    }

    /// Sends a reply to a command, counting 5xx replies as client errors; the error that
    /// reaches the limit is replaced by `421` and the session ends.
    fn answer(&mut self, reply: Reply) -> Step<P::Account> {
        if reply.is_permanent() {
            self.errors_count += 1;
            if self.errors_count >= self.config.errors_max_count {
                return self.close(catalogue::TOO_MANY_ERRORS);
            }
        }
        Step::Reply(reply)
    }

    fn close(&mut self, reply: Reply) -> Step<P::Account> {
        self.state = State::Closed;
        self.envelope = None;
        Step::Close(reply)
    }
}

/// A reply without an enhanced code (greeting, EHLO/HELO), whose text is made at run time.
fn dynamic(code: u16, text: String) -> Reply {
    Reply {
        code,
        enhanced: None,
        text: text.into(),
    }
}
