//! The one outbound classifier: what one delivery attempt means for each recipient.
//!
//! Every decision of the form "delivered, retry later, or give up" on the outbound side is
//! made here and nowhere else, so the retry queue, the bounce writer and the logs agree.
//!
//! The rules, and why:
//! - The basic reply code decides: 2xx success, 4xx transient, 5xx permanent (RFC 5321
//!   §4.2.1). The enhanced code (RFC 3463) never overrides the class: its class must
//!   match the basic code's, and `smtp::reply::parse` drops one that does not, so a
//!   "451 5.7.1" arrives as a 4xx without enhanced code and is deferred. "The code wins."
//! - The one refinement: RFC 5321 §4.5.3.1.10 says a 552 to RCPT has historically meant
//!   "too many recipients" and should be treated as temporary. It is, unless the enhanced
//!   code names another cause (552 5.2.2 mailbox full, 552 5.3.4 too big), which is then
//!   taken at its word as permanent.
//! - MAIL refused: every recipient shares that fate (5xx failed, 4xx deferred).
//! - RCPT refused: that recipient alone (5xx failed, 4xx deferred).
//! - The data phase (DATA refused, or the reply to the final dot) decides for every
//!   recipient whose RCPT was accepted: 2xx delivered, 4xx deferred, 5xx failed.
//! - Greeting, EHLO/HELO or RSET refused, even with 5xx: deferred. Those replies are
//!   about this host and this client (a 554 greeting is a blocklist or an overloaded
//!   host), not about the message, and another MX or a later try may well take it.
//! - Connect errors, timeouts, I/O and protocol errors: deferred for every recipient not
//!   already decided (a 550 to RCPT before the connection dropped stays failed).
//! - A message this server cannot take as it is (8-bit body without 8BITMIME, non-ASCII
//!   address without SMTPUTF8, larger than its SIZE): failed. RFC 6152 §3 and RFC 6531
//!   §3.2 make this a delivery failure when the client does not downgrade, and corerelay
//!   does not; a retry would meet the same server days later and fail then, so the sender
//!   learns now.
//! - TLS: a failed handshake, or no STARTTLS where TLS is required: deferred (a policy
//!   or a certificate is fixed by people, in hours, not by the next MX in milliseconds).
//!
//! Every deferral and failure carries a [`Reason`]: its text for logs, and what a DSN
//! needs (RFC 3464 Status, Diagnostic-Code, Remote-MTA). A deferral's status is always of
//! class 4, a failure's of class 5.

use std::fmt;
use std::net::SocketAddr;

use super::connection::{AttemptError, Phase};
use crate::smtp::client::{TransactionResult, Unsendable};
use crate::smtp::reply::{Enhanced, Reply, Severity};

/// What one attempt means for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server's reply to the final dot, on one line.
    Delivered(String),
    /// Try again later; the reason names the remote host and what it said.
    Deferred(Reason),
    /// Give up and bounce; the reason names the remote host and what it said.
    Failed(Reason),
}

/// Why a recipient was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// One printable line naming the remote and what it said (logs, DSN text).
    pub text: String,
    /// RFC 3463 status for the DSN: class 4 for a deferral, 5 for a failure.
    pub status: Enhanced,
    /// The remote's reply on one line (`550 5.1.1 no such user`): the DSN's
    /// `Diagnostic-Code: smtp; …`.
    pub reply: Option<String>,
    /// The remote host's name: the DSN's `Remote-MTA: dns; …`.
    pub remote: Option<String>,
}

impl Reason {
    /// A reason decided here, not by a remote reply (DNS, expiry, local errors).
    pub fn local(status: Enhanced, text: impl Into<String>) -> Reason {
        Reason {
            text: bounded(text.into()),
            status,
            reply: None,
            remote: None,
        }
    }

    pub fn deferred(text: impl Into<String>) -> Outcome {
        Outcome::Deferred(Reason::local(Enhanced::new(4, 0, 0), text))
    }

    fn about(remote: Remote<'_>, status: Enhanced, text: String) -> Reason {
        Reason {
            text: bounded(text),
            status,
            reply: None,
            remote: (!remote.host.is_empty()).then(|| remote.host.to_string()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The remote end, as reasons name it: `mx.example.com[127.0.0.1]:2525`.
#[derive(Clone, Copy, Debug)]
pub struct Remote<'a> {
    /// The host name the address came from (MX or smarthost name); may be empty.
    pub host: &'a str,
    pub addr: SocketAddr,
}

impl fmt::Display for Remote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]:{}", self.host, self.addr.ip(), self.addr.port())
    }
}

