//! Content-Transfer-Encoding codecs for the parts the rewrite changes (RFC 2045).
//!
//! Decoding uses mail-parser's decoders in their strict form, for the parts whose text
//! mail-parser's parse (which decodes leniently, like mail clients) cannot give exactly:
//! those in a charset other than UTF-8. A body that does not decode strictly is passed
//! through instead of being re-encoded from a guess. Base64 encoding uses mail-builder's encoder (already in the tree
//! through mail-auth) in 76-column lines; the quoted-printable encoder is here: 76-column
//! soft breaks, CRLF hard breaks, `=`, control bytes and trailing whitespace escaped.

use std::borrow::Cow;

use mail_builder::encoders::Base64Encoder;
use mail_parser::Encoding;

/// The longest line SMTP and RFC 5322 allow, CRLF excluded.
pub const MAX_LINE_LEN_BYTES: usize = 998;

/// Undoes a part's transfer encoding; `None` when the body is not valid in it.
pub fn decode(encoding: Encoding, body: &[u8]) -> Option<Cow<'_, [u8]>> {
    match encoding {
        Encoding::None => Some(Cow::Borrowed(body)),
        Encoding::QuotedPrintable => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body).map(Cow::Owned)
        }
        Encoding::Base64 => mail_parser::decoders::base64::base64_decode(body).map(Cow::Owned),
    }
}

/// Longest quoted-printable line, the soft-break `=` included (RFC 2045 §6.7).
const QP_LINE_LEN_BYTES: usize = 76;
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Quoted-printable for a text body. Line breaks (CRLF, or a bare LF) become CRLF hard
/// breaks; printable ASCII other than `=` is kept; space and tab are kept except at the end
/// of a line; every other byte, a bare CR included, is escaped; lines are at most 76 bytes.
///
/// mail-builder has an encoder too, but it emits NUL and bare CR unescaped, which is not
/// valid on the wire and does not survive decoding.
pub fn encode_quoted_printable(data: &[u8]) -> Vec<u8> {
    // Escapes (`=` in every attribute, non-ASCII text) and soft breaks add several percent.
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 16);
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', data) {
        let line = &data[start..newline];
        encode_qp_line(line.strip_suffix(b"\r").unwrap_or(line), &mut out);
        out.extend_from_slice(b"\r\n");
        start = newline + 1;
    }
    encode_qp_line(&data[start..], &mut out);
    out
}

/// Bytes kept as they are inside a line: printable ASCII but `=`, and space and tab (which
/// are escaped instead when they end the line). Arithmetic, not a table, so the compiler
/// turns it into vector compares.
#[inline(always)]
fn is_qp_literal(b: u8) -> bool {
    (b.wrapping_sub(b' ') < 0x5f && b != b'=') || b == b'\t'
}

/// How many bytes at the start of `s` are kept as they are. Runs of literal text are short
/// in HTML (an `=` in every attribute), so the end of one is found 8 bytes at a time with
/// word arithmetic: a flag in the high bit of every byte below space, equal to DEL or `=`,
/// or above ASCII. Each flag test can raise false flags only in bytes above a true one, so
/// the lowest flag is the first such byte. Tab is flagged (it is below space) but literal,
/// so the scan goes on past it.
fn literal_run_len(s: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = ONES << 7;
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v;
    let mut at = 0;
    while let Some(Ok(word)) = s.get(at..at + 8).map(<[u8; 8]>::try_from) {
        let x = u64::from_le_bytes(word);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let flags =
            (below_space | zero_bytes(x ^ (ONES * 0x7f)) | zero_bytes(x ^ (ONES * u64::from(b'='))) | x)
                & HIGHS;
        if flags == 0 {
            at += 8;
            continue;
        }
        let first = at + (flags.trailing_zeros() / 8) as usize;
        if s[first] != b'\t' {
            return first;
        }
        at = first + 1;
    }
    at + s[at..]
        .iter()
        .position(|&b| !is_qp_literal(b))
        .unwrap_or(s.len() - at)
}

