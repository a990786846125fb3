//! The reliability tests' fixtures: a relay configuration that sends everything to a sink
//! (smarthost), `corerelay load` started as a child process, and the bookkeeping that
//! compares what the load tool saw acknowledged with what reached the sink.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::process::{BIN, RelayConfig};

/// A relay configuration for the reliability tests: `cores` unpinned cores listening on
/// `listen`, every message sent to the sink at `sink_port`, short retries, small segments
/// (so rotation and reclaiming happen during the test). `smtp_extra` holds more `key = value`
/// lines of `[smtp]`.
pub fn relay_config(dir: &Path, listen: &str, cores: usize, sink_port: u16, smtp_extra: &str) -> String {
    RelayConfig::new(dir, cores)
        .server(r#"hostname = "relay.test""#)
        .smtp(&format!("listen = \"{listen}\""))
        .smtp(smtp_extra)
        .spool("segment_max_bytes = 1048576")
        .section(&format!(
            r#"
[delivery]
smarthost = "127.0.0.1:{sink_port}"
connect_timeout_ms = 2000
retry_schedule_ms = [200]
idle_connection_ms = 500

[[accounts]]
id = "local"
networks = ["127.0.0.0/8"]
sender_domains = ["*"]
"#
        ))
        .build()
}

/// What to ask of `corerelay load`.
pub struct LoadRun<'a> {
    pub target: SocketAddr,
    pub messages: u64,
    pub concurrency: usize,
    pub size_bytes: usize,
    pub ack_log: &'a Path,
    pub retry_ms: u64,
}

/// Starts `corerelay load` in the background; its JSON report is its stdout.
pub fn spawn_load(run: &LoadRun) -> Child {
    spawn_load_with(run, &[])
}

/// [`spawn_load`] with more arguments.
pub fn spawn_load_with(run: &LoadRun, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args([
            "load",
            "--target",
            &run.target.to_string(),
            "--messages",
            &run.messages.to_string(),
            "--concurrency",
            &run.concurrency.to_string(),
            "--size",
            &run.size_bytes.to_string(),
            "--per-connection",
            "50",
            "--ack-log",
            run.ack_log.to_str().unwrap(),
            "--retry-ms",
            &run.retry_ms.to_string(),
            "--json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corerelay load")
}

/// The ids in an ack log, one per line.
pub fn acked_ids(ack_log: &Path) -> Vec<String> {
    std::fs::read_to_string(ack_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// For each `X-Load-Id` that arrived in the sink's maildir, the relay message id of each
/// copy (from corerelay's `Received:` header: `... with ESMTP id <id>`).
pub fn sink_ids(maildir: &Path) -> HashMap<String, Vec<String>> {
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return ids;
    };
    for e in entries.flatten() {
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let headers = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
        if let Some(id) = header_value(headers, "X-Load-Id: ") {
            let relay_id = headers
                .split(" id ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == ';').next())
                .unwrap_or_default();
            ids.entry(id).or_default().push(relay_id.to_string());
        }
    }
    ids
}

fn header_value(headers: &str, prefix: &str) -> Option<String> {
    headers
        .split("\r\n")
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_string())
}

/// Acknowledged ids compared with what reached the sink.
#[derive(Debug, Default)]
pub struct Tally {
    pub acked: usize,
    /// Acknowledged ids that never reached the sink.
    pub lost: Vec<String>,
    /// Extra copies at the sink (an id that arrived three times counts two).
    pub duplicates: usize,
    /// Of those, copies of one relay message delivered again (the relay died after the sink
    /// took it and before it recorded that).
    pub redelivered: usize,
    /// Of those, copies of a message the client sent twice (the relay died after spooling it
    /// and before the client read its `250`, so the client sent it again).
    pub resubmitted: usize,
    /// Distinct ids at the sink, acknowledged or not (a message the relay spooled but could
    /// not acknowledge before it was killed is delivered too).
    pub delivered_unique: usize,
}

pub fn tally(acked: &[String], at_sink: &HashMap<String, Vec<String>>) -> Tally {
    let mut t = Tally {
        acked: acked.len(),
        lost: acked
            .iter()
            .filter(|id| !at_sink.contains_key(*id))
            .cloned()
            .collect(),
        delivered_unique: at_sink.len(),
        ..Tally::default()
    };
    for copies in at_sink.values() {
        let mut relay_ids = copies.clone();
        relay_ids.sort();
        relay_ids.dedup();
        t.duplicates += copies.len() - 1;
        t.resubmitted += relay_ids.len() - 1;
        t.redelivered += copies.len() - relay_ids.len();
    }
    t
}

/// Resident memory (`VmRSS`, KiB) and open descriptors of a process.
pub fn rss_kib_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}
