//! The engine on an injected clock: a message that is always deferred is retried exactly
//! on the configured schedule, then expires; the remote and the spool are real.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::LocalExecutorBuilder;
use glommio::net::{TcpListener, TcpStream};

use super::*;
use crate::deliver::clock::ManualClock;
use crate::message::{BodyType, Recipient};

const T0_MS: u64 = 1_700_000_000_000;

/// A remote that answers every RCPT with 451 and counts the RCPTs it saw.
fn always_busy() -> (SocketAddr, Rc<Cell<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let rcpts = Rc::new(Cell::new(0));
    let seen = rcpts.clone();
    glommio::spawn_local(async move {
        while let Ok(stream) = listener.accept().await {
            let seen = seen.clone();
            glommio::spawn_local(async move { busy_session(stream, &seen).await }).detach();
        }
    })
    .detach();
    (addr, rcpts)
}

async fn busy_session(mut stream: TcpStream, rcpts: &Cell<usize>) {
    let mut input = Vec::new();
    if stream.write_all(b"220 busy.test ESMTP\r\n").await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => input.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let line: Vec<u8> = input.drain(..end + 2).collect();
        let verb = String::from_utf8_lossy(&line[..4.min(line.len())]).to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-busy.test\r\n250 PIPELINING\r\n",
            "RCPT" => {
                rcpts.set(rcpts.get() + 1);
                b"451 4.2.0 busy, try later\r\n"
            }
            "QUIT" => {
                let _ = stream.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"250 ok\r\n",
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

fn config(dir: &std::path::Path, smarthost: SocketAddr) -> Config {
    config_with(dir, smarthost, "")
}

fn config_with(dir: &std::path::Path, smarthost: SocketAddr, extra: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[server]
hostname = "relay.test"
[spool]
dir = "{}"
segment_max_bytes = 1048576
[delivery]
smarthost = "{smarthost}"
dns_servers = ["127.0.0.1:9"]
retry_schedule_ms = [60000, 300000, 900000]
message_max_age_ms = 3600000
idle_connection_ms = 50
connect_timeout_ms = 1000
{extra}
"#,
        dir.display()
    ))
    .unwrap()
}

/// Polls `f` in real time until it holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

fn message(id: MessageId, mail_from: &str) -> Message {
    Message {
        envelope: Envelope {
            id,
            account: "local".into(),
            received_at_ms: T0_MS,
            source: "127.0.0.1".parse().unwrap(),
            helo: "client.test".into(),
            mail_from: mail_from.into(),
            body_type: BodyType::SevenBit,
            rcpts: vec![Recipient {
                addr: "r@dest.example".into(),
                ..Recipient::default()
            }],
            smtputf8: false,
            dsn_return: None,
            dsn_envid: None,
            auth_user: None,
        },
        trace: Bytes::from_static(b"Received: by relay.test\r\n"),
        body: vec![Bytes::from_static(b"Subject: retry\r\n\r\nhi\r\n")],
    }
}

#[test]
fn retries_follow_the_schedule_on_the_injected_clock_then_expire() {
    LocalExecutorBuilder::default()
        .io_memory(512 << 10)
        .spawn(|| async {
            let dir = tempfile::tempdir().unwrap();
            let (remote, rcpts) = always_busy();
            let config = config(dir.path(), remote);
            let (spool, _, _) = Spool::open(&config.spool, 0, 1).await.unwrap();
            let resolver =
                Resolver::new(&config.delivery.dns_servers, Duration::from_millis(100), 1).unwrap();
            let (log, _drain) = Log::new(0, 4096);
            let clock = Rc::new(ManualClock::new(T0_MS));
            let engine =
                Deliverer::with_clock(&config, 0, spool.clone(), resolver, log, clock.clone()).unwrap();
            engine.start();

            let id = MessageId::new(T0_MS * 1000, 0, 1);
            // The null sender: no bounce, so only this message is in the queue.
            let message = message(id, "");
            spool.append(&message).await.unwrap();
            engine.enqueue(message);

            // After each attempt: when the next one is due (seconds after accept).
            let mut due_after_s = Vec::new();
            for attempt in 1.. {
                until("the attempt", || {
                    engine.attempts(id).is_none_or(|n| n >= attempt) && engine.next_retry().1 > 0
                        || engine.queued() == 0
                })
                .await;
                if engine.queued() == 0 {
                    break;
                }
                let next = engine.next_retry().0.unwrap();
                due_after_s.push((next - T0_MS) / 1000);
                // Nothing happens before the retry is due, however long we wait in real time.
                glommio::timer::sleep(SCHEDULER_TICK + Duration::from_millis(50)).await;
                assert_eq!(engine.attempts(id), Some(attempt));
                clock.set(next);
            }
            // 1 min, 5 min, 15 min, then 15 min repeating, the last moved to the 1 h expiry.
            assert_eq!(due_after_s, [60, 360, 1260, 2160, 3060, 3600]);
            assert_eq!(rcpts.get(), 7, "one RCPT per attempt");
            until("the Done record", || spool.stats().live_messages == 0).await;
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn one_delay_notice_goes_out_once_the_message_is_older_than_the_threshold() {
    LocalExecutorBuilder::default()
        .io_memory(512 << 10)
        .spawn(|| async {
            let dir = tempfile::tempdir().unwrap();
            let (remote, _) = always_busy();
            let extra = "[bounce]\ndelay_notification_after_ms = 600000";
            let config = config_with(dir.path(), remote, extra);
            let (spool, _, _) = Spool::open(&config.spool, 0, 1).await.unwrap();
            let resolver =
                Resolver::new(&config.delivery.dns_servers, Duration::from_millis(100), 1).unwrap();
            let (log, _drain) = Log::new(0, 4096);
            let clock = Rc::new(ManualClock::new(T0_MS));
            let engine =
                Deliverer::with_clock(&config, 0, spool.clone(), resolver, log, clock.clone()).unwrap();
            engine.start();
            let id = MessageId::new(T0_MS * 1000, 0, 1);
            let original = message(id, "sender@shop.example");
            spool.append(&original).await.unwrap();
            engine.enqueue(original);
            // Attempts at 0, 60, 360 s: younger than 10 minutes, no notice.
            for (attempt, next_s) in [(1, 60), (2, 360), (3, 1260)] {
                until("the attempt", || {
                    engine.attempts(id) == Some(attempt) && engine.next_retry().1 > 0
                })
                .await;
                assert_eq!(engine.queued(), 1, "no notice after attempt {attempt}");
                assert_eq!(engine.next_retry().0, Some(T0_MS + next_s * 1000));
                clock.set(T0_MS + next_s * 1000);
            }
            // The attempt at 1260 s is the first to end past 600 s: one notice, a new
            // message from the null sender in the same queue.
            until("the notice", || engine.queued() == 2).await;
            until("attempt 4", || engine.attempts(id) == Some(4)).await;
            clock.set(T0_MS + 2160 * 1000);
            until("attempt 5", || engine.attempts(id) == Some(5)).await;
            glommio::timer::sleep(SCHEDULER_TICK).await;
            assert_eq!(engine.queued(), 2, "the notice is sent once");
        })
        .unwrap()
        .join()
        .unwrap();
}
