//! End to end through the real binary: a client on a socket → `corerelay serve` → the MX
//! found in a DNS server started by the test → `corerelay sink`. Issue 2's acceptance tests.

use std::path::Path;

use crate::support::dns::TestDns;
use crate::support::process::{self, RelayConfig, events, maildir_messages, wait_for};
use crate::support::smtp::Client;

/// A relay configuration for tests: unpinned cores, a DNS server of the test's, the MX port
/// of the test's sink, short retries.
fn config(dir: &Path, cores: usize, dns: &TestDns, mx_port: u16, accounts: &str) -> String {
    RelayConfig::new(dir, cores)
        .server(r#"hostname = "relay.test""#)
        .spool("segment_max_bytes = 1048576")
        .section(&format!(
            r#"
[delivery]
mx_port = {mx_port}
dns_servers = ["{dns}"]
dns_timeout_ms = 1000
connect_timeout_ms = 2000
retry_schedule_ms = [300]
idle_connection_ms = 200
"#,
            dns = dns.addr,
        ))
        .section(accounts)
        .build()
}

const LOCAL: &str = r#"
[[accounts]]
id = "local"
networks = ["127.0.0.0/8"]
sender_domains = ["*"]
"#;

fn dns_for(domain: &str, mx: &str) -> TestDns {
    let dns = TestDns::start();
    dns.add_mx(domain, 10, mx);
    dns.add_a(mx, "127.0.0.1".parse().unwrap());
    dns
}

const BODY: &str = "From: Sender <sender@shop.example>\r\nTo: <rcpt@dest.example>\r\nSubject: hello\r\nMessage-ID: <1@shop.example>\r\n\r\nfirst line\r\n.a line that starts with a dot\r\n\r\nlast line\r\n";

/// What the sink stored, minus the delivery headers the sink adds (Return-Path,
/// Delivered-To) and corerelay's trace header (Received, folded).
fn strip_added_headers(stored: &[u8]) -> (String, String) {
    let text = String::from_utf8(stored.to_vec()).unwrap();
    let mut rest = text.as_str();
    let mut added = String::new();
    loop {
        let line_end = rest.find("\r\n").unwrap() + 2;
        let line = &rest[..line_end];
        let is_added = line.starts_with("Return-Path:")
            || line.starts_with("Delivered-To:")
            || line.starts_with("Received:")
            || (line.starts_with('\t') && added.contains("Received:"));
        if !is_added {
            return (added, rest.to_string());
        }
        added.push_str(line);
        rest = &rest[line_end..];
    }
}

#[test]
fn a_message_reaches_the_mx_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let dns = dns_for("dest.example", "mx.dest.example");
    let relay = process::relay(dir.path(), &config(dir.path(), 2, &dns, sink.addr.port(), LOCAL));

    let (mut c, greeting) = Client::connect(relay.addr);
    assert!(greeting.starts_with("220 relay.test"), "{greeting}");
    let ehlo = c.cmd("EHLO client.test");
    for keyword in ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE "] {
        assert!(ehlo.contains(keyword), "EHLO lacks {keyword}: {ehlo}");
    }
    let reply = c.send_mail("sender@shop.example", &["rcpt@dest.example"], BODY);
    assert!(reply.starts_with("250 2."), "{reply}");
    assert!(c.cmd("QUIT").starts_with("221"));

    let stored = wait_for("the message at the sink", || maildir_messages(&maildir).pop());
    let (added, body) = strip_added_headers(&stored);
    assert_eq!(body, BODY, "the body must arrive exactly as sent");
    assert!(added.contains("Return-Path: <sender@shop.example>"), "{added}");
    assert!(added.contains("Delivered-To: rcpt@dest.example"), "{added}");
    assert!(
        added.contains("Received: from client.test ([127.0.0.1])"),
        "{added}"
    );
    assert!(
        added.contains("by relay.test (corerelay) with ESMTP id"),
        "{added}"
    );

    let log = dir.path().join("log");
    let delivered = wait_for("a delivered log record", || events(&log, "delivered").pop());
    assert_eq!(delivered["rcpt"], "rcpt@dest.example");
    assert_eq!(delivered["account"], "local");
    // Each core drains its own log file: the acceptor's record may land after the owner's.
    let accepted = wait_for("the accept record", || {
        let a = events(&log, "accept");
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["msg"], delivered["msg"]);
    assert_eq!(events(&log, "spooled").len(), 1);
    assert!(
        dns.queries() > 0,
        "the MX must have been looked up in the test's DNS server"
    );
}

