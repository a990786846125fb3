//! Issue 9's fuzz corpora replayed on stable: every file under `fuzz/corpus/<target>/`
//! (seeds, what fuzzing added, and any input that once crashed, kept as a regression)
//! goes through the same check the cargo-fuzz target runs (`fuzz/reliability_checks.rs`).

use std::path::Path;

#[path = "../fuzz/reliability_checks.rs"]
mod reliability_checks;

/// Runs `check` on every file of the target's corpus; returns how many there were.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no corpus", dir.display());
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails its check", path.display());
    }
}

#[test]
fn spool_record_corpus() {
    replay("reliability_spool_record", reliability_checks::spool_record);
}

#[test]
fn reply_parse_corpus() {
    replay("reliability_reply_parse", reliability_checks::reply_parse);
}

#[test]
fn reply_reader_corpus() {
    replay("reliability_reply_reader", reliability_checks::reply_reader);
}

#[test]
fn config_toml_corpus() {
    replay("reliability_config_toml", reliability_checks::config_toml);
}

#[test]
fn header_from_corpus() {
    replay("reliability_header_from", reliability_checks::header_from);
}

#[test]
fn rewrite_mime_corpus() {
    replay("reliability_rewrite_mime", reliability_checks::rewrite_mime);
}

#[test]
fn tracking_token_corpus() {
    replay("reliability_tracking_token", reliability_checks::tracking_token);
}

#[test]
fn http_request_corpus() {
    replay("reliability_http_request", reliability_checks::http_request);
}
