//! One mail transaction (MAIL, RCPT…, DATA, body, final dot) as a state machine.
//!
//! The driver asks [`Transaction::start`] for the first commands, writes them, reads one
//! reply at a time and hands it to [`Transaction::on_reply`], which says what to do next:
//! read another reply, send the body, or stop with a [`TransactionResult`].
//!
//! With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write and the
//! replies come back in order; every reply is consumed even after MAIL failed, so the
//! stream stays in step. If no recipient was accepted but the server still answers DATA
//! with 354 (RFC 2920 §3.1 allows it), the client ends the empty data with a lone `.` and
//! ignores the outcome. Without PIPELINING it is one command per round trip, and it stops
//! early: no RCPT after a refused MAIL, no DATA when every RCPT was refused.
//!
//! With CHUNKING (RFC 3030) there is no DATA: `BDAT <size> LAST` and the message as is (no
//! dot-stuffing), written straight from its chunks; its reply is the data phase's. With
//! PIPELINING too, a message of at most [`PIPELINED_BDAT_MAX_BYTES`] goes out with MAIL and
//! the RCPTs in one flight, as in RFC 3030 §4.2's example: one round trip per transaction
//! instead of two (MAIL/RCPT/DATA, then the body after the 354). If every recipient is
//! refused the server refuses the BDAT and discards its chunk (RFC 3030 §2); the bytes sent
//! for nothing are bounded by that size. A larger message, or one without PIPELINING, waits
//! for the RCPT replies and is not sent when none was accepted.
//!
//! A `421` to any command means the server is closing the session (RFC 5321 §3.8): the
//! transaction stops there and the commands not yet answered stay unanswered.

use bytes::BytesMut;

use super::{Capabilities, Command, MailParams, Phase, Unsendable, check_path};
use crate::smtp::reply::Reply;

/// What the transaction learned: one reply per command sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionResult {
    pub mail: Reply,
    /// One per recipient, in order; `None` when its RCPT was not sent or not answered.
    pub rcpts: Vec<Option<Reply>>,
    /// The last reply of the data phase: the reply to the final dot after a 354, or the
    /// refusal of DATA itself. `None` when DATA was not sent or not answered.
    pub data: Option<Reply>,
    /// The server may still hold the MAIL transaction (it was not ended by a reply to the
    /// final dot): send RSET before the next MAIL on this connection.
    pub reset_needed: bool,
}

impl TransactionResult {
    /// The server announced it is closing the connection (a `421` somewhere).
    pub fn server_closing(&self) -> bool {
        self.replies().any(|r| r.code == 421)
    }

    /// The first `421` reply, for reasons.
    pub fn closing_reply(&self) -> Option<&Reply> {
        self.replies().find(|r| r.code == 421)
    }

    fn replies(&self) -> impl Iterator<Item = &Reply> {
        std::iter::once(&self.mail)
            .chain(self.rcpts.iter().flatten())
            .chain(self.data.iter())
    }
}

/// A reply that makes no sense where it came (a 3xx to RCPT, a 250 to DATA): the session
/// can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnexpectedReply {
    pub phase: Phase,
    pub reply: Reply,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send whatever was appended to the command buffer, then read one reply.
    Reply,
    /// Send the command buffer, then the body with [`super::DataWriter`], then read one
    /// reply.
    Body,
    /// Send the command buffer (`BDAT <size> LAST`), then the body exactly as stored,
    /// then read one reply.
    Chunk,
    /// The transaction is over.
    Done(TransactionResult),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    Mail,
    Rcpt(usize),
    Data,
    /// Waiting for the reply to the final dot (after the body, or after a lone dot when
    /// no recipient was accepted).
    DataEnd,
    Done,
}

/// The largest message sent with PIPELINING in the same flight as MAIL and the RCPTs (BDAT
/// LAST), before the server has accepted a recipient: what a refused transaction can waste.
pub const PIPELINED_BDAT_MAX_BYTES: u64 = 64 * 1024;

