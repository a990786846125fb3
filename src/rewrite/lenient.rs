//! A part's transfer encoding, undone the way mail-parser's parse undoes it, for only the
//! parts the rewrite changes.
//!
//! mail-parser decodes every body while it parses (attachments included), and its
//! quoted-printable decoder goes byte by byte: on a dense HTML newsletter that decoding was a
//! quarter of the whole rewrite. So the walk's parser ignores `Content-Transfer-Encoding`
//! (mail-parser then only finds the parts and their offsets, copying nothing), and this
//! module reads the field and decodes the few candidate parts afterwards:
//!
//! - the field is read with mail-parser's own unstructured-field parser, and the last field
//!   wins, as in mail-parser;
//! - base64 goes through mail-parser's own MIME decoder, over exactly the body;
//! - quoted-printable goes through [`decode_quoted_printable`], which copies whole runs of
//!   text (`memchr`) and gives the bytes mail-parser's MIME decoder gives, its leniency
//!   included (`=ZZ` stays as written, trailing whitespace is dropped, a bare CR is dropped,
//!   `==` is refused). The one difference: when a body's last line ends in a soft break or
//!   half an escape right before the boundary, mail-parser's decoder drops up to three bytes
//!   of real content there; this decoder keeps them.
//!
//! The differential tests below hold both decoders to the same output.

use std::borrow::Cow;

use mail_parser::decoders::quoted_printable::HEX_MAP;
use mail_parser::parsers::MessageStream;
use mail_parser::{Encoding, HeaderName, HeaderValue, MessagePart};

/// The part's `Content-Transfer-Encoding`, as mail-parser would have read it: the last
/// such field, `base64` or `quoted-printable` in any case, anything else meaning none.
pub(crate) fn transfer_encoding(raw: &[u8], part: &MessagePart<'_>) -> Encoding {
    let field = part
        .headers
        .iter()
        .rev()
        .find(|h| h.name == HeaderName::ContentTransferEncoding);
    let Some(value) = field.and_then(|h| raw.get(h.offset_start as usize..h.offset_end as usize)) else {
        return Encoding::None;
    };
    match MessageStream::new(value).parse_unstructured() {
        HeaderValue::Text(v) if v.eq_ignore_ascii_case("base64") => Encoding::Base64,
        HeaderValue::Text(v) if v.eq_ignore_ascii_case("quoted-printable") => Encoding::QuotedPrintable,
        _ => Encoding::None,
    }
}

/// Undoes `encoding` on `body` as mail-parser's parse does; `None` where mail-parser would
/// flag the part as an encoding problem. `line_break_follows` says whether the body is
/// followed by the line break before its boundary (mail-parser then drops the trailing
/// whitespace of the last line, as of any line).
pub(crate) fn decode(encoding: Encoding, body: &[u8], line_break_follows: bool) -> Option<Cow<'_, [u8]>> {
    match encoding {
        Encoding::None => Some(Cow::Borrowed(body)),
        Encoding::QuotedPrintable => decode_quoted_printable(body, line_break_follows).map(Cow::Owned),
        Encoding::Base64 => {
            let (end, decoded) = MessageStream::new(body).decode_base64_mime(b"");
            (end != usize::MAX).then(|| Cow::Owned(decoded.into_owned()))
        }
    }
}

/// Where the decoder is within an escape.
#[derive(Clone, Copy)]
enum State {
    Text,
    /// After `=`.
    Eq,
    /// After `=` and a hex digit: its value, and the last byte read (for the lenient
    /// output of an escape that turns out invalid).
    Hex1 {
        high: u8,
        last: u8,
    },
}

/// Whitespace that a hard line break strips from the end of a line, and that may follow
/// a soft-break `=`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0c')
}

fn hex(b: u8) -> Option<u8> {
    u8::try_from(HEX_MAP[usize::from(b)]).ok()
}

/// Quoted-printable, decoded leniently like mail-parser's MIME decoder (see the module doc),
/// but a run of plain text at a time. Hard line breaks come out as CRLF once a CR has been
/// seen, as LF before that; every CR is dropped.
pub(crate) fn decode_quoted_printable(body: &[u8], line_break_follows: bool) -> Option<Vec<u8>> {
    decode_qp(body, line_break_follows).map(|(out, _)| out)
}

