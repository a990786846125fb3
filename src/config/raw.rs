//! The configuration file as written: serde structs that reject unknown keys, with a named
//! default for every field. `super::Config::from_raw` turns this into the validated form.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub smtp: RawSmtp,
    #[serde(default)]
    pub spool: RawSpool,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub tracking: RawTracking,
    #[serde(default)]
    pub egress: super::egress::RawEgress,
    #[serde(default)]
    pub bounce: super::egress::RawBounce,
    #[serde(default)]
    pub fairness: super::fairness::RawFairness,
    #[serde(default)]
    pub lending: super::lending::RawLending,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub auth: RawAuth,
}

/// `cores = "all" | 4 | [0, 2]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawCores {
    Named(String),
    Count(usize),
    List(Vec<usize>),
}

impl Default for RawCores {
    fn default() -> Self {
        RawCores::Named("all".into())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub cores: RawCores,
    pub pin: bool,
    pub hostname: String,
    pub io_memory_bytes: usize,
    pub handoff_window_max_count: usize,
    pub shutdown_grace_ms: u64,
    pub startup_timeout_ms: u64,
    pub handoff_window_max_bytes: usize,
    pub handoff_wait_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            cores: RawCores::default(),
            pin: true,
            hostname: "corerelay.localhost".into(),
            io_memory_bytes: 1 << 20,
            handoff_window_max_count: 256,
            shutdown_grace_ms: 30_000,
            startup_timeout_ms: 15_000,
            handoff_window_max_bytes: 64 << 20,
            handoff_wait_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSmtp {
    /// `None` when not written: then it is the default address, unless `[[listeners]]`
    /// are given (the two ways of naming listeners do not mix).
    pub listen: Option<String>,
    pub backlog_count: u32,
    pub connections_per_core_max_count: usize,
    pub command_line_max_bytes: usize,
    pub text_line_max_bytes: usize,
    pub message_max_bytes: usize,
    pub recipients_max_count: usize,
    pub messages_per_connection_max_count: usize,
    pub errors_max_count: usize,
    pub command_timeout_ms: u64,
    pub data_timeout_ms: u64,
    pub connections_per_ip_max_count: usize,
    pub greeting_timeout_ms: u64,
    pub data_end_timeout_ms: u64,
    pub bare_line_feed: String,
}

/// The address of the one listener of a configuration that names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";

impl Default for RawSmtp {
    fn default() -> Self {
        RawSmtp {
            listen: None,
            backlog_count: 1024,
            connections_per_core_max_count: 10_000,
            command_line_max_bytes: 512,
            text_line_max_bytes: 1000,
            message_max_bytes: 25 << 20,
            recipients_max_count: 100,
            messages_per_connection_max_count: 10_000,
            errors_max_count: 10,
            command_timeout_ms: 300_000,
            data_timeout_ms: 180_000,
            connections_per_ip_max_count: 1000,
            greeting_timeout_ms: 30_000,
            data_end_timeout_ms: 600_000,
            bare_line_feed: "reject".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpool {
    pub dir: String,
    pub segment_max_bytes: u64,
    pub commit_batch_max_count: usize,
    pub commit_batch_max_bytes: usize,
    pub express: bool,
    pub prepared_segment_count: usize,
    pub express_blocking_budget_ms: u64,
    pub memory_max_bytes: usize,
}

impl Default for RawSpool {
    fn default() -> Self {
        RawSpool {
            dir: "corerelay-data/spool".into(),
            segment_max_bytes: 64 << 20,
            commit_batch_max_count: 64,
            commit_batch_max_bytes: 8 << 20,
            express: true,
            prepared_segment_count: 1,
            express_blocking_budget_ms: 100,
            memory_max_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub dir: String,
    pub ring_max_count: usize,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            dir: "corerelay-data/log".into(),
            ring_max_count: 16_384,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDelivery {
    pub mx_port: u16,
    pub smarthost: Option<String>,
    pub dns_servers: Vec<String>,
    pub dns_timeout_ms: u64,
    pub dns_attempts_count: usize,
    pub helo_name: String,
    pub concurrency_per_core_max_count: usize,
    pub retry_schedule_ms: Vec<u64>,
    pub message_max_age_ms: u64,
    pub connect_timeout_ms: u64,
    pub greeting_timeout_ms: u64,
    pub command_timeout_ms: u64,
    pub data_timeout_ms: u64,
    pub idle_connection_ms: u64,
    pub messages_per_connection_max_count: usize,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            mx_port: 25,
            smarthost: None,
            dns_servers: Vec::new(),
            dns_timeout_ms: 5_000,
            dns_attempts_count: 2,
            helo_name: String::new(),
            concurrency_per_core_max_count: 256,
            retry_schedule_ms: vec![
                60_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000,
            ],
            message_max_age_ms: 5 * 24 * 3_600_000,
            connect_timeout_ms: 30_000,
            greeting_timeout_ms: 300_000,
            command_timeout_ms: 300_000,
            data_timeout_ms: 600_000,
            idle_connection_ms: 5_000,
            messages_per_connection_max_count: 100,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
    pub header_max_bytes: usize,
    pub body_max_bytes: usize,
    pub request_timeout_ms: u64,
    pub requests_per_connection_max_count: usize,
    pub connections_per_core_max_count: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "127.0.0.1:8025".into(),
            header_max_bytes: 8192,
            body_max_bytes: 4096,
            request_timeout_ms: 10_000,
            requests_per_connection_max_count: 1000,
            connections_per_core_max_count: 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracking {
    pub keys: Vec<RawTrackingKey>,
    pub signing_key_id: u8,
    pub base_url: String,
}

impl Default for RawTracking {
    fn default() -> Self {
        RawTracking {
            keys: Vec::new(),
            signing_key_id: 1,
            base_url: "http://127.0.0.1:8025".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrackingKey {
    pub id: u8,
    pub secret_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub id: String,
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub sender_domains: Vec<String>,
    #[serde(default)]
    pub core: Option<usize>,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub credentials: Vec<RawCredential>,
    /// Open/click tracking for this account; absent = no tracking.
    #[serde(default)]
    pub tracking: Option<RawAccountTracking>,
    /// DKIM keys this account signs with.
    #[serde(default)]
    pub dkim: Vec<RawDkimKey>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub dedicated: bool,
    #[serde(default)]
    pub messages_per_second_max_count: Option<u32>,
    #[serde(default)]
    pub queued_max_bytes: Option<u64>,
}

/// `[accounts.tracking]`: what the rewrite adds to the account's messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccountTracking {
    pub opens: bool,
    pub clicks: bool,
    pub plain_text_clicks: bool,
    /// Empty: `tracking.base_url`.
    pub base_url: String,
    pub exclude_domains: Vec<String>,
    pub exclude_attribute: String,
    /// 0: tokens never expire.
    pub expiry_ms: u64,
    pub per_recipient: bool,
    /// RFC 8058 one-click unsubscribe headers pointing at `POST /u/<token>`.
    pub unsubscribe: bool,
}

impl Default for RawAccountTracking {
    fn default() -> Self {
        RawAccountTracking {
            opens: true,
            clicks: true,
            plain_text_clicks: false,
            base_url: String::new(),
            exclude_domains: Vec::new(),
            exclude_attribute: "data-notrack".into(),
            expiry_ms: 0,
            per_recipient: true,
            unsubscribe: false,
        }
    }
}

/// `[[accounts.dkim]]`: one signing key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDkimKey {
    pub domain: String,
    pub selector: String,
    pub key_file: String,
    /// Header fields to sign; empty: corerelay's default list (over-signs From).
    #[serde(default)]
    pub headers: Vec<String>,
}

fn default_weight() -> u32 {
    1
}

/// One AUTH login of an account: a user name and the PHC string of its password hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub username: String,
    pub password_hash: String,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    #[serde(default)]
    pub implicit_tls: bool,
    #[serde(default)]
    pub require_tls: bool,
    #[serde(default)]
    pub auth_plaintext_allowed: bool,
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default)]
    pub proxy_trusted_networks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub cert_file: String,
    pub key_file: String,
    pub handshake_timeout_ms: u64,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            cert_file: String::new(),
            key_file: String::new(),
            handshake_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub failures_per_ip_max_count: u32,
    pub failure_window_ms: u64,
    pub tracked_ips_max_count: usize,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            failures_per_ip_max_count: 5,
            failure_window_ms: 300_000,
            tracked_ips_max_count: 10_000,
        }
    }
}
