//! corerelay's HTTP/1.1 listener, on every core like the SMTP one (SO_REUSEPORT): the
//! Prometheus scrape (`/metrics`), health (`/healthz`, `/readyz`), and the tracking
//! endpoint when tracking is on.
//!
//! Requests are parsed with httparse into a bounded buffer; only GET, HEAD and small POSTs
//! are served; anything that could be read two ways by two parsers (both Content-Length
//! and Transfer-Encoding, several Content-Lengths, chunked bodies, obsolete line folding)
//! is refused with 400 and the connection closed, so request smuggling has nothing to work
//! with. Keep-alive is honoured within a request count and an idle time.

pub mod health;
pub mod request;
pub mod tracking;

use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use metrics_exporter_prometheus::PrometheusHandle;

pub use health::Health;
use request::{Parsed, Request, parse};

/// The limits of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_max_bytes: usize,
    pub body_max_bytes: usize,
    pub request_timeout: Duration,
    pub requests_per_connection_max_count: usize,
    pub connections_per_core_max_count: usize,
}

/// What a core's HTTP listener serves.
pub struct App {
    pub core: usize,
    pub limits: HttpLimits,
    pub prometheus: Option<PrometheusHandle>,
    pub health: std::sync::Arc<Health>,
    pub tracking: Option<tracking::Tracking>,
    /// HTTP connections open on this core.
    pub open_connections: std::cell::Cell<usize>,
}

/// A response: status, content type, extra headers, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }

    fn write_to(&self, out: &mut Vec<u8>, head_only: bool, close: bool) {
        let reason = match self.status {
            200 => "OK",
            204 => "No Content",
            302 => "Found",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Accepts HTTP clients on this core for ever, at most
/// `http.connections_per_core_max_count` at once: one more is answered 503 and closed.
pub async fn accept_loop(listener: TcpListener, app: Rc<App>) {
    loop {
        match listener.accept().await {
            Ok(mut stream) if app.open_connections.get() >= app.limits.connections_per_core_max_count => {
                let mut out = Vec::new();
                Response::text(503, "too many connections\n").write_to(&mut out, false, true);
                glommio::spawn_local(async move {
                    let _ = stream.write_all(&out).await;
                    let _ = stream.close().await;
                })
                .detach();
            }
            Ok(stream) => {
                let app = app.clone();
                app.open_connections.set(app.open_connections.get() + 1);
                glommio::spawn_local(async move {
                    let mut stream = stream;
                    let _ = serve(&mut stream, &app).await;
                    let _ = stream.close().await;
                    app.open_connections.set(app.open_connections.get() - 1);
                })
                .detach();
            }
            Err(_) => glommio::timer::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(stream: &mut TcpStream, app: &App) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let client = stream.peer_addr()?.ip();
    let mut buf = BytesMut::with_capacity(1024);
    let mut out = Vec::with_capacity(1024);
    for served in 1..=app.limits.requests_per_connection_max_count {
        let request = match read_request(stream, &mut buf, &app.limits).await? {
            Some(r) => r,
            None => return Ok(()),
        };
        let (response, close, head_only) = match request {
            Ok(req) => {
                let close = req.wants_close() || served == app.limits.requests_per_connection_max_count;
                (route(app, &req, client), close, req.method == "HEAD")
            }
            Err(status) => (Response::text(status, "bad request\n"), true, false),
        };
        out.clear();
        response.write_to(&mut out, head_only, close);
        stream.write_all(&out).await?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one request: `Ok(None)` when the client closed between requests, `Ok(Some(Err(
/// status)))` for a request to refuse.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limits: &HttpLimits,
) -> io::Result<Option<Result<Request, u16>>> {
    // One deadline for the whole request, so a client trickling bytes cannot hold the
    // connection longer than a client that sends nothing.
    let deadline = std::time::Instant::now() + limits.request_timeout;
    loop {
        match parse(buf, limits) {
            Parsed::Complete(request, used) => {
                let _ = buf.split_to(used);
                return Ok(Some(Ok(request)));
            }
            Parsed::Refuse(status) => return Ok(Some(Err(status))),
            Parsed::Partial => {}
        }
        let start = buf.len();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(Some(Err(408)));
        }
        stream.set_read_timeout(Some(left))?;
        buf.resize(start + 4096, 0);
        let n = match stream.read(&mut buf[start..]).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                buf.truncate(start);
                return Ok(if start == 0 { None } else { Some(Err(408)) });
            }
            Err(e) => return Err(e),
        };
        buf.truncate(start + n);
        if n == 0 {
            return Ok(None);
        }
    }
}

fn route(app: &App, req: &Request, client: std::net::IpAddr) -> Response {
    // HEAD is GET without the body (the body is left out when the response is written).
    let method = if req.method == "HEAD" {
        "GET"
    } else {
        req.method.as_str()
    };
    if let Some(response) = app.tracking.as_ref().and_then(|t| t.route(req, method, client)) {
        return response;
    }
    match (method, req.path.as_str()) {
        ("GET", "/metrics") => match &app.prometheus {
            Some(p) => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                headers: Vec::new(),
                body: p.render().into_bytes(),
            },
            None => Response::text(404, "metrics are not enabled\n"),
        },
        ("GET", "/healthz") => Response::text(200, "ok\n"),
        ("GET", "/readyz") => match app.health.not_ready_reason() {
            None => Response::text(200, "ready\n"),
            Some(why) => Response::text(503, format!("not ready: {why}\n")),
        },
        (_, "/metrics" | "/healthz" | "/readyz") => Response::text(405, "method not allowed\n"),
        _ => Response::text(404, "not found\n"),
    }
}
