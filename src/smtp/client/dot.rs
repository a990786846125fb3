//! The message body on the wire after DATA: dot-stuffed (RFC 5321 §4.5.2) and ended with
//! `CRLF.CRLF`, written chunk by chunk into a bounded send buffer.
//!
//! The message is a list of `Bytes` chunks whose boundaries fall anywhere, even between
//! the CRLF and the dot of a line, so the writer carries "at the start of a line" and the
//! last two bytes across calls. It copies into the caller's buffer up to a bound and says
//! how much it took, so a 25 MB message goes out through a 64 KiB buffer.

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memmem;

/// Incremental dot-stuffer for one message body.
#[derive(Debug)]
pub struct DataWriter {
    /// The next input byte begins a line.
    line_start: bool,
    /// The last two bytes written (for "does the body end with CRLF?").
    tail: [u8; 2],
    written_bytes: u64,
}

impl Default for DataWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl DataWriter {
    pub fn new() -> DataWriter {
        DataWriter {
            line_start: true,
            tail: [0; 2],
            written_bytes: 0,
        }
    }

    /// Appends as much of `input` as fits, dot-stuffed, to `out` while `out` holds fewer
    /// than `out_max_bytes` (at least 2, so a stuffed `..` always fits an empty buffer).
    /// Returns how many bytes of `input` were consumed; the caller flushes `out` and
    /// calls again with the rest.
    ///
    /// A line start is any position after an LF. Bodies reach delivery with CRLF line
    /// ends only (ingress refuses bare LF), and stuffing after a bare LF as well means no
    /// byte sequence in a body can ever look like an end of data to a lenient receiver.
    pub fn write(&mut self, input: &[u8], out: &mut BytesMut, out_max_bytes: usize) -> usize {
        let out_max_bytes = out_max_bytes.max(2);
        let mut used = 0;
        while used < input.len() {
            let room = out_max_bytes.saturating_sub(out.len());
            let rest = &input[used..];
            if self.line_start && rest[0] == b'.' {
                if room < 2 {
                    break;
                }
                self.put(out, b"..");
                self.line_start = false;
                used += 1;
                continue;
            }
            if room == 0 {
                break;
            }
            // Everything up to the LF before the next line-leading dot needs no stuffing and
            // goes out in one copy.
            let span = memmem::find(rest, b"\n.").map_or(rest.len(), |p| p + 1);
            let piece = &rest[..span.min(room)];
            self.put(out, piece);
            self.line_start = piece.last() == Some(&b'\n');
            used += piece.len();
        }
        used
    }

    /// Appends the end of data: a CRLF first when the body does not end with one, then
    /// `.CRLF`. An empty body is just `.CRLF` (the DATA line's CRLF precedes it).
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.written_bytes > 0 && self.tail != *b"\r\n" {
            self.put(out, b"\r\n");
        }
        self.put(out, b".\r\n");
    }

    fn put(&mut self, out: &mut BytesMut, bytes: &[u8]) {
        out.put_slice(bytes);
        self.written_bytes += bytes.len() as u64;
        match bytes {
            [.., a, b] => self.tail = [*a, *b],
            [b] => self.tail = [self.tail[1], *b],
            [] => {}
        }
    }
}

/// Writes a whole body, dot-stuffed and terminated, to `out` (tests and small messages;
/// the delivery driver uses [`DataWriter`] with a bounded buffer).
pub fn write_data(chunks: &[Bytes], out: &mut BytesMut) {
    let mut writer = DataWriter::new();
    for chunk in chunks {
        writer.write(chunk, out, usize::MAX);
    }
    writer.finish(out);
}

