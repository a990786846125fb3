//! Fuzz target `proxy`: the PROXY protocol v1/v2 header parser on arbitrary bytes (see
//! corerelay::ingress::proxy::fuzz_check). Run with `fuzz/run.sh` or
//! `cargo +nightly fuzz run proxy`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corerelay::ingress::proxy::fuzz_check(data));
