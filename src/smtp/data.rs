//! The DATA receiver: turns the bytes after `354` into the message body, without copying
//! it, and finds the one true end of data.
//!
//! The body is handed out as `Bytes` slices split off the front of the socket buffer. The
//! receiver removes dot-stuffing (RFC 5321 §4.5.2) by ending a slice before a line's
//! leading dot and starting the next one after it, and ends only on `CRLF.CRLF`. Every
//! other line ending (a bare LF or a bare CR anywhere) is an error, which makes SMTP
//! smuggling (a second message hidden behind `\n.\n` and read differently by the next
//! hop) impossible through corerelay: such data is refused, never forwarded.
//!
//! Pieces shorter than [`SMALL_PIECE_BYTES`] (the runs between stuffed dots, or what a
//! client trickling tiny segments sends per read) are gathered by copying into one chunk,
//! which bounds the bookkeeping per body byte and the read buffer memory a small slice can
//! keep alive; everything else is never copied.
//!
//! With `smtp.bare_line_feed = "normalize"` a bare LF is read as CRLF instead: the body
//! gets CRLF (two staged bytes; the run before it is still sliced), and the line after it
//! can never end the data, because its leading dot is taken literally. So `\n.\n`,
//! `\n.\r\n` and `\r\n.\n` all stay inside the message, and the only terminator is still
//! `CRLF.CRLF` after a real CRLF. A bare CR is refused either way.
//!
//! The line state lives in the receiver rather than in held-back input, so every byte
//! given to [`DataReceiver::feed`] is consumed and nothing is held back between calls. After
//! an error the receiver keeps scanning, collecting nothing, until the real end of data,
//! so the client stays in sync and the reply is sent where the client expects it.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr3;

use crate::smtp::reply::{Enhanced, Reply, catalogue};

/// Pieces shorter than this are copied into one staging buffer instead of becoming `Bytes`
/// of their own. A `Bytes` costs 32 bytes of bookkeeping, so without this a body of
/// dot-stuffed 4-byte lines (`..\r\n`) would cost eight times its size in memory. Worse, a
/// slice keeps its whole read buffer (16 KiB) alive: at 256 bytes, a client trickling
/// 300-byte segments made the relay hold 54 times the body in memory (issue 9's
/// `hostile` test). A quarter of a read buffer bounds that to four times.
pub const SMALL_PIECE_BYTES: usize = 4096;

/// Why a message body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataError {
    /// More than `message_max_bytes` after unstuffing.
    TooLarge,
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnding,
    /// A line longer than `text_line_max_bytes` (counting its CRLF, not a stuffed dot).
    LineTooLong,
    /// A NUL byte, which RFC 5321 §4.5.2 text may not contain and which many systems
    /// downstream truncate at.
    Nul,
}

impl DataError {
    pub fn reply(&self) -> Reply {
        match self {
            DataError::TooLarge => catalogue::SIZE_EXCEEDED,
            DataError::BareLineEnding => catalogue::BARE_LF,
            DataError::LineTooLong => catalogue::DATA_LINE_TOO_LONG,
            DataError::Nul => Reply::new(550, Enhanced::new(5, 6, 0), "Message contains NUL bytes"),
        }
    }
}

/// What [`DataReceiver::feed`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// The buffer is used up and the end of data has not been seen: append more input to
    /// the buffer and call again.
    NeedMore,
    /// The end of data was consumed. `Ok` carries the body length in bytes; on `Err` the
    /// body vector was emptied. Bytes after the terminator are left in the buffer.
    Done(Result<usize, DataError>),
}

/// Where the scan stands relative to line boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineState {
    /// At the first byte of a line (also at the very start of the data).
    Start,
    /// At the first byte of a line that followed a normalized bare LF: a dot here is text.
    StartAfterBareLf,
    /// `scan_text` just consumed a bare LF to be normalized (transient).
    BareLf,
    /// Inside a line.
    Text,
    /// Just after a CR inside a line.
    Cr,
    /// After a line's leading dot, which has been dropped.
    Dot,
    /// After a leading dot and a CR: LF here ends the data.
    DotCr,
}

