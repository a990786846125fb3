//! The rules of each SMTP verb: what it needs to have happened before, what it changes,
//! and what it answers. Framing and states are in `server.rs`.

use bytes::BytesMut;

use super::{Envelope, Policy, Session, State, Step, dynamic};
use crate::smtp::command::{Command, MailParams, RcptParams};
use crate::smtp::data::DataReceiver;
use crate::smtp::reply::{Enhanced, Reply, catalogue};

impl<P: Policy> Session<P> {
    /// Runs one parsed command. `buf` is only read by BDAT, whose payload follows it.
    pub(super) fn execute(&mut self, command: Command, buf: &mut BytesMut) -> Step<P::Account> {
        match command {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Rset => {
                self.envelope = None;
                self.answer(catalogue::RESET_OK)
            }
            Command::Noop => self.answer(catalogue::NOOP_OK),
            Command::Quit => self.close(catalogue::BYE),
            Command::Vrfy(_) => self.answer(catalogue::VRFY),
            Command::Help => self.answer(catalogue::HELP),
            // Not offered (yet): STARTTLS, AUTH and the extensions of other verbs.
            Command::Expn(_) | Command::Starttls | Command::Auth(_) | Command::Unsupported(_) => {
                self.answer(catalogue::NOT_IMPLEMENTED)
            }
            Command::Bdat { chunk_bytes, .. } => {
                self.state = State::SkipChunk {
                    left_bytes: chunk_bytes,
                };
                self.skip_chunk(buf)
            }
        }
    }

    /// EHLO and HELO both start over: any transaction is dropped (RFC 5321 §4.1.4).
    fn hello(&mut self, name: String, extended: bool) -> Step<P::Account> {
        self.envelope = None;
        self.helo = Some(name);
        self.extended = extended;
        let mut text = self.config.hostname.clone();
        if extended {
            for extension in self.config.extensions() {
                text.push('\n');
                text.push_str(&extension.to_string());
            }
        }
        self.answer(dynamic(250, text))
    }

    fn mail(&mut self, from: String, params: MailParams) -> Step<P::Account> {
        if self.helo.is_none() {
            return self.answer(catalogue::NEED_EHLO);
        }
        if self.envelope.is_some() {
            return self.answer(catalogue::NESTED_MAIL);
        }
        if self.messages_count >= self.config.messages_per_connection_max_count {
            return self.close(Reply::new(
                421,
                Enhanced::new(4, 7, 0),
                "Too many messages on one connection; closing",
            ));
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
        match self.policy.identify(self.peer, &from) {
            Ok(account) => {
                self.envelope = Some(Envelope {
                    mail_from: from,
                    params,
                    account,
                    rcpts: Vec::new(),
                    rcpt_attempted: false,
                });
                self.answer(catalogue::SENDER_OK)
            }
            Err(reply) => self.answer(reply),
        }
    }

    fn rcpt(&mut self, to: String, _params: RcptParams) -> Step<P::Account> {
        let max_count = self.config.recipients_max_count;
        let Some(envelope) = &mut self.envelope else {
            return self.answer(catalogue::NEED_MAIL);
        };
        envelope.rcpt_attempted = true;
        if envelope.rcpts.len() >= max_count {
            return self.answer(catalogue::TOO_MANY_RCPTS);
        }
        envelope.rcpts.push(to);
        self.answer(catalogue::RECIPIENT_OK)
    }

    fn data(&mut self) -> Step<P::Account> {
        let Some(envelope) = &self.envelope else {
            return self.answer(catalogue::NEED_MAIL);
        };
        if envelope.rcpts.is_empty() {
            // With pipelining, DATA follows RCPTs that may all have failed (RFC 2920 §3.1).
            return self.answer(if envelope.rcpt_attempted {
                Reply::new(554, Enhanced::new(5, 5, 1), "No valid recipients")
            } else {
                catalogue::NEED_RCPT
            });
        }
        self.state = State::Data {
            receiver: DataReceiver::new(self.config.message_max_bytes, self.config.text_line_max_bytes),
            body: Vec::new(),
        };
        self.answer(catalogue::START_DATA)
    }
}
