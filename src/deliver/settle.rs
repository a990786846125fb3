//! What happens to outcomes: a delivery is written to the spool as soon as its job ends
//! (so a restart never delivers that recipient again); failures and deferrals wait for the
//! attempt's last job, then one DSN covers the failures (and, once, a delay notice the
//! deferrals), the retry is planned or the message expires, and the spool records it.
//!
//! Order matters for crash safety. A DSN is spooled before the recipients it reports are
//! marked failed: a crash in between sends the DSN twice, never zero times. Delivered
//! states of a job are durable before that job counts as done, so the record that ends the
//! attempt always comes after them in the spool; the last job's deliveries go in that
//! record itself (a message with one job costs one record: its Done).

use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use bytes::Bytes;

use super::dsn::{self, Action, DsnInput, RcptReport};
use super::engine::Deliverer;
use super::outcome::{Outcome, Reason};
use super::retry::{self, Next};
use crate::message::{BodyType, Envelope, Message, MessageId, Recipient};
use crate::observe::Event;
use crate::smtp::reply::Enhanced;
use crate::spool::{RcptState, Update};

/// What [`Deliverer::record_job`] filed.
struct Recorded {
    changes: Vec<(u32, RcptState)>,
    attempts: u32,
    due_ms: u64,
    /// This was the attempt's last job.
    last: bool,
}

/// The end of an attempt, decided without I/O; then written out.
struct Closing {
    envelope: Rc<Envelope>,
    chunks: Rc<[Bytes]>,
    attempts: u32,
    failed: Vec<(usize, Reason)>,
    deferred: Vec<(usize, Reason)>,
    /// Deferred recipients to tell about the delay (once per message).
    delay_notice: bool,
    /// `None`: every recipient is decided and the message is done.
    next_ms: Option<u64>,
    expires_ms: u64,
}

impl Deliverer {
    /// Applies a job's outcomes in a task of its own, so the connection goes on.
    pub(super) fn settle_job(self: &Rc<Self>, id: MessageId, host: String, outcomes: Vec<(usize, Outcome)>) {
        let me = self.clone();
        glommio::spawn_local(async move { me.apply_job(id, host, outcomes).await }).detach();
    }

    async fn apply_job(&self, id: MessageId, host: String, outcomes: Vec<(usize, Outcome)>) {
        let Some(recorded) = self.record_job(id, &host, outcomes) else {
            return;
        };
        if recorded.last {
            // The record that ends the attempt carries these states: one write, not two.
            return self.finish_attempt(id, recorded.changes).await;
        }
        if !recorded.changes.is_empty() {
            // Delivered recipients are durable now, not at the end of the attempt.
            let update = Update {
                rcpt_states: recorded.changes,
                attempts: recorded.attempts,
                next_attempt_ms: recorded.due_ms,
            };
            if let Err(e) = self.spool.update(id, update).await {
                self.log.emit(Event::Error {
                    what: format!("spool update of {id} failed: {e}"),
                });
            }
        }
        let last = {
            let mut q = self.queue.borrow_mut();
            let attempt = q.get_mut(&id).and_then(|e| e.attempt.as_mut());
            match attempt {
                Some(a) => {
                    a.jobs_left = a.jobs_left.saturating_sub(1);
                    a.jobs_left == 0
                }
                None => false,
            }
        };
        if last {
            self.finish_attempt(id, Vec::new()).await;
        }
    }

    /// Marks delivered recipients and files the rest in the attempt. When this is the
    /// attempt's last job (every other one has counted itself done), it is counted done
    /// here too and `last` says so.
    fn record_job(&self, id: MessageId, host: &str, outcomes: Vec<(usize, Outcome)>) -> Option<Recorded> {
        let mut q = self.queue.borrow_mut();
        let entry = q.get_mut(&id)?;
        let mut changes = Vec::new();
        for (i, outcome) in outcomes {
            match outcome {
                Outcome::Delivered(reply) => {
                    entry.states[i] = RcptState::Delivered;
                    changes.push((i as u32, RcptState::Delivered));
                    self.log.emit(Event::Delivered {
                        msg: id,
                        account: entry.envelope.account.clone(),
                        rcpt: entry.envelope.rcpts[i].addr.clone(),
                        host: host.to_string(),
                        reply,
                    });
                }
                Outcome::Failed(r) => {
                    if let Some(a) = entry.attempt.as_mut() {
                        a.failed.push((i, r));
                    }
                }
                Outcome::Deferred(r) => {
                    if let Some(a) = entry.attempt.as_mut() {
                        a.deferred.push((i, r));
                    }
                }
            }
        }
        let last = match entry.attempt.as_mut() {
            Some(a) if a.jobs_left <= 1 => {
                a.jobs_left = 0;
                true
            }
            _ => false,
        };
        Some(Recorded {
            changes,
            attempts: entry.attempts,
            due_ms: entry.due_ms,
            last,
        })
    }

