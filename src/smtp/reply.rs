//! SMTP replies as typed values: code, RFC 3463 enhanced status code, text.
//!
//! Every reply corerelay sends is built here (the inbound catalogue in [`catalogue`]), and
//! every reply it reads from a remote server is parsed here ([`parse`]), so there is one
//! place that knows the wire format (RFC 5321 §4.2) and one place that decides whether a
//! reply is positive, transient or permanent.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use bytes::BytesMut;

/// An RFC 3463 enhanced status code `class.subject.detail`, e.g. `5.7.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Enhanced {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Enhanced {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Enhanced {
            class,
            subject,
            detail,
        }
    }

    /// Parses `class.subject.detail` at the start of `text`; returns the code and the rest
    /// of the text after the separating space.
    pub fn parse_prefix(text: &str) -> Option<(Enhanced, &str)> {
        let end = text.find(' ').unwrap_or(text.len());
        let mut parts = text[..end].splitn(3, '.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        let rest = text[end..].strip_prefix(' ').unwrap_or(&text[end..]);
        Some((Enhanced::new(class, subject, detail), rest))
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// How a reply is to be treated by the side that receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// 2xx, and 3xx intermediate replies (354, 334).
    Positive,
    /// 4xx: try again later.
    Transient,
    /// 5xx: do not retry.
    Permanent,
}

/// One SMTP reply. Multi-line replies keep their lines separated by `\n` in `text`;
/// [`Reply::write_to`] renders them with `-` continuation markers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with a static text, usable in `const` items.
    pub const fn fixed(code: u16, enhanced: Option<Enhanced>, text: &'static str) -> Reply {
        Reply {
            code,
            enhanced,
            text: Cow::Borrowed(text),
        }
    }

    /// A reply with an enhanced code and a text made at run time.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    pub fn severity(&self) -> Severity {
        match self.code / 100 {
            2 | 3 => Severity::Positive,
            4 => Severity::Transient,
            _ => Severity::Permanent,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.severity() == Severity::Positive
    }

    pub fn is_transient(&self) -> bool {
        self.severity() == Severity::Transient
    }

    pub fn is_permanent(&self) -> bool {
        self.severity() == Severity::Permanent
    }

    /// Appends the wire form (`250-first\r\n250 2.0.0 last\r\n`) to `out`. The enhanced
    /// code, when present, is repeated on every line as RFC 2034 asks.
    pub fn write_to(&self, out: &mut BytesMut) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_none() { ' ' } else { '-' };
            let line = line.trim_end_matches('\r');
            // Writing to a BytesMut cannot fail.
            let _ = match (self.enhanced, line.is_empty()) {
                (Some(e), false) => write!(out, "{}{sep}{e} {line}\r\n", self.code),
                (Some(e), true) => write!(out, "{}{sep}{e}\r\n", self.code),
                (None, _) => write!(out, "{}{sep}{line}\r\n", self.code),
            };
        }
    }

    /// The wire form as a string (tests and logs).
    pub fn to_wire(&self) -> String {
        let mut out = BytesMut::new();
        self.write_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl fmt::Display for Reply {
    /// One line for logs: `550 5.7.1 text` (continuation lines joined with `; `).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for (i, line) in self.text.split('\n').enumerate() {
            write!(f, "{}{}", if i == 0 { " " } else { "; " }, line)?;
        }
        Ok(())
    }
}

/// Why a remote reply could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// More bytes are needed to complete the reply.
    Incomplete,
    /// The bytes are not an SMTP reply (bad code, inconsistent codes, line too long,
    /// too many lines).
    Invalid(&'static str),
}

/// The largest reply line accepted from a remote server (RFC 5321 §4.5.3.1.5 says 512;
/// real servers exceed it, so allow some slack while still bounding memory).
pub const REPLY_LINE_MAX_BYTES: usize = 2048;
/// The most lines one reply may have.
pub const REPLY_LINES_MAX_COUNT: usize = 128;

