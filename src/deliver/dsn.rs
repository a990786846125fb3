//! Delivery status notifications (RFC 3464) as a pure function: what failed or is delayed,
//! for whom and why, in; the bytes of the notification message out.
//!
//! The message is a `multipart/report; report-type=delivery-status` (RFC 6522) with three
//! parts: a short text for people, the `message/delivery-status` fields (per message:
//! Reporting-MTA, Original-Envelope-Id, Arrival-Date; per recipient: Final-Recipient,
//! Original-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date,
//! Will-Retry-Until), and the original message's headers (`text/rfc822-headers`) or, with
//! `RET=FULL` and within a size bound, the whole message (`message/rfc822`).
//!
//! The DSN parameters a client gave (RFC 3461: RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT)
//! come from the envelope as `Option`s: absent means the RFC 3461 default, which corerelay
//! reads as NOTIFY=FAILURE (a delay notice goes to a recipient without NOTIFY only when the
//! operator turned delay notices on) and RET=HDRS.

use bytes::Bytes;

use super::outcome::Reason;
use crate::message::{DsnReturn, MessageId, Notify};

/// Whether a failure is reported for a recipient with this NOTIFY (absent: yes; all
/// false is NOTIFY=NEVER).
pub fn wants_failure(notify: Option<Notify>) -> bool {
    notify.is_none_or(|n| n.failure)
}

/// Whether a delay is reported: NOTIFY=DELAY asks for it; without NOTIFY it is the
/// operator's choice (`delay_by_default`).
pub fn wants_delay(notify: Option<Notify>, delay_by_default: bool) -> bool {
    match notify {
        Some(n) => n.delay,
        None => delay_by_default,
    }
}

/// The `Action` of one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
}

/// One recipient's entry.
#[derive(Clone, Debug)]
pub struct RcptReport<'a> {
    pub recipient: &'a str,
    /// RFC 3461 ORCPT as given (`rfc822;addr`).
    pub orcpt: Option<String>,
    pub action: Action,
    pub reason: &'a Reason,
}

/// Everything a notification is made of.
pub struct DsnInput<'a> {
    /// The relay's name (server.hostname): Reporting-MTA, From and Message-ID domain.
    pub hostname: &'a str,
    /// The notification's own message id (for Message-ID and the boundary).
    pub dsn_id: MessageId,
    /// The original message's envelope sender: the notification's recipient.
    pub to: &'a str,
    pub envid: Option<&'a str>,
    pub ret: Option<DsnReturn>,
    pub arrival_ms: u64,
    pub now_ms: u64,
    /// For delay notices: when corerelay gives up.
    pub retry_until_ms: Option<u64>,
    pub recipients: Vec<RcptReport<'a>>,
    /// The original message as sent onwards (trace header, then body).
    pub original: &'a [Bytes],
    /// A whole original larger than this comes back as headers only.
    pub return_max_bytes: usize,
}

/// The most header bytes of the original message returned.
pub const HEADERS_MAX_BYTES: usize = 64 << 10;

/// The notification message, CRLF line ends throughout.
pub fn build(input: &DsnInput<'_>) -> Vec<u8> {
    let boundary = format!("{}/{}", input.dsn_id, input.hostname);
    let delayed = input.recipients.iter().all(|r| r.action == Action::Delayed);
    let mut out = String::with_capacity(4096);
    let subject = match delayed {
        true => "Delayed Mail (still being retried)",
        false => "Undelivered Mail Returned to Sender",
    };
    push_lines(
        &mut out,
        &[
            &format!("From: Mail Delivery System <MAILER-DAEMON@{}>", input.hostname),
            &format!("To: <{}>", input.to),
            &format!("Subject: {subject}"),
            &format!("Date: {}", date(input.now_ms)),
            &format!("Message-ID: <{}.dsn@{}>", input.dsn_id, input.hostname),
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
            "Content-Type: multipart/report; report-type=delivery-status;",
            &format!("\tboundary=\"{boundary}\""),
            "",
            "This is a MIME-encapsulated message.",
            "",
        ],
    );
    human_part(&mut out, input, &boundary, delayed);
    status_part(&mut out, input, &boundary);
    let mut bytes = out.into_bytes();
    returned_part(&mut bytes, input, &boundary);
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    bytes
}

