//! The BDAT receiver (RFC 3030 CHUNKING): turns the chunks of one transaction into the
//! message body, without copying it, and applies the same text rules as DATA.
//!
//! A chunk is exactly the announced number of bytes after the `BDAT <n>` line; nothing in
//! it is interpreted as a command or a terminator, so the chunk framing itself cannot be
//! smuggled through. The danger is downstream: corerelay may send the message on with
//! DATA, where a bare LF or a `\n.\n` in the text would become the next hop's smuggling
//! vector. So unless the transaction declared `BODY=BINARYMIME`, the bytes of all chunks
//! (as one stream, since a CRLF may straddle two chunks) must follow the DATA rules: CRLF
//! line endings, no NUL, lines within `text_line_max_bytes`. A bare LF is refused or, in
//! normalize mode, read as CRLF. A BINARYMIME body may hold any bytes; only its size is
//! checked, and it may only be relayed with BDAT (see [`crate::message::BodyType`]).
//!
//! Chunk bytes are split off the front of the input buffer as `Bytes` slices. As in the
//! DATA receiver, pieces shorter than [`SMALL_PIECE_BYTES`] are gathered into one staged
//! chunk, which bounds the bookkeeping per body byte. After an error the receiver keeps
//! consuming the announced bytes, collecting nothing, so the client stays in sync.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr3;

use crate::smtp::data::{DataError, SMALL_PIECE_BYTES};

/// Receives the chunks of one BDAT transaction. Make a new one per transaction.
#[derive(Debug)]
pub struct ChunkReceiver {
    message_max_bytes: usize,
    text_line_max_bytes: usize,
    /// BODY=BINARYMIME: no line rules.
    binary: bool,
    normalize_bare_lf: bool,
    /// Bytes of the current chunk not received yet.
    left_bytes: u64,
    body_bytes: usize,
    /// Bytes of the current text line so far, CR included.
    line_bytes: usize,
    /// The last text byte was a CR (possibly at the end of the previous chunk).
    after_cr: bool,
    error: Option<DataError>,
    staged: BytesMut,
}

impl ChunkReceiver {
    pub fn new(message_max_bytes: usize, text_line_max_bytes: usize, binary: bool) -> ChunkReceiver {
        ChunkReceiver {
            message_max_bytes,
            text_line_max_bytes,
            binary,
            normalize_bare_lf: false,
            left_bytes: 0,
            body_bytes: 0,
            line_bytes: 0,
            after_cr: false,
            error: None,
            staged: BytesMut::new(),
        }
    }

    /// Reads a bare LF in text as CRLF when `on` (never applies to BINARYMIME).
    pub fn normalizing_bare_lf(mut self, on: bool) -> ChunkReceiver {
        self.normalize_bare_lf = on;
        self
    }

    /// Starts a chunk of `chunk_bytes`. A chunk that would take the message past its
    /// limit is refused at once (its bytes will still be consumed), without waiting for
    /// them.
    pub fn start_chunk(&mut self, chunk_bytes: u64) {
        self.left_bytes = chunk_bytes;
        let room = (self.message_max_bytes - self.body_bytes.min(self.message_max_bytes)) as u64;
        if chunk_bytes > room {
            self.error.get_or_insert(DataError::TooLarge);
        }
    }

    /// Consumes chunk bytes from the front of `buf`, appending body slices to `body`.
    /// Returns true when the whole chunk has been consumed; bytes after it stay in `buf`.
    pub fn feed(&mut self, buf: &mut BytesMut, body: &mut Vec<Bytes>) -> bool {
        let take = buf
            .len()
            .min(usize::try_from(self.left_bytes).unwrap_or(usize::MAX));
        self.left_bytes -= take as u64;
        let mut piece = buf.split_to(take);
        if self.error.is_some() {
            self.drop_body(body);
            return self.left_bytes == 0;
        }
        if self.binary {
            self.body_bytes += piece.len();
            self.emit(piece, body);
            return self.left_bytes == 0;
        }
        // Text: check line by line; a bare LF in normalize mode splits the piece there.
        let mut at = 0;
        while at < piece.len() {
            match self.scan(&piece[at..]) {
                Scan::Clean(n) => at += n,
                Scan::BareLf(n) => {
                    let before = piece.split_to(at + n);
                    piece.advance(1);
                    at = 0;
                    self.emit(before, body);
                    self.count(2);
                    self.line_bytes = 0;
                    self.stage(b"\r\n", body);
                }
            }
            if self.error.is_some() {
                self.drop_body(body);
                return self.left_bytes == 0;
            }
        }
        self.emit(piece, body);
        self.left_bytes == 0
    }

