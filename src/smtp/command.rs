//! The inbound command parser: one command line (without its CRLF) in, a typed
//! [`Command`] or the error [`Reply`] out.
//!
//! It owns the syntax only. Whether a command is allowed now (sequence, limits, which
//! extensions were offered) is the session's business (`smtp::server`). Parameters of
//! MAIL and RCPT are parsed into [`MailParams`] and [`RcptParams`], one `match` arm per
//! keyword, so SMTPUTF8, RET, ENVID, NOTIFY and ORCPT are added there as new arms.

use crate::message::BodyType;
use crate::smtp::address::{self, Path};
use crate::smtp::reply::{Enhanced, Reply, catalogue};

/// One client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: String,
        params: MailParams,
    },
    Rcpt {
        to: String,
        params: RcptParams,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help,
    Starttls,
    /// The mechanism and the optional initial response, as sent.
    Auth(String),
    /// RFC 3030 `BDAT <chunk_bytes> [LAST]`: recognised so that an unsolicited chunk can
    /// be skipped instead of being read as commands.
    Bdat {
        chunk_bytes: u64,
        last: bool,
    },
    /// A command of another SMTP extension (ETRN, ATRN, BURL, TURN): known, not offered.
    Unsupported(&'static str),
}

/// Parameters of `MAIL FROM` (RFC 5321 §4.1.2 Mail-parameters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// RFC 1870 `SIZE=`: the client's estimate of the message size.
    pub size: Option<u64>,
    /// RFC 6152 `BODY=`.
    pub body: BodyType,
}

/// Parameters of `RCPT TO`. None are supported yet; DSN's NOTIFY and ORCPT will live here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {}

/// The longest decimal `SIZE=` value accepted (`u64::MAX` has 20 digits).
const SIZE_DIGITS_MAX_COUNT: usize = 20;

/// Parses one command line, `line` being everything before its CRLF.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    // Commands are printable ASCII (RFC 5321 §2.4); control bytes such as NUL or a bare
    // CR cannot appear in a valid command. Non-ASCII is left to the argument parsers,
    // which know whether it is an address (SMTPUTF8) or junk.
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(catalogue::SYNTAX);
    }
    let (verb, args) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    let Some(verb) = Verb::from_bytes(verb) else {
        return Err(catalogue::SYNTAX);
    };
    let args = std::str::from_utf8(args)
        .map_err(|_| catalogue::PARAM_SYNTAX)?
        .trim_matches(' ');
    verb.parse_args(args)
}

/// The verbs corerelay knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    Starttls,
    Auth,
    Bdat,
    Other(&'static str),
}

impl Verb {
    fn from_bytes(verb: &[u8]) -> Option<Verb> {
        const VERBS: &[(&str, Verb)] = &[
            ("EHLO", Verb::Ehlo),
            ("HELO", Verb::Helo),
            ("MAIL", Verb::Mail),
            ("RCPT", Verb::Rcpt),
            ("DATA", Verb::Data),
            ("RSET", Verb::Rset),
            ("NOOP", Verb::Noop),
            ("QUIT", Verb::Quit),
            ("VRFY", Verb::Vrfy),
            ("EXPN", Verb::Expn),
            ("HELP", Verb::Help),
            ("STARTTLS", Verb::Starttls),
            ("AUTH", Verb::Auth),
            ("BDAT", Verb::Bdat),
            ("ETRN", Verb::Other("ETRN")),
            ("ATRN", Verb::Other("ATRN")),
            ("BURL", Verb::Other("BURL")),
            ("TURN", Verb::Other("TURN")),
        ];
        VERBS
            .iter()
            .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(verb))
            .map(|&(_, v)| v)
    }

    fn parse_args(self, args: &str) -> Result<Command, Reply> {
        match self {
            Verb::Ehlo => hello_name(args).map(Command::Ehlo),
            Verb::Helo => hello_name(args).map(Command::Helo),
            Verb::Mail => parse_mail(args),
            Verb::Rcpt => parse_rcpt(args),
            Verb::Data => no_args(args, Command::Data),
            Verb::Rset => no_args(args, Command::Rset),
            Verb::Quit => no_args(args, Command::Quit),
            Verb::Starttls => no_args(args, Command::Starttls),
            // NOOP and HELP may carry a string, which has no meaning (§4.1.1.9, §4.1.1.8).
            Verb::Noop => Ok(Command::Noop),
            Verb::Help => Ok(Command::Help),
            Verb::Vrfy => required(args).map(Command::Vrfy),
            Verb::Expn => required(args).map(Command::Expn),
            Verb::Auth => required(args).map(Command::Auth),
            Verb::Bdat => parse_bdat(args),
            Verb::Other(name) => Ok(Command::Unsupported(name)),
        }
    }
}

