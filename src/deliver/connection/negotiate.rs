//! What a connection says after the greeting: EHLO (HELO when refused), STARTTLS and the
//! TLS handshake as the route's policy asks, EHLO again over TLS, and AUTH towards a
//! smarthost. Credentials are only ever sent over TLS, and bytes that arrive between the
//! `220` to STARTTLS and the handshake end the session (CVE-2011-0411 class).

use super::*;
use crate::deliver::tls;
use crate::smtp::client::auth::{self, AuthExchange, AuthNext};

impl Connection {
    /// EHLO, STARTTLS and EHLO again, AUTH: whatever `dial` asks for after the greeting.
    pub(super) async fn negotiate(&mut self, dial: &Dial<'_>) -> Result<(), AttemptError> {
        self.hello(dial.helo_name).await?;
        let (connector, required) = match dial.tls {
            TlsMode::Off => (None, false),
            TlsMode::Opportunistic(c) => (Some(c), false),
            TlsMode::Required(c) => (Some(c), true),
        };
        match connector {
            Some(connector) if self.caps.starttls => {
                // Whatever breaks between STARTTLS and a working TLS session is a TLS
                // failure of this host (remembered, and plaintext where allowed); only an
                // explicit refusal of STARTTLS is the server's answer.
                let upgraded = self
                    .starttls(connector, dial, required)
                    .await
                    .map_err(|e| match e {
                        AttemptError::Refused(..) | AttemptError::Tls(_) => e,
                        other => AttemptError::Tls(format!("STARTTLS failed: {other}")),
                    })?;
                if upgraded {
                    self.hello(dial.helo_name).await?;
                }
            }
            _ if required => return Err(AttemptError::TlsUnavailable),
            _ => {}
        }
        match dial.auth {
            Some(credentials) => self.authenticate(credentials).await,
            None => Ok(()),
        }
    }

    /// STARTTLS and the handshake (RFC 3207). `Ok(false)`: the server refused STARTTLS and
    /// the policy lets the session go on in plaintext.
    async fn starttls(
        &mut self,
        connector: &TlsConnector,
        dial: &Dial<'_>,
        required: bool,
    ) -> Result<bool, AttemptError> {
        Command::Starttls.write_to(&mut self.out);
        let reply = self.exchange(Phase::Starttls, self.timeouts.command).await?;
        if reply.code != 220 {
            return match required {
                true => Err(AttemptError::Refused(Phase::Starttls, reply)),
                false => Ok(false),
            };
        }
        if self.reader.buffered_bytes() > 0 {
            // Bytes after the 220 were sent before the handshake: they could be injected
            // replies (CVE-2011-0411 class), so the session is not trusted.
            self.usable = false;
            return Err(AttemptError::Protocol(
                Phase::Starttls,
                "data after the 220 to STARTTLS".into(),
            ));
        }
        self.usable = false;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(AttemptError::Protocol(
                Phase::Starttls,
                "TLS is already active".into(),
            ));
        };
        let name = tls::server_name(dial.host, dial.addr.ip());
        let handshake = async {
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| AttemptError::Tls(tls::describe(&e)))
        };
        let tls = within(self.timeouts.command, Phase::Starttls, handshake).await?;
        self.stream = Stream::Tls(Box::new(tls));
        self.caps = Capabilities::default();
        self.usable = true;
        Ok(true)
    }

    /// AUTH PLAIN or LOGIN, only over TLS.
    async fn authenticate(&mut self, credentials: &Credentials) -> Result<(), AttemptError> {
        if !self.stream.is_tls() {
            return Err(AttemptError::Protocol(
                Phase::Auth,
                "credentials are only sent over TLS".into(),
            ));
        }
        let Some(mechanism) = auth::choose(&self.caps) else {
            return Err(AttemptError::Protocol(
                Phase::Auth,
                "the server offers neither AUTH PLAIN nor AUTH LOGIN".into(),
            ));
        };
        let mut exchange = AuthExchange::new(mechanism, &credentials.user, &credentials.password);
        exchange.start(&mut self.out);
        loop {
            let reply = self.exchange(Phase::Auth, self.timeouts.command).await?;
            match exchange.on_reply(reply, &mut self.out) {
                Ok(AuthNext::Done) => return Ok(()),
                Ok(AuthNext::Reply) => {}
                Err(refusal) => return Err(AttemptError::Refused(Phase::Auth, refusal)),
            }
        }
    }

    /// EHLO, or HELO when the server does not know EHLO (5xx). A 4xx (421) is a refusal.
    pub(super) async fn hello(&mut self, helo_name: &str) -> Result<(), AttemptError> {
        Command::Ehlo(helo_name).write_to(&mut self.out);
        let reply = self.exchange(Phase::Ehlo, self.timeouts.command).await?;
        if is_completion(&reply) {
            self.caps = parse_ehlo(&reply);
            return Ok(());
        }
        if !reply.is_permanent() {
            return Err(AttemptError::Refused(Phase::Ehlo, reply));
        }
        Command::Helo(helo_name).write_to(&mut self.out);
        let reply = self.exchange(Phase::Ehlo, self.timeouts.command).await?;
        if !is_completion(&reply) {
            return Err(AttemptError::Refused(Phase::Ehlo, reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }
}
