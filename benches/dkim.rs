//! DKIM signs per second per algorithm on a 20 KB message, and the whole per-recipient
//! pipeline (rewrite, then sign the chunk list) per algorithm.

mod support;

use std::hint::black_box;

use corerelay::dkim::{PrivateKey, Signer};
use corerelay::rewrite::rewrite;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::Links;

const RSA_PEM: &[u8] = include_bytes!("../src/dkim/testdata/rsa2048-pkcs8.pem");
const ED25519_PEM: &[u8] = include_bytes!("../src/dkim/testdata/ed25519-pkcs8.pem");

fn signers() -> [(&'static str, Signer); 2] {
    let key = |pem| PrivateKey::from_pem(pem).expect("test key");
    [
        (
            "rsa2048",
            Signer::with_default_headers("example.com", "rsa", key(RSA_PEM)),
        ),
        (
            "ed25519",
            Signer::with_default_headers("example.com", "ed", key(ED25519_PEM)),
        ),
    ]
}

fn sign(c: &mut Criterion) {
    let message = support::html_message(20 << 10, Links::Dense);
    let mut group = c.benchmark_group("dkim/sign-20KB");
    group.throughput(Throughput::Elements(1));
    for (name, signer) in signers() {
        group.bench_function(name, |b| {
            b.iter(|| signer.sign(std::slice::from_ref(black_box(&message))))
        });
    }
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let (keyring, options) = (support::keyring(), support::options());
    let ctx = support::context(&options, &keyring);
    let mut group = c.benchmark_group("pipeline/rewrite+sign");
    group.throughput(Throughput::Elements(1));
    for size_kb in [2, 20, 100] {
        for (density, links) in [("", Links::Dense), ("-sparse-links", Links::Sparse)] {
            let message = support::html_message(size_kb << 10, links);
            for (name, signer) in signers() {
                group.bench_function(format!("{size_kb}KB{density}-{name}"), |b| {
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

criterion_group!(benches, sign, pipeline);
criterion_main!(benches);
