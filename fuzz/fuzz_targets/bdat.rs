//! Fuzz target `bdat`: corerelay::smtp::fuzz::bdat_receiver on arbitrary bytes (see that function
//! for the invariants checked). Run with `fuzz/run.sh` or `cargo +nightly fuzz run bdat`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corerelay::smtp::fuzz::bdat_receiver(data));
