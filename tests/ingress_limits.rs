//! Issue 3's error paths through the real binary, as scripted dialogues (bytes sent →
//! exact replies): every limit and timeout, SMTP smuggling, STARTTLS command injection,
//! TLS required before MAIL, AUTH without TLS and AUTH failure throttling, the PROXY
//! protocol. Each test crosses its limit, checks the reply, and checks that nothing it
//! refused was spooled.

use std::time::{Duration, Instant};

use corerelay::ingress::proxy::encode_v2;

use crate::ingress::{Setup, start};
use crate::support::process::{events, wait_for};
use crate::support::smtp::Client;

const SENDER_OK: &str = "250 2.1.0 Sender OK\r\n";
const RCPT_OK: &str = "250 2.1.5 Recipient OK\r\n";
const GO_AHEAD: &str = "354 Start mail input; end with <CRLF>.<CRLF>\r\n";
const OK: &str = "250 2.0.0 OK\r\n";
const TOO_LARGE: &str = "552 5.3.4 Message size exceeds fixed maximum message size\r\n";
const BARE: &str = "550 5.6.0 Message contains bare CR or LF; lines must end with CRLF\r\n";
const TIMEOUT: &str = "421 4.4.2 Timeout; closing connection\r\n";
const TRANSACTION: &str = "MAIL FROM:<a@local.example>\r\nRCPT TO:<r@dest.example>\r\nDATA\r\n";

fn ehlo(c: &mut Client) {
    let r = c.cmd("EHLO client.test");
    assert!(r.starts_with("250-relay.test"), "{r}");
}

/// The spooled count stays `count` (checked after the relay had time to log).
fn spooled_exactly(s: &Setup, count: usize) {
    if count > 0 {
        wait_for("the spooled records", || (s.spooled() >= count).then_some(()));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.spooled(), count, "{:?}", events(&s.log(), "spooled"));
}

#[test]
fn line_size_recipient_error_and_message_limits() {
    let smtp = r#"listen = "127.0.0.1:0"
message_max_bytes = 2000
recipients_max_count = 3
messages_per_connection_max_count = 2
errors_max_count = 4"#;
    let s = start(smtp, "", "");
    let (mut c, _) = Client::connect(s.relay.addr);
    ehlo(&mut c);
    let long_command = format!("NOOP {}\r\n", "x".repeat(510));
    let long_line = format!("From: <a@local.example>\r\n\r\n{}\r\n.\r\n", "y".repeat(999));
    c.script(&[
        (&long_command, "500 5.5.2 Line too long\r\n"),
        ("MAIL FROM:<a@local.example> SIZE=2001\r\n", TOO_LARGE),
        (
            "MAIL FROM:<a@local.example>\r\nRCPT TO:<1@d.example>\r\nRCPT TO:<2@d.example>\r\nRCPT TO:<3@d.example>\r\nRCPT TO:<4@d.example>\r\n",
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n452 4.5.3 Too many recipients\r\n",
        ),
        ("DATA\r\n", GO_AHEAD),
        (&long_line, "550 5.6.0 Message contains a line longer than allowed\r\n"),
        ("FOO\r\n", "421 4.7.0 Too many errors; closing connection\r\n"),
    ]);
    assert!(c.is_closed());

    // Too large while receiving, by DATA and by BDAT: refused after the data, drained.
    let (mut c, _) = Client::connect(s.relay.addr);
    ehlo(&mut c);
    let big = format!("{}.\r\n", format!("{}\r\n", "z".repeat(98)).repeat(25));
    let chunk = "w".repeat(2100);
    c.script(&[
        (TRANSACTION, &format!("{SENDER_OK}{RCPT_OK}{GO_AHEAD}")),
        (&big, TOO_LARGE),
        (
            &format!(
                "MAIL FROM:<a@local.example>\r\nRCPT TO:<r@dest.example>\r\nBDAT 2100 LAST\r\n{chunk}NOOP\r\n"
            ),
            &format!("{SENDER_OK}{RCPT_OK}{TOO_LARGE}{OK}"),
        ),
    ]);
    // Two messages per connection, then 421.
    let good = "From: <a@local.example>\r\n\r\nfine\r\n.\r\n";
    for _ in 0..2 {
        c.script(&[
            (TRANSACTION, &format!("{SENDER_OK}{RCPT_OK}{GO_AHEAD}")),
            (good, OK),
        ]);
    }
    c.script(&[(
        "MAIL FROM:<a@local.example>\r\n",
        "421 4.7.0 Too many messages on one connection; closing\r\n",
    )]);
    assert!(c.is_closed());
    spooled_exactly(&s, 2);
}

