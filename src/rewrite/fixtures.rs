//! The fixture corpus (`tests/fixtures/mime/*.eml`) through the whole rewrite, checked
//! from the outside: the output parses; every byte outside the rewritten parts is the
//! received byte; every trackable link was rewritten and its token verifies to exactly the
//! original URL, in order; the rewritten parts differ from the originals only by the
//! tracking URLs and one pixel; the result is the same for any chunking of the input; and
//! DKIM signatures (RSA and Ed25519) over the output chunks verify with mail-auth.

use std::cell::RefCell;

use bytes::Bytes;
use mail_parser::{Encoding, MessageParser, MessagePart, MimeHeaders, PartType};

use super::links::decode_entities;
use super::{PassReason, RewriteContext, Rewritten, TokenKind, TrackingOptions, rewrite, transfer};
use crate::dkim::testkit::{self, Lcg};
use crate::message::MessageId;
use crate::rewrite::token::Keyring;

const BASE: &str = "https://t.example.com";

struct Case {
    file: &'static str,
    /// The URLs the tokens must carry, in document order.
    tracked: &'static [&'static str],
    pixel: bool,
    /// Why the first candidate part was passed through, and how many were.
    reason: Option<PassReason>,
    untouched: usize,
}

const CASES: &[Case] = &[
    Case {
        file: "alternative-qp.eml",
        tracked: &[
            "https://shop.example.com/reset?user=42&token=a1b2c3&lang=fr",
            "HTTPS://WWW.EXAMPLE.ORG/Deals#summer",
            "http://blog.example.org/?a=1&b=2",
            "https://shop.example.com/map?x=1&y=2",
            "https://shop.example.com/spaces",
        ],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "mixed-attachments.eml",
        tracked: &[
            "https://billing.example.com/invoices/2024-001?format=html&dl=1",
            "https://billing.example.com/pay",
        ],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "related-inline-images.eml",
        tracked: &[
            "https://news.example.com/articles/1?utm_source=mail&utm_medium=email",
            "https://news.example.com/articles/2",
        ],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "html-base64.eml",
        tracked: &["https://single.example.com/a?b=c&d=e"],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "latin1-qp.eml",
        tracked: &["https://recettes.example.fr/cr%C3%A8me?x=1&y=%E9"],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "windows1252-8bit.eml",
        tracked: &[
            "https://store.example.com/sale?ref=w1252",
            "HTTP://STORE.EXAMPLE.COM/",
        ],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "shift-jis-base64.eml",
        tracked: &["https://jp.example.co.jp/\u{30bb}\u{30fc}\u{30eb}?id=1&lang=ja"],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "nested-rfc822.eml",
        tracked: &[
            "https://fwd.example.com/note",
            "https://orig.example.com/page?a=1&b=2",
        ],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "no-body-end.eml",
        tracked: &["https://cut.example.com/x?y=1&z=2"],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "long-lines-7bit.eml",
        tracked: &[LONG_URL, LONG_URL, LONG_URL, LONG_URL],
        pixel: true,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "malformed-mime.eml",
        // mail-parser decodes the bare `=ZZ` leniently (as itself, like mail clients do), so
        // that part is rewritten; the unknown charset is passed through.
        tracked: &[
            "https://bad.example.com/qp",
            "https://ok.example.com/still-tracked",
        ],
        pixel: true,
        reason: Some(PassReason::UnknownCharset),
        untouched: 1,
    },
    Case {
        file: "plain-only.eml",
        tracked: &[],
        pixel: false,
        reason: None,
        untouched: 0,
    },
    Case {
        file: "iso-2022-jp.eml",
        tracked: &[],
        pixel: false,
        reason: Some(PassReason::UnsupportedCharset),
        untouched: 1,
    },
];

const LONG_URL: &str = "https://long.example.com/pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp?q=1&r=2";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/mime/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keyring() -> Keyring {
    Keyring::new(vec![(1, vec![0x11; 32]), (2, vec![0x22; 32])], 2).unwrap()
}

