//! Rewrite throughput per fixture and per HTML size, the stages it is made of (mail-parser,
//! lol_html, quoted-printable), and tracking token mint and verify.
//!
//! Throughput is in decimal MB/s of decoded HTML (the unit of the target: "≥ 120 MB/s of
//! HTML"); the sizes printed at start give the message bytes, for MB/s of message. Times
//! are thread CPU time (see `support/cpu_time.rs`).

mod support;

use std::hint::black_box;

use bytes::Bytes;
use corerelay::message::MessageId;
use corerelay::rewrite::{Claims, TokenKind, rewrite, transfer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mail_parser::{HeaderName, MessageParser};
use support::Links;
use support::cpu_time::CpuTime;

fn fixtures(c: &mut Criterion<CpuTime>) {
    let (keyring, options) = (support::keyring(), support::options());
    let ctx = support::context(&options, &keyring);
    let mut group = c.benchmark_group("rewrite/fixture");
    for name in support::FIXTURES {
        let message = support::fixture(name);
        let html = support::html_bytes(&message);
        eprintln!(
            "sizes: {name}: message {} bytes, HTML {html} bytes",
            message.len()
        );
        group.throughput(Throughput::Bytes(html as u64));
        group.bench_function(*name, |b| {
            b.iter(|| rewrite(std::slice::from_ref(black_box(&message)), &ctx))
        });
    }
    group.finish();
}

fn sizes(c: &mut Criterion<CpuTime>) {
    let (keyring, options) = (support::keyring(), support::options());
    let ctx = support::context(&options, &keyring);
    let mut group = c.benchmark_group("rewrite/html-size");
    for size_kb in [2, 20, 100] {
        for (suffix, links) in [("-sparse-links", Links::Sparse), ("", Links::Dense)] {
            let message = support::html_message(size_kb << 10, links);
            let html = support::html_bytes(&message);
            eprintln!(
                "sizes: {size_kb}KB{suffix}: message {} bytes, HTML {html} bytes",
                message.len()
            );
            group.throughput(Throughput::Bytes(html as u64));
            group.bench_function(format!("{size_kb}KB{suffix}"), |b| {
                b.iter(|| rewrite(std::slice::from_ref(black_box(&message)), &ctx))
            });
        }
        // The dense message arriving as 4 KB socket reads.
        let message = support::html_message(size_kb << 10, Links::Dense);
        let chunks: Vec<Bytes> = (0..message.len())
            .step_by(4096)
            .map(|i| message.slice(i..(i + 4096).min(message.len())))
            .collect();
        group.bench_function(format!("{size_kb}KB-4KB-chunks"), |b| {
            b.iter(|| rewrite(black_box(&chunks), &ctx))
        });
    }
    group.finish();
}

/// The stages of the rewrite one by one on the dense 20 KB and 100 KB messages, each in MB/s
/// of HTML: mail-parser as the rewrite configures it (finding the parts, decoding no body),
/// lol_html with no handler and with an
/// `a[href]` handler that rewrites nothing (the floor the HTML stage cannot beat), and the
/// quoted-printable re-encode. Their serial sum bounds the whole rewrite.
fn stages(c: &mut Criterion<CpuTime>) {
    let parser = MessageParser::new()
        .with_mime_headers()
        .ignore_header(HeaderName::ContentTransferEncoding)
        .header_raw(HeaderName::ListUnsubscribe)
        .default_header_ignore();
    let mut group = c.benchmark_group("rewrite/stages");
    for size_kb in [20, 100] {
        let html = support::html_document(size_kb << 10, Links::Dense);
        let message = support::html_message(size_kb << 10, Links::Dense);
        group.throughput(Throughput::Bytes(html.len() as u64));
        group.bench_function(format!("{size_kb}KB-mail-parser"), |b| {
            b.iter(|| parser.parse(black_box(&message[..])).map(|m| m.parts.len()))
        });
        group.bench_function(format!("{size_kb}KB-lol_html-no-handlers"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(html.len());
                let mut rw = lol_html::HtmlRewriter::new(lol_html::Settings::new(), |c: &[u8]| {
                    out.extend_from_slice(c)
                });
                rw.write(black_box(html.as_bytes())).expect("write");
                rw.end().expect("end");
                out
            })
        });
        group.bench_function(format!("{size_kb}KB-lol_html-href-handler"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(html.len());
                let settings = lol_html::Settings::new().append_element_content_handler(lol_html::element!(
                    "a[href]",
                    |el| {
                        black_box(el.get_attribute("href"));
                        Ok(())
                    }
                ));
                let mut rw = lol_html::HtmlRewriter::new(settings, |c: &[u8]| out.extend_from_slice(c));
                rw.write(black_box(html.as_bytes())).expect("write");
                rw.end().expect("end");
                out
            })
        });
        group.bench_function(format!("{size_kb}KB-qp-encode"), |b| {
            b.iter(|| transfer::encode_quoted_printable(black_box(html.as_bytes())))
        });
    }
    group.finish();
}

fn tokens(c: &mut Criterion<CpuTime>) {
    let keyring = support::keyring();
    let claims = Claims {
        kind: TokenKind::Click,
        account: "bench",
        message_id: MessageId::new(1_704_186_000_000_000, 0, 1),
        recipient: "rcpt@example.net",
        link_index: 3,
        url: "https://shop.example.com/items/42?utm_source=mail&utm_medium=email",
        issued_at_unix_s: 1_704_186_000,
        expires_at_unix_s: None,
    };
    let token = keyring.mint(&claims).expect("mint");
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("mint", |b| b.iter(|| keyring.mint(black_box(&claims))));
    group.bench_function("verify", |b| {
        b.iter(|| keyring.verify(black_box(&token), 1_704_186_001))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = fixtures, sizes, stages, tokens
}
criterion_main!(benches);
