//! Which links are tracked, and the tracking URLs that replace them.
//!
//! The HTML and plain-text rewriters both ask a `Tracker` for each candidate link. It
//! decides whether the link is trackable (http or https, not excluded, not an unsubscribe
//! target, not already ours), numbers it in document order, and mints its token. The URL
//! that goes into a token is what a browser would follow: entities decoded, surrounding
//! whitespace and embedded tabs and newlines removed.

use std::borrow::Cow;

use super::token::{Claims, Keyring, TokenKind};
use crate::message::MessageId;

/// More links than this in one message are left untracked (a bound on tokens minted per
/// message, which is a bound on CPU per message).
pub const MAX_TRACKED_LINKS_COUNT: u32 = 4096;

/// Everything a token says about the message, fixed for one rewrite.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenScope<'a> {
    pub keyring: &'a Keyring,
    pub account: &'a str,
    pub message_id: MessageId,
    pub recipient: &'a str,
    pub issued_at_unix_s: u64,
    pub expires_at_unix_s: Option<u64>,
}

impl TokenScope<'_> {
    fn claims<'u>(&'u self, kind: TokenKind, link_index: u32, url: &'u str) -> Claims<'u> {
        Claims {
            kind,
            account: self.account,
            message_id: self.message_id,
            recipient: self.recipient,
            link_index,
            url,
            issued_at_unix_s: self.issued_at_unix_s,
            expires_at_unix_s: self.expires_at_unix_s,
        }
    }
}

/// Decides and mints for one message.
pub(crate) struct Tracker<'a> {
    pub scope: TokenScope<'a>,
    /// The tracking base URL, without a trailing slash.
    pub base: &'a str,
    pub exclude_domains: &'a [String],
    /// `List-Unsubscribe` targets of the message: never tracked (RFC 8058 clients post to
    /// them, and a redirect would break that).
    pub unsubscribe_targets: Vec<String>,
    /// The index the next tracked link gets (links are numbered in document order).
    pub next_index: u32,
    pub scratch: Scratch,
}

/// Buffers reused for every link of a message, so minting a link allocates nothing once
/// they have grown to the message's longest link.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The token payload.
    payload: Vec<u8>,
    /// The link with its character references decoded.
    decoded: String,
    /// The tracking URL last minted.
    url: String,
}

impl Tracker<'_> {
    /// The tracking URL for a link, or `None` when the link stays as it is. `href` is the
    /// attribute value or text as written (entities still encoded for HTML). The URL lives
    /// in the tracker's scratch room until the next call.
    pub fn click_url(&mut self, href: &str, entity_encoded: bool) -> Option<&str> {
        let Scratch {
            payload,
            decoded,
            url,
        } = &mut self.scratch;
        let href = if entity_encoded && memchr::memchr(b'&', href.as_bytes()).is_some() {
            decoded.clear();
            decode_entities_into(href, decoded);
            decoded.as_str()
        } else {
            href
        };
        let link = clean_url(href);
        if self.next_index >= MAX_TRACKED_LINKS_COUNT
            || !should_track(&link, self.base, self.exclude_domains, &self.unsubscribe_targets)
        {
            return None;
        }
        let claims = self.scope.claims(TokenKind::Click, self.next_index, &link);
        url.clear();
        url.push_str(self.base);
        url.push_str("/c/");
        self.scope.keyring.mint_with(&claims, payload, url).ok()?;
        self.next_index += 1;
        Some(url.as_str())
    }

    /// The tracking pixel's URL.
    pub fn open_url(&mut self) -> Option<String> {
        let claims = self.scope.claims(TokenKind::Open, 0, "");
        let mut url = String::with_capacity(self.base.len() + 128);
        url.push_str(self.base);
        url.push_str("/o/");
        self.scope
            .keyring
            .mint_with(&claims, &mut self.scratch.payload, &mut url)
            .ok()?;
        Some(url)
    }
}

/// Whether a (decoded, cleaned) link is tracked: http or https, not ours already, not in an
/// excluded domain, not an unsubscribe target.
fn should_track(url: &str, base: &str, exclude_domains: &[String], unsubscribe_targets: &[String]) -> bool {
    let Some(host) = http_host(url) else {
        return false;
    };
    // Already a tracking link (a message relayed twice): tracking it again would only
    // nest tokens.
    if url
        .get(..base.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(base))
    {
        return false;
    }
    if exclude_domains.iter().any(|d| host_in_domain(host, d)) {
        return false;
    }
    !unsubscribe_targets.iter().any(|t| t == url)
}

/// The `<...>` URIs of a `List-Unsubscribe` header value (RFC 2369).
pub(crate) fn list_unsubscribe_targets(value: &str, out: &mut Vec<String>) {
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start + 1..].find('>') else {
            break;
        };
        let uri = clean_url(&rest[start + 1..start + 1 + len]).into_owned();
        if !uri.is_empty() {
            out.push(uri);
        }
        rest = &rest[start + 1 + len + 1..];
    }
}

