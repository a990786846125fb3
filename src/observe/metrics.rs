//! Metrics: one table declares every metric corerelay exports — name, kind, unit, help —
//! and each core resolves its handles once at start, labelled with its core number, so
//! the hot path only bumps an atomic (about 10 ns) and never looks a metric up by name.
//!
//! The table ([`METRICS`]) is also the documentation: `corerelay metrics` prints it, and
//! README's metrics section is generated from it. The families that follow the log's
//! event vocabulary are counted in [`CoreMetrics::record`], called for every log event,
//! so logs and counters can never disagree about what happened.

use std::collections::HashMap;

use metrics::{Counter, Gauge, Histogram, Unit};

use super::log::Event;
use crate::smtp::command::CommandKind;

/// What kind of metric a table row declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    /// Labels besides `core`, which every corerelay metric has.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// Declares the table and the per-core handle struct from one list, so they cannot drift:
/// `per_core` rows become fields of [`Core`] (labelled `core` only); `labelled` rows carry
/// more labels and are resolved by their owners (e.g. [`AccountCounters`]).
macro_rules! metrics_table {
    (
        per_core { $( $field:ident : $kind:ident, $name:literal, $unit:ident, $help:literal; )* }
        labelled { $( $lkind:ident, $lname:literal, $lunit:ident, [$($label:literal),*], $lhelp:literal; )* }
    ) => {
        /// Every metric corerelay exports.
        pub const METRICS: &[MetricDef] = &[
            $( MetricDef { name: $name, kind: Kind::$kind, unit: Unit::$unit, labels: &[], help: $help }, )*
            $( MetricDef { name: $lname, kind: Kind::$lkind, unit: Unit::$lunit, labels: &[$($label),*], help: $lhelp }, )*
        ];

        /// The handles of one core that carry no label but `core`.
        pub struct Core {
            $( pub $field: handle_type!($kind), )*
        }

        impl Core {
            fn new(core: &str) -> Core {
                Core {
                    $( $field: handle!($kind, $name, core), )*
                }
            }
        }
    };
}

macro_rules! handle_type {
    (Counter) => {
        Counter
    };
    (Gauge) => {
        Gauge
    };
    (Histogram) => {
        Histogram
    };
}

macro_rules! handle {
    (Counter, $name:literal, $core:expr) => { metrics::counter!($name, "core" => $core.to_string()) };
    (Gauge, $name:literal, $core:expr) => { metrics::gauge!($name, "core" => $core.to_string()) };
    (Histogram, $name:literal, $core:expr) => { metrics::histogram!($name, "core" => $core.to_string()) };
}

