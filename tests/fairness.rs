//! Issue 6's functional tests, through the real binary (order and counts, never
//! milliseconds): a small account's mail overtakes a big backlog queued before it at a
//! stalled remote MX; per-account limits answer with their documented replies; pinned and
//! dedicated placement hold, at start, in the logs and in the metrics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use crate::support::process::{self, BIN, RelayConfig, Running, events, maildir_messages, wait_for};
use crate::support::smtp::Client;

/// A relay configuration: `cores` unpinned cores, everything to the sink, one outbound
/// connection per site (so the order of delivery is the order the ready queue serves),
/// plus `accounts`.
fn config(dir: &Path, cores: usize, sink: SocketAddr, accounts: &str) -> String {
    RelayConfig::new(dir, cores)
        .server(r#"hostname = "relay.test""#)
        .section(&format!(
            r#"
[delivery]
smarthost = "{sink}"
retry_schedule_ms = [300]
idle_connection_ms = 2000

[egress]
site_connections_max_count = 1
"#
        ))
        .section(accounts)
        .build()
}

fn account(id: &str, extra: &str) -> String {
    format!(
        "[[accounts]]\nid = \"{id}\"\nnetworks = [\"127.0.0.0/8\"]\nsender_domains = [\"{id}.example\"]\n{extra}\n"
    )
}

/// Runs `corerelay load` to the end with `args`; returns its JSON report.
fn load(target: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args([
            "load",
            "--target",
            &target.to_string(),
            "--json",
            "--size",
            "1024",
        ])
        .args(args)
        .output()
        .expect("run corerelay load");
    assert!(
        out.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the load's JSON report")
}

/// The `X-Load-Account` of each message in the maildir, in arrival order.
fn arrival_accounts(maildir: &Path) -> Vec<String> {
    maildir_messages(maildir)
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(m);
            text.split("\r\n")
                .find_map(|l| l.strip_prefix("X-Load-Account: "))
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

/// The remote MX stalls while a big account's 60 messages queue for its one connection;
/// then a small account sends 3. When the MX resumes, the small account's messages go
/// out among the first few, not after the backlog that was queued before them (FIFO would
/// deliver them 61st to 63rd).
#[test]
fn a_small_account_overtakes_a_big_backlog_at_a_stalled_site() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let pause = dir.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    let sink = process::sink(&maildir, &["--pause-file", pause.to_str().unwrap()]);
    let accounts = account("big", "") + &account("small", "");
    let relay = process::relay(dir.path(), &config(dir.path(), 1, sink.addr, &accounts));

    let big = load(
        relay.addr,
        &[
            "--name",
            "big",
            "--from",
            "l@big.example",
            "--messages",
            "60",
            "--concurrency",
            "4",
        ],
    );
    assert_eq!(big["acked"], 60);
    let small = load(
        relay.addr,
        &[
            "--name",
            "small",
            "--from",
            "l@small.example",
            "--messages",
            "3",
            "--concurrency",
            "1",
        ],
    );
    assert_eq!(small["acked"], 3);
    // Every message is accepted (250 means spooled and queued); give the router a moment
    // to hand the small account's jobs to the site's ready queue behind the big ones.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::remove_file(&pause).unwrap();

    let order = wait_for("all 63 messages at the sink", || {
        let order = arrival_accounts(&maildir);
        (order.len() == 63).then_some(order)
    });
    let small_at: Vec<usize> = (0..order.len()).filter(|&i| order[i] == "small").collect();
    assert_eq!(small_at.len(), 3, "{order:?}");
    assert!(
        small_at[2] < 10,
        "the small account's messages arrived at {small_at:?} of 63: {order:?}"
    );
    drop(relay);
}

/// An SMTP transaction's final reply.
fn send(client: &mut Client, from: &str) -> String {
    let line = format!("{}\r\n", "x".repeat(98));
    let body = format!("From: <{from}>\r\nSubject: limits\r\n\r\n{}", line.repeat(15));
    client.send_mail(from, &["rcpt@dest.example"], &body)
}

/// `rated` may send one message a second: of four sent at once, the later ones get
/// `451 4.7.0` naming the limit. `stored` may have 4,000 bytes queued: with the remote MX
/// stalled, its third message finds the queue full and gets `452 4.3.1`. Another account
/// is not held back by either. The throttles are counted per account and reason.
#[test]
fn per_account_limits_answer_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let pause = dir.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    let sink = process::sink(&maildir, &["--pause-file", pause.to_str().unwrap()]);
    let accounts = account("rated", "messages_per_second_max_count = 1")
        + &account("stored", "queued_max_bytes = 4000")
        + &account("free", "");
    let relay = process::relay(dir.path(), &config(dir.path(), 1, sink.addr, &accounts));
    let (mut client, _) = Client::connect(relay.addr);
    client.cmd("EHLO client.test");

    let rated: Vec<String> = (0..4).map(|_| send(&mut client, "a@rated.example")).collect();
    assert!(rated[0].starts_with("250"), "{rated:?}");
    let refused: Vec<&String> = rated.iter().filter(|r| !r.starts_with("250")).collect();
    assert!(!refused.is_empty(), "{rated:?}");
    for r in &refused {
        assert!(
            r.starts_with("451 4.7.0 Account rated is over its limit of 1 messages per second"),
            "{r}"
        );
    }

    let stored: Vec<String> = (0..3).map(|_| send(&mut client, "a@stored.example")).collect();
    assert!(
        stored[0].starts_with("250") && stored[1].starts_with("250"),
        "{stored:?}"
    );
    assert!(
        stored[2].starts_with("452 4.3.1 Account stored has ")
            && stored[2].contains("its limit is 4000 bytes"),
        "{stored:?}"
    );
    for _ in 0..5 {
        let free = send(&mut client, "a@free.example");
        assert!(free.starts_with("250"), "{free}");
    }

    let http: SocketAddr = relay
        .line_after("on http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let metrics = get(http, "/metrics");
    let line = |name: &str| metrics.lines().find(|l| l.starts_with(name)).map(str::to_string);
    assert!(
        line("corerelay_account_throttled_total{core=\"0\",account=\"stored\",reason=\"queued_bytes\"} 1")
            .is_some(),
        "{metrics}"
    );
    assert!(
        line("corerelay_account_throttled_total{core=\"0\",account=\"rated\",reason=\"rate\"}").is_some(),
        "{metrics}"
    );
    assert!(
        line("corerelay_account_queued_max_bytes{core=\"0\",account=\"stored\"} 4000").is_some(),
        "{metrics}"
    );
    std::fs::remove_file(&pause).unwrap();
    drop(relay);
}

/// One HTTP GET; the body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// On two cores: `vip` is dedicated (so it gets core 1 and nobody else does), `pinned`
/// asks for core 0, and the hash places the rest on core 0, the one left. The start lines,
/// the spool records (each core logs what it spools) and the placement gauges agree. Too
/// many dedicated accounts for the cores is refused at start, naming the key.
#[test]
fn pinned_and_dedicated_placement_hold() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let ids = ["vip", "pinned", "a1", "a2", "a3", "a4"];
    let accounts: String = ids
        .iter()
        .map(|id| match *id {
            "vip" => account(id, "dedicated = true\nweight = 4"),
            "pinned" => account(id, "core = 0"),
            _ => account(id, ""),
        })
        .collect();
    let relay: Running = process::relay(dir.path(), &config(dir.path(), 2, sink.addr, &accounts));
    let http: SocketAddr = relay
        .line_after("on http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let started = &relay.before;
    assert!(
        started
            .iter()
            .any(|l| l == "corerelay: account vip on core 1 (dedicated)"),
        "{started:?}"
    );
    for id in &ids[1..] {
        let want = format!("corerelay: account {id} on core 0");
        assert!(started.contains(&want), "{want} in {started:?}");
    }

    let (mut client, _) = Client::connect(relay.addr);
    client.cmd("EHLO client.test");
    for id in ids {
        let reply = send(&mut client, &format!("a@{id}.example"));
        assert!(reply.starts_with("250"), "{id}: {reply}");
    }
    let log = dir.path().join("log");
    let spooled = wait_for("every account's message spooled", || {
        let by_core: Vec<(String, u64)> = ["core-0.log", "core-1.log"]
            .iter()
            .enumerate()
            .flat_map(|(core, file)| {
                std::fs::read_to_string(log.join(file))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|r| r["event"] == "spooled")
                    .map(|r| (r["account"].as_str().unwrap_or("").to_string(), core as u64))
                    .collect::<Vec<_>>()
            })
            .collect();
        (by_core.len() == ids.len()).then_some(by_core)
    });
    for (account, core) in &spooled {
        assert_eq!(
            *core,
            u64::from(account == "vip"),
            "{account} spooled on core {core}"
        );
    }
    assert_eq!(events(&log, "spooled").len(), ids.len());

    let metrics = get(http, "/metrics");
    for want in [
        "corerelay_account_core{core=\"1\",account=\"vip\"} 1",
        "corerelay_account_dedicated{core=\"1\",account=\"vip\"} 1",
        "corerelay_account_weight{core=\"1\",account=\"vip\"} 4",
        "corerelay_account_core{core=\"0\",account=\"a1\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == want), "{want} in:\n{metrics}");
    }
    assert!(
        !metrics.contains("corerelay_account_core{core=\"0\",account=\"vip\"}"),
        "only the owner core exports an account's placement"
    );
    drop(relay);

    let two = account("d1", "dedicated = true") + &account("d2", "dedicated = true");
    let path = dir.path().join("two.toml");
    std::fs::write(&path, config(dir.path(), 2, sink.addr, &two)).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("accounts[1].dedicated") && err.contains("at most 1"),
        "{err}"
    );
}
