//! A deliberately plain SMTP client for tests: it writes exactly the bytes it is given and
//! reads whole replies, so dialogues (including malformed ones) can be asserted byte for byte.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects and returns the client with the greeting already read.
    pub fn connect(addr: SocketAddr) -> (Client, String) {
        let mut c = Client::connect_raw(addr, b"");
        let greeting = c.reply();
        (c, greeting)
    }

    /// Connects and sends `prefix` (a PROXY header) before reading anything.
    pub fn connect_raw(addr: SocketAddr, prefix: &[u8]) -> Client {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.write_all(prefix).unwrap();
        let writer = stream.try_clone().unwrap();
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Runs a scripted dialogue: each input (sent as is, several commands may be
    /// pipelined) and the exact replies it must get, as wire text.
    pub fn script(&mut self, dialogue: &[(&str, &str)]) {
        for (input, expected) in dialogue {
            self.send(input);
            let replies = expected
                .split_inclusive("\r\n")
                .filter(|l| l.as_bytes().get(3) == Some(&b' '))
                .count();
            let got: String = (0..replies).map(|_| self.reply()).collect();
            assert_eq!(&got, expected, "after sending {input:?}");
        }
    }

    /// Sends, reporting a broken connection instead of panicking.
    pub fn try_send(&mut self, text: &str) -> std::io::Result<()> {
        self.writer.write_all(text.as_bytes())
    }

    /// Whether a reply (or the end of the connection) is waiting to be read.
    pub fn has_data(&mut self) -> bool {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        // A reply fills the buffer; a closed connection reads as empty: both are "ready".
        let ready = self.reader.fill_buf().is_ok();
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        ready
    }

    /// Reads one reply (all its lines), as wire text.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed; read so far: {out:?}");
            out.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
        }
    }

    pub fn send(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).unwrap();
    }

    /// Writes raw bytes (which need not be UTF-8).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Writes raw bytes; false when the server has closed the connection.
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).is_ok()
    }

    /// Reads one reply if a whole one arrives within `wait`; `None` otherwise.
    pub fn reply_within(&mut self, wait: Duration) -> Option<String> {
        self.writer.set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        let got = self.reader.read_line(&mut line);
        self.writer
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        match got {
            Ok(n) if n > 0 => Some(line),
            _ => None,
        }
    }

    /// Sends every write at once (no Nagle delay), so small writes become small segments.
    pub fn set_nodelay(&mut self) {
        self.writer.set_nodelay(true).unwrap();
    }

    /// Sends one command line (CRLF added) and returns its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }

    /// A whole transaction; returns the reply to the end of data. `body` uses CRLF lines
    /// and is dot-stuffed here.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> String {
        assert!(
            self.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"),
            "MAIL refused"
        );
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert!(r.starts_with("250"), "RCPT refused: {r}");
        }
        assert!(self.cmd("DATA").starts_with("354"));
        self.send(&stuff(body));
        self.send(".\r\n");
        self.reply()
    }

    /// True when the server has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(self.reader.read_line(&mut line), Ok(0))
    }
}

/// Dot-stuffs a CRLF body and makes sure it ends with CRLF.
pub fn stuff(body: &str) -> String {
    let mut out = String::new();
    for line in body.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out
}
