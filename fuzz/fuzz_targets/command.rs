//! Fuzz target `command`: corerelay::smtp::fuzz::command_line on arbitrary bytes (see that function
//! for the invariants checked). Run with `fuzz/run.sh` or `cargo +nightly fuzz run command`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| corerelay::smtp::fuzz::command_line(data));
