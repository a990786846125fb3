//! Issue 3's conformance suite: the real `corerelay serve` driven by lettre, a well-kept
//! SMTP client crate, over real sockets: STARTTLS and implicit TLS with a verified
//! certificate, AUTH PLAIN and LOGIN, BDAT, SMTPUTF8 and DSN parameters, and the
//! PROXY protocol. Every accepted message goes on to a sink (as smarthost), and what the
//! sink stored is checked.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, Tls, TlsParameters};
use lettre::transport::smtp::commands::{Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailParameter, RcptParameter};
use lettre::{Address, SmtpTransport, Transport};

use crate::support::process::{self, RelayConfig, Running, events, maildir_messages, wait_for};

/// What an ingress test runs: a sink, a relay in front of it, the certificate it trusts.
pub struct Setup {
    pub dir: tempfile::TempDir,
    /// Kept so the sink runs as long as the test.
    pub _sink: Running,
    pub relay: Running,
    /// The relay's certificate (PEM), issued for `localhost`.
    pub cert_pem: String,
    /// Every listener's address, in configuration order.
    pub listeners: Vec<std::net::SocketAddr>,
}

impl Setup {
    pub fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("log")
    }

    pub fn maildir(&self) -> std::path::PathBuf {
        self.dir.path().join("maildir")
    }

    /// The address of the `index`th listener.
    pub fn listener(&self, index: usize) -> std::net::SocketAddr {
        self.listeners[index]
    }

    pub fn spooled(&self) -> usize {
        events(&self.log(), "spooled").len()
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// An account reachable only by AUTH (its network is nowhere near 127.0.0.1), and one
/// identified by address.
pub fn accounts(hash: &str) -> String {
    format!(
        r#"
[[accounts]]
id = "api"
networks = ["203.0.113.0/24"]
sender_domains = ["api.example", "bücher.example"]
credentials = [{{ username = "api-user", password_hash = "{hash}" }}, {{ username = "api-second", password_hash = "{hash}" }}]

[[accounts]]
id = "local"
networks = ["127.0.0.0/8"]
sender_domains = ["local.example"]
"#
    )
}

/// Starts a sink and a relay whose `[smtp]` section gets `smtp`, with `listeners` and
/// `extra` (more sections) appended. The relay presents a certificate for `localhost`.
pub fn start(smtp: &str, listeners: &str, extra: &str) -> Setup {
    start_with_sink(smtp, listeners, extra, &[])
}

/// [`start`] with a sink that scripts its replies (`--reply 451`…).
pub fn start_with_sink(smtp: &str, listeners: &str, extra: &str, sink_args: &[&str]) -> Setup {
    corerelay::ingress::tls::ensure_provider();
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, sink_args);
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    let hash = hash_once();
    let mut config = RelayConfig::new(dir.path(), 1)
        .server(r#"hostname = "relay.test""#)
        .smtp(smtp)
        .spool("segment_max_bytes = 1048576")
        .section(&format!(
            r#"
[tls]
cert_file = "{cert}"
key_file = "{key}"

[delivery]
smarthost = "127.0.0.1:{sink_port}"
dns_servers = ["127.0.0.1:1"]
retry_schedule_ms = [300]
idle_connection_ms = 200
"#,
            cert = cert.display(),
            key = key.display(),
            sink_port = sink.addr.port(),
        ))
        .section(extra)
        .section(&accounts(&hash));
    if !listeners.is_empty() {
        config = config.listeners(listeners);
    }
    let relay = process::relay(dir.path(), &config.build());
    let mut all = vec![relay.addr];
    all.extend(relay.more_listeners(listeners.matches("[[listeners]]").count().saturating_sub(1)));
    Setup {
        dir,
        _sink: sink,
        relay,
        cert_pem: issued.cert.pem(),
        listeners: all,
    }
}

/// One Argon2 hash for the whole test binary (hashing is slow on purpose).
fn hash_once() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| corerelay::ingress::auth::hash_password(PASSWORD).unwrap())
        .clone()
}

pub fn tls_parameters(setup: &Setup) -> TlsParameters {
    TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(setup.cert_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap()
}

fn message(from: &str, to: &str, subject: &str) -> lettre::Message {
    lettre::Message::builder()
        .from(from.parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(format!("Hello from {from}\r\n"))
        .unwrap()
}

fn transport(
    setup: &Setup,
    port: u16,
    tls: Tls,
    mechanism: Option<Mechanism>,
    user: &str,
    pw: &str,
) -> SmtpTransport {
    let mut builder = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(20)));
    if let Some(m) = mechanism {
        builder = builder
            .credentials(Credentials::new(user.into(), pw.into()))
            .authentication(vec![m]);
    }
    let _ = setup;
    builder.build()
}

