//! The client side of SMTP AUTH (RFC 4954) towards a smarthost, sans-IO: PLAIN (RFC 4616)
//! with the initial response on the AUTH line, or LOGIN (two `334` challenges) when the
//! server offers only that. The driver sends credentials only over TLS; this module only
//! knows the exchange.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;

use super::{Capabilities, Command};
use crate::smtp::reply::Reply;

/// The mechanisms corerelay can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

/// PLAIN when offered (one round trip), else LOGIN; `None` when neither is offered.
pub fn choose(caps: &Capabilities) -> Option<Mechanism> {
    match (caps.auth_plain, caps.auth_login) {
        (true, _) => Some(Mechanism::Plain),
        (false, true) => Some(Mechanism::Login),
        (false, false) => None,
    }
}

/// What the driver does after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthNext {
    /// Send what was appended to the buffer and read the next reply.
    Reply,
    /// Authenticated (`235`).
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Sent,
    /// LOGIN: the user name was sent, the password comes next.
    User,
    Password,
}

/// One AUTH exchange.
pub struct AuthExchange<'a> {
    mechanism: Mechanism,
    user: &'a str,
    password: &'a str,
    step: Step,
}

impl<'a> AuthExchange<'a> {
    pub fn new(mechanism: Mechanism, user: &'a str, password: &'a str) -> AuthExchange<'a> {
        AuthExchange {
            mechanism,
            user,
            password,
            step: Step::Sent,
        }
    }

    /// Appends the AUTH command.
    pub fn start(&mut self, out: &mut BytesMut) {
        match self.mechanism {
            Mechanism::Plain => {
                let token = STANDARD.encode(format!("\0{}\0{}", self.user, self.password));
                Command::Auth(&format!("PLAIN {token}")).write_to(out);
            }
            Mechanism::Login => Command::Auth("LOGIN").write_to(out),
        }
        self.step = Step::Sent;
    }

    /// Consumes a reply; a refusal (or a reply out of place) is returned as `Err`.
    pub fn on_reply(&mut self, reply: Reply, out: &mut BytesMut) -> Result<AuthNext, Reply> {
        if reply.code == 235 {
            return Ok(AuthNext::Done);
        }
        match (self.mechanism, self.step, reply.code) {
            (Mechanism::Login, Step::Sent, 334) => {
                Command::AuthResponse(&STANDARD.encode(self.user)).write_to(out);
                self.step = Step::User;
                Ok(AuthNext::Reply)
            }
            (Mechanism::Login, Step::User, 334) => {
                Command::AuthResponse(&STANDARD.encode(self.password)).write_to(out);
                self.step = Step::Password;
                Ok(AuthNext::Reply)
            }
            _ => Err(reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::parse;

    fn reply(wire: &str) -> Reply {
        parse(wire.as_bytes()).unwrap().0
    }

    #[test]
    fn plain_sends_the_credentials_in_one_line() {
        let mut out = BytesMut::new();
        let mut auth = AuthExchange::new(Mechanism::Plain, "user", "secret");
        auth.start(&mut out);
        assert_eq!(&out[..], b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
        assert_eq!(
            auth.on_reply(reply("235 2.7.0 ok\r\n"), &mut out),
            Ok(AuthNext::Done)
        );
        let refused = reply("535 5.7.8 bad credentials\r\n");
        assert_eq!(auth.on_reply(refused.clone(), &mut out), Err(refused));
    }

    #[test]
    fn login_answers_two_challenges() {
        let mut out = BytesMut::new();
        let mut auth = AuthExchange::new(Mechanism::Login, "user", "secret");
        auth.start(&mut out);
        assert_eq!(
            auth.on_reply(reply("334 VXNlcm5hbWU6\r\n"), &mut out),
            Ok(AuthNext::Reply)
        );
        assert_eq!(
            auth.on_reply(reply("334 UGFzc3dvcmQ6\r\n"), &mut out),
            Ok(AuthNext::Reply)
        );
        assert_eq!(&out[..], b"AUTH LOGIN\r\ndXNlcg==\r\nc2VjcmV0\r\n");
        assert_eq!(auth.on_reply(reply("235 ok\r\n"), &mut out), Ok(AuthNext::Done));
        let mut again = AuthExchange::new(Mechanism::Login, "user", "secret");
        again.start(&mut out);
        again.on_reply(reply("334 a\r\n"), &mut out).unwrap();
        again.on_reply(reply("334 b\r\n"), &mut out).unwrap();
        assert!(again.on_reply(reply("334 c\r\n"), &mut out).is_err());
    }

    #[test]
    fn plain_is_preferred() {
        let both = Capabilities {
            auth_plain: true,
            auth_login: true,
            ..Capabilities::default()
        };
        assert_eq!(choose(&both), Some(Mechanism::Plain));
        let login = Capabilities {
            auth_login: true,
            ..Capabilities::default()
        };
        assert_eq!(choose(&login), Some(Mechanism::Login));
        assert_eq!(choose(&Capabilities::default()), None);
    }
}
