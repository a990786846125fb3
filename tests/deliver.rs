//! Issue 5's acceptance tests, through the real binary: `corerelay serve` with egress
//! routing delivers to scripted `corerelay sink`s (which record what they receive and from
//! which source address) found through a DNS server started by the test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use serde_json::Value;

use crate::support::dns::TestDns;
use crate::support::process::{self, RelayConfig, Running, events, maildir_messages, wait_for};
use crate::support::smtp::Client;

/// A relay configuration: test DNS, the sinks' MX port, short retries, plus `extra`
/// (egress sections and accounts).
fn config(dir: &Path, dns: &TestDns, mx_port: u16, extra: &str) -> String {
    RelayConfig::new(dir, 1)
        .server(r#"hostname = "relay.test""#)
        .spool("segment_max_bytes = 1048576")
        .section(&format!(
            r#"
[delivery]
mx_port = {mx_port}
dns_servers = ["{dns}"]
dns_timeout_ms = 1000
connect_timeout_ms = 2000
command_timeout_ms = 5000
retry_schedule_ms = [300]
idle_connection_ms = 300
"#,
            dns = dns.addr,
        ))
        .section(extra)
        .build()
}

const ACCOUNTS: &str = r#"
[[accounts]]
id = "shop"
networks = ["127.0.0.0/8"]
sender_domains = ["shop.example"]
"#;

/// An account of the `certified` reputation class (needs `egress.classes.certified`).
const BANK: &str = r#"
[[accounts]]
id = "bank"
networks = ["127.0.0.0/8"]
sender_domains = ["bank.example"]
class = "certified"
"#;

/// A scripted sink on 127.0.0.1 that records every message into `<dir>/<name>.jsonl`.
fn sink(dir: &Path, name: &str, extra: &[&str]) -> (Running, PathBuf) {
    let record = dir.join(format!("{name}.jsonl"));
    let mut args = vec!["--record", record.to_str().unwrap()];
    args.extend_from_slice(extra);
    (process::sink(&dir.join(name), &args), record)
}

/// The same on a given address (several sinks on one port, on different loopback IPs).
fn sink_at(dir: &Path, name: &str, listen: &str, extra: &[&str]) -> (Running, PathBuf) {
    let record = dir.join(format!("{name}.jsonl"));
    let mut args = vec!["--record", record.to_str().unwrap()];
    args.extend_from_slice(extra);
    (process::sink_on(listen, &dir.join(name), &args), record)
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until the record file holds `n` messages and returns them.
fn wait_records(path: &Path, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} messages in {}", path.display()), || {
        let r = records(path);
        (r.len() >= n).then_some(r)
    })
}