    /// Ends the message after its LAST chunk: the body length, or the first error (the
    /// body is then emptied). A CR as the very last byte is a bare CR.
    pub fn finish(&mut self, body: &mut Vec<Bytes>) -> Result<usize, DataError> {
        if !self.binary && self.after_cr {
            self.error.get_or_insert(DataError::BareLineEnding);
        }
        if let Some(error) = self.error {
            self.drop_body(body);
            return Err(error);
        }
        if !self.staged.is_empty() {
            body.push(self.staged.split().freeze());
        }
        Ok(self.body_bytes)
    }

    /// The first error so far (the transaction fails when a chunk ends with one).
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// Scans text up to (not including) a bare LF to normalize, or all of `bytes`. Runs of
    /// ordinary bytes are found with `memchr3` and counted at once; only CR, LF and NUL (and
    /// the byte after a CR) are looked at one by one. The result, errors included, is the
    /// same as checking every byte in turn.
    fn scan(&mut self, bytes: &[u8]) -> Scan {
        let mut at = 0;
        while at < bytes.len() {
            if !self.after_cr {
                let plain = memchr3(b'\r', b'\n', 0, &bytes[at..]).unwrap_or(bytes.len() - at);
                if let Some(crossed) = self.count_run(plain) {
                    return Scan::Clean(at + crossed);
                }
                at += plain;
                if at == bytes.len() {
                    break;
                }
            }
            match self.scan_byte(bytes[at]) {
                Some(Scan::BareLf(_)) => return Scan::BareLf(at),
                Some(Scan::Clean(_)) => return Scan::Clean(at + 1),
                None => at += 1,
            }
        }
        Scan::Clean(bytes.len())
    }

    /// Checks one byte after a CR, or a CR, LF or NUL: `None` to go on, `Some` to stop
    /// (a bare LF to normalize here, or an error recorded at this byte).
    fn scan_byte(&mut self, b: u8) -> Option<Scan> {
        match (self.after_cr, b) {
            (true, b'\n') => {
                self.count(1);
                self.line_bytes = 0;
                self.after_cr = false;
                return self.error.map(|_| Scan::Clean(0));
            }
            (true, _) => self.fail(DataError::BareLineEnding),
            (false, b'\n') if self.normalize_bare_lf => return Some(Scan::BareLf(0)),
            (false, b'\n') => self.fail(DataError::BareLineEnding),
            _ => {}
        }
        if b == 0 {
            self.fail(DataError::Nul);
        }
        self.after_cr = b == b'\r';
        self.count(1);
        self.error.map(|_| Scan::Clean(0))
    }

    /// Counts a run of `n` ordinary bytes as `count(1)` would one by one. Returns `None`
    /// when all fit, or how many bytes were counted up to and including the one that
    /// crossed a limit (whose error is then recorded).
    fn count_run(&mut self, n: usize) -> Option<usize> {
        let body_room_bytes = self.message_max_bytes.saturating_sub(self.body_bytes);
        let line_room_bytes = self.text_line_max_bytes.saturating_sub(self.line_bytes);
        let room_bytes = body_room_bytes.min(line_room_bytes);
        if n <= room_bytes {
            self.body_bytes += n;
            self.line_bytes += n;
            return None;
        }
        // The byte after the room crosses a limit; `count` checks the message limit first.
        self.count(room_bytes + 1);
        Some(room_bytes + 1)
    }

