//! The outbound SMTP client, sans-IO: what corerelay says to a remote server and how it
//! reads the answers, with no socket in sight.
//!
//! - [`Capabilities`] and [`parse_ehlo`]: what the server offered in its EHLO reply.
//! - [`Command`]: the wire form of every command the client sends.
//! - [`DataWriter`] (in `dot.rs`): the body, dot-stuffed chunk by chunk into a bounded send
//!   buffer, ending with `CRLF.CRLF`.
//! - [`ReplyReader`] (in `reader.rs`): whole replies out of reads split anywhere, in a
//!   bounded buffer.
//! - [`Transaction`] (in `transaction.rs`): one MAIL/RCPT/DATA (or BDAT) exchange as a
//!   state machine, pipelined (RFC 2920) or one command per round trip.
//! - [`auth`] (in `auth.rs`): the AUTH PLAIN and LOGIN exchanges (RFC 4616, 4954).
//!
//! The socket driver around these is `deliver::connection`; the decision of what a reply
//! means for each recipient is `deliver::outcome`. Keeping the protocol here lets it be
//! tested with scripted replies and split inputs, without an executor.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::smtp::reply::Reply;

pub mod auth;
mod dot;
mod reader;
mod transaction;

pub use dot::{DataWriter, needs_eight_bit, write_data};
pub use reader::{READ_CHUNK_BYTES, REPLY_MAX_BYTES, ReplyReader};
pub use transaction::{Next, Transaction, TransactionResult, UnexpectedReply};

/// Where a client session is, named for errors and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Greeting,
    /// EHLO, or HELO after the server refused EHLO.
    Ehlo,
    /// STARTTLS and the TLS handshake (RFC 3207).
    Starttls,
    /// AUTH and its challenges (RFC 4954).
    Auth,
    Mail,
    Rcpt,
    /// The DATA command and its 354.
    Data,
    /// The body, the final dot and the reply to it.
    DataEnd,
    Rset,
    Quit,
}

impl std::fmt::Display for Phase {
    /// As a person reading a bounce would name it: "at RCPT TO", "after end of data".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "EHLO",
            Phase::Starttls => "STARTTLS",
            Phase::Auth => "AUTH",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::DataEnd => "end of data",
            Phase::Rset => "RSET",
            Phase::Quit => "QUIT",
        })
    }
}

/// The SMTP extensions a server offered in its EHLO reply (all off after HELO).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    /// `None`: SIZE not offered. `Some(0)`: offered without a fixed maximum (RFC 1870 §4).
    /// `Some(n)`: the largest message the server takes, in bytes.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub chunking: bool,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    pub dsn: bool,
    /// `BINARYMIME` offered (RFC 3030; only usable with CHUNKING).
    pub binarymime: bool,
    /// `AUTH PLAIN` offered (RFC 4616).
    pub auth_plain: bool,
    /// `AUTH LOGIN` offered (the common non-standard mechanism).
    pub auth_login: bool,
}