fn rcpts_of(record: &Value) -> Vec<String> {
    record["rcpts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn send(relay: &Running, from: &str, to: &[&str], subject: &str) {
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    let body = format!("From: <{from}>\r\nSubject: {subject}\r\n\r\nhello\r\n");
    let reply = c.send_mail(from, to, &body);
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");
}

fn dns_with(mx: &[(&str, &str, &str)]) -> TestDns {
    let dns = TestDns::start();
    for (domain, host, ip) in mx {
        dns.add_mx(domain, 10, host);
        dns.add_a(host, ip.parse().unwrap());
    }
    dns
}

#[test]
fn routing_picks_the_pool_and_its_source_address() {
    let dir = tempfile::tempdir().unwrap();
    let (mx, record) = sink(dir.path(), "mx", &[]);
    let (relay_host, relay_record) = sink(dir.path(), "smarthost", &[]);
    let dns = dns_with(&[
        ("dest.example", "mx.dest.example", "127.0.0.1"),
        ("gmail.test", "mx.google.test", "127.0.0.1"),
        ("googlemail.test", "mx.google.test", "127.0.0.1"),
    ]);
    let egress = format!(
        r#"
[egress]
default_pool = "shared"
classes = {{ certified = "certified" }}

[[egress.sources]]
name = "two"
bind = "127.0.0.2"
ehlo = "two.relay.test"
[[egress.sources]]
name = "three"
bind = "127.0.0.3"
[[egress.sources]]
name = "four"
bind = "127.0.0.4"

[[egress.pools]]
name = "shared"
sources = {{ two = 1 }}
[[egress.pools]]
name = "google"
sources = {{ three = 1 }}
[[egress.pools]]
name = "certified"
sources = {{ four = 1 }}

[[egress.routes]]
domains = ["gmail.test", "googlemail.test"]
pool = "google"

[[egress.routes]]
domains = [".partner.test"]
smarthost = "127.0.0.1:{smarthost_port}"
{ACCOUNTS}{BANK}"#,
        smarthost_port = relay_host.addr.port()
    );
    let relay = process::relay(dir.path(), &config(dir.path(), &dns, mx.addr.port(), &egress));
    send(&relay, "a@shop.example", &["r1@dest.example"], "shared pool");
    send(
        &relay,
        "a@shop.example",
        &["r2@gmail.test", "r3@googlemail.test"],
        "google route",
    );
    send(&relay, "a@bank.example", &["r4@gmail.test"], "certified class");
    send(
        &relay,
        "a@shop.example",
        &["r5@eu.partner.test"],
        "smarthost route",
    );

    let got = wait_records(&record, 3);
    let peer_of = |rcpt: &str| {
        got.iter()
            .find(|r| rcpts_of(r).iter().any(|x| x == rcpt))
            .map(|r| r["peer"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{rcpt} not received: {got:?}"))
    };
    assert_eq!(peer_of("r1@dest.example"), "127.0.0.2", "default pool");
    assert_eq!(peer_of("r2@gmail.test"), "127.0.0.3", "the route's pool");
    assert_eq!(peer_of("r4@gmail.test"), "127.0.0.4", "the class beats the route");
    // gmail.test and googlemail.test share their MX: one site, one transaction.
    let google = got
        .iter()
        .find(|r| rcpts_of(r).contains(&"r2@gmail.test".to_string()))
        .unwrap();
    assert_eq!(rcpts_of(google), ["r2@gmail.test", "r3@googlemail.test"]);
    let smarthost = wait_records(&relay_record, 1);
    assert_eq!(rcpts_of(&smarthost[0]), ["r5@eu.partner.test"]);
    assert_eq!(smarthost[0]["peer"], "127.0.0.2");
    let stored = maildir_messages(&dir.path().join("mx"));
    assert!(
        stored
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("Subject: shared pool"))
    );
}

#[test]
fn connection_limits_and_reuse_hold_at_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (mx, record) = sink(dir.path(), "mx", &[]);
    let dns = dns_with(&[("dest.example", "mx.dest.example", "127.0.0.1")]);
    let egress = format!(
        r#"
[[egress.routes]]
domains = ["dest.example"]
connections_max_count = 2
messages_per_connection_max_count = 3
{ACCOUNTS}"#
    );
    let relay = process::relay(dir.path(), &config(dir.path(), &dns, mx.addr.port(), &egress));
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    for i in 0..12 {
        let body = format!("From: <a@shop.example>\r\nSubject: {i}\r\n\r\nhi\r\n");
        assert!(
            c.send_mail("a@shop.example", &[&format!("r{i}@dest.example")], &body)
                .starts_with("250")
        );
    }
    let got = wait_records(&record, 12);
    let open_max = got
        .iter()
        .map(|r| r["open_connections"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(open_max <= 2, "at most 2 connections at once, saw {open_max}");
    let mut per_conn: HashMap<u64, u64> = HashMap::new();
    for r in &got {
        *per_conn.entry(r["conn"].as_u64().unwrap()).or_default() += 1;
        assert!(r["index"].as_u64().unwrap() <= 3, "{r}");
    }
    assert!(per_conn.values().all(|&n| n <= 3), "{per_conn:?}");
    assert!(
        per_conn.values().any(|&n| n > 1),
        "connections are reused: {per_conn:?}"
    );
    assert!(
        per_conn.len() >= 4,
        "12 messages at 3 per connection: {per_conn:?}"
    );
}

#[test]
fn the_message_rate_spaces_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let (mx, record) = sink(dir.path(), "mx", &[]);
    let dns = dns_with(&[("dest.example", "mx.dest.example", "127.0.0.1")]);
    let egress = format!(
        "[[egress.routes]]\ndomains = [\"dest.example\"]\nmessages_per_minute_max_count = 600\n{ACCOUNTS}"
    );
    let relay = process::relay(dir.path(), &config(dir.path(), &dns, mx.addr.port(), &egress));
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    for i in 0..6 {
        let body = format!("From: <a@shop.example>\r\nSubject: {i}\r\n\r\nhi\r\n");
        assert!(
            c.send_mail("a@shop.example", &["r@dest.example"], &body)
                .starts_with("250")
        );
    }
    let got = wait_records(&record, 6);
    let mut times: Vec<u64> = got.iter().map(|r| r["time_ms"].as_u64().unwrap()).collect();
    times.sort_unstable();
    // 600 per minute is one per 100 ms: six starts span 500 ms. The sink sees ends of
    // transactions, which jitter by a few ms; without the limit all six take a few ms.
    assert!(times[5] - times[0] >= 400, "{times:?}");
}

#[test]
fn tls_policies_and_auth_behave() {
    let dir = tempfile::tempdir().unwrap();
    let (tls_sink, tls_record) = sink(dir.path(), "tls", &["--tls"]);
    let (plain_sink, plain_record) = sink(dir.path(), "plain", &[]);
    let (auth_sink, auth_record) = sink(dir.path(), "auth", &["--tls", "--auth", "relay:s3cret"]);
    let dns = TestDns::start();
    let route = |domain: &str, port: u16, settings: &str| {
        format!("[[egress.routes]]\ndomains = [\"{domain}\"]\nsmarthost = \"127.0.0.1:{port}\"\n{settings}\n")
    };
    let mut egress = String::new();
    egress += &route(
        "req-self-signed.test",
        tls_sink.addr.port(),
        "tls = \"required\"\ntls_verify = false",
    );
    egress += &route("req-verified.test", tls_sink.addr.port(), "tls = \"required\"");
    egress += &route("req-plain.test", plain_sink.addr.port(), "tls = \"required\"");
    egress += &route("opp-tls.test", tls_sink.addr.port(), "");
    egress += &route("opp-plain.test", plain_sink.addr.port(), "");
    egress += &route("off.test", tls_sink.addr.port(), "tls = \"disabled\"");
    let auth = "tls = \"required\"\ntls_verify = false\nauth_user = \"relay\"";
    egress += &route(
        "auth.test",
        auth_sink.addr.port(),
        &format!("{auth}\nauth_password = \"s3cret\""),
    );
    egress += &route(
        "badauth.test",
        auth_sink.addr.port(),
        &format!("{auth}\nauth_password = \"wrong\""),
    );
    egress += ACCOUNTS;
    let relay = process::relay(dir.path(), &config(dir.path(), &dns, 25, &egress));
    for domain in [
        "req-self-signed.test",
        "req-verified.test",
        "req-plain.test",
        "opp-tls.test",
        "opp-plain.test",
        "off.test",
        "auth.test",
        "badauth.test",
    ] {
        send(&relay, "a@shop.example", &[&format!("r@{domain}")], domain);
    }
    let tls = wait_records(&tls_record, 3);
    let by_rcpt = |records: &[Value], rcpt: &str| {
        records
            .iter()
            .find(|r| rcpts_of(r).iter().any(|x| x == rcpt))
            .cloned()
    };
    assert_eq!(by_rcpt(&tls, "r@req-self-signed.test").unwrap()["tls"], true);
    assert_eq!(by_rcpt(&tls, "r@opp-tls.test").unwrap()["tls"], true);
    assert_eq!(by_rcpt(&tls, "r@off.test").unwrap()["tls"], false);
    let plain = wait_records(&plain_record, 1);
    assert_eq!(by_rcpt(&plain, "r@opp-plain.test").unwrap()["tls"], false);
    let authed = wait_records(&auth_record, 1);
    assert_eq!(by_rcpt(&authed, "r@auth.test").unwrap()["tls"], true);

    let log = dir.path().join("log");
    let reason_for = |rcpt: &str| {
        wait_for(&format!("a deferral of {rcpt}"), || {
            events(&log, "deferred")
                .into_iter()
                .find(|r| r["rcpt"] == rcpt)
                .map(|r| r["reason"].as_str().unwrap().to_string())
        })
    };
    let unverified = reason_for("r@req-verified.test");
    assert!(unverified.contains("TLS handshake failed"), "{unverified}");
    let no_starttls = reason_for("r@req-plain.test");
    assert!(no_starttls.contains("does not offer STARTTLS"), "{no_starttls}");
    let refused = reason_for("r@badauth.test");
    assert!(refused.contains("535"), "{refused}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(by_rcpt(&records(&plain_record), "r@req-plain.test").is_none());
    assert!(by_rcpt(&records(&tls_record), "r@req-verified.test").is_none());
    assert!(by_rcpt(&records(&auth_record), "r@badauth.test").is_none());
}

#[test]
fn a_failed_handshake_is_remembered_and_plaintext_used_where_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (broken, record) = sink(dir.path(), "broken", &["--broken-tls"]);
    let dns = TestDns::start();
    let port = broken.addr.port();
    let egress = format!(
        "[[egress.routes]]\ndomains = [\"opp.test\"]\nsmarthost = \"127.0.0.1:{port}\"\n\
         [[egress.routes]]\ndomains = [\"req.test\"]\nsmarthost = \"127.0.0.1:{port}\"\n\
         tls = \"required\"\ntls_verify = false\n{ACCOUNTS}"
    );
    let relay = process::relay(dir.path(), &config(dir.path(), &dns, 25, &egress));
    send(&relay, "a@shop.example", &["first@opp.test"], "first");
    let first = wait_records(&record, 1);
    // Connection 1 failed its handshake; connection 2 delivered in plaintext.
    assert_eq!(
        (first[0]["conn"].as_u64(), first[0]["tls"].as_bool()),
        (Some(2), Some(false))
    );
    // After the idle connection is gone, the next message goes in plaintext straight away.
    std::thread::sleep(Duration::from_millis(700));
    send(&relay, "a@shop.example", &["second@opp.test"], "second");
    let second = wait_records(&record, 2);
    assert_eq!(
        second[1]["conn"].as_u64(),
        Some(3),
        "no second failed handshake: {second:?}"
    );
    send(&relay, "a@shop.example", &["r@req.test"], "required");
    let log = dir.path().join("log");
    let deferred = wait_for("the required-TLS deferral", || {
        events(&log, "deferred")
            .into_iter()
            .find(|r| r["rcpt"] == "r@req.test")
    });
    assert!(deferred["reason"].as_str().unwrap().contains("TLS"), "{deferred}");
}

#[test]
fn remote_capabilities_and_limits_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (chunking, chunking_record) = sink(
        dir.path(),
        "chunking",
        &["--chunking", "--rcpt-reply", "gone@chunking.test=550"],
    );
    let (lockstep, lockstep_record) = sink(dir.path(), "lockstep", &["--no-pipelining", "--max-rcpts", "2"]);
    let (dropper, dropper_record) = sink(dir.path(), "dropper", &["--drop-mid-data", "1"]);
    let (small, _small_record) = sink(dir.path(), "small", &["--size", "100"]);
    let dns = TestDns::start();
    let mut egress = String::new();
    for (domain, port) in [
        ("chunking.test", chunking.addr.port()),
        ("lockstep.test", lockstep.addr.port()),
        ("dropper.test", dropper.addr.port()),
        ("small.test", small.addr.port()),
    ] {
        egress += &format!("[[egress.routes]]\ndomains = [\"{domain}\"]\nsmarthost = \"127.0.0.1:{port}\"\n");
    }
    egress += ACCOUNTS;
    let relay = process::relay(dir.path(), &config(dir.path(), &dns, 25, &egress));
    // Its only recipient refused: the chunk that went with the RCPT is refused and skipped
    // by the server, the recipient fails, and the next message still goes.
    send(&relay, "a@shop.example", &["gone@chunking.test"], "refused");
    send(&relay, "a@shop.example", &["r@chunking.test"], "bdat");
    let five: Vec<String> = (0..5).map(|i| format!("r{i}@lockstep.test")).collect();
    send(
        &relay,
        "a@shop.example",
        &five.iter().map(String::as_str).collect::<Vec<_>>(),
        "five",
    );
    send(&relay, "a@shop.example", &["r@dropper.test"], "dropped once");
    send(&relay, "a@shop.example", &["r@small.test"], &"x".repeat(200));

    let bdat = wait_records(&chunking_record, 1);
    assert_eq!(bdat[0]["chunked"], true);
    let stored = wait_for("the BDAT message stored", || {
        maildir_messages(&dir.path().join("chunking")).pop()
    });
    assert!(String::from_utf8_lossy(&stored).contains("Subject: bdat\r\n\r\nhello\r\n"));
    let gone = wait_for("the refused recipient failed", || {
        events(&dir.path().join("log"), "failed")
            .into_iter()
            .find(|r| r["rcpt"] == "gone@chunking.test")
    });
    assert!(gone["reason"].as_str().unwrap().contains("550"), "{gone}");
    assert_eq!(
        maildir_messages(&dir.path().join("chunking")).len(),
        1,
        "only the accepted message is stored"
    );

    let lockstep_got = wait_records(&lockstep_record, 3);
    let mut sizes: Vec<usize> = lockstep_got.iter().map(|r| rcpts_of(r).len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 2, 2], "452 4.5.3: the rest go in new transactions");
    let log = dir.path().join("log");
    assert!(
        !events(&log, "deferred")
            .iter()
            .any(|r| r["rcpt"].as_str().unwrap().ends_with("lockstep.test")),
        "too many recipients is not a deferral"
    );

    let dropped = wait_records(&dropper_record, 1);
    assert_eq!(rcpts_of(&dropped[0]), ["r@dropper.test"]);
    let deferral = events(&log, "deferred")
        .into_iter()
        .find(|r| r["rcpt"] == "r@dropper.test")
        .expect("the dropped attempt was deferred");
    assert!(
        deferral["reason"].as_str().unwrap().contains("end of data"),
        "{deferral}"
    );

    let failed = wait_for("the too-large message failed", || {
        events(&log, "failed")
            .into_iter()
            .find(|r| r["rcpt"] == "r@small.test")
    });
    assert!(
        failed["reason"].as_str().unwrap().contains("SIZE 100"),
        "{failed}"
    );
}