fn options() -> TrackingOptions {
    TrackingOptions {
        base_url: format!("{BASE}/"),
        exclude_domains: vec!["partner.example.net".into()],
        ..TrackingOptions::default()
    }
}

pub(super) fn context<'a>(
    options: &'a TrackingOptions,
    keyring: &'a Keyring,
    extra: &'a [(String, String)],
) -> RewriteContext<'a> {
    RewriteContext {
        options,
        keyring,
        account: "shop",
        message_id: MessageId::new(1_704_186_000_000_000, 1, 9),
        recipient: "bob@example.net",
        issued_at_unix_s: 1_704_186_000,
        extra_headers: extra,
    }
}

/// A leaf part, flattened from the part tree in document order.
struct Leaf {
    header: std::ops::Range<usize>,
    body: std::ops::Range<usize>,
    encoding: Encoding,
    charset: Option<String>,
    html: bool,
    /// mail-parser's (lenient) decoding, for bodies the strict decoder refuses.
    text: Option<Vec<u8>>,
}

fn leaves(raw: &[u8]) -> Vec<Leaf> {
    let msg = MessageParser::default().parse(raw).expect("parses");
    let mut out = Vec::new();
    collect(&msg.parts, &mut out);
    out
}

fn collect(parts: &[MessagePart<'_>], out: &mut Vec<Leaf>) {
    for p in parts {
        match &p.body {
            PartType::Multipart(_) => {}
            PartType::Message(m) if p.encoding == Encoding::None => collect(&m.parts, out),
            body => out.push(Leaf {
                text: match body {
                    PartType::Html(t) | PartType::Text(t) => Some(t.as_bytes().to_vec()),
                    _ => None,
                },
                header: p.offset_header as usize..p.offset_body as usize,
                body: p.offset_body as usize..p.offset_end as usize,
                encoding: p.encoding,
                charset: p
                    .content_type()
                    .and_then(|c| c.attribute("charset"))
                    .map(str::to_string),
                html: matches!(body, PartType::Html(_))
                    && !p.content_disposition().is_some_and(|d| d.is_attachment()),
            }),
        }
    }
}

/// The part's content; mail-parser's lenient decoding when the strict one refuses it (a
/// malformed fixture).
fn decoded(raw: &[u8], leaf: &Leaf) -> Vec<u8> {
    let body = &raw[leaf.body.clone()];
    match transfer::decode(leaf.encoding, body) {
        Some(d) => d.into_owned(),
        None => leaf.text.clone().unwrap_or_else(|| body.to_vec()),
    }
}

/// Every `<base>/<kind>/<token>` in `html`, verified, with its byte range.
fn tokens(html: &[u8], kind: &str, keyring: &Keyring) -> Vec<(std::ops::Range<usize>, super::Token)> {
    let prefix = format!("{BASE}/{kind}/");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = find(&html[from..], prefix.as_bytes()).map(|i| i + from) {
        let start = at + prefix.len();
        // base64url, a dot, base64url: a dot after that is the text's own punctuation.
        let b64 = |from: usize| {
            html[from..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || b"-_".contains(b))
                .count()
        };
        let payload = b64(start);
        let len = payload + 1 + b64(start + payload + 1);
        let text = std::str::from_utf8(&html[start..start + len]).unwrap();
        out.push((
            at..start + len,
            keyring.verify(text, 1_704_186_001).expect("token verifies"),
        ));
        from = start + len;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The raw `href` values of `<a>`/`<area>` in a decoded HTML part, in document order.
fn raw_hrefs(html: &[u8], charset: Option<&str>) -> Vec<String> {
    let encoding = super::charset::resolve(charset, html).unwrap();
    let found = RefCell::new(Vec::new());
    let settings = lol_html::Settings::new()
        .with_encoding(lol_html::AsciiCompatibleEncoding::new(encoding).unwrap())
        .append_element_content_handler(lol_html::element!("a[href], area[href]", |el| {
            found.borrow_mut().extend(el.get_attribute("href"));
            Ok(())
        }));
    let mut rw = lol_html::HtmlRewriter::new(settings, |_: &[u8]| {});
    rw.write(html).unwrap();
    rw.end().unwrap();
    found.into_inner()
}

/// `html` with each range replaced by its bytes (ranges sorted, not overlapping).
fn replace(html: &[u8], marks: &[(std::ops::Range<usize>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(html.len());
    let mut pos = 0;
    for (r, with) in marks {
        out.extend_from_slice(&html[pos..r.start]);
        out.extend_from_slice(with);
        pos = r.end;
    }
    out.extend_from_slice(&html[pos..]);
    out
}

/// Ranges of the quoted `href` values in the input that were tracked (`tracked` are
/// their decoded URLs, in order), quotes included.
fn tracked_href_ranges(
    html: &[u8],
    charset: Option<&str>,
    tracked: &[String],
) -> Vec<std::ops::Range<usize>> {
    let encoding = super::charset::resolve(charset, html).unwrap();
    let mut ranges = Vec::new();
    let mut cursor = 0;
    let mut want = tracked.iter().peekable();
    for raw in raw_hrefs(html, charset) {
        let decoded = decode_entities(&raw);
        let Some(next) = want.peek() else { break };
        if decoded.trim() != next.as_str() {
            continue;
        }
        want.next();
        let (encoded, _, _) = encoding.encode(&raw);
        let at = [b'"', b'\'']
            .iter()
            .filter_map(|q| {
                let quoted = [&[*q][..], &encoded, &[*q]].concat();
                find(&html[cursor..], &quoted).map(|i| (cursor + i, quoted.len()))
            })
            .min()
            .expect("href found");
        ranges.push(at.0..at.0 + at.1);
        cursor = at.0 + at.1;
    }
    assert!(
        want.next().is_none(),
        "some tracked URLs have no href in the part"
    );
    ranges
}

/// The output, stripped of extra headers, must equal the input outside rewritten parts.
fn check_untouched_bytes(input: &[u8], output: &[u8], rewritten: &[(Leaf, Leaf)]) {
    let (mut pos_in, mut pos_out) = (0, 0);
    for (a, b) in rewritten {
        assert_eq!(
            &input[pos_in..a.header.start],
            &output[pos_out..b.header.start],
            "bytes between parts"
        );
        pos_in = a.body.end;
        pos_out = b.body.end;
    }
    assert_eq!(
        &input[pos_in..],
        &output[pos_out..],
        "bytes after the last rewritten part"
    );
}

fn check_case(case: &Case, out: &Rewritten, input: &[u8], keyring: &Keyring) {
    let output = out.to_vec();
    assert_eq!(out.untouched_reason, case.reason, "reason");
    assert_eq!(out.parts_untouched, case.untouched, "parts passed through");
    assert_eq!(out.pixel, case.pixel, "pixel");
    assert_eq!(out.links, case.tracked.len(), "links");
    let (ins, outs) = (leaves(input), leaves(&output));
    assert_eq!(ins.len(), outs.len(), "the output has the same parts");
    let mut rewritten = Vec::new();
    let mut urls: Vec<String> = Vec::new();
    let mut pixels = 0;
    for (a, b) in ins.into_iter().zip(outs) {
        let (da, db) = (decoded(input, &a), decoded(&output, &b));
        if da == db {
            assert_eq!(
                input[a.header.clone()],
                output[b.header.clone()],
                "unchanged part, same header"
            );
            assert_eq!(
                input[a.body.clone()],
                output[b.body.clone()],
                "unchanged part, same bytes"
            );
            continue;
        }
        assert!(a.html, "only HTML body parts change");
        check_rewritten_header(&a, &b, &input[a.header.clone()], &output[b.header.clone()]);
        let clicks = tokens(&db, "c", keyring);
        let opens = tokens(&db, "o", keyring);
        for (i, (_, t)) in clicks.iter().enumerate() {
            assert_eq!(t.kind, TokenKind::Click);
            assert_eq!(
                t.link_index as usize,
                urls.len() + i,
                "links are numbered in document order"
            );
            assert_eq!(
                (t.account.as_str(), t.recipient.as_str()),
                ("shop", "bob@example.net")
            );
        }
        for (_, t) in &opens {
            assert_eq!((t.kind, t.url.as_str()), (TokenKind::Open, ""));
        }
        pixels += opens.len();
        let part_urls: Vec<String> = clicks.iter().map(|(_, t)| t.url.clone()).collect();
        // Only the link values and the pixel differ: nothing else was re-escaped, moved or
        // transcoded. The quoted values are compared, since lol_html writes `"` quotes.
        let mut out_marks: Vec<(std::ops::Range<usize>, &[u8])> = clicks
            .iter()
            .map(|(r, _)| (r.start - 1..r.end + 1, &b"\0"[..]))
            .collect();
        out_marks.extend(opens.iter().map(|(r, _)| (pixel_tag_range(&db, r), &b""[..])));
        out_marks.sort_by_key(|(r, _)| r.start);
        let in_marks: Vec<(std::ops::Range<usize>, &[u8])> =
            tracked_href_ranges(&da, a.charset.as_deref(), &part_urls)
                .into_iter()
                .map(|r| (r, &b"\0"[..]))
                .collect();
        assert_eq!(
            String::from_utf8_lossy(&replace(&da, &in_marks)),
            String::from_utf8_lossy(&replace(&db, &out_marks)),
            "{}: the part differs beyond links and pixel",
            case.file
        );
        urls.extend(part_urls);
        rewritten.push((a, b));
    }
    assert_eq!(urls, case.tracked, "tracked URLs, in order");
    assert_eq!(pixels, usize::from(case.pixel), "one pixel");
    check_untouched_bytes(input, &output, &rewritten);
}

/// The whole `<img …>` around a pixel token.
fn pixel_tag_range(html: &[u8], r: &std::ops::Range<usize>) -> std::ops::Range<usize> {
    let start = html[..r.start].iter().rposition(|&b| b == b'<').unwrap();
    let end = r.end + html[r.end..].iter().position(|&b| b == b'>').unwrap() + 1;
    start..end
}

fn check_rewritten_header(a: &Leaf, b: &Leaf, head_in: &[u8], head_out: &[u8]) {
    if a.encoding == b.encoding {
        assert_eq!(head_in, head_out, "a rewritten part keeps its header");
    } else {
        // Only a 7bit/8bit part whose lines grew too long changes, to quoted-printable.
        assert_eq!(
            (a.encoding, b.encoding),
            (Encoding::None, Encoding::QuotedPrintable)
        );
        let text = String::from_utf8_lossy(head_out).to_ascii_lowercase();
        assert_eq!(
            text.matches("content-transfer-encoding: quoted-printable")
                .count(),
            1,
            "{text}"
        );
    }
}

#[test]
fn every_fixture_is_rewritten_correctly_for_any_chunking() {
    let keyring = keyring();
    let options = options();
    let ctx = context(&options, &keyring, &[]);
    let mut rng = Lcg(2024);
    for case in CASES {
        let input = fixture(case.file);
        let whole = Bytes::from(input.clone());
        let out = rewrite(std::slice::from_ref(&whole), &ctx);
        check_case(case, &out, &input, &keyring);
        let bytes = out.to_vec();
        assert!(
            transfer::longest_line_len(&bytes) <= transfer::MAX_LINE_LEN_BYTES,
            "{}",
            case.file
        );
        for _ in 0..8 {
            let chunks = rng.split(&whole);
            let again = rewrite(&chunks, &ctx);
            assert_eq!(
                again.to_vec(),
                bytes,
                "{}: chunking changed the output",
                case.file
            );
        }
        if case.tracked.is_empty() && !case.pixel {
            assert_eq!(bytes, input, "{}: passed through byte for byte", case.file);
        }
    }
}

#[test]
fn unchanged_bytes_are_shared_with_the_received_chunks() {
    let keyring = keyring();
    let options = options();
    let input = Bytes::from(fixture("mixed-attachments.eml"));
    let out = rewrite(std::slice::from_ref(&input), &context(&options, &keyring, &[]));
    let range = input.as_ptr_range();
    let shared: usize = out
        .chunks
        .iter()
        .filter(|c| range.contains(&c.as_ptr()))
        .map(Bytes::len)
        .sum();
    // Everything but the HTML body part (about 260 bytes of 4.5 KB) is a slice of the input.
    assert!(shared > input.len() - 400, "{shared} of {}", input.len());
    assert_eq!(out.chunks.len(), 3, "prefix, rewritten part, suffix");
}

#[test]
fn dkim_signatures_over_the_output_chunks_verify() {
    let keyring = keyring();
    let options = options();
    let (rsa, rsa_record) = testkit::rsa_signer();
    let (ed, ed_record) = testkit::ed25519_signer();
    for case in CASES {
        let input = Bytes::from(fixture(case.file));
        let out = rewrite(std::slice::from_ref(&input), &context(&options, &keyring, &[]));
        let rsa_field = rsa.sign(&out.chunks).unwrap();
        let ed_field = ed.sign(&out.chunks).unwrap();
        let signed = [rsa_field.as_ref(), ed_field.as_ref(), &out.to_vec()].concat();
        let results = testkit::verify(&signed, &[(&rsa, &rsa_record), (&ed, &ed_record)]);
        assert_eq!(results, vec![true, true], "{}", case.file);
        // For the independent check with dkimpy (tests/dkim_crosscheck.py).
        if let Some(dir) = std::env::var_os("CORERELAY_DKIM_EXPORT_DIR") {
            let dir = std::path::Path::new(&dir);
            std::fs::write(dir.join(format!("{}.signed", case.file)), &signed).unwrap();
            let keys =
                format!("rsa._domainkey.example.com {rsa_record}\ned._domainkey.example.com {ed_record}\n");
            std::fs::write(dir.join("keys.txt"), keys).unwrap();
        }
    }
}

#[test]
fn plain_text_clicks_rewrite_text_parts_when_asked() {
    let keyring = keyring();
    let options = TrackingOptions {
        plain_text_clicks: true,
        ..options()
    };
    let input = fixture("plain-only.eml");
    let out = rewrite(&[Bytes::from(input.clone())], &context(&options, &keyring, &[]));
    assert_eq!((out.links, out.pixel, out.parts_rewritten), (2, false, 1));
    let output = out.to_vec();
    let leaf = &leaves(&output)[0];
    let text = decoded(&output, leaf);
    let urls: Vec<String> = tokens(&text, "c", &keyring)
        .into_iter()
        .map(|(_, t)| t.url)
        .collect();
    assert_eq!(
        urls,
        [
            "https://plain.example.com/a?b=1&c=2",
            "https://plain.example.com/wiki/A_(b)"
        ]
    );
    assert!(String::from_utf8_lossy(&text).contains("mailto:x@plain.example.com"));
    // HTML fixtures keep their plain-text alternative's bytes unless asked.
    let alt = fixture("alternative-qp.eml");
    let out = rewrite(&[Bytes::from(alt)], &context(&options, &keyring, &[]));
    assert_eq!(out.parts_rewritten, 2);
}

#[test]
fn one_click_unsubscribe_headers_are_prepended_signed_and_not_tracked() {
    let keyring = keyring();
    let options = options();
    let base_ctx = context(&options, &keyring, &[]);
    let extra: Vec<(String, String)> = super::one_click_unsubscribe_headers(&base_ctx).unwrap().to_vec();
    let ctx = context(&options, &keyring, &extra);
    let input = fixture("html-base64.eml");
    let out = rewrite(&[Bytes::from(input.clone())], &ctx);
    let output = out.to_vec();
    let head = String::from_utf8_lossy(&out.chunks[0]).to_string();
    assert!(
        head.starts_with("List-Unsubscribe: <https://t.example.com/u/"),
        "{head}"
    );
    assert!(head.ends_with("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    assert!(
        leaves(&output[out.chunks[0].len()..]).len() == 1,
        "the rest is the message"
    );
    let token = head.split("/u/").nth(1).unwrap().split('>').next().unwrap();
    let t = keyring.verify(token, 1_704_186_001).unwrap();
    assert_eq!(
        (t.kind, t.recipient.as_str()),
        (TokenKind::Unsubscribe, "bob@example.net")
    );
    let (ed, record) = testkit::ed25519_signer();
    let field = ed.sign(&out.chunks).unwrap();
    let h = String::from_utf8_lossy(&field).replace("\r\n\t", " ");
    assert!(
        h.contains("list-unsubscribe-post") || h.contains("List-Unsubscribe-Post"),
        "{h}"
    );
    assert_eq!(
        testkit::verify(&[field.as_ref(), &output].concat(), &[(&ed, &record)]),
        vec![true]
    );
}

#[test]
fn per_message_tracking_leaves_the_recipient_out() {
    let keyring = keyring();
    let options = TrackingOptions {
        per_recipient: false,
        ..options()
    };
    let input = Bytes::from(fixture("html-base64.eml"));
    let mut a = context(&options, &keyring, &[]);
    let out_a = rewrite(std::slice::from_ref(&input), &a);
    a.recipient = "carol@example.org";
    let out_b = rewrite(std::slice::from_ref(&input), &a);
    assert_eq!(
        out_a.to_vec(),
        out_b.to_vec(),
        "one rewrite serves every recipient"
    );
    let html = decoded(&out_a.to_vec(), &leaves(&out_a.to_vec())[0]);
    assert!(
        tokens(&html, "c", &keyring)
            .iter()
            .all(|(_, t)| t.recipient.is_empty())
    );
}

#[test]
fn switches_select_opens_and_clicks() {
    let keyring = keyring();
    let input = Bytes::from(fixture("alternative-qp.eml"));
    for (opens, clicks) in [(true, false), (false, true), (false, false)] {
        let options = TrackingOptions {
            opens,
            clicks,
            ..options()
        };
        let out = rewrite(std::slice::from_ref(&input), &context(&options, &keyring, &[]));
        assert_eq!(out.pixel, opens);
        assert_eq!(out.links > 0, clicks);
        if !opens && !clicks {
            assert_eq!(out.to_vec(), input, "tracking off: untouched");
            assert_eq!(out.chunks.len(), 1);
        }
    }
}

#[test]
fn expiry_is_carried_in_the_tokens() {
    let keyring = keyring();
    let options = TrackingOptions {
        expiry: Some(std::time::Duration::from_secs(3600)),
        ..options()
    };
    let input = Bytes::from(fixture("html-base64.eml"));
    let out = rewrite(std::slice::from_ref(&input), &context(&options, &keyring, &[]));
    let html = decoded(&out.to_vec(), &leaves(&out.to_vec())[0]);
    let (_, t) = tokens(&html, "c", &keyring).remove(0);
    assert_eq!(t.expires_at_unix_s, Some(1_704_186_000 + 3600));
    let text = String::from_utf8_lossy(&html).to_string();
    let token = text.split("/c/").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(
        keyring.verify(token, 1_704_186_000 + 3600),
        Err(super::TokenError::Expired)
    );
}

#[test]
fn mime_bombs_pass_through_untouched() {
    let keyring = keyring();
    let options = options();
    let ctx = context(&options, &keyring, &[]);
    // Too many parts.
    let mut many = String::from("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
    for _ in 0..super::MAX_MIME_PARTS_COUNT + 1 {
        many.push_str("--b\r\nContent-Type: text/html\r\n\r\n<a href=\"https://a.example/\">x</a>\r\n");
    }
    many.push_str("--b--\r\n");
    let out = rewrite(&[Bytes::from(many.clone())], &ctx);
    assert_eq!(out.untouched_reason, Some(PassReason::TooManyParts));
    assert_eq!(out.to_vec(), many.as_bytes());
    // Nested deeper than allowed: the innermost HTML is left alone, the outer one is not.
    let mut nested = String::from("<a href=\"https://deep.example/\">x</a>\r\n");
    // mail-parser folds one of the levels into its parent, hence the margin.
    for depth in 0..super::MAX_MESSAGE_NESTING_DEPTH + 3 {
        let (head, tail) = if depth == 0 {
            ("Content-Type: text/html\r\n\r\n".to_string(), String::new())
        } else {
            ("Content-Type: message/rfc822\r\n\r\n".to_string(), String::new())
        };
        nested = format!("From: n{depth}@example.com\r\n{head}{nested}{tail}");
    }
    let top = format!(
        "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=t\r\n\r\n--t\r\nContent-Type: text/html\r\n\r\n\
         <a href=\"https://top.example/\">t</a>\r\n--t\r\nContent-Type: message/rfc822\r\n\r\n{nested}\r\n--t--\r\n"
    );
    let out = rewrite(&[Bytes::from(top)], &ctx);
    assert_eq!(out.untouched_reason, Some(PassReason::TooDeep));
    assert_eq!(out.links, 1);
}

#[test]
fn garbage_is_passed_through() {
    let keyring = keyring();
    let options = options();
    let ctx = context(&options, &keyring, &[]);
    for junk in [
        &b""[..],
        b"\r\n\r\n",
        b"\x00\x01\x02 not a message",
        b"<html><a href=\"https://x.example/\">",
    ] {
        let out = rewrite(&[Bytes::copy_from_slice(junk)], &ctx);
        assert_eq!(out.to_vec(), junk, "{junk:?}");
        assert_eq!(out.links, 0);
    }
}

#[test]
fn a_body_that_does_not_decode_strictly_passes_through() {
    let keyring = keyring();
    let options = options();
    let ctx = context(&options, &keyring, &[]);
    // Not UTF-8, so the part is decoded here, strictly, and `=ZZ` is refused.
    let message = "From: a@example.com\r\nContent-Type: text/html; charset=iso-8859-1\r\n\
                   Content-Transfer-Encoding: quoted-printable\r\n\r\n<a href=3D\"https://a.example/\">caf=E9 =ZZ</a>\r\n";
    let out = rewrite(&[Bytes::from_static(message.as_bytes())], &ctx);
    assert_eq!(out.untouched_reason, Some(PassReason::MalformedTransferEncoding));
    assert_eq!((out.links, out.parts_untouched), (0, 1));
    assert_eq!(out.to_vec(), message.as_bytes());
}

#[test]
fn damaged_messages_never_panic_and_are_never_lost() {
    let keyring = keyring();
    let options = TrackingOptions {
        plain_text_clicks: true,
        ..options()
    };
    let ctx = context(&options, &keyring, &[]);
    let mut rng = Lcg(99);
    for case in CASES {
        let input = fixture(case.file);
        for round in 0..40 {
            let damaged = damage(
                &input,
                round,
                &mut rng,
                b"\r\n--alt-b1\r\nContent-Type: text/html\r\n\r\n<a href=\"https://x.example/\">",
            );
            let damaged = Bytes::from(damaged);
            let out = rewrite(&rng.split(&damaged), &ctx);
            if out.links == 0 && !out.pixel {
                assert_eq!(
                    out.to_vec(),
                    damaged,
                    "{} round {round}: untouched means byte for byte",
                    case.file
                );
            } else {
                assert!(out.len() > damaged.len(), "{} round {round}", case.file);
            }
        }
    }
}

/// A damaged copy of `input` (round by round: truncated, bytes overwritten, a run cut out, or
/// `inserted` spliced in), for the tests that a rewrite survives malformed mail.
pub(super) fn damage(input: &[u8], round: usize, rng: &mut Lcg, inserted: &[u8]) -> Vec<u8> {
    let mut damaged = input.to_vec();
    match round % 4 {
        0 => damaged.truncate(rng.below(input.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(damaged.len());
                damaged[at] = b"\r\n-=<>\"&\x00\xff"[rng.below(10)];
            }
        }
        2 => {
            let at = rng.below(damaged.len());
            let len = rng.below(200).min(damaged.len() - at);
            damaged.drain(at..at + len);
        }
        _ => {
            let at = rng.below(damaged.len());
            damaged.splice(at..at, inserted.iter().copied());
        }
    }
    damaged
}
