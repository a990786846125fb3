//! The driver of one client connection: the thin I/O shell around the sans-IO
//! [`Session`]. It reads into one growing buffer whose frozen slices become the message's
//! body chunks, writes replies in batches (so a pipelined group of commands gets its replies
//! in one write), applies the read timeouts, and hands each finished transaction to a
//! callback whose result is the client's reply. The relay's callback builds a [`Message`]
//! and hands it to its owner core; `corerelay sink` uses the same driver.

use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{DirectoryPolicy, Ingress};
use crate::account::{AccountRef, check_header_from};
use crate::message::{Envelope, Message, MessageId, Recipient};
use crate::observe::Event;
use crate::smtp::reply::{Reply, catalogue};
use crate::smtp::server::{Phase, Policy, Session, Step, Transaction};

/// Bytes asked of the kernel per read; the buffer grows in steps of this size.
const READ_CHUNK_BYTES: usize = 16 << 10;

/// Who the client said it is, for the trace header.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The EHLO/HELO name.
    pub name: String,
    /// `ESMTP` or `SMTP` (RFC 3848).
    pub protocol: &'static str,
}

/// How long a client may take, by session phase.
#[derive(Debug, Clone, Copy)]
pub struct ReadTimeouts {
    /// From the moment the relay waits for a command to the end of its line.
    pub command: Duration,
    /// For each read while the client sends DATA.
    pub data: Duration,
}

/// Runs `session` over `stream` until the client quits, a limit closes the session, a read
/// times out (`421 4.4.2`) or the client goes away. `on_message` decides each finished
/// transaction; it gets who the client said it is and the transaction.
pub async fn drive<P: Policy>(
    stream: &mut TcpStream,
    session: &mut Session<P>,
    timeouts: ReadTimeouts,
    mut on_message: impl AsyncFnMut(&Hello, Transaction<P::Account>) -> Result<(), Reply>,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::with_capacity(1024);
    session.greeting().write_to(&mut output);
    // When the relay started waiting for the command being read: the command timeout runs
    // from there to the end of the line, so a client trickling a byte at a time (slowloris)
    // cannot hold a connection beyond it. In DATA the timeout applies to each read, as
    // RFC 5321 §4.5.3.2.5 sets it per data block.
    let mut command_since: Option<Instant> = None;
    loop {
        match session.step(&mut input) {
            Step::Reply(reply) => {
                command_since = None;
                reply.write_to(&mut output)
            }
            Step::NeedMore => {
                flush(stream, &mut output).await?;
                let timeout = match session.phase() {
                    Phase::Data => {
                        command_since = None;
                        timeouts.data
                    }
                    _ => {
                        let since = *command_since.get_or_insert_with(Instant::now);
                        timeouts.command.saturating_sub(since.elapsed())
                    }
                };
                match read(stream, &mut input, timeout).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        catalogue::TIMEOUT.write_to(&mut output);
                        return flush(stream, &mut output).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Step::Message(txn) => {
                command_since = None;
                let hello = Hello {
                    name: session.helo().unwrap_or_default().to_string(),
                    protocol: session.protocol(),
                };
                let result = on_message(&hello, txn).await;
                session.message_done(result).write_to(&mut output);
            }
            Step::Close(reply) => {
                reply.write_to(&mut output);
                return flush(stream, &mut output).await;
            }
        }
    }
}

/// Reads more input after what `input` holds, waiting at most `timeout`.
async fn read(stream: &mut TcpStream, input: &mut BytesMut, timeout: Duration) -> io::Result<usize> {
    if timeout.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let start = input.len();
    input.resize(start + READ_CHUNK_BYTES, 0);
    stream.set_read_timeout(Some(timeout))?;
    let result = stream.read(&mut input[start..]).await;
    input.truncate(start + *result.as_ref().unwrap_or(&0));
    result
}

async fn flush(stream: &mut TcpStream, output: &mut BytesMut) -> io::Result<()> {
    if !output.is_empty() {
        stream.write_all(output).await?;
        output.clear();
    }
    Ok(())
}

/// Serves one relay client on this core.
pub async fn serve(mut stream: TcpStream, ingress: Rc<Ingress>) {
    let Ok(peer) = stream.peer_addr() else { return };
    let peer = peer.ip();
    ingress.open_connections.set(ingress.open_connections.get() + 1);
    ingress.log.emit(Event::Connect { peer });
    let policy = DirectoryPolicy {
        directory: ingress.directory.clone(),
        log: ingress.log.clone(),
    };
    let mut session = Session::new(ingress.session.clone(), policy, peer);
    let timeouts = ReadTimeouts {
        command: ingress.smtp.command_timeout,
        data: ingress.smtp.data_timeout,
    };
    let _ = drive(&mut stream, &mut session, timeouts, async |hello, txn| {
        submit(&ingress, peer, hello, txn).await
    })
    .await;
    let _ = stream.close().await;
    ingress.open_connections.set(ingress.open_connections.get() - 1);
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
    let now_us = now_us();
    let id = ingress.ids.borrow_mut().next(now_us);
    let envelope = Envelope {
        id,
        account: txn.account.id.clone(),
        received_at_ms: now_us / 1000,
        source: peer,
        helo: hello.name.clone(),
        mail_from: txn.mail_from.clone(),
        body_type: txn.params.body,
        rcpts: txn.rcpts.iter().map(|r| Recipient { addr: r.clone() }).collect(),
    };
    let message = Message {
        trace: received_header(&ingress.hostname, hello, peer, id, &txn.rcpts, now_us),
        envelope,
        body: txn.body,
    };
    let owner = ingress.directory.owner(&txn.account);
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

/// The `Received:` trace header corerelay prepends (RFC 5321 §4.4), folded over lines.
/// `for <rcpt>` is given only for a single recipient, so one message does not reveal its
/// other recipients.
fn received_header(
    hostname: &str,
    hello: &Hello,
    peer: IpAddr,
    id: MessageId,
    rcpts: &[String],
    now_us: u64,
) -> Bytes {
    let date = chrono::DateTime::from_timestamp_micros(now_us as i64)
        .map(|t| t.to_rfc2822())
        .unwrap_or_default();
    let helo: String = hello
        .name
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let protocol = hello.protocol;
    let mut h =
        format!("Received: from {helo} ([{peer}])\r\n\tby {hostname} (corerelay) with {protocol} id {id}");
    if let [rcpt] = rcpts {
        h.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    h.push_str(&format!(";\r\n\t{date}\r\n"));
    Bytes::from(h)
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_header_is_folded_and_names_a_single_recipient() {
        let id = MessageId::new(1_700_000_000_000_000, 1, 7);
        let ehlo = Hello {
            name: "client.example".into(),
            protocol: "ESMTP",
        };
        let h = received_header(
            "relay.example",
            &ehlo,
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
        let helo = Hello {
            name: "bad\r\nInjected: x".into(),
            protocol: "SMTP",
        };
        let h = received_header(
            "r",
            &helo,
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
}