/// Whether any byte of the body is outside 7-bit ASCII.
pub fn needs_eight_bit(chunks: &[Bytes]) -> bool {
    chunks.iter().any(|c| !c.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes what a receiver undoes: strips the terminator and one leading dot per line.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        let mut line_start = true;
        for &b in body {
            if !(line_start && b == b'.') {
                out.push(b);
            }
            line_start = if line_start && b == b'.' {
                false
            } else {
                b == b'\n'
            };
        }
        out
    }

    fn one_shot(body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_data(&[Bytes::copy_from_slice(body)], &mut out);
        out.to_vec()
    }

    #[test]
    fn stuffs_leading_dots_and_terminates() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"hi\r\n", b"hi\r\n.\r\n"),
            (b"hi", b"hi\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
            (b"a.b\r\n x.\r\n", b"a.b\r\n x.\r\n.\r\n"),
            (b"a\r\n.", b"a\r\n..\r\n.\r\n"),
            (b"a\r", b"a\r\r\n.\r\n"),
            (b"\r\n", b"\r\n.\r\n"),
            // Bare LF never reaches delivery, but if it did a dot after it is stuffed too.
            (b"a\n.\r\n", b"a\n..\r\n.\r\n"),
        ];
        for (body, wire) in cases {
            assert_eq!(one_shot(body), *wire, "body {:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn chunk_splits_and_buffer_bounds_do_not_change_the_output() {
        let body: &[u8] = b".first\r\nsecond\r\n.\r\n..x\r\nlast line.\r\n.";
        let expected = one_shot(body);
        assert_eq!(unstuff(&expected), [body, b"\r\n"].concat());
        for split_a in 0..=body.len() {
            for split_b in split_a..=body.len() {
                let chunks = [&body[..split_a], &body[split_a..split_b], &body[split_b..]];
                for out_max_bytes in [1, 2, 3, 7, 64] {
                    let wire = incremental(&chunks, out_max_bytes);
                    assert_eq!(
                        wire, expected,
                        "splits {split_a}/{split_b}, bound {out_max_bytes}"
                    );
                }
            }
        }
    }

    /// Drives the writer the way the connection does: flush whenever the buffer is full.
    fn incremental(chunks: &[&[u8]], out_max_bytes: usize) -> Vec<u8> {
        let mut writer = DataWriter::new();
        let mut out = BytesMut::new();
        let mut wire = Vec::new();
        for chunk in chunks {
            let mut pos = 0;
            while pos < chunk.len() {
                pos += writer.write(&chunk[pos..], &mut out, out_max_bytes);
                assert!(out.len() <= out_max_bytes.max(2));
                wire.extend_from_slice(&out.split());
            }
        }
        writer.finish(&mut out);
        wire.extend_from_slice(&out);
        wire
    }

    /// Bodies with long lines (so the search for `\n.` runs vectorised), dots at the start,
    /// at chunk starts and right after a LF at a chunk's end, cut into random chunks and
    /// written through random buffer bounds: always what stuffing byte by byte gives.
    #[test]
    fn random_bodies_match_byte_by_byte_stuffing() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let long = b"w".repeat(70);
        let tokens: [&[u8]; 6] = [b"\r\n", b".", b"..", &long, b"ab.", b"\n"];
        let mut rng = StdRng::seed_from_u64(4552);
        for _ in 0..500 {
            let mut body = Vec::new();
            for _ in 0..rng.random_range(0..30) {
                body.extend_from_slice(tokens[rng.random_range(0..tokens.len())]);
            }
            let mut expected = Vec::new();
            let mut line_start = true;
            for &b in &body {
                if line_start && b == b'.' {
                    expected.push(b'.');
                }
                expected.push(b);
                line_start = b == b'\n';
            }
            if !body.is_empty() && !body.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            expected.extend_from_slice(b".\r\n");
            let mut chunks = Vec::new();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            for out_max_bytes in [2, rng.random_range(1..100), usize::MAX] {
                assert_eq!(
                    incremental(&chunks, out_max_bytes),
                    expected,
                    "{chunks:?} {out_max_bytes}"
                );
            }
        }
    }

    #[test]
    fn eight_bit_detection() {
        assert!(!needs_eight_bit(&[Bytes::from_static(b"abc"), Bytes::new()]));
        assert!(needs_eight_bit(&[
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"\xff")
        ]));
    }
}