fn push_lines(out: &mut String, lines: &[&str]) {
    for line in lines {
        out.push_str(line);
        out.push_str("\r\n");
    }
}

fn human_part(out: &mut String, input: &DsnInput<'_>, boundary: &str, delayed: bool) {
    let mut text = format!("This is the mail system at host {}.\r\n\r\n", input.hostname);
    text.push_str(match delayed {
        true => {
            "Your message could not be delivered yet to the recipients below.\r\n\
                 It is still being retried; you do not need to send it again.\r\n"
        }
        false => {
            "I'm sorry to have to inform you that your message could not be delivered\r\n\
                  to one or more recipients. The reasons are below.\r\n"
        }
    });
    for r in &input.recipients {
        text.push_str(&format!("\r\n<{}>: {}\r\n", r.recipient, r.reason.text));
    }
    let encoding = if text.is_ascii() { "7bit" } else { "8bit" };
    push_lines(
        out,
        &[
            &format!("--{boundary}"),
            "Content-Type: text/plain; charset=utf-8",
            &format!("Content-Transfer-Encoding: {encoding}"),
            "",
        ],
    );
    out.push_str(&text);
    out.push_str("\r\n");
}

fn status_part(out: &mut String, input: &DsnInput<'_>, boundary: &str) {
    push_lines(
        out,
        &[
            &format!("--{boundary}"),
            "Content-Type: message/delivery-status",
            "",
            &format!("Reporting-MTA: dns; {}", input.hostname),
        ],
    );
    if let Some(envid) = input.envid {
        push_lines(out, &[&format!("Original-Envelope-Id: {}", field(envid))]);
    }
    push_lines(out, &[&format!("Arrival-Date: {}", date(input.arrival_ms))]);
    for r in &input.recipients {
        let address_type = if r.recipient.is_ascii() { "rfc822" } else { "utf-8" };
        out.push_str("\r\n");
        push_lines(
            out,
            &[&format!(
                "Final-Recipient: {address_type}; {}",
                field(r.recipient)
            )],
        );
        if let Some(orcpt) = &r.orcpt {
            push_lines(out, &[&format!("Original-Recipient: {}", field(orcpt))]);
        }
        let action = match r.action {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        };
        push_lines(
            out,
            &[
                &format!("Action: {action}"),
                &format!("Status: {}", r.reason.status),
            ],
        );
        if let Some(remote) = &r.reason.remote {
            push_lines(out, &[&format!("Remote-MTA: dns; {}", field(remote))]);
        }
        if let Some(reply) = &r.reason.reply {
            push_lines(out, &[&format!("Diagnostic-Code: smtp; {}", field(reply))]);
        }
        push_lines(out, &[&format!("Last-Attempt-Date: {}", date(input.now_ms))]);
        if let (Action::Delayed, Some(until)) = (r.action, input.retry_until_ms) {
            push_lines(out, &[&format!("Will-Retry-Until: {}", date(until))]);
        }
    }
    out.push_str("\r\n");
}

/// The original's headers, or all of it (RET=FULL within the bound).
fn returned_part(out: &mut Vec<u8>, input: &DsnInput<'_>, boundary: &str) {
    let size: usize = input.original.iter().map(Bytes::len).sum();
    let full = input.ret == Some(DsnReturn::Full) && size <= input.return_max_bytes;
    let returned = match full {
        true => input.original.concat(),
        false => header_block(input.original),
    };
    let content_type = if full {
        "message/rfc822"
    } else {
        "text/rfc822-headers"
    };
    let encoding = if returned.is_ascii() { "7bit" } else { "8bit" };
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&returned);
    if !returned.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
}

/// The header block of a message given as chunks: up to and including the line ending
/// of the last header (the blank line excluded), at most [`HEADERS_MAX_BYTES`].
pub fn header_block(message: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in message {
        let room = HEADERS_MAX_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            out.truncate(end + 2);
            return out;
        }
        if out.len() >= HEADERS_MAX_BYTES {
            break;
        }
    }
    // No blank line within the bound: end at the last whole line.
    match out.windows(2).rposition(|w| w == b"\r\n") {
        Some(end) => out.truncate(end + 2),
        None => out.clear(),
    }
    out
}

/// A value on one header-like line: no CR, LF or other control characters.
fn field(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// RFC 5322 date-time.
fn date(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc2822())
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "dsn_tests.rs"]
mod tests;