#[test]
fn mixed_outcomes_are_delivered_once_per_recipient_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let (mx, record) = sink_at(
        dir.path(),
        "mx",
        &format!("127.0.0.1:{port}"),
        &[
            "--rcpt-reply",
            "bad@dest.example=550",
            "--rcpt-reply",
            "later@dest.example=451,451,250",
        ],
    );
    // The sender's own MX, where the bounce goes, on another loopback address.
    let (_bounces, bounce_record) = sink_at(dir.path(), "bounces", &format!("127.0.0.9:{port}"), &[]);
    let dns = dns_with(&[
        ("dest.example", "mx.dest.example", "127.0.0.1"),
        ("shop.example", "mx.shop.example", "127.0.0.9"),
    ]);
    let cfg = config(dir.path(), &dns, mx.addr.port(), ACCOUNTS);
    let mut relay = process::relay(dir.path(), &cfg);
    send(
        &relay,
        "news@shop.example",
        &["ok@dest.example", "bad@dest.example", "later@dest.example"],
        "mixed",
    );
    let log = dir.path().join("log");
    // Two deferrals of `later` mean the first attempt's outcome is in the spool.
    wait_for("two deferrals", || {
        let n = events(&log, "deferred")
            .iter()
            .filter(|r| r["rcpt"] == "later@dest.example")
            .count();
        (n >= 2).then_some(())
    });
    relay.kill();
    let _relay = process::relay(dir.path(), &cfg);

    wait_for("later delivered after the restart", || {
        records(&record)
            .iter()
            .any(|r| rcpts_of(r).contains(&"later@dest.example".to_string()))
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(800));
    let count = |rcpt: &str| {
        records(&record)
            .iter()
            .filter(|r| rcpts_of(r).iter().any(|x| x == rcpt))
            .count()
    };
    assert_eq!(
        count("ok@dest.example"),
        1,
        "delivered once, not again after the restart"
    );
    assert_eq!(count("later@dest.example"), 1);
    assert_eq!(count("bad@dest.example"), 0);

    let bounce = wait_records(&bounce_record, 1);
    // One DSN. The relay delivers at least once: killed between the sink's 250 to the DSN
    // and the DSN's own Done record, it sends that same DSN again, never a second one.
    let dsn_ids: std::collections::HashSet<String> = maildir_messages(&dir.path().join("bounces"))
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(m).into_owned();
            text.lines()
                .find(|l| l.starts_with("Message-ID:"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(dsn_ids.len(), 1, "one DSN: {dsn_ids:?}");
    assert_eq!(bounce[0]["mail_from"], "", "bounces come from the null sender");
    assert_eq!(rcpts_of(&bounce[0]), ["news@shop.example"]);
    let stored = wait_for("the DSN stored", || {
        maildir_messages(&dir.path().join("bounces")).pop()
    });
    let dsn = MessageParser::default().parse(&stored).expect("the DSN parses");
    let ct = dsn.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(
        dsn.from().unwrap().first().unwrap().address(),
        Some("MAILER-DAEMON@relay.test")
    );
    let status = dsn
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.subtype() == Some("delivery-status"))
        })
        .map(|p| String::from_utf8_lossy(p.contents()).into_owned())
        .expect("a delivery-status part");
    assert!(
        status.contains("Final-Recipient: rfc822; bad@dest.example"),
        "{status}"
    );
    assert!(status.contains("Action: failed"), "{status}");
    assert!(status.contains("Diagnostic-Code: smtp; 550"), "{status}");
    assert!(
        !status.contains("ok@dest.example") && !status.contains("later@"),
        "{status}"
    );
}