metrics_table! {
    per_core {
        connections_total: Counter, "corerelay_connections_total", Count,
            "SMTP connections accepted.";
        connections_open: Gauge, "corerelay_connections_open", Count,
            "SMTP connections open now.";
        connections_refused_total: Counter, "corerelay_connections_refused_total", Count,
            "SMTP connections refused with 421 at a connection limit (per core or per client address).";
        smtp_replies_positive_total: Counter, "corerelay_smtp_replies_positive_total", Count,
            "SMTP replies sent with a 2xx or 3xx code (one per command answered, plus greetings).";
        smtp_replies_transient_total: Counter, "corerelay_smtp_replies_transient_total", Count,
            "SMTP replies sent with a 4xx code.";
        smtp_replies_permanent_total: Counter, "corerelay_smtp_replies_permanent_total", Count,
            "SMTP replies sent with a 5xx code.";
        tls_handshakes_in_total: Counter, "corerelay_tls_handshakes_in_total", Count,
            "Inbound TLS handshakes completed (STARTTLS and implicit TLS).";
        tls_handshakes_in_failed_total: Counter, "corerelay_tls_handshakes_in_failed_total", Count,
            "Inbound TLS handshakes that failed or timed out.";
        messages_accepted_total: Counter, "corerelay_messages_accepted_total", Count,
            "Messages acknowledged with 250 on this core (as acceptor).";
        messages_accepted_bytes_total: Counter, "corerelay_messages_accepted_bytes_total", Bytes,
            "Bytes of messages acknowledged with 250 on this core.";
        messages_rejected_total: Counter, "corerelay_messages_rejected_total", Count,
            "MAIL commands and messages refused (account identification, header From, spool).";
        messages_spooled_total: Counter, "corerelay_messages_spooled_total", Count,
            "Messages written to this core's spool (as owner).";
        delivery_attempts_total: Counter, "corerelay_delivery_attempts_total", Count,
            "Delivery transactions started towards a remote host.";
        bounces_total: Counter, "corerelay_bounces_total", Count,
            "Delivery status notifications (failed or delayed) queued for senders.";
        log_dropped_total: Counter, "corerelay_log_dropped_total", Count,
            "Log records dropped because the core's log ring was full.";
        log_write_failed_total: Counter, "corerelay_log_write_failed_total", Count,
            "Log records lost because the core's log file could not be written.";
        spool_recovered_messages: Gauge, "corerelay_spool_recovered_messages", Count,
            "Live messages this core recovered from its spool at start.";
        spool_recovery_corrupt_total: Counter, "corerelay_spool_recovery_corrupt_total", Count,
            "Damaged spool records detected and skipped at start.";
        queue_messages: Gauge, "corerelay_queue_messages", Count,
            "Messages queued for delivery on this core (ready, scheduled or in flight).";
        spool_segments: Gauge, "corerelay_spool_segments", Count,
            "Segment files this core's spool holds.";
        spool_live_messages: Gauge, "corerelay_spool_live_messages", Count,
            "Messages in this core's spool not yet finished.";
        spool_bytes: Gauge, "corerelay_spool_bytes", Bytes,
            "Bytes written in this core's spool segments.";
        spool_commits_total: Counter, "corerelay_spool_commits_total", Count,
            "Group commits (one write and one fdatasync each); records/commits is the mean group size.";
        spool_records_total: Counter, "corerelay_spool_records_total", Count,
            "Records made durable by group commits.";
        spool_express_records_total: Counter, "corerelay_spool_express_records_total", Count,
            "Of corerelay_spool_records_total, records made durable by the express stream (messages of accounts with nothing else waiting for a commit, and their progress).";
        spool_segments_prepared_total: Counter, "corerelay_spool_segments_prepared_total", Count,
            "Free segment files written full of zeros ahead of need (spool.prepared_segment_count), so commits into them change no metadata.";
        spool_segments_fresh_total: Counter, "corerelay_spool_segments_fresh_total", Count,
            "Segments started as new empty files because no reclaimed or prepared file was ready (commits into them cost more).";
        spool_commits_blocking_total: Counter, "corerelay_spool_commits_blocking_total", Count,
            "Of corerelay_spool_commits_total, express commits written and synced with blocking system calls within spool.express_blocking_budget_ms.";
        delivery_transaction_seconds: Histogram, "corerelay_delivery_transaction_seconds", Seconds,
            "Time of one outbound SMTP transaction, MAIL to the reply after the data.";
        tls_handshakes_out_total: Counter, "corerelay_tls_handshakes_out_total", Count,
            "Outbound connections that negotiated STARTTLS.";
        executor_stalls_total: Counter, "corerelay_executor_stalls_total", Count,
            "Times the core's watchdog timer woke 20 ms or more late: some task held the core that long.";
        executor_lateness_seconds: Histogram, "corerelay_executor_lateness_seconds", Seconds,
            "How late the core's 5 ms watchdog timer woke (scheduling delay of the executor).";
        dns_lookups_total: Counter, "corerelay_dns_lookups_total", Count,
            "DNS lookups (MX and addresses) asked of the core's resolver, cache hits included.";
        dns_failures_total: Counter, "corerelay_dns_failures_total", Count,
            "DNS lookups that failed temporarily (timeout, SERVFAIL, network).";
        dns_lookup_seconds: Histogram, "corerelay_dns_lookup_seconds", Seconds,
            "Time of a DNS lookup; answers from the core's cache fall in the lowest buckets.";
        tracking_bad_tokens_total: Counter, "corerelay_tracking_bad_tokens_total", Count,
            "Tracking requests refused because the token did not verify (forged, altered, expired).";
        tracking_links_total: Counter, "corerelay_tracking_links_total", Count,
            "Links replaced by tracking URLs in delivered copies.";
        tracking_pixels_total: Counter, "corerelay_tracking_pixels_total", Count,
            "Open pixels added to delivered copies.";
        rewrite_passed_through_total: Counter, "corerelay_rewrite_passed_through_total", Count,
            "Copies of tracked accounts' messages sent on unmodified because a part could not be rewritten safely.";
        dkim_signatures_total: Counter, "corerelay_dkim_signatures_total", Count,
            "DKIM signatures added to outgoing copies.";
        dkim_failures_total: Counter, "corerelay_dkim_failures_total", Count,
            "Outgoing copies a DKIM key failed to sign (sent unsigned by that key).";
        transforms_lent_total: Counter, "corerelay_transforms_lent_total", Count,
            "Transforms (tracking rewrite and DKIM signing) of this core's messages sent to another core to do.";
        transforms_borrowed_total: Counter, "corerelay_transforms_borrowed_total", Count,
            "Transforms this core did for messages another core owns, with CPU its own work left unused.";
        transform_lend_timeouts_total: Counter, "corerelay_transform_lend_timeouts_total", Count,
            "Lent transforms not back within lending.timeout_ms, then done by the owner itself.";
        lend_inflight_messages: Gauge, "corerelay_lend_inflight_messages", Count,
            "Transforms this core has in flight at other cores.";
        lend_window_max_messages: Gauge, "corerelay_lend_window_max_messages", Count,
            "The bound of the transforms one core may have in flight at one other core (lending.window_count).";
        spool_append_seconds: Histogram, "corerelay_spool_append_seconds", Seconds,
            "Time from handing a message to the owner's spool to its durable acknowledgement (group commit wait, write and fdatasync).";
        handoff_inflight_messages: Gauge, "corerelay_handoff_inflight_messages", Count,
            "Messages this core (as acceptor) has handed to owner cores, itself included, and not yet had answered.";
        handoff_inflight_bytes: Gauge, "corerelay_handoff_inflight_bytes", Bytes,
            "Bytes of the messages in corerelay_handoff_inflight_messages.";
        handoff_window_max_messages: Gauge, "corerelay_handoff_window_max_messages", Count,
            "The bound of each (acceptor, owner) handoff window in messages (server.handoff_window_max_count).";
        handoff_window_max_bytes: Gauge, "corerelay_handoff_window_max_bytes", Bytes,
            "The bound of each (acceptor, owner) handoff window in bytes (server.handoff_window_max_bytes).";
        spool_fsync_seconds: Histogram, "corerelay_spool_fsync_seconds", Seconds,
            "Time of one group commit's fdatasync alone (corerelay_spool_append_seconds adds the wait for the batch and the write).";
        spool_commit_records: Histogram, "corerelay_spool_commit_records", Count,
            "Records made durable by one group commit (one fdatasync): the group-commit size.";
        dns_cache_hits_total: Counter, "corerelay_dns_cache_hits_total", Count,
            "DNS queries (MX, A, AAAA) answered from the core's cache, negative answers included, without asking a nameserver.";
        events_dropped_total: Counter, "corerelay_events_dropped_total", Count,
            "Tracking event records (opens, clicks, unsubscribes) dropped because the core's event ring was full.";
    }
    labelled {
        Counter, "corerelay_account_accepted_total", Count, ["account"],
            "Messages of an account acknowledged with 250.";
        Counter, "corerelay_account_rejected_total", Count, ["account"],
            "Messages of an account refused after identification (header From, spool).";
        Counter, "corerelay_account_delivered_total", Count, ["account"],
            "Recipients of an account's messages delivered (2xx from the remote).";
        Counter, "corerelay_account_deferred_total", Count, ["account"],
            "Recipients of an account's messages deferred for a retry.";
        Counter, "corerelay_account_failed_total", Count, ["account"],
            "Recipients of an account's messages failed permanently (5xx or expiry).";
        Counter, "corerelay_account_opens_total", Count, ["account"],
            "Tracking pixels fetched for an account's messages.";
        Counter, "corerelay_account_clicks_total", Count, ["account"],
            "Tracked links followed in an account's messages.";
        Counter, "corerelay_account_unsubscribes_total", Count, ["account"],
            "One-click unsubscribes posted for an account's messages.";
        Counter, "corerelay_account_throttled_total", Count, ["account", "reason"],
            "Messages of an account refused by a limit: reason rate (451 4.7.0), queued_bytes (452 4.3.1) or handoff_window (451 4.3.2).";
        Gauge, "corerelay_account_core", Count, ["account"],
            "The core that owns the account (set by that core only).";
        Gauge, "corerelay_account_dedicated", Count, ["account"],
            "1 when no other account is placed on the account's core (dedicated = true), else 0; set by the owner core.";
        Gauge, "corerelay_account_weight", Count, ["account"],
            "The account's weight at every DRR stage of its owner core.";
        Gauge, "corerelay_account_queued_bytes", Bytes, ["account"],
            "Bytes of the account's messages queued for delivery on its owner core.";
        Gauge, "corerelay_account_queued_max_bytes", Bytes, ["account"],
            "The account's limit on queued bytes (queued_max_bytes; 0: none).";
        Gauge, "corerelay_account_accept_rate_max", CountPerSecond, ["account"],
            "The account's limit on accepted messages per second (messages_per_second_max_count; 0: none).";
        Counter, "corerelay_smtp_commands_total", Count, ["verb"],
            "SMTP command lines received, by verb: ehlo, helo, mail, rcpt, data, bdat, rset, noop, quit, vrfy, expn, help, starttls, auth, or other.";
        Gauge, "corerelay_account_queued_messages", Count, ["account"],
            "Messages of the account queued for delivery on its owner core (due, scheduled or in flight).";
        Histogram, "corerelay_account_scheduler_wait_seconds", Seconds, ["account"],
            "Time from when a message of the account was due (new, or its retry time) to the start of its delivery on a connection: the due line and ready queue wait.";
        Histogram, "corerelay_account_delivery_seconds", Seconds, ["account"],
            "Time a message of the account spent in the relay: from the end of its data here to the remote's 2xx for it (retry delays included), once per delivery transaction that delivered any recipient.";
        Counter, "corerelay_delivery_outcomes_total", Count, ["class", "outcome"],
            "Recipients by what a delivery attempt gave them (outcome delivered, deferred or failed), per site class: the egress pool that routed them.";
        Histogram, "corerelay_delivery_attempt_seconds", Seconds, ["class"],
            "Time of one outbound SMTP transaction per site class (the egress pool that routed it).";
    }
}