    fn count(&mut self, n: usize) {
        self.body_bytes = self.body_bytes.saturating_add(n);
        self.line_bytes = self.line_bytes.saturating_add(n);
        if self.body_bytes > self.message_max_bytes {
            self.fail(DataError::TooLarge);
        } else if self.line_bytes > self.text_line_max_bytes {
            self.fail(DataError::LineTooLong);
        }
    }

    fn fail(&mut self, error: DataError) {
        self.error.get_or_insert(error);
    }

    fn drop_body(&mut self, body: &mut Vec<Bytes>) {
        *body = Vec::new();
        self.staged = BytesMut::new();
    }

    fn stage(&mut self, bytes: &[u8], body: &mut Vec<Bytes>) {
        self.staged.extend_from_slice(bytes);
        if self.staged.len() >= SMALL_PIECE_BYTES {
            body.push(self.staged.split().freeze());
        }
    }

    /// Appends a piece to the body: small ones via the staging buffer, others as they are.
    fn emit(&mut self, piece: BytesMut, body: &mut Vec<Bytes>) {
        if piece.is_empty() {
            return;
        }
        if piece.len() < SMALL_PIECE_BYTES {
            self.stage(&piece, body);
            return;
        }
        if !self.staged.is_empty() {
            body.push(self.staged.split().freeze());
        }
        body.push(piece.freeze());
    }
}

