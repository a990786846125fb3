//! Broken peers (issue 9): a remote MX that stalls without a greeting, greets with garbage,
//! sends an endless or oversized reply, or drops the connection in the middle of DATA; and a
//! nameserver that never answers. Each case must end in a deferral with a clear reason —
//! never a failure, a stuck queue or a crash — and the message must be delivered once the
//! peer behaves (a real sink on the same port, a DNS server that answers).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::dns::TestDns;
use crate::support::process::{self, RelayConfig, events, maildir_messages, wait_for};
use crate::support::smtp::Client;

/// How a broken MX misbehaves on every connection.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Accepts and never says a word.
    Tarpit,
    /// Greets with something that is not an SMTP reply.
    GarbageGreeting,
    /// A greeting whose continuation lines never end.
    EndlessReply,
    /// A reply line far past any limit, without its end.
    OversizedLine,
    /// Takes the transaction up to the body, then hangs up.
    DropMidData,
}

/// A misbehaving MX on a port, until dropped.
struct BrokenMx {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BrokenMx {
    fn start(port: u16, how: Misbehaviour) -> BrokenMx {
        // The sink that had the port may leave half-closed sockets behind for a moment.
        let listener = wait_for("the port to be free", || {
            TcpListener::bind(("127.0.0.1", port)).ok()
        });
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        if let Some(s) = misbehave(stream, how) {
                            held.push(s);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BrokenMx {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BrokenMx {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Plays one connection; returns the stream when it is to be held open (a tarpit).
fn misbehave(mut s: TcpStream, how: Misbehaviour) -> Option<TcpStream> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match how {
        Misbehaviour::Tarpit => return Some(s),
        Misbehaviour::GarbageGreeting => {
            let _ = s.write_all(b"HELLO THERE, I AM NOT SMTP\r\n");
        }
        Misbehaviour::EndlessReply => {
            let line = b"220-still greeting you\r\n";
            for _ in 0..100_000 {
                if s.write_all(line).is_err() {
                    break;
                }
            }
        }
        Misbehaviour::OversizedLine => {
            let _ = s.write_all(b"220 ");
            let _ = s.write_all(&vec![b'x'; 1 << 20]);
        }
        Misbehaviour::DropMidData => {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let _ = s.write_all(b"220 broken.test ESMTP\r\n");
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.to_ascii_uppercase();
                let reply: &[u8] = if cmd.starts_with("EHLO") {
                    b"250-broken.test\r\n250 8BITMIME\r\n"
                } else if cmd.starts_with("DATA") {
                    let _ = s.write_all(b"354 go ahead\r\n");
                    // Read a little of the body, then hang up.
                    line.clear();
                    let _ = r.read_line(&mut line);
                    break;
                } else {
                    b"250 ok\r\n"
                };
                let _ = s.write_all(reply);
            }
        }
    }
    None
}

fn config(dir: &Path, smarthost: &str, dns: &str) -> String {
    RelayConfig::new(dir, 1)
        .section(&format!(
            r#"
[delivery]
{smarthost}
dns_servers = ["{dns}"]
dns_timeout_ms = 300
dns_attempts_count = 1
retry_schedule_ms = [300]
connect_timeout_ms = 1000
greeting_timeout_ms = 500
command_timeout_ms = 500
data_timeout_ms = 1000
idle_connection_ms = 100
[[accounts]]
id = "local"
networks = ["127.0.0.0/8"]
sender_domains = ["*"]
"#
        ))
        .build()
}

fn send(addr: std::net::SocketAddr, subject: &str) {
    let (mut c, _) = Client::connect(addr);
    c.cmd("EHLO client.test");
    let body = format!("From: <a@shop.example>\r\nSubject: {subject}\r\n\r\nbody\r\n");
    assert!(
        c.send_mail("a@shop.example", &["r@dest.example"], &body)
            .starts_with("250")
    );
    c.cmd("QUIT");
}

#[test]
fn a_misbehaving_mx_defers_and_the_message_goes_once_it_behaves() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let port = process::free_port();
    let dns = TestDns::start();
    let smarthost = format!("smarthost = \"127.0.0.1:{port}\"");
    let relay = process::relay(dir.path(), &config(dir.path(), &smarthost, &dns.addr.to_string()));
    let log = dir.path().join("log");
    let cases = [
        (Misbehaviour::Tarpit, "timed out"),
        (Misbehaviour::GarbageGreeting, "protocol error"),
        (Misbehaviour::EndlessReply, "protocol error"),
        (Misbehaviour::OversizedLine, "protocol error"),
        (Misbehaviour::DropMidData, "closed"),
    ];
    for (i, (how, reason)) in cases.into_iter().enumerate() {
        let broken = BrokenMx::start(port, how);
        send(relay.addr, &format!("case {i}"));
        let msg = wait_for("the accept record", || {
            let a = events(&log, "accept");
            (a.len() > i).then(|| a[i]["msg"].clone())
        });
        let deferred = wait_for(&format!("a deferral with {how:?}"), || {
            events(&log, "deferred").into_iter().find(|d| d["msg"] == msg)
        });
        let why = deferred["reason"].as_str().unwrap().to_string();
        assert!(
            why.contains(reason),
            "{how:?}: the reason says what happened: {why}"
        );
        assert!(
            events(&log, "failed").is_empty(),
            "{how:?} must not fail the message"
        );
        drop(broken);
        let sink = process::sink_on(&format!("127.0.0.1:{port}"), &maildir, &[]);
        wait_for(&format!("delivery after {how:?}"), || {
            (maildir_messages(&maildir).len() == i + 1).then_some(())
        });
        drop(sink);
    }
}

#[test]
fn a_dead_nameserver_defers_and_the_message_goes_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    // A UDP port where nothing answers: the DNS query times out.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let mut cfg = config(dir.path(), "", &dead_addr.to_string());
    cfg = cfg.replace(
        "[delivery]",
        &format!("[delivery]\nmx_port = {}", sink.addr.port()),
    );
    let mut relay = process::relay(dir.path(), &cfg);
    send(relay.addr, "dns");
    let log = dir.path().join("log");
    let deferred = wait_for("a DNS deferral", || events(&log, "deferred").pop());
    assert!(deferred["reason"].as_str().unwrap().contains("DNS"), "{deferred}");
    assert!(events(&log, "failed").is_empty());
    // The nameserver comes back (the relay restarts pointing at one that answers).
    relay.kill();
    let dns = TestDns::start();
    dns.add_mx("dest.example", 10, "mx.dest.example");
    dns.add_a("mx.dest.example", "127.0.0.1".parse().unwrap());
    let cfg = cfg.replace(&dead_addr.to_string(), &dns.addr.to_string());
    let _relay = process::relay(dir.path(), &cfg);
    wait_for("delivery once DNS answers", || maildir_messages(&maildir).pop());
    drop(dead);
}
