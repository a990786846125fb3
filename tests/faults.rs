//! The fault-injection and pacing knobs of the test tools that the soak script relies on
//! (issue 9): `corerelay sink --random-fail` refuses the share it is told to, with 451 or
//! 550, and notes each refusal; `corerelay load --rate` paces its messages.

use std::time::Instant;

use crate::support::load::{self, LoadRun};
use crate::support::process;
use crate::support::smtp::Client;

#[test]
fn a_sink_with_random_fail_refuses_and_notes_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &["--random-fail", "100"]);
    let (mut c, _) = Client::connect(sink.addr);
    c.cmd("EHLO t");
    let mut codes = Vec::new();
    for i in 0..20 {
        let body = format!("From: <a@b.example>\r\nX-Load-Id: t.{i}\r\n\r\nx\r\n");
        let r = c.send_mail("a@b.example", &["c@d.example"], &body);
        codes.push(r[..3].to_string());
        if r.starts_with('4') || r.starts_with('5') {
            assert!(c.cmd("RSET").starts_with("250"));
        }
    }
    assert!(codes.iter().all(|c| c == "451" || c == "550"), "{codes:?}");
    assert!(codes.iter().any(|c| c == "451") && codes.iter().any(|c| c == "550"));
    let notes = std::fs::read_to_string(maildir.join("refused.log")).unwrap();
    let lines: Vec<&str> = notes.lines().collect();
    assert_eq!(lines.len(), 20);
    for (i, (line, code)) in lines.iter().zip(&codes).enumerate() {
        assert_eq!(*line, format!("{code} t.{i}"));
    }
    assert!(process::maildir_messages(&maildir).is_empty());
}

#[test]
fn load_with_a_rate_paces_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let ack_log = dir.path().join("acked.txt");
    let started = Instant::now();
    let mut child = load::spawn_load_with(
        &LoadRun {
            target: sink.addr,
            messages: 40,
            concurrency: 4,
            size_bytes: 100,
            ack_log: &ack_log,
            retry_ms: 0,
        },
        &["--rate", "40"],
    );
    assert!(child.wait().unwrap().success());
    let took = started.elapsed().as_secs_f64();
    // 40 messages at 40 per second: the last is due after 0.975 s.
    assert!(took >= 0.95, "40 messages at 40/s took {took:.2} s");
    assert_eq!(load::acked_ids(&ack_log).len(), 40);
}