/// Histogram bucket bounds for the latency histograms, in seconds.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// Bucket bounds for the histograms that count things per event (records per commit).
pub const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Bucket bounds of `corerelay_account_delivery_seconds`: fine from half a millisecond to a
/// few (a relay's normal time for a message, where fairness shows), then out to the retry
/// schedule's hours and days.
pub const DELIVERY_TIME_BUCKETS_SECONDS: &[f64] = &[
    0.000_5, 0.000_75, 0.001, 0.001_25, 0.001_5, 0.002, 0.002_5, 0.003, 0.004, 0.005, 0.007_5, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0, 10.0, 60.0, 300.0, 3600.0, 86400.0,
];

/// The histograms with buckets of their own; every other one uses [`LATENCY_BUCKETS_SECONDS`].
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    ("corerelay_spool_commit_records", COUNT_BUCKETS),
    (
        "corerelay_account_delivery_seconds",
        DELIVERY_TIME_BUCKETS_SECONDS,
    ),
];

/// The per-account counters of one core.
pub struct AccountCounters {
    pub accepted: Counter,
    pub rejected: Counter,
    pub delivered: Counter,
    pub deferred: Counter,
    pub failed: Counter,
    pub opens: Counter,
    pub clicks: Counter,
    pub unsubscribes: Counter,
    /// Due → delivery started, for the messages this core owns.
    pub scheduler_wait: Histogram,
    /// End of data here → the remote's 2xx, for the messages this core owns.
    pub delivery_time: Histogram,
}

