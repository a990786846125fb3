//! Per-account admission limits, checked on the account's owner core before a message is
//! spooled: accepted messages per second (a token bucket) and bytes queued for delivery.
//! Plain data with time passed in; the owner (`handoff::Owner`) holds one [`Admission`]
//! and asks it about every message.
//!
//! The replies name the reason, with RFC 3463 codes chosen by what the sender should do:
//!
//! - over the rate: `451 4.7.0` — a policy of this relay towards this account (class 7,
//!   "security or policy status"; 0: no more specific detail applies), temporary, so the
//!   sending service slows down and retries;
//! - over the queued bytes: `452 4.3.1` — the reply code of RFC 5321 for "insufficient
//!   system storage" with "mail system full" (X.3.1), scoped to the account in the text:
//!   its share of the relay's storage is used up until deliveries drain it.
//!
//! A core that cannot take more from another core in time answers `451 4.3.2` ("system not
//! accepting network messages"): see [`window_full`].

use std::collections::HashMap;

use super::Account;
use crate::smtp::reply::{Enhanced, Reply};

/// Why a message was refused; the label of `corerelay_account_throttled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    Rate,
    QueuedBytes,
    HandoffWindow,
}

impl Throttle {
    pub const ALL: [Throttle; 3] = [Throttle::Rate, Throttle::QueuedBytes, Throttle::HandoffWindow];

    pub fn label(self) -> &'static str {
        match self {
            Throttle::Rate => "rate",
            Throttle::QueuedBytes => "queued_bytes",
            Throttle::HandoffWindow => "handoff_window",
        }
    }
}

/// The reply when the owner core `owner` had no room in its handoff window in time.
pub fn window_full(owner: usize) -> Reply {
    Reply::new(
        451,
        Enhanced::new(4, 3, 2),
        format!("Core {owner} is not accepting more messages now (handoff window full); try again later"),
    )
}

/// A token bucket of `rate` messages per second, holding at most one second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens_milli: u64,
    at_ms: u64,
}

impl Bucket {
    fn full(rate: u32, now_ms: u64) -> Bucket {
        Bucket {
            tokens_milli: u64::from(rate) * 1000,
            at_ms: now_ms,
        }
    }

    /// Refills for the time since the last call and takes one token if there is one.
    fn take(&mut self, rate: u32, now_ms: u64) -> bool {
        let cap = u64::from(rate) * 1000;
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.tokens_milli = (self.tokens_milli + elapsed * u64::from(rate)).min(cap);
        self.at_ms = self.at_ms.max(now_ms);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// The admission state of the accounts one core owns.
#[derive(Debug, Default)]
pub struct Admission {
    buckets: HashMap<String, Bucket>,
}

impl Admission {
    /// Admits a message of `size_bytes` of `account`, which has `queued_bytes` queued on
    /// this core now, at `now_ms`; or the refusal with its reply. A message is never refused
    /// for its size alone: with nothing queued, even one above the limit is taken.
    pub fn admit(
        &mut self,
        account: &Account,
        size_bytes: u64,
        queued_bytes: u64,
        now_ms: u64,
    ) -> Result<(), (Throttle, Reply)> {
        let share = &account.share;
        if share.queued_max_bytes > 0
            && queued_bytes > 0
            && queued_bytes.saturating_add(size_bytes) > share.queued_max_bytes
        {
            let text = format!(
                "Account {} has {queued_bytes} bytes queued for delivery, its limit is {} bytes; try again later",
                account.id, share.queued_max_bytes
            );
            return Err((
                Throttle::QueuedBytes,
                Reply::new(452, Enhanced::new(4, 3, 1), text),
            ));
        }
        let rate = share.messages_per_second_max_count;
        if rate == 0 {
            return Ok(());
        }
        let bucket = self
            .buckets
            .entry(account.id.clone())
            .or_insert_with(|| Bucket::full(rate, now_ms));
        if bucket.take(rate, now_ms) {
            return Ok(());
        }
        let text = format!(
            "Account {} is over its limit of {rate} messages per second; try again later",
            account.id
        );
        Err((Throttle::Rate, Reply::new(451, Enhanced::new(4, 7, 0), text)))
    }

    /// Forgets accounts that are gone (a reload), so the table stays as long as the list.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.buckets.retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Share;
    use crate::config::SenderDomains;

    fn account(rate: u32, queued_max_bytes: u64) -> Account {
        Account {
            id: "shop".into(),
            networks: vec![],
            sender_domains: SenderDomains::Any,
            owner: 0,
            credentials: vec![],
            share: Share {
                messages_per_second_max_count: rate,
                queued_max_bytes,
                ..Share::default()
            },
        }
    }

    #[test]
    fn the_rate_allows_a_seconds_burst_then_refills() {
        let a = account(3, 0);
        let mut adm = Admission::default();
        let taken = (0..5).filter(|_| adm.admit(&a, 10, 0, 1_000).is_ok()).count();
        assert_eq!(taken, 3);
        let (why, reply) = adm.admit(&a, 10, 0, 1_100).unwrap_err();
        assert_eq!(why, Throttle::Rate);
        assert_eq!(
            reply.to_wire(),
            "451 4.7.0 Account shop is over its limit of 3 messages per second; try again later\r\n"
        );
        assert!(
            adm.admit(&a, 10, 0, 1_334).is_ok(),
            "a third of a second later: one more"
        );
        assert!(adm.admit(&a, 10, 0, 1_400).is_err());
        let later = (0..10).filter(|_| adm.admit(&a, 10, 0, 60_000).is_ok()).count();
        assert_eq!(later, 3, "never more than one second's worth at once");
        assert!(
            Admission::default().admit(&account(0, 0), 10, 0, 0).is_ok(),
            "0: no limit"
        );
    }

    #[test]
    fn queued_bytes_refuse_with_452_and_name_the_limit() {
        let a = account(0, 1000);
        let mut adm = Admission::default();
        assert!(adm.admit(&a, 400, 500, 0).is_ok());
        let (why, reply) = adm.admit(&a, 600, 500, 0).unwrap_err();
        assert_eq!(why, Throttle::QueuedBytes);
        assert_eq!(
            reply.to_wire(),
            "452 4.3.1 Account shop has 500 bytes queued for delivery, its limit is 1000 bytes; try again later\r\n"
        );
        assert!(
            adm.admit(&a, 5000, 0, 0).is_ok(),
            "nothing queued: taken whatever its size"
        );
        assert_eq!(window_full(1).to_wire().get(..9), Some("451 4.3.2"));
    }
}
