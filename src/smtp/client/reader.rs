//! Server replies out of a byte stream: bytes go in as they arrive, whole replies come
//! out, in a buffer with a fixed bound.
//!
//! A reply may be split over any number of reads, and one read may hold several replies
//! (PIPELINING), so the bytes after a reply stay for the next call. The bound follows
//! from the reply limits of [`crate::smtp::reply`]: the longest acceptable reply plus one
//! read; anything longer is a protocol error rather than growing memory.

use bytes::{Buf, BytesMut};

use crate::smtp::reply::{self, ParseError, REPLY_LINE_MAX_BYTES, REPLY_LINES_MAX_COUNT, Reply};

/// The most a single read appends to the buffer.
pub const READ_CHUNK_BYTES: usize = 4096;

/// The longest acceptable reply (every line at its maximum, with CRLF).
pub const REPLY_MAX_BYTES: usize = (REPLY_LINE_MAX_BYTES + 2) * REPLY_LINES_MAX_COUNT;

/// Accumulates bytes from the server and yields complete replies.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: BytesMut,
    /// Where the space handed out by `read_space` starts, until `filled` is called.
    space_start: Option<usize>,
}

impl ReplyReader {
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// The next complete reply, if the buffer holds one; `Ok(None)` means read more.
    /// An error names what is wrong with the bytes (too long, not a reply).
    pub fn next_reply(&mut self) -> Result<Option<Reply>, &'static str> {
        self.filled(0);
        match reply::parse(&self.buf) {
            Ok((reply, used)) => {
                self.buf.advance(used);
                Ok(Some(reply))
            }
            Err(ParseError::Incomplete) if self.buf.len() >= REPLY_MAX_BYTES => Err("reply too long"),
            Err(ParseError::Incomplete) => Ok(None),
            Err(ParseError::Invalid(why)) => Err(why),
        }
    }

    /// Space for the next read: a zeroed tail of at most [`READ_CHUNK_BYTES`]. The driver
    /// reads into it and then calls [`ReplyReader::filled`] with the count it got.
    pub fn read_space(&mut self) -> &mut [u8] {
        let start = self.space_start.unwrap_or(self.buf.len());
        self.space_start = Some(start);
        self.buf.resize(start + READ_CHUNK_BYTES, 0);
        &mut self.buf[start..]
    }

    /// Keeps `n` bytes of the space handed out by [`ReplyReader::read_space`].
    pub fn filled(&mut self, n: usize) {
        if let Some(start) = self.space_start.take() {
            self.buf.truncate(start + n.min(READ_CHUNK_BYTES));
        }
    }

    /// Appends bytes (tests, and drivers that read elsewhere).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.filled(0);
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet part of a reply. Non-zero between transactions means
    /// the server sent something unasked.
    pub fn buffered_bytes(&self) -> usize {
        self.space_start.unwrap_or(self.buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_anywhere_come_out_whole_and_in_order() {
        let wire: &[u8] = b"250-mx.example\r\n250 PIPELINING\r\n550 5.1.1 no such user\r\n354 go\r\n";
        for split in 0..=wire.len() {
            let mut reader = ReplyReader::new();
            let mut codes = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                reader.feed(part);
                while let Some(reply) = reader.next_reply().unwrap() {
                    codes.push(reply.code);
                }
            }
            assert_eq!(codes, [250, 550, 354], "split at {split}");
            assert_eq!(reader.buffered_bytes(), 0);
        }
    }

    #[test]
    fn read_space_keeps_only_what_was_filled() {
        let mut reader = ReplyReader::new();
        reader.read_space()[..5].copy_from_slice(b"250 o");
        reader.filled(5);
        assert_eq!(reader.next_reply(), Ok(None));
        reader.read_space()[..3].copy_from_slice(b"k\r\n");
        reader.filled(3);
        let reply = reader.next_reply().unwrap().unwrap();
        assert_eq!((reply.code, reply.text.as_ref()), (250, "ok"));
    }

    #[test]
    fn oversized_and_malformed_replies_are_errors() {
        let mut reader = ReplyReader::new();
        reader.feed(b"250-");
        reader.feed(&[b'x'; REPLY_LINE_MAX_BYTES + 10]);
        assert!(reader.next_reply().is_err());

        let mut reader = ReplyReader::new();
        for _ in 0..=REPLY_LINES_MAX_COUNT {
            reader.feed(b"250-line\r\n");
        }
        assert!(reader.next_reply().is_err());

        let mut reader = ReplyReader::new();
        reader.feed(b"HTTP/1.1 400 Bad Request\r\n");
        assert!(reader.next_reply().is_err());
    }
}
