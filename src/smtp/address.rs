//! RFC 5321 paths (§4.1.2): the `<local@domain>` of `MAIL FROM` and `RCPT TO`.
//!
//! This module owns the syntax and the size limits of envelope addresses, so the command
//! parser only has to find where a path starts. It accepts the null path `<>`, the
//! special `<postmaster>`, source routes (`<@a,@b:user@d>`, whose route is checked and then
//! dropped as §4.1.1.3 asks), quoted local parts and address literals, and gives the
//! address back without brackets.
//!
//! SMTPUTF8 (RFC 6531 §3.3): the local part and the domain may hold UTF-8 (`atext` and
//! `qtextSMTP` are widened by UTF8-non-ascii, and a domain label may be a U-label). The
//! parser accepts such paths and [`Path::is_ascii`] tells them apart; whether the
//! transaction allows them (MAIL FROM … SMTPUTF8) is decided by the command parser and the
//! session, which answer [`AddressError::NonAscii`]'s `553 5.6.7` otherwise. Address
//! literals stay ASCII. The input is a `&str`, so it is valid UTF-8 by construction.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::smtp::reply::{Enhanced, Reply};

/// RFC 5321 §4.5.3.1.1.
pub const LOCAL_PART_MAX_BYTES: usize = 64;
/// RFC 5321 §4.5.3.1.2.
pub const DOMAIN_MAX_BYTES: usize = 255;
/// RFC 5321 §4.5.3.1.3: the whole path including the angle brackets and any route.
pub const PATH_MAX_BYTES: usize = 256;
/// RFC 1035 §2.3.4.
const LABEL_MAX_BYTES: usize = 63;

/// A parsed path: the mailbox without angle brackets or source route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    addr: String,
    /// Where the local part ends: the index of the `@`, or `addr.len()` when there is no
    /// domain (the null path and `postmaster`).
    local_end: usize,
}

impl Path {
    /// `user@example.com`; `""` for the null path; `postmaster` as the client wrote it.
    pub fn as_str(&self) -> &str {
        &self.addr
    }

    pub fn into_string(self) -> String {
        self.addr
    }

    /// The null reverse-path `<>` (bounces), valid only in `MAIL FROM`.
    pub fn is_null(&self) -> bool {
        self.addr.is_empty()
    }

    /// The domain-less `<postmaster>` (§4.5.1), valid only in `RCPT TO`.
    pub fn is_postmaster(&self) -> bool {
        !self.addr.is_empty() && self.local_end == self.addr.len()
    }

    /// The local part as written, quotes included.
    pub fn local_part(&self) -> &str {
        &self.addr[..self.local_end]
    }

    /// The domain or address literal as written; empty without one.
    pub fn domain(&self) -> &str {
        self.addr.get(self.local_end + 1..).unwrap_or("")
    }

    /// False for an internationalized address, which needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.addr.is_ascii()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.addr)
    }
}

/// Why a path was refused. Each maps to the reply the client gets ([`AddressError::reply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// No `<`, or no `>` closing it.
    MissingBrackets,
    /// Bytes after the closing `>` where none may be.
    Trailing,
    PathTooLong,
    BadRoute,
    BadLocalPart,
    LocalPartTooLong,
    BadDomain,
    DomainTooLong,
    BadAddressLiteral,
    /// A non-ASCII address in a transaction without SMTPUTF8.
    NonAscii,
}

