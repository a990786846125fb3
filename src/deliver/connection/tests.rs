//! The connection against small scripted SMTP servers on 127.0.0.1, in the same glommio
//! executor. Each server records every byte it heard, so the tests assert the client's
//! side of the dialogue byte for byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::LocalExecutorBuilder;
use glommio::Task;
use glommio::net::TcpListener;

use super::*;
use crate::deliver::outcome::{Outcome, Remote, classify};
use crate::message::BodyType;

/// One move of a scripted server.
enum Step {
    /// Write these bytes.
    Say(Vec<u8>),
    /// Read exactly this many bytes (they should be these; the test compares).
    Hear(Vec<u8>),
    /// Nothing may arrive for a moment: proves the client waits for a reply.
    Silence,
    Sleep(Duration),
    /// Close the connection.
    Close,
}

fn say(s: &str) -> Step {
    Step::Say(s.as_bytes().to_vec())
}

fn hear(s: &str) -> Step {
    Step::Hear(s.as_bytes().to_vec())
}

/// What the client should have sent: every `Hear` in order.
fn expected(script: &[Step]) -> String {
    let heard: Vec<u8> = script
        .iter()
        .flat_map(|s| match s {
            Step::Hear(b) => b.clone(),
            _ => Vec::new(),
        })
        .collect();
    String::from_utf8_lossy(&heard).into_owned()
}