/// One transaction on an established session.
#[derive(Debug)]
pub struct Transaction<'a> {
    pipelining: bool,
    chunking: bool,
    size_bytes: u64,
    mail_from: &'a str,
    params: MailParams,
    rcpts: &'a [&'a str],
    state: State,
    mail: Option<Reply>,
    rcpt_replies: Vec<Option<Reply>>,
    /// BDAT LAST and the message went out with MAIL and the RCPTs.
    chunk_sent: bool,
}

impl<'a> Transaction<'a> {
    /// Prepares a transaction for a message of `size_bytes` (as stored, before
    /// dot-stuffing); `eight_bit` asks for `BODY=8BITMIME` (see [`super::choose_eight_bit`]).
    /// Refuses what this server cannot take before anything is sent.
    pub fn new(
        caps: &Capabilities,
        mail_from: &'a str,
        rcpts: &'a [&'a str],
        size_bytes: u64,
        eight_bit: bool,
    ) -> Result<Transaction<'a>, Unsendable> {
        if rcpts.is_empty() {
            return Err(Unsendable::NoRecipients);
        }
        check_path(mail_from)?;
        rcpts.iter().try_for_each(|r| check_path(r))?;
        if eight_bit && !caps.eightbitmime {
            return Err(Unsendable::EightBit);
        }
        if let Some(max_bytes) = caps.size.filter(|&max| max > 0 && size_bytes > max) {
            return Err(Unsendable::TooLarge {
                size_bytes,
                max_bytes,
            });
        }
        let smtputf8 = !mail_from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
        if smtputf8 && !caps.smtputf8 {
            return Err(Unsendable::SmtpUtf8);
        }
        let params = MailParams {
            size_bytes: caps.size.map(|_| size_bytes),
            eight_bit_mime: eight_bit,
            binary_mime: false,
            smtputf8,
        };
        Ok(Transaction {
            pipelining: caps.pipelining,
            chunking: caps.chunking,
            size_bytes,
            mail_from,
            params,
            rcpts,
            state: State::Start,
            mail: None,
            rcpt_replies: vec![None; rcpts.len()],
            chunk_sent: false,
        })
    }

    /// Sends the message as `BODY=BINARYMIME` in BDAT chunks (RFC 3030): only to a server
    /// that offers both BINARYMIME and CHUNKING.
    pub fn with_binary_mime(mut self, caps: &Capabilities) -> Result<Transaction<'a>, Unsendable> {
        if !(caps.binarymime && caps.chunking) {
            return Err(Unsendable::Binary);
        }
        self.params.binary_mime = true;
        self.params.eight_bit_mime = false;
        self.chunking = true;
        Ok(self)
    }

    /// Appends the first command(s) to `out`: MAIL alone, or with PIPELINING MAIL, every
    /// RCPT and DATA — or, with CHUNKING, `BDAT <size> LAST` when the message is small
    /// enough to go in the same flight ([`Next::Chunk`]: the message follows before the
    /// first reply is read).
    pub fn start(&mut self, out: &mut BytesMut) -> Next {
        Command::Mail(self.mail_from, self.params).write_to(out);
        self.state = State::Mail;
        if !self.pipelining {
            return Next::Reply;
        }
        for rcpt in self.rcpts {
            Command::Rcpt(rcpt).write_to(out);
        }
        if !self.chunking {
            Command::Data.write_to(out);
            return Next::Reply;
        }
        if self.size_bytes <= PIPELINED_BDAT_MAX_BYTES {
            Command::BdatLast(self.size_bytes).write_to(out);
            self.chunk_sent = true;
            return Next::Chunk;
        }
        Next::Reply
    }

    /// The phase whose reply is awaited (for timeouts and errors).
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Start | State::Mail => Phase::Mail,
            State::Rcpt(_) => Phase::Rcpt,
            State::Data => Phase::Data,
            State::DataEnd | State::Done => Phase::DataEnd,
        }
    }

    /// Consumes the next reply; commands to send next are appended to `out`.
    pub fn on_reply(&mut self, reply: Reply, out: &mut BytesMut) -> Result<Next, UnexpectedReply> {
        let phase = self.phase();
        let sane = match self.state {
            State::Data => reply.code == 354 || reply.code >= 400,
            _ => reply.code < 300 || reply.code >= 400,
        };
        if !sane || matches!(self.state, State::Start | State::Done) {
            return Err(UnexpectedReply { phase, reply });
        }
        let closing = reply.code == 421;
        match self.state {
            State::Mail => self.on_mail(reply, out, closing),
            State::Rcpt(i) => self.on_rcpt(i, reply, out, closing),
            State::Data => Ok(self.on_data(reply, out, closing)),
            // RFC 3030 §2: after a refused BDAT the transaction's state is the server's
            // to keep or drop; RSET before the next one either way.
            _ => {
                let reset = self.chunking && !is_completion(&reply) && !closing;
                Ok(self.done(Some(reply), reset))
            }
        }
    }

    /// What is known so far, for an attempt cut short by an I/O error or a timeout;
    /// `None` before the MAIL reply.
    pub fn partial(&self) -> Option<TransactionResult> {
        Some(TransactionResult {
            mail: self.mail.clone()?,
            rcpts: self.rcpt_replies.clone(),
            data: None,
            reset_needed: true,
        })
    }

    fn on_mail(&mut self, reply: Reply, out: &mut BytesMut, closing: bool) -> Result<Next, UnexpectedReply> {
        let accepted = is_completion(&reply);
        self.mail = Some(reply);
        if closing || (!accepted && !self.pipelining) {
            return Ok(self.done(None, true));
        }
        if !self.pipelining {
            Command::Rcpt(self.rcpts[0]).write_to(out);
        }
        self.state = State::Rcpt(0);
        Ok(Next::Reply)
    }

    fn on_rcpt(
        &mut self,
        i: usize,
        reply: Reply,
        out: &mut BytesMut,
        closing: bool,
    ) -> Result<Next, UnexpectedReply> {
        let Some(slot) = self.rcpt_replies.get_mut(i) else {
            return Err(UnexpectedReply {
                phase: Phase::Rcpt,
                reply,
            });
        };
        *slot = Some(reply);
        if closing {
            return Ok(self.done(None, true));
        }
        if let Some(next) = self.rcpts.get(i + 1) {
            if !self.pipelining {
                Command::Rcpt(next).write_to(out);
            }
            self.state = State::Rcpt(i + 1);
            return Ok(Next::Reply);
        }
        if self.chunk_sent {
            // The BDAT went out with the RCPTs: its reply comes next, accepted or not.
            self.state = State::DataEnd;
            return Ok(Next::Reply);
        }
        if self.chunking {
            if !self.any_accepted() {
                return Ok(self.done(None, true));
            }
            Command::BdatLast(self.size_bytes).write_to(out);
            self.state = State::DataEnd;
            return Ok(Next::Chunk);
        }
        if !self.pipelining {
            if !self.any_accepted() {
                return Ok(self.done(None, true));
            }
            Command::Data.write_to(out);
        }
        self.state = State::Data;
        Ok(Next::Reply)
    }

    fn on_data(&mut self, reply: Reply, out: &mut BytesMut, closing: bool) -> Next {
        if reply.code != 354 {
            // DATA refused: the MAIL transaction may still be open at the server.
            return self.done(Some(reply), !closing);
        }
        self.state = State::DataEnd;
        if self.any_accepted() {
            return Next::Body;
        }
        // RFC 2920 §3.1: nothing to deliver, but the server waits for data; end it empty.
        out.extend_from_slice(b".\r\n");
        Next::Reply
    }

    /// MAIL and at least one RCPT were accepted.
    fn any_accepted(&self) -> bool {
        self.mail.as_ref().is_some_and(is_completion) && self.rcpt_replies.iter().flatten().any(is_completion)
    }

    fn done(&mut self, data: Option<Reply>, reset_needed: bool) -> Next {
        self.state = State::Done;
        let Some(mail) = self.mail.take() else {
            // Unreachable: every path here follows the MAIL reply. Answer something
            // harmless rather than panic.
            return Next::Reply;
        };
        Next::Done(TransactionResult {
            mail,
            rcpts: std::mem::take(&mut self.rcpt_replies),
            data,
            reset_needed,
        })
    }
}

/// A 2xx reply (positive completion). 3xx is positive too, but only 354 to DATA makes
/// sense and that is handled where it comes.
fn is_completion(reply: &Reply) -> bool {
    reply.code / 100 == 2
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;
