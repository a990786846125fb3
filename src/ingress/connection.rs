//! The driver of one client connection: the thin I/O shell around the sans-IO
//! [`Session`]. It reads into one growing buffer whose frozen slices become the message's
//! body chunks (decrypted bytes too: rustls decrypts into that same buffer), writes replies
//! in batches (so a pipelined group of commands gets its replies in one write), applies
//! the timeouts, upgrades the stream on STARTTLS, and hands each finished transaction and
//! each AUTH login to a [`Handler`], whose result is the client's reply. The relay's
//! handler builds a [`Message`] and hands it to its owner core; `corerelay sink` uses the
//! same driver.
//!
//! Timeouts (RFC 5321 §4.5.3.2): the greeting timeout (at most the command timeout) until
//! the client's first command;
//! then the command timeout, which runs from the moment the relay waits for a command to
//! the end of its line, so a client trickling a byte at a time (slowloris) cannot hold a
//! connection beyond it; inside DATA or a BDAT chunk the data-block timeout, per read, as
//! §4.5.3.2.5 sets it per block. The data-end timeout bounds a whole message transfer
//! (DATA to the final dot, first BDAT to BDAT LAST), however the client trickles it.
//! Writes are bounded by the command timeout, so a client that stops reading cannot hold
//! a task.

use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;

use super::stream::{Prefixed, Stream};
use super::{DirectoryPolicy, Ingress, ListenerRuntime, proxy};
use crate::account::{AccountRef, check_header_from};
use crate::config::{SmtpConfig, TlsSettings};
use crate::lifecycle::Stop;
use crate::message::{Envelope, Message, MessageId, Recipient};
use crate::observe::Event;
use crate::smtp::reply::{Reply, catalogue};
use crate::smtp::server::{Credentials, Phase, Policy, Session, Step, Transaction};

/// Bytes asked of the kernel per read while a message body is being received; the buffer
/// grows in steps of this size, and the body's chunks are slices of it.
const READ_CHUNK_BYTES: usize = 16 << 10;
/// Bytes asked per read between messages. Command lines are short, and a connection that
/// waits for its next command then holds only this much: thousands of idle clients cost
/// little memory.
const COMMAND_READ_BYTES: usize = 1024;

/// Who the client said it is, for the trace header.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The EHLO/HELO name.
    pub name: String,
    /// `ESMTP`, `ESMTPS`, `ESMTPSA`, `SMTP`… (RFC 3848).
    pub protocol: &'static str,
}

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Until the PROXY header and the first command have arrived.
    pub greeting: Duration,
    /// Silence between commands.
    pub command: Duration,
    /// Silence inside DATA or a BDAT chunk.
    pub data: Duration,
    /// A whole message transfer.
    pub data_end: Duration,
    pub tls_handshake: Duration,
}

impl Timeouts {
    pub fn from_config(smtp: &SmtpConfig, tls: &TlsSettings) -> Timeouts {
        Timeouts {
            greeting: smtp.greeting_timeout,
            command: smtp.command_timeout,
            data: smtp.data_timeout,
            data_end: smtp.data_end_timeout,
            tls_handshake: tls.handshake_timeout,
        }
    }

    /// The same timeout everywhere (the sink).
    pub fn uniform(timeout: Duration) -> Timeouts {
        Timeouts {
            greeting: timeout,
            command: timeout,
            data: timeout,
            data_end: timeout,
            tls_handshake: timeout,
        }
    }
}

/// What the driver asks of its owner. The futures run on the connection's own core and are
/// never sent between threads, so the missing `Send` bound the lint warns of is intended.
#[allow(async_fn_in_trait)]
pub trait Handler<A> {
    /// Decides a finished transaction: `Ok` is `250`, `Err` the reply instead.
    async fn message(&mut self, hello: &Hello, txn: Transaction<A>) -> Result<(), Reply>;
    /// Checks AUTH credentials: the account they log in to, or the refusal.
    async fn authenticate(&mut self, credentials: Credentials) -> Result<A, Reply>;
    /// The core's stop signal, when the server stops gracefully: a session waiting for its
    /// next command is then answered `421 4.3.0` and closed, while a message being
    /// received is let finish.
    fn stop(&self) -> Option<Stop> {
        None
    }
    /// Sees every reply the session sends (for counters).
    fn replied(&mut self, _reply: &Reply) {}
    /// Learns how a STARTTLS handshake went (for counters).
    fn tls_handshake(&mut self, _ok: bool) {}
}