/// Receives one DATA body. Make a new one for each message.
#[derive(Debug)]
pub struct DataReceiver {
    message_max_bytes: usize,
    text_line_max_bytes: usize,
    state: LineState,
    /// Bytes of the current line so far, CR included, stuffed dot excluded.
    line_bytes: usize,
    body_bytes: usize,
    /// The first error; once set, nothing more is collected.
    error: Option<DataError>,
    /// Small pieces waiting to be pushed as one chunk.
    staged: BytesMut,
    /// Read a bare LF as CRLF instead of refusing the message.
    normalize_bare_lf: bool,
}

impl DataReceiver {
    pub fn new(message_max_bytes: usize, text_line_max_bytes: usize) -> DataReceiver {
        DataReceiver {
            message_max_bytes,
            text_line_max_bytes,
            state: LineState::Start,
            line_bytes: 0,
            body_bytes: 0,
            error: None,
            staged: BytesMut::new(),
            normalize_bare_lf: false,
        }
    }

    /// Reads a bare LF as CRLF (`smtp.bare_line_feed = "normalize"`) when `on`.
    pub fn normalizing_bare_lf(mut self, on: bool) -> DataReceiver {
        self.normalize_bare_lf = on;
        self
    }

    /// Consumes body bytes from the front of `buf`, appending the unstuffed body to `body`
    /// as slices of `buf`. Stops right after the terminating `CRLF.CRLF`.
    pub fn feed(&mut self, buf: &mut BytesMut, body: &mut Vec<Bytes>) -> DataProgress {
        // Bytes buf[..pending] are body bytes scanned but not yet split off.
        let mut pending = 0;
        loop {
            let Some(&byte) = buf.get(pending) else {
                self.emit(buf.split_to(pending), body);
                return DataProgress::NeedMore;
            };
            match self.state {
                LineState::Start if byte == b'.' => {
                    // A leading dot is never part of the body: either it is stuffing or it
                    // starts the terminator.
                    self.emit(buf.split_to(pending), body);
                    buf.advance(1);
                    pending = 0;
                    self.state = LineState::Dot;
                }
                LineState::Start | LineState::StartAfterBareLf | LineState::BareLf => {
                    self.line_bytes = 0;
                    self.state = LineState::Text;
                }
                LineState::Text => {
                    let used = self.scan_text(&buf[pending..]);
                    if self.state == LineState::BareLf {
                        // The run before the bare LF is body; the LF becomes CRLF.
                        self.emit(buf.split_to(pending + used - 1), body);
                        buf.advance(1);
                        pending = 0;
                        self.end_line_normalized(body);
                    } else {
                        pending += used;
                    }
                }
                LineState::Cr => {
                    if byte == b'\n' {
                        self.count(1);
                        pending += 1;
                        self.state = LineState::Start;
                    } else {
                        // Do not consume: this byte (maybe another CR) is read as text.
                        self.fail(DataError::BareLineEnding, body);
                        self.state = LineState::Text;
                    }
                }
                LineState::Dot if byte == b'\n' && self.normalize_bare_lf => {
                    // `.LF`: the dot was stuffing, the LF a bare line end.
                    buf.advance(1);
                    self.line_bytes = 0;
                    self.end_line_normalized(body);
                }
                LineState::Dot => {
                    self.line_bytes = 0;
                    if byte == b'\r' {
                        // Not body either way: `.CRLF` is the terminator, and `.CR`
                        // followed by anything else is a bare CR.
                        buf.advance(1);
                        self.state = LineState::DotCr;
                    } else {
                        self.state = LineState::Text;
                    }
                }
                LineState::DotCr => {
                    if byte == b'\n' {
                        buf.advance(1);
                        return DataProgress::Done(self.finish(body));
                    }
                    // The dropped CR was text after all: count it, then refuse it.
                    self.count(1);
                    self.fail(DataError::BareLineEnding, body);
                    self.state = LineState::Text;
                }
            }
        }
    }

