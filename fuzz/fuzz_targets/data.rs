//! Fuzz target `data`: corerelay::smtp::fuzz::data_receiver on arbitrary bytes (see that function
//! for the invariants checked). Run with `fuzz/run.sh` or `cargo +nightly fuzz run data`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corerelay::smtp::fuzz::data_receiver(data));