/// Reads the extensions from an EHLO reply. The first line is the server's name and
/// greeting, every further line is `KEYWORD [params]` (RFC 5321 §4.1.1.1); keywords are
/// case-insensitive and unknown ones are ignored.
pub fn parse_ehlo(reply: &Reply) -> Capabilities {
    let mut caps = Capabilities::default();
    for line in reply.text.split('\n').skip(1) {
        let mut words = line.split_ascii_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        match keyword.to_ascii_uppercase().as_str() {
            "PIPELINING" => caps.pipelining = true,
            // A SIZE without a usable number still tells us the server knows SIZE=.
            "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
            "8BITMIME" => caps.eightbitmime = true,
            "SMTPUTF8" => caps.smtputf8 = true,
            "CHUNKING" => caps.chunking = true,
            "BINARYMIME" => caps.binarymime = true,
            "STARTTLS" => caps.starttls = true,
            "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
            "DSN" => caps.dsn = true,
            "AUTH" => {
                for mechanism in words {
                    match mechanism.to_ascii_uppercase().as_str() {
                        "PLAIN" => caps.auth_plain = true,
                        "LOGIN" => caps.auth_login = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    caps
}

/// The parameters corerelay puts on `MAIL FROM`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870), sent only to servers that offer SIZE.
    pub size_bytes: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `BODY=BINARYMIME` (RFC 3030); wins over `eight_bit_mime`.
    pub binary_mime: bool,
    /// `SMTPUTF8` (RFC 6531), for non-ASCII addresses.
    pub smtputf8: bool,
}

/// A command the client sends. Paths are given without angle brackets; the null
/// reverse-path is the empty string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Ehlo(&'a str),
    Helo(&'a str),
    Mail(&'a str, MailParams),
    Rcpt(&'a str),
    Data,
    /// RFC 3030 `BDAT <size> LAST`: the whole message as one chunk, sent as is.
    BdatLast(u64),
    Rset,
    Quit,
    Starttls,
    /// `AUTH <mechanism> [initial-response]`.
    Auth(&'a str),
    /// A line answering a `334` challenge (base64).
    AuthResponse(&'a str),
}

impl Command<'_> {
    /// Appends the command line, CRLF included, to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        // Writing to a BytesMut cannot fail.
        let _ = match self {
            Command::Ehlo(name) => write!(out, "EHLO {name}"),
            Command::Helo(name) => write!(out, "HELO {name}"),
            Command::Mail(from, params) => write_mail(out, from, params),
            Command::Rcpt(to) => write!(out, "RCPT TO:<{to}>"),
            Command::Data => write!(out, "DATA"),
            Command::BdatLast(size) => write!(out, "BDAT {size} LAST"),
            Command::Starttls => write!(out, "STARTTLS"),
            Command::Auth(args) => write!(out, "AUTH {args}"),
            Command::AuthResponse(line) => write!(out, "{line}"),
            Command::Rset => write!(out, "RSET"),
            Command::Quit => write!(out, "QUIT"),
        };
        out.put_slice(b"\r\n");
    }
}

fn write_mail(out: &mut BytesMut, from: &str, params: &MailParams) -> std::fmt::Result {
    write!(out, "MAIL FROM:<{from}>")?;
    if let Some(size) = params.size_bytes {
        write!(out, " SIZE={size}")?;
    }
    if params.binary_mime {
        write!(out, " BODY=BINARYMIME")?;
    } else if params.eight_bit_mime {
        write!(out, " BODY=8BITMIME")?;
    }
    if params.smtputf8 {
        write!(out, " SMTPUTF8")?;
    }
    Ok(())
}

/// Why a message was not offered to a server at all: nothing was sent for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsendable {
    /// The body has 8-bit bytes and the server does not offer 8BITMIME (RFC 6152 §3:
    /// without a downgrade, which corerelay does not do, this is a delivery failure).
    EightBit,
    /// An address is not ASCII and the server does not offer SMTPUTF8 (RFC 6531 §3.2).
    SmtpUtf8,
    /// An address holds a control character (CR or LF would inject a command).
    BadPath(String),
    /// The transaction has no recipient.
    NoRecipients,
    /// The message arrived as BINARYMIME and the server does not offer BINARYMIME with
    /// CHUNKING (RFC 3030 §3: it cannot be sent with DATA without a conversion).
    Binary,
    /// The message is larger than the SIZE the server announced (RFC 1870 §6.1).
    TooLarge { size_bytes: u64, max_bytes: u64 },
}

impl std::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsendable::EightBit => {
                f.write_str("5.6.3 message has 8-bit content and the server does not offer 8BITMIME")
            }
            Unsendable::SmtpUtf8 => {
                f.write_str("5.6.7 address is not ASCII and the server does not offer SMTPUTF8")
            }
            Unsendable::BadPath(path) => write!(f, "5.1.3 address holds a control character: {path:?}"),
            Unsendable::NoRecipients => f.write_str("5.5.1 no recipients"),
            Unsendable::Binary => f.write_str(
                "5.6.3 message has binary content and the server does not offer BINARYMIME with CHUNKING",
            ),
            Unsendable::TooLarge {
                size_bytes,
                max_bytes,
            } => write!(
                f,
                "5.3.4 message of {size_bytes} bytes is larger than the server's SIZE {max_bytes}"
            ),
        }
    }
}

/// Whether to send `BODY=8BITMIME`, given what the client declared, what the server
/// offers and the bytes. A body declared 8-bit but made only of ASCII (mail clients
/// declare it by habit) is sent as 7-bit to a server without 8BITMIME; a body that really
/// has 8-bit bytes cannot go there. The body is scanned only in that rare case.
pub fn choose_eight_bit(declared: bool, caps: &Capabilities, body: &[Bytes]) -> Result<bool, Unsendable> {
    if !declared {
        return Ok(false);
    }
    if caps.eightbitmime {
        return Ok(true);
    }
    if needs_eight_bit(body) {
        return Err(Unsendable::EightBit);
    }
    Ok(false)
}

/// Checks a path before it goes on a command line.
pub fn check_path(path: &str) -> Result<(), Unsendable> {
    if path.bytes().any(|b| b.is_ascii_control()) {
        return Err(Unsendable::BadPath(path.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::parse;

    fn caps_of(wire: &[u8]) -> Capabilities {
        parse_ehlo(&parse(wire).unwrap().0)
    }

    #[test]
    fn ehlo_keywords_are_read_case_insensitively() {
        let caps = caps_of(
            b"250-mx.example Hello\r\n250-pipelining\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n\
              250-SMTPUTF8\r\n250-CHUNKING\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n\
              250-AUTH PLAIN\r\n250 DSN\r\n",
        );
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                size: Some(1_000_000),
                eightbitmime: true,
                smtputf8: true,
                chunking: true,
                starttls: true,
                enhanced_status_codes: true,
                dsn: true,
                binarymime: false,
                auth_plain: true,
                auth_login: false,
            }
        );
        let caps = caps_of(b"250-mx\r\n250 AUTH login CRAM-MD5 Plain\r\n");
        assert!(caps.auth_plain && caps.auth_login);
    }

    #[test]
    fn ehlo_first_line_is_not_a_keyword_and_size_may_lack_a_number() {
        assert_eq!(caps_of(b"250 PIPELINING\r\n"), Capabilities::default());
        assert_eq!(caps_of(b"250-mx\r\n250 SIZE\r\n").size, Some(0));
        assert_eq!(caps_of(b"250-mx\r\n250 SIZE lots\r\n").size, Some(0));
        assert_eq!(caps_of(b"250-mx\r\n250 \r\n"), Capabilities::default());
    }

    #[test]
    fn commands_render_with_their_parameters() {
        let check = |cmd: Command, wire: &str| {
            let mut out = BytesMut::new();
            cmd.write_to(&mut out);
            assert_eq!(String::from_utf8_lossy(&out), wire);
        };
        check(Command::Ehlo("relay.example"), "EHLO relay.example\r\n");
        check(Command::Helo("relay.example"), "HELO relay.example\r\n");
        check(Command::Mail("", MailParams::default()), "MAIL FROM:<>\r\n");
        let all = MailParams {
            size_bytes: Some(1234),
            eight_bit_mime: true,
            binary_mime: false,
            smtputf8: true,
        };
        check(
            Command::Mail("a@b.example", all),
            "MAIL FROM:<a@b.example> SIZE=1234 BODY=8BITMIME SMTPUTF8\r\n",
        );
        check(Command::Rcpt("c@d.example"), "RCPT TO:<c@d.example>\r\n");
        check(Command::Data, "DATA\r\n");
        check(Command::Rset, "RSET\r\n");
        check(Command::BdatLast(1234), "BDAT 1234 LAST\r\n");
        let binary = MailParams {
            binary_mime: true,
            eight_bit_mime: true,
            ..MailParams::default()
        };
        check(
            Command::Mail("a@b", binary),
            "MAIL FROM:<a@b> BODY=BINARYMIME\r\n",
        );
        check(Command::Starttls, "STARTTLS\r\n");
        check(Command::Auth("PLAIN AHUAcA=="), "AUTH PLAIN AHUAcA==\r\n");
        check(Command::AuthResponse("dQ=="), "dQ==\r\n");
        check(Command::Quit, "QUIT\r\n");
    }

    #[test]
    fn eight_bit_is_declared_only_when_needed_and_possible() {
        let ascii = [Bytes::from_static(b"Subject: hi\r\n\r\nplain\r\n")];
        let latin = [Bytes::from_static(b"Subject: hi\r\n\r\ncaf\xc3\xa9\r\n")];
        let with = Capabilities {
            eightbitmime: true,
            ..Capabilities::default()
        };
        let without = Capabilities::default();
        assert_eq!(choose_eight_bit(false, &without, &latin), Ok(false));
        assert_eq!(choose_eight_bit(true, &with, &ascii), Ok(true));
        assert_eq!(choose_eight_bit(true, &without, &ascii), Ok(false));
        assert_eq!(
            choose_eight_bit(true, &without, &latin),
            Err(Unsendable::EightBit)
        );
    }

    #[test]
    fn paths_with_control_characters_are_refused() {
        assert_eq!(check_path("a@b.example"), Ok(()));
        assert_eq!(check_path(""), Ok(()));
        assert!(check_path("a@b\r\nRCPT TO:<x@y>").is_err());
        assert!(check_path("a\0@b").is_err());
    }
}