    /// Scans text from inside a line: runs of ordinary bytes are found with `memchr3` and
    /// counted at once, and a CRLF followed by a line that does not begin with a dot is
    /// passed over without leaving the loop, so the state machine in `feed` only sees line
    /// starts with a dot, line ends at the end of the input, and bad bytes. Stops after a
    /// CR whose LF is not in `rest` (state `Cr`), after a CRLF before a dot or at the end of
    /// `rest` (state `Start`), after a LF or NUL, or at the end of `rest`; returns the bytes
    /// used. Errors are recorded in byte order (a plain run is counted before the byte that
    /// ends it), so how the input was split never changes which error is reported.
    fn scan_text(&mut self, rest: &[u8]) -> usize {
        let mut at = 0;
        loop {
            let plain = memchr3(b'\r', b'\n', 0, &rest[at..]).unwrap_or(rest.len() - at);
            self.count(plain);
            at += plain;
            match rest.get(at) {
                None => return at,
                Some(b'\r') => {
                    self.count(1);
                    if rest.get(at + 1) != Some(&b'\n') {
                        self.state = LineState::Cr;
                        return at + 1;
                    }
                    self.count(1);
                    at += 2;
                    if matches!(rest.get(at), None | Some(b'.')) {
                        self.state = LineState::Start;
                        return at;
                    }
                    // The next line starts here and is plain text.
                    self.line_bytes = 0;
                }
                Some(b'\n') if self.normalize_bare_lf => {
                    self.state = LineState::BareLf;
                    return at + 1;
                }
                Some(b'\n') => {
                    self.fail_quietly(DataError::BareLineEnding);
                    self.count(1);
                    return at + 1;
                }
                Some(_) => {
                    self.fail_quietly(DataError::Nul);
                    self.count(1);
                    return at + 1;
                }
            }
        }
    }

    /// Ends a line at a bare LF by writing CRLF into the body (normalize mode).
    fn end_line_normalized(&mut self, body: &mut Vec<Bytes>) {
        self.count(2);
        if self.error.is_none() {
            self.staged.extend_from_slice(b"\r\n");
            if self.staged.len() >= SMALL_PIECE_BYTES {
                body.push(self.staged.split().freeze());
            }
        }
        self.state = LineState::StartAfterBareLf;
    }

    /// Accounts `n` more body bytes of the current line against the limits. When both
    /// limits fall within these bytes, the one crossed first is reported (the message limit
    /// on a tie), as if the bytes had been counted one by one.
    fn count(&mut self, n: usize) {
        let body_room_bytes = self.message_max_bytes.saturating_sub(self.body_bytes);
        let line_room_bytes = self.text_line_max_bytes.saturating_sub(self.line_bytes);
        if n > body_room_bytes.min(line_room_bytes) {
            self.fail_quietly(if body_room_bytes <= line_room_bytes {
                DataError::TooLarge
            } else {
                DataError::LineTooLong
            });
        }
        self.line_bytes = self.line_bytes.saturating_add(n);
        self.body_bytes = self.body_bytes.saturating_add(n);
    }

    /// Records the first error; the collected body is dropped at the next `emit`.
    fn fail_quietly(&mut self, error: DataError) {
        self.error.get_or_insert(error);
    }

    fn fail(&mut self, error: DataError, body: &mut Vec<Bytes>) {
        self.fail_quietly(error);
        self.drop_body(body);
    }

    fn drop_body(&mut self, body: &mut Vec<Bytes>) {
        *body = Vec::new();
        self.staged = BytesMut::new();
    }

    /// Appends a scanned piece to the body, or drops it after an error.
    fn emit(&mut self, piece: BytesMut, body: &mut Vec<Bytes>) {
        if self.error.is_some() {
            self.drop_body(body);
            return;
        }
        if piece.is_empty() {
            return;
        }
        if piece.len() < SMALL_PIECE_BYTES {
            self.staged.extend_from_slice(&piece);
            if self.staged.len() >= SMALL_PIECE_BYTES {
                body.push(self.staged.split().freeze());
            }
            return;
        }
        if !self.staged.is_empty() {
            body.push(self.staged.split().freeze());
        }
        body.push(piece.freeze());
    }