#[test]
fn starttls_then_auth_plain_and_login_identify_the_account() {
    let s = start("listen = \"127.0.0.1:0\"", "", "");
    let port = s.relay.addr.port();
    for (mechanism, user, subject) in [
        (Mechanism::Plain, "api-user", "plain"),
        (Mechanism::Login, "api-second", "login"),
    ] {
        let t = transport(
            &s,
            port,
            Tls::Required(tls_parameters(&s)),
            Some(mechanism),
            user,
            PASSWORD,
        );
        t.send(&message("a@api.example", "r@dest.example", subject))
            .unwrap();
    }
    let stored = wait_for("two messages at the sink", || {
        let m = maildir_messages(&s.maildir());
        (m.len() == 2).then_some(m)
    });
    for m in &stored {
        let text = String::from_utf8_lossy(m);
        assert!(text.contains("with ESMTPSA id"), "{text}");
        assert!(text.contains("Hello from a@api.example"), "{text}");
    }
    let accepted = events(&s.log(), "accept");
    assert!(accepted.iter().all(|a| a["account"] == "api"), "{accepted:?}");

    // A wrong password: 535, nothing spooled; the envelope domain must be the account's.
    let t = transport(
        &s,
        port,
        Tls::Required(tls_parameters(&s)),
        Some(Mechanism::Plain),
        "api-user",
        "nope",
    );
    let e = t
        .send(&message("a@api.example", "r@dest.example", "x"))
        .unwrap_err();
    assert!(e.to_string().contains("535"), "{e}");
    let t = transport(
        &s,
        port,
        Tls::Required(tls_parameters(&s)),
        Some(Mechanism::Plain),
        "api-user",
        PASSWORD,
    );
    let e = t
        .send(&message("a@local.example", "r@dest.example", "x"))
        .unwrap_err();
    assert!(e.to_string().contains("550"), "{e}");
    assert_eq!(s.spooled(), 2);
}

#[test]
fn implicit_tls_listener_and_the_self_check_of_the_certificate() {
    let listeners = r#"
[[listeners]]
address = "127.0.0.1:0"
[[listeners]]
address = "127.0.0.1:0"
implicit_tls = true
"#;
    let s = start("", listeners, "");
    let implicit = s.listener(1);
    let t = transport(
        &s,
        implicit.port(),
        Tls::Wrapper(tls_parameters(&s)),
        Some(Mechanism::Plain),
        "api-user",
        PASSWORD,
    );
    t.send(&message("a@api.example", "r@dest.example", "implicit"))
        .unwrap();
    // A client that does not trust the certificate is refused by its own check.
    let untrusted = TlsParameters::builder("localhost".into()).build_rustls().unwrap();
    let t = transport(&s, implicit.port(), Tls::Wrapper(untrusted), None, "", "");
    assert!(
        t.send(&message("a@local.example", "r@dest.example", "x"))
            .is_err()
    );
    let stored = wait_for("the message at the sink", || maildir_messages(&s.maildir()).pop());
    assert!(String::from_utf8_lossy(&stored).contains("with ESMTPSA id"));
    assert_eq!(s.spooled(), 1);
}

/// `BDAT <n> [LAST]` and its chunk, sent through lettre's connection as one command.
struct Bdat<'a> {
    chunk: &'a str,
    last: bool,
}

impl fmt::Display for Bdat<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = if self.last { " LAST" } else { "" };
        write!(f, "BDAT {}{last}\r\n{}", self.chunk.len(), self.chunk)
    }
}

