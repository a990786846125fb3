//! Fuzz target `session`: corerelay::smtp::fuzz::session on arbitrary bytes (see that function
//! for the invariants checked). Run with `fuzz/run.sh` or `cargo +nightly fuzz run session`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corerelay::smtp::fuzz::session(data));
