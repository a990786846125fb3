//! Click tracking in `text/plain` parts (off unless the account asks for it): bare
//! `http://` and `https://` URLs in the text are replaced by tracking URLs.
//!
//! A URL runs to the first space, control byte, non-ASCII byte or `<`, `>`, `"`; trailing
//! sentence punctuation and an unbalanced closing bracket are left out, which is how mail
//! clients linkify text. The scan works on the encoded bytes of any ASCII-compatible
//! charset, so the text is not transcoded.

use super::links::Tracker;

const SCHEMES: [&[u8]; 2] = [b"https://", b"http://"];

/// The rewritten text and the number of links replaced; `None` when nothing changed.
pub(crate) fn rewrite_text(input: &[u8], tracker: &mut Tracker<'_>) -> Option<(Vec<u8>, usize)> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut links = 0;
    let mut pos = 0;
    while let Some((start, end)) = next_url(input, pos) {
        pos = end;
        // The URL is ASCII by construction of `url_end`.
        let Ok(url) = std::str::from_utf8(&input[start..end]) else {
            continue;
        };
        let Some(tracking) = tracker.click_url(url, false) else {
            continue;
        };
        let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 1024));
        buf.extend_from_slice(&input[copied..start]);
        buf.extend_from_slice(tracking.as_bytes());
        copied = end;
        links += 1;
    }
    let mut buf = out?;
    buf.extend_from_slice(&input[copied..]);
    Some((buf, links))
}

/// The next URL at or after `from`, as a byte range.
fn next_url(input: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < input.len() {
        let at = i + memchr_ascii_h(&input[i..])?;
        let starts_word = at == 0 || !(input[at - 1].is_ascii_alphanumeric() || input[at - 1] >= 0x80);
        let scheme = SCHEMES
            .iter()
            .find(|s| input.len() - at >= s.len() && input[at..at + s.len()].eq_ignore_ascii_case(s));
        if let (true, Some(scheme)) = (starts_word, scheme) {
            let end = url_end(input, at, at + scheme.len());
            if end > at + scheme.len() {
                return Some((at, end));
            }
        }
        i = at + 1;
    }
    None
}

fn memchr_ascii_h(hay: &[u8]) -> Option<usize> {
    memchr::memchr2(b'h', b'H', hay)
}

/// Where the URL that starts at `start` (its host at `host`) ends.
fn url_end(input: &[u8], start: usize, host: usize) -> usize {
    let mut end = host;
    while end < input.len() {
        let b = input[end];
        if b <= b' ' || b >= 0x7f || matches!(b, b'<' | b'>' | b'"') {
            break;
        }
        end += 1;
    }
    // Trailing punctuation belongs to the sentence, and a closing bracket to the text
    // around the URL unless the URL opened one itself.
    while end > host {
        let b = input[end - 1];
        let url = &input[start..end];
        let unbalanced = |open: u8, close: u8| {
            url.iter().filter(|&&c| c == close).count() > url.iter().filter(|&&c| c == open).count()
        };
        let trailing = matches!(b, b'.' | b',' | b';' | b':' | b'!' | b'?' | b'\'')
            || (b == b')' && unbalanced(b'(', b')'))
            || (b == b']' && unbalanced(b'[', b']'));
        if !trailing {
            break;
        }
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;
    use crate::rewrite::links::TokenScope;
    use crate::rewrite::token::Keyring;

    fn urls(input: &str) -> Vec<&str> {
        let mut found = Vec::new();
        let mut pos = 0;
        while let Some((s, e)) = next_url(input.as_bytes(), pos) {
            found.push(&input[s..e]);
            pos = e;
        }
        found
    }

    #[test]
    fn urls_end_where_mail_clients_end_them() {
        assert_eq!(
            urls("See https://a.example/x?y=1&z=2."),
            ["https://a.example/x?y=1&z=2"]
        );
        assert_eq!(
            urls("(https://a.example/wiki/A_(b)) and HTTP://B.example,"),
            ["https://a.example/wiki/A_(b)", "HTTP://B.example"]
        );
        assert_eq!(
            urls("<https://a.example/p> \"http://b.example/q\""),
            ["https://a.example/p", "http://b.example/q"]
        );
        assert_eq!(
            urls("xhttps://a.example/ https:// nothttp ftp://c.example"),
            Vec::<&str>::new()
        );
        assert_eq!(urls("caf\u{e9}https://a.example/"), Vec::<&str>::new());
    }

    #[test]
    fn text_links_are_replaced_and_the_rest_is_kept() {
        let k = Keyring::new(vec![(1, vec![1u8; 32])], 1).unwrap();
        let mut t = Tracker {
            scope: TokenScope {
                keyring: &k,
                account: "a",
                message_id: MessageId(1),
                recipient: "",
                issued_at_unix_s: 0,
                expires_at_unix_s: None,
            },
            base: "https://t.example",
            exclude_domains: &["skip.example".to_string()],
            unsubscribe_targets: Vec::new(),
            next_index: 0,
            scratch: Default::default(),
        };
        let input = b"Hi\r\nGo to https://a.example/x. Or https://skip.example/y\r\n\xe9 end";
        let (out, links) = rewrite_text(input, &mut t).unwrap();
        assert_eq!(links, 1);
        let out = out.as_slice();
        assert!(out.starts_with(b"Hi\r\nGo to https://t.example/c/"));
        assert!(out.ends_with(b". Or https://skip.example/y\r\n\xe9 end"));
        let rest = &out[b"Hi\r\nGo to https://t.example/c/".len()..];
        let end = rest.windows(4).position(|w| w == b". Or").unwrap();
        let token = std::str::from_utf8(&rest[..end]).unwrap();
        assert_eq!(k.verify(token, 0).unwrap().url, "https://a.example/x");
        assert!(rewrite_text(b"no links here", &mut t).is_none());
    }
}
