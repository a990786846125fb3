//! The streaming rewrite of one decoded HTML part with lol_html: link `href`s of `<a>` and
//! `<area>` become tracking URLs, and the open pixel goes before `</body>`.
//!
//! lol_html emits every byte it does not change exactly as it read it, so the rest of the
//! document (including its charset-encoded text) is untouched. Two traps it sets are handled
//! here: `get_attribute` returns the value with its character references still encoded (the
//! `Tracker` decodes them before minting), and `set_attribute` escapes only `"` (the new
//! value is escaped here, so no `&` is emitted bare and none is escaped twice). The pixel is
//! inserted by an end-tag handler on `<body>`, with a document-end fallback for documents
//! whose `</body>` is missing (appending to `<body>` would silently drop it there).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use encoding_rs::Encoding;
use lol_html::errors::RewritingError;
use lol_html::html_content::ContentType;
use std::sync::LazyLock;

use lol_html::html_content::Element;
use lol_html::{
    AsciiCompatibleEncoding, ElementContentHandlers, EndTagHandler, HandlerResult, HtmlRewriter,
    LocalHandlerTypes, MemorySettings, Selector, Settings, end,
};

use super::links::{Tracker, escape_html};

/// lol_html buffers a tag split across writes, and a huge tag would grow that buffer; past
/// this the part is passed through instead.
pub const MAX_HTML_REWRITER_MEMORY_BYTES: usize = 4 << 20;

/// The selectors, parsed once: parsing them per part was a measurable share of the rewrite
/// of a small message. Matched by tag name alone: an `[href]` condition makes the selector
/// VM build an attribute matcher for every `<a>` before the handler runs, and the handler
/// skips elements without `href` itself, so what is rewritten is the same.
static LINKS: LazyLock<Option<Selector>> = LazyLock::new(|| "a, area".parse().ok());
static BODY: LazyLock<Option<Selector>> = LazyLock::new(|| "body".parse().ok());

/// What the HTML rewrite should do to one part.
pub(crate) struct HtmlJob<'a> {
    /// Rewrite links (click tracking).
    pub clicks: bool,
    /// The pixel to insert (only the message's first HTML body part gets one).
    pub pixel_url: Option<&'a str>,
    /// Elements with this attribute keep their link.
    pub exclude_attribute: &'a str,
    /// The part's encoding, which must be ASCII-compatible.
    pub encoding: &'static Encoding,
}

/// The rewritten part.
pub(crate) struct HtmlOutput {
    pub html: Vec<u8>,
    pub links: usize,
    pub pixel: bool,
}

/// Rewrites `input`. On error the tracker is left as it was, so the part can be passed
/// through without leaving gaps in the link numbering.
pub(crate) fn rewrite_html(
    input: &[u8],
    job: &HtmlJob<'_>,
    tracker: &mut Tracker<'_>,
) -> Result<HtmlOutput, RewritingError> {
    let index_before = tracker.next_index;
    let result = run(input, job, tracker);
    if result.is_err() {
        tracker.next_index = index_before;
    }
    result
}