impl AddressError {
    fn text(self) -> &'static str {
        match self {
            AddressError::MissingBrackets => "Address must be enclosed in <>",
            AddressError::Trailing => "Unexpected characters after address",
            AddressError::PathTooLong => "Path longer than 256 octets",
            AddressError::BadRoute => "Bad source route",
            AddressError::BadLocalPart => "Bad local part",
            AddressError::LocalPartTooLong => "Local part longer than 64 octets",
            AddressError::BadDomain => "Bad domain",
            AddressError::DomainTooLong => "Domain longer than 255 octets",
            AddressError::BadAddressLiteral => "Bad address literal",
            AddressError::NonAscii => "Non-ASCII address needs MAIL FROM with SMTPUTF8",
        }
    }

    /// `501 5.1.3` for syntax; `553 5.6.7` for non-ASCII, the reply RFC 6531 gives for an
    /// internationalized address the server will not take.
    pub fn reply(self) -> Reply {
        match self {
            AddressError::NonAscii => Reply::new(553, Enhanced::new(5, 6, 7), self.text()),
            _ => Reply::new(501, Enhanced::new(5, 1, 3), self.text()),
        }
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for AddressError {}

/// Parses a whole string as one path (nothing may follow the `>`).
pub fn parse_path(s: &str) -> Result<Path, AddressError> {
    let (path, rest) = parse_path_prefix(s)?;
    if rest.is_empty() {
        Ok(path)
    } else {
        Err(AddressError::Trailing)
    }
}

/// Parses the path at the start of `s` and returns it with the text after its `>` (where
/// MAIL and RCPT parameters follow).
pub fn parse_path_prefix(s: &str) -> Result<(Path, &str), AddressError> {
    let end = closing_bracket(s)?;
    if end + 1 > PATH_MAX_BYTES {
        return Err(AddressError::PathTooLong);
    }
    let inner = &s[1..end];
    check_charset(inner)?;
    Ok((parse_inner(inner)?, &s[end + 1..]))
}

/// The index of the `>` that closes the path opened by `s[0] == '<'`; a `>` inside a
/// quoted local part does not count.
fn closing_bracket(s: &str) -> Result<usize, AddressError> {
    let bytes = s.as_bytes();
    if bytes.first() != Some(&b'<') {
        return Err(AddressError::MissingBrackets);
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Ok(i),
            _ => {}
        }
    }
    Err(AddressError::MissingBrackets)
}

/// The one place that decides which characters may appear at all: no control characters
/// (ASCII or Unicode C0/C1), which no address contains and which would corrupt logs and
/// headers; any other UTF-8 is left to the character classes below.
fn check_charset(s: &str) -> Result<(), AddressError> {
    match s.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) if c.is_ascii() => Err(AddressError::BadLocalPart),
        Some(_) => Err(AddressError::BadDomain),
    }
}

/// Parses what is between the brackets.
fn parse_inner(inner: &str) -> Result<Path, AddressError> {
    if inner.is_empty() {
        return Ok(Path {
            addr: String::new(),
            local_end: 0,
        });
    }
    let mailbox = strip_route(inner)?;
    if mailbox.eq_ignore_ascii_case("postmaster") {
        return Ok(Path {
            addr: mailbox.to_owned(),
            local_end: mailbox.len(),
        });
    }
    let local_end = local_part_end(mailbox)?;
    let domain = mailbox.get(local_end + 1..).ok_or(AddressError::BadDomain)?;
    check_domain_or_literal(domain)?;
    Ok(Path {
        addr: mailbox.to_owned(),
        local_end,
    })
}

/// Checks and removes an `@a,@b:` source route; RFC 5321 §4.1.1.3 says to ignore it.
fn strip_route(inner: &str) -> Result<&str, AddressError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let (route, mailbox) = inner.split_once(':').ok_or(AddressError::BadRoute)?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::BadRoute)?;
        check_domain(domain).map_err(|_| AddressError::BadRoute)?;
    }
    Ok(mailbox)
}

/// Validates the local part at the start of `mailbox` and returns the index of the `@`
/// that follows it.
fn local_part_end(mailbox: &str) -> Result<usize, AddressError> {
    let bytes = mailbox.as_bytes();
    let end = if bytes.first() == Some(&b'"') {
        quoted_string_end(bytes)?
    } else {
        let end = bytes.iter().position(|&b| b == b'@').unwrap_or(bytes.len());
        check_dot_string(&bytes[..end])?;
        end
    };
    if bytes.get(end) != Some(&b'@') {
        return Err(AddressError::BadLocalPart);
    }
    if end > LOCAL_PART_MAX_BYTES {
        return Err(AddressError::LocalPartTooLong);
    }
    Ok(end)
}

/// The index just past the closing quote of the quoted string that opens `bytes`.
fn quoted_string_end(bytes: &[u8]) -> Result<usize, AddressError> {
    let mut i = 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => return Ok(i + 1),
            // quoted-pairSMTP: a backslash and any printable ASCII or space.
            b'\\' => match bytes.get(i + 1) {
                Some(32..=126) => i += 2,
                _ => return Err(AddressError::BadLocalPart),
            },
            _ if is_qtext(b) => i += 1,
            _ => return Err(AddressError::BadLocalPart),
        }
    }
    Err(AddressError::BadLocalPart)
}

/// Dot-string: atoms of atext separated by single dots.
fn check_dot_string(local: &[u8]) -> Result<(), AddressError> {
    let ok = !local.is_empty()
        && local
            .split(|&b| b == b'.')
            .all(|atom| !atom.is_empty() && atom.iter().all(|&b| is_atext(b)));
    if ok {
        Ok(())
    } else {
        Err(AddressError::BadLocalPart)
    }
}

