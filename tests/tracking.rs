//! Issue 4 through the real binary: a message sent through `corerelay serve` by an account
//! with tracking and DKIM arrives at the sink rewritten (one copy per recipient, tokens that
//! name the recipient) and signed (RSA-2048 and Ed25519, verified independently with
//! mail-auth), its links followed through the tracking endpoint land on the original URLs,
//! its pixel answers a GIF, and the events are in the per-core event logs.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt};

use crate::support::http::{get, metric_sum, metrics, status};
use crate::support::process::{self, RelayConfig, maildir_messages, wait_for};
use crate::support::smtp::Client;

/// Makes a key with `corerelay dkim keygen`; returns the key file and the TXT record text.
fn keygen(dir: &Path, selector: &str, algorithm: &str) -> (String, String) {
    let key = dir.join(format!("{selector}.key"));
    let out = std::process::Command::new(process::BIN)
        .args([
            "dkim",
            "keygen",
            "--domain",
            "shop.example",
            "--selector",
            selector,
        ])
        .args(["--algorithm", algorithm, "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let zone = String::from_utf8(out.stdout).unwrap();
    // `s._domainkey.shop.example. IN TXT ( "v=DKIM1; ..." "..." )`: join the strings.
    let record: String = zone.split('"').skip(1).step_by(2).collect();
    (key.to_str().unwrap().to_string(), record)
}

struct TxtCache(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _valid_until: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// mail-auth's DKIM verifier, fed the published records directly (no DNS is asked).
fn dkim_results(message: &[u8], records: &[(&str, &str)]) -> Vec<bool> {
    let cache = TxtCache(Mutex::new(HashMap::new()));
    for (selector, record) in records {
        let name = format!("{selector}._domainkey.shop.example.");
        cache.insert(
            name.into(),
            Txt::from(DomainKey::parse(record.as_bytes())),
            std::time::Instant::now(),
        );
    }
    let parsed = AuthenticatedMessage::parse(message).expect("the delivered message parses");
    let mut udp = ConnectionConfig::udp();
    udp.port = 1;
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        IpAddr::from([127, 0, 0, 1]),
        true,
        vec![udp],
    )]);
    let auth = MessageAuthenticator::new(config, ResolverOpts::default()).unwrap();
    let params = Parameters::new(&parsed).with_txt_cache(&cache);
    let out = futures_lite::future::block_on(auth.verify_dkim(params));
    out.iter().map(|o| *o.result() == DkimResult::Pass).collect()
}

const HTML_MESSAGE: &str = "From: Shop <news@shop.example>\r\n\
To: <a@dest.example>\r\n\
Subject: offers\r\n\
Message-ID: <t1@shop.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
See https://shop.example/plain\r\n\
--b1\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<html><body><p>Hi!</p>\r\n\
<a href=3D\"https://shop.example/reset?user=3D1&amp;token=3Dabc\">reset</a>\r\n\
<a href=3D\"mailto:help@shop.example\">mail us</a> <a href=3D\"#top\">top</a>\r\n\
</body></html>\r\n\
--b1--\r\n";