#[test]
fn null_mx_fails_at_once_and_bounces() {
    let dir = tempfile::tempdir().unwrap();
    let (bounces, bounce_record) = sink(dir.path(), "bounces", &[]);
    let dns = dns_with(&[("shop.example", "mx.shop.example", "127.0.0.1")]);
    dns.add_mx("nomail.test", 0, ".");
    let relay = process::relay(
        dir.path(),
        &config(dir.path(), &dns, bounces.addr.port(), ACCOUNTS),
    );
    send(&relay, "news@shop.example", &["x@nomail.test"], "to nowhere");
    let log = dir.path().join("log");
    let failed = wait_for("the failure", || {
        events(&log, "failed")
            .into_iter()
            .find(|r| r["rcpt"] == "x@nomail.test")
    });
    assert!(failed["reason"].as_str().unwrap().contains("null MX"), "{failed}");
    assert!(events(&log, "deferred").is_empty(), "no retry for a null MX");
    assert!(
        !events(&log, "attempt")
            .iter()
            .any(|r| r["host"].as_str().unwrap().contains("nomail")),
        "no connection is tried"
    );
    wait_records(&bounce_record, 1);
    let stored = wait_for("the DSN stored", || {
        maildir_messages(&dir.path().join("bounces")).pop()
    });
    let dsn = MessageParser::default().parse(&stored).expect("the DSN parses");
    let text = String::from_utf8_lossy(&stored);
    assert!(text.contains("Status: 5.1.10"), "{text}");
    assert!(dsn.subject().unwrap().contains("Undelivered"));
}

