//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms: the command's rules and
//! the base64 exchange. Checking the credentials is not the session's job: it hands them
//! to the driver ([`super::Step::Authenticate`]), which verifies the password hash off the
//! session and reports back with [`Session::auth_done`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;

use super::{AUTH_LINE_MAX_BYTES, AuthStep, Credentials, Line, Policy, Session, State, Step};
use crate::smtp::reply::{Reply, catalogue};

/// Why a client response could not be used.
fn malformed() -> Reply {
    catalogue::AUTH_BAD_BASE64
}

impl<P: Policy> Session<P> {
    /// `AUTH <mechanism> [initial-response]`.
    pub(super) fn auth(&mut self, args: &str) -> Step<P::Account> {
        if let Some(reply) = self.auth_refusal() {
            return self.answer(reply);
        }
        let (mechanism, initial) = match args.split_once(' ') {
            Some((m, i)) => (m, Some(i)),
            None => (args, None),
        };
        let plain = mechanism.eq_ignore_ascii_case("PLAIN");
        if !plain && !mechanism.eq_ignore_ascii_case("LOGIN") {
            return self.answer(catalogue::AUTH_MECHANISM);
        }
        let Some(initial) = initial else {
            let (step, prompt) = if plain {
                (AuthStep::Plain, catalogue::AUTH_CONTINUE)
            } else {
                (AuthStep::LoginUser, catalogue::AUTH_USERNAME)
            };
            self.state = State::AuthResponse(step);
            return Step::Reply(prompt);
        };
        // "=" is an empty initial response (RFC 4954 §4).
        let decoded = if initial == "=" {
            Ok(Vec::new())
        } else {
            decode(initial)
        };
        let step = if plain {
            AuthStep::Plain
        } else {
            AuthStep::LoginUser
        };
        match decoded {
            Ok(bytes) => self.auth_response(step, bytes),
            Err(reply) => self.answer(reply),
        }
    }

    /// Why AUTH cannot be used now, if so.
    fn auth_refusal(&self) -> Option<Reply> {
        if !self.extended {
            Some(catalogue::NEED_EHLO)
        } else if !self.options.auth {
            Some(catalogue::AUTH_NOT_OFFERED)
        } else if !self.tls && !self.options.auth_plaintext_allowed {
            Some(catalogue::AUTH_NEEDS_TLS)
        } else if self.authenticated.is_some() {
            Some(catalogue::ALREADY_AUTHENTICATED)
        } else if self.envelope.is_some() {
            Some(catalogue::AUTH_IN_TRANSACTION)
        } else {
            None
        }
    }

    /// One line of the exchange: base64, or `*` to cancel.
    pub(super) fn read_auth_response(&mut self, buf: &mut BytesMut) -> Step<P::Account> {
        let line = match self.take_line(buf, AUTH_LINE_MAX_BYTES) {
            Line::Complete(line) => line,
            Line::NeedMore => return Step::NeedMore,
            Line::TooLong => return self.answer(catalogue::LINE_TOO_LONG),
        };
        let State::AuthResponse(step) = std::mem::replace(&mut self.state, State::Command) else {
            return Step::NeedMore;
        };
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return self.answer(catalogue::BARE_LF_COMMAND);
        };
        if text == b"*" {
            return self.answer(catalogue::AUTH_CANCELLED);
        }
        match std::str::from_utf8(text)
            .map_err(|_| malformed())
            .and_then(decode)
        {
            Ok(bytes) => self.auth_response(step, bytes),
            Err(reply) => self.answer(reply),
        }
    }

    /// Moves the exchange on with a decoded response.
    fn auth_response(&mut self, step: AuthStep, bytes: Vec<u8>) -> Step<P::Account> {
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => return self.answer(malformed()),
        };
        match step {
            AuthStep::Plain => match split_plain(&text) {
                Some(credentials) => self.authenticate(credentials),
                None => self.answer(malformed()),
            },
            AuthStep::LoginUser => {
                self.state = State::AuthResponse(AuthStep::LoginPassword { username: text });
                Step::Reply(catalogue::AUTH_PASSWORD)
            }
            AuthStep::LoginPassword { username } => self.authenticate(Credentials {
                authzid: String::new(),
                username,
                password: text,
            }),
        }
    }

    fn authenticate(&mut self, credentials: Credentials) -> Step<P::Account> {
        if credentials.username.is_empty() || credentials.username.chars().any(char::is_control) {
            return self.answer(catalogue::AUTH_FAILED);
        }
        self.state = State::AwaitingAuth {
            username: credentials.username.clone(),
        };
        Step::Authenticate(credentials)
    }
}

fn decode(text: &str) -> Result<Vec<u8>, Reply> {
    STANDARD
        .decode(text.trim_end_matches(' '))
        .map_err(|_| malformed())
}

/// PLAIN: `authzid NUL authcid NUL passwd` (RFC 4616 §2).
fn split_plain(text: &str) -> Option<Credentials> {
    let mut parts = text.split('\0');
    let (authzid, username, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Credentials {
        authzid: authzid.to_string(),
        username: username.to_string(),
        password: password.to_string(),
    })
}