/// One line without its break, with soft breaks where it exceeds the line length. Runs of
/// literal bytes are copied whole; only escapes go byte by byte.
fn encode_qp_line(line: &[u8], out: &mut Vec<u8>) {
    let n = line.len();
    // Every line but the last of a soft-broken sequence keeps a column for its `=`.
    let soft_room = QP_LINE_LEN_BYTES - 1;
    let mut column = 0;
    let mut i = 0;
    while i < n {
        let mut run_end = i + literal_run_len(&line[i..]);
        if run_end == n && matches!(line[n - 1], b' ' | b'\t') {
            run_end -= 1; // trailing whitespace is escaped below
        }
        while i < run_end {
            let len = run_end - i;
            if len <= soft_room - column || (run_end == n && len <= QP_LINE_LEN_BYTES - column) {
                out.extend_from_slice(&line[i..run_end]);
                column += len;
                i = run_end;
            } else {
                let take = soft_room - column;
                out.extend_from_slice(&line[i..i + take]);
                out.extend_from_slice(b"=\r\n");
                column = 0;
                i += take;
            }
        }
        if i < n {
            let b = line[i];
            let room = if i + 1 == n { QP_LINE_LEN_BYTES } else { soft_room };
            if column + 3 > room {
                out.extend_from_slice(b"=\r\n");
                column = 0;
            }
            out.extend_from_slice(&[
                b'=',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 0x0f)],
            ]);
            column += 3;
            i += 1;
        }
    }
}

/// Base64 in 76-column CRLF lines. `trailing_crlf` says whether the encoded body ends with a
/// line break, so the spliced part keeps the shape the original had before its boundary.
pub fn encode_base64(data: &[u8], trailing_crlf: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 3 * 4 + data.len() / 28 + 8);
    Base64Encoder::new().wrap_lines().encode_into(data, &mut out);
    let ends_with_crlf = out.ends_with(b"\r\n");
    if ends_with_crlf && !trailing_crlf {
        out.truncate(out.len() - 2);
    } else if !ends_with_crlf && trailing_crlf && !out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Length of the longest line, without its line break.
