//! The MIME walk: find the parts to rewrite, rewrite each one, and splice the results into
//! the received bytes.
//!
//! mail-parser gives every part's offsets into the whole message, nested `message/rfc822`
//! parts included. It is not told any part's transfer encoding, so it decodes no body (the
//! candidate parts are decoded afterwards, see `lenient`), and a transfer-encoded nested
//! message is parsed in place and left alone. A leaf part's body is `offset_body..offset_end`,
//! which excludes the CRLF before the next boundary, so a re-encoded body drops straight into
//! that range.
//!
//! 7bit/8bit parts stay 7bit/8bit when their rewritten lines still fit in 998 bytes (tracking
//! URLs make lines longer). When a line would not fit, the part is switched to
//! quoted-printable: its `Content-Transfer-Encoding` field is replaced (or added at the end
//! of its header section) by a second splice. Quoted-printable and base64 parts keep their
//! encoding.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::Bytes;
use mail_parser::{Encoding, HeaderName, MessageParser, MessagePart, MimeHeaders, PartType};

use super::charset::{self, CharsetProblem};
use super::html::{HtmlJob, rewrite_html};
use super::lenient::{self, transfer_encoding};
use super::links::{TokenScope, Tracker, list_unsubscribe_targets};
use super::splice::{Edit, Source, assemble, header_block};
use super::text::rewrite_text;
use super::transfer::{self, MAX_LINE_LEN_BYTES};
use super::{PassReason, RewriteContext, Rewritten};

/// Messages with more MIME parts than this (all nesting levels) pass through untouched: a
/// bound on the work one message can cause.
pub const MAX_MIME_PARTS_COUNT: usize = 1024;
/// `message/rfc822` parts nested deeper than this are passed through untouched.
pub const MAX_MESSAGE_NESTING_DEPTH: usize = 8;

/// Parses only what the walk reads: MIME fields for every part and `List-Unsubscribe`;
/// every other field is skipped, not decoded. `Content-Transfer-Encoding` is skipped too, so
/// mail-parser decodes no body (it only finds the parts): the walk reads the field and
/// decodes the few parts it rewrites itself ([`lenient`]).
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .with_mime_headers()
        .ignore_header(HeaderName::ContentTransferEncoding)
        .header_raw(HeaderName::ListUnsubscribe)
        .default_header_ignore()
});

/// Rewrites one message (received as `body`, one or more chunks) for tracking.
///
/// Never fails: whatever cannot be rewritten is passed on as received, and
/// [`Rewritten::untouched_reason`] says why.
pub fn rewrite(body: &[Bytes], ctx: &RewriteContext<'_>) -> Rewritten {
    let source = Source::new(body);
    let mut out = Rewritten::default();
    out.chunks.extend(header_block(ctx.extra_headers));
    if !ctx.options.is_active() {
        source.push_range(0, source.len(), &mut out.chunks);
        return out;
    }
    let joined: Cow<'_, [u8]> = match body {
        [one] => Cow::Borrowed(one.as_ref()),
        _ => Cow::Owned(body.concat()),
    };
    let raw: &[u8] = &joined;
    let edits = match PARSER.parse(raw) {
        None => {
            out.untouched_reason = Some(PassReason::Unparseable);
            Vec::new()
        }
        Some(msg) if count_parts(&msg.parts, 0) > MAX_MIME_PARTS_COUNT => {
            out.untouched_reason = Some(PassReason::TooManyParts);
            Vec::new()
        }
        Some(msg) => {
            let mut walk = Walk::new(ctx, raw, &msg);
            walk.message(&msg.parts, &msg.html_body, 0);
            walk.finish(&mut out)
        }
    };
    assemble(&source, &edits, &mut out.chunks);
    out
}

