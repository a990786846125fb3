//! The HTML body of `corerelay load --body html`: a newsletter as a sending service sends it,
//! so the relay's open and click tracking has real work per message.
//!
//! The body is `multipart/alternative`: a short `text/plain` part, then a quoted-printable
//! `text/html` part laid out in tables with inline styles (as email HTML is), with a link
//! about every 400 bytes (view in browser, logo, one per item, preferences, unsubscribe) and
//! a `</body>` for the open pixel. Quoted-printable, because that is how most HTML mail
//! travels and because the rewrite must then decode and re-encode it. The items are
//! repeated and the last one padded so the whole body is within a few bytes of the size
//! asked for (never less than one item).

use crate::rewrite::transfer::encode_quoted_printable;

/// The boundary between the parts. `=_` cannot occur in quoted-printable text, so it never
/// collides with the HTML part.
const BOUNDARY: &str = "=_corerelay-load-alternative";

/// The message's Content-Type header value.
pub const CONTENT_TYPE: &str = "multipart/alternative; boundary=\"=_corerelay-load-alternative\"";

/// The text part and the HTML part's headers.
const TEXT_PART: &str = "Our autumn collection is here: new colours and sizes in every range.\r\n\
See it at https://shop.load.example/autumn\r\n\
\r\n\
Unsubscribe: https://shop.load.example/unsubscribe\r\n";

/// The HTML up to the first item: the view-in-browser link and the logo.
const HTML_HEAD: &str = "<!DOCTYPE html>\r\n\
<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>Autumn collection</title></head>\r\n\
<body style=\"margin:0;padding:0;background:#f4f4f4\">\r\n\
<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"max-width:600px;margin:0 auto;background:#ffffff\">\r\n\
<tr><td style=\"padding:8px;font-size:11px;color:#888888;text-align:center\">\
<a href=\"https://shop.load.example/view?c=autumn&amp;utm_medium=email\" style=\"color:#888888\">View in your browser</a></td></tr>\r\n\
<tr><td style=\"padding:16px 24px\"><a href=\"https://shop.load.example/?utm_source=newsletter&amp;utm_medium=email\">\
<img src=\"https://shop.load.example/img/logo.png\" width=\"160\" height=\"40\" alt=\"Load Shop\" border=\"0\"></a></td></tr>\r\n";

/// The HTML after the last item: the preferences and unsubscribe links and `</body>`.
const HTML_FOOT: &str = "<tr><td style=\"padding:24px;font-size:11px;line-height:16px;color:#888888\">\
You receive this because you subscribed at shop.load.example. \
<a href=\"https://shop.load.example/preferences?utm_medium=email\" style=\"color:#888888\">Preferences</a> | \
<a href=\"https://shop.load.example/unsubscribe?utm_medium=email\" style=\"color:#888888\">Unsubscribe</a></td></tr>\r\n\
</table>\r\n\
</body></html>\r\n";

/// Plain words for the padding paragraph (no `=`, so quoted-printable keeps them as they are).
const WORDS: &str = "Free returns within thirty days and delivery in two working days on every order. ";

/// One item of the newsletter: a paragraph and its link.
fn item(n: usize) -> String {
    format!(
        "<tr><td style=\"padding:12px 24px;font-family:Helvetica,Arial,sans-serif;font-size:15px;line-height:22px;color:#333333\">\
         <p style=\"margin:0 0 8px\">Item {n}: our autumn collection is here, with new colours and sizes in every range.</p>\r\n\
         <a href=\"https://shop.load.example/items/{n}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=autumn\" \
         style=\"color:#0066cc\">See item {n}</a></td></tr>\r\n"
    )
}

/// The message body (everything after the header block) of about `size_bytes`.
pub fn message_body(size_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_bytes + 2048);
    out.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
             {TEXT_PART}\r\n--{BOUNDARY}\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&encode_quoted_printable(HTML_HEAD.as_bytes()));
    let mut tail = encode_quoted_printable(HTML_FOOT.as_bytes());
    tail.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut n = 0;
    loop {
        let next = encode_quoted_printable(item(n).as_bytes());
        if n > 0 && out.len() + next.len() + tail.len() > size_bytes {
            break;
        }
        out.extend_from_slice(&next);
        n += 1;
    }
    out.extend_from_slice(&padding(size_bytes.saturating_sub(out.len() + tail.len())));
    out.extend_from_slice(&tail);
    out
}

/// A paragraph of plain words whose encoded form is at most `room` bytes and close to it
/// (empty when there is too little room for one).
fn padding(room: usize) -> Vec<u8> {
    const MIN_ROOM_BYTES: usize = 24;
    let mut words = room.saturating_sub(16);
    while room >= MIN_ROOM_BYTES && words > 0 {
        let text: String = WORDS.chars().cycle().take(words).collect();
        let encoded = encode_quoted_printable(format!("<p>{}</p>\r\n", text.trim_end()).as_bytes());
        if encoded.len() <= room {
            return encoded;
        }
        words = words.saturating_sub(encoded.len() - room);
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::{CONTENT_TYPE, message_body};
    use mail_parser::{MessageParser, MimeHeaders};

    fn message(size: usize) -> Vec<u8> {
        let mut m = format!(
            "From: <load@load.example>\r\nTo: <sink@sink.example>\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
             Content-Type: {CONTENT_TYPE}\r\n\r\n"
        )
        .into_bytes();
        m.extend_from_slice(&message_body(size));
        m
    }

    #[test]
    fn html_body_is_a_newsletter_of_about_the_size_with_a_link_every_few_hundred_bytes() {
        for size in [2048, 20_480, 102_400] {
            let body = message_body(size);
            let within = size / 10;
            assert!(body.len().abs_diff(size) <= within, "{size} → {}", body.len());
            assert!(body.split(|&b| b == b'\n').all(|l| l.len() <= 78));

            let raw = message(size);
            let parsed = MessageParser::default().parse(&raw).expect("parses");
            let ct = parsed.content_type().expect("content type");
            assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("alternative")));
            assert_eq!(parsed.text_body.len(), 1);
            assert_eq!(parsed.html_body.len(), 1);
            let text = parsed.body_text(0).expect("text part");
            assert!(text.contains("https://shop.load.example/autumn"), "{text}");
            let html = parsed.body_html(0).expect("html part");
            assert!(html.trim_end().ends_with("</body></html>"), "{html}");
            // The decoded HTML is what was encoded: `&amp;` and `=` survive the round trip.
            assert!(html.contains("href=\"https://shop.load.example/items/0?utm_source=newsletter&amp;"));
            let links = html.matches("<a href=").count();
            assert!(
                links * 300 <= body.len() && body.len() <= links * 500,
                "{size}: {links} links in {} bytes",
                body.len()
            );
        }
    }

    #[test]
    fn a_tiny_size_still_gets_a_whole_newsletter() {
        let raw = message(0);
        let parsed = MessageParser::default().parse(&raw).expect("parses");
        let html = parsed.body_html(0).expect("html part");
        assert!(html.contains("See item 0") && html.contains("</body>"));
    }
}