fn run(input: &[u8], job: &HtmlJob<'_>, tracker: &mut Tracker<'_>) -> Result<HtmlOutput, RewritingError> {
    let encoding = AsciiCompatibleEncoding::new(job.encoding)
        .ok_or_else(|| RewritingError::ContentHandlerError("encoding is not ASCII-compatible".into()))?;
    // Tracking URLs are the base URL and base64url: they need escaping only if the base
    // does (configuration validation refuses such bases, but the rewrite does not rely on it).
    let escape = matches!(escape_html(tracker.base), Cow::Owned(_));
    let tracker = RefCell::new(tracker);
    let links = Cell::new(0usize);
    let pixel_html: Option<Rc<str>> = job.pixel_url.map(|url| pixel_tag(url).into());
    let placed = Rc::new(Cell::new(false));
    // Room for the usual growth (a tracking URL is about twice the link it replaces), so
    // the output is not copied by a reallocation halfway through.
    let mut out = Vec::with_capacity(input.len() + input.len() / 2 + 512);

    let mut settings = Settings::new().with_encoding(encoding).with_memory_settings(
        MemorySettings::new().with_max_allowed_memory_usage(MAX_HTML_REWRITER_MEMORY_BYTES),
    );
    let (Some(links_selector), Some(body_selector)) = (LINKS.as_ref(), BODY.as_ref()) else {
        return Err(RewritingError::ContentHandlerError("selector".into()));
    };
    if job.clicks {
        settings = settings.append_element_content_handler(on(links_selector, |el| {
            let target = link_target(el, input, job);
            // Every rewrite in the tests checks the fast lookup against lol_html's own.
            #[cfg(test)]
            assert_eq!(target, link_target_allocating(el, job));
            let Some(href) = target else {
                return Ok(());
            };
            if let Some(url) = tracker.borrow_mut().click_url(&href, true) {
                let value = if escape {
                    escape_html(url)
                } else {
                    Cow::Borrowed(url)
                };
                el.set_attribute("href", &value)?;
                links.set(links.get() + 1);
            }
            Ok(())
        }));
    }
    if let Some(pixel) = &pixel_html {
        settings = settings
            .append_element_content_handler(on(body_selector, |el| {
                if let Some(handlers) = el.end_tag_handlers() {
                    handlers.push(pixel_before_end_tag(pixel.clone(), placed.clone()));
                }
                Ok(())
            }))
            .append_document_content_handler(end!(|end| {
                if !placed.replace(true) {
                    end.append(pixel, ContentType::Html);
                }
                Ok(())
            }));
    }
    let mut rewriter = HtmlRewriter::new(settings, |chunk: &[u8]| out.extend_from_slice(chunk));
    rewriter.write(input)?;
    rewriter.end()?;
    Ok(HtmlOutput {
        html: out,
        links: links.get(),
        pixel: placed.get(),
    })
}

/// The `href` of a link element as written (entities encoded), or `None` when it has none
/// or carries the exclude attribute.
///
/// What `has_attribute` and `get_attribute` return, without their allocations (each
/// lowercases the name it is asked for into a new `String`, and the value is copied into
/// another): attribute names are compared where they stand in `input`, which lol_html
/// locates for every attribute it parsed, and a UTF-8 value is borrowed from it. The
/// allocating calls remain for what this does not cover (a name that is not plain ASCII, a
/// value in another charset or one starting with a byte order mark, which
/// `Encoding::decode` would strip), and tests check both give the same.
fn link_target<'i>(el: &Element<'_, '_>, input: &'i [u8], job: &HtmlJob<'_>) -> Option<Cow<'i, str>> {
    let exclude = job.exclude_attribute.as_bytes();
    if !is_plain_attribute_name(exclude) {
        return link_target_allocating(el, job);
    }
    let mut href = None;
    for attr in el.attributes() {
        let name = attr.name_source_location().and_then(|at| input.get(at.bytes()));
        let Some(name) = name else {
            return link_target_allocating(el, job);
        };
        if name.eq_ignore_ascii_case(exclude) {
            return None;
        }
        if href.is_none() && name.eq_ignore_ascii_case(b"href") {
            href = Some(attr);
        }
    }
    let attr = href?;
    let Some(at) = attr.value_source_location() else {
        // Written without a value (`<a href>`), or not located: lol_html's own answer.
        return Some(Cow::Owned(attr.value()));
    };
    let value = input
        .get(at.bytes())
        .filter(|_| job.encoding == encoding_rs::UTF_8);
    match value.and_then(|v| std::str::from_utf8(v).ok()) {
        Some(v) if !v.starts_with('\u{FEFF}') => Some(Cow::Borrowed(v)),
        _ => Some(Cow::Owned(attr.value())),
    }
}

/// [`link_target`] through lol_html's allocating lookups.
fn link_target_allocating<'i>(el: &Element<'_, '_>, job: &HtmlJob<'_>) -> Option<Cow<'i, str>> {
    if el.has_attribute(job.exclude_attribute) {
        return None;
    }
    el.get_attribute("href").map(Cow::Owned)
}

/// A non-empty ASCII name without the bytes lol_html refuses in attribute names: one
/// compared byte for byte as lol_html compares it.
fn is_plain_attribute_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| {
            b.is_ascii() && !matches!(b, b' ' | b'\n' | b'\r' | b'\t' | b'\x0C' | b'/' | b'>' | b'=')
        })
}