    fn finish(&mut self, body: &mut Vec<Bytes>) -> Result<usize, DataError> {
        if let Some(error) = self.error {
            self.drop_body(body);
            return Err(error);
        }
        if !self.staged.is_empty() {
            body.push(self.staged.split().freeze());
        }
        Ok(self.body_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// What feeding some input gave: the progress, the body so far, the bytes left over.
    type Outcome = (DataProgress, Vec<u8>, Vec<u8>);

    const MAX_BYTES: usize = 1 << 20;
    const LINE_MAX_BYTES: usize = 1000;

    /// The result of feeding `parts` one after another: progress, body, bytes left over.
    fn run(parts: &[&[u8]], message_max: usize, line_max: usize) -> Outcome {
        run_mode(parts, message_max, line_max, false)
    }

    fn run_mode(parts: &[&[u8]], message_max: usize, line_max: usize, normalize: bool) -> Outcome {
        let mut receiver = DataReceiver::new(message_max, line_max).normalizing_bare_lf(normalize);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut progress = DataProgress::NeedMore;
        for part in parts {
            buf.extend_from_slice(part);
            if progress == DataProgress::NeedMore {
                progress = receiver.feed(&mut buf, &mut body);
            }
            // Nothing is ever held back while the data goes on.
            if progress == DataProgress::NeedMore {
                assert!(buf.is_empty(), "held back {buf:?}");
            }
        }
        // While the data goes on, small pieces may still sit in the staging buffer.
        let mut joined: Vec<u8> = body.iter().flat_map(|c| c.iter().copied()).collect();
        joined.extend_from_slice(&receiver.staged);
        (progress, joined, buf.to_vec())
    }

    /// Feeds `input` whole, byte by byte and in many random splits, checks that all give the
    /// same result, and returns it.
    fn check_splits(input: &[u8], message_max: usize, line_max: usize) -> Outcome {
        let whole = run(&[input], message_max, line_max);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            run(&bytes, message_max, line_max),
            whole,
            "byte by byte: {input:?}"
        );
        let mut rng = StdRng::seed_from_u64(input.len() as u64);
        for _ in 0..20 {
            let mut parts = Vec::new();
            let mut rest = input;
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len().min(8));
                parts.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(run(&parts, message_max, line_max), whole, "split {parts:?}");
        }
        whole
    }

    fn ok(body: &[u8], rest: &[u8]) -> Outcome {
        (DataProgress::Done(Ok(body.len())), body.to_vec(), rest.to_vec())
    }

    fn err(e: DataError, rest: &[u8]) -> Outcome {
        (DataProgress::Done(Err(e)), Vec::new(), rest.to_vec())
    }