/// The relay under test: 2 cores, account `shop` with tracking (and one-click unsubscribe)
/// and two DKIM keys, delivering to a sink; `extra` is appended to the config.
struct Setup {
    dir: tempfile::TempDir,
    maildir: std::path::PathBuf,
    _sink: process::Running,
    relay: process::Running,
    http: SocketAddr,
    base: String,
    records: [(&'static str, String); 2],
}

fn setup(extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let (rsa_key, rsa_record) = keygen(dir.path(), "rsa", "rsa");
    let (ed_key, ed_record) = keygen(dir.path(), "ed", "ed25519");
    let http_port = process::free_port();
    let config = RelayConfig::new(dir.path(), 2)
        .http(&format!(r#"listen = "127.0.0.1:{http_port}""#))
        .section(&format!(
            r#"
[tracking]
base_url = "http://127.0.0.1:{http_port}"
[delivery]
smarthost = "{sink}"
{extra}
[[accounts]]
id = "shop"
networks = ["127.0.0.0/8"]
sender_domains = ["shop.example"]
[accounts.tracking]
unsubscribe = true
[[accounts.dkim]]
domain = "shop.example"
selector = "rsa"
key_file = "{rsa_key}"
[[accounts.dkim]]
domain = "shop.example"
selector = "ed"
key_file = "{ed_key}"
"#,
            sink = sink.addr,
        ))
        .build();
    let relay = process::relay(dir.path(), &config);
    Setup {
        maildir,
        _sink: sink,
        relay,
        http: format!("127.0.0.1:{http_port}").parse().unwrap(),
        base: format!("http://127.0.0.1:{http_port}"),
        records: [("rsa", rsa_record), ("ed", ed_record)],
        dir,
    }
}

impl Setup {
    /// Checks one delivered copy: both signatures verify over the bytes the sink received,
    /// the unsubscribe headers are there, untracked parts and links are untouched, the
    /// tracked link redirects to the original URL and the pixel answers a GIF. Returns the
    /// click token.
    fn check_copy(&self, copy: &[u8]) -> String {
        let (http, base) = (self.http, &self.base);
        let text = String::from_utf8(copy.to_vec()).unwrap();
        // Signed twice, and both signatures verify over the bytes the sink received
        // (minus the sink's own Return-Path/Delivered-To lines).
        let start = text.find("DKIM-Signature:").expect("signed");
        let delivered = &copy[start..];
        let records: Vec<(&str, &str)> = self.records.iter().map(|(s, r)| (*s, r.as_str())).collect();
        assert_eq!(dkim_results(delivered, &records), vec![true, true], "{text}");
        assert!(text.contains(&format!("List-Unsubscribe: <{base}/u/")), "{text}");
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        // The plain-text part and the mailto/fragment links are untouched.
        assert!(text.contains("See https://shop.example/plain\r\n"));
        assert!(text.contains("mailto:help@shop.example") && text.contains("#top"));

        let message = mail_parser::MessageParser::default().parse(delivered).unwrap();
        let html = message.body_html(0).unwrap().to_string();
        let click = html
            .split(&format!("{base}/c/"))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a tracked link");
        let response = get(http, &format!("/c/{click}"));
        assert_eq!(status(&response), 302);
        assert!(
            response.contains("\r\nLocation: https://shop.example/reset?user=1&token=abc\r\n"),
            "the click lands on the original URL, entities decoded: {response}"
        );
        let pixel = html
            .split(&format!("{base}/o/"))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a pixel");
        let response = get(http, &format!("/o/{pixel}"));
        assert_eq!(status(&response), 200);
        assert!(response.contains("Content-Type: image/gif"));
        click.to_string()
    }

    /// The sum over cores of a per-core counter on `/metrics`.
    fn counter(&self, name: &str) -> f64 {
        metric_sum(&metrics(self.http), name, "")
    }
}

#[test]
fn tracked_and_signed_mail_round_trips_through_the_endpoint() {
    let s = setup("");
    let (dir, http) = (&s.dir, s.http);
    let (mut c, _) = Client::connect(s.relay.addr);
    c.cmd("EHLO client.test");
    let reply = c.send_mail(
        "news@shop.example",
        &["a@dest.example", "b@dest.example"],
        HTML_MESSAGE,
    );
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");

    let copies = wait_for("one copy per recipient", || {
        let m = maildir_messages(&s.maildir);
        (m.len() == 2).then_some(m)
    });
    for copy in &copies {
        let click = s.check_copy(copy);
        // A forged token never redirects.
        let forged = format!("{}x", click);
        assert_eq!(status(&get(http, &format!("/c/{forged}"))), 404);
    }

    let log = dir.path().join("log");
    let events = wait_for("two clicks and two opens in the event logs", || {
        let mut all = Vec::new();
        for core in 0..2 {
            let path = log.join(format!("events-core-{core}.jsonl"));
            for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
                all.push(serde_json::from_str::<serde_json::Value>(line).unwrap());
            }
        }
        let count = |k: &str| all.iter().filter(|e| e["event"] == k).count();
        (count("click") == 2 && count("open") == 2 && count("bad_token") == 2).then_some(all)
    });
    let mut click_rcpts: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "click")
        .map(|e| e["rcpt"].as_str().unwrap())
        .collect();
    click_rcpts.sort_unstable();
    assert_eq!(
        click_rcpts,
        vec!["a@dest.example", "b@dest.example"],
        "tokens name their recipient"
    );
    let click = events.iter().find(|e| e["event"] == "click").unwrap();
    assert_eq!(click["account"], "shop");
    assert_eq!(click["url"], "https://shop.example/reset?user=1&token=abc");
    assert_eq!(click["user_agent"], "TestMail/1.0");
}

/// Lending: with `backlog_min_count = 0` the owner lends every transform it can to the
/// other core; what that core makes is exactly what the owner would have made (signatures
/// verify, links and pixels resolve), and the metrics show the work crossed cores.
#[test]
fn transforms_done_by_another_core_are_the_owners_transforms() {
    let s = setup("[lending]\nbacklog_min_count = 0\nwindow_count = 2\n");
    let (mut c, _) = Client::connect(s.relay.addr);
    c.cmd("EHLO client.test");
    let rcpts: Vec<String> = (0..6).map(|i| format!("r{i}@dest.example")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let reply = c.send_mail("news@shop.example", &rcpts, HTML_MESSAGE);
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");
    let copies = wait_for("one copy per recipient", || {
        let m = maildir_messages(&s.maildir);
        (m.len() == 6).then_some(m)
    });
    for copy in &copies {
        s.check_copy(copy);
    }
    let (lent, borrowed) = wait_for("the lending counters", || {
        let counts = (
            s.counter("corerelay_transforms_lent_total"),
            s.counter("corerelay_transforms_borrowed_total"),
        );
        (counts.0 > 0.0 && counts.0 == counts.1).then_some(counts)
    });
    assert!(lent <= 6.0, "at most one transform per copy: {lent}");
    assert_eq!(lent, borrowed);
    assert_eq!(s.counter("corerelay_transform_lend_timeouts_total"), 0.0);
}