/// An element handler on a pre-parsed selector (what lol_html's `element!` does with a
/// selector it parses each time).
fn on<'s, 'h>(
    selector: &'s Selector,
    handler: impl FnMut(&mut Element<'_, '_>) -> HandlerResult + 'h,
) -> (Cow<'s, Selector>, ElementContentHandlers<'h, LocalHandlerTypes>) {
    (
        Cow::Borrowed(selector),
        ElementContentHandlers::default().element(handler),
    )
}

/// The end-tag handler lol_html requires to be `'static`, hence the shared ownership.
fn pixel_before_end_tag(pixel: Rc<str>, placed: Rc<Cell<bool>>) -> EndTagHandler<'static> {
    Box::new(move |end| {
        if !placed.replace(true) {
            end.before(&pixel, ContentType::Html);
        }
        Ok(())
    })
}

/// The 1×1 open pixel; styled so it takes no room and shows no border in any client.
fn pixel_tag(url: &str) -> String {
    format!(
        "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;width:1px;height:1px;border:0;margin:0;padding:0\">",
        escape_html(url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;
    use crate::rewrite::links::TokenScope;
    use crate::rewrite::token::{Keyring, TokenKind};

    fn keyring() -> Keyring {
        Keyring::new(vec![(1, vec![3u8; 32])], 1).unwrap()
    }

    fn tracker(keyring: &Keyring) -> Tracker<'_> {
        Tracker {
            scope: TokenScope {
                keyring,
                account: "acme",
                message_id: MessageId(5),
                recipient: "r@example.net",
                issued_at_unix_s: 100,
                expires_at_unix_s: None,
            },
            base: "https://t.example",
            exclude_domains: &[],
            unsubscribe_targets: vec!["https://a.example/unsub".to_string()],
            next_index: 0,
            scratch: Default::default(),
        }
    }

    fn job(pixel: Option<&str>) -> HtmlJob<'_> {
        HtmlJob {
            clicks: true,
            pixel_url: pixel,
            exclude_attribute: "data-notrack",
            encoding: encoding_rs::UTF_8,
        }
    }

    /// Rewrites and returns the output with each token replaced by the URL it verifies to.
    fn rewrite(input: &str, pixel: Option<&str>) -> (String, Vec<String>, bool) {
        let k = keyring();
        let mut t = tracker(&k);
        let out = rewrite_html(input.as_bytes(), &job(pixel), &mut t).unwrap();
        let html = String::from_utf8(out.html).unwrap();
        let mut urls = Vec::new();
        for piece in html.split("https://t.example/c/").skip(1) {
            let token: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                .collect();
            let v = k.verify(&token, 0).unwrap();
            assert_eq!(v.kind, TokenKind::Click);
            assert_eq!(v.link_index as usize, urls.len());
            urls.push(v.url);
        }
        assert_eq!(out.links, urls.len());
        (html, urls, out.pixel)
    }

    #[test]
    fn links_are_rewritten_with_entities_decoded_into_the_token() {
        let (html, urls, _) = rewrite(
            "<a href=\"https://a.example/r?x=1&amp;y=2\">a</a><AREA HREF='HTTPS://B.example/#f'><a href=\"http://c.example/?q=&#34;\">c</a>",
            None,
        );
        assert_eq!(
            urls,
            [
                "https://a.example/r?x=1&y=2",
                "HTTPS://B.example/#f",
                "http://c.example/?q=\""
            ]
        );
        assert!(!html.contains("&amp;amp;"), "{html}");
        assert!(html.contains(">a</a>"));
    }

    #[test]
    fn non_http_excluded_and_unsubscribe_links_stay() {
        let input = "<a href=\"mailto:x@a.example\">m</a><a href=\"tel:+1555\">t</a><a href=\"#top\">h</a>\
                     <a href=\"/rel\">r</a><a data-notrack href=\"https://a.example/keep\">k</a>\
                     <a href=\"https://a.example/unsub\">u</a><a href=\"HTTPS://T.EXAMPLE/c/old\">o</a><a>no href</a>";
        let (html, urls, _) = rewrite(input, None);
        assert!(urls.is_empty(), "{urls:?}");
        assert_eq!(html, input);
    }

    #[test]
    fn pixel_goes_before_body_end_once() {
        let (html, _, pixel) = rewrite(
            "<html><body><p>x</p></body></html>",
            Some("https://t.example/o/T"),
        );
        assert!(pixel);
        assert!(
            html.ends_with("height:1px;border:0;margin:0;padding:0\"></body></html>"),
            "{html}"
        );
        assert_eq!(html.matches("<img").count(), 1);
        assert!(html.contains("<img src=\"https://t.example/o/T\" width=\"1\" height=\"1\" alt=\"\""));
    }

    #[test]
    fn pixel_goes_at_the_end_without_body_end() {
        for input in ["<html><body><p>truncated", "<p>fragment</p>"] {
            let (html, _, pixel) = rewrite(input, Some("https://t.example/o/T"));
            assert!(
                pixel && html.starts_with(input) && html.ends_with("padding:0\">"),
                "{html}"
            );
            assert_eq!(html.matches("<img").count(), 1);
        }
    }

    #[test]
    fn non_utf8_documents_keep_their_bytes() {
        let k = keyring();
        let mut t = tracker(&k);
        let input = b"<p>caf\xe9 \x80</p><a href=\"https://a.example/\xe9\">x</a></body>";
        let job = HtmlJob {
            encoding: encoding_rs::WINDOWS_1252,
            ..job(Some("https://t.example/o/T"))
        };
        let out = rewrite_html(input, &job, &mut t).unwrap();
        let prefix = b"<p>caf\xe9 \x80</p><a href=\"https://t.example/c/";
        assert!(out.html.starts_with(prefix));
        let token: Vec<u8> = out.html[prefix.len()..]
            .iter()
            .copied()
            .take_while(|&b| b != b'"')
            .collect();
        let token = String::from_utf8(token).unwrap();
        assert_eq!(k.verify(&token, 0).unwrap().url, "https://a.example/\u{e9}");
    }

    /// The allocation-free attribute lookup gives what lol_html's own lookups give (the
    /// handler also checks this on every link under test, so every rewrite test does).
    #[test]
    fn link_targets_are_what_lol_html_returns() {
        let cases: [&[u8]; 9] = [
            b"<a HREF=\"https://a.example/?x=1&amp;y=2\" Data-NoTrack>x</a>",
            b"<a href=https://a.example/ href='https://b.example/'>x</a>",
            b"<a href>x</a><a href=\"\">y</a><area hReF = ' https://c.example/ '>",
            b"<a data-notrack=\"\" href=\"https://a.example/\">x</a><a data-notrackx href=\"https://a.example/\">",
            b"<a href=\"\xef\xbb\xbfhttps://bom.example/\">x</a>",
            b"<a href=\"https://a.example/\xe9\xff\">latin-1 or invalid UTF-8</a>",
            b"<a\thref\n=\"https://a.example/\"/><a/href=\"https://d.example/\">",
            b"<svg><a href=\"https://svg.example/\"/></svg><a xlink:href=\"https://x.example/\">",
            b"<a href=\"https://a.example/\" hr\xc3\xa9f=\"x\">",
        ];
        for input in cases {
            for (encoding, exclude) in [
                (encoding_rs::UTF_8, "data-notrack"),
                (encoding_rs::WINDOWS_1252, "DATA-NOTRACK"),
                (encoding_rs::UTF_8, "hr\u{e9}f"),
                (encoding_rs::UTF_8, ""),
            ] {
                let job = HtmlJob {
                    encoding,
                    exclude_attribute: exclude,
                    ..job(None)
                };
                let mut seen = Vec::new();
                let settings = Settings::new()
                    .with_encoding(AsciiCompatibleEncoding::new(encoding).unwrap())
                    .append_element_content_handler(on(LINKS.as_ref().unwrap(), |el| {
                        seen.push((link_target(el, input, &job), link_target_allocating(el, &job)));
                        Ok(())
                    }));
                let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
                rewriter.write(input).unwrap();
                rewriter.end().unwrap();
                assert!(!seen.is_empty());
                for (fast, reference) in seen {
                    assert_eq!(fast, reference, "{:?} {exclude}", String::from_utf8_lossy(input));
                }
            }
        }
    }

    #[test]
    fn a_failed_rewrite_leaves_the_numbering_alone() {
        let k = keyring();
        let mut t = tracker(&k);
        // In strict mode lol_html refuses input whose parsing is ambiguous.
        let ambiguous = b"<a href=\"https://a.example/\">a</a><select><xmp><script>x</script></select>";
        assert!(rewrite_html(ambiguous, &job(None), &mut t).is_err());
        assert_eq!(t.next_index, 0);
    }
}
