//! The rules of each SMTP verb: what it needs to have happened before, what it changes,
//! and what it answers. Framing and states are in `server.rs`; AUTH is in `auth.rs`.

use bytes::BytesMut;

use super::{Chunks, Envelope, Policy, Session, State, Step, dynamic, extensions};
use crate::message::BodyType;
use crate::smtp::bdat::ChunkReceiver;
use crate::smtp::command::{Command, MailParams, RcptParams};
use crate::smtp::data::DataReceiver;
use crate::smtp::reply::{Reply, catalogue};

impl<P: Policy> Session<P> {
    /// Runs one parsed command. `buf` is read by BDAT, whose payload follows it, and
    /// checked by STARTTLS, which must be the last command in it.
    pub(super) fn execute(&mut self, command: Command, buf: &mut BytesMut) -> Step<P::Account> {
        match command {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Bdat { chunk_bytes, last } => self.bdat(chunk_bytes, last, buf),
            Command::Rset => {
                self.envelope = None;
                self.answer(catalogue::RESET_OK)
            }
            Command::Noop => self.answer(catalogue::NOOP_OK),
            Command::Quit => self.close(catalogue::BYE),
            Command::Vrfy(_) => self.answer(catalogue::VRFY),
            Command::Help => self.answer(catalogue::HELP),
            Command::Starttls => self.starttls(buf),
            Command::Auth(args) => self.auth(&args),
            Command::Expn(_) | Command::Unsupported(_) => self.answer(catalogue::NOT_IMPLEMENTED),
        }
    }

    /// EHLO and HELO both start over: any transaction is dropped (RFC 5321 §4.1.4).
    fn hello(&mut self, name: String, extended: bool) -> Step<P::Account> {
        self.envelope = None;
        self.helo = Some(name);
        self.extended = extended;
        let mut text = self.config.hostname.clone();
        if extended {
            for extension in extensions(&self.config, &self.options, self.tls) {
                text.push('\n');
                text.push_str(&extension.to_string());
            }
        }
        self.answer(dynamic(250, text))
    }

    /// RFC 3207. Anything the client sent after STARTTLS is already in `buf`, in
    /// plaintext; reading it after the handshake as if it had come over TLS is the
    /// CVE-2011-0411 injection, so the connection is closed instead.
    fn starttls(&mut self, buf: &BytesMut) -> Step<P::Account> {
        if !self.options.starttls {
            return self.answer(catalogue::TLS_NOT_OFFERED);
        }
        if self.tls {
            return self.answer(catalogue::TLS_ACTIVE);
        }
        if self.helo.is_none() {
            return self.answer(catalogue::NEED_EHLO);
        }
        if !buf.is_empty() {
            return self.close(catalogue::PIPELINED_AFTER_STARTTLS);
        }
        self.state = State::AwaitingTls;
        Step::StartTls(catalogue::READY_FOR_TLS)
    }

    fn mail(&mut self, from: String, params: MailParams) -> Step<P::Account> {
        if self.helo.is_none() {
            return self.answer(catalogue::NEED_EHLO);
        }
        if self.envelope.is_some() {
            return self.answer(catalogue::NESTED_MAIL);
        }
        if self.messages_count >= self.config.messages_per_connection_max_count {
            return self.close(catalogue::TOO_MANY_MESSAGES);
        }
        if self.options.require_tls && !self.tls {
            return self.answer(catalogue::TLS_REQUIRED);
        }
        // ESMTP parameters exist only in a session opened with EHLO (RFC 5321 §4.1.1.2).
        if !self.extended && params != MailParams::default() {
            return self.answer(catalogue::PARAM_UNKNOWN);
        }
        let too_large = params
            .size
            .is_some_and(|size| size > self.config.message_max_bytes as u64);
        if too_large {
            return self.answer(catalogue::SIZE_EXCEEDED);
        }
        // AUTH identifies the account and takes precedence over the source address.
        let identified = match &self.authenticated {
            Some((_, account)) => self.policy.identify_authenticated(self.peer, account, &from),
            None => self.policy.identify(self.peer, &from),
        };
        match identified {
            Ok(account) => {
                self.envelope = Some(Envelope {
                    mail_from: from,
                    params,
                    account,
                    rcpts: Vec::new(),
                    rcpt_params: Vec::new(),
                    rcpt_attempted: false,
                    chunks: None,
                });
                self.answer(catalogue::SENDER_OK)
            }
            Err(reply) => self.answer(reply),
        }
    }

