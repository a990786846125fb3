//! Shared inputs for the rewrite and DKIM benches: the fixture corpus, synthetic HTML
//! messages of a given size, and a fixed tracking context.

#![allow(dead_code)] // Each bench uses part of this.

pub mod cpu_time;

use bytes::Bytes;
use corerelay::message::MessageId;
use corerelay::rewrite::{Keyring, RewriteContext, TrackingOptions, transfer};
use criterion::Criterion;
use mail_parser::{MessageParser, MimeHeaders, PartType};

pub const FIXTURES: &[&str] = &[
    "alternative-qp.eml",
    "mixed-attachments.eml",
    "related-inline-images.eml",
    "html-base64.eml",
    "latin1-qp.eml",
    "windows1252-8bit.eml",
    "shift-jis-base64.eml",
    "nested-rfc822.eml",
    "long-lines-7bit.eml",
];

pub fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/mime/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// The criterion configuration of the rewrite and DKIM benches: thread CPU time (see
/// [`cpu_time`]), so the numbers hold on the shared machine.
pub fn criterion() -> Criterion<cpu_time::CpuTime> {
    Criterion::default().with_measurement(cpu_time::CpuTime)
}

/// Decoded bytes of the message's inline `text/html` parts (the unit of the rewrite target:
/// MB/s of HTML), as mail-parser decodes them.
pub fn html_bytes(message: &[u8]) -> usize {
    fn walk(parts: &[mail_parser::MessagePart<'_>]) -> usize {
        parts
            .iter()
            .map(|p| match &p.body {
                PartType::Html(t) if !p.content_disposition().is_some_and(|d| d.is_attachment()) => t.len(),
                PartType::Message(m) => walk(&m.parts),
                _ => 0,
            })
            .sum()
    }
    MessageParser::default()
        .parse(message)
        .map_or(0, |m| walk(&m.parts))
}

pub fn keyring() -> Keyring {
    Keyring::new(vec![(1, vec![0x5a; 32])], 1).expect("keyring")
}

pub fn options() -> TrackingOptions {
    TrackingOptions {
        base_url: "https://t.example.com".into(),
        ..TrackingOptions::default()
    }
}

pub fn context<'a>(options: &'a TrackingOptions, keyring: &'a Keyring) -> RewriteContext<'a> {
    RewriteContext {
        options,
        keyring,
        account: "bench",
        message_id: MessageId::new(1_704_186_000_000_000, 0, 1),
        recipient: "rcpt@example.net",
        issued_at_unix_s: 1_704_186_000,
        extra_headers: &[],
    }
}

/// Link density of the synthetic documents: one link per this many ~330-byte items.
#[derive(Clone, Copy, Debug)]
pub enum Links {
    /// A link in every item (~1 per 330 bytes): the worst case.
    Dense,
    /// A link in every sixth item (~1 per 2 KB): closer to a typical newsletter.
    Sparse,
}

/// A newsletter-like HTML document of about `size_bytes`.
pub fn html_document(size_bytes: usize, links: Links) -> String {
    let every = match links {
        Links::Dense => 1,
        Links::Sparse => 6,
    };
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>News</title></head>\r\n<body>\r\n",
    );
    let mut n = 0;
    while html.len() < size_bytes {
        html.push_str(&format!(
            "<tr><td style=\"padding:8px;font-family:Arial\"><p>Item {n}: caf\u{e9} lorem ipsum dolor sit amet, \
             consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.</p>\r\n"
        ));
        if n % every == 0 {
            html.push_str(&format!(
                "<a href=\"https://shop.example.com/items/{n}?utm_source=mail&amp;utm_medium=email\">Item {n}</a>"
            ));
        } else {
            html.push_str(&format!("<b>Item {n}</b> is in stock in all sizes."));
        }
        html.push_str("</td></tr>\r\n");
        n += 1;
    }
    html.push_str("</body></html>\r\n");
    html
}

/// A multipart/alternative message whose quoted-printable HTML part is about `html_bytes`.
pub fn html_message(html_bytes: usize, links: Links) -> Bytes {
    let html = html_document(html_bytes, links);
    let qp = transfer::encode_quoted_printable(html.as_bytes());
    let mut m = Vec::with_capacity(qp.len() + 1024);
    m.extend_from_slice(
        b"From: News <news@example.com>\r\nTo: rcpt@example.net\r\nSubject: Weekly\r\n\
          Date: Tue, 2 Jan 2024 09:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n\
          Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\n\
          Content-Type: text/plain; charset=utf-8\r\n\r\nWeekly news: https://shop.example.com/\r\n\r\n--b\r\n\
          Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
    );
    m.extend_from_slice(&qp);
    m.extend_from_slice(b"\r\n--b--\r\n");
    Bytes::from(m)
}
