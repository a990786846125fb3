//! Open and click tracking: the rewrite of a received message into the one that is
//! delivered, as a pure function of the spooled bytes and the account's options.
//!
//! ## What happens to a message
//!
//! [`rewrite`] parses the message with mail-parser to learn every part's byte offsets, then
//! handles each `text/html` part that is not an attachment (in nested `message/rfc822`
//! parts too): undo its transfer encoding (`lenient`, [`transfer`]), stream it through
//! lol_html in its own charset ([`charset`], [`html`]) so `<a>`/`<area>` links become `<base>/c/<token>` and
//! a 1×1 `<base>/o/<token>` pixel lands before `</body>`, re-encode it in its original
//! transfer encoding, and splice it back. With `plain_text_clicks`, bare URLs in
//! `text/plain` parts are rewritten too ([`text`]). Tokens ([`token`]) are signed and
//! stateless, so the tracking endpoint on any core can verify them.
//!
//! ## Why it is built this way
//!
//! - **Every byte that does not change is not copied.** The output is a list of `Bytes`:
//!   slices of the received chunks around the rewritten parts, plus those parts. Signing
//!   and delivery walk the list.
//! - **Never break a message.** A message or part that cannot be parsed, decoded or
//!   rewritten safely is passed on exactly as received, with the reason ([`PassReason`])
//!   for the counters. The usual incumbent bugs are designed out: `&amp;` in an `href` is
//!   decoded before it goes into the token and nothing is escaped twice; base64 and
//!   quoted-printable parts are re-encoded in their own encoding with RFC 2045 line
//!   lengths; charsets are never transcoded; plain text is left alone unless asked.
//! - **Deterministic.** Tokens carry the accept time, not the current time, and minting is
//!   deterministic, so a retry or a restart produces the same bytes.
//! - **Bounded.** Parts per message, `message/rfc822` nesting, tracked links per message,
//!   token size and lol_html memory all have named limits; beyond them the message (or
//!   part) passes through untouched.
//!
//! A message with several recipients is rewritten once per recipient when tokens name the
//! recipient (`per_recipient`), or once for all of them otherwise.

pub mod charset;
pub mod html;
mod lenient;
pub mod links;
pub mod mime;
pub mod options;
pub mod splice;
pub mod text;
pub mod token;
pub mod transfer;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod stability;

use std::fmt;

use bytes::Bytes;

pub use links::MAX_TRACKED_LINKS_COUNT;
pub use mime::{MAX_MESSAGE_NESTING_DEPTH, MAX_MIME_PARTS_COUNT, rewrite};
pub use options::TrackingOptions;
pub use token::{Claims, Keyring, KeyringError, Token, TokenError, TokenKind};

use crate::message::MessageId;

/// Everything one rewrite depends on. The output is a function of this and the message.
#[derive(Clone, Copy, Debug)]
pub struct RewriteContext<'a> {
    pub options: &'a TrackingOptions,
    pub keyring: &'a Keyring,
    pub account: &'a str,
    pub message_id: MessageId,
    /// The envelope recipient this copy is for (ignored unless `options.per_recipient`).
    pub recipient: &'a str,
    /// The accept time: tokens say when the message was accepted, so a retry mints the
    /// same tokens.
    pub issued_at_unix_s: u64,
    /// Header fields to prepend (e.g. from [`one_click_unsubscribe_headers`]), as
    /// `(name, value)`; CR and LF in them are replaced by spaces.
    pub extra_headers: &'a [(String, String)],
}

impl RewriteContext<'_> {
    /// The recipient that goes into tokens.
    pub fn token_recipient(&self) -> &str {
        if self.options.per_recipient {
            self.recipient
        } else {
            ""
        }
    }

    pub fn expires_at_unix_s(&self) -> Option<u64> {
        self.options
            .expiry
            .map(|d| self.issued_at_unix_s.saturating_add(d.as_secs()))
    }

    fn claims(&self, kind: TokenKind) -> Claims<'_> {
        Claims {
            kind,
            account: self.account,
            message_id: self.message_id,
            recipient: self.token_recipient(),
            link_index: 0,
            url: "",
            issued_at_unix_s: self.issued_at_unix_s,
            expires_at_unix_s: self.expires_at_unix_s(),
        }
    }
}

/// The RFC 8058 one-click unsubscribe header fields for this message and recipient:
/// `List-Unsubscribe: <<base>/u/<token>>` and `List-Unsubscribe-Post`. The caller decides
/// whether to add them (a message that already has `List-Unsubscribe` should keep its own)
/// and passes them back in [`RewriteContext::extra_headers`]; DKIM must then sign both.
pub fn one_click_unsubscribe_headers(ctx: &RewriteContext<'_>) -> Result<[(String, String); 2], TokenError> {
    let token = ctx.keyring.mint(&ctx.claims(TokenKind::Unsubscribe))?;
    Ok([
        (
            "List-Unsubscribe".to_string(),
            format!("<{}/u/{token}>", ctx.options.base()),
        ),
        (
            "List-Unsubscribe-Post".to_string(),
            "List-Unsubscribe=One-Click".to_string(),
        ),
    ])
}

/// Why a message, or one of its parts, was passed on unmodified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassReason {
    /// mail-parser found no header section.
    Unparseable,
    /// More MIME parts than [`MAX_MIME_PARTS_COUNT`].
    TooManyParts,
    /// `message/rfc822` nested deeper than [`MAX_MESSAGE_NESTING_DEPTH`].
    TooDeep,
    /// mail-parser flagged the part as malformed.
    EncodingProblem,
    /// The body is not valid in its declared quoted-printable or base64.
    MalformedTransferEncoding,
    /// A `charset=` label no encoding standard knows.
    UnknownCharset,
    /// UTF-16 or ISO-2022-JP, which cannot be rewritten in place.
    UnsupportedCharset,
    /// lol_html refused the document (ambiguous markup in strict mode, memory limit).
    HtmlRewriteFailed,
    /// A 7bit/8bit part whose rewritten lines are too long and whose header section could
    /// not take a new Content-Transfer-Encoding.
    LineTooLong,
}

impl PassReason {
    /// A short stable name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PassReason::Unparseable => "unparseable",
            PassReason::TooManyParts => "too_many_parts",
            PassReason::TooDeep => "too_deep",
            PassReason::EncodingProblem => "encoding_problem",
            PassReason::MalformedTransferEncoding => "malformed_transfer_encoding",
            PassReason::UnknownCharset => "unknown_charset",
            PassReason::UnsupportedCharset => "unsupported_charset",
            PassReason::HtmlRewriteFailed => "html_rewrite_failed",
            PassReason::LineTooLong => "line_too_long",
        }
    }
}

impl fmt::Display for PassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message to deliver, and what the rewrite did.
#[derive(Clone, Debug, Default)]
pub struct Rewritten {
    /// The message: the extra header fields (one chunk, when any), then slices of the
    /// received chunks and the rewritten parts, in order.
    pub chunks: Vec<Bytes>,
    /// Links replaced by tracking URLs.
    pub links: usize,
    /// Whether the open pixel was inserted.
    pub pixel: bool,
    /// Parts that were rewritten.
    pub parts_rewritten: usize,
    /// Candidate parts (HTML, or plain text with `plain_text_clicks`) passed on unmodified.
    pub parts_untouched: usize,
    /// Why the message, or its first untouched candidate part, was passed on unmodified.
    pub untouched_reason: Option<PassReason>,
}

impl Rewritten {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as one buffer (for tests and tools; the relay walks `chunks`).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }
}
