//! Hostile clients of the HTTP listener (tracking endpoint, metrics), through the real
//! binary: forged, expired, oversized and tampered tokens never redirect; request
//! smuggling and oversized heads are refused and the connection closed; a trickled request
//! is cut at the request timeout however it trickles; connections beyond the per-core
//! limit get `503`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use corerelay::message::MessageId;
use corerelay::rewrite::token::{Claims, Keyring, TokenKind};

use crate::support::http::{exchange, get, status};
use crate::support::process::{self, RelayConfig, Running};

const SECRET: &str = "0123456789abcdef0123456789abcdef-hostile-http";

/// A one-core relay whose HTTP listener has a short request timeout and room for two
/// connections, and whose tracking key is ours (so the test can mint real tokens).
fn relay(dir: &Path) -> (Running, SocketAddr) {
    let key = dir.join("tracking-1.key");
    std::fs::write(&key, SECRET).unwrap();
    let http_port = process::free_port();
    let config = RelayConfig::new(dir, 1)
        .http(&format!(
            r#"
listen = "127.0.0.1:{http_port}"
request_timeout_ms = 1000
header_max_bytes = 2048
connections_per_core_max_count = 2
"#
        ))
        .section(&format!(
            r#"
[tracking]
keys = [{{ id = 1, secret_file = "{key}" }}]
signing_key_id = 1
base_url = "http://127.0.0.1:{http_port}"
"#,
            key = key.display(),
        ))
        .build();
    let relay = process::relay(dir, &config);
    let http = format!("127.0.0.1:{http_port}").parse().unwrap();
    (relay, http)
}

fn keyring() -> Keyring {
    Keyring::new(vec![(1, SECRET.as_bytes().to_vec())], 1).unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn click(url: &str, expires_at_unix_s: Option<u64>) -> String {
    keyring()
        .mint(&Claims {
            kind: TokenKind::Click,
            account: "shop",
            message_id: MessageId::new(1, 0, 7),
            recipient: "a@dest.example",
            link_index: 0,
            url,
            issued_at_unix_s: now_s() - 100,
            expires_at_unix_s,
        })
        .unwrap()
}

#[test]
fn forged_expired_oversized_or_tampered_tokens_never_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, http) = relay(dir.path());

    let target = "https://shop.example/reset?user=1&token=abc";
    let good = get(http, &format!("/c/{}", click(target, None)));
    assert_eq!(status(&good), 302, "{good}");
    assert!(good.contains(&format!("\r\nLocation: {target}\r\n")), "{good}");
    // A query string of the attacker's cannot change where a good token goes.
    let steered = get(
        http,
        &format!("/c/{}?url=https://evil.example/", click(target, None)),
    );
    assert!(
        steered.contains(&format!("\r\nLocation: {target}\r\n")),
        "{steered}"
    );

    let token = click(target, None);
    let (payload, mac) = token.split_once('.').unwrap();
    let mut tampered = payload.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let other_key = Keyring::new(vec![(1, vec![7u8; 40])], 1)
        .unwrap()
        .mint(&Claims {
            kind: TokenKind::Click,
            account: "shop",
            message_id: MessageId::new(1, 0, 7),
            recipient: "a@dest.example",
            link_index: 0,
            url: "https://evil.example/",
            issued_at_unix_s: now_s(),
            expires_at_unix_s: None,
        })
        .unwrap();
    let open_as_click = keyring()
        .mint(&Claims {
            kind: TokenKind::Open,
            account: "shop",
            message_id: MessageId::new(1, 0, 7),
            recipient: "a@dest.example",
            link_index: 0,
            url: "",
            issued_at_unix_s: now_s(),
            expires_at_unix_s: None,
        })
        .unwrap();
    let refused = [
        ("expired", click(target, Some(now_s() - 10))),
        ("signed with another key", other_key),
        (
            "payload changed",
            format!("{}.{mac}", String::from_utf8(tampered).unwrap()),
        ),
        ("MAC cut short", format!("{payload}.{}", &mac[..mac.len() / 2])),
        ("not base64url", "%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_string()),
        ("oversized", "A".repeat(1500)),
        ("empty", String::new()),
        ("an open token", open_as_click),
    ];
    for (what, token) in refused {
        let r = get(http, &format!("/c/{token}"));
        assert_eq!(status(&r), 404, "{what}: {r}");
        assert!(!r.contains("Location:"), "{what} must never redirect: {r}");
    }
    // Longer than the head limit altogether: refused before any token is looked at.
    let huge = get(http, &format!("/c/{}", "A".repeat(4000)));
    assert_eq!(status(&huge), 431, "{huge}");
}

#[test]
fn smuggling_and_oversized_heads_are_refused_and_the_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, http) = relay(dir.path());
    let cases: [(&str, &[u8], u16); 5] = [
        (
            "Content-Length with Transfer-Encoding",
            b"POST /u/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
            // Chunked bodies are not implemented (no route takes one), so refused whole.
            501,
        ),
        (
            "two different Content-Lengths",
            b"POST /u/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
        ),
        (
            "a header name with a space before the colon",
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n",
            400,
        ),
        (
            "a bare LF request line",
            b"GET /healthz HTTP/1.1\nHost: t\n\n GET /metrics HTTP/1.1\r\n\r\n",
            400,
        ),
        ("an oversized head", &[b'X'; 0][..], 431),
    ];
    for (what, raw, expected) in cases {
        let raw = if raw.is_empty() {
            let mut big = b"GET /healthz HTTP/1.1\r\nHost: t\r\n".to_vec();
            big.extend(format!("X-Pad: {}\r\n\r\n", "p".repeat(3000)).bytes());
            big
        } else {
            raw.to_vec()
        };
        let r = exchange(http, &raw);
        // Some of these are answered 400 by the parser and some never parse as a request
        // at all; either way exactly one response, and the smuggled request is not served.
        assert_eq!(status(&r), expected, "{what}: {r}");
        assert_eq!(
            r.matches("HTTP/1.1 ").count(),
            1,
            "{what}: one response, then close: {r}"
        );
        assert!(
            !r.contains("corerelay_"),
            "{what}: the smuggled request was served: {r}"
        );
    }
}

#[test]
fn a_trickled_request_is_cut_at_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, http) = relay(dir.path());
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut answer = Vec::new();
    'trickle: for byte in request.iter().cycle().take(request.len() * 10) {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        // One byte every 150 ms: each read would be well inside a per-read timeout.
        let until = Instant::now() + Duration::from_millis(150);
        while Instant::now() < until {
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => break 'trickle,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(
        took < Duration::from_millis(2500),
        "closed after {took:?}, the request timeout is 1 s"
    );
}

#[test]
fn connections_beyond_the_per_core_limit_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, http) = relay(dir.path());
    // Two idle connections fill the core's room (the limit is 2).
    let first = TcpStream::connect(http).unwrap();
    let second = TcpStream::connect(http).unwrap();
    process::wait_for("the two connections to be counted", || {
        let r = get(http, "/healthz");
        (status(&r) == 503).then_some(())
    });
    drop(first);
    // Room comes back when one leaves.
    let r = process::wait_for("room after a connection left", || {
        let r = get(http, "/healthz");
        (status(&r) == 200).then_some(r)
    });
    assert!(r.ends_with("ok\n"), "{r}");
    drop(second);
}