/// Parses one complete reply from the start of `buf` (which may hold more after it).
/// Returns the reply and the number of bytes it used. Enhanced codes are recognised on
/// the first line when the class matches the reply's first digit.
pub fn parse(buf: &[u8]) -> Result<(Reply, usize), ParseError> {
    let mut pos = 0;
    let mut code: Option<u16> = None;
    let mut lines: Vec<&str> = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > REPLY_LINE_MAX_BYTES {
                return Err(ParseError::Invalid("reply line too long"));
            }
            return Err(ParseError::Incomplete);
        };
        if nl > REPLY_LINE_MAX_BYTES {
            return Err(ParseError::Invalid("reply line too long"));
        }
        let mut line = &rest[..nl];
        // Stray CRs before the LF (seen from broken servers) are not part of the text.
        while let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        pos += nl + 1;
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(ParseError::Invalid("reply does not start with a 3-digit code"));
        }
        let this_code =
            (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
        if !(200..600).contains(&this_code) {
            return Err(ParseError::Invalid("reply code out of range"));
        }
        if *code.get_or_insert(this_code) != this_code {
            return Err(ParseError::Invalid("reply lines carry different codes"));
        }
        let sep = line.get(3).copied();
        let text = match sep {
            None => "",
            Some(b' ') | Some(b'-') => std::str::from_utf8(&line[4..]).unwrap_or("<non-UTF-8 text>"),
            Some(_) => return Err(ParseError::Invalid("bad separator after reply code")),
        };
        lines.push(text);
        if lines.len() > REPLY_LINES_MAX_COUNT {
            return Err(ParseError::Invalid("reply has too many lines"));
        }
        if sep != Some(b'-') {
            break;
        }
    }
    let code = code.unwrap_or(0);
    let mut enhanced = None;
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        let mut line = *line;
        if let Some((e, rest)) = Enhanced::parse_prefix(line)
            && e.class as u16 == code / 100
        {
            if i == 0 {
                enhanced = Some(e);
            }
            if enhanced == Some(e) {
                line = rest;
            }
        }
        if i > 0 {
            text.push('\n');
        }
        text.push_str(line);
    }
    Ok((
        Reply {
            code,
            enhanced,
            text: Cow::Owned(text),
        },
        pos,
    ))
}

/// The replies corerelay's SMTP server sends, named by situation. Texts stay short and
/// say what went wrong; call sites that need detail build a reply with [`Reply::new`].
pub mod catalogue {
    use super::{Enhanced as E, Reply};

    const fn r(code: u16, c: u8, s: u16, d: u16, text: &'static str) -> Reply {
        Reply::fixed(code, Some(E::new(c, s, d)), text)
    }

    pub const OK: Reply = r(250, 2, 0, 0, "OK");
    pub const SENDER_OK: Reply = r(250, 2, 1, 0, "Sender OK");
    pub const RECIPIENT_OK: Reply = r(250, 2, 1, 5, "Recipient OK");
    pub const RESET_OK: Reply = r(250, 2, 0, 0, "Reset OK");
    pub const NOOP_OK: Reply = r(250, 2, 0, 0, "OK");
    pub const BYE: Reply = r(221, 2, 0, 0, "Bye");
    pub const VRFY: Reply = r(
        252,
        2,
        5,
        2,
        "Cannot VRFY user, but will accept message and attempt delivery",
    );
    pub const HELP: Reply = r(
        214,
        2,
        0,
        0,
        "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)",
    );
    pub const START_DATA: Reply = Reply::fixed(354, None, "Start mail input; end with <CRLF>.<CRLF>");