/// Serves one connection by the script; the task's output is everything it heard.
fn serve(script: Vec<Step>) -> (SocketAddr, Task<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let task = glommio::spawn_local(async move {
        let mut stream = listener.accept().await.unwrap();
        let mut heard = Vec::new();
        for step in script {
            match step {
                Step::Say(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Step::Hear(bytes) => {
                    let mut buf = vec![0; bytes.len()];
                    let mut got = 0;
                    while got < buf.len() {
                        match stream.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                    heard.extend_from_slice(&buf[..got]);
                }
                Step::Silence => {
                    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                    let mut buf = [0; 512];
                    if let Ok(n) = stream.read(&mut buf).await {
                        heard.extend_from_slice(b"<unexpected:");
                        heard.extend_from_slice(&buf[..n]);
                        heard.push(b'>');
                    }
                    stream.set_read_timeout(None).unwrap();
                }
                Step::Sleep(d) => glommio::timer::sleep(d).await,
                Step::Close => break,
            }
        }
        String::from_utf8_lossy(&heard).into_owned()
    });
    (addr, task)
}

fn run<Fut>(test: impl FnOnce() -> Fut + Send + 'static)
where
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .io_memory(512 << 10)
        .spawn(test)
        .unwrap()
        .join()
        .unwrap();
}

fn timeouts(each: Duration) -> Timeouts {
    Timeouts {
        connect: each,
        greeting: each,
        command: each,
        data: each,
    }
}

const SECOND: Duration = Duration::from_secs(1);
const SHORT: Duration = Duration::from_millis(200);

fn codes(result: &TransactionResult) -> (u16, Vec<Option<u16>>, Option<u16>) {
    let rcpts = result.rcpts.iter().map(|r| r.as_ref().map(|r| r.code)).collect();
    (result.mail.code, rcpts, result.data.as_ref().map(|r| r.code))
}

fn chunks(parts: &[&'static str]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect()
}

#[test]
fn pipelining_server_gets_one_batch_and_replies_split_across_reads() {
    run(|| async {
        let script = vec![
            say("22"),
            Step::Sleep(Duration::from_millis(20)),
            say("0 mx.test ESMTP\r\n"),
            hear("EHLO relay.test\r\n"),
            say("250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10"),
            Step::Sleep(Duration::from_millis(20)),
            say("000\r\n250 8BITMIME\r\n"),
            hear(
                "MAIL FROM:<s@a.test> SIZE=19 BODY=8BITMIME\r\nRCPT TO:<r1@b.test>\r\n\
                 RCPT TO:<r2@b.test>\r\nDATA\r\n",
            ),
            say("250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n"),
            hear("Subject: \u{e9}\r\n\r\nhi\r\n.\r\n"),
            say("250 2.0.0 queued\r\n"),
            hear("QUIT\r\n"),
            say("221 bye\r\n"),
        ];
        let want = expected(&script);
        let (addr, server) = serve(script);
        let mut conn = Connection::open(addr, "relay.test", &timeouts(SECOND))
            .await
            .unwrap();
        assert!(conn.capabilities().pipelining && conn.capabilities().eightbitmime);
        assert_eq!(conn.capabilities().size, Some(10000));
        assert_eq!(conn.peer(), addr);
        let body = chunks(&["Subject: \u{e9}\r\n", "\r\nhi\r\n"]);
        let result = conn
            .send(
                "s@a.test",
                &["r1@b.test", "r2@b.test"],
                &body,
                BodyType::EightBitMime,
            )
            .await;
        let remote = Remote {
            host: "mx.test",
            addr,
        };
        let outcomes = classify(&result, 2, remote);
        assert!(matches!(outcomes[0], Outcome::Failed(_)), "{outcomes:?}");
        assert_eq!(outcomes[1], Outcome::Delivered("250 2.0.0 queued".into()));
        assert_eq!(conn.messages_sent(), 1);
        conn.quit().await;
        assert_eq!(server.await, want);
    });
}

#[test]
fn non_pipelining_server_gets_one_command_per_round_trip() {
    run(|| async {
        let script = vec![
            say("220 mx.test\r\n"),
            hear("EHLO relay.test\r\n"),
            say("250-mx.test\r\n250 SIZE\r\n"),
            hear("MAIL FROM:<> SIZE=4\r\n"),
            Step::Silence,
            say("250 ok\r\n"),
            hear("RCPT TO:<r@b.test>\r\n"),
            Step::Silence,
            say("250 ok\r\n"),
            hear("DATA\r\n"),
            Step::Silence,
            say("354 go\r\n"),
            hear("hi\r\n.\r\n"),
            say("250 ok\r\n"),
        ];
        let want = expected(&script);
        let (addr, server) = serve(script);
        let mut conn = Connection::open(addr, "relay.test", &timeouts(SECOND))
            .await
            .unwrap();
        let result = conn
            .send("", &["r@b.test"], &chunks(&["hi\r\n"]), BodyType::SevenBit)
            .await
            .unwrap();
        assert_eq!(codes(&result), (250, vec![Some(250)], Some(250)));
        assert!(!result.reset_needed);
        drop(conn);
        assert_eq!(server.await, want);
    });
}

#[test]
fn helo_fallback_and_eight_bit_handling_without_8bitmime() {
    run(|| async {
        let script = vec![
            say("220 old.test\r\n"),
            hear("EHLO relay.test\r\n"),
            say("502 5.5.1 what?\r\n"),
            hear("HELO relay.test\r\n"),
            say("250 old.test\r\n"),
            // Declared 8-bit but plain ASCII: sent as 7-bit, without BODY=.
            hear("MAIL FROM:<s@a.test>\r\n"),
            say("250 ok\r\n"),
            hear("RCPT TO:<r@b.test>\r\n"),
            say("250 ok\r\n"),
            hear("DATA\r\n"),
            say("354 go\r\n"),
            hear("ascii\r\n.\r\n"),
            say("250 ok\r\n"),
            // The 8-bit message is never offered: QUIT is the next thing heard.
            hear("QUIT\r\n"),
            say("221 bye\r\n"),
        ];
        let want = expected(&script);
        let (addr, server) = serve(script);
        let mut conn = Connection::open(addr, "relay.test", &timeouts(SECOND))
            .await
            .unwrap();
        assert_eq!(conn.capabilities(), &Capabilities::default());
        let ascii = conn
            .send(
                "s@a.test",
                &["r@b.test"],
                &chunks(&["ascii\r\n"]),
                BodyType::EightBitMime,
            )
            .await;
        assert_eq!(codes(&ascii.unwrap()).2, Some(250));
        let latin = conn
            .send(
                "s@a.test",
                &["r@b.test"],
                &chunks(&["caf\u{e9}\r\n"]),
                BodyType::EightBitMime,
            )
            .await;
        assert!(
            matches!(latin, Err(AttemptError::Unsendable(Unsendable::EightBit))),
            "{latin:?}"
        );
        let remote = Remote {
            host: "old.test",
            addr,
        };
        assert!(matches!(classify(&latin, 1, remote)[0], Outcome::Failed(_)));
        assert!(conn.is_usable());
        conn.quit().await;
        assert_eq!(server.await, want);
    });
}

#[test]
fn greeting_554_is_refused_and_quit_is_sent() {
    run(|| async {
        let script = vec![
            say("554 5.7.1 no service for you\r\n"),
            hear("QUIT\r\n"),
            say("221 bye\r\n"),
        ];
        let want = expected(&script);
        let (addr, server) = serve(script);
        let result = Connection::open(addr, "relay.test", &timeouts(SECOND)).await;
        match result {
            Err(AttemptError::Refused(Phase::Greeting, reply)) => assert_eq!(reply.code, 554),
            other => panic!("expected a refused greeting, got {:?}", other.err()),
        }
        assert_eq!(server.await, want);
    });
}

#[test]
fn server_closing_mid_data_interrupts_and_keeps_decided_recipients() {
    run(|| async {
        let script = vec![
            say("220 mx.test\r\n"),
            hear("EHLO relay.test\r\n"),
            say("250-mx.test\r\n250 PIPELINING\r\n"),
            hear("MAIL FROM:<s@a.test>\r\nRCPT TO:<r1@b.test>\r\nRCPT TO:<r2@b.test>\r\nDATA\r\n"),
            say("250 ok\r\n550 5.1.1 gone\r\n250 ok\r\n354 go\r\n"),
            hear("first li"),
            Step::Close,
        ];
        let (addr, server) = serve(script);
        let mut conn = Connection::open(addr, "relay.test", &timeouts(SECOND))
            .await
            .unwrap();
        let body = chunks(&["first line\r\n", "second line\r\n"]);
        let result = conn
            .send("s@a.test", &["r1@b.test", "r2@b.test"], &body, BodyType::SevenBit)
            .await;
        match &result {
            Err(AttemptError::Interrupted { cause, .. }) => {
                assert!(
                    matches!(**cause, AttemptError::Io(Phase::DataEnd, _)),
                    "{cause:?}"
                )
            }
            other => panic!("expected an interrupted attempt, got {other:?}"),
        }
        let outcomes = classify(
            &result,
            2,
            Remote {
                host: "mx.test",
                addr,
            },
        );
        assert!(matches!(outcomes[0], Outcome::Failed(_)), "{outcomes:?}");
        assert!(matches!(outcomes[1], Outcome::Deferred(_)), "{outcomes:?}");
        assert!(!conn.is_usable());
        assert_eq!(
            server.await,
            "EHLO relay.test\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r1@b.test>\r\n\
             RCPT TO:<r2@b.test>\r\nDATA\r\nfirst li"
        );
    });
}

#[test]
fn silent_servers_time_out_in_the_right_phase() {
    run(|| async {
        let (addr, _server) = serve(vec![Step::Sleep(Duration::from_secs(5))]);
        let started = Instant::now();
        let result = Connection::open(addr, "relay.test", &timeouts(SHORT)).await;
        assert!(
            matches!(result, Err(AttemptError::Timeout(Phase::Greeting))),
            "{:?}",
            result.err()
        );
        assert!(started.elapsed() < Duration::from_secs(2));

        let (addr, _server) = serve(vec![
            say("220 mx.test\r\n"),
            hear("EHLO relay.test\r\n"),
            say("250 mx.test\r\n"),
            hear("MAIL FROM:<s@a.test>\r\n"),
            say("250 ok\r\n"),
            hear("RCPT TO:<r@b.test>\r\n"),
            say("250 ok\r\n"),
            hear("DATA\r\n"),
            say("354 go\r\n"),
            Step::Sleep(Duration::from_secs(5)),
        ]);
        let mut conn = Connection::open(addr, "relay.test", &timeouts(SHORT))
            .await
            .unwrap();
        let result = conn
            .send("s@a.test", &["r@b.test"], &chunks(&["x\r\n"]), BodyType::SevenBit)
            .await;
        match result {
            Err(AttemptError::Interrupted { cause, .. }) => {
                assert!(
                    matches!(*cause, AttemptError::Timeout(Phase::DataEnd)),
                    "{cause:?}"
                )
            }
            other => panic!("expected a timeout at end of data, got {other:?}"),
        }
        assert!(!conn.is_usable());
    });
}

#[test]
fn oversized_reply_line_is_a_protocol_error() {
    run(|| async {
        let long = format!("220-{}", "x".repeat(3000));
        let (addr, _server) = serve(vec![say(&long), Step::Sleep(Duration::from_secs(5))]);
        let result = Connection::open(addr, "relay.test", &timeouts(SECOND)).await;
        assert!(
            matches!(result, Err(AttemptError::Protocol(Phase::Greeting, _))),
            "{:?}",
            result.err()
        );
    });
}

#[test]
fn dot_stuffing_is_byte_exact_at_the_server_across_chunks_and_buffer_flushes() {
    run(|| async {
        // A body larger than the send buffer, every line starting with a dot.
        let lines: String = (0..40_000).map(|i| format!(".line {i}\r\n")).collect();
        let stuffed = lines.replace("\r\n.", "\r\n..");
        let script = vec![
            say("220 mx.test\r\n"),
            hear("EHLO relay.test\r\n"),
            say("250 mx.test\r\n"),
            hear("MAIL FROM:<s@a.test>\r\n"),
            say("250 ok\r\n"),
            hear("RCPT TO:<r@b.test>\r\n"),
            say("250 ok\r\n"),
            hear("DATA\r\n"),
            say("354 go\r\n"),
            hear("Subject: dots\r\n\r\n..leading\r\n..\r\nmiddle.\r\n...two\r\nno newline at end\r\n.\r\n"),
            say("250 ok\r\n"),
            hear("MAIL FROM:<s@a.test>\r\n"),
            say("250 ok\r\n"),
            hear("RCPT TO:<r@b.test>\r\n"),
            say("250 ok\r\n"),
            hear("DATA\r\n"),
            say("354 go\r\n"),
            Step::Hear(format!(".{stuffed}.\r\n").into_bytes()),
            say("250 ok\r\n"),
        ];
        let want = expected(&script);
        let (addr, server) = serve(script);
        let mut conn = Connection::open(addr, "relay.test", &timeouts(SECOND))
            .await
            .unwrap();
        let split = chunks(&[
            "Subject: dots\r\n\r\n.leading\r",
            "\n",
            ".",
            "\r\nmiddle.\r\n..two\r\nno newline at end",
        ]);
        let first = conn
            .send("s@a.test", &["r@b.test"], &split, BodyType::SevenBit)
            .await
            .unwrap();
        assert_eq!(codes(&first).2, Some(250));
        assert!(lines.len() > 4 * SEND_BUFFER_BYTES);
        let big = [Bytes::from(lines)];
        let second = conn
            .send("s@a.test", &["r@b.test"], &big, BodyType::SevenBit)
            .await
            .unwrap();
        assert_eq!(codes(&second).2, Some(250));
        drop(conn);
        assert_eq!(server.await, want);
    });
}

#[test]
fn connection_is_reused_and_reset_after_an_incomplete_transaction() {
    run(|| async {
        let tx_ok = |rcpt: &str| {
            vec![
                hear("MAIL FROM:<s@a.test>\r\n"),
                say("250 ok\r\n"),
                hear(&format!("RCPT TO:<{rcpt}>\r\n")),
                say("250 ok\r\n"),
                hear("DATA\r\n"),
                say("354 go\r\n"),
                hear("m\r\n.\r\n"),
                say("250 ok\r\n"),
            ]
        };
        let mut script = vec![
            say("220 mx.test\r\n"),
            hear("EHLO relay.test\r\n"),
            say("250 mx.test\r\n"),
        ];
        script.extend(tx_ok("one@b.test"));
        script.extend(tx_ok("two@b.test"));
        script.extend([
            hear("MAIL FROM:<s@a.test>\r\n"),
            say("250 ok\r\n"),
            hear("RCPT TO:<gone@b.test>\r\n"),
            say("550 5.1.1 gone\r\n"),
            // The client resets before the next MAIL because the last one is still open.
            hear("RSET\r\n"),
            say("250 ok\r\n"),
        ]);
        script.extend(tx_ok("three@b.test"));
        script.extend([
            hear("RSET\r\n"),
            say("250 ok\r\n"),
            hear("MAIL FROM:<s@a.test>\r\n"),
            say("421 4.3.2 shutting down\r\n"),
        ]);
        let want = expected(&script);
        let (addr, server) = serve(script);
        let mut conn = Connection::open(addr, "relay.test", &timeouts(SECOND))
            .await
            .unwrap();
        let body = chunks(&["m\r\n"]);
        for rcpt in ["one@b.test", "two@b.test"] {
            let result = conn
                .send("s@a.test", &[rcpt], &body, BodyType::SevenBit)
                .await
                .unwrap();
            assert_eq!(codes(&result), (250, vec![Some(250)], Some(250)));
        }
        let refused = conn
            .send("s@a.test", &["gone@b.test"], &body, BodyType::SevenBit)
            .await
            .unwrap();
        assert_eq!(codes(&refused), (250, vec![Some(550)], None));
        assert!(refused.reset_needed);
        let third = conn
            .send("s@a.test", &["three@b.test"], &body, BodyType::SevenBit)
            .await
            .unwrap();
        assert_eq!(codes(&third).2, Some(250));
        conn.reset().await.unwrap();
        let closing = conn
            .send("s@a.test", &["four@b.test"], &body, BodyType::SevenBit)
            .await
            .unwrap();
        assert!(closing.server_closing());
        assert!(!conn.is_usable());
        assert_eq!(conn.messages_sent(), 5);
        let after = conn
            .send("s@a.test", &["five@b.test"], &body, BodyType::SevenBit)
            .await;
        assert!(
            matches!(after, Err(AttemptError::Io(Phase::Mail, _))),
            "{after:?}"
        );
        conn.quit().await;
        assert_eq!(server.await, want);
    });
}

#[test]
fn connect_refused_is_a_connect_error() {
    run(|| async {
        // Bind then drop a listener: nothing listens on that port any more.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let result = Connection::open(addr, "relay.test", &timeouts(SECOND)).await;
        assert!(
            matches!(result, Err(AttemptError::Connect(_))),
            "{:?}",
            result.err()
        );
    });
}

/// A writer that takes at most `per_call` bytes per call, across buffer boundaries.
struct Trickle {
    got: Vec<u8>,
    per_call: usize,
    calls: usize,
}

impl futures_lite::AsyncWrite for Trickle {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.calls += 1;
        let mut room = this.per_call;
        for b in bufs {
            let take = b.len().min(room);
            this.got.extend_from_slice(&b[..take]);
            room -= take;
        }
        std::task::Poll::Ready(Ok(this.per_call - room))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[test]
fn a_vectored_flight_is_written_whole_however_little_each_call_takes() {
    let pieces: [&[u8]; 4] = [
        b"MAIL FROM:<a@b>\r\nBDAT 11 LAST\r\n",
        b"",
        b"Subject: x\r\n",
        b"\r\nhi",
    ];
    let whole: Vec<u8> = pieces.concat();
    for per_call in [1, 3, 7, whole.len(), whole.len() + 10] {
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut w = Trickle {
            got: Vec::new(),
            per_call,
            calls: 0,
        };
        futures_lite::future::block_on(write_all_vectored(&mut w, &mut slices)).unwrap();
        assert_eq!(w.got, whole, "{per_call} bytes per call");
        assert_eq!(
            w.calls,
            whole.len().div_ceil(per_call),
            "{per_call} bytes per call"
        );
    }
    // A writer that takes nothing is an error, not a loop.
    let mut slices = [IoSlice::new(b"x")];
    let mut w = Trickle {
        got: Vec::new(),
        per_call: 0,
        calls: 0,
    };
    let e = futures_lite::future::block_on(write_all_vectored(&mut w, &mut slices)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WriteZero);
}
