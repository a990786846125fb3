//! DKIM signs per second per algorithm and message size, and the whole per-recipient
//! pipeline (parse, rewrite, re-encode, then sign the chunk list) per HTML size: tracking
//! only, tracking + Ed25519, tracking + RSA-2048. Times are thread CPU time (see
//! `support/cpu_time.rs`); throughput is messages (signatures) per second.

mod support;

use std::hint::black_box;

use corerelay::dkim::{PrivateKey, Signer};
use corerelay::rewrite::rewrite;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::Links;
use support::cpu_time::CpuTime;

const RSA_PEM: &[u8] = include_bytes!("../src/dkim/testdata/rsa2048-pkcs8.pem");
const ED25519_PEM: &[u8] = include_bytes!("../src/dkim/testdata/ed25519-pkcs8.pem");

fn signers() -> [(&'static str, Signer); 2] {
    let key = |pem| PrivateKey::from_pem(pem).expect("test key");
    [
        (
            "ed25519",
            Signer::with_default_headers("example.com", "ed", key(ED25519_PEM)),
        ),
        (
            "rsa2048",
            Signer::with_default_headers("example.com", "rsa", key(RSA_PEM)),
        ),
    ]
}

/// Bare signing of the untracked message, per size: the rate the pipeline is measured against.
fn sign(c: &mut Criterion<CpuTime>) {
    let mut group = c.benchmark_group("dkim/sign");
    group.throughput(Throughput::Elements(1));
    for size_kb in [2, 20, 100] {
        let message = support::html_message(size_kb << 10, Links::Dense);
        for (name, signer) in signers() {
            group.bench_function(format!("{size_kb}KB-{name}"), |b| {
                b.iter(|| signer.sign(std::slice::from_ref(black_box(&message))))
            });
        }
    }
    group.finish();
}

fn pipeline(c: &mut Criterion<CpuTime>) {
    let (keyring, options) = (support::keyring(), support::options());
    let ctx = support::context(&options, &keyring);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    for size_kb in [2, 20, 100] {
        for (density, links) in [("", Links::Dense), ("-sparse-links", Links::Sparse)] {
            let message = support::html_message(size_kb << 10, links);
            group.bench_function(format!("{size_kb}KB{density}-tracking"), |b| {
                b.iter(|| rewrite(std::slice::from_ref(black_box(&message)), &ctx))
            });
            for (name, signer) in signers() {
                group.bench_function(format!("{size_kb}KB{density}-tracking+{name}"), |b| {
                    b.iter(|| {
                        let out = rewrite(std::slice::from_ref(black_box(&message)), &ctx);
                        signer.sign(&out.chunks)
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = sign, pipeline
}
criterion_main!(benches);