fn count_parts(parts: &[MessagePart<'_>], depth: usize) -> usize {
    parts
        .iter()
        .map(|p| match &p.body {
            PartType::Message(m) if depth < MAX_MESSAGE_NESTING_DEPTH => 1 + count_parts(&m.parts, depth + 1),
            _ => 1,
        })
        .sum()
}

/// A part's content with its transfer encoding undone, and the charset it is in.
type Decoded<'a> = (Cow<'a, [u8]>, &'static encoding_rs::Encoding);

/// The state of one walk over a parsed message.
struct Walk<'a, 'c> {
    ctx: &'a RewriteContext<'c>,
    raw: &'a [u8],
    tracker: Tracker<'a>,
    pixel_url: Option<String>,
    edits: Vec<Edit>,
    links: usize,
    pixel: bool,
    parts_rewritten: usize,
    parts_untouched: usize,
    first_reason: Option<PassReason>,
}

impl<'a, 'c> Walk<'a, 'c> {
    fn new(ctx: &'a RewriteContext<'c>, raw: &'a [u8], msg: &mail_parser::Message<'_>) -> Self {
        let mut unsubscribe_targets = Vec::new();
        for h in msg
            .parts
            .first()
            .map(|p| p.headers.as_slice())
            .unwrap_or_default()
        {
            if h.name == HeaderName::ListUnsubscribe
                && let Some(value) = raw.get(h.offset_start as usize..h.offset_end as usize)
            {
                list_unsubscribe_targets(&String::from_utf8_lossy(value), &mut unsubscribe_targets);
            }
        }
        for (name, value) in ctx.extra_headers {
            if name.eq_ignore_ascii_case("List-Unsubscribe") {
                list_unsubscribe_targets(value, &mut unsubscribe_targets);
            }
        }
        let mut tracker = Tracker {
            scope: TokenScope {
                keyring: ctx.keyring,
                account: ctx.account,
                message_id: ctx.message_id,
                recipient: ctx.token_recipient(),
                issued_at_unix_s: ctx.issued_at_unix_s,
                expires_at_unix_s: ctx.expires_at_unix_s(),
            },
            base: ctx.options.base(),
            exclude_domains: &ctx.options.exclude_domains,
            unsubscribe_targets,
            next_index: 0,
            scratch: Default::default(),
        };
        let pixel_url = if ctx.options.opens {
            tracker.open_url()
        } else {
            None
        };
        Walk {
            ctx,
            raw,
            tracker,
            pixel_url,
            edits: Vec::new(),
            links: 0,
            pixel: false,
            parts_rewritten: 0,
            parts_untouched: 0,
            first_reason: None,
        }
    }

    /// Walks the parts of one (possibly nested) message. `body_parts` are the ids of its
    /// HTML body parts, which only the top-level message's pixel may use.
    fn message(&mut self, parts: &[MessagePart<'_>], body_parts: &[u32], depth: usize) {
        for (id, part) in parts.iter().enumerate() {
            match &part.body {
                // A transfer-encoded message is not rewritten (mail-parser, not told the
                // encoding, parses its encoded text in place: offsets, no copies).
                PartType::Message(nested) if transfer_encoding(self.raw, part) == Encoding::None => {
                    if depth < MAX_MESSAGE_NESTING_DEPTH {
                        self.message(&nested.parts, &[], depth + 1);
                    } else {
                        self.untouched(PassReason::TooDeep);
                    }
                }
                PartType::Html(_) if !is_attachment(part) => {
                    let pixel = depth == 0 && !self.pixel && body_parts.contains(&(id as u32));
                    self.candidate(part, |walk, decoded, encoding| match decoded {
                        Some(decoded) => walk.html(decoded, encoding, pixel),
                        None => Err(PassReason::EncodingProblem),
                    });
                }
                // mail-parser demotes a text/html part it cannot decode to text.
                PartType::Text(_) if part.is_encoding_problem && is_html(part) && !is_attachment(part) => {
                    self.untouched(PassReason::EncodingProblem);
                }
                PartType::Text(_) if self.ctx.options.plain_text_clicks && is_plain_text(part) => {
                    // mail-parser used to flag a text part it could not decode, and such
                    // parts were never candidates: not counted as untouched either.
                    self.candidate(part, |walk, decoded, _| match decoded {
                        Some(decoded) => walk.text(decoded),
                        None => Ok(None),
                    });
                }
                _ => {}
            }
        }
    }

    /// Decodes a candidate part, lets `rewrite` produce its new decoded content (or `None`
    /// for "unchanged"), and records the splice. `rewrite` gets `None` instead of content
    /// when the part's transfer encoding is broken where mail-parser flags it.
    fn candidate(
        &mut self,
        part: &MessagePart<'_>,
        rewrite: impl FnOnce(
            &mut Self,
            Option<&[u8]>,
            &'static encoding_rs::Encoding,
        ) -> Result<Option<Vec<u8>>, PassReason>,
    ) {
        let encoding = transfer_encoding(self.raw, part);
        let prepared = match self.prepare(part, encoding) {
            Ok(Some((decoded, charset))) => rewrite(self, Some(decoded.as_ref()), charset),
            Ok(None) => rewrite(self, None, encoding_rs::UTF_8),
            Err(reason) => Err(reason),
        };
        match prepared {
            Ok(Some(content)) => match self.splice(part, encoding, content) {
                Ok(()) => self.parts_rewritten += 1,
                Err(reason) => self.untouched(reason),
            },
            Ok(None) => {}
            Err(reason) => self.untouched(reason),
        }
    }

    /// The part's content with its transfer encoding undone, and its charset; `Ok(None)`
    /// when the transfer encoding is broken in a way mail-parser flags.
    ///
    /// The body is first decoded as mail-parser's parse decodes it (leniently, like mail
    /// clients). When the part is UTF-8 (or unlabelled) and that is valid UTF-8, it is the
    /// content. Otherwise the body is decoded strictly and kept in its own charset.
    fn prepare(&self, part: &MessagePart<'_>, encoding: Encoding) -> Result<Option<Decoded<'a>>, PassReason> {
        let (header, body, end) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        if part.is_encoding_problem || !(header <= body && body <= end && end <= self.raw.len()) {
            return Err(PassReason::EncodingProblem);
        }
        let raw: &'a [u8] = self.raw;
        let line_break_follows = raw[end..].starts_with(b"\n") || raw[end..].starts_with(b"\r\n");
        let Some(lenient) = lenient::decode(encoding, &raw[body..end], line_break_follows) else {
            return Ok(None);
        };
        let label = part.content_type().and_then(|ct| ct.attribute("charset"));
        let utf8_label = label.is_none_or(|l| {
            encoding_rs::Encoding::for_label(l.trim().as_bytes()) == Some(encoding_rs::UTF_8)
        });
        // What mail-parser's text of the part was, byte for byte: no U+FFFD, neither one
        // it would have put in for invalid UTF-8 nor one the sender wrote.
        if utf8_label
            && let Ok(text) = std::str::from_utf8(&lenient)
            && memchr::memmem::find(text.as_bytes(), "\u{FFFD}".as_bytes()).is_none()
        {
            return Ok(Some((lenient, encoding_rs::UTF_8)));
        }
        let decoded =
            transfer::decode(encoding, &raw[body..end]).ok_or(PassReason::MalformedTransferEncoding)?;
        let charset = charset::resolve(label, &decoded).map_err(|e| match e {
            CharsetProblem::Unknown => PassReason::UnknownCharset,
            CharsetProblem::NotAsciiCompatible => PassReason::UnsupportedCharset,
        })?;
        Ok(Some((decoded, charset)))
    }

    fn html(
        &mut self,
        decoded: &[u8],
        encoding: &'static encoding_rs::Encoding,
        pixel: bool,
    ) -> Result<Option<Vec<u8>>, PassReason> {
        let job = HtmlJob {
            clicks: self.ctx.options.clicks,
            pixel_url: self.pixel_url.as_deref().filter(|_| pixel),
            exclude_attribute: &self.ctx.options.exclude_attribute,
            encoding,
        };
        if !job.clicks && job.pixel_url.is_none() {
            return Ok(None);
        }
        let out =
            rewrite_html(decoded, &job, &mut self.tracker).map_err(|_| PassReason::HtmlRewriteFailed)?;
        self.links += out.links;
        self.pixel |= out.pixel;
        Ok((out.links > 0 || out.pixel).then_some(out.html))
    }

    fn text(&mut self, decoded: &[u8]) -> Result<Option<Vec<u8>>, PassReason> {
        Ok(rewrite_text(decoded, &mut self.tracker).map(|(text, links)| {
            self.links += links;
            text
        }))
    }

    /// Re-encodes `content` in the part's transfer encoding and records the edits.
    fn splice(
        &mut self,
        part: &MessagePart<'_>,
        encoding: Encoding,
        content: Vec<u8>,
    ) -> Result<(), PassReason> {
        let (body_start, body_end) = (part.offset_body as usize, part.offset_end as usize);
        let encoded = match encoding {
            Encoding::QuotedPrintable => transfer::encode_quoted_printable(&content),
            Encoding::Base64 => {
                let trailing_crlf = self
                    .raw
                    .get(body_start..body_end)
                    .is_some_and(|b| b.ends_with(b"\r\n"));
                transfer::encode_base64(&content, trailing_crlf)
            }
            Encoding::None if transfer::longest_line_len(&content) <= MAX_LINE_LEN_BYTES => content,
            Encoding::None => {
                let header = self
                    .switch_to_quoted_printable(part)
                    .ok_or(PassReason::LineTooLong)?;
                self.edits.push(header);
                transfer::encode_quoted_printable(&content)
            }
        };
        self.edits.push(Edit {
            start: body_start,
            end: body_end,
            bytes: Bytes::from(encoded),
        });
        Ok(())
    }

    /// The header edit that makes the part quoted-printable: its CTE field's value
    /// replaced, or a new field before the blank line ending its header section.
    fn switch_to_quoted_printable(&self, part: &MessagePart<'_>) -> Option<Edit> {
        let cte = part
            .headers
            .iter()
            .find(|h| h.name == HeaderName::ContentTransferEncoding);
        if let Some(h) = cte {
            let (start, end) = (h.offset_start as usize, h.offset_end as usize);
            let line_break: &[u8] = if self.raw.get(..end)?.ends_with(b"\r\n") {
                b"\r\n"
            } else {
                b"\n"
            };
            let mut value = b" quoted-printable".to_vec();
            value.extend_from_slice(line_break);
            return Some(Edit {
                start,
                end,
                bytes: Bytes::from(value),
            });
        }
        let head = self
            .raw
            .get(part.offset_header as usize..part.offset_body as usize)?;
        let blank_len = if head.ends_with(b"\r\n") {
            2
        } else if head.ends_with(b"\n") {
            1
        } else {
            return None;
        };
        let at = part.offset_body as usize - blank_len;
        let line_break = if blank_len == 2 { "\r\n" } else { "\n" };
        Some(Edit {
            start: at,
            end: at,
            bytes: Bytes::from(format!("Content-Transfer-Encoding: quoted-printable{line_break}")),
        })
    }

    fn untouched(&mut self, reason: PassReason) {
        self.parts_untouched += 1;
        self.first_reason.get_or_insert(reason);
    }

    fn finish(self, out: &mut Rewritten) -> Vec<Edit> {
        let mut edits = self.edits;
        edits.sort_by_key(|e| (e.start, e.end));
        // Leaf parts never overlap in a message mail-parser understood; if offsets ever did,
        // splicing would garble the message, so it is passed through whole instead.
        if edits.windows(2).any(|w| w[0].end > w[1].start) {
            out.parts_untouched = self.parts_rewritten + self.parts_untouched;
            out.untouched_reason = Some(PassReason::EncodingProblem);
            return Vec::new();
        }
        out.links = self.links;
        out.pixel = self.pixel;
        out.parts_rewritten = self.parts_rewritten;
        out.parts_untouched = self.parts_untouched;
        out.untouched_reason = self.first_reason;
        edits
    }
}

fn is_attachment(part: &MessagePart<'_>) -> bool {
    part.content_disposition().is_some_and(|d| d.is_attachment())
}

fn is_html(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("html"))
    })
}

/// `text/plain` (or no Content-Type, which means it), not an attachment.
fn is_plain_text(part: &MessagePart<'_>) -> bool {
    let plain = part.content_type().is_none_or(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("plain"))
    });
    plain && !is_attachment(part) && !part.is_encoding_problem
}
