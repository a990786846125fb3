//! The tracking endpoint: `GET /o/<token>` answers a 1×1 GIF, `GET /c/<token>` a 302 to
//! the link's original URL, `POST /u/<token>` records a one-click unsubscribe (RFC 8058;
//! `GET /u/<token>` shows a page with the button that posts it). Every token is verified
//! (HMAC, key id, expiry) before anything else happens; one that does not verify gets 404
//! and never a redirect, so the endpoint cannot be used as an open redirector. Each event
//! goes to the core's event log (JSON lines) and its counters.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Response;
use super::request::Request;
use crate::observe::{Event, Log};
use crate::rewrite::{Keyring, Token, TokenKind};

/// A transparent 1×1 GIF (43 bytes).
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff,
    0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// What the tracking routes need on a core.
pub struct Tracking {
    /// Replaced whole by a reload (key rotation).
    pub keyring: std::cell::RefCell<Arc<Keyring>>,
    /// The core's event log (`events-core-N.jsonl`).
    pub events: Log,
}

fn no_cache() -> Vec<(&'static str, String)> {
    vec![
        (
            "Cache-Control",
            "no-store, no-cache, must-revalidate, private".into(),
        ),
        ("Pragma", "no-cache".into()),
        ("Expires", "0".into()),
    ]
}

fn not_found() -> Response {
    Response::text(404, "not found\n")
}

impl Tracking {
    /// Answers a request under `/o/`, `/c/` or `/u/`; `None` for any other path.
    pub fn route(&self, req: &Request, method: &str, client: IpAddr) -> Option<Response> {
        let (kind, token) = if let Some(t) = req.path.strip_prefix("/o/") {
            (TokenKind::Open, t)
        } else if let Some(t) = req.path.strip_prefix("/c/") {
            (TokenKind::Click, t)
        } else if let Some(t) = req.path.strip_prefix("/u/") {
            (TokenKind::Unsubscribe, t)
        } else {
            return None;
        };
        let keyring = self.keyring.borrow().clone();
        let token = match keyring.verify(token, unix_now_s()) {
            Ok(t) if t.kind == kind => t,
            Ok(_) => return Some(self.refuse("wrong kind", client)),
            Err(e) => return Some(self.refuse(e.as_str(), client)),
        };
        Some(match (kind, method) {
            (TokenKind::Open, "GET") => self.open(token, req, client),
            (TokenKind::Click, "GET") => self.click(token, req, client),
            (TokenKind::Unsubscribe, "POST") => self.unsubscribe(token, req, client),
            (TokenKind::Unsubscribe, "GET") => unsubscribe_page(&req.path),
            _ => Response::text(405, "method not allowed\n"),
        })
    }

    fn refuse(&self, reason: &'static str, client: IpAddr) -> Response {
        self.events.emit(Event::BadToken { reason, client });
        not_found()
    }

    fn open(&self, t: Token, req: &Request, client: IpAddr) -> Response {
        self.events.emit(Event::Open {
            account: t.account,
            msg: t.message_id,
            rcpt: t.recipient,
            user_agent: req.user_agent.clone(),
            client,
        });
        Response {
            status: 200,
            content_type: "image/gif",
            headers: no_cache(),
            body: PIXEL_GIF.to_vec(),
        }
    }

    fn click(&self, t: Token, req: &Request, client: IpAddr) -> Response {
        // The URL is inside the MAC, so it is one we put there; the scheme check is a
        // second line of defence against ever redirecting to script or data URLs.
        let lower = t.url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) || t.url.contains(['\r', '\n']) {
            return self.refuse("not an http(s) URL", client);
        }
        let mut headers = no_cache();
        headers.push(("Location", t.url.clone()));
        self.events.emit(Event::Click {
            account: t.account,
            msg: t.message_id,
            rcpt: t.recipient,
            url: t.url,
            user_agent: req.user_agent.clone(),
            client,
        });
        Response {
            status: 302,
            content_type: "text/plain; charset=utf-8",
            headers,
            body: b"redirecting\n".to_vec(),
        }
    }

    fn unsubscribe(&self, t: Token, req: &Request, client: IpAddr) -> Response {
        self.events.emit(Event::Unsubscribe {
            account: t.account,
            msg: t.message_id,
            rcpt: t.recipient,
            user_agent: req.user_agent.clone(),
            client,
        });
        Response::text(200, "You are unsubscribed.\n")
    }
}

