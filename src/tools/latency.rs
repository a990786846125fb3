//! End-to-end latency per account, as the sink sees it: every message `corerelay load`
//! sends carries `X-Load-Account` and `X-Load-Sent-Us` (its send time, µs since the Unix
//! epoch); the sink notes when it arrived and keeps, per account, the count, the first
//! and last arrival, and the latencies (sent → arrived), from which the summary gives
//! messages per second and p50 / p99 / max. Sender and sink share the machine's clock.
//! Messages that carry `X-Load-Group` are counted under `group:<name>` as well, for one
//! percentile over several accounts' messages; a group's summary also carries its latencies
//! one by one, so a benchmark can pool them over repeated runs (a p99 of a few hundred
//! messages is one of their three slowest; pooled over runs it rests on more).
//!
//! Also the percentile helper the load tool uses for its 250-reply latencies.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use serde::Serialize;

/// Latencies kept per account; beyond, messages are counted but their latency is not
/// kept (a 50,000-message benchmark stays far below it).
pub const SAMPLES_MAX_COUNT: usize = 2_000_000;

pub use crate::observe::log::now_us;

/// How a group's figures are named among the accounts'.
const GROUP_PREFIX: &str = "group:";

/// The value of header `name` (ASCII, case-insensitive) in the message's header block
/// (at most the first 16 KiB, across chunks).
pub fn header(body: &[Bytes], name: &str) -> Option<String> {
    let mut head = Vec::with_capacity(4096);
    for chunk in body {
        let room = (16 << 10) - head.len();
        head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if head.len() >= 16 << 10 || head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let headers = text.split("\r\n\r\n").next().unwrap_or("");
    headers.split("\r\n").find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

#[derive(Default)]
struct Flow {
    count: u64,
    first_us: u64,
    last_us: u64,
    latencies_us: Vec<u64>,
}

/// One account's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountSummary {
    pub account: String,
    pub messages: u64,
    /// Between the first and the last arrival.
    pub messages_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Every latency in arrival order, µs: groups only (empty and left out of the JSON for
    /// single accounts, whose samples a 50,000-message run would make large).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latencies_us: Vec<u64>,
}

/// The sink's per-account bookkeeping (shared by its executors: a lock is fine in a test
/// tool; it is taken once per message).
#[derive(Default)]
pub struct Arrivals {
    flows: Mutex<BTreeMap<String, Flow>>,
}

impl Arrivals {
    /// Notes a message that arrived at `now_us`, when it carries a send time.
    pub fn arrived(&self, body: &[Bytes], now_us: u64) {
        let Some(sent_us) = header(body, "x-load-sent-us").and_then(|v| v.parse::<u64>().ok()) else {
            return;
        };
        let account = header(body, "x-load-account").unwrap_or_else(|| "-".into());
        let group = header(body, "x-load-group").map(|g| format!("{GROUP_PREFIX}{g}"));
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        for key in std::iter::once(account).chain(group) {
            let flow = flows.entry(key).or_default();
            if flow.count == 0 {
                flow.first_us = now_us;
            }
            flow.count += 1;
            flow.last_us = flow.last_us.max(now_us);
            if flow.latencies_us.len() < SAMPLES_MAX_COUNT {
                flow.latencies_us.push(now_us.saturating_sub(sent_us));
            }
        }
    }

    /// Every account's figures so far, by account name.
    pub fn summary(&self) -> Vec<AccountSummary> {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows
            .iter()
            .map(|(account, f)| {
                let mut l = f.latencies_us.clone();
                l.sort_unstable();
                let samples = match account.starts_with(GROUP_PREFIX) {
                    true => f.latencies_us.clone(),
                    false => Vec::new(),
                };
                let span_us = f.last_us.saturating_sub(f.first_us);
                AccountSummary {
                    account: account.clone(),
                    messages: f.count,
                    messages_per_second: match span_us {
                        0 => 0.0,
                        s => (f.count.saturating_sub(1)) as f64 * 1e6 / s as f64,
                    },
                    p50_ms: percentile_ms(&l, 0.50),
                    p99_ms: percentile_ms(&l, 0.99),
                    max_ms: l.last().map_or(0.0, |&v| v as f64 / 1000.0),
                    latencies_us: samples,
                }
            })
            .collect()
    }
}

impl AccountSummary {
    pub fn human(&self) -> String {
        format!(
            "account={} messages={} rate={:.1}/s e2e p50={:.2}ms p99={:.2}ms max={:.2}ms",
            self.account, self.messages, self.messages_per_second, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// The `p` percentile (0..=1) of sorted microsecond values, in milliseconds (nearest rank).
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(account: Option<&str>, sent_us: u64) -> Vec<Bytes> {
        let mut head = String::from("Received: x\r\n");
        if let Some(a) = account {
            head.push_str(&format!("X-Load-Account: {a}\r\nX-Load-Group: g\r\n"));
        }
        head.push_str(&format!("x-load-sent-us: {sent_us}\r\nSubject: s\r\n"));
        // The header block split across chunks, as a sink's reads may cut it.
        let (a, b) = head.split_at(10);
        vec![
            Bytes::from(a.to_string()),
            Bytes::from(format!("{b}\r\nX-Load-Account: body\r\n")),
        ]
    }

    #[test]
    fn arrivals_are_kept_per_account_with_percentiles() {
        let arrivals = Arrivals::default();
        for i in 0..100u64 {
            arrivals.arrived(&message(Some("small"), 1_000_000), 1_000_000 + (i + 1) * 1000);
        }
        arrivals.arrived(&message(Some("big"), 0), 5_000);
        arrivals.arrived(&message(None, 0), 7_000);
        arrivals.arrived(&[Bytes::from_static(b"Subject: no stamp\r\n\r\n")], 1);
        let s = arrivals.summary();
        let names: Vec<&str> = s.iter().map(|a| a.account.as_str()).collect();
        assert_eq!(names, ["-", "big", "group:g", "small"]);
        assert_eq!(s[2].messages, 101, "the group sums its accounts");
        assert_eq!(s[2].latencies_us.len(), 101, "a group keeps its samples");
        assert_eq!(s[2].latencies_us[..2], [1000, 2000], "in arrival order");
        let small = &s[3];
        assert!(small.latencies_us.is_empty(), "an account does not");
        let json = serde_json::to_value(&s).unwrap();
        assert!(json[2].get("latencies_us").is_some() && json[3].get("latencies_us").is_none());
        assert_eq!(small.messages, 100);
        assert_eq!((small.p50_ms, small.p99_ms, small.max_ms), (50.0, 99.0, 100.0));
        assert!((small.messages_per_second - 1000.0).abs() < 1e-6, "{small:?}");
        assert_eq!(s[1].max_ms, 5.0);
        assert!(small.human().contains("account=small messages=100"));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
        assert_eq!(percentile_ms(&[1000], 0.99), 1.0);
        let v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.99), 990.0);
        assert_eq!(percentile_ms(&v, 0.5), 500.0);
    }
}
