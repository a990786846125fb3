//! Hostile clients (issue 9): thousands of idle connections, slowloris, command floods,
//! huge headers, MIME bombs, invalid UTF-8, and a body trickled in small segments. Each
//! is bounded (by a limit, a timeout, or plain memory) and answered clearly, the relay stays
//! up, and what it accepts it relays byte for byte.
//!
//! `scripts/hostile-idle.sh` runs the idle-connection test with 10,000 connections
//! (`CORERELAY_IDLE_CONNECTIONS`); CI uses 2,000.

use std::time::{Duration, Instant};

use crate::support::load::{self, rss_kib_and_fds};
use crate::support::process::{self, Running, maildir_messages, wait_for};
use crate::support::smtp::Client;

/// A relay (2 cores) and its sink, with a 1 s command timeout.
struct Rig {
    _dir: tempfile::TempDir,
    maildir: std::path::PathBuf,
    _sink: Running,
    relay: Running,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let cfg = load::relay_config(
        dir.path(),
        "127.0.0.1:0",
        2,
        sink.addr.port(),
        "command_timeout_ms = 1000",
    );
    let relay = process::relay(dir.path(), &cfg);
    Rig {
        _dir: dir,
        maildir,
        _sink: sink,
        relay,
    }
}

impl Rig {
    fn client(&self) -> Client {
        let (mut c, greeting) = Client::connect(self.relay.addr);
        assert!(greeting.starts_with("220 "), "{greeting}");
        assert!(c.cmd("EHLO hostile.test").starts_with("250"));
        c
    }

    fn pid(&self) -> u32 {
        self.relay.pid().unwrap()
    }

    /// Sends `body` (raw bytes, CRLF lines, no line starting with a dot) and returns the
    /// reply to the end of data.
    fn send_raw(&self, c: &mut Client, body: &[u8]) -> String {
        assert!(c.cmd("MAIL FROM:<a@shop.example>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<b@dest.example>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send_bytes(body);
        c.send(".\r\n");
        c.reply()
    }

    /// Waits until a message containing `marker` is at the sink and checks that it ends
    /// with `body` exactly.
    fn assert_relayed(&self, marker: &str, body: &[u8]) {
        let stored = wait_for("the message at the sink", || {
            maildir_messages(&self.maildir)
                .into_iter()
                .find(|m| m.windows(marker.len()).any(|w| w == marker.as_bytes()))
        });
        assert!(
            stored.ends_with(body),
            "{marker}: the sink got {} bytes, not the {} sent",
            stored.len(),
            body.len()
        );
    }

    /// The relay still greets and takes mail.
    fn assert_alive(&self) {
        let mut c = self.client();
        let body = b"From: <a@shop.example>\r\nSubject: alive\r\n\r\nstill here\r\n";
        assert!(self.send_raw(&mut c, body).starts_with("250 "));
    }
}

/// Raises this process's open-file limit to its hard limit (children inherit it), so the
/// test holds thousands of sockets and so does the relay it starts.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

#[test]
fn slowloris_is_closed_by_the_command_timeout() {
    let rig = rig();
    let (mut c, _) = Client::connect(rig.relay.addr);
    let started = Instant::now();
    // One byte every 300 ms: each read is well within the 1 s timeout, the command never.
    let mut reply = None;
    while started.elapsed() < Duration::from_secs(5) {
        if !c.try_send_bytes(b"N") {
            break;
        }
        reply = c.reply_within(Duration::from_millis(300));
        if reply.is_some() {
            break;
        }
    }
    let held = started.elapsed();
    let reply = reply.unwrap_or_default();
    assert!(
        reply.starts_with("421 4.4.2"),
        "a client trickling one byte at a time held its connection for {held:?} (reply {reply:?})"
    );
    assert!(held < Duration::from_millis(2500), "closed only after {held:?}");
    assert!(c.is_closed());
    rig.assert_alive();
}

#[test]
fn a_body_trickled_in_small_segments_costs_about_its_size_in_memory() {
    let rig = rig();
    let mut c = rig.client();
    let (rss_before, _) = rss_kib_and_fds(rig.pid());
    assert!(c.cmd("MAIL FROM:<a@shop.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@dest.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("From: <a@shop.example>\r\nX-Test: trickle\r\n\r\n");
    // 2 MB in 300-byte lines, each its own segment (TCP_NODELAY and a pause), so the relay
    // reads them one at a time.
    let line = format!("{}\r\n", "t".repeat(298));
    let lines = 7000;
    c.set_nodelay();
    for _ in 0..lines {
        c.send(&line);
        std::thread::sleep(Duration::from_micros(150));
    }
    let (rss_during, _) = rss_kib_and_fds(rig.pid());
    c.send(".\r\n");
    assert!(c.reply().starts_with("250 "));
    let body_kib = (lines * line.len()) as u64 / 1024;
    let grew_kib = rss_during.saturating_sub(rss_before);
    eprintln!(
        "hostile: a {body_kib} KiB body trickled in 300-byte segments grew the relay's RSS by {grew_kib} KiB"
    );
    assert!(
        grew_kib < 4 * body_kib + (8 << 10),
        "{body_kib} KiB of body pinned {grew_kib} KiB of memory"
    );
    rig.assert_alive();
}