    /// Files outcomes decided without a connection (DNS) in the message's attempt.
    pub(super) fn record(&self, id: MessageId, decided: Vec<(usize, Outcome)>) {
        let mut q = self.queue.borrow_mut();
        let Some(attempt) = q.get_mut(&id).and_then(|e| e.attempt.as_mut()) else {
            return;
        };
        for (i, outcome) in decided {
            match outcome {
                Outcome::Failed(r) => attempt.failed.push((i, r)),
                Outcome::Deferred(r) => attempt.deferred.push((i, r)),
                // Nothing is delivered without a connection.
                Outcome::Delivered(_) => {}
            }
        }
    }

    /// Every job of the attempt is in: bounce, plan the retry or finish, and write it down
    /// (with `delivered`, the last job's deliveries not yet written).
    pub(super) async fn finish_attempt(&self, id: MessageId, delivered: Vec<(u32, RcptState)>) {
        let now = self.clock.now_ms();
        let Some(closing) = self.close_attempt(id, now) else {
            return;
        };
        self.log_outcomes(id, &closing);
        if !closing.failed.is_empty() {
            self.notify(&closing, &closing.failed, Action::Failed, now).await;
        }
        if closing.delay_notice {
            self.notify(&closing, &closing.deferred, Action::Delayed, now)
                .await;
        }
        let mut changes = delivered;
        changes.extend(closing.failed.iter().map(|(i, _)| (*i as u32, RcptState::Failed)));
        match closing.next_ms {
            None => {
                self.queue.borrow_mut().remove(&id);
                if let Err(e) = self.spool.complete(id).await {
                    self.log.emit(Event::Error {
                        what: format!("spool completion of {id} failed: {e}"),
                    });
                }
            }
            Some(at) => {
                let update = Update {
                    rcpt_states: changes,
                    attempts: closing.attempts,
                    next_attempt_ms: at,
                };
                if let Err(e) = self.spool.update(id, update).await {
                    self.log.emit(Event::Error {
                        what: format!("spool update of {id} failed: {e}"),
                    });
                }
                let mut q = self.queue.borrow_mut();
                q.evict_data(&id);
                q.reschedule(id, at);
            }
        }
    }

    /// Takes the attempt out of the entry and decides, without I/O, what follows it.
    fn close_attempt(&self, id: MessageId, now: u64) -> Option<Closing> {
        let settings = self.settings();
        let (delivery, bounce) = (&settings.delivery, &settings.bounce);
        let mut q = self.queue.borrow_mut();
        let entry = q.get_mut(&id)?;
        let attempt = entry.attempt.take()?;
        // When the attempt before this one ended: this one was due a schedule step later.
        let previous_end_ms = match entry.attempts {
            0 => 0,
            n => entry
                .due_ms
                .saturating_sub(retry::delay_after(&delivery.retry_schedule, n).as_millis() as u64),
        };
        entry.attempts += 1;
        let envelope = entry.envelope.clone();
        let expires_ms = envelope
            .received_at_ms
            .saturating_add(delivery.message_max_age.as_millis() as u64);
        let mut failed = attempt.failed;
        let mut deferred = attempt.deferred;
        let mut next_ms = None;
        if !deferred.is_empty() {
            let plan = retry::plan(
                &delivery.retry_schedule,
                delivery.message_max_age,
                envelope.received_at_ms,
                entry.attempts,
                now,
            );
            match plan {
                Next::RetryAt(at) => next_ms = Some(at),
                Next::Expire => {
                    let attempts = entry.attempts;
                    failed.extend(deferred.drain(..).map(|(i, last)| (i, expired(attempts, &last))));
                }
            }
        }
        for (i, _) in &failed {
            entry.states[*i] = RcptState::Failed;
        }
        if !entry.states.contains(&RcptState::Pending) {
            next_ms = None;
        }
        let delay_notice = next_ms.is_some()
            && bounce.delay_notification_after.is_some_and(|after| {
                let threshold = envelope.received_at_ms + after.as_millis() as u64;
                // The first attempt to end past the threshold: once per message, and
                // the same one again after a restart.
                previous_end_ms < threshold && threshold <= now
            });
        Some(Closing {
            envelope,
            chunks: attempt.chunks,
            attempts: entry.attempts,
            failed,
            deferred,
            delay_notice,
            next_ms,
            expires_ms,
        })
    }

