//! The inbound command parser: one command line (without its CRLF) in, a typed
//! [`Command`] or the error [`Reply`] out.
//!
//! It owns the syntax only. Whether a command is allowed now (sequence, limits, which
//! extensions were offered) is the session's business (`smtp::server`). Parameters of
//! MAIL and RCPT are parsed into [`MailParams`] and [`RcptParams`], one arm per keyword:
//! SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET and ENVID, NOTIFY
//! and ORCPT (RFC 3461, with RFC 6533's `utf-8` address type), AUTH (RFC 4954 §5).
//!
//! A non-ASCII reverse-path is refused here unless the same MAIL carries SMTPUTF8; a
//! non-ASCII forward-path is checked by the session, which knows the transaction.

use crate::message::{BodyType, DsnReturn, Notify, OriginalRecipient};
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
    /// RFC 6152 `BODY=`, RFC 3030 `BODY=BINARYMIME`.
    pub body: BodyType,
    /// RFC 6531 `SMTPUTF8`.
    pub smtputf8: bool,
    /// RFC 3461 `RET=`.
    pub ret: Option<DsnReturn>,
    /// RFC 3461 `ENVID=`, xtext decoded.
    pub envid: Option<String>,
}

/// Parameters of `RCPT TO`: RFC 3461 NOTIFY and ORCPT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    pub orcpt: Option<OriginalRecipient>,
}

/// The longest decimal `SIZE=` value accepted (`u64::MAX` has 20 digits).
const SIZE_DIGITS_MAX_COUNT: usize = 20;
/// RFC 3461 §4.4: an ENVID is at most 100 characters (as sent, xtext included).
pub const ENVID_MAX_BYTES: usize = 100;
/// RFC 3461 §4.2: an ORCPT parameter is at most 500 characters (as sent).
pub const ORCPT_MAX_BYTES: usize = 500;

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
    if !path.is_ascii() && !parsed.smtputf8 {
        return Err(catalogue::UTF8_NEEDS_SMTPUTF8);
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
        let value = || value.ok_or(catalogue::PARAM_SYNTAX);
        if is("SIZE") {
            self.size = Some(parse_size(value()?)?);
        } else if is("BODY") {
            self.body = parse_body(value()?)?;
        } else if is("SMTPUTF8") {
            self.smtputf8 = no_value(value().ok())?;
        } else if is("RET") {
            self.ret = Some(parse_ret(value()?)?);
        } else if is("ENVID") {
            self.envid = Some(parse_envid(value()?)?);
        } else if is("AUTH") {
            // RFC 4954 §5: the identity the message was submitted as, for relays that
            // trust each other. corerelay identifies its clients itself, so the value is
            // checked for syntax and not used.
            let v = value()?;
            if v != "<>" {
                xtext_decode(v)?;
            }
        } else {
            return Err(catalogue::PARAM_UNKNOWN);
        }
        Ok(())
    }
}

impl RcptParams {
    fn apply(&mut self, keyword: &str, value: Option<&str>) -> Result<(), Reply> {
        let is = |name: &str| keyword.eq_ignore_ascii_case(name);
        let value = value.ok_or(catalogue::PARAM_SYNTAX);
        if is("NOTIFY") {
            self.notify = Some(parse_notify(value?)?);
        } else if is("ORCPT") {
            self.orcpt = Some(parse_orcpt(value?)?);
        } else {
            return Err(catalogue::PARAM_UNKNOWN);
        }
        Ok(())
    }
}

fn param_error(text: &'static str) -> Reply {
    Reply::new(501, Enhanced::new(5, 5, 4), text)
}

fn no_value(value: Option<&str>) -> Result<bool, Reply> {
    match value {
        None => Ok(true),
        Some(_) => Err(param_error("SMTPUTF8 takes no value")),
    }
}

fn parse_ret(value: &str) -> Result<DsnReturn, Reply> {
    if value.eq_ignore_ascii_case("FULL") {
        Ok(DsnReturn::Full)
    } else if value.eq_ignore_ascii_case("HDRS") {
        Ok(DsnReturn::Headers)
    } else {
        Err(param_error("RET must be FULL or HDRS"))
    }
}

/// ENVID: xtext of printable ASCII (RFC 3461 §4.4), at most 100 characters.
fn parse_envid(value: &str) -> Result<String, Reply> {
    if value.len() > ENVID_MAX_BYTES {
        return Err(param_error("ENVID longer than 100 characters"));
    }
    let decoded = xtext_decode(value)?;
    if !decoded.bytes().all(|b| (32..127).contains(&b)) {
        return Err(param_error("ENVID must be printable ASCII"));
    }
    Ok(decoded)
}

/// NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 §4.1).
fn parse_notify(value: &str) -> Result<Notify, Reply> {
    let bad = || param_error("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY");
    if value.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::default());
    }
    let mut notify = Notify::default();
    for word in value.split(',') {
        let flag = if word.eq_ignore_ascii_case("SUCCESS") {
            &mut notify.success
        } else if word.eq_ignore_ascii_case("FAILURE") {
            &mut notify.failure
        } else if word.eq_ignore_ascii_case("DELAY") {
            &mut notify.delay
        } else {
            return Err(bad());
        };
        if *flag {
            return Err(bad());
        }
        *flag = true;
    }
    Ok(notify)
}