/// Runs `session` over `stream` until the client quits, a limit closes the session, a
/// timeout passes (`421 4.4.2`) or the client goes away. `input` may already hold bytes
/// (what followed a PROXY header). `tls` is what STARTTLS upgrades with.
pub async fn drive<P: Policy, H: Handler<P::Account>>(
    stream: &mut Stream,
    mut input: BytesMut,
    session: &mut Session<P>,
    timeouts: &Timeouts,
    tls: Option<&TlsAcceptor>,
    handler: &mut H,
) -> io::Result<()> {
    let mut output = BytesMut::new();
    let mut room = ReadRoom::default();
    answer(handler, &session.greeting(), &mut output);
    let mut greeted = false;
    let mut transfer_deadline: Option<Instant> = None;
    // When the relay started waiting for the command being read.
    let mut command_since: Option<Instant> = None;
    loop {
        let step = session.step(&mut input);
        if !matches!(step, Step::NeedMore) {
            greeted = true;
            command_since = None;
        }
        match step {
            Step::Reply(reply) => answer(handler, &reply, &mut output),
            Step::NeedMore => {
                flush(stream, &mut output, timeouts.command).await?;
                let now = Instant::now();
                transfer_deadline = match session.in_transfer() {
                    true => Some(transfer_deadline.unwrap_or(now + timeouts.data_end)),
                    false => None,
                };
                let since = *command_since.get_or_insert(now);
                let mut timeout = match (greeted, session.phase()) {
                    // The first command gets the greeting timeout, never more than any other.
                    (false, _) => timeouts
                        .greeting
                        .min(timeouts.command)
                        .saturating_sub(since.elapsed()),
                    (true, Phase::Data) => {
                        command_since = None;
                        timeouts.data
                    }
                    (true, Phase::Command) => timeouts.command.saturating_sub(since.elapsed()),
                };
                if let Some(deadline) = transfer_deadline {
                    timeout = timeout.min(deadline.saturating_duration_since(now));
                }
                let stop = if session.in_transfer() {
                    None
                } else {
                    handler.stop()
                };
                if stop.as_ref().is_some_and(Stop::is_raised) {
                    answer(handler, &catalogue::SHUTTING_DOWN, &mut output);
                    return flush(stream, &mut output, timeouts.command).await;
                }
                let chunk = match session.phase() {
                    Phase::Data => READ_CHUNK_BYTES,
                    _ if session.in_transfer() => READ_CHUNK_BYTES,
                    _ => COMMAND_READ_BYTES,
                };
                match read(stream, &mut input, &mut room, chunk, timeout, stop.as_ref()).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    // Stopping: the check above answers the client.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        answer(handler, &catalogue::TIMEOUT, &mut output);
                        return flush(stream, &mut output, timeouts.command).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Step::Message(txn) => {
                let hello = Hello {
                    name: session.helo().unwrap_or_default().to_string(),
                    protocol: session.protocol(),
                };
                let result = handler.message(&hello, txn).await;
                let reply = session.message_done(result);
                answer(handler, &reply, &mut output);
            }
            Step::Authenticate(credentials) => {
                let result = handler.authenticate(credentials).await;
                let reply = session.auth_done(result);
                answer(handler, &reply, &mut output);
                if session.is_closed() {
                    return flush(stream, &mut output, timeouts.command).await;
                }
            }
            Step::StartTls(reply) => {
                answer(handler, &reply, &mut output);
                flush(stream, &mut output, timeouts.command).await?;
                let Some(acceptor) = tls else {
                    return Ok(());
                };
                let shaken = handshake(stream, BytesMut::new(), acceptor, timeouts.tls_handshake).await;
                handler.tls_handshake(shaken.is_ok());
                shaken?;
                session.tls_started();
            }
            Step::Close(reply) => {
                answer(handler, &reply, &mut output);
                return flush(stream, &mut output, timeouts.command).await;
            }
        }
    }
}

/// Writes a reply and lets the handler count it.
fn answer<A, H: Handler<A>>(handler: &mut H, reply: &Reply, output: &mut BytesMut) {
    handler.replied(reply);
    reply.write_to(output);
}

/// Turns the plain `stream` into a TLS one; `prefix` holds bytes of the handshake that
/// were read already. On failure the stream is gone and the connection is to be dropped.
pub async fn handshake(
    stream: &mut Stream,
    prefix: BytesMut,
    acceptor: &TlsAcceptor,
    timeout: Duration,
) -> io::Result<()> {
    let Some(tcp) = stream.take_plain() else {
        return Err(io::Error::other("TLS is already active"));
    };
    let accept = acceptor.accept(Prefixed::new(prefix, tcp));
    match glommio::timer::timeout(timeout, async { Ok(accept.await) }).await {
        Ok(Ok(tls)) => {
            *stream = Stream::Tls(Box::new(tls));
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

/// Reads more input after what `input` holds, waiting at most `timeout`; when `stop` is
/// raised first, gives up with `Interrupted`.
async fn read(
    stream: &mut Stream,
    input: &mut BytesMut,
    room: &mut ReadRoom,
    chunk: usize,
    timeout: Duration,
    stop: Option<&Stop>,
) -> io::Result<usize> {
    if timeout.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let start = room.open(input, chunk);
    let buf = &mut input[start..start + chunk];
    let result = glommio::timer::timeout(timeout, async {
        let read = async { stream.read(buf).await };
        Ok(match stop {
            None => read.await,
            Some(stop) => {
                futures_lite::future::or(read, async {
                    stop.wait().await;
                    Err(io::ErrorKind::Interrupted.into())
                })
                .await
            }
        })
    })
    .await;
    let result = match result {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
    };
    room.close(input, start + *result.as_ref().unwrap_or(&0));
    result
}

/// The initialised bytes after the input that the last read did not fill. A read needs
/// initialised room (`&mut [u8]`), and zeroing a whole read's worth before every read was a
/// measurable share of a message's CPU (`memset`, 16 KiB per body read, 1 KiB per command
/// read, however few bytes arrived). The unfilled rest of the room is kept here, split off
/// the input so the session never sees it, and joined back before the next read, so only
/// room that was never read into is zeroed.
#[derive(Debug, Default)]
struct ReadRoom {
    /// Starts right after the input's last byte while the input's front is only ever split
    /// off; anything else (the input cleared, replaced or reallocated) just drops it.
    spare: BytesMut,
}

impl ReadRoom {
    /// Makes `input` end with at least `chunk` initialised bytes of room after its
    /// current length, which it returns: the room is `input[start..start + chunk]`.
    fn open(&mut self, input: &mut BytesMut, chunk: usize) -> usize {
        let start = input.len();
        let spare = std::mem::take(&mut self.spare);
        if spare.capacity() > 0 {
            if input.is_empty() {
                *input = spare;
            } else {
                // When it is not adjacent (the input was moved), the old room is of no use.
                let _ = input.try_unsplit(spare);
            }
        }
        // When the allocation cannot hold the room, `reserve` moves the input: the spare
        // bytes would be copied for nothing, so they are dropped first.
        if input.capacity() < start + chunk {
            input.truncate(start);
        }
        if input.len() < start + chunk {
            input.resize(start + chunk, 0);
        }
        start
    }

    /// Ends a read: `input` keeps its first `end` bytes, the rest of the room is kept.
    fn close(&mut self, input: &mut BytesMut, end: usize) {
        self.spare = input.split_off(end);
    }
}

async fn flush(stream: &mut Stream, output: &mut BytesMut, timeout: Duration) -> io::Result<()> {
    if output.is_empty() {
        return Ok(());
    }
    let write = async {
        let r = stream.write_all(output).await;
        let r = match r {
            Ok(()) => stream.flush().await,
            e => e,
        };
        Ok(r)
    };
    match glommio::timer::timeout(timeout, write).await {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
    output.clear();
    Ok(())
}

/// Serves one relay client on this core, accepted on `listener`.
pub async fn serve(tcp: TcpStream, ingress: Rc<Ingress>, listener: Rc<ListenerRuntime>) {
    let _ = tcp.set_nodelay(true);
    let Ok(real_peer) = tcp.peer_addr().map(|a| a.ip()) else {
        return;
    };
    let mut tcp = tcp;
    let mut input = BytesMut::new();
    let mut peer = real_peer;
    if let Some(trusted) = &listener.config.proxy_trusted_networks {
        // Only a trusted proxy may say who the client is; anyone else is dropped unheard.
        if !trusted.iter().any(|n| n.contains(&real_peer)) {
            ingress.log.emit(Event::Error {
                what: format!("PROXY header refused: {real_peer} is not a trusted proxy"),
            });
            let _ = tcp.close().await;
            return;
        }
        match read_proxy_header(&mut tcp, ingress.limits().timeouts.greeting).await {
            Ok((source, rest)) => {
                peer = source.unwrap_or(real_peer);
                input = rest;
            }
            Err(why) => {
                ingress.log.emit(Event::Error {
                    what: format!("PROXY header from {real_peer} refused: {why}"),
                });
                let _ = tcp.close().await;
                return;
            }
        }
    }
    let slot = match ingress.open_slot(peer) {
        Ok(slot) => slot,
        Err(reply) => {
            ingress.log.metrics().core.connections_refused_total.increment(1);
            // An implicit-TLS client would read the reply as garbage; it is closed either way.
            if listener.config.implicit_tls {
                let _ = tcp.close().await;
            } else {
                let mut stream = Stream::Plain(tcp);
                let mut out = BytesMut::new();
                reply.write_to(&mut out);
                let _ = flush(&mut stream, &mut out, ingress.limits().timeouts.command).await;
                let _ = stream.close().await;
            }
            return;
        }
    };
    ingress.log.emit(Event::Connect { peer });
    run_session(Stream::Plain(tcp), input, peer, ingress.clone(), &listener).await;
    drop(slot);
}

/// Runs the SMTP session (after the PROXY header and the connection limits).
async fn run_session(
    mut stream: Stream,
    mut input: BytesMut,
    peer: IpAddr,
    ingress: Rc<Ingress>,
    listener: &ListenerRuntime,
) {
    let ingress = &ingress;
    let tls = ingress.tls.get();
    let acceptor = tls.acceptor();
    let policy = DirectoryPolicy {
        ingress: ingress.clone(),
        log: ingress.log.clone(),
    };
    let limits = ingress.limits();
    let mut session = Session::new(limits.session.clone(), policy, peer).with_options(listener.options);
    if listener.config.implicit_tls {
        let prefix = std::mem::take(&mut input);
        let shaken = handshake(&mut stream, prefix, &acceptor, limits.timeouts.tls_handshake).await;
        let core = &ingress.log.metrics().core;
        match shaken {
            Ok(()) => core.tls_handshakes_in_total.increment(1),
            Err(_) => {
                core.tls_handshakes_in_failed_total.increment(1);
                return;
            }
        }
        session.tls_started();
    }
    let mut handler = RelayHandler { ingress, peer };
    let _ = drive(
        &mut stream,
        input,
        &mut session,
        &limits.timeouts,
        Some(&acceptor),
        &mut handler,
    )
    .await;
    let _ = stream.close().await;
}

/// Reads a PROXY header off `tcp` within `timeout`: the client address it names (`None`
/// for LOCAL/UNKNOWN) and the bytes that followed it.
async fn read_proxy_header(
    tcp: &mut TcpStream,
    timeout: Duration,
) -> Result<(Option<IpAddr>, BytesMut), String> {
    let deadline = Instant::now() + timeout;
    let mut buf = BytesMut::with_capacity(proxy::HEADER_MAX_BYTES);
    loop {
        match proxy::parse(&buf) {
            Ok(Some((header, used))) => {
                let rest = buf.split_off(used);
                let source = match header {
                    proxy::ProxyHeader::Forwarded { source, .. } => Some(source.ip()),
                    proxy::ProxyHeader::Local => None,
                };
                return Ok((source, rest));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("{e:?}")),
        }
        let start = buf.len();
        if start >= proxy::HEADER_MAX_BYTES {
            return Err("header too long".into());
        }
        buf.resize(proxy::HEADER_MAX_BYTES, 0);
        let left = deadline.saturating_duration_since(Instant::now());
        let read = glommio::timer::timeout(left, async { Ok(tcp.read(&mut buf[start..]).await) }).await;
        let n = match read {
            Ok(Ok(0)) => return Err("closed before the header ended".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        };
        buf.truncate(start + n);
    }
}

/// The relay's answers to the driver: spool messages, check logins.
struct RelayHandler<'a> {
    ingress: &'a Ingress,
    peer: IpAddr,
}

impl Handler<AccountRef> for RelayHandler<'_> {
    async fn message(&mut self, hello: &Hello, txn: Transaction<AccountRef>) -> Result<(), Reply> {
        submit(self.ingress, self.peer, hello, txn).await
    }

    async fn authenticate(&mut self, credentials: Credentials) -> Result<AccountRef, Reply> {
        let username = credentials.username.clone();
        let result = self
            .ingress
            .auth
            .authenticate(&self.ingress.directory(), self.peer, credentials)
            .await;
        if let Err(reply) = &result {
            self.ingress.log.emit(Event::Reject {
                peer: self.peer,
                account: None,
                from: format!("AUTH {username}"),
                reply: reply.to_string(),
            });
        }
        result
    }

    fn stop(&self) -> Option<Stop> {
        Some(self.ingress.stop.clone())
    }

    fn replied(&mut self, reply: &Reply) {
        let core = &self.ingress.log.metrics().core;
        match reply.code / 100 {
            2 | 3 => core.smtp_replies_positive_total.increment(1),
            4 => core.smtp_replies_transient_total.increment(1),
            _ => core.smtp_replies_permanent_total.increment(1),
        }
    }

    fn tls_handshake(&mut self, ok: bool) {
        let core = &self.ingress.log.metrics().core;
        match ok {
            true => core.tls_handshakes_in_total.increment(1),
            false => core.tls_handshakes_in_failed_total.increment(1),
        }
    }
}

/// Checks a finished message, builds it and hands it to its owner; the result is what the
/// client is told.
async fn submit(
    ingress: &Ingress,
    peer: IpAddr,
    hello: &Hello,
    txn: Transaction<AccountRef>,
) -> Result<(), Reply> {
    let reject = |reply: &Reply| {
        ingress.log.emit(Event::Reject {
            peer,
            account: Some(txn.account.id.clone()),
            from: txn.mail_from.clone(),
            reply: reply.to_string(),
        })
    };
    if let Err(reply) = check_header_from(&txn.account, &txn.body) {
        reject(&reply);
        return Err(reply);
    }
    let now_us = crate::observe::log::now_us();
    let id = ingress.ids.borrow_mut().next(now_us);
    let envelope = envelope(id, now_us, peer, hello, &txn);
    let protocol = trace_protocol(hello.protocol, txn.params.smtputf8);
    let message = Message {
        trace: received_header(
            &ingress.hostname,
            &hello.name,
            protocol,
            peer,
            id,
            &txn.rcpts,
            now_us,
        ),
        envelope,
        body: txn.body,
    };
    let owner = ingress.directory().owner(&txn.account);
    let result = ingress.handoff.submit(owner, message).await;
    match &result {
        Ok(()) => ingress.log.emit(Event::Accept {
            msg: id,
            account: txn.account.id.clone(),
            peer,
            from: txn.mail_from.clone(),
            rcpts: txn.rcpts.len(),
            size: txn.body_bytes,
        }),
        Err(reply) => reject(reply),
    }
    result
}

/// The spool envelope of a transaction: addresses, DSN parameters, SMTPUTF8, AUTH user.
fn envelope(
    id: MessageId,
    now_us: u64,
    peer: IpAddr,
    hello: &Hello,
    txn: &Transaction<AccountRef>,
) -> Envelope {
    let rcpts = txn
        .rcpts
        .iter()
        .zip(txn.rcpt_params.iter())
        .map(|(addr, params)| Recipient {
            addr: addr.clone(),
            notify: params.notify,
            orcpt: params.orcpt.clone(),
        })
        .collect();
    Envelope {
        id,
        account: txn.account.id.clone(),
        received_at_ms: now_us / 1000,
        source: peer,
        helo: hello.name.clone(),
        mail_from: txn.mail_from.clone(),
        body_type: txn.params.body,
        rcpts,
        smtputf8: txn.params.smtputf8,
        dsn_return: txn.params.ret,
        dsn_envid: txn.params.envid.clone(),
        auth_user: txn.auth_user.clone(),
    }
}

/// RFC 6531 §3.7.3: a transaction with SMTPUTF8 is recorded as UTF8SMTP (with S and A
/// as RFC 3848 adds them).
fn trace_protocol(protocol: &'static str, smtputf8: bool) -> &'static str {
    match (smtputf8, protocol) {
        (true, "ESMTP") => "UTF8SMTP",
        (true, "ESMTPS") => "UTF8SMTPS",
        (true, "ESMTPA") => "UTF8SMTPA",
        (true, "ESMTPSA") => "UTF8SMTPSA",
        (_, other) => other,
    }
}

/// The `Received:` trace header corerelay prepends (RFC 5321 §4.4), folded over lines.
/// `for <rcpt>` is given only for a single recipient, so one message does not reveal its
/// other recipients.
fn received_header(
    hostname: &str,
    helo: &str,
    protocol: &str,
    peer: IpAddr,
    id: MessageId,
    rcpts: &[String],
    now_us: u64,
) -> Bytes {
    let date = chrono::DateTime::from_timestamp_micros(now_us as i64)
        .map(|t| t.to_rfc2822())
        .unwrap_or_default();
    let helo: String = helo.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    let mut h =
        format!("Received: from {helo} ([{peer}])\r\n\tby {hostname} (corerelay) with {protocol} id {id}");
    if let [rcpt] = rcpts {
        // A UTF-8 address may only appear in a UTF-8 header (RFC 6532); the rest is ASCII.
        h.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    h.push_str(&format!(";\r\n\t{date}\r\n"));
    Bytes::from(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read of `data` into the room, as `read` does it; returns where the room began.
    fn read_into(room: &mut ReadRoom, input: &mut BytesMut, chunk: usize, data: &[u8]) -> *const u8 {
        let start = room.open(input, chunk);
        assert!(input.len() >= start + chunk, "the room holds a whole chunk");
        let at = input[start..].as_ptr();
        input[start..start + data.len()].copy_from_slice(data);
        room.close(input, start + data.len());
        at
    }

    #[test]
    fn read_room_is_reused_after_short_reads_and_the_session_sees_only_what_was_read() {
        let mut room = ReadRoom::default();
        let mut input = BytesMut::new();
        let first = read_into(&mut room, &mut input, 1024, b"EHLO a\r\nMAIL");
        assert_eq!(&input[..], b"EHLO a\r\nMAIL");
        // The session takes the complete line; the next read lands right after the rest.
        let line = input.split_to(8);
        let second = read_into(&mut room, &mut input, 512, b" FROM:<>\r\n");
        assert_eq!(second, first.wrapping_add(12), "the old room, not a new one");
        assert_eq!(&input[..], b"MAIL FROM:<>\r\n");
        assert_eq!(&line[..], b"EHLO a\r\n", "slices taken earlier are untouched");
        // All input taken (or cleared): the room is still the same memory.
        input.clear();
        let third = read_into(&mut room, &mut input, 512, b"RCPT");
        assert_eq!(third, first.wrapping_add(22));
        assert_eq!(&input[..], b"RCPT");
        // A chunk larger than the allocation's rest: a new buffer, the input carried over.
        read_into(&mut room, &mut input, 16 << 10, b" TO:<b@c>\r\n");
        assert_eq!(&input[..], b"RCPT TO:<b@c>\r\n");
        // A read of nothing leaves the input as it was.
        read_into(&mut room, &mut input, 16 << 10, b"");
        assert_eq!(&input[..], b"RCPT TO:<b@c>\r\n");
        // A replaced input does not take the old room.
        let mut other = BytesMut::from(&b"DATA"[..]);
        read_into(&mut room, &mut other, 64, b"\r\n");
        assert_eq!(&other[..], b"DATA\r\n");
    }

    #[test]
    fn received_header_is_folded_and_names_a_single_recipient() {
        let id = MessageId::new(1_700_000_000_000_000, 1, 7);
        let h = received_header(
            "relay.example",
            "client.example",
            "ESMTP",
            "127.0.0.1".parse().unwrap(),
            id,
            &["a@b.example".into()],
            1_700_000_000_000_000,
        );
        let h = std::str::from_utf8(&h).unwrap();
        assert!(h.starts_with(
            "Received: from client.example ([127.0.0.1])\r\n\tby relay.example (corerelay) with ESMTP id "
        ));
        assert!(
            h.contains("\r\n\tfor <a@b.example>;\r\n\tTue, 14 Nov 2023 22:13:20 +0000\r\n"),
            "{h}"
        );
        assert!(h.lines().all(|l| l.len() < 100));
        let h = received_header(
            "r",
            "bad\r\nInjected: x",
            "SMTP",
            "::1".parse().unwrap(),
            id,
            &["a@x".into(), "b@x".into()],
            0,
        );
        let h = std::str::from_utf8(&h).unwrap();
        assert!(!h.contains("for <"));
        assert!(h.contains("from badInjected:x ([::1])"), "{h}");
        assert!(h.contains("with SMTP id"), "{h}");
    }

    #[test]
    fn trace_protocol_names_tls_auth_and_utf8() {
        assert_eq!(trace_protocol("ESMTPSA", true), "UTF8SMTPSA");
        assert_eq!(trace_protocol("ESMTPS", false), "ESMTPS");
        assert_eq!(trace_protocol("SMTP", true), "SMTP");
    }
}
