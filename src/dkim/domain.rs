//! The header `From` domain of a message: the signing domain to use when the account holds
//! a key for it, since DMARC passes on DKIM only when `d=` aligns with that domain.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::Bytes;
use mail_parser::{HeaderName, MessageParser};

use crate::message::domain_of;

/// Header sections longer than this are not searched for `From` (the whole message is
/// bounded anyway; this bounds the copy when the header section spans several chunks).
pub const MAX_HEADER_SECTION_BYTES: usize = 256 << 10;

static FROM_PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_address(HeaderName::From)
        .default_header_ignore()
});

/// The lowercase domain of the first `From` address of the message made of `chunks`.
pub fn header_from_domain(chunks: &[Bytes]) -> Option<String> {
    let head = header_section(chunks);
    let msg = FROM_PARSER.parse_headers(head.as_ref())?;
    let address = msg.from()?.first()?.address()?;
    let domain = domain_of(address).trim_end_matches('>').trim();
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

/// The header section (through its blank line), borrowed when one chunk holds it.
fn header_section(chunks: &[Bytes]) -> Cow<'_, [u8]> {
    if let Some(first) = chunks.first()
        && let Some(end) = memchr::memmem::find(first, b"\r\n\r\n")
    {
        return Cow::Borrowed(&first[..end + 4]);
    }
    let mut head = Vec::new();
    for chunk in chunks {
        let scan_from = head.len().saturating_sub(3);
        let take = chunk
            .len()
            .min(MAX_HEADER_SECTION_BYTES.saturating_sub(head.len()));
        head.extend_from_slice(&chunk[..take]);
        if let Some(end) = memchr::memmem::find(&head[scan_from..], b"\r\n\r\n") {
            head.truncate(scan_from + end + 4);
            break;
        }
        if head.len() >= MAX_HEADER_SECTION_BYTES {
            break;
        }
    }
    Cow::Owned(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(parts: &[&'static str]) -> Option<String> {
        let chunks: Vec<Bytes> = parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect();
        header_from_domain(&chunks)
    }

    #[test]
    fn the_first_from_address_gives_the_domain() {
        assert_eq!(
            domain(&["From: Ann <ann@Shop.Example.COM>\r\nTo: b@x.example\r\n\r\nbody"]).as_deref(),
            Some("shop.example.com")
        );
        assert_eq!(
            domain(&["Subject: x\r\nFrom: =?utf-8?q?Ann_=C3=A9?= <a@one.example>, b@two.example\r\n\r\n"])
                .as_deref(),
            Some("one.example")
        );
        assert_eq!(
            domain(&["From: plain@bare.example\r\n\r\n"]).as_deref(),
            Some("bare.example")
        );
    }

    #[test]
    fn the_header_section_may_span_chunks() {
        let parts = [
            "List-Unsubscribe: <https://t.example/u/x>\r\n",
            "Received: by x\r\nFr",
            "om: a@split.example\r",
            "\n\r\nbody",
        ];
        assert_eq!(domain(&parts).as_deref(), Some("split.example"));
    }

    #[test]
    fn no_from_no_domain() {
        assert_eq!(
            domain(&["To: b@x.example\r\n\r\nFrom: not@a-header.example\r\n"]),
            None
        );
        assert_eq!(domain(&["From: undisclosed-recipients:;\r\n\r\n"]), None);
        assert_eq!(domain(&[]), None);
    }
}