/// RFC 5322 atext, widened by UTF8-non-ascii (RFC 6531 §3.3): every byte of a non-ASCII
/// character is ≥ 0x80, and the input is valid UTF-8.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// RFC 5321 qtextSMTP: printable ASCII and space, except `"` and `\`, and UTF8-non-ascii.
fn is_qtext(b: u8) -> bool {
    matches!(b, 32..=33 | 35..=91 | 93..=126) || b >= 0x80
}

fn check_domain_or_literal(domain: &str) -> Result<(), AddressError> {
    match domain.strip_prefix('[') {
        Some(literal) => check_address_literal(literal),
        None => check_domain(domain),
    }
}

/// Domain: dot-separated labels of letters, digits and inner hyphens; a label may also be
/// a U-label (non-ASCII letters), whose IDNA validity is the recipient domain's business.
fn check_domain(domain: &str) -> Result<(), AddressError> {
    if domain.len() > DOMAIN_MAX_BYTES {
        return Err(AddressError::DomainTooLong);
    }
    let label_ok = |label: &[u8]| {
        !label.is_empty()
            && label.len() <= LABEL_MAX_BYTES
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
    };
    if !domain.is_empty() && domain.as_bytes().split(|&b| b == b'.').all(label_ok) {
        Ok(())
    } else {
        Err(AddressError::BadDomain)
    }
}