    #[test]
    fn unstuffs_and_ends_on_crlf_dot_crlf() {
        use DataError::*;
        let cases: &[(&[u8], Outcome)] = &[
            (b".\r\n", ok(b"", b"")),
            (b".\r\nQUIT\r\n", ok(b"", b"QUIT\r\n")),
            (b"..\r\n.\r\n", ok(b".\r\n", b"")),
            (b"..x\r\n.\r\n", ok(b".x\r\n", b"")),
            (b"hi\r\n..\r\n.a\r\n\r\n.\r\n", ok(b"hi\r\n.\r\na\r\n\r\n", b"")),
            (b"a\r\n...\r\n.\r\n", ok(b"a\r\n..\r\n", b"")),
            (
                b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL",
                ok(b"Subject: x\r\n\r\nbody\r\n", b"MAIL"),
            ),
            (b"no newline at end.\r\n.\r\n", ok(b"no newline at end.\r\n", b"")),
            (b"a.\r\n.\r\n", ok(b"a.\r\n", b"")),
            (
                b"hi\r\n",
                (DataProgress::NeedMore, b"hi\r\n".to_vec(), b"".to_vec()),
            ),
            (
                b"hi\r\n.",
                (DataProgress::NeedMore, b"hi\r\n".to_vec(), b"".to_vec()),
            ),
            (
                b"hi\r\n.\r",
                (DataProgress::NeedMore, b"hi\r\n".to_vec(), b"".to_vec()),
            ),
            (b"bare\nlf\r\n.\r\n", err(BareLineEnding, b"")),
            (b"bare\rcr\r\n.\r\n", err(BareLineEnding, b"")),
            (b"cr cr\r\r\n.\r\n", err(BareLineEnding, b"")),
            (b".\rx\r\n.\r\n", err(BareLineEnding, b"")),
            (b".\r\r\n.\r\nX", err(BareLineEnding, b"X")),
            (b".\nx\r\n.\r\n", err(BareLineEnding, b"")),
            (b"nul\0\r\n.\r\n", err(Nul, b"")),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &check_splits(input, MAX_BYTES, LINE_MAX_BYTES),
                expected,
                "{input:?}"
            );
        }
    }

    /// Normalize mode: a bare LF becomes CRLF, a dot after it is text, and only CRLF.CRLF
    /// after a real CRLF ends the data. Checked whole, byte by byte and in random splits.
    #[test]
    fn normalize_mode_reads_bare_lf_as_crlf_and_never_ends_on_it() {
        let cases: &[(&[u8], Outcome)] = &[
            (b"a\nb\r\n.\r\n", ok(b"a\r\nb\r\n", b"")),
            (b"a\n.\nb\r\n.\r\nX", ok(b"a\r\n.\r\nb\r\n", b"X")),
            (b"a\n.\r\nb\r\n.\r\n", ok(b"a\r\n.\r\nb\r\n", b"")),
            (b"a\r\n.\nb\r\n.\r\n", ok(b"a\r\n\r\nb\r\n", b"")),
            (
                b"..\n.\r\n",
                (DataProgress::NeedMore, b".\r\n.\r\n".to_vec(), b"".to_vec()),
            ),
            (b"\n\n\r\n.\r\n", ok(b"\r\n\r\n\r\n", b"")),
            (b"a\rb\r\n.\r\n", err(DataError::BareLineEnding, b"")),
            (b"a\n\0\r\n.\r\n", err(DataError::Nul, b"")),
        ];
        for (input, expected) in cases {
            let whole = run_mode(&[input], MAX_BYTES, LINE_MAX_BYTES, true);
            assert_eq!(&whole, expected, "{input:?}");
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                run_mode(&bytes, MAX_BYTES, LINE_MAX_BYTES, true),
                whole,
                "{input:?}"
            );
        }
        // The added CR counts against the limits: 4 bytes of text become 5 of body.
        assert_eq!(
            run_mode(&[b"abc\n.\r\n"], MAX_BYTES, 4, true).0,
            DataProgress::NeedMore,
            "the line after a bare LF is not the terminator"
        );
        assert_eq!(
            run_mode(&[b"abc\n\r\n.\r\n"], 4, LINE_MAX_BYTES, true).0,
            DataProgress::Done(Err(DataError::TooLarge))
        );
        // Many bare LFs: the staged CRLFs are pushed as bounded chunks, in order.
        let input = [b"x\n".repeat(500), b"\r\n.\r\n".to_vec()].concat();
        let (progress, body, _) = run_mode(&[&input], MAX_BYTES, LINE_MAX_BYTES, true);
        assert_eq!(progress, DataProgress::Done(Ok(1502)));
        assert_eq!(body, [b"x\r\n".repeat(500), b"\r\n".to_vec()].concat());
    }

    /// The published SMTP smuggling vectors (SEC Consult, December 2023, and the
    /// smtp-proto test set): none may end the data, and each is refused as a bare line
    /// ending once the real end arrives.
    #[test]
    fn smuggling_vectors_never_terminate() {
        let smuggled = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nforged\r\n";
        for fake_end in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n.\n",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
        ] {
            let mut input = b"Subject: hi\r\n\r\nbody".to_vec();
            input.extend_from_slice(fake_end);
            input.extend_from_slice(smuggled);
            // Without the real end, the receiver must still be waiting.
            let (progress, _, rest) = check_splits(&input, MAX_BYTES, LINE_MAX_BYTES);
            assert_eq!(progress, DataProgress::NeedMore, "{fake_end:?} ended the data");
            assert!(rest.is_empty());
            input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            let (progress, body, rest) = check_splits(&input, MAX_BYTES, LINE_MAX_BYTES);
            assert!(matches!(progress, DataProgress::Done(Err(_))), "{fake_end:?}");
            assert!(body.is_empty());
            assert_eq!(rest, b"QUIT\r\n", "{fake_end:?}");
        }
    }

    #[test]
    fn size_limit_is_exact_and_counts_unstuffed_bytes() {
        let body = b"abcdefgh\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b".\r\n");
        assert_eq!(check_splits(&input, 10, LINE_MAX_BYTES), ok(body, b""));
        assert_eq!(
            check_splits(&input, 9, LINE_MAX_BYTES),
            err(DataError::TooLarge, b"")
        );
        // The stuffed dot does not count: ".\r\n" is 3 bytes of body.
        assert_eq!(check_splits(b"..\r\n.\r\n", 3, LINE_MAX_BYTES), ok(b".\r\n", b""));
    }

    #[test]
    fn line_limit_counts_crlf_but_not_the_stuffed_dot() {
        assert_eq!(check_splits(b"abc\r\n.\r\n", MAX_BYTES, 5), ok(b"abc\r\n", b""));
        assert_eq!(
            check_splits(b"abcd\r\n.\r\n", MAX_BYTES, 5),
            err(DataError::LineTooLong, b"")
        );
        assert_eq!(check_splits(b"..bc\r\n.\r\n", MAX_BYTES, 5), ok(b".bc\r\n", b""));
        // A long line after a short one is still caught (the count restarts per line).
        assert_eq!(
            check_splits(b"ab\r\nabcdef\r\n.\r\n", MAX_BYTES, 5),
            err(DataError::LineTooLong, b"")
        );
    }

    #[test]
    fn first_error_wins_and_draining_holds_nothing() {
        let mut receiver = DataReceiver::new(100, LINE_MAX_BYTES);
        let mut body = Vec::new();
        let mut buf = BytesMut::from(&b"bare\nlf"[..]);
        assert_eq!(receiver.feed(&mut buf, &mut body), DataProgress::NeedMore);
        // A megabyte more while draining: all consumed, nothing collected.
        for _ in 0..1024 {
            buf.extend_from_slice(&[b'x'; 1024]);
            assert_eq!(receiver.feed(&mut buf, &mut body), DataProgress::NeedMore);
            assert!(buf.is_empty() && body.is_empty());
        }
        buf.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(
            receiver.feed(&mut buf, &mut body),
            DataProgress::Done(Err(DataError::BareLineEnding))
        );
    }

    #[test]
    fn large_pieces_are_slices_of_the_input_buffer() {
        let line = [b'a'; 1000];
        let mut buf = BytesMut::new();
        for _ in 0..8 {
            buf.extend_from_slice(&line[..998]);
            buf.extend_from_slice(b"\r\n");
        }
        buf.extend_from_slice(b".\r\n");
        let start = buf.as_ptr();
        let mut body = Vec::new();
        let mut receiver = DataReceiver::new(MAX_BYTES, LINE_MAX_BYTES);
        assert_eq!(receiver.feed(&mut buf, &mut body), DataProgress::Done(Ok(8000)));
        assert_eq!(body.len(), 1);
        assert_eq!(body[0].as_ptr(), start, "the body was copied");
    }

    #[test]
    fn many_stuffed_lines_make_few_chunks() {
        let mut input = b"..\r\n".repeat(10_000);
        input.extend_from_slice(b".\r\n");
        let mut buf = BytesMut::from(&input[..]);
        let mut body = Vec::new();
        let mut receiver = DataReceiver::new(MAX_BYTES, LINE_MAX_BYTES);
        assert_eq!(receiver.feed(&mut buf, &mut body), DataProgress::Done(Ok(30_000)));
        // 30,000 body bytes in pieces of at least SMALL_PIECE_BYTES, except the last.
        assert!(
            body.len() <= 30_000 / SMALL_PIECE_BYTES + 1,
            "{} chunks",
            body.len()
        );
    }

    /// Random inputs built from tokens dense in line endings, dots and the occasional bad
    /// byte: whatever the input, every split gives the same result as the naive model
    /// below, and the data ends exactly at the first CRLF.CRLF.
    #[test]
    fn random_inputs_split_anywhere_give_the_same_result() {
        const TOKENS: &[&[u8]] = &[
            b"\r\n",
            b"\r\n",
            b"\r\n",
            b".",
            b".",
            b"a",
            b"ab",
            b"abcd",
            b"abcdefgh",
            b"\n",
            b"\r",
            b"\0",
        ];
        let mut rng = StdRng::seed_from_u64(5321);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let len = rng.random_range(0..24);
            // Bad tokens (the last three) are drawn a quarter as often as the others.
            let good_count = TOKENS.len() - 3;
            let mut input = Vec::new();
            for _ in 0..len {
                let pick = if rng.random_bool(0.9) {
                    rng.random_range(0..good_count)
                } else {
                    rng.random_range(good_count..TOKENS.len())
                };
                input.extend_from_slice(TOKENS[pick]);
            }
            if rng.random_bool(0.5) {
                input.extend_from_slice(b"\r\n.\r\n");
            }
            let result = check_splits(&input, 40, 10);
            assert_eq!(result, reference(&input, 40, 10), "{input:?}");
            seen.insert(format!("{:?}", result.0));
        }
        // The inputs reached every outcome, so the comparison above means something.
        for outcome in [
            "NeedMore",
            "Ok",
            "TooLarge",
            "BareLineEnding",
            "LineTooLong",
            "Nul",
        ] {
            assert!(
                seen.iter().any(|s| s.contains(outcome)),
                "{outcome} never seen: {seen:?}"
            );
        }
    }

    /// The scan passes over line ends inside one read; lines exactly at the limit (CRLF
    /// counted), a stuffed dot right after such a line end, and a terminator right after
    /// one, whole, byte by byte and in random splits.
    #[test]
    fn lines_passed_over_in_one_read_keep_every_rule() {
        let line = |n: usize| [b"x".repeat(n), b"\r\n".to_vec()].concat();
        let at_limit = line(998).repeat(3);
        let input = [at_limit.clone(), b".\r\n".to_vec()].concat();
        assert_eq!(
            check_splits(&input, MAX_BYTES, LINE_MAX_BYTES),
            ok(&at_limit, b"")
        );
        let input = [line(998), line(999), line(1), b".\r\n".to_vec()].concat();
        assert_eq!(
            check_splits(&input, MAX_BYTES, LINE_MAX_BYTES),
            err(DataError::LineTooLong, b"")
        );
        assert_eq!(
            check_splits(b"ab\r\ncd\r\n.\r\n", MAX_BYTES, 4),
            ok(b"ab\r\ncd\r\n", b"")
        );
        assert_eq!(
            check_splits(b"ab\r\ncde\r\n.\r\n", MAX_BYTES, 4),
            err(DataError::LineTooLong, b"")
        );
        assert_eq!(
            check_splits(b"ab\r\n..c\r\nd\r\n.\r\nNEXT", MAX_BYTES, 4),
            ok(b"ab\r\n.c\r\nd\r\n", b"NEXT")
        );
        // The message limit crossed in the middle of a long run, then a tie with the line limit.
        let input = [line(70), b".\r\n".to_vec()].concat();
        assert_eq!(
            check_splits(&input, 50, LINE_MAX_BYTES),
            err(DataError::TooLarge, b"")
        );
        assert_eq!(check_splits(&input, 50, 50), err(DataError::TooLarge, b""));
        assert_eq!(check_splits(&input, 50, 49), err(DataError::LineTooLong, b""));
        // A bare CR or LF after several good lines in one read.
        for bad in [&b"\r"[..], b"\n", b"\r."] {
            let input = [line(30).repeat(3), bad.to_vec(), line(30), b".\r\n".to_vec()].concat();
            assert_eq!(
                check_splits(&input, MAX_BYTES, LINE_MAX_BYTES),
                err(DataError::BareLineEnding, b"")
            );
        }
    }

    /// As `random_inputs_split_anywhere_give_the_same_result`, with runs long enough for
    /// the vectorised search and many lines per read.
    #[test]
    fn random_long_lines_match_the_model() {
        let long = b"z".repeat(45);
        let tokens: [&[u8]; 8] = [b"\r\n", b"\r\n", b".", &long, b"abcdefgh", b"\n", b"\r", b"\0"];
        let mut rng = StdRng::seed_from_u64(3031);
        for _ in 0..300 {
            let mut input = Vec::new();
            for _ in 0..rng.random_range(0..40) {
                let bad = rng.random_bool(0.03);
                let pick = if bad {
                    rng.random_range(5..8)
                } else {
                    rng.random_range(0..5)
                };
                input.extend_from_slice(tokens[pick]);
            }
            if rng.random_bool(0.7) {
                input.extend_from_slice(b"\r\n.\r\n");
            }
            let (max, line_max) = (rng.random_range(100..1000), rng.random_range(40..120));
            let result = check_splits(&input, max, line_max);
            assert_eq!(result, reference(&input, max, line_max), "{input:?}");
        }
    }

    /// A deliberately naive model over the whole input: the data ends at the first
    /// CRLF.CRLF (counting the CRLF before the data), a line's leading dot is dropped, and
    /// every error is attributed to the byte that reveals it, the earliest byte winning.
    fn reference(input: &[u8], message_max: usize, line_max: usize) -> Outcome {
        let mut wire = b"\r\n".to_vec();
        wire.extend_from_slice(input);
        let end = wire.windows(5).position(|w| w == b"\r\n.\r\n");
        let (data, rest) = match end {
            Some(dot) => (&input[..dot], input[dot + 3..].to_vec()),
            None => (input, Vec::new()),
        };
        let (mut body, mut error) = (Vec::new(), None);
        let (mut line_len, mut body_len) = (0, 0);
        let (mut at_start, mut after_dot, mut prev) = (true, false, None);
        for (i, &b) in data.iter().enumerate() {
            if at_start && b == b'.' {
                (at_start, after_dot, prev, line_len) = (false, true, Some(b), 0);
                continue;
            }
            if at_start {
                line_len = 0;
            }
            let mut fail = |e| {
                error.get_or_insert(e);
            };
            if prev == Some(b'\r') && b != b'\n' || b == b'\n' && prev != Some(b'\r') {
                fail(DataError::BareLineEnding);
            }
            if b == 0 {
                fail(DataError::Nul);
            }
            // `.CR` at the end of unfinished input may still become the terminator.
            if after_dot && b == b'\r' && i + 1 == data.len() && end.is_none() {
                break;
            }
            (body_len, line_len) = (body_len + 1, line_len + 1);
            if body_len > message_max {
                fail(DataError::TooLarge);
            } else if line_len > line_max {
                fail(DataError::LineTooLong);
            }
            body.push(b);
            at_start = b == b'\n' && prev == Some(b'\r');
            (prev, after_dot) = (Some(b), false);
        }
        match (end.is_some(), error) {
            (true, Some(e)) => (DataProgress::Done(Err(e)), Vec::new(), rest),
            (true, None) => (DataProgress::Done(Ok(body.len())), body, rest),
            (false, Some(_)) => (DataProgress::NeedMore, Vec::new(), rest),
            (false, None) => (DataProgress::NeedMore, body, rest),
        }
    }
}