#[test]
fn the_clients_dsn_parameters_shape_the_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let (_mx, _) = sink_at(
        dir.path(),
        "mx",
        &format!("127.0.0.1:{port}"),
        &[
            "--rcpt-reply",
            "bad@dest.example=550",
            "--rcpt-reply",
            "quiet@dest.example=550",
        ],
    );
    let (_bounces, bounce_record) = sink_at(dir.path(), "bounces", &format!("127.0.0.9:{port}"), &[]);
    let dns = dns_with(&[
        ("dest.example", "mx.dest.example", "127.0.0.1"),
        ("shop.example", "mx.shop.example", "127.0.0.9"),
    ]);
    let relay = process::relay(dir.path(), &config(dir.path(), &dns, port, ACCOUNTS));
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    assert!(
        c.cmd("MAIL FROM:<news@shop.example> RET=FULL ENVID=env-7")
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<bad@dest.example> NOTIFY=FAILURE ORCPT=rfc822;Bad@dest.example")
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<quiet@dest.example> NOTIFY=NEVER")
            .starts_with("250")
    );
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("From: <news@shop.example>\r\nSubject: dsn params\r\n\r\nthe whole body\r\n.\r\n");
    assert!(c.reply().starts_with("250"));

    wait_records(&bounce_record, 1);
    let stored = wait_for("the DSN stored", || {
        maildir_messages(&dir.path().join("bounces")).pop()
    });
    let text = String::from_utf8_lossy(&stored).into_owned();
    assert!(text.contains("Original-Envelope-Id: env-7\r\n"), "{text}");
    assert!(
        text.contains(
            "Final-Recipient: rfc822; bad@dest.example\r\nOriginal-Recipient: rfc822;Bad@dest.example\r\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("quiet@dest.example"),
        "NOTIFY=NEVER: not reported\n{text}"
    );
    let dsn = MessageParser::default().parse(&stored).unwrap();
    let returned = dsn
        .parts
        .last()
        .unwrap()
        .message()
        .expect("RET=FULL returns the message");
    assert!(returned.body_text(0).unwrap().contains("the whole body"));
}