/// `1.2.3.4]` or `IPv6:…]` (the opening bracket already removed). General address
/// literals (`tag:content`) are refused: no tag other than IPv6 is standardized.
fn check_address_literal(literal: &str) -> Result<(), AddressError> {
    let body = literal.strip_suffix(']').ok_or(AddressError::BadAddressLiteral)?;
    let ok = match body.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => body[5..].parse::<Ipv6Addr>().is_ok(),
        _ => body.parse::<Ipv4Addr>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(AddressError::BadAddressLiteral)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid paths and the address they give.
    const VALID: &[(&str, &str)] = &[
        ("<user@example.com>", "user@example.com"),
        ("<User.Name+tag@Example.COM>", "User.Name+tag@Example.COM"),
        ("<>", ""),
        ("<postmaster>", "postmaster"),
        ("<PostMaster>", "PostMaster"),
        ("<@relay.example:user@example.com>", "user@example.com"),
        ("<@a.example,@b.example:user@d.example>", "user@d.example"),
        ("<\"john doe\"@example.com>", "\"john doe\"@example.com"),
        ("<\"a>b@c\"@example.com>", "\"a>b@c\"@example.com"),
        ("<\"quote\\\"d\"@example.com>", "\"quote\\\"d\"@example.com"),
        ("<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
        ("<user@[ipv6:::1]>", "user@[ipv6:::1]"),
        (
            "<a!#$%&'*+-/=?^_`{|}~@x-y.example>",
            "a!#$%&'*+-/=?^_`{|}~@x-y.example",
        ),
        ("<u@localhost>", "u@localhost"),
        ("<u@123.example>", "u@123.example"),
        // SMTPUTF8 (RFC 6531): UTF-8 local parts and U-label domains parse.
        ("<üser@example.com>", "üser@example.com"),
        ("<用户@例子.广告>", "用户@例子.广告"),
        ("<\"jö doe\"@exämple.com>", "\"jö doe\"@exämple.com"),
    ];

    /// Invalid paths and why.
    const INVALID: &[(&str, AddressError)] = &[
        ("user@example.com", AddressError::MissingBrackets),
        ("<user@example.com", AddressError::MissingBrackets),
        ("<\"user@example.com>", AddressError::MissingBrackets),
        ("<user@example.com> ", AddressError::Trailing),
        ("<user>", AddressError::BadLocalPart),
        ("<@example.com>", AddressError::BadRoute),
        ("<@a.example:@b>", AddressError::BadLocalPart),
        ("<@a..example:u@b.example>", AddressError::BadRoute),
        ("<a.example:u@b.example>", AddressError::BadLocalPart),
        ("<.user@example.com>", AddressError::BadLocalPart),
        ("<user.@example.com>", AddressError::BadLocalPart),
        ("<us..er@example.com>", AddressError::BadLocalPart),
        ("<us er@example.com>", AddressError::BadLocalPart),
        ("<us(er@example.com>", AddressError::BadLocalPart),
        ("<\"unterminated@example.com>", AddressError::MissingBrackets),
        ("<\"a\"b@example.com>", AddressError::BadLocalPart),
        ("<user@>", AddressError::BadDomain),
        ("<user@exa_mple.com>", AddressError::BadDomain),
        ("<user@-example.com>", AddressError::BadDomain),
        ("<user@example-.com>", AddressError::BadDomain),
        ("<user@example..com>", AddressError::BadDomain),
        ("<user@example.com.>", AddressError::BadDomain),
        ("<user@a@example.com>", AddressError::BadDomain),
        ("<user@[192.0.2.256]>", AddressError::BadAddressLiteral),
        ("<user@[IPv6:zz::1]>", AddressError::BadAddressLiteral),
        ("<user@[x-tag:abc]>", AddressError::BadAddressLiteral),
        ("<user@[192.0.2.1>", AddressError::BadAddressLiteral),
        ("<us\u{7f}er@example.com>", AddressError::BadLocalPart),
        ("<user@exa\u{85}mple.com>", AddressError::BadDomain),
        ("<user@[IPv6:::ü]>", AddressError::BadAddressLiteral),
        ("<ü ser@example.com>", AddressError::BadLocalPart),
    ];

    #[test]
    fn valid_paths() {
        for &(input, expected) in VALID {
            let path = parse_path(input).unwrap_or_else(|e| panic!("{input}: {e:?}"));
            assert_eq!(path.as_str(), expected, "{input}");
        }
    }

    #[test]
    fn invalid_paths() {
        for &(input, expected) in INVALID {
            assert_eq!(parse_path(input), Err(expected), "{input}");
        }
    }

    #[test]
    fn parts_and_kinds() {
        let p = parse_path("<\"a@b\"@Example.com>").unwrap();
        assert_eq!((p.local_part(), p.domain()), ("\"a@b\"", "Example.com"));
        assert!(!p.is_null() && !p.is_postmaster());
        let null = parse_path("<>").unwrap();
        assert!(null.is_null() && !null.is_postmaster());
        assert_eq!((null.local_part(), null.domain()), ("", ""));
        let pm = parse_path("<postmaster>").unwrap();
        assert!(pm.is_postmaster() && !pm.is_null());
        assert_eq!(pm.domain(), "");
        // A postmaster with a domain is an ordinary mailbox.
        assert!(!parse_path("<postmaster@example.com>").unwrap().is_postmaster());
    }

    #[test]
    fn prefix_returns_the_rest() {
        let (p, rest) = parse_path_prefix("<a@b.example> SIZE=10").unwrap();
        assert_eq!((p.as_str(), rest), ("a@b.example", " SIZE=10"));
        let (p, rest) = parse_path_prefix("<\"x> y\"@b.example>BODY").unwrap();
        assert_eq!((p.as_str(), rest), ("\"x> y\"@b.example", "BODY"));
    }

    #[test]
    fn length_limits_are_exact() {
        let local = |n: usize| "l".repeat(n);
        // A domain of 4 labels of 63 octets and dots: 255 octets.
        let label = "d".repeat(63);
        let domain_255 = [label.as_str(); 4].join(".");
        assert_eq!(domain_255.len(), 255);
        assert!(parse_path(&format!("<{}@example.com>", local(64))).is_ok());
        assert_eq!(
            parse_path(&format!("<{}@example.com>", local(65))),
            Err(AddressError::LocalPartTooLong)
        );
        assert_eq!(
            parse_path(&format!("<u@{}.{}>", label, "d".repeat(64))),
            Err(AddressError::BadDomain)
        );
        assert_eq!(
            check_domain(&format!("{domain_255}x")),
            Err(AddressError::DomainTooLong)
        );
        assert!(check_domain(&domain_255).is_ok());
        // The path limit counts the brackets: 1 + 64 + 1 + 189 + 1 = 256 octets.
        let domain_189 = format!("{label}.{label}.{}", "d".repeat(61));
        assert_eq!(domain_189.len(), 189);
        assert!(parse_path(&format!("<{}@{domain_189}>", local(64))).is_ok());
        assert_eq!(
            parse_path(&format!("<{}@{domain_189}d>", local(64))),
            Err(AddressError::PathTooLong)
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            AddressError::BadDomain.reply().to_wire(),
            "501 5.1.3 Bad domain\r\n"
        );
        assert_eq!(AddressError::NonAscii.reply().code, 553);
        assert!(!parse_path("<üser@example.com>").unwrap().is_ascii());
        assert!(parse_path("<user@example.com>").unwrap().is_ascii());
    }
}