fn no_args(args: &str, command: Command) -> Result<Command, Reply> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(catalogue::PARAM_SYNTAX)
    }
}

fn required(args: &str) -> Result<String, Reply> {
    if args.is_empty() {
        Err(catalogue::PARAM_SYNTAX)
    } else {
        Ok(args.to_owned())
    }
}

/// The EHLO/HELO argument: one word. Its syntax is not checked further, because real
/// clients send names that are not domains (`localhost`, Windows host names with `_`),
/// and the name is only recorded.
fn hello_name(args: &str) -> Result<String, Reply> {
    if args.is_empty() || args.contains(' ') || !args.is_ascii() || args.len() > address::DOMAIN_MAX_BYTES {
        return Err(catalogue::PARAM_SYNTAX);
    }
    Ok(args.to_owned())
}

/// `FROM:<path> [params]`, tolerating spaces after the colon as many clients send them.
fn path_and_params<'a>(args: &'a str, keyword: &str) -> Result<(Path, &'a str), Reply> {
    let prefix = args.get(..keyword.len()).ok_or(catalogue::PARAM_SYNTAX)?;
    if !prefix.eq_ignore_ascii_case(keyword) {
        return Err(catalogue::PARAM_SYNTAX);
    }
    let rest = args[keyword.len()..].trim_start_matches(' ');
    let (path, params) = address::parse_path_prefix(rest).map_err(|e| e.reply())?;
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(catalogue::ADDRESS_SYNTAX);
    }
    Ok((path, params))
}

fn parse_mail(args: &str) -> Result<Command, Reply> {
    let (path, params) = path_and_params(args, "FROM:")?;
    if path.is_postmaster() {
        return Err(catalogue::ADDRESS_SYNTAX);
    }
    let mut parsed = MailParams::default();
    let mut seen = Vec::new();
    for param in esmtp_params(params) {
        let (keyword, value) = param?;
        check_unique(&mut seen, keyword)?;
        parsed.apply(keyword, value)?;
    }
    Ok(Command::Mail {
        from: path.into_string(),
        params: parsed,
    })
}

fn parse_rcpt(args: &str) -> Result<Command, Reply> {
    let (path, params) = path_and_params(args, "TO:")?;
    if path.is_null() {
        return Err(catalogue::ADDRESS_SYNTAX);
    }
    let mut parsed = RcptParams::default();
    let mut seen = Vec::new();
    for param in esmtp_params(params) {
        let (keyword, value) = param?;
        check_unique(&mut seen, keyword)?;
        parsed.apply(keyword, value)?;
    }
    Ok(Command::Rcpt {
        to: path.into_string(),
        params: parsed,
    })
}

impl MailParams {
    /// Applies one `KEYWORD[=value]`.
    fn apply(&mut self, keyword: &str, value: Option<&str>) -> Result<(), Reply> {
        let is = |name: &str| keyword.eq_ignore_ascii_case(name);
        if is("SIZE") {
            self.size = Some(parse_size(value.ok_or(catalogue::PARAM_SYNTAX)?)?);
        } else if is("BODY") {
            self.body = parse_body(value.ok_or(catalogue::PARAM_SYNTAX)?)?;
        } else {
            return Err(catalogue::PARAM_UNKNOWN);
        }
        Ok(())
    }
}

impl RcptParams {
    fn apply(&mut self, _keyword: &str, _value: Option<&str>) -> Result<(), Reply> {
        Err(catalogue::PARAM_UNKNOWN)
    }
}

/// A SIZE value that overflows `u64` is still a valid (absurd) size: it saturates, so the
/// session refuses it as too large rather than as a syntax error.
fn parse_size(value: &str) -> Result<u64, Reply> {
    if value.is_empty() || value.len() > SIZE_DIGITS_MAX_COUNT || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(catalogue::PARAM_SYNTAX);
    }
    Ok(value.parse().unwrap_or(u64::MAX))
}