pub fn longest_line_len(data: &[u8]) -> usize {
    data.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).len())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic byte generator, so failures reproduce.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..len)
                .map(|_| alphabet[self.next() as usize % alphabet.len()])
                .collect()
        }
    }

    fn all_lines_at_most(encoded: &[u8], max: usize) -> bool {
        encoded
            .split(|&b| b == b'\n')
            .all(|l| l.strip_suffix(b"\r").unwrap_or(l).len() <= max)
    }

    #[test]
    fn quoted_printable_round_trips_text_with_crlf() {
        let text = "<p>Caf\u{e9} = 5\u{20ac}, trailing space \r\n\tand tab\t\r\n<a href=\"https://a.example/?x=1&amp;y=2\">x</a>\r\n";
        let encoded = encode_quoted_printable(text.as_bytes());
        assert!(all_lines_at_most(&encoded, 76));
        assert!(encoded.windows(3).any(|w| w == b"=3D"), "= is escaped");
        assert!(
            !encoded.windows(3).any(|w| w == b" \r\n" || w == b"\t\r\n"),
            "no bare trailing whitespace"
        );
        assert_eq!(
            decode(Encoding::QuotedPrintable, &encoded).unwrap(),
            text.as_bytes()
        );
    }

    #[test]
    fn quoted_printable_round_trips_random_text() {
        let mut rng = Lcg(7);
        let alphabet: Vec<u8> = b"ab= \t.\r\n\r\n<>&\""
            .iter()
            .copied()
            .chain([0xc3, 0xa9, 0x00, 0xff])
            .collect();
        for round in 0..300 {
            let len = rng.next() as usize % 400;
            let mut data = rng.bytes(len, &alphabet);
            // Hard line breaks are CRLF on the wire: a bare CR or LF in decoded text comes
            // back as CRLF, which is the only normalisation the codec makes.
            let canonical = canonical_breaks(&data);
            if round % 3 == 0 {
                data = canonical.clone();
            }
            let encoded = encode_quoted_printable(&data);
            assert!(all_lines_at_most(&encoded, 76), "round {round}");
            let bad: Vec<u8> = encoded
                .iter()
                .copied()
                .filter(|&b| !matches!(b, b'\r' | b'\n' | b'\t' | b' '..=0x7e))
                .collect();
            assert!(
                bad.is_empty(),
                "{bad:?} in {:?}",
                String::from_utf8_lossy(&encoded)
            );
            let decoded = decode(Encoding::QuotedPrintable, &encoded).unwrap();
            assert_eq!(
                decoded.as_ref(),
                canonical.as_slice(),
                "round {round}: {:?}",
                String::from_utf8_lossy(&data)
            );
        }
    }

    /// The decoded form quoted-printable can carry: every LF preceded by CR.
    fn canonical_breaks(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 8);
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    #[test]
    fn quoted_printable_line_edges() {
        // A 76-byte line fits exactly; a 77-byte one gets one soft break.
        let exact = "x".repeat(76);
        assert_eq!(encode_quoted_printable(exact.as_bytes()), exact.as_bytes());
        let long = "x".repeat(77);
        assert_eq!(
            encode_quoted_printable(long.as_bytes()),
            format!("{}=\r\nxx", "x".repeat(75)).as_bytes()
        );
        // An escape is never split by a soft break.
        let escapes = "\u{e9}".repeat(40);
        let encoded = encode_quoted_printable(escapes.as_bytes());
        for line in encoded.split(|&b| b == b'\n') {
            let line = line
                .strip_suffix(b"\r")
                .unwrap_or(line)
                .strip_suffix(b"=")
                .unwrap_or(line);
            assert_eq!(line.len() % 3, 0, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(
            encode_quoted_printable(b"a \r\nb\t\nc\rd\0"),
            b"a=20\r\nb=09\r\nc=0Dd=00"
        );
        assert_eq!(encode_quoted_printable(b""), b"");
        assert_eq!(encode_quoted_printable(b"\r\n"), b"\r\n");
    }

    #[test]
    fn base64_round_trips_in_76_column_lines() {
        let mut rng = Lcg(11);
        for len in [0, 1, 2, 3, 56, 57, 58, 114, 1000, 4097] {
            let data = rng.bytes(len, &(0..=255).collect::<Vec<u8>>());
            for trailing in [false, true] {
                let encoded = encode_base64(&data, trailing);
                assert!(all_lines_at_most(&encoded, 76));
                assert_eq!(encoded.ends_with(b"\r\n"), trailing && len > 0, "len {len}");
                assert_eq!(
                    decode(Encoding::Base64, &encoded).unwrap(),
                    data.as_slice(),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn malformed_bodies_do_not_decode() {
        assert!(decode(Encoding::QuotedPrintable, b"a=ZZb").is_none());
        assert!(decode(Encoding::Base64, b"QUJD!!!").is_none());
        assert_eq!(decode(Encoding::None, b"as is").unwrap(), &b"as is"[..]);
        assert_eq!(
            decode(Encoding::QuotedPrintable, b"soft=\r\nbreak=3D").unwrap(),
            &b"softbreak="[..]
        );
    }

    /// Bytes kept as they are inside a line: printable ASCII but `=`, and space and tab (which
    /// are escaped instead when they end the line).
    const QP_LITERAL: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = matches!(b as u8, b'!'..=b'<' | b'>'..=b'~' | b' ' | b'\t');
            b += 1;
        }
        table
    };

    #[test]
    fn the_literal_test_is_the_table() {
        for b in 0..=255u8 {
            assert_eq!(is_qp_literal(b), QP_LITERAL[usize::from(b)], "{b:#x}");
        }
        let text = b"0123456789abcdef0123456789abcdef01234=5";
        for start in 0..text.len() {
            let want = text[start..]
                .iter()
                .position(|&b| b == b'=')
                .unwrap_or(text.len() - start);
            assert_eq!(literal_run_len(&text[start..]), want, "from {start}");
        }
        // Every byte value at every offset of a word, after literal text and tabs, and
        // random runs: the word scan agrees with the table byte by byte.
        let mut rng = Lcg(5);
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut text: Vec<u8> = (0..at)
                    .map(|i| if i % 3 == 1 { b'\t' } else { b'a' + i as u8 })
                    .collect();
                text.push(b);
                text.extend_from_slice(b"tail \xff");
                let want = text
                    .iter()
                    .position(|&c| !QP_LITERAL[usize::from(c)])
                    .unwrap_or(text.len());
                assert_eq!(literal_run_len(&text), want, "{text:?}");
            }
        }
        let alphabet: Vec<u8> = (0..=255u8)
            .chain(b"\t abc~<>".iter().copied().cycle().take(2000))
            .collect();
        for _ in 0..2000 {
            let len = rng.next() as usize % 40;
            let text = rng.bytes(len, &alphabet);
            let want = text
                .iter()
                .position(|&c| !QP_LITERAL[usize::from(c)])
                .unwrap_or(text.len());
            assert_eq!(literal_run_len(&text), want, "{text:?}");
        }
    }

    #[test]
    fn longest_line_ignores_line_breaks() {
        assert_eq!(longest_line_len(b"abc\r\nde\nfghij"), 5);
        assert_eq!(longest_line_len(b""), 0);
        assert_eq!(longest_line_len(&[b'x'; 999]), 999);
    }
}