#[test]
fn spooled_messages_are_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let port = process::free_port();
    let dns = dns_for("dest.example", "mx.dest.example");
    let cfg = config(dir.path(), 2, &dns, port, LOCAL);
    let mut relay = process::relay(dir.path(), &cfg);
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    for _ in 0..5 {
        assert!(
            c.send_mail("a@shop.example", &["b@dest.example"], BODY)
                .starts_with("250")
        );
    }
    // The sink is down: every message is deferred, none delivered.
    let log = dir.path().join("log");
    wait_for("five deferrals", || {
        (events(&log, "deferred").len() >= 5).then_some(())
    });
    relay.kill();

    let _sink = process::sink_on(&format!("127.0.0.1:{port}"), &maildir, &[]);
    let _relay = process::relay(dir.path(), &cfg);
    wait_for("five messages at the sink after restart", || {
        (maildir_messages(&maildir).len() == 5).then_some(())
    });
    let recovered: u64 = events(&log, "recovered")
        .iter()
        .map(|r| r["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(recovered, 5, "both cores together recover the five messages");
}

#[test]
fn a_temporary_failure_is_retried_and_a_permanent_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    // First message: 451 then 250 on retry. Second: 550.
    let sink = process::sink(&maildir, &["--reply", "451", "--reply", "250", "--reply", "550"]);
    let dns = dns_for("dest.example", "mx.dest.example");
    let _relay = process::relay(dir.path(), &config(dir.path(), 1, &dns, sink.addr.port(), LOCAL));
    let log = dir.path().join("log");

    let (mut c, _) = Client::connect(_relay.addr);
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail("a@shop.example", &["retry@dest.example"], BODY)
            .starts_with("250")
    );
    let delivered = wait_for("delivery after a retry", || events(&log, "delivered").pop());
    assert_eq!(delivered["rcpt"], "retry@dest.example");
    let deferred = events(&log, "deferred");
    assert_eq!(deferred.len(), 1);
    assert!(
        deferred[0]["reason"].as_str().unwrap().contains("451"),
        "{}",
        deferred[0]
    );

    assert!(
        c.send_mail("a@shop.example", &["bounce@dest.example"], BODY)
            .starts_with("250")
    );
    // The sender's domain has no MX here, so the bounce to it fails too: pick ours.
    let failed = wait_for("a permanent failure", || {
        events(&log, "failed")
            .into_iter()
            .find(|r| r["rcpt"] == "bounce@dest.example")
    });
    assert_eq!(failed["rcpt"], "bounce@dest.example");
    assert!(failed["reason"].as_str().unwrap().contains("550"), "{failed}");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(events(&log, "deferred").len(), 1, "a 5xx must not be retried");
    assert_eq!(maildir_messages(&maildir).len(), 1);
}

#[test]
fn unknown_sources_and_foreign_domains_are_refused_and_nothing_is_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let dns = dns_for("dest.example", "mx.dest.example");
    let accounts = r#"
[[accounts]]
id = "shop"
networks = ["127.0.0.0/8"]
sender_domains = ["shop.example"]

[[accounts]]
id = "elsewhere"
networks = ["10.0.0.0/8"]
sender_domains = ["*"]
"#;
    let relay = process::relay(
        dir.path(),
        &config(dir.path(), 2, &dns, sink.addr.port(), accounts),
    );
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    let r = c.cmd("MAIL FROM:<a@bank.example>");
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    assert!(r.contains("bank.example"), "{r}");

    // The envelope is fine, but the header From is not the account's.
    assert!(c.cmd("MAIL FROM:<a@shop.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@dest.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("From: <ceo@bank.example>\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));

    let log = dir.path().join("log");
    wait_for("two reject records", || {
        (events(&log, "reject").len() >= 2).then_some(())
    });
    assert!(events(&log, "spooled").is_empty());
    assert!(events(&log, "accept").is_empty());

    // A source outside every account's networks: 127.0.0.0/8 belongs to nobody here.
    let dir2 = tempfile::tempdir().unwrap();
    let only_ten = "[[accounts]]\nid = \"ten\"\nnetworks = [\"10.0.0.0/8\"]\nsender_domains = [\"*\"]\n";
    let relay2 = process::relay(
        dir2.path(),
        &config(dir2.path(), 1, &dns, sink.addr.port(), only_ten),
    );
    let (mut c, _) = Client::connect(relay2.addr);
    c.cmd("EHLO client.test");
    let r = c.cmd("MAIL FROM:<a@shop.example>");
    assert_eq!(r, "550 5.7.1 Relay access denied for 127.0.0.1\r\n");
    assert!(
        c.cmd("RCPT TO:<b@dest.example>").starts_with("503"),
        "no transaction after a refused MAIL"
    );
    let log2 = dir2.path().join("log");
    wait_for("a reject record", || events(&log2, "reject").pop());
    assert!(events(&log2, "spooled").is_empty());
    assert!(maildir_messages(&maildir).is_empty());
}

