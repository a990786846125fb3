//! Rewrite throughput (MB/s of message) per fixture and per HTML size, against lol_html
//! alone on the same HTML; tracking token mint and verify.

mod support;

use std::hint::black_box;

use bytes::Bytes;
use corerelay::message::MessageId;
use corerelay::rewrite::{Claims, TokenKind, rewrite};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::Links;

fn fixtures(c: &mut Criterion) {
    let (keyring, options) = (support::keyring(), support::options());
    let ctx = support::context(&options, &keyring);
    let mut group = c.benchmark_group("rewrite/fixture");
    for name in support::FIXTURES {
        let message = support::fixture(name);
        group.throughput(Throughput::Bytes(message.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| rewrite(std::slice::from_ref(black_box(&message)), &ctx))
        });
    }
    group.finish();
}

fn sizes(c: &mut Criterion) {
    let (keyring, options) = (support::keyring(), support::options());
    let ctx = support::context(&options, &keyring);
    let mut group = c.benchmark_group("rewrite/html-size");
    for size_kb in [2, 20, 100] {
        let sparse = support::html_message(size_kb << 10, Links::Sparse);
        group.throughput(Throughput::Bytes(sparse.len() as u64));
        group.bench_function(format!("{size_kb}KB-sparse-links"), |b| {
            b.iter(|| rewrite(std::slice::from_ref(black_box(&sparse)), &ctx))
        });
        let message = support::html_message(size_kb << 10, Links::Dense);
        group.throughput(Throughput::Bytes(message.len() as u64));
        group.bench_function(format!("{size_kb}KB"), |b| {
            b.iter(|| rewrite(std::slice::from_ref(black_box(&message)), &ctx))
        });
        // The same message arriving as 4 KB socket reads.
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

/// lol_html with no handlers, then with an `a[href]` handler that rewrites nothing: the
/// floor the rewrite's HTML stage cannot beat on this machine.
fn lol_html_baseline(c: &mut Criterion) {
    let html = support::html_document(100 << 10, Links::Dense);
    let mut group = c.benchmark_group("rewrite/lol_html-baseline");
    group.throughput(Throughput::Bytes(html.len() as u64));
    group.bench_function("100KB-no-handlers", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(html.len());
            let mut rw =
                lol_html::HtmlRewriter::new(lol_html::Settings::new(), |c: &[u8]| out.extend_from_slice(c));
            rw.write(black_box(html.as_bytes())).expect("write");
            rw.end().expect("end");
            out
        })
    });
    group.bench_function("100KB-href-handler", |b| {
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
    group.finish();
}

fn tokens(c: &mut Criterion) {
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

criterion_group!(benches, fixtures, sizes, lol_html_baseline, tokens);
criterion_main!(benches);