/// The published smuggling vectors (SEC Consult 2023): the fake end never ends the data,
/// the smuggled transaction is never executed, the message is refused.
#[test]
fn smtp_smuggling_vectors_are_refused_whole() {
    let s = start("listen = \"127.0.0.1:0\"", "", "");
    for fake_end in [
        "\n.\n",
        "\n.\r\n",
        "\r.\r",
        "\r.\r\n",
        "\r\n.\r",
        "\r\n.\n",
        "\r\n\0.\r\n",
    ] {
        let (mut c, _) = Client::connect(s.relay.addr);
        ehlo(&mut c);
        c.script(&[(TRANSACTION, &format!("{SENDER_OK}{RCPT_OK}{GO_AHEAD}"))]);
        let body = format!(
            "From: <a@local.example>\r\n\r\nhi{fake_end}MAIL FROM:<evil@local.example>\r\nRCPT TO:<victim@dest.example>\r\nDATA\r\nforged\r\n"
        );
        c.send(&body);
        let refusal = if fake_end.contains('\0') {
            "550 5.6.0 Message contains NUL bytes\r\n"
        } else {
            BARE
        };
        c.script(&[("\r\n.\r\nQUIT\r\n", &format!("{refusal}221 2.0.0 Bye\r\n"))]);
    }
    // The same through BDAT: a chunk with a bare LF is refused (it would smuggle at the
    // next hop, which gets DATA).
    let (mut c, _) = Client::connect(s.relay.addr);
    ehlo(&mut c);
    let chunk = "From: <a@local.example>\r\n\r\nhi\n.\nMAIL FROM:<evil@local.example>\r\n";
    c.script(&[(
        &format!(
            "MAIL FROM:<a@local.example>\r\nRCPT TO:<r@dest.example>\r\nBDAT {} LAST\r\n{chunk}",
            chunk.len()
        ),
        &format!("{SENDER_OK}{RCPT_OK}{BARE}"),
    )]);
    spooled_exactly(&s, 0);
    let rejects = events(&s.log(), "reject");
    assert!(
        rejects.iter().all(|r| r["from"] != "evil@local.example"),
        "{rejects:?}"
    );
}

#[test]
fn starttls_injection_require_tls_and_auth_without_tls() {
    let listeners = r#"
[[listeners]]
address = "127.0.0.1:0"
[[listeners]]
address = "127.0.0.1:0"
require_tls = true
"#;
    let s = start("", listeners, "");
    // CVE-2011-0411: a command pipelined after STARTTLS closes the connection.
    let (mut c, _) = Client::connect(s.listener(0));
    let ehlo_reply = c.cmd("EHLO client.test");
    assert!(
        ehlo_reply.contains("250-STARTTLS") || ehlo_reply.contains("250 STARTTLS"),
        "{ehlo_reply}"
    );
    assert!(
        !ehlo_reply.contains("AUTH"),
        "no AUTH offered without TLS: {ehlo_reply}"
    );
    c.script(&[
        (
            "AUTH PLAIN AGFwaS11c2VyAHg=\r\n",
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n",
        ),
        (
            "STARTTLS\r\nMAIL FROM:<a@local.example>\r\n",
            "554 5.5.1 Commands pipelined after STARTTLS; closing connection\r\n",
        ),
    ]);
    assert!(c.is_closed());
    // TLS required before MAIL.
    let (mut c, _) = Client::connect(s.listener(1));
    ehlo(&mut c);
    c.script(&[(
        "MAIL FROM:<a@local.example>\r\n",
        "530 5.7.0 Must issue a STARTTLS command first\r\n",
    )]);
    spooled_exactly(&s, 0);
}

#[test]
fn auth_failures_are_throttled_per_address() {
    let listeners = r#"
[[listeners]]
address = "127.0.0.1:0"
auth_plaintext_allowed = true
"#;
    let s = start("", listeners, "[auth]\nfailures_per_ip_max_count = 2\n");
    let (mut c, _) = Client::connect(s.relay.addr);
    let r = c.cmd("EHLO client.test");
    assert!(r.contains("AUTH PLAIN LOGIN"), "{r}");
    let wrong = "AUTH PLAIN AGFwaS11c2VyAHdyb25n\r\n"; // \0api-user\0wrong
    let right = format!(
        "AUTH PLAIN {}\r\n",
        base64_plain("api-user", crate::ingress::PASSWORD)
    );
    c.script(&[
        (wrong, "535 5.7.8 Authentication credentials invalid\r\n"),
        (wrong, "535 5.7.8 Authentication credentials invalid\r\n"),
        (
            &right,
            "454 4.7.0 Too many authentication failures from your address; try again later\r\n",
        ),
    ]);
    // Another connection from the same address is throttled too (the table is per core;
    // this relay runs one core).
    let (mut c, _) = Client::connect(s.relay.addr);
    ehlo(&mut c);
    c.script(&[(
        &right,
        "454 4.7.0 Too many authentication failures from your address; try again later\r\n",
    )]);
    spooled_exactly(&s, 0);
}