/// Every file under `dir` with its size.
fn walk(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "log") {
                out.push((p.clone(), std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    out
}

#[test]
fn accounts_are_spooled_on_their_owner_core() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let dns = dns_for("dest.example", "mx.dest.example");
    let accounts = r#"
[[accounts]]
id = "zero"
networks = ["127.0.0.0/8"]
sender_domains = ["zero.example"]
core = 0

[[accounts]]
id = "one"
networks = ["127.0.0.0/8"]
sender_domains = ["one.example"]
core = 1
"#;
    let relay = process::relay(
        dir.path(),
        &config(dir.path(), 2, &dns, sink.addr.port(), accounts),
    );
    // Several connections, so the kernel spreads them over both acceptor cores.
    for i in 0..8 {
        let (mut c, _) = Client::connect(relay.addr);
        c.cmd("EHLO client.test");
        for (account, domain) in [("zero", "zero.example"), ("one", "one.example")] {
            let body = format!("From: <x@{domain}>\r\nSubject: {account} {i}\r\n\r\nhi\r\n");
            assert!(
                c.send_mail(&format!("x@{domain}"), &["r@dest.example"], &body)
                    .starts_with("250")
            );
        }
        c.cmd("QUIT");
    }
    wait_for("16 messages at the sink", || {
        (maildir_messages(&maildir).len() == 16).then_some(())
    });
    let log = dir.path().join("log");
    let spooled = events(&log, "spooled");
    assert_eq!(spooled.len(), 16);
    for r in &spooled {
        let want = if r["account"] == "zero" { 0 } else { 1 };
        assert_eq!(r["core"], want, "spooled on the owner core: {r}");
    }
    let accept_cores: std::collections::HashSet<u64> = events(&log, "accept")
        .iter()
        .map(|r| r["core"].as_u64().unwrap())
        .collect();
    assert!(!accept_cores.is_empty());
}

#[test]
fn a_corrupt_spool_tail_loses_only_the_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let port = process::free_port();
    let dns = dns_for("dest.example", "mx.dest.example");
    let cfg = config(dir.path(), 1, &dns, port, LOCAL);
    let mut relay = process::relay(dir.path(), &cfg);
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    let filler = format!("{}\r\n", "x".repeat(75)).repeat(40);
    for i in 0..3 {
        let body = format!("From: <a@shop.example>\r\nSubject: {i}\r\n\r\n{filler}");
        let reply = c.send_mail("a@shop.example", &["b@dest.example"], &body);
        assert!(reply.starts_with("250"), "{reply}");
    }
    relay.kill();

    // Corrupt the third message's record: flip bytes inside its body on disk.
    let segments = walk(&dir.path().join("spool"));
    let marker = b"Subject: 2\r\n";
    let (seg, at) = segments
        .iter()
        .find_map(|(p, _)| {
            let bytes = std::fs::read(p).unwrap();
            bytes
                .windows(marker.len())
                .position(|w| w == marker)
                .map(|at| (p.clone(), at))
        })
        .expect("the third message is in a segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    for b in &mut bytes[at + 20..at + 120] {
        *b ^= 0x5a;
    }
    std::fs::write(&seg, &bytes).unwrap();

    let _sink = process::sink_on(&format!("127.0.0.1:{port}"), &maildir, &[]);
    let _relay = process::relay(dir.path(), &cfg);
    wait_for("the two intact messages", || {
        (maildir_messages(&maildir).len() == 2).then_some(())
    });
    let log = dir.path().join("log");
    let recovered = wait_for("a recovery record", || {
        events(&log, "recovered")
            .into_iter()
            .find(|r| r["corrupt_records"].as_u64() > Some(0))
    });
    assert_eq!(recovered["corrupt_records"], 1, "{recovered}");
    assert_eq!(recovered["messages"], 2, "{recovered}");
}