/// What a text scan found.
enum Scan {
    /// This many bytes are clean (or an error was recorded at the last of them).
    Clean(usize),
    /// A bare LF to normalize at this index.
    BareLf(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the chunks (each split into `split`-byte reads) and returns the result of
    /// `finish` with the joined body, or the error after the chunk that raised it.
    fn run(chunks: &[&[u8]], split: usize, receiver: ChunkReceiver) -> Result<Vec<u8>, DataError> {
        let mut receiver = receiver;
        let mut body = Vec::new();
        for chunk in chunks {
            receiver.start_chunk(chunk.len() as u64);
            let mut buf = BytesMut::new();
            let mut done = chunk.is_empty();
            for part in chunk.chunks(split.max(1)) {
                buf.extend_from_slice(part);
                done = receiver.feed(&mut buf, &mut body);
                assert!(buf.is_empty(), "a chunk's bytes are all consumed");
            }
            assert!(done, "the chunk is complete");
            if let Some(e) = receiver.error() {
                return Err(e);
            }
        }
        let len = receiver.finish(&mut body)?;
        let joined: Vec<u8> = body.concat();
        assert_eq!(joined.len(), len);
        Ok(joined)
    }

    fn text() -> ChunkReceiver {
        ChunkReceiver::new(1000, 20, false)
    }

    #[test]
    fn text_chunks_follow_the_data_rules_across_chunk_boundaries() {
        use DataError::*;
        type Case<'a> = (&'a [&'a [u8]], Result<&'a [u8], DataError>);
        let cases: &[Case] = &[
            (&[b"Subject: x\r\n\r\nhi\r\n"], Ok(b"Subject: x\r\n\r\nhi\r\n")),
            (&[b"a\r", b"\nb\r\n", b""], Ok(b"a\r\nb\r\n")),
            (&[b".\r\n..\r\n"], Ok(b".\r\n..\r\n")),
            (&[b"a\nb\r\n"], Err(BareLineEnding)),
            (&[b"a\r", b"b\r\n"], Err(BareLineEnding)),
            (&[b"a\r"], Err(BareLineEnding)),
            (&[b"a\0\r\n"], Err(Nul)),
            (&[b"01234567890123456789x\r\n"], Err(LineTooLong)),
            (&[b"\r\n.\n"], Err(BareLineEnding)),
            (&[b"\r\n.\r"], Err(BareLineEnding)),
        ];
        for (chunks, expected) in cases {
            for split in [1, 3, 64] {
                let got = run(chunks, split, text());
                assert_eq!(got.as_deref(), expected.as_deref(), "{chunks:?} split {split}");
            }
        }
    }

    #[test]
    fn binarymime_takes_any_bytes_and_normalize_fixes_bare_lf() {
        let binary = ChunkReceiver::new(1000, 20, true);
        let bytes: &[u8] = b"\0\r\n.\n\r.\r\xff";
        assert_eq!(run(&[bytes, bytes], 2, binary).unwrap(), [bytes, bytes].concat());
        let normalize = text().normalizing_bare_lf(true);
        assert_eq!(
            run(&[b"a\n.\nb", b"\r\n"], 1, normalize).unwrap(),
            b"a\r\n.\r\nb\r\n"
        );
        let normalize = text().normalizing_bare_lf(true);
        assert_eq!(run(&[b"a\rb\r\n"], 1, normalize), Err(DataError::BareLineEnding));
    }

    #[test]
    fn size_is_checked_when_a_chunk_is_announced_and_while_it_arrives() {
        let mut r = ChunkReceiver::new(10, 1000, true);
        r.start_chunk(11);
        assert_eq!(
            r.error(),
            Some(DataError::TooLarge),
            "refused before its bytes arrive"
        );
        let mut buf = BytesMut::from(&[b'x'; 11][..]);
        let mut body = Vec::new();
        assert!(r.feed(&mut buf, &mut body));
        assert!(body.is_empty() && buf.is_empty(), "drained, nothing kept");
        assert_eq!(
            run(&[b"12345", b"678901"], 3, ChunkReceiver::new(10, 1000, true)),
            Err(DataError::TooLarge)
        );
        // With normalize, the added CRs count too.
        let r = ChunkReceiver::new(9, 1000, false).normalizing_bare_lf(true);
        assert_eq!(run(&[b"a\nb\nc\nd\n\r\n"], 4, r), Err(DataError::TooLarge));
    }

    #[test]
    fn large_chunks_are_slices_of_the_input_not_copies() {
        let mut r = ChunkReceiver::new(1 << 20, 1 << 20, false);
        let line = [vec![b'x'; 998], b"\r\n".to_vec()].concat();
        let mut buf = BytesMut::from(&line.repeat(8)[..]);
        let start = buf.as_ptr();
        r.start_chunk(buf.len() as u64);
        let mut body = Vec::new();
        assert!(r.feed(&mut buf, &mut body));
        assert_eq!(body.len(), 1);
        assert_eq!(
            body[0].as_ptr(),
            start,
            "the body chunk points into the read buffer"
        );
    }

    /// Edge cases of the run-skipping scan: special bytes at read and chunk boundaries,
    /// lines exactly at the limit (CRLF counted), and limits crossed inside a long run.
    #[test]
    fn special_bytes_at_boundaries_and_lines_at_the_limit() {
        use DataError::*;
        // The line limit is 20 bytes with its CRLF.
        let at_limit = [b"x".repeat(18), b"\r\n".to_vec()].concat();
        let over_by_cr = [b"x".repeat(19), b"\r\n".to_vec()].concat();
        let over_in_run = [b"x".repeat(40), b"\r\n".to_vec()].concat();
        let two_at_limit = at_limit.repeat(2);
        type Case<'a> = (Vec<&'a [u8]>, Result<Vec<u8>, DataError>);
        let cases: Vec<Case> = vec![
            (vec![&at_limit], Ok(at_limit.clone())),
            (vec![&two_at_limit], Ok(two_at_limit.clone())),
            (vec![&at_limit[..19], &at_limit[19..]], Ok(at_limit.clone())),
            (vec![&over_by_cr], Err(LineTooLong)),
            (vec![&over_in_run], Err(LineTooLong)),
            (vec![b"ab\r", b"\n", b"\r", b"\n"], Ok(b"ab\r\n\r\n".to_vec())),
            (vec![b"ab\r", b"x\r\n"], Err(BareLineEnding)),
            (vec![b"ab\r", b"\0\r\n"], Err(BareLineEnding)),
            (vec![b"ab", b"\n"], Err(BareLineEnding)),
            (vec![b"\r\n", b"\n"], Err(BareLineEnding)),
            (vec![b"ab", b"\0"], Err(Nul)),
        ];
        for (chunks, expected) in &cases {
            for split in [1, 2, 7, 64] {
                assert_eq!(&run(chunks, split, text()), expected, "{chunks:?} split {split}");
            }
        }
        // The message limit crossed inside a run of plain bytes (a normalized bare LF grows
        // the body past what the chunk announced): 3 + 29 bytes against 31. The 29th `x` is
        // also the 29th byte of its line; on a tie the message limit is reported.
        let input = [b"a\n".to_vec(), b"x".repeat(29)].concat();
        let r = |line_max| ChunkReceiver::new(31, line_max, false).normalizing_bare_lf(true);
        for split in [1, 4, 64] {
            assert_eq!(run(&[&input], split, r(1000)), Err(TooLarge));
            assert_eq!(run(&[&input], split, r(28)), Err(TooLarge));
            assert_eq!(run(&[&input], split, r(27)), Err(LineTooLong));
        }
    }

