//! Issue 7's lifecycle through the real binary: live reload on SIGHUP (a changed account
//! applies to the next MAIL on every core while sessions stay open; an invalid file is
//! refused and the old configuration stays; a changed route sends the next message to its
//! new host), graceful stop on SIGTERM (idle sessions get
//! 421, the process exits 0, and nothing acknowledged is lost).

use std::path::Path;

use crate::support::load::{self, LoadRun, Tally};
use crate::support::process::{self, RelayConfig, events, maildir_messages, wait_for};
use crate::support::smtp::Client;

/// A two-core relay sending everything to `sink`, with one account whose sender domains are
/// `domains` (a TOML list's items).
fn config(dir: &Path, sink: std::net::SocketAddr, domains: &str) -> RelayConfig {
    RelayConfig::new(dir, 2)
        .server("shutdown_grace_ms = 5000")
        .section(&format!(
            r#"
[delivery]
smarthost = "{sink}"
retry_schedule_ms = [200]

[[accounts]]
id = "shop"
networks = ["127.0.0.0/8"]
sender_domains = [{domains}]
"#
        ))
}

#[test]
fn a_reload_applies_to_the_next_mail_of_open_sessions_on_every_core() {
    let dir = tempfile::tempdir().unwrap();
    let sink = process::sink(&dir.path().join("maildir"), &[]);
    let relay = process::relay(
        dir.path(),
        &config(dir.path(), sink.addr, r#""a.example""#).build(),
    );
    // Enough sessions that the kernel spreads them over both cores.
    let mut sessions: Vec<Client> = (0..8)
        .map(|_| {
            let (mut c, _) = Client::connect(relay.addr);
            assert!(c.cmd("EHLO client.test").starts_with("250"));
            assert!(c.cmd("MAIL FROM:<x@b.example>").starts_with("550 5.7.1"));
            c
        })
        .collect();

    // An invalid file is refused, and the running configuration stays.
    let path = dir.path().join("corerelay.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("sender_domains", "sender_domain")).unwrap();
    relay.signal(libc::SIGHUP);
    let log = dir.path().join("log");
    let refused = wait_for("a refused reload on both cores", || {
        let r = events(&log, "reload_refused");
        (r.len() == 2).then_some(r)
    });
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("sender_domain"),
        "{}",
        refused[0]
    );
    assert!(sessions[0].cmd("MAIL FROM:<x@b.example>").starts_with("550"));
    assert!(sessions[0].cmd("MAIL FROM:<x@a.example>").starts_with("250"));
    assert!(sessions[0].cmd("RSET").starts_with("250"));

    // A valid one that adds a domain applies to the next MAIL of every open session.
    std::fs::write(
        &path,
        good.replace(r#"["a.example"]"#, r#"["a.example", "b.example"]"#),
    )
    .unwrap();
    relay.signal(libc::SIGHUP);
    wait_for("a reload on both cores", || {
        (events(&log, "reloaded").len() == 2).then_some(())
    });
    for c in &mut sessions {
        let r = c.cmd("MAIL FROM:<x@b.example>");
        assert!(r.starts_with("250"), "{r}");
        assert!(c.cmd("QUIT").starts_with("221"));
    }
    // `corerelay reload` finds the relay through its spool and does the same.
    let out = std::process::Command::new(process::BIN)
        .args(["reload", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("a second reload", || {
        (events(&log, "reloaded").len() == 4).then_some(())
    });
}

/// A relay whose route sends `dest.example` to `smarthost`; everything else has no route.
fn routed_config(dir: &Path, smarthost: std::net::SocketAddr) -> String {
    RelayConfig::new(dir, 2)
        .section(&format!(
            r#"
[delivery]
retry_schedule_ms = [200]

[[egress.sources]]
name = "out"
bind = "127.0.0.1"
ehlo = "out.relay.test"

[[egress.pools]]
name = "main"
sources = {{ out = 1 }}

[[egress.routes]]
domains = ["dest.example"]
pool = "main"
smarthost = "{smarthost}"
tls = "disabled"
"#
        ))
        .section(
            r#"
[[accounts]]
id = "shop"
networks = ["127.0.0.0/8"]
sender_domains = ["*"]
"#,
        )
        .build()
}

/// Issue 7 with issue 5's routing: a reload that sends a domain to another host applies
/// to the next message of a session that stays open; an invalid route is refused and the
/// route in force keeps working.
#[test]
fn a_reload_reroutes_a_domain_and_an_invalid_route_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (maildir_a, maildir_b) = (dir.path().join("a"), dir.path().join("b"));
    let sink_a = process::sink(&maildir_a, &[]);
    let sink_b = process::sink(&maildir_b, &[]);
    let relay = process::relay(dir.path(), &routed_config(dir.path(), sink_a.addr));
    let log = dir.path().join("log");
    let (mut c, _) = Client::connect(relay.addr);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let mut send = |subject: &str| {
        let body = format!("From: <a@shop.example>\r\nSubject: {subject}\r\n\r\nbody\r\n");
        let r = c.send_mail("a@shop.example", &["r@dest.example"], &body);
        assert!(r.starts_with("250"), "{r}");
    };
    let has = |maildir: &Path, subject: &str| {
        maildir_messages(maildir)
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains(&format!("Subject: {subject}")))
    };

    send("first");
    wait_for("the first message at A", || {
        has(&maildir_a, "first").then_some(())
    });

    // The route now names B.
    let path = dir.path().join("corerelay.toml");
    let to_a = std::fs::read_to_string(&path).unwrap();
    let to_b = to_a.replace(&sink_a.addr.to_string(), &sink_b.addr.to_string());
    std::fs::write(&path, &to_b).unwrap();
    relay.signal(libc::SIGHUP);
    let reloaded = wait_for("a reload on both cores", || {
        let r = events(&log, "reloaded");
        (r.len() == 2).then_some(r)
    });
    assert!(
        reloaded.iter().all(|r| r["egress_changed"] == true),
        "{reloaded:?}"
    );
    send("second");
    wait_for("the second message at B", || {
        has(&maildir_b, "second").then_some(())
    });
    assert!(
        !has(&maildir_a, "second"),
        "the old route was used after the reload"
    );

    // A route naming a pool that does not exist is refused; B stays the route.
    std::fs::write(&path, to_b.replace(r#"pool = "main""#, r#"pool = "nowhere""#)).unwrap();
    relay.signal(libc::SIGHUP);
    let refused = wait_for("a refused reload on both cores", || {
        let r = events(&log, "reload_refused");
        (r.len() == 2).then_some(r)
    });
    let reason = refused[0]["reason"].as_str().unwrap();
    assert!(reason.contains("nowhere"), "{reason}");
    send("third");
    wait_for("the third message at B", || {
        has(&maildir_b, "third").then_some(())
    });
    assert_eq!(maildir_messages(&maildir_a).len(), 1);
    assert!(c.cmd("QUIT").starts_with("221"));
}

#[test]
fn sigterm_answers_idle_sessions_421_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let mut relay = process::relay(dir.path(), &config(dir.path(), sink.addr, r#""*""#).build());
    let (mut idle, _) = Client::connect(relay.addr);
    assert!(idle.cmd("EHLO client.test").starts_with("250"));
    let (mut busy, _) = Client::connect(relay.addr);
    busy.cmd("EHLO client.test");
    assert!(busy.cmd("MAIL FROM:<a@shop.example>").starts_with("250"));
    assert!(busy.cmd("RCPT TO:<r@dest.example>").starts_with("250"));
    assert!(busy.cmd("DATA").starts_with("354"));
    busy.send("From: <a@shop.example>\r\nSubject: in flight\r\n\r\nhalf");

    relay.signal(libc::SIGTERM);
    assert_eq!(
        idle.reply(),
        "421 4.3.0 Service shutting down; closing connection\r\n"
    );
    assert!(idle.is_closed());
    // The message in flight is let finish, and it is durable before its 250.
    busy.send(" a body\r\n.\r\n");
    assert!(busy.reply().starts_with("250"));
    assert_eq!(relay.wait_exit(), Some(0), "a graceful stop exits 0");
    let log = dir.path().join("log");
    assert_eq!(events(&log, "stopped").len(), 2);

    // Restarted, it delivers what it acknowledged.
    let _relay = process::relay(dir.path(), &config(dir.path(), sink.addr, r#""*""#).build());
    wait_for("the message acknowledged during the stop", || {
        maildir_messages(&maildir)
            .into_iter()
            .find(|m| String::from_utf8_lossy(m).contains("half a body"))
    });
}

#[test]
fn sigterm_during_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let cfg = config(dir.path(), sink.addr, r#""*""#).build();
    let mut relay = process::relay(dir.path(), &cfg);
    let ack_log = dir.path().join("acked.txt");
    let mut load = load::spawn_load(&LoadRun {
        target: relay.addr,
        messages: 3000,
        concurrency: 8,
        size_bytes: 2048,
        ack_log: &ack_log,
        retry_ms: 0,
    });
    let log = dir.path().join("log");
    wait_for("some accepted messages", || {
        (events(&log, "accept").len() >= 300).then_some(())
    });
    relay.signal(libc::SIGTERM);
    assert_eq!(relay.wait_exit(), Some(0));
    let _ = load.wait();
    let acked = load::acked_ids(&ack_log);
    assert!(acked.len() >= 300, "only {} acknowledged", acked.len());

    let _relay = process::relay(dir.path(), &cfg);
    let tally: Tally = wait_for("every acknowledged message at the sink", || {
        let t = load::tally(&acked, &load::sink_ids(&maildir));
        t.lost.is_empty().then_some(t)
    });
    assert_eq!(tally.acked, acked.len());
}

/// A start-up that does not finish within `server.startup_timeout_ms` (here: impossible,
/// 1 ms) makes the process start itself again, at most twice, then exit with a reason.
#[test]
fn a_stuck_start_restarts_the_process_then_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"shop.example\"")
        .server("startup_timeout_ms = 1")
        .build();
    let path = dir.path().join("corerelay.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(process::BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("starting again (attempt 2)"), "{stderr}");
    assert!(stderr.contains("starting again (attempt 3)"), "{stderr}");
    assert!(stderr.contains("3 times in a row; giving up"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}

/// The quick start's embedded default keeps its spool and log under `./corerelay-data`: a
/// relative path, which the relay resolves against the directory it was started in.
#[test]
fn relative_spool_and_log_directories_work() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(process::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--cores",
            "2",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = rx
        .iter()
        .find(|l| l.contains("listening on") || l.contains("error"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        listening.as_deref().is_some_and(|l| l.contains("listening on")),
        "{listening:?}"
    );
    assert!(dir.path().join("corerelay-data/spool/core-0").is_dir());
    assert!(dir.path().join("corerelay-data/spool/core-1").is_dir());
}