fn base64_plain(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

#[test]
fn proxy_protocol_names_the_client_and_anything_else_is_dropped() {
    let listeners = r#"
[[listeners]]
address = "127.0.0.1:0"
proxy_protocol = true
proxy_trusted_networks = ["127.0.0.0/8"]
[[listeners]]
address = "127.0.0.1:0"
proxy_protocol = true
proxy_trusted_networks = ["10.0.0.0/8"]
"#;
    let s = start(
        "connections_per_ip_max_count = 1\nconnections_per_core_max_count = 3",
        listeners,
        "",
    );
    let proxied = s.listener(0);
    let dst = "192.0.2.1:25".parse().unwrap();
    // v2: the client 203.0.113.5 belongs to account `api` by its network.
    let mut c = Client::connect_raw(proxied, &encode_v2("203.0.113.5:40000".parse().unwrap(), dst));
    assert!(c.reply().starts_with("220 relay.test"));
    ehlo(&mut c);
    c.script(&[
        (
            "MAIL FROM:<a@api.example>\r\nRCPT TO:<r@dest.example>\r\nDATA\r\n",
            &format!("{SENDER_OK}{RCPT_OK}{GO_AHEAD}"),
        ),
        ("From: <a@api.example>\r\n\r\nvia proxy\r\n.\r\n", OK),
    ]);
    // v1, with a greeting, EHLO and MAIL in the same segment as the header.
    let mut c = Client::connect_raw(
        proxied,
        b"PROXY TCP4 203.0.113.6 192.0.2.1 40001 25\r\nEHLO v1.test\r\nMAIL FROM:<b@local.example>\r\n",
    );
    assert!(c.reply().starts_with("220 relay.test"));
    assert!(c.reply().starts_with("250-relay.test"));
    // 203.0.113.6 is `api`'s network, not `local`'s: the proxied address decides.
    let r = c.reply();
    assert!(
        r.starts_with("550 5.7.1 Sender domain local.example is not allowed"),
        "{r}"
    );
    let accepted = wait_for("the accept record", || events(&s.log(), "accept").pop());
    assert_eq!(accepted["peer"], "203.0.113.5");
    assert_eq!(accepted["account"], "api");

    // Per address and per core limits count proxied addresses: a second connection of
    // 203.0.113.6 is refused while the first is open; the core takes three at most.
    let mut second = Client::connect_raw(proxied, &encode_v2("203.0.113.6:40002".parse().unwrap(), dst));
    assert_eq!(
        second.reply(),
        "421 4.7.0 Too many connections from your address; try again later\r\n"
    );
    let mut third = Client::connect_raw(proxied, &encode_v2("203.0.113.7:40003".parse().unwrap(), dst));
    assert!(third.reply().starts_with("220"));
    let mut fourth = Client::connect_raw(proxied, &encode_v2("203.0.113.8:40004".parse().unwrap(), dst));
    assert_eq!(
        fourth.reply(),
        "421 4.7.0 Too many connections; try again later\r\n"
    );
    drop((c, second, third, fourth));

    // Malformed headers and untrusted proxies: closed without a word.
    for junk in [
        &b"EHLO client.test\r\n"[..],
        b"PROXY TCP4 1.2.3.4\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x01x",
    ] {
        let mut c = Client::connect_raw(proxied, junk);
        assert!(c.is_closed(), "{junk:?}");
    }
    let mut c = Client::connect_raw(s.listener(1), &encode_v2("10.1.1.1:1".parse().unwrap(), dst));
    assert!(
        c.is_closed(),
        "127.0.0.1 is not a trusted proxy of the second listener"
    );
    spooled_exactly(&s, 1);
}

#[test]
fn timeouts_greeting_command_data_block_and_whole_transfer() {
    let smtp = r#"listen = "127.0.0.1:0"
greeting_timeout_ms = 300
command_timeout_ms = 700
data_timeout_ms = 700
data_end_timeout_ms = 1500"#;
    let s = start(smtp, "", "");
    let timed = |f: &mut dyn FnMut(&mut Client), min: Duration| {
        let (mut c, _) = Client::connect(s.relay.addr);
        f(&mut c);
        let started = Instant::now();
        assert_eq!(c.reply(), TIMEOUT);
        let waited = started.elapsed();
        assert!(
            waited + Duration::from_millis(50) >= min && waited < min * 4 + Duration::from_secs(2),
            "{waited:?} for {min:?}"
        );
        assert!(c.is_closed());
    };
    // Greeting: a client that never speaks.
    timed(&mut |_| {}, Duration::from_millis(300));
    // Command: silent after EHLO.
    timed(&mut |c| ehlo(c), Duration::from_millis(700));
    // Data block: silent inside DATA.
    timed(
        &mut |c| {
            ehlo(c);
            c.script(&[(TRANSACTION, &format!("{SENDER_OK}{RCPT_OK}{GO_AHEAD}"))]);
        },
        Duration::from_millis(700),
    );
    // Whole transfer: a line every 200 ms keeps each wait short, the transfer not.
    let (mut c, _) = Client::connect(s.relay.addr);
    ehlo(&mut c);
    c.script(&[(TRANSACTION, &format!("{SENDER_OK}{RCPT_OK}{GO_AHEAD}"))]);
    let started = Instant::now();
    let mut lines = 0;
    while started.elapsed() < Duration::from_millis(3000) {
        if c.try_send("trickle\r\n").is_err() {
            break;
        }
        lines += 1;
        std::thread::sleep(Duration::from_millis(200));
        if c.has_data() {
            break;
        }
    }
    assert_eq!(c.reply(), TIMEOUT);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && lines >= 4,
        "{waited:?}, {lines} lines"
    );
    spooled_exactly(&s, 0);
}