/// The gauges of an account this core owns: placement, weight, limits, queued bytes.
struct OwnedGauges {
    queued_bytes: Gauge,
    queued_messages: Gauge,
}

/// The delivery counters of one site class (an egress pool), resolved when routing
/// settings are made (at start and on reload), so delivery indexes them by pool.
#[derive(Clone, Debug)]
pub struct ClassMetrics {
    pub delivered: Counter,
    pub deferred: Counter,
    pub failed: Counter,
    pub attempt_seconds: Histogram,
}

/// Everything one core counts: the plain handles and the per-account ones, resolved for
/// every account at start.
pub struct CoreMetrics {
    pub core: Core,
    core_label: String,
    /// One counter per [`CommandKind`], indexed by it.
    smtp_commands: Vec<Counter>,
    /// Grows when a reload adds accounts (counters of removed accounts stay, frozen).
    accounts: std::cell::RefCell<HashMap<String, AccountCounters>>,
    /// Only for the accounts this core owns, so no other core exports a placement of 0.
    owned: std::cell::RefCell<HashMap<String, OwnedGauges>>,
    /// Resolved when an account is first refused for a reason.
    throttled: std::cell::RefCell<HashMap<(String, &'static str), Counter>>,
}

impl CoreMetrics {
    /// Resolves the handles of `core` for the given accounts. Works with any recorder (or
    /// none installed, when every handle is a no-op).
    pub fn new<'a>(core: usize, accounts: impl IntoIterator<Item = &'a str>) -> CoreMetrics {
        let core_label = core.to_string();
        let smtp_commands = CommandKind::ALL
            .iter()
            .map(|v| metrics::counter!("corerelay_smtp_commands_total", "core" => core_label.clone(), "verb" => v.label()))
            .collect();
        let metrics = CoreMetrics {
            core: Core::new(&core_label),
            core_label,
            smtp_commands,
            accounts: Default::default(),
            owned: Default::default(),
            throttled: Default::default(),
        };
        metrics.add_accounts(accounts);
        metrics
    }