/// Strips what browsers strip from a URL: surrounding spaces and C0 controls, and ASCII tab
/// and newline anywhere (WHATWG URL parsing).
pub(crate) fn clean_url(url: &str) -> Cow<'_, str> {
    // Byte tests, not `char` patterns: this runs for every link, and the bytes tested are
    // ASCII, which never occur inside a multi-byte UTF-8 sequence.
    let bytes = url.as_bytes();
    let start = bytes.iter().position(|&b| b > b' ').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b > b' ').map_or(start, |i| i + 1);
    let trimmed = url.get(start..end).unwrap_or_default();
    if memchr::memchr3(b'\t', b'\n', b'\r', trimmed.as_bytes()).is_some() {
        Cow::Owned(
            trimmed
                .chars()
                .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
                .collect(),
        )
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// The host of an `http:` or `https:` URL (any letter case in the scheme; the host as
/// written, without trailing dots), or `None` for every other scheme and for relative
/// references.
pub(crate) fn http_host(url: &str) -> Option<&str> {
    // Byte scans, not `char` patterns (this runs for every link): every delimiter is ASCII,
    // so each position found is a character boundary.
    let scheme_len = memchr::memchr(b':', url.as_bytes())?;
    let scheme = &url[..scheme_len];
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let rest = &url[scheme_len + 1..];
    let rest = &rest[rest.bytes().take_while(|&b| b == b'/' || b == b'\\').count()..];
    let authority_len = rest
        .bytes()
        .position(|b| matches!(b, b'/' | b'?' | b'#' | b'\\'))
        .unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host_port = memchr::memrchr(b'@', authority.as_bytes()).map_or(authority, |at| &authority[at + 1..]);
    let host = if host_port.starts_with('[') {
        memchr::memchr(b']', host_port.as_bytes()).map_or(host_port, |at| &host_port[..at + 1])
    } else {
        memchr::memchr(b':', host_port.as_bytes()).map_or(host_port, |at| &host_port[..at])
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then_some(host)
}

fn host_in_domain(host: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    host.len() >= domain.len()
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
        && (host.len() == domain.len() || host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

/// Decodes the character references a URL attribute value can hold: numeric references
/// and the named ones that occur in URLs (`&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`,
/// `&nbsp;`). Following the HTML attribute rules, a legacy name without `;` is decoded
/// only when the next character is neither alphanumeric nor `=`, so `?a=1&copy=2` stays.
/// Other named references are left as written.
#[cfg(test)]
pub(crate) fn decode_entities(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    decode_entities_into(s, &mut out);
    Cow::Owned(out)
}

/// [`decode_entities`] appending to `out`.
fn decode_entities_into(s: &str, out: &mut String) {
    let mut rest = s;
    while let Some(amp) = memchr::memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match decode_reference(after) {
            Some((c, used)) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// Decodes one reference after its `&`: the character and how many bytes it used.
fn decode_reference(s: &str) -> Option<(char, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (radix, digits_at) = if num.starts_with(['x', 'X']) {
            (16, 2)
        } else {
            (10, 1)
        };
        let digits = s[digits_at..]
            .bytes()
            .take_while(|b| b.is_ascii_hexdigit() && (radix == 16 || b.is_ascii_digit()))
            .count();
        if digits == 0 {
            return None;
        }
        let value = u32::from_str_radix(&s[digits_at..digits_at + digits], radix).unwrap_or(u32::MAX);
        let c = match value {
            0 => '\u{FFFD}',
            v => char::from_u32(v).unwrap_or('\u{FFFD}'),
        };
        let semicolon = usize::from(s[digits_at + digits..].starts_with(';'));
        return Some((c, digits_at + digits + semicolon));
    }
    const NAMED: [(&str, char, bool); 6] = [
        ("amp", '&', true),
        ("lt", '<', true),
        ("gt", '>', true),
        ("quot", '"', true),
        ("nbsp", '\u{A0}', true),
        ("apos", '\'', false),
    ];
    for (name, c, legacy) in NAMED {
        if s.len() < name.len() || !s.is_char_boundary(name.len()) || &s[..name.len()] != name {
            continue;
        }
        let next = s[name.len()..].chars().next();
        if next == Some(';') {
            return Some((c, name.len() + 1));
        }
        if legacy && !next.is_some_and(|n| n.is_ascii_alphanumeric() || n == '=') {
            return Some((c, name.len()));
        }
    }
    None
}

/// Escapes a value for an HTML attribute or text, so no `&` is ever emitted unescaped.
pub(crate) fn escape_html(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| matches!(b, b'&' | b'"' | b'<' | b'>')) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_decode_like_a_browser_in_attributes() {
        let cases = [
            ("https://a.example/?x=1&amp;y=2", "https://a.example/?x=1&y=2"),
            ("https://a.example/?x=1&y=2", "https://a.example/?x=1&y=2"),
            ("https://a.example/?a=1&copy=2", "https://a.example/?a=1&copy=2"),
            ("https://a.example/?a=1&amp=2", "https://a.example/?a=1&amp=2"),
            ("https://a.example/?a&amp b", "https://a.example/?a& b"),
            ("&#38;&#x26;&#X26;&#38", "&&&&"),
            ("&quot;&lt;&gt;&apos;&nbsp;", "\"<>'\u{A0}"),
            ("&eacute;&unknown;&#;&#x;&", "&eacute;&unknown;&#;&#x;&"),
            ("&#0;&#xD800;&#99999999999;", "\u{FFFD}\u{FFFD}\u{FFFD}"),
            ("caf\u{e9}&amp;", "caf\u{e9}&"),
        ];
        for (input, want) in cases {
            assert_eq!(decode_entities(input), want, "{input}");
        }
    }

    #[test]
    fn only_http_and_https_have_a_host() {
        assert_eq!(http_host("https://Shop.Example.COM./a"), Some("Shop.Example.COM"));
        assert_eq!(http_host("HTTP://user:pw@a.example:8080/x"), Some("a.example"));
        assert_eq!(http_host("hTTpS://[2001:db8::1]:443/"), Some("[2001:db8::1]"));
        assert_eq!(http_host("https://a.example?q=1"), Some("a.example"));
        for not_http in [
            "mailto:a@b.example",
            "tel:+15551234",
            "#top",
            "/relative",
            "ftp://a.example",
            "javascript:x",
            "https://",
            "",
        ] {
            assert_eq!(http_host(not_http), None, "{not_http}");
        }
    }

    /// `http_host` as it was written with `char` patterns: the byte scans must agree with it.
    fn http_host_by_chars(url: &str) -> Option<&str> {
        let scheme_len = url.find(':')?;
        let scheme = &url[..scheme_len];
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return None;
        }
        let rest = url[scheme_len + 1..].trim_start_matches(['/', '\\']);
        let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if host_port.starts_with('[') {
            host_port.split_inclusive(']').next().unwrap_or(host_port)
        } else {
            host_port.split(':').next().unwrap_or(host_port)
        };
        let host = host.trim_end_matches('.');
        (!host.is_empty()).then_some(host)
    }

    #[test]
    fn http_host_agrees_with_the_char_pattern_version() {
        let pieces = [
            "http", "HTTPS", "ftp", ":", "/", "\\", "?", "#", "@", "[", "]", ".", "a", "\u{e9}", "\u{2028}",
            "1",
        ];
        // Every string of up to 4 pieces over a small alphabet, after an http(s) scheme or not.
        let mut strings = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for s in &strings {
                for p in pieces {
                    next.push(format!("{s}{p}"));
                }
            }
            strings.extend(next);
            strings.sort();
            strings.dedup();
        }
        for s in &strings {
            for url in [s.clone(), format!("http://{s}"), format!("hTTps:{s}")] {
                assert_eq!(http_host(&url), http_host_by_chars(&url), "{url:?}");
            }
        }
    }

    #[test]
    fn domains_match_themselves_and_subdomains_only() {
        assert!(host_in_domain("example.com", "example.com"));
        assert!(host_in_domain("www.example.com", "example.com"));
        assert!(host_in_domain("www.example.com", "Example.com."));
        assert!(host_in_domain("WWW.EXAMPLE.COM", "example.com"));
        assert!(!host_in_domain("badexample.com", "example.com"));
        assert!(!host_in_domain("example.com.evil", "example.com"));
    }

    #[test]
    fn urls_are_cleaned_as_browsers_do() {
        assert_eq!(clean_url("  https://a.example/\n  x\t "), "https://a.example/  x");
        assert_eq!(clean_url("https://a.example/"), "https://a.example/");
        assert_eq!(
            clean_url("\u{1}\x1f https://a.example/é\r\n\u{0}"),
            "https://a.example/é"
        );
        assert_eq!(clean_url(" \t\u{7} "), "");
    }

    #[test]
    fn list_unsubscribe_values_yield_their_uris() {
        let mut out = Vec::new();
        list_unsubscribe_targets(
            "<mailto:u@a.example?subject=x>, <https://a.example/u?id=1> ,<>",
            &mut out,
        );
        assert_eq!(out, ["mailto:u@a.example?subject=x", "https://a.example/u?id=1"]);
    }

    #[test]
    fn escaping_never_leaves_a_bare_ampersand() {
        assert_eq!(escape_html("https://t.example/c/abc"), "https://t.example/c/abc");
        assert_eq!(escape_html("a&b\"<>"), "a&amp;b&quot;&lt;&gt;");
    }
}