    /// Random text, dense in CR, LF, NUL and lines near the limit, cut into random chunks
    /// and reads: the receiver gives what a byte-by-byte model of the rules gives.
    #[test]
    fn random_text_matches_a_byte_by_byte_model() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let long = b"y".repeat(40);
        let tokens: [&[u8]; 9] = [
            b"\r\n",
            b"\r\n",
            b"abc",
            b"abcdefgh",
            &long,
            b".",
            b"\n",
            b"\r",
            b"\0",
        ];
        let mut rng = StdRng::seed_from_u64(3030);
        for round in 0..3000 {
            let mut stream = Vec::new();
            for _ in 0..rng.random_range(0..16) {
                let bad = rng.random_bool(0.1);
                let pick = if bad {
                    rng.random_range(6..9)
                } else {
                    rng.random_range(0..6)
                };
                stream.extend_from_slice(tokens[pick]);
            }
            let mut chunks = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            let normalize = round % 2 == 1;
            let (max, line_max) = (rng.random_range(20..200), rng.random_range(10..60));
            let expected = reference(&chunks, max, line_max, normalize);
            for split in [1, 5, rng.random_range(1..64)] {
                let receiver = ChunkReceiver::new(max, line_max, false).normalizing_bare_lf(normalize);
                let got = run(&chunks, split, receiver);
                assert_eq!(got, expected, "{chunks:?} split {split} max {max}/{line_max}");
            }
        }
    }

    /// The rules one byte at a time: the first error in byte order wins, and a chunk
    /// announced past the message limit is refused before its bytes.
    fn reference(
        chunks: &[&[u8]],
        max: usize,
        line_max: usize,
        normalize: bool,
    ) -> Result<Vec<u8>, DataError> {
        use DataError::*;
        let (mut out, mut line, mut after_cr) = (Vec::new(), 0, false);
        let check = |out: &Vec<u8>, line: usize| match () {
            _ if out.len() > max => Err(TooLarge),
            _ if line > line_max => Err(LineTooLong),
            _ => Ok(()),
        };
        for chunk in chunks {
            if out.len() + chunk.len() > max {
                return Err(TooLarge);
            }
            for &b in *chunk {
                let ending: &[u8] = match (after_cr, b) {
                    (true, b'\n') => b"\n",
                    (false, b'\n') if normalize => b"\r\n",
                    (true, _) | (false, b'\n') => return Err(BareLineEnding),
                    (false, 0) => return Err(Nul),
                    _ => b"",
                };
                if ending.is_empty() {
                    out.push(b);
                    line += 1;
                    after_cr = b == b'\r';
                    check(&out, line)?;
                } else {
                    out.extend_from_slice(ending);
                    line += ending.len();
                    after_cr = false;
                    check(&out, line)?;
                    line = 0;
                }
            }
        }
        if after_cr {
            return Err(BareLineEnding);
        }
        Ok(out)
    }
}
