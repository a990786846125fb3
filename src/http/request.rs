//! One HTTP/1.1 request, parsed with httparse from the front of the connection's buffer,
//! with the checks that make request smuggling impossible: a request is refused (and the
//! connection closed) when its framing could be read two ways.

use bytes::BytesMut;

use super::HttpLimits;

/// The parts of a request the routes look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: String,
    /// HTTP/1.0 (`0`) or HTTP/1.1 (`1`).
    pub version: u8,
    pub connection_close: bool,
    pub keep_alive: bool,
    pub user_agent: String,
    pub body: Vec<u8>,
}

impl Request {
    /// True when the connection ends after this request.
    pub fn wants_close(&self) -> bool {
        self.connection_close || (self.version == 0 && !self.keep_alive)
    }
}

pub enum Parsed {
    /// A whole request, and the bytes it used.
    Complete(Request, usize),
    /// More bytes are needed.
    Partial,
    /// Answer with this status and close.
    Refuse(u16),
}

const HEADERS_MAX_COUNT: usize = 64;

pub fn parse(buf: &BytesMut, limits: &HttpLimits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX_COUNT];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.header_max_bytes => return Parsed::Refuse(431),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refuse(431),
        Err(_) => return Parsed::Refuse(400),
    };
    if head_len > limits.header_max_bytes {
        return Parsed::Refuse(431);
    }
    // httparse accepts a bare LF as a line end (RFC 9112 §2.2 allows it); a proxy in front
    // may not, and two readings of one request are how smuggling starts: refuse it.
    if memchr::memchr_iter(b'\n', &buf[..head_len]).any(|i| i == 0 || buf[i - 1] != b'\r') {
        return Parsed::Refuse(400);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Refuse(400);
    };
    let mut content_length: Option<usize> = None;
    let mut connection_close = false;
    let mut keep_alive = false;
    let mut user_agent = String::new();
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("");
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // No route takes a chunked body; refusing it outright removes the classic
            // CL/TE desynchronisation.
            return Parsed::Refuse(501);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Ok(n) = value.trim().parse::<usize>() else {
                return Parsed::Refuse(400);
            };
            // Two Content-Length headers, equal or not, are refused (RFC 9112 §6.3).
            if content_length.is_some() {
                return Parsed::Refuse(400);
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                connection_close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("user-agent") {
            user_agent = value.chars().take(256).collect();
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.body_max_bytes {
        return Parsed::Refuse(413);
    }
    if buf.len() < head_len + body_len {
        return Parsed::Partial;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Parsed::Complete(
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            version,
            connection_close,
            keep_alive,
            user_agent,
            body: buf[head_len..head_len + body_len].to_vec(),
        },
        head_len + body_len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_max_bytes: 1024,
            body_max_bytes: 64,
            request_timeout: Duration::from_secs(1),
            requests_per_connection_max_count: 10,
            connections_per_core_max_count: 10,
        }
    }

    fn parsed(text: &str) -> Result<(Request, usize), u16> {
        match parse(&BytesMut::from(text.as_bytes()), &limits()) {
            Parsed::Complete(r, n) => Ok((r, n)),
            Parsed::Partial => Err(0),
            Parsed::Refuse(s) => Err(s),
        }
    }

    #[test]
    fn parses_keep_alive_requests_one_at_a_time() {
        let two =
            "GET /o/abc?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: Mail\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n";
        let (r, n) = parsed(two).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("GET", "/o/abc", "x=1")
        );
        assert_eq!(r.user_agent, "Mail");
        assert!(!r.wants_close());
        let (r2, _) = parsed(&two[n..]).unwrap();
        assert_eq!(r2.path, "/healthz");
        let (old, _) = parsed("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(old.wants_close());
        let (post, _) =
            parsed("POST /u/t HTTP/1.1\r\nContent-Length: 26\r\n\r\nList-Unsubscribe=One-Click").unwrap();
        assert_eq!(post.body, b"List-Unsubscribe=One-Click");
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").unwrap_err(),
            501
        );
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err(),
            501
        );
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc").unwrap_err(),
            400
        );
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").unwrap_err(),
            400
        );
        assert_eq!(parsed("GET / HTTP/1.1\nHost: t\n\n").unwrap_err(), 400, "bare LF");
        assert_eq!(
            parsed("GET / HTTP/1.1\r\nHost: t\n\r\n").unwrap_err(),
            400,
            "one bare LF"
        );
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n").unwrap_err(),
            413
        );
        assert_eq!(
            parsed("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n").unwrap_err(),
            400,
            "obsolete folding"
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(parsed(&huge).unwrap_err(), 431);
        assert_eq!(
            parsed("GET / HTTP/1.1\r\nHost: x\r\n").unwrap_err(),
            0,
            "incomplete"
        );
    }
}
