//! What the scripted sink writes down: one JSON line per message it took (`--record
//! FILE`), so tests can see which source address a message came from, on which connection
//! and as which message of that connection, whether it came over TLS or BDAT, and how many
//! connections were open at the time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use serde::Serialize;

/// One received message.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// When it was taken, ms since the Unix epoch.
    pub time_ms: u64,
    /// The client's (the relay's source) address.
    pub peer: IpAddr,
    /// The sink's address the client connected to.
    pub local: IpAddr,
    /// The connection, numbered from 1 in accept order.
    pub conn: u64,
    /// The message's place on its connection, from 1.
    pub index: usize,
    /// Connections open at the sink when it was taken.
    pub open_connections: usize,
    pub mail_from: &'a str,
    pub rcpts: &'a [String],
    pub size: usize,
    pub tls: bool,
    /// It came in BDAT chunks.
    pub chunked: bool,
    /// The `X-Load-Id` header of `corerelay load` messages.
    pub load_id: Option<String>,
}

/// The record file, shared by the sink's executors (a test tool: a lock is fine here).
pub struct Recorder {
    file: Mutex<BufWriter<File>>,
}

impl Recorder {
    pub fn create(path: &Path) -> Result<Recorder, String> {
        let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Recorder {
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Appends one line and flushes it, so a test reading the file sees whole lines.
    pub fn write(&self, record: &Record<'_>) {
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "{line}");
        let _ = file.flush();
    }
}

/// The value of the first `X-Load-Id:` header in the message's header block.
pub fn load_id(body: &[Bytes]) -> Option<String> {
    let first = body.first()?;
    let head = &first[..first.len().min(16 << 10)];
    let text = String::from_utf8_lossy(head);
    let headers = text.split("\r\n\r\n").next().unwrap_or("");
    headers.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-load-id")
            .then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_id_is_read_from_the_headers_only() {
        let msg = Bytes::from_static(b"Subject: x\r\nX-Load-Id: run.7\r\n\r\nX-Load-Id: body\r\n");
        assert_eq!(load_id(&[msg]), Some("run.7".into()));
        let none = Bytes::from_static(b"Subject: x\r\n\r\nX-Load-Id: body\r\n");
        assert_eq!(load_id(&[none]), None);
    }
}
