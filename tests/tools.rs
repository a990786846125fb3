//! The benchmark peers as the benchmark script uses them: `corerelay sink` reports its
//! count on SIGUSR1 and keeps serving, so `benches/e2e.sh` can tell when every message of
//! a run has arrived without stopping the sink; `corerelay load --body html` sends the
//! newsletter the tracking modes rewrite.

use std::process::Command;

use mail_parser::{MessageParser, MimeHeaders};

use crate::support::process;
use crate::support::smtp::Client;

const BODY: &str = "From: <a@load.example>\r\nTo: <b@sink.example>\r\nSubject: count\r\n\r\nhello\r\n";

fn send_one(addr: std::net::SocketAddr) {
    // The sink may print its address a moment before every core listens.
    process::wait_for("the sink to accept", || std::net::TcpStream::connect(addr).ok());
    let (mut c, greeting) = Client::connect(addr);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("EHLO load.test").starts_with("250"));
    let reply = c.send_mail("a@load.example", &["b@sink.example"], BODY);
    assert!(reply.starts_with("250"), "{reply}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

#[test]
fn sink_reports_its_count_on_sigusr1_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = process::sink(&dir.path().join("maildir"), &[]);
    send_one(sink.addr);
    sink.signal(libc::SIGUSR1);
    let line = sink.wait_line("corerelay sink: messages=");
    assert!(line.contains("messages=1 "), "{line}");

    // Still serving after the report; the final summary on SIGTERM counts both.
    send_one(sink.addr);
    let after = sink.terminate();
    assert!(after.iter().any(|l| l.contains("messages=2 ")), "{after:?}");
}

#[test]
fn load_sends_an_html_newsletter_with_body_html() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    process::wait_for("the sink to accept", || {
        std::net::TcpStream::connect(sink.addr).ok()
    });
    let target = sink.addr.to_string();
    let run = |body: &str| {
        Command::new(process::BIN)
            .args([
                "load",
                "--target",
                &target,
                "--messages",
                "2",
                "--concurrency",
                "1",
            ])
            .args(["--size", "20480", "--body", body])
            .output()
            .expect("run corerelay load")
    };
    let out = run("html");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let messages = process::wait_for("both messages in the maildir", || {
        Some(process::maildir_messages(&maildir)).filter(|m| m.len() == 2)
    });
    for raw in &messages {
        let m = MessageParser::default().parse(raw).expect("parses");
        assert!(m.header("X-Load-Id").is_some() && m.header("X-Load-Sent-Us").is_some());
        assert_eq!(m.content_type().and_then(|c| c.subtype()), Some("alternative"));
        let html = m.body_html(0).expect("an HTML part");
        assert!(html.contains("</body>"), "{html}");
        let links = html.matches("<a href=").count();
        assert!((40..=70).contains(&links), "{links} links in 20 KB");
    }

    let refused = run("pdf");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown body kind"));
}