    pub const SYNTAX: Reply = r(500, 5, 5, 2, "Syntax error, command unrecognized");
    pub const LINE_TOO_LONG: Reply = r(500, 5, 5, 2, "Line too long");
    pub const PARAM_SYNTAX: Reply = r(501, 5, 5, 4, "Syntax error in parameters or arguments");
    pub const ADDRESS_SYNTAX: Reply = r(501, 5, 1, 3, "Bad address syntax");
    pub const NOT_IMPLEMENTED: Reply = r(502, 5, 5, 1, "Command not implemented");
    pub const BAD_SEQUENCE: Reply = r(503, 5, 5, 1, "Bad sequence of commands");
    pub const NEED_EHLO: Reply = r(503, 5, 5, 1, "Send EHLO/HELO first");
    pub const NEED_MAIL: Reply = r(503, 5, 5, 1, "Need MAIL command");
    pub const NEED_RCPT: Reply = r(503, 5, 5, 1, "Need RCPT command");
    pub const NESTED_MAIL: Reply = r(503, 5, 5, 1, "Sender already specified");
    pub const PARAM_UNKNOWN: Reply = r(555, 5, 5, 4, "Unsupported MAIL/RCPT parameter");
    pub const TOO_MANY_RCPTS: Reply = r(452, 4, 5, 3, "Too many recipients");
    pub const SIZE_EXCEEDED: Reply = r(552, 5, 3, 4, "Message size exceeds fixed maximum message size");
    pub const BARE_LF: Reply = r(
        550,
        5,
        6,
        0,
        "Message contains bare CR or LF; lines must end with CRLF",
    );
    pub const DATA_LINE_TOO_LONG: Reply = r(550, 5, 6, 0, "Message contains a line longer than allowed");
    pub const SPOOL_ERROR: Reply = r(452, 4, 3, 1, "Insufficient system storage; try again later");
    pub const LOCAL_ERROR: Reply = r(451, 4, 3, 0, "Local error in processing; try again later");
    pub const TOO_MANY_CONNECTIONS: Reply = r(421, 4, 7, 0, "Too many connections; try again later");
    pub const TOO_MANY_ERRORS: Reply = r(421, 4, 7, 0, "Too many errors; closing connection");
    pub const TIMEOUT: Reply = r(421, 4, 4, 2, "Timeout; closing connection");
    pub const SHUTTING_DOWN: Reply = r(421, 4, 3, 0, "Service shutting down; closing connection");
    pub const TOO_MANY_MESSAGES: Reply = r(421, 4, 7, 0, "Too many messages on one connection; closing");
    pub const TOO_MANY_CONNECTIONS_FROM_IP: Reply = r(
        421,
        4,
        7,
        0,
        "Too many connections from your address; try again later",
    );
    pub const NO_VALID_RCPTS: Reply = r(554, 5, 5, 1, "No valid recipients");
    pub const BARE_LF_COMMAND: Reply = r(500, 5, 5, 2, "Bare LF; command lines must end with CRLF");

    // STARTTLS (RFC 3207).
    pub const READY_FOR_TLS: Reply = r(220, 2, 0, 0, "Ready to start TLS");
    pub const TLS_REQUIRED: Reply = r(530, 5, 7, 0, "Must issue a STARTTLS command first");
    pub const TLS_ACTIVE: Reply = r(503, 5, 5, 1, "TLS already active");
    pub const TLS_NOT_OFFERED: Reply = r(502, 5, 5, 1, "STARTTLS not offered");
    /// CVE-2011-0411: plaintext pipelined behind STARTTLS would be read as if it had come
    /// over TLS, so the connection is closed instead.
    pub const PIPELINED_AFTER_STARTTLS: Reply = r(
        554,
        5,
        5,
        1,
        "Commands pipelined after STARTTLS; closing connection",
    );

