//! A plain HTTP/1.1 client for the tests: one request per connection, the raw response
//! (so tests can assert on status lines and headers exactly as sent), and the sum of a
//! metric's samples on `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `raw` on a fresh connection and reads until the server closes it (or 5 s pass).
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` with `Connection: close` (and a user agent, which the event log records);
/// the raw response.
pub fn get(addr: SocketAddr, path: &str) -> String {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: TestMail/1.0\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes())
}

/// The status code of a raw response (0 when there is none).
pub fn status(response: &str) -> u16 {
    response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The body of a raw response.
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The text of `/metrics`.
pub fn metrics(addr: SocketAddr) -> String {
    body(&get(addr, "/metrics")).to_string()
}

/// The sum over cores of a metric's samples whose labels include `labels`.
pub fn metric_sum(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