/// The longest reason kept, in bytes: reasons go into the spool, logs and bounces, and a
/// remote reply may be 128 lines long.
pub const REASON_MAX_BYTES: usize = 512;

/// Per recipient, in order, from the result of one attempt on `remote`. `rcpt_count` is
/// the number of recipients the attempt was for; it sizes the answer when the attempt
/// failed before any recipient was tried.
pub fn classify(
    result: &Result<TransactionResult, AttemptError>,
    rcpt_count: usize,
    remote: Remote<'_>,
) -> Vec<Outcome> {
    match result {
        Ok(result) => from_result(result, None, rcpt_count, remote),
        Err(AttemptError::Interrupted { partial, cause }) => {
            from_result(partial, Some(cause), rcpt_count, remote)
        }
        Err(e) => vec![from_error(e, remote); rcpt_count],
    }
}

/// An attempt that ended before the transaction began (or whose cause is `e`).
fn from_error(e: &AttemptError, remote: Remote<'_>) -> Outcome {
    let text = format!("{remote}: {e}");
    match e {
        AttemptError::Unsendable(why) => Outcome::Failed(Reason::about(remote, unsendable_status(why), text)),
        // About the host, not the message: see the module doc.
        AttemptError::Refused(phase, reply) => Outcome::Deferred(said(remote, reply, *phase, false)),
        _ => Outcome::Deferred(Reason::about(remote, error_status(e), text)),
    }
}

/// RFC 3463 codes for a message a server cannot take as it is.
fn unsendable_status(why: &Unsendable) -> Enhanced {
    match why {
        Unsendable::EightBit => Enhanced::new(5, 6, 3),
        Unsendable::Binary => Enhanced::new(5, 6, 3),
        Unsendable::SmtpUtf8 => Enhanced::new(5, 6, 7),
        Unsendable::BadPath(_) => Enhanced::new(5, 1, 3),
        Unsendable::NoRecipients => Enhanced::new(5, 5, 1),
        Unsendable::TooLarge { .. } => Enhanced::new(5, 3, 4),
    }
}

/// RFC 3463 codes for attempts that broke: no answer (4.4.1), a bad connection (4.4.2),
/// a protocol error (4.5.0), TLS (4.7.5, cryptographic failure; 4.7.0 for "not offered").
fn error_status(e: &AttemptError) -> Enhanced {
    match e {
        AttemptError::Connect(_) | AttemptError::Timeout(Phase::Connect | Phase::Greeting) => {
            Enhanced::new(4, 4, 1)
        }
        AttemptError::Timeout(_) | AttemptError::Io(..) => Enhanced::new(4, 4, 2),
        AttemptError::Protocol(..) => Enhanced::new(4, 5, 0),
        AttemptError::Tls(_) => Enhanced::new(4, 7, 5),
        AttemptError::TlsUnavailable => Enhanced::new(4, 7, 0),
        AttemptError::Interrupted { cause, .. } => error_status(cause),
        AttemptError::Refused(..) | AttemptError::Unsendable(_) => Enhanced::new(4, 0, 0),
    }
}

fn from_result(
    r: &TransactionResult,
    cause: Option<&AttemptError>,
    rcpt_count: usize,
    remote: Remote<'_>,
) -> Vec<Outcome> {
    if !is_completion(&r.mail) {
        return vec![by_code(&r.mail, Phase::Mail, remote); rcpt_count];
    }
    (0..rcpt_count)
        .map(|i| match r.rcpts.get(i) {
            Some(Some(rcpt)) if is_completion(rcpt) => data_outcome(r, cause, remote),
            Some(Some(rcpt)) => rcpt_outcome(rcpt, remote),
            Some(None) => unanswered(r, cause, remote, "before this recipient was tried"),
            // The caller passed more recipients than the attempt had; they were not tried.
            None => Reason::deferred(format!("{remote}: recipient was not part of this attempt")),
        })
        .collect()
}

/// A recipient whose RCPT was accepted: the data phase decides.
fn data_outcome(r: &TransactionResult, cause: Option<&AttemptError>, remote: Remote<'_>) -> Outcome {
    match &r.data {
        Some(data) if is_completion(data) => Outcome::Delivered(bounded(data.to_string())),
        Some(data) => by_code(data, Phase::Data, remote),
        None => unanswered(r, cause, remote, "before the message was sent"),
    }
}