/// [`decode_quoted_printable`], and whether the body ended outside an escape.
fn decode_qp(body: &[u8], line_break_follows: bool) -> Option<(Vec<u8>, bool)> {
    let mut out = Vec::with_capacity(body.len());
    let mut line_break: &[u8] = b"\n";
    // Trailing whitespace at or after this index is dropped at a hard break; what an
    // escape produced is kept (`=20` is how a trailing space is written).
    let mut keep_to = 0;
    let mut state = State::Text;
    let mut i = 0;
    while i < body.len() {
        if let State::Text = state {
            let run_end = memchr::memchr3(b'=', b'\n', b'\r', &body[i..]).map_or(body.len(), |p| i + p);
            out.extend_from_slice(&body[i..run_end]);
            i = run_end;
            if i == body.len() {
                break;
            }
            // The sequences that stop nearly every run, taken whole: what the state
            // machine below does with them byte by byte, without its three round trips.
            match body[i..] {
                [b'=', h, l, ..] if let (Some(high), Some(low)) = (hex(h), hex(l)) => {
                    out.push((high << 4) | low);
                    keep_to = out.len();
                    i += 3;
                    continue;
                }
                [b'=', b'\r', b'\n', ..] => {
                    line_break = b"\r\n";
                    keep_to = out.len();
                    i += 3;
                    continue;
                }
                [b'\r', b'\n', ..] => {
                    line_break = b"\r\n";
                    strip_trailing_space(&mut out, keep_to);
                    out.extend_from_slice(line_break);
                    keep_to = out.len();
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        let b = body[i];
        i += 1;
        match (state, b) {
            (State::Text, b'=') => state = State::Eq,
            (_, b'=') => return None,
            (_, b'\r') => {
                line_break = b"\r\n";
                if let State::Hex1 { high, .. } = state {
                    state = State::Hex1 { high, last: b };
                }
            }
            (State::Eq, b'\n') => {
                state = State::Text;
                keep_to = out.len();
            }
            (_, b'\n') => {
                strip_trailing_space(&mut out, keep_to);
                out.extend_from_slice(line_break);
                keep_to = out.len();
                if let State::Hex1 { high, .. } = state {
                    state = State::Hex1 { high, last: b };
                }
            }
            (State::Eq, _) => match hex(b) {
                Some(high) => state = State::Hex1 { high, last: b },
                None if is_space(b) => {}
                None => {
                    out.extend_from_slice(&[b'=', b]);
                    keep_to = out.len();
                    state = State::Text;
                }
            },
            (State::Hex1 { high, last }, _) => {
                match hex(b) {
                    Some(low) => out.push((high << 4) | low),
                    None => out.extend_from_slice(&[b'=', last, b]),
                }
                keep_to = out.len();
                state = State::Text;
            }
            // Not reached: a run of text stops only at `=`, CR or LF.
            (State::Text, _) => out.push(b),
        }
    }
    let in_text = matches!(state, State::Text);
    if line_break_follows && in_text {
        strip_trailing_space(&mut out, keep_to);
    }
    Some((out, in_text))
}

fn strip_trailing_space(out: &mut Vec<u8>, keep_to: usize) {
    while out.len() > keep_to && out.last().is_some_and(|&b| is_space(b)) {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::testkit::Lcg;
    use mail_parser::{MessageParser, PartType};

    /// mail-parser's parse as the walk configures it: no body is decoded.
    fn offsets_parser() -> MessageParser {
        MessageParser::new()
            .with_mime_headers()
            .ignore_header(HeaderName::ContentTransferEncoding)
            .default_header_ignore()
    }

    /// A body of pieces that real encoders (and broken ones) write.
    fn random_qp(rng: &mut Lcg) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"plain text ",
            b"<a href=3D\"x\">",
            b"caf=C3=A9",
            b"=e2=82=ac",
            b"=\r\n",
            b"= \t\r\n",
            b"=\n",
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b"\x0c",
            b"=ZZ",
            b"=4",
            b"=4\r\n",
            b"==",
            b"= x",
            b"=20",
            b"=09\r\n",
            b" \r\n",
            b"-",
            b"--",
            b"=\r",
            b"\xc3\xa9",
            b"=3D=",
        ];
        let mut body = Vec::new();
        for _ in 0..rng.below(30) {
            body.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
        body
    }

    #[test]
    fn quoted_printable_decodes_as_mail_parser_does_in_a_real_parse() {
        let mut rng = Lcg(5);
        let (mut compared, mut quirks) = (0, 0);
        for round in 0..4000 {
            let body = random_qp(&mut rng);
            let tail: &[u8] = [
                &b"\r\n--b--\r\n"[..],
                b"--b--\r\n",
                b"\n--b\r\n\r\nx\r\n--b--\r\n",
            ][round % 3];
            let mut m = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: Quoted-Printable \r\n\r\n"
                .to_vec();
            m.extend_from_slice(&body);
            m.extend_from_slice(tail);
            let finding = offsets_parser().parse(&m).expect("parses");
            let new = &finding.parts[1];
            assert_eq!(transfer_encoding(&m, new), Encoding::QuotedPrintable);
            let (start, end) = (new.offset_body as usize, new.offset_end as usize);
            let follows = m[end..].starts_with(b"\n") || m[end..].starts_with(b"\r\n");
            let ours = decode_qp(&m[start..end], follows);
            if let Some((_, false)) = ours {
                // Ends inside an escape or on a soft break: where mail-parser's decoder drops
                // content (and, on a soft break, subtracts past zero: a panic in debug builds).
                quirks += 1;
                continue;
            }
            let decoding = MessageParser::default().parse(&m).expect("parses");
            let old = &decoding.parts[1];
            assert_eq!(
                (old.offset_header, old.offset_body, old.offset_end),
                (new.offset_header, new.offset_body, new.offset_end),
                "round {round}: the parts are where they were"
            );
            match (&old.body, ours) {
                (_, None) => assert!(old.is_encoding_problem, "round {round}: {body:?}"),
                (PartType::Binary(theirs), Some((ours, _))) if !old.is_encoding_problem => {
                    assert_eq!(
                        theirs.as_ref(),
                        ours.as_slice(),
                        "round {round}: {:?}",
                        String::from_utf8_lossy(&body)
                    );
                    compared += 1;
                }
                (other, ours) => panic!("round {round}: {other:?} against {ours:?}"),
            }
        }
        assert!(
            compared > 800 && quirks > 100,
            "{compared} compared, {quirks} quirks"
        );
    }

    #[test]
    fn a_soft_break_before_the_boundary_keeps_the_content() {
        // mail-parser's MIME decoder returns "a" here (it drops the bytes of a line break it
        // never emitted); the content is "abc".
        assert_eq!(decode_quoted_printable(b"abc=", true).unwrap(), b"abc");
        assert_eq!(decode_quoted_printable(b"abc=4", true).unwrap(), b"abc");
        assert_eq!(decode_quoted_printable(b"a \t=\r\nb  ", true).unwrap(), b"a \tb");
        assert_eq!(decode_quoted_printable(b"a  ", false).unwrap(), b"a  ");
        assert_eq!(decode_quoted_printable(b"a=3D=", true).unwrap(), b"a=");
        assert!(decode_quoted_printable(b"a==", true).is_none());
    }

    #[test]
    fn base64_decodes_as_mail_parser_does() {
        let m = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
            Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: BASE64\r\n\r\n\
            w6HD qcOt\r\nw7PDug==\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\nw6!!\r\n--b--\r\n";
        let (old, new) = (
            MessageParser::default().parse(m).unwrap(),
            offsets_parser().parse(m).unwrap(),
        );
        let part = &new.parts[1];
        assert_eq!(transfer_encoding(m, part), Encoding::Base64);
        let body = &m[part.offset_body as usize..part.offset_end as usize];
        let PartType::Binary(theirs) = &old.parts[1].body else {
            panic!("{:?}", old.parts[1].body);
        };
        assert_eq!(decode(Encoding::Base64, body, true).unwrap(), theirs.as_ref());
        assert_eq!(theirs.as_ref(), "\u{e1}\u{e9}\u{ed}\u{f3}\u{fa}".as_bytes());
        let bad = &new.parts[2];
        assert!(old.parts[2].is_encoding_problem);
        assert!(
            decode(
                Encoding::Base64,
                &m[bad.offset_body as usize..bad.offset_end as usize],
                true
            )
            .is_none()
        );
    }

    #[test]
    fn the_field_is_read_as_mail_parser_reads_it() {
        for (field, want) in [
            ("Content-Transfer-Encoding: base64\r\n", Encoding::Base64),
            (
                "Content-Transfer-Encoding:\r\n  QUOTED-printable  \r\n",
                Encoding::QuotedPrintable,
            ),
            (
                "Content-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 8bit\r\n",
                Encoding::None,
            ),
            (
                "Content-Transfer-Encoding: 8bit\r\nContent-Transfer-Encoding: base64\r\n",
                Encoding::Base64,
            ),
            ("Content-Transfer-Encoding: base64 (comment)\r\n", Encoding::None),
            (
                "Content-Transfer-Encoding: =?us-ascii?q?base64?=\r\n",
                Encoding::Base64,
            ),
            ("X-Other: base64\r\n", Encoding::None),
        ] {
            let m = format!("From: a@example.com\r\n{field}\r\nbody\r\n");
            let (old, new) = (
                MessageParser::default().parse(&m).unwrap(),
                offsets_parser().parse(&m).unwrap(),
            );
            assert_eq!(old.parts[0].encoding, want, "{field:?}");
            assert_eq!(transfer_encoding(m.as_bytes(), &new.parts[0]), want, "{field:?}");
        }
    }
}