/// RFC 8058 asks mail clients to POST; a person who opens the link gets a button that does.
fn unsubscribe_page(path: &str) -> Response {
    // The path is a verified token behind /u/, made of base64url characters and one dot.
    let body = format!(
        "<!doctype html><title>Unsubscribe</title><form method=\"post\" action=\"{path}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>\n"
    );
    Response {
        status: 200,
        content_type: "text/html; charset=utf-8",
        headers: no_cache(),
        body: body.into_bytes(),
    }
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the keyring from the configured key files, or from `<spool-dir>/tracking.key`,
/// made once (32 random bytes, hex) when no key is configured, so tokens keep verifying
/// across restarts.
pub fn load_keyring(config: &crate::config::TrackingConfig, spool_dir: &Path) -> Result<Keyring, String> {
    let mut keys = Vec::new();
    if config.keys.is_empty() {
        let path = spool_dir.join("tracking.key");
        keys.push((config.signing_key_id, read_or_make_secret(&path)?));
    } else {
        for (id, path) in &config.keys {
            let secret = std::fs::read(path)
                .map_err(|e| format!("tracking key {id}: cannot read {}: {e}", path.display()))?;
            keys.push((*id, trim(secret)));
        }
    }
    Keyring::new(keys, config.signing_key_id).map_err(|e| e.to_string())
}

fn trim(mut secret: Vec<u8>) -> Vec<u8> {
    while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
        secret.pop();
    }
    secret
}

fn read_or_make_secret(path: &PathBuf) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(s) => Ok(trim(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let secret: [u8; 32] = rand::random();
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            f.write_all(hex.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(hex.into_bytes())
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;
    use crate::rewrite::Claims;

    fn keyring() -> Keyring {
        Keyring::new(vec![(1, vec![7; 32])], 1).unwrap()
    }

    fn request(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            version: 1,
            connection_close: false,
            keep_alive: false,
            user_agent: "Mail/1.0".into(),
            body: Vec::new(),
        }
    }

    fn mint(k: &Keyring, kind: TokenKind, url: &str) -> String {
        k.mint(&Claims {
            kind,
            account: "shop",
            message_id: MessageId::new(1, 0, 1),
            recipient: "r@x.example",
            link_index: 0,
            url,
            issued_at_unix_s: 1,
            expires_at_unix_s: None,
        })
        .unwrap()
    }

    #[test]
    fn verified_tokens_answer_and_forged_ones_never_redirect() {
        let k = keyring();
        let (events, _drain) = Log::new(0, 16);
        let t = Tracking {
            keyring: std::cell::RefCell::new(Arc::new(keyring())),
            events,
        };
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let click = mint(&k, TokenKind::Click, "https://shop.example/a?x=1&y=2");
        let r = t
            .route(&request("GET", &format!("/c/{click}")), "GET", ip)
            .unwrap();
        assert_eq!(r.status, 302);
        assert!(
            r.headers
                .contains(&("Location", "https://shop.example/a?x=1&y=2".into()))
        );
        let open = mint(&k, TokenKind::Open, "");
        let r = t
            .route(&request("GET", &format!("/o/{open}")), "GET", ip)
            .unwrap();
        assert_eq!((r.status, r.content_type, r.body.len()), (200, "image/gif", 43));
        // An open token is no click, a forged one is nothing, and the wrong method is refused.
        assert_eq!(
            t.route(&request("GET", &format!("/c/{open}")), "GET", ip)
                .unwrap()
                .status,
            404
        );
        let other = Keyring::new(vec![(1, vec![8; 32])], 1).unwrap();
        let forged = mint(&other, TokenKind::Click, "https://evil.example/");
        assert_eq!(
            t.route(&request("GET", &format!("/c/{forged}")), "GET", ip)
                .unwrap()
                .status,
            404
        );
        assert_eq!(
            t.route(&request("GET", "/c/https://evil.example"), "GET", ip)
                .unwrap()
                .status,
            404
        );
        let unsub = mint(&k, TokenKind::Unsubscribe, "");
        assert_eq!(
            t.route(&request("POST", &format!("/u/{unsub}")), "POST", ip)
                .unwrap()
                .status,
            200
        );
        assert_eq!(
            t.route(&request("GET", &format!("/u/{unsub}")), "GET", ip)
                .unwrap()
                .status,
            200
        );
        assert_eq!(
            t.route(&request("POST", &format!("/o/{open}")), "POST", ip)
                .unwrap()
                .status,
            405
        );
        assert!(t.route(&request("GET", "/metrics"), "GET", ip).is_none());
    }

    #[test]
    fn a_missing_key_file_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::TrackingConfig {
            keys: vec![],
            signing_key_id: 1,
            base_url: "http://127.0.0.1:8025".into(),
        };
        let a = load_keyring(&config, dir.path()).unwrap();
        let b = load_keyring(&config, dir.path()).unwrap();
        let token = mint(&a, TokenKind::Open, "");
        assert!(
            b.verify(&token, 2).is_ok(),
            "the second load reads the same secret"
        );
        let bad = crate::config::TrackingConfig {
            keys: vec![(1, dir.path().join("missing"))],
            signing_key_id: 1,
            base_url: "http://127.0.0.1:8025".into(),
        };
        assert!(
            load_keyring(&bad, dir.path())
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