/// ORCPT=addr-type;xtext (RFC 3461 §4.2). For the `utf-8` type (RFC 6533 §3) the value may
/// hold raw UTF-8 and `\x{HEX}` escapes as well.
fn parse_orcpt(value: &str) -> Result<OriginalRecipient, Reply> {
    let bad = || param_error("ORCPT must be addr-type;address");
    if value.len() > ORCPT_MAX_BYTES {
        return Err(param_error("ORCPT longer than 500 characters"));
    }
    let (addr_type, addr) = value.split_once(';').ok_or_else(bad)?;
    let atom_ok = !addr_type.is_empty() && addr_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !atom_ok || addr.is_empty() {
        return Err(bad());
    }
    let decoded = if addr_type.eq_ignore_ascii_case("utf-8") {
        utf8_addr_decode(addr)?
    } else {
        let decoded = xtext_decode(addr)?;
        if !decoded.is_ascii() {
            return Err(bad());
        }
        decoded
    };
    Ok(OriginalRecipient {
        addr_type: addr_type.to_string(),
        addr: decoded,
    })
}

/// RFC 3461 §4 xtext: `+XX` (upper-case hex) stands for one byte; other characters are
/// printable ASCII except `+` and `=`. The decoded bytes must be UTF-8.
pub fn xtext_decode(value: &str) -> Result<String, Reply> {
    let bad = || param_error("Bad xtext encoding");
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let upper = hex
                    .iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h));
                let text = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(
                    upper
                        .then(|| u8::from_str_radix(text, 16).ok())
                        .flatten()
                        .ok_or_else(bad)?,
                );
                i += 3;
            }
            33..=126 if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return Err(bad()),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// RFC 6533 utf-8-addr-xtext / utf-8-addr-unitext: xtext plus `\x{HEX}` for one Unicode
/// scalar value, and raw non-ASCII UTF-8.
fn utf8_addr_decode(value: &str) -> Result<String, Reply> {
    let bad = || param_error("Bad utf-8 address encoding");
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("\\x{") {
            let end = after.find('}').ok_or_else(bad)?;
            let hex = &after[..end];
            if hex.is_empty() || hex.len() > 6 {
                return Err(bad());
            }
            let scalar = u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(bad)?;
            out.push(scalar);
            rest = &after[end + 1..];
        } else if c == '+' {
            let piece = rest.get(..3).ok_or_else(bad)?;
            out.push_str(&xtext_decode(piece)?);
            rest = &rest[3..];
        } else if !c.is_ascii() || (c.is_ascii_graphic() && c != '=') {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        } else {
            return Err(bad());
        }
    }
    if out.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(out)
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
        Ok(BodyType::BinaryMime)
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
        // esmtp-value = 1*(%d33-60 / %d62-126 / UTF8-non-ascii): printable ASCII without
        // "=", and UTF-8 (RFC 6531 §3.3); the parameters that must be ASCII check that.
        let value_ok = value
            .is_none_or(|v| !v.is_empty() && v.bytes().all(|b| matches!(b, 33..=60 | 62..=126 | 0x80..)));
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

/// The verb of a command line as the metrics count it: the verbs corerelay knows, and
/// `Other` for anything else, so the label set stays bounded whatever clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    Starttls,
    Auth,
    Other,
}

impl CommandKind {
    /// Every verb, in declaration order (`verb as usize` indexes it).
    pub const ALL: [CommandKind; 15] = [
        CommandKind::Ehlo,
        CommandKind::Helo,
        CommandKind::Mail,
        CommandKind::Rcpt,
        CommandKind::Data,
        CommandKind::Bdat,
        CommandKind::Rset,
        CommandKind::Noop,
        CommandKind::Quit,
        CommandKind::Vrfy,
        CommandKind::Expn,
        CommandKind::Help,
        CommandKind::Starttls,
        CommandKind::Auth,
        CommandKind::Other,
    ];

    /// The verb of a command line (with or without its CRLF), case-insensitive.
    pub fn of(line: &[u8]) -> CommandKind {
        let word = line
            .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
            .next()
            .unwrap_or_default();
        CommandKind::ALL[..CommandKind::ALL.len() - 1]
            .iter()
            .copied()
            .find(|v| word.eq_ignore_ascii_case(v.label().as_bytes()))
            .unwrap_or(CommandKind::Other)
    }