    fn log_outcomes(&self, id: MessageId, c: &Closing) {
        let account = &c.envelope.account;
        for (i, reason) in &c.failed {
            self.log.emit(Event::Failed {
                msg: id,
                account: account.clone(),
                rcpt: c.envelope.rcpts[*i].addr.clone(),
                reason: reason.text.clone(),
            });
        }
        for (i, reason) in &c.deferred {
            self.log.emit(Event::Deferred {
                msg: id,
                account: account.clone(),
                rcpt: c.envelope.rcpts[*i].addr.clone(),
                reason: reason.text.clone(),
                attempts: c.attempts,
                next_ms: c.next_ms.unwrap_or(0),
            });
        }
    }

    /// Sends a DSN about `rcpts` to the original sender, through this core's own queue:
    /// spooled as a new message of the same account from the null sender.
    async fn notify(&self, c: &Closing, rcpts: &[(usize, Reason)], action: Action, now: u64) {
        let original = &c.envelope;
        let settings = self.settings();
        let bounce = &settings.bounce;
        if !bounce.enabled || original.mail_from.is_empty() {
            return;
        }
        let reports: Vec<RcptReport<'_>> = rcpts
            .iter()
            .filter(|(i, _)| {
                let notify = original.rcpts[*i].notify;
                match action {
                    Action::Failed => dsn::wants_failure(notify),
                    Action::Delayed => dsn::wants_delay(notify, true),
                }
            })
            .map(|(i, reason)| {
                let rcpt = &original.rcpts[*i];
                RcptReport {
                    recipient: &rcpt.addr,
                    orcpt: rcpt.orcpt.as_ref().map(|o| format!("{};{}", o.addr_type, o.addr)),
                    action,
                    reason,
                }
            })
            .collect();
        if reports.is_empty() {
            return;
        }
        let dsn_id = self.ids.borrow_mut().next(now.saturating_mul(1000));
        let rcpt_count = reports.len();
        let bytes = dsn::build(&DsnInput {
            hostname: &self.hostname,
            dsn_id,
            to: &original.mail_from,
            envid: original.dsn_envid.as_deref(),
            ret: original.dsn_return,
            arrival_ms: original.received_at_ms,
            now_ms: now,
            retry_until_ms: Some(c.expires_ms),
            recipients: reports,
            original: &c.chunks,
            return_max_bytes: bounce.return_message_max_bytes,
        });
        let message = self.dsn_message(dsn_id, original, bytes, now);
        match self.spool.append(&message).await {
            Ok(()) => {
                self.log.emit(Event::Bounced {
                    msg: original.id,
                    account: original.account.clone(),
                    dsn: dsn_id,
                    action: match action {
                        Action::Failed => "failed",
                        Action::Delayed => "delayed",
                    },
                    rcpts: rcpt_count,
                });
                self.enqueue(message);
            }
            Err(e) => self.log.emit(Event::Error {
                what: format!("cannot spool the DSN for {}: {e}", original.id),
            }),
        }
    }

    fn dsn_message(&self, id: MessageId, original: &Envelope, bytes: Vec<u8>, now: u64) -> Message {
        let body_type = match bytes.is_ascii() {
            true => BodyType::SevenBit,
            false => BodyType::EightBitMime,
        };
        Message {
            envelope: Envelope {
                id,
                account: original.account.clone(),
                received_at_ms: now,
                source: IpAddr::V4(Ipv4Addr::LOCALHOST),
                helo: self.hostname.clone(),
                mail_from: String::new(),
                body_type,
                rcpts: vec![Recipient {
                    addr: original.mail_from.clone(),
                    ..Recipient::default()
                }],
                // The DSN goes to the original sender, whose address may need SMTPUTF8.
                smtputf8: !original.mail_from.is_ascii(),
                dsn_return: None,
                dsn_envid: None,
                auth_user: None,
            },
            trace: Bytes::new(),
            body: vec![Bytes::from(bytes)],
        }
    }
}

/// A deferral that ran out of time: RFC 3463 4.4.7, delivery time expired, with the last
/// reason kept for the sender.
fn expired(attempts: u32, last: &Reason) -> Reason {
    let mut reason = Reason::local(
        Enhanced::new(4, 4, 7),
        format!("expired after {attempts} attempts; last: {}", last.text),
    );
    reason.reply = last.reply.clone();
    reason.remote = last.remote.clone();
    reason
}