    fn rcpt(&mut self, to: String, params: RcptParams) -> Step<P::Account> {
        let max_count = self.config.recipients_max_count;
        let extended = self.extended;
        let Some(envelope) = &mut self.envelope else {
            return self.answer(catalogue::NEED_MAIL);
        };
        envelope.rcpt_attempted = true;
        if !extended && params != RcptParams::default() {
            return self.answer(catalogue::PARAM_UNKNOWN);
        }
        if !to.is_ascii() && !envelope.params.smtputf8 {
            return self.answer(catalogue::UTF8_NEEDS_SMTPUTF8);
        }
        if envelope.rcpts.len() >= max_count {
            return self.answer(catalogue::TOO_MANY_RCPTS);
        }
        envelope.rcpts.push(to);
        envelope.rcpt_params.push(params);
        self.answer(catalogue::RECIPIENT_OK)
    }

    /// The reply for a DATA or BDAT that finds no usable transaction, if so.
    fn transaction_refusal(&self) -> Option<Reply> {
        let Some(envelope) = &self.envelope else {
            return Some(catalogue::NEED_MAIL);
        };
        if envelope.rcpts.is_empty() {
            // With pipelining, DATA follows RCPTs that may all have failed (RFC 2920 §3.1).
            return Some(if envelope.rcpt_attempted {
                catalogue::NO_VALID_RCPTS
            } else {
                catalogue::NEED_RCPT
            });
        }
        None
    }

    fn data(&mut self) -> Step<P::Account> {
        if let Some(reply) = self.transaction_refusal() {
            return self.answer(reply);
        }
        if let Some(envelope) = &self.envelope {
            if envelope.chunks.is_some() {
                return self.answer(catalogue::DATA_AFTER_BDAT);
            }
            if envelope.params.body == BodyType::BinaryMime {
                return self.answer(catalogue::BINARYMIME_NEEDS_BDAT);
            }
        }
        let receiver = DataReceiver::new(self.config.message_max_bytes, self.config.text_line_max_bytes)
            .normalizing_bare_lf(self.options.normalize_bare_lf);
        self.state = State::Data {
            receiver,
            body: Vec::new(),
        };
        self.answer(catalogue::START_DATA)
    }

    /// RFC 3030: the chunk follows the command line in `buf`. Without a usable
    /// transaction it is skipped (never read as commands) and refused once consumed.
    fn bdat(&mut self, chunk_bytes: u64, last: bool, buf: &mut BytesMut) -> Step<P::Account> {
        if let Some(reply) = self.transaction_refusal() {
            let reply = if self.envelope.is_none() {
                catalogue::BDAT_NO_TRANSACTION
            } else {
                reply
            };
            self.state = State::SkipChunk {
                left_bytes: chunk_bytes,
                reply,
            };
            return self.skip_chunk(buf);
        }
        let (max_bytes, line_max_bytes) = (self.config.message_max_bytes, self.config.text_line_max_bytes);
        let normalize = self.options.normalize_bare_lf;
        let Some(envelope) = &mut self.envelope else {
            return self.answer(catalogue::NEED_MAIL);
        };
        let binary = envelope.params.body == BodyType::BinaryMime;
        let chunks = envelope.chunks.get_or_insert_with(|| Chunks {
            receiver: ChunkReceiver::new(max_bytes, line_max_bytes, binary).normalizing_bare_lf(normalize),
            body: Vec::new(),
        });
        chunks.receiver.start_chunk(chunk_bytes);
        self.state = State::Chunk { chunk_bytes, last };
        self.read_chunk(buf)
    }
}
