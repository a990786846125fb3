//! The inbound SMTP session as a state machine with no I/O: bytes in, replies and
//! decisions out.
//!
//! The socket driver (in `ingress`) owns the connection and one input buffer. It appends
//! what it reads to the buffer and calls [`Session::step`] until it returns
//! [`Step::NeedMore`], writing every reply into its output buffer, and flushes the output
//! only then. So the replies to a pipelined group (RFC 2920) leave in one write, and a
//! client that does not pipeline gets each reply at once. When `step` hands over a
//! [`Transaction`], the driver spools it and reports the outcome through
//! [`Session::message_done`], whose reply it sends.
//!
//! The session consumes complete lines from the front of the buffer and leaves a partial
//! line there; a line that grows past `command_line_max_bytes` is answered and then skipped
//! without being buffered, so the session never needs more than one command line of input.
//! The per-verb rules live in `server/verbs.rs`; this file owns the states and framing.
//!
//! Strictness: a command line must end with CRLF. A bare LF ends the line (so the client
//! and the session agree on where it ends) but the line is refused with `500 5.5.2`
//! rather than executed, because a lenient reading of line endings is what SMTP smuggling
//! exploits.

mod verbs;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};

use crate::smtp::command::{self, MailParams};
use crate::smtp::data::{DataProgress, DataReceiver};
use crate::smtp::reply::{Enhanced, Reply, catalogue};

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

    /// The extensions announced in the EHLO reply, in order. STARTTLS, AUTH, CHUNKING,
    /// SMTPUTF8 and DSN are added here when their configuration turns them on.
    pub fn extensions(&self) -> Vec<Extension> {
        vec![
            Extension::Pipelining,
            Extension::EnhancedStatusCodes,
            Extension::EightBitMime,
            Extension::Size(self.message_max_bytes),
        ]
    }
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
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extension::Pipelining => f.write_str("PIPELINING"),
            Extension::EnhancedStatusCodes => f.write_str("ENHANCEDSTATUSCODES"),
            Extension::EightBitMime => f.write_str("8BITMIME"),
            Extension::Size(max_bytes) => write!(f, "SIZE {max_bytes}"),
        }
    }
}

/// What the session asks of the rest of corerelay.
pub trait Policy {
    type Account: Clone;
    /// Called at MAIL FROM: who is sending. Err(reply) refuses the MAIL (e.g. 550 5.7.1).
    fn identify(&self, peer: IpAddr, mail_from: &str) -> Result<Self::Account, Reply>;
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
    /// Write this reply, flush, and close the connection.
    Close(Reply),
}

/// One received message with its envelope.
#[derive(Debug)]
pub struct Transaction<A> {
    pub mail_from: String,
    pub params: MailParams,
    pub rcpts: Vec<String>,
    pub account: A,
    /// The message as received, dot-unstuffed, as slices of the input buffer.
    pub body: Vec<Bytes>,
    pub body_bytes: usize,
}

/// Which timeout the driver applies while waiting for input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Command,
    Data,
}

/// The envelope being built between MAIL and the end of DATA.
#[derive(Debug)]
struct Envelope<A> {
    mail_from: String,
    params: MailParams,
    account: A,
    rcpts: Vec<String>,
    /// Whether any RCPT was attempted, to tell "no RCPT sent" (503) from "every RCPT
    /// refused" (554) at DATA.
    rcpt_attempted: bool,
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
    /// Skipping the payload of a BDAT, which is not offered, so it is not read as commands.
    SkipChunk {
        left_bytes: u64,
    },
    /// A message was handed over; waiting for [`Session::message_done`].
    AwaitingOutcome,
    Closed,
}

/// One inbound SMTP session.
pub struct Session<P: Policy> {
    config: Rc<SessionConfig>,
    policy: P,
    peer: IpAddr,
    state: State,
    helo: Option<String>,
    /// EHLO (not HELO) was used, so ESMTP parameters are allowed.
    extended: bool,
    envelope: Option<Envelope<P::Account>>,
    errors_count: usize,
    messages_count: usize,
}

impl<P: Policy> Session<P> {
    pub fn new(config: Rc<SessionConfig>, policy: P, peer: IpAddr) -> Self {
        Session {
            config,
            policy,
            peer,
            state: State::Command,
            helo: None,
            extended: false,
            envelope: None,
            errors_count: 0,
            messages_count: 0,
        }
    }

    /// `220 <hostname> ESMTP corerelay`.
    pub fn greeting(&self) -> Reply {
        dynamic(220, format!("{} ESMTP corerelay", self.config.hostname))
    }

    /// Processes at most one command, or the DATA body, from the front of `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        match self.state {
            State::Command => self.read_command(buf),
            State::SkipLine => self.skip_line(buf),
            State::Data { .. } => self.read_data(buf),
            State::SkipChunk { .. } => self.skip_chunk(buf),
            State::AwaitingOutcome => {
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

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Data { .. } | State::SkipChunk { .. } => Phase::Data,
            _ => Phase::Command,
        }
    }

    /// The trace-header protocol name (RFC 3848): `ESMTP` after EHLO, `SMTP` after HELO.
    pub fn protocol(&self) -> &'static str {
        if self.extended { "ESMTP" } else { "SMTP" }
    }

    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    fn read_command(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        let max_bytes = self.config.command_line_max_bytes;
        let window = &buf[..buf.len().min(max_bytes)];
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            if buf.len() < max_bytes {
                return Step::NeedMore;
            }
            self.state = State::SkipLine;
            return self.answer(catalogue::LINE_TOO_LONG);
        };
        let line = buf.split_to(lf + 1);
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return self.answer(Reply::new(
                500,
                Enhanced::new(5, 5, 2),
                "Bare LF; command lines must end with CRLF",
            ));
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
                self.read_command(buf)
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
        let envelope = self.envelope.take();
        match (result, envelope) {
            (Ok(body_bytes), Some(envelope)) => {
                self.state = State::AwaitingOutcome;
                Step::Message(Transaction {
                    mail_from: envelope.mail_from,
                    params: envelope.params,
                    rcpts: envelope.rcpts,
                    account: envelope.account,
                    body,
                    body_bytes,
                })
            }
            (Err(error), _) => self.answer(error.reply()),
            // DATA is only accepted with an envelope; should that ever fail, refuse the
            // message rather than lose the session.
            (Ok(_), None) => self.answer(catalogue::LOCAL_ERROR),
        }
    }

    fn skip_chunk(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        let State::SkipChunk { left_bytes } = &mut self.state else {
            return Step::NeedMore;
        };
        let skip = buf.len().min(usize::try_from(*left_bytes).unwrap_or(usize::MAX));
        buf.advance(skip);
        *left_bytes -= skip as u64;
        if *left_bytes > 0 {
            return Step::NeedMore;
        }
        self.state = State::Command;
        self.answer(Reply::new(
            502,
            Enhanced::new(5, 5, 1),
            "BDAT not offered; chunk discarded",
        ))
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