#[test]
fn bdat_smtputf8_and_dsn_parameters_over_starttls() {
    // Deferred twice first, so the record is still in the spool when it is read.
    let s = start_with_sink(
        "listen = \"127.0.0.1:0\"",
        "",
        "",
        &["--reply", "451", "--reply", "451"],
    );
    let client = ClientId::Domain("client.test".into());
    let mut c =
        SmtpConnection::connect(s.relay.addr, Some(Duration::from_secs(20)), &client, None, None).unwrap();
    for ext in [
        Extension::StartTls,
        Extension::SmtpUtfEight,
        Extension::EightBitMime,
    ] {
        assert!(c.server_info().supports_feature(ext), "{ext:?}");
    }
    c.starttls(&tls_parameters(&s), &client).unwrap();
    assert!(c.server_info().supports_auth_mechanism(Mechanism::Login));
    c.auth(
        &[Mechanism::Plain],
        &Credentials::new("api-user".into(), PASSWORD.into()),
    )
    .unwrap();
    let from: Address = "jürgen@bücher.example".parse().unwrap();
    let mail = Mail::new(
        Some(from),
        vec![
            MailParameter::SmtpUtfEight,
            MailParameter::Other {
                keyword: "RET".into(),
                value: Some("HDRS".into()),
            },
            MailParameter::Other {
                keyword: "ENVID".into(),
                value: Some("QQ314159+env".into()), // lettre sends it as xtext: QQ314159+2Benv
            },
        ],
    );
    assert_eq!(c.command(mail).unwrap().code().to_string(), "250");
    let rcpt = Rcpt::new(
        "empfänger@dest.example".parse().unwrap(),
        vec![
            RcptParameter::Other {
                keyword: "NOTIFY".into(),
                value: Some("SUCCESS,FAILURE".into()),
            },
            RcptParameter::Other {
                keyword: "ORCPT".into(),
                value: Some("rfc822;original+box@dest.example".into()),
            },
        ],
    );
    assert_eq!(c.command(rcpt).unwrap().code().to_string(), "250");
    let header = "From: <jürgen@bücher.example>\r\nSubject: chunks\r\n\r\n";
    let r = c
        .command(Bdat {
            chunk: header,
            last: false,
        })
        .unwrap();
    let expected = format!("{} octets received", header.len());
    assert!(r.first_line().is_some_and(|l| l.contains(&expected)), "{r:?}");
    let r = c
        .command(Bdat {
            chunk: "second chunk\r\n",
            last: true,
        })
        .unwrap();
    assert_eq!(r.code().to_string(), "250");
    c.quit().unwrap();

    // The DSN parameters are kept in the spool record (for the bounce of issue 5).
    wait_for("a deferral", || events(&s.log(), "deferred").pop());
    let segment = spool_bytes(&s.dir.path().join("spool"));
    for kept in [
        "QQ314159+env",
        "original+box@dest.example",
        "empfänger@dest.example",
        "api-user",
    ] {
        assert!(
            segment.windows(kept.len()).any(|w| w == kept.as_bytes()),
            "{kept} is in the spool record; found: {:?}",
            ["QQ314159", "original", "empf", "api-user", "chunks"]
                .iter()
                .filter(|k| segment.windows(k.len()).any(|w| w == k.as_bytes()))
                .collect::<Vec<_>>()
        );
    }
    let stored = wait_for("the message at the sink", || maildir_messages(&s.maildir()).pop());
    let text = String::from_utf8(stored).unwrap();
    assert!(text.contains("with UTF8SMTPSA id"), "{text}");
    assert!(
        text.ends_with("Subject: chunks\r\n\r\nsecond chunk\r\n"),
        "{text}"
    );
}

/// Every spool segment's bytes, concatenated.
fn spool_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(spool_bytes(&p));
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.extend(bytes);
            }
        }
    }
    out
}

#[test]
fn plain_sending_with_lettre_and_a_pipelined_group() {
    let s = start("listen = \"127.0.0.1:0\"", "", "");
    let t = transport(
        &s,
        s.relay.addr.port(),
        Tls::Required(tls_parameters(&s)),
        None,
        "",
        "",
    );
    t.send(&message("a@local.example", "r@dest.example", "by address"))
        .unwrap();
    let envelope = Envelope::new(
        Some("a@local.example".parse().unwrap()),
        vec!["r@dest.example".parse().unwrap()],
    )
    .unwrap();
    t.send_raw(
        &envelope,
        b"From: <a@local.example>\r\nSubject: raw\r\n\r\n.leading dot\r\n",
    )
    .unwrap();

    // RFC 2920: a whole transaction in one write, replies in order.
    let (mut c, _) = crate::support::smtp::Client::connect(s.relay.addr);
    c.script(&[("EHLO c.test\r\n", "")]);
    let ehlo = c.reply();
    assert!(
        ehlo.contains("250-PIPELINING") && ehlo.contains("250-CHUNKING"),
        "{ehlo}"
    );
    c.script(&[(
        "MAIL FROM:<a@local.example>\r\nRCPT TO:<r@dest.example>\r\nRCPT TO:<q@dest.example>\r\nDATA\r\n",
        "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n",
    )]);
    c.script(&[(
        "From: <a@local.example>\r\n\r\npipelined\r\n.\r\nQUIT\r\n",
        "250 2.0.0 OK\r\n221 2.0.0 Bye\r\n",
    )]);
    wait_for("three messages at the sink", || {
        (maildir_messages(&s.maildir()).len() == 3).then_some(())
    });
    let stored = maildir_messages(&s.maildir());
    assert!(
        // lettre ends the data with CRLF . CRLF after the body's own CRLF.
        stored
            .iter()
            .any(|m| m.ends_with(b"\r\n\r\n.leading dot\r\n\r\n")),
        "{:?}",
        stored
            .iter()
            .map(|m| String::from_utf8_lossy(m))
            .collect::<Vec<_>>()
    );
}

/// `corerelay sink --tls` offers STARTTLS with a self-signed certificate (for the outbound
/// TLS tests of delivery).
#[test]
fn the_sink_offers_starttls_when_asked() {
    corerelay::ingress::tls::ensure_provider();
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &["--tls"]);
    let any_certificate = TlsParameters::builder("sink.corerelay.localhost".into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    let t = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(sink.addr.port())
        .tls(Tls::Required(any_certificate))
        .timeout(Some(Duration::from_secs(20)))
        .build();
    t.send(&message("a@local.example", "r@dest.example", "to the sink"))
        .unwrap();
    let stored = wait_for("the message in the maildir", || maildir_messages(&maildir).pop());
    assert!(String::from_utf8_lossy(&stored).contains("Subject: to the sink"));
}