    /// The metric label: the verb in lower case.
    pub fn label(self) -> &'static str {
        match self {
            CommandKind::Ehlo => "ehlo",
            CommandKind::Helo => "helo",
            CommandKind::Mail => "mail",
            CommandKind::Rcpt => "rcpt",
            CommandKind::Data => "data",
            CommandKind::Bdat => "bdat",
            CommandKind::Rset => "rset",
            CommandKind::Noop => "noop",
            CommandKind::Quit => "quit",
            CommandKind::Vrfy => "vrfy",
            CommandKind::Expn => "expn",
            CommandKind::Help => "help",
            CommandKind::Starttls => "starttls",
            CommandKind::Auth => "auth",
            CommandKind::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(from: &str, size: Option<u64>, body: BodyType) -> Command {
        Command::Mail {
            from: from.into(),
            params: MailParams {
                size,
                body,
                ..Default::default()
            },
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
    fn extension_parameters() {
        let Ok(Command::Mail { from, params }) = parse(
            "MAIL FROM:<jö@exämple.com> SMTPUTF8 BODY=BINARYMIME RET=hdrs ENVID=QQ+2B314159 AUTH=<>"
                .as_bytes(),
        ) else {
            panic!("MAIL with every parameter");
        };
        assert_eq!(from, "jö@exämple.com");
        assert_eq!(
            params,
            MailParams {
                size: None,
                body: BodyType::BinaryMime,
                smtputf8: true,
                ret: Some(DsnReturn::Headers),
                envid: Some("QQ+314159".into()),
            }
        );
        let Ok(Command::Rcpt { to, params }) =
            parse("RCPT TO:<b@example.net> NOTIFY=SUCCESS,delay ORCPT=rfc822;b+2Bx@example.net".as_bytes())
        else {
            panic!("RCPT with DSN parameters");
        };
        assert_eq!(to, "b@example.net");
        assert_eq!(
            params.notify,
            Some(Notify {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(
            params.orcpt.as_ref().map(|o| o.addr.as_str()),
            Some("b+x@example.net")
        );
        let Ok(Command::Rcpt { params, .. }) =
            parse("RCPT TO:<üb@example.net> NOTIFY=NEVER ORCPT=utf-8;\\x{FC}b@example.net".as_bytes())
        else {
            panic!("RCPT with a utf-8 ORCPT");
        };
        assert_eq!(params.notify, Some(Notify::default()));
        assert_eq!(params.orcpt.unwrap().addr, "üb@example.net");
    }

    #[test]
    fn commands_that_fail() {
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
            (b"MAIL FROM:<\xc3\xa4@b.example> BODY=8BITMIME", "553 5.6.7"),
            (b"MAIL FROM:<a@b.example> SMTPUTF8=yes", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> RET=ALL", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> RET", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> ENVID=a+2", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> ENVID=a+2b", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> ENVID=a+0A", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> ENVID=\xc3\xa4", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> AUTH=x+zz", "501 5.5.4"),
            (b"RCPT TO:<a@b.example> NOTIFY=NEVER,SUCCESS", "501 5.5.4"),
            (b"RCPT TO:<a@b.example> NOTIFY=SUCCESS,SUCCESS", "501 5.5.4"),
            (b"RCPT TO:<a@b.example> NOTIFY=", "501 5.5.4"),
            (b"RCPT TO:<a@b.example> NOTIFY=SOMETIMES", "501 5.5.4"),
            (b"RCPT TO:<a@b.example> ORCPT=a@b.example", "501 5.5.4"),
            (b"RCPT TO:<a@b.example> ORCPT=rfc822;", "501 5.5.4"),
            (b"RCPT TO:<a@b.example> ORCPT=rfc822;\xc3\xa4@b", "501 5.5.4"),
            (b"RCPT TO:<a@b.example> ORCPT=utf-8;\\x{D800}@b", "501 5.5.4"),
            (
                b"RCPT TO:<a@b.example> ORCPT=rfc822;a@b ORCPT=rfc822;c@d",
                "501 5.5.4 Duplicate",
            ),
            (b"RCPT TO:<a@b.example> FOO", "555 5.5.4"),
            (b"RCPT TO:<>", "501 5.1.3"),
            (b"RCPT FROM:<a@b.example>", "501 5.5.4"),
            (b"MAIL FROM:<a@b.example> FOO=1", "555 5.5.4"),
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

    #[test]
    fn verbs_are_counted_by_name_and_everything_else_is_other() {
        let cases: [(&[u8], CommandKind); 8] = [
            (b"EHLO client.test\r\n", CommandKind::Ehlo),
            (b"mail FROM:<a@b>", CommandKind::Mail),
            (b"Rcpt TO:<c@d>\r\n", CommandKind::Rcpt),
            (b"DATA\r\n", CommandKind::Data),
            (b"STARTTLS", CommandKind::Starttls),
            (b"ETRN example.com\r\n", CommandKind::Other),
            (b"MAILX FROM:<a@b>", CommandKind::Other),
            (b"", CommandKind::Other),
        ];
        for (line, verb) in cases {
            assert_eq!(CommandKind::of(line), verb, "{}", String::from_utf8_lossy(line));
        }
        for (i, v) in CommandKind::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
            assert_eq!(CommandKind::of(v.label().as_bytes()), *v);
        }
    }
}
