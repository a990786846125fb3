//! DSNs parsed back with mail-parser: the structure RFC 3464 and RFC 6522 ask for, the
//! per-recipient fields, and what comes back of the original for RET.

use mail_parser::{MessageParser, MimeHeaders};

use super::*;
use crate::smtp::reply::Enhanced;

const ORIGINAL: &str = "Received: from client ([127.0.0.1])\r\n\tby relay.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n\
From: Shop <news@shop.example>\r\nTo: <a@dest.example>\r\nSubject: Sale\r\nMessage-ID: <m1@shop.example>\r\n\r\n\
Body line one.\r\nBody line two.\r\n";

fn failed_reason() -> Reason {
    Reason {
        text: "mx.dest.example[127.0.0.1]:25 said: 550 5.1.1 no such user (in reply to RCPT TO)".into(),
        status: Enhanced::new(5, 1, 1),
        reply: Some("550 5.1.1 no such user".into()),
        remote: Some("mx.dest.example".into()),
    }
}

fn input<'a>(
    reasons: &'a [(&'a str, Action, Reason)],
    original: &'a [Bytes],
    ret: Option<DsnReturn>,
) -> DsnInput<'a> {
    DsnInput {
        hostname: "relay.test",
        dsn_id: MessageId::new(1_700_000_000_000_000, 0x8000, 1),
        to: "news@shop.example",
        envid: Some("env-42"),
        ret,
        arrival_ms: 1_700_000_000_000,
        now_ms: 1_700_000_060_000,
        retry_until_ms: Some(1_700_432_000_000),
        recipients: reasons
            .iter()
            .map(|(rcpt, action, reason)| RcptReport {
                recipient: rcpt,
                orcpt: Some("rfc822;A@dest.example".into()),
                action: *action,
                reason,
            })
            .collect(),
        original,
        return_max_bytes: 1 << 20,
    }
}

fn split(original: &str) -> Vec<Bytes> {
    // Chunk boundaries anywhere, as messages arrive.
    let bytes = Bytes::copy_from_slice(original.as_bytes());
    vec![bytes.slice(..17), bytes.slice(17..150), bytes.slice(150..)]
}

#[test]
fn a_failure_report_parses_as_multipart_report_with_the_recipient_fields() {
    let expired = Reason::local(
        Enhanced::new(4, 4, 7),
        "expired after 12 attempts; last: timed out",
    );
    let reasons = [
        ("a@dest.example", Action::Failed, failed_reason()),
        ("b@dest.example", Action::Failed, expired),
    ];
    let original = split(ORIGINAL);
    let bytes = build(&input(&reasons, &original, None));
    assert!(
        !bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "CRLF only"
    );
    let msg = MessageParser::default().parse(&bytes).expect("parses");
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(
        msg.from().unwrap().first().unwrap().address(),
        Some("MAILER-DAEMON@relay.test")
    );
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("news@shop.example")
    );
    assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));

    let kinds: Vec<String> = msg
        .parts
        .iter()
        .skip(1)
        .map(|p| {
            let ct = p.content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        kinds,
        ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    );

    let status = String::from_utf8_lossy(msg.parts[2].contents()).into_owned();
    for field in [
        "Reporting-MTA: dns; relay.test\r\n",
        "Original-Envelope-Id: env-42\r\n",
        "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
        "Final-Recipient: rfc822; a@dest.example\r\nOriginal-Recipient: rfc822;A@dest.example\r\n\
         Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.dest.example\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
        "Final-Recipient: rfc822; b@dest.example\r\n",
        "Action: failed\r\nStatus: 4.4.7\r\nLast-Attempt-Date:",
    ] {
        assert!(status.contains(field), "missing {field:?} in\n{status}");
    }
    assert!(!status.contains("Will-Retry-Until"), "only for delays");
    let human = msg.body_text(0).unwrap();
    assert!(
        human.contains("<a@dest.example>: mx.dest.example[127.0.0.1]:25 said: 550 5.1.1"),
        "{human}"
    );
    let headers = String::from_utf8_lossy(msg.parts[3].contents()).into_owned();
    assert!(headers.starts_with("Received: from client"), "{headers}");
    assert!(
        headers.contains("Subject: Sale\r\nMessage-ID: <m1@shop.example>"),
        "{headers}"
    );
    assert!(!headers.contains("Body line"), "headers only by default");
}

#[test]
fn ret_full_returns_the_message_within_the_bound() {
    let reasons = [("a@dest.example", Action::Failed, failed_reason())];
    let original = split(ORIGINAL);
    let bytes = build(&input(&reasons, &original, Some(DsnReturn::Full)));
    let msg = MessageParser::default().parse(&bytes).unwrap();
    let last = msg.parts.last().unwrap();
    let returned = last.message().expect("a message/rfc822 part");
    assert_eq!(returned.subject(), Some("Sale"));
    assert!(returned.body_text(0).unwrap().contains("Body line two."));

    let mut small = input(&reasons, &original, Some(DsnReturn::Full));
    small.return_max_bytes = 100;
    let bytes = build(&small);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("Content-Type: text/rfc822-headers"),
        "too large: headers only"
    );
    assert!(!text.contains("Body line"));
}

#[test]
fn a_delay_notice_says_delayed_and_until_when() {
    let deferred = Reason::local(Enhanced::new(4, 4, 1), "mx.dest.example: connection refused");
    let reasons = [("a@dest.example", Action::Delayed, deferred)];
    let original = split(ORIGINAL);
    let bytes = build(&input(&reasons, &original, None));
    let msg = MessageParser::default().parse(&bytes).unwrap();
    assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
    let status = String::from_utf8_lossy(msg.parts[2].contents()).into_owned();
    assert!(
        status.contains("Action: delayed\r\nStatus: 4.4.1\r\n"),
        "{status}"
    );
    assert!(status.contains("Will-Retry-Until: "), "{status}");
    assert!(
        !status.contains("Diagnostic-Code"),
        "no remote reply, no diagnostic"
    );
}

#[test]
fn notify_decides_who_hears_about_what() {
    let failure_only = Notify {
        failure: true,
        ..Notify::default()
    };
    let never = Notify::default();
    let delay = Notify {
        delay: true,
        ..Notify::default()
    };
    assert!(wants_failure(None), "RFC 3461 default");
    assert!(wants_failure(Some(failure_only)));
    assert!(!wants_failure(Some(never)));
    assert!(!wants_failure(Some(delay)));
    assert!(wants_delay(Some(delay), false));
    assert!(!wants_delay(Some(failure_only), true));
    assert!(wants_delay(None, true));
    assert!(!wants_delay(None, false));
}

#[test]
fn header_block_stops_at_the_blank_line_across_chunks_and_at_the_bound() {
    let msg = split(ORIGINAL);
    let headers = header_block(&msg);
    assert!(headers.ends_with(b"Message-ID: <m1@shop.example>\r\n"));
    let endless = vec![Bytes::from("X-Filler: 0123456789\r\n".repeat(10_000))];
    let bounded = header_block(&endless);
    assert!(bounded.len() <= HEADERS_MAX_BYTES && bounded.ends_with(b"\r\n"));
    assert!(header_block(&[Bytes::from_static(b"no line end")]).is_empty());
}