fn parse_body(value: &str) -> Result<BodyType, Reply> {
    if value.eq_ignore_ascii_case("7BIT") {
        Ok(BodyType::SevenBit)
    } else if value.eq_ignore_ascii_case("8BITMIME") {
        Ok(BodyType::EightBitMime)
    } else if value.eq_ignore_ascii_case("BINARYMIME") {
        // BINARYMIME needs CHUNKING (RFC 3030), which is not offered.
        Err(Reply::new(
            555,
            Enhanced::new(5, 5, 4),
            "BODY=BINARYMIME not supported",
        ))
    } else {
        Err(catalogue::PARAM_SYNTAX)
    }
}

/// Refuses a parameter given twice (RFC 5321 §4.1.2 forbids it).
fn check_unique<'a>(seen: &mut Vec<&'a str>, keyword: &'a str) -> Result<(), Reply> {
    if seen.iter().any(|k| k.eq_ignore_ascii_case(keyword)) {
        return Err(Reply::new(501, Enhanced::new(5, 5, 4), "Duplicate parameter"));
    }
    seen.push(keyword);
    Ok(())
}

/// Splits `[SP] KEYWORD[=value] SP …` into checked keyword/value pairs.
fn esmtp_params(params: &str) -> impl Iterator<Item = Result<(&str, Option<&str>), Reply>> {
    params.split(' ').filter(|p| !p.is_empty()).map(|param| {
        let (keyword, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let keyword_ok = keyword.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && keyword.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        // esmtp-value = 1*(%d33-60 / %d62-126): printable ASCII without "=".
        let value_ok =
            value.is_none_or(|v| !v.is_empty() && v.bytes().all(|b| matches!(b, 33..=60 | 62..=126)));
        if keyword_ok && value_ok {
            Ok((keyword, value))
        } else {
            Err(catalogue::PARAM_SYNTAX)
        }
    })
}

fn parse_bdat(args: &str) -> Result<Command, Reply> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = words.next().ok_or(catalogue::PARAM_SYNTAX)?;
    if size.len() > SIZE_DIGITS_MAX_COUNT || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(catalogue::PARAM_SYNTAX);
    }
    let chunk_bytes = size.parse().map_err(|_| catalogue::PARAM_SYNTAX)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(catalogue::PARAM_SYNTAX),
    };
    if words.next().is_some() {
        return Err(catalogue::PARAM_SYNTAX);
    }
    Ok(Command::Bdat { chunk_bytes, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(from: &str, size: Option<u64>, body: BodyType) -> Command {
        Command::Mail {
            from: from.into(),
            params: MailParams { size, body },
        }
    }

    fn rcpt(to: &str) -> Command {
        Command::Rcpt {
            to: to.into(),
            params: RcptParams::default(),
        }
    }

    #[test]
    fn commands_that_parse() {
        use BodyType::*;
        let cases: &[(&str, Command)] = &[
            ("EHLO client.example", Command::Ehlo("client.example".into())),
            ("ehlo [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
            ("HeLo my_pc", Command::Helo("my_pc".into())),
            ("MAIL FROM:<a@b.example>", mail("a@b.example", None, SevenBit)),
            ("mail from:<a@b.example>", mail("a@b.example", None, SevenBit)),
            ("MAIL FROM: <a@b.example>", mail("a@b.example", None, SevenBit)),
            ("MAIL FROM:<>", mail("", None, SevenBit)),
            (
                "MAIL FROM:<a@b.example> SIZE=1000",
                mail("a@b.example", Some(1000), SevenBit),
            ),
            (
                "MAIL FROM:<a@b.example> body=8bitmime size=5",
                mail("a@b.example", Some(5), EightBitMime),
            ),
            (
                "MAIL FROM:<a@b.example> BODY=7BIT",
                mail("a@b.example", None, SevenBit),
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=99999999999999999999",
                mail("a@b.example", Some(u64::MAX), SevenBit),
            ),
            (
                "MAIL FROM:<a@b.example>  SIZE=1 ",
                mail("a@b.example", Some(1), SevenBit),
            ),
            ("RCPT TO:<c@d.example>", rcpt("c@d.example")),
            ("Rcpt To: <c@d.example>", rcpt("c@d.example")),
            ("RCPT TO:<postmaster>", rcpt("postmaster")),
            ("RCPT TO:<@relay.example:c@d.example>", rcpt("c@d.example")),
            ("DATA", Command::Data),
            ("data ", Command::Data),
            ("RSET", Command::Rset),
            ("NOOP", Command::Noop),
            ("NOOP anything at all", Command::Noop),
            ("QUIT", Command::Quit),
            ("VRFY someone", Command::Vrfy("someone".into())),
            ("EXPN list", Command::Expn("list".into())),
            ("HELP", Command::Help),
            ("HELP MAIL", Command::Help),
            ("STARTTLS", Command::Starttls),
            (
                "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=",
                Command::Auth("PLAIN dGVzdAB0ZXN0AHRlc3Q=".into()),
            ),
            (
                "BDAT 100",
                Command::Bdat {
                    chunk_bytes: 100,
                    last: false,
                },
            ),
            (
                "BDAT 0 last",
                Command::Bdat {
                    chunk_bytes: 0,
                    last: true,
                },
            ),
            ("ETRN example.com", Command::Unsupported("ETRN")),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line.as_bytes()).as_ref(), Ok(expected), "{line}");
        }
    }

    #[test]
    fn commands_that_fail() {
        let binary = "555 5.5.4 BODY=BINARYMIME not supported\r\n";
        let cases: &[(&[u8], &str)] = &[
            (b"", "500 5.5.2"),
            (b"HELLO", "500 5.5.2"),
            (b"DATAX", "500 5.5.2"),
            (b" DATA", "500 5.5.2"),
            (b"DATA\r", "500 5.5.2"),
            (b"NOOP \0", "500 5.5.2"),
            (b"EHLO", "501 5.5.4"),
            (b"EHLO two words", "501 5.5.4"),
            (b"EHLO caf\xc3\xa9", "501 5.5.4"),
            (b"EHLO \xff", "501 5.5.4"),
            (b"DATA now", "501 5.5.4"),
            (b"QUIT please", "501 5.5.4"),
            (b"VRFY", "501 5.5.4"),
            (b"MAIL", "501 5.5.4"),
            (b"MAIL TO:<a@b.example>", "501 5.5.4"),
            (b"MAIL FROM", "501 5.5.4"),
            (b"MAIL FROM:a@b.example", "501 5.1.3"),
            (b"MAIL FROM:<a@b.example", "501 5.1.3"),
            (b"MAIL FROM:<a@b.example>SIZE=1", "501 5.1.3"),
            (b"MAIL FROM:<postmaster>", "501 5.1.3"),
            (b"MAIL FROM:<a@b_c.example>", "501 5.1.3"),
            (b"MAIL FROM:<\xc3\xa4@b.example>", "553 5.6.7"),
            (b"RCPT TO:<>", "501 5.1.3"),
            (b"RCPT FROM:<a@b.example>", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> FOO=1", "555 5.5.4"),
            (b"MAIL FROM:<a@b.example> SMTPUTF8", "555 5.5.4"),
            (b"RCPT TO:<a@b.example> NOTIFY=NEVER", "555 5.5.4"),
            (b"MAIL FROM:<a@b.example> BODY=BINARYMIME", binary),
            (b"MAIL FROM:<a@b.example> BODY=9BIT", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> BODY", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> SIZE", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> SIZE=", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> SIZE=-1", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> SIZE=1x", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> SIZE=123456789012345678901", "501 5.5.4"),
            (
                b"MAIL FROM:<a@b.example> SIZE=1 size=2",
                "501 5.5.4 Duplicate parameter",
            ),
            (b"MAIL FROM:<a@b.example> -X=1", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> X==1", "501 5.5.4"),
            (b"BDAT", "501 5.5.4"),
            (b"BDAT x", "501 5.5.4"),
            (b"BDAT 1 FIRST", "501 5.5.4"),
            (b"BDAT 1 LAST more", "501 5.5.4"),
        ];
        for (line, expected) in cases {
            let reply = parse(line).expect_err(&String::from_utf8_lossy(line));
            assert!(
                reply.to_wire().starts_with(expected),
                "{:?}: got {reply}, expected {expected}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
