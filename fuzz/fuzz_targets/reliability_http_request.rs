//! Fuzz target: `reliability_checks::http_request` on every input (see `fuzz/reliability_checks.rs`).

#![no_main]

#[path = "../reliability_checks.rs"]
mod reliability_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| reliability_checks::http_request(data));