fn rcpt_outcome(rcpt: &Reply, remote: Remote<'_>) -> Outcome {
    let too_many_recipients = rcpt.code == 552 && rcpt.enhanced.is_none_or(|e| e == Enhanced::new(5, 5, 3));
    if too_many_recipients {
        return Outcome::Deferred(said(remote, rcpt, Phase::Rcpt, false));
    }
    by_code(rcpt, Phase::Rcpt, remote)
}

/// A command with no reply: the attempt broke (`cause`) or the server closed with 421.
fn unanswered(
    r: &TransactionResult,
    cause: Option<&AttemptError>,
    remote: Remote<'_>,
    when: &str,
) -> Outcome {
    let reason = match (cause, r.closing_reply()) {
        (Some(cause), _) => Reason::about(remote, error_status(cause), format!("{remote}: {cause}")),
        (None, Some(closing)) => {
            let mut reason = said(remote, closing, Phase::Rcpt, false);
            reason.text = bounded(format!("{remote} said: {closing} (closing the session {when})"));
            reason
        }
        (None, None) => Reason::about(
            remote,
            Enhanced::new(4, 4, 2),
            format!("{remote}: no reply {when}"),
        ),
    };
    Outcome::Deferred(reason)
}

fn by_code(reply: &Reply, phase: Phase, remote: Remote<'_>) -> Outcome {
    match reply.severity() {
        Severity::Permanent => Outcome::Failed(said(remote, reply, phase, true)),
        // A 2xx/3xx never reaches here (callers check); deferring is the safe reading.
        Severity::Transient | Severity::Positive => Outcome::Deferred(said(remote, reply, phase, false)),
    }
}

/// The reason for a remote's reply. The status is the reply's enhanced code, with its
/// class made to agree with the decision (a 554 greeting is deferred, so 4.7.1 not 5.7.1).
fn said(remote: Remote<'_>, reply: &Reply, phase: Phase, permanent: bool) -> Reason {
    let context = match phase {
        Phase::Greeting => "in its greeting".to_string(),
        phase => format!("in reply to {phase}"),
    };
    let class = if permanent { 5 } else { 4 };
    let status = match reply.enhanced {
        Some(e) => Enhanced::new(class, e.subject, e.detail),
        None => Enhanced::new(class, 0, 0),
    };
    let mut reason = Reason::about(remote, status, format!("{remote} said: {reply} ({context})"));
    reason.reply = Some(bounded(reply.to_string()));
    reason
}

/// The recipients of a transaction to send again at once, in a new transaction on the
/// same connection: refused as "too many recipients" (452, or 552 without another cause,
/// RFC 5321 §4.5.3.1.10) while another recipient was accepted, so the server was counting,
/// not refusing. Indexes into the transaction's recipients.
pub fn too_many_recipients(result: &TransactionResult) -> Vec<usize> {
    let accepted = result.rcpts.iter().flatten().any(is_completion);
    if !accepted || !is_completion(&result.mail) {
        return Vec::new();
    }
    let too_many = |r: &Reply| {
        let enhanced_says = r.enhanced.is_some_and(|e| e.subject == 5 && e.detail == 3);
        match r.code {
            452 => r.enhanced.is_none() || enhanced_says,
            552 => r.enhanced.is_none() || enhanced_says,
            _ => false,
        }
    };
    (0..result.rcpts.len())
        .filter(|&i| result.rcpts[i].as_ref().is_some_and(too_many))
        .collect()
}

fn is_completion(reply: &Reply) -> bool {
    reply.code / 100 == 2
}

/// One printable line of at most [`REASON_MAX_BYTES`]: control characters from the remote
/// text become spaces, and a long reason is cut at a character boundary.
fn bounded(reason: String) -> String {
    let printable = |c: char| if c.is_control() { ' ' } else { c };
    if reason.len() <= REASON_MAX_BYTES {
        return reason.chars().map(printable).collect();
    }
    let mut out = String::with_capacity(REASON_MAX_BYTES);
    for c in reason.chars() {
        if out.len() + c.len_utf8() > REASON_MAX_BYTES - '…'.len_utf8() {
            break;
        }
        out.push(printable(c));
    }
    out.push('…');
    out
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
