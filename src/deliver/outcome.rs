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
//!   address without SMTPUTF8): failed. RFC 6152 §3 and RFC 6531 §3.2 make this a
//!   delivery failure when the client does not downgrade, and corerelay does not; a
//!   retry would meet the same server days later and fail then, so the sender learns now.

use std::fmt;
use std::net::SocketAddr;

use super::connection::{AttemptError, Phase};
use crate::smtp::client::TransactionResult;
use crate::smtp::reply::{Enhanced, Reply, Severity};

/// What one attempt means for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server's reply to the final dot, on one line.
    Delivered(String),
    /// Try again later; the reason names the remote host and what it said.
    Deferred(String),
    /// Give up and bounce; the reason names the remote host and what it said.
    Failed(String),
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
    match e {
        AttemptError::Unsendable(_) => Outcome::Failed(bounded(format!("{remote}: {e}"))),
        // About the host, not the message: see the module doc.
        AttemptError::Refused(phase, reply) => Outcome::Deferred(said(remote, reply, *phase)),
        _ => Outcome::Deferred(bounded(format!("{remote}: {e}"))),
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
            None => Outcome::Deferred(format!("{remote}: recipient was not part of this attempt")),
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
        return Outcome::Deferred(said(remote, rcpt, Phase::Rcpt));
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
        (Some(cause), _) => format!("{remote}: {cause}"),
        (None, Some(closing)) => format!("{remote} said: {closing} (closing the session {when})"),
        (None, None) => format!("{remote}: no reply {when}"),
    };
    Outcome::Deferred(bounded(reason))
}

fn by_code(reply: &Reply, phase: Phase, remote: Remote<'_>) -> Outcome {
    let reason = said(remote, reply, phase);
    match reply.severity() {
        Severity::Permanent => Outcome::Failed(reason),
        // A 2xx/3xx never reaches here (callers check); deferring is the safe reading.
        Severity::Transient | Severity::Positive => Outcome::Deferred(reason),
    }
}

fn said(remote: Remote<'_>, reply: &Reply, phase: Phase) -> String {
    let context = match phase {
        Phase::Greeting => "in its greeting".to_string(),
        phase => format!("in reply to {phase}"),
    };
    bounded(format!("{remote} said: {reply} ({context})"))
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