    /// Resolves the counters of accounts not seen yet (at start, and after a reload).
    pub fn add_accounts<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut accounts = self.accounts.borrow_mut();
        for id in ids {
            if accounts.contains_key(id) {
                continue;
            }
            let labels = [("core", self.core_label.clone()), ("account", id.to_string())];
            let counters = AccountCounters {
                accepted: metrics::counter!("corerelay_account_accepted_total", &labels),
                rejected: metrics::counter!("corerelay_account_rejected_total", &labels),
                delivered: metrics::counter!("corerelay_account_delivered_total", &labels),
                deferred: metrics::counter!("corerelay_account_deferred_total", &labels),
                failed: metrics::counter!("corerelay_account_failed_total", &labels),
                opens: metrics::counter!("corerelay_account_opens_total", &labels),
                clicks: metrics::counter!("corerelay_account_clicks_total", &labels),
                unsubscribes: metrics::counter!("corerelay_account_unsubscribes_total", &labels),
                scheduler_wait: metrics::histogram!("corerelay_account_scheduler_wait_seconds", &labels),
                delivery_time: metrics::histogram!("corerelay_account_delivery_seconds", &labels),
            };
            accounts.insert(id.to_string(), counters);
        }
    }

    /// Sets the placement, weight and limit gauges of the accounts this core owns (at
    /// start, and after a reload).
    pub fn set_owned(&self, core: usize, accounts: &[crate::account::AccountRef]) {
        let mut owned = self.owned.borrow_mut();
        for a in accounts.iter().filter(|a| a.owner == core) {
            let labels = [("core", self.core_label.clone()), ("account", a.id.clone())];
            metrics::gauge!("corerelay_account_core", &labels).set(a.owner as f64);
            metrics::gauge!("corerelay_account_dedicated", &labels).set(u8::from(a.share.dedicated) as f64);
            metrics::gauge!("corerelay_account_weight", &labels).set(a.share.weight as f64);
            metrics::gauge!("corerelay_account_queued_max_bytes", &labels)
                .set(a.share.queued_max_bytes as f64);
            metrics::gauge!("corerelay_account_accept_rate_max", &labels)
                .set(a.share.messages_per_second_max_count as f64);
            owned.entry(a.id.clone()).or_insert_with(|| OwnedGauges {
                queued_bytes: metrics::gauge!("corerelay_account_queued_bytes", &labels),
                queued_messages: metrics::gauge!("corerelay_account_queued_messages", &labels),
            });
        }
    }

    /// Sets the queued messages and bytes of every account this core owns (`queued`:
    /// account, messages, bytes of those with any).
    pub fn set_queued(&self, queued: &[(String, usize, u64)]) {
        for (id, gauges) in self.owned.borrow().iter() {
            let (messages, bytes) = queued
                .iter()
                .find(|(a, _, _)| a == id)
                .map_or((0, 0), |(_, m, b)| (*m, *b));
            gauges.queued_bytes.set(bytes as f64);
            gauges.queued_messages.set(messages as f64);
        }
    }

    /// Counts one SMTP command line.
    pub fn command(&self, kind: CommandKind) {
        if let Some(c) = self.smtp_commands.get(kind as usize) {
            c.increment(1);
        }
    }

    /// Records how long a message of `account` waited between due and delivery.
    pub fn scheduler_wait(&self, account: &str, seconds: f64) {
        self.account(account, |a| a.scheduler_wait.record(seconds));
    }

    /// Records how long a message of `account` took from the end of its data here to the
    /// remote's 2xx.
    pub fn delivery_time(&self, account: &str, seconds: f64) {
        self.account(account, |a| a.delivery_time.record(seconds));
    }

    /// Resolves the delivery handles of the site class `class` (an egress pool's name).
    pub fn class(&self, class: &str) -> ClassMetrics {
        let core = self.core_label.clone();
        let outcome = |outcome: &'static str| {
            let labels = [
                ("core", core.clone()),
                ("class", class.to_string()),
                ("outcome", outcome.to_string()),
            ];
            metrics::counter!("corerelay_delivery_outcomes_total", &labels)
        };
        let labels = [("core", core.clone()), ("class", class.to_string())];
        ClassMetrics {
            delivered: outcome("delivered"),
            deferred: outcome("deferred"),
            failed: outcome("failed"),
            attempt_seconds: metrics::histogram!("corerelay_delivery_attempt_seconds", &labels),
        }
    }

    /// Counts a message of `account` refused by a limit.
    pub fn throttled(&self, account: &str, why: crate::account::limits::Throttle) {
        let key = (account.to_string(), why.label());
        let mut throttled = self.throttled.borrow_mut();
        let counter = throttled.entry(key).or_insert_with(|| {
            let labels = [
                ("core", self.core_label.clone()),
                ("account", account.to_string()),
                ("reason", why.label().to_string()),
            ];
            metrics::counter!("corerelay_account_throttled_total", &labels)
        });
        counter.increment(1);
    }

    /// Counts what a log event says happened.
    pub fn record(&self, event: &Event) {
        let c = &self.core;
        match event {
            Event::Connect { .. } => {
                c.connections_total.increment(1);
            }
            Event::Reject { account, .. } => {
                c.messages_rejected_total.increment(1);
                if let Some(a) = account.as_deref() {
                    self.account(a, |a| a.rejected.increment(1));
                }
            }
            Event::Accept { account, size, .. } => {
                c.messages_accepted_total.increment(1);
                c.messages_accepted_bytes_total.increment(*size as u64);
                self.account(account, |a| a.accepted.increment(1));
            }
            Event::Spooled { .. } => c.messages_spooled_total.increment(1),
            Event::Attempt { .. } => c.delivery_attempts_total.increment(1),
            Event::Bounced { .. } => c.bounces_total.increment(1),
            Event::Delivered { account, .. } => self.account(account, |a| a.delivered.increment(1)),
            Event::Deferred { account, .. } => self.account(account, |a| a.deferred.increment(1)),
            Event::Failed { account, .. } => self.account(account, |a| a.failed.increment(1)),
            Event::Recovered {
                messages,
                corrupt_records,
                ..
            } => {
                c.spool_recovered_messages.set(*messages as f64);
                c.spool_recovery_corrupt_total.increment(*corrupt_records as u64);
            }
            Event::Open { account, .. } => self.account(account, |a| a.opens.increment(1)),
            Event::Click { account, .. } => self.account(account, |a| a.clicks.increment(1)),
            Event::Unsubscribe { account, .. } => self.account(account, |a| a.unsubscribes.increment(1)),
            Event::BadToken { .. } => c.tracking_bad_tokens_total.increment(1),
            Event::Start { .. }
            | Event::Error { .. }
            | Event::Stopping { .. }
            | Event::Stopped { .. }
            | Event::Reloaded { .. }
            | Event::ReloadRefused { .. } => {}
        }
    }

    fn account(&self, id: &str, f: impl FnOnce(&AccountCounters)) {
        if let Some(a) = self.accounts.borrow().get(id) {
            f(a);
        }
    }
}