    // AUTH (RFC 4954).
    pub const AUTH_OK: Reply = r(235, 2, 7, 0, "Authentication successful");
    pub const AUTH_FAILED: Reply = r(535, 5, 7, 8, "Authentication credentials invalid");
    pub const AUTH_NEEDS_TLS: Reply = r(
        538,
        5,
        7,
        11,
        "Encryption required for requested authentication mechanism",
    );
    pub const AUTH_MECHANISM: Reply = r(504, 5, 5, 4, "Unrecognized authentication type");
    pub const AUTH_CANCELLED: Reply = r(501, 5, 7, 0, "Authentication cancelled");
    pub const AUTH_BAD_BASE64: Reply = r(501, 5, 5, 2, "Cannot decode the response (base64)");
    pub const AUTH_NOT_OFFERED: Reply = r(502, 5, 5, 1, "AUTH not offered");
    pub const ALREADY_AUTHENTICATED: Reply = r(503, 5, 5, 1, "Already authenticated");
    pub const AUTH_IN_TRANSACTION: Reply = r(503, 5, 5, 1, "AUTH not allowed during a mail transaction");
    pub const AUTH_THROTTLED: Reply = r(
        454,
        4,
        7,
        0,
        "Too many authentication failures from your address; try again later",
    );
    /// The server challenge of PLAIN without an initial response: empty (RFC 4954 §4).
    pub const AUTH_CONTINUE: Reply = Reply::fixed(334, None, "");
    /// LOGIN's prompts, base64 of `Username:` and `Password:`.
    pub const AUTH_USERNAME: Reply = Reply::fixed(334, None, "VXNlcm5hbWU6");
    pub const AUTH_PASSWORD: Reply = Reply::fixed(334, None, "UGFzc3dvcmQ6");

    // SMTPUTF8 (RFC 6531), CHUNKING and BINARYMIME (RFC 3030), DSN (RFC 3461).
    pub const UTF8_NEEDS_SMTPUTF8: Reply = r(553, 5, 6, 7, "Non-ASCII address needs MAIL FROM with SMTPUTF8");
    pub const BINARYMIME_NEEDS_BDAT: Reply = r(503, 5, 5, 1, "BODY=BINARYMIME requires BDAT, not DATA");
    pub const DATA_AFTER_BDAT: Reply = r(503, 5, 5, 1, "DATA not allowed after BDAT in one transaction");
    pub const BDAT_NO_TRANSACTION: Reply = r(503, 5, 5, 1, "No mail transaction for BDAT; chunk discarded");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_single_and_multi_line() {
        assert_eq!(catalogue::OK.to_wire(), "250 2.0.0 OK\r\n");
        let ehlo = Reply::fixed(250, None, "relay.example\nPIPELINING\nSIZE 1000");
        assert_eq!(
            ehlo.to_wire(),
            "250-relay.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
        );
        assert_eq!(
            catalogue::START_DATA.to_wire(),
            "354 Start mail input; end with <CRLF>.<CRLF>\r\n"
        );
    }

    #[test]
    fn parses_multi_line_with_enhanced_codes() {
        let wire = b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\nrest";
        let (reply, used) = parse(wire).unwrap();
        assert_eq!(used, wire.len() - 4);
        assert_eq!(reply.code, 250);
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.text, "mx.example\nPIPELINING\nSIZE 100");

        let (reply, _) = parse(b"550-5.7.1 no\r\n550 5.7.1 relay\r\n").unwrap();
        assert_eq!(reply.enhanced, Some(Enhanced::new(5, 7, 1)));
        assert_eq!(reply.text, "no\nrelay");
        assert!(reply.is_permanent());
    }

    #[test]
    fn rejects_garbage_and_waits_for_more() {
        assert_eq!(parse(b"250-first\r\n250 sec"), Err(ParseError::Incomplete));
        assert!(matches!(parse(b"hello\r\n"), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse(b"250-a\r\n251 b\r\n"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(parse(&vec![b'2'; 5000]), Err(ParseError::Invalid(_))));
    }

    #[test]
    fn stray_carriage_returns_do_not_hide_the_enhanced_code() {
        let (reply, used) = parse(b"550 5.1.1 no such user\r\r\n").unwrap();
        assert_eq!(used, 25);
        assert_eq!(reply.enhanced, Some(Enhanced::new(5, 1, 1)));
        assert_eq!(reply.text, "no such user");
    }

    #[test]
    fn enhanced_code_must_match_class() {
        let (reply, _) = parse(b"451 5.7.1 odd\r\n").unwrap();
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.text, "5.7.1 odd");
        assert!(reply.is_transient());
    }
}