/// Registers the help text and unit of every metric with the installed recorder.
pub fn describe_all() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// The table as a Markdown list, for the README.
pub fn markdown() -> String {
    let mut out = String::from("| metric | kind | unit | labels | what it counts |\n|---|---|---|---|---|\n");
    for m in METRICS {
        let mut labels = vec!["core"];
        labels.extend_from_slice(m.labels);
        out.push_str(&format!(
            "| `{}` | {:?} | {} | {} | {} |\n",
            m.name,
            m.kind,
            m.unit.as_str(),
            labels.join(", "),
            m.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn events_move_the_counters_they_name() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            let m = CoreMetrics::new(1, ["shop"]);
            let msg = crate::message::MessageId::new(1, 1, 1);
            m.record(&Event::Connect {
                peer: "127.0.0.1".parse().unwrap(),
            });
            m.record(&Event::Accept {
                msg,
                account: "shop".into(),
                peer: "127.0.0.1".parse().unwrap(),
                from: "a@shop.example".into(),
                rcpts: 1,
                size: 2048,
            });
            m.record(&Event::Delivered {
                msg,
                account: "shop".into(),
                rcpt: "r@x".into(),
                host: String::new(),
                reply: "250".into(),
            });
            m.record(&Event::Delivered {
                msg,
                account: "unknown-account".into(),
                rcpt: "r@x".into(),
                host: String::new(),
                reply: "250".into(),
            });
        });
        let text = handle.render();
        assert!(
            text.contains("corerelay_connections_total{core=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("corerelay_messages_accepted_bytes_total{core=\"1\"} 2048"),
            "{text}"
        );
        assert!(
            text.contains("corerelay_account_accepted_total{core=\"1\",account=\"shop\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("corerelay_account_delivered_total{core=\"1\",account=\"shop\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# HELP corerelay_connections_total SMTP connections accepted."),
            "{text}"
        );
    }

    #[test]
    fn the_table_has_unique_names_and_documents_each_metric() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
        for m in METRICS {
            assert!(m.name.starts_with("corerelay_"), "{}", m.name);
            assert!(m.help.ends_with('.'), "{}", m.name);
            if m.kind == Kind::Counter {
                assert!(m.name.ends_with("_total"), "{}", m.name);
            }
        }
        assert!(markdown().contains("`corerelay_connections_total`"));
    }
}

#[cfg(test)]
mod readme {
    /// README.md carries the generated table; regenerate it with `corerelay metrics`.
    #[test]
    fn readme_lists_every_metric() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let start = readme
            .find("<!-- metrics:begin -->\n")
            .expect("metrics:begin marker")
            + 23;
        let end = readme.find("<!-- metrics:end -->").expect("metrics:end marker");
        assert_eq!(
            &readme[start..end],
            super::markdown(),
            "README's metrics table is stale: paste `corerelay metrics`"
        );
    }
}
