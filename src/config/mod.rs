//! Configuration: the TOML file (or the embedded default) is read into [`raw`] structs that
//! reject unknown keys, then validated once at start into [`Config`], whose fields are the
//! checked, typed values every other module reads. Every error names the offending key.
//!
//! Two phases keep serde's concerns (names, defaults, unknown keys) apart from the checks
//! (addresses parse, limits are non-zero, a pinned core exists), and leave the rest of the
//! program free of `Option`s and strings that might not parse.

pub mod egress;
pub mod fairness;
pub mod lending;
pub mod raw;

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use egress::{BounceConfig, EgressConfig, TlsPolicy};
pub use fairness::FairnessConfig;
pub use lending::LendingConfig;
use raw::{RawConfig, RawCores};

/// The largest `smtp.message_max_bytes` allowed: a spool record holds the whole message
/// plus its envelope and trace header, and records are at most
/// [`crate::spool::record::PAYLOAD_MAX_BYTES`]; 1 MiB is left for the rest.
pub const MESSAGE_MAX_BYTES_LIMIT: usize = crate::spool::record::PAYLOAD_MAX_BYTES - (1 << 20);

/// The configuration `corerelay serve` runs with when no file is given.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A configuration error: the dotted key it is about and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "configuration: {}", self.message)
        } else {
            write!(f, "configuration key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which CPUs run an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    /// Every online CPU.
    All,
    /// This many executors, placed by glommio.
    Count(usize),
    /// One executor on each of these CPU ids.
    List(Vec<usize>),
}

impl Cores {
    /// Parses the `--cores` flag: `all`, `N`, or `0,2,4`.
    pub fn parse_flag(s: &str) -> Result<Cores, ConfigError> {
        let s = s.trim();
        if s == "all" {
            return Ok(Cores::All);
        }
        if s.contains(',') {
            let list = s
                .split(',')
                .map(|p| p.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ConfigError::new("server.cores", format!("`{s}` is not a list of CPU ids")))?;
            return Ok(Cores::List(list));
        }
        s.parse::<usize>()
            .map(Cores::Count)
            .map_err(|_| ConfigError::new("server.cores", format!("`{s}` is not `all`, a count or a list")))
    }

    /// The number of executors this selection runs on a machine with `online` CPUs.
    pub fn count(&self, online: usize) -> usize {
        match self {
            Cores::All => online.max(1),
            Cores::Count(n) => *n,
            Cores::List(l) => l.len(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub cores: Cores,
    pub pin: bool,
    pub hostname: String,
    pub io_memory_bytes: usize,
    /// Messages in flight from one acceptor core to one owner core.
    pub handoff_window_max_count: usize,
    /// Bytes of messages in flight from one acceptor core to one owner core.
    pub handoff_window_max_bytes: usize,
    /// How long a message waits for room in a full window before the client gets `451 4.3.2`.
    pub handoff_wait: Duration,
    /// On SIGTERM, how long transactions in flight may take to finish.
    pub shutdown_grace: Duration,
    pub startup_timeout: Duration,
}

/// Inbound SMTP: the listeners and every limit a client meets.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Never empty. The first is `smtp.listen` (or the first `[[listeners]]` entry).
    pub listeners: Vec<ListenerConfig>,
    pub backlog_count: u32,
    pub connections_per_core_max_count: usize,
    pub command_line_max_bytes: usize,
    pub text_line_max_bytes: usize,
    pub message_max_bytes: usize,
    pub recipients_max_count: usize,
    pub messages_per_connection_max_count: usize,
    pub errors_max_count: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Connections one source address may hold open on one core.
    pub connections_per_ip_max_count: usize,
    /// How long a new client has to send its PROXY header and its first command.
    pub greeting_timeout: Duration,
    /// The whole message transfer (DATA to the final dot, first BDAT to BDAT LAST).
    pub data_end_timeout: Duration,
    pub bare_line_feed: BareLineFeed,
}

/// What the DATA and BDAT receivers do with a bare LF in message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareLineFeed {
    /// Refuse the message with `550 5.6.0` (the default: SMTP smuggling needs it).
    Reject,
    /// Read a bare LF as CRLF; only CRLF.CRLF still ends the data.
    Normalize,
}

/// One SMTP listening address and what it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// TLS from the first byte (RFC 8314, port 465 style) instead of STARTTLS.
    pub implicit_tls: bool,
    /// MAIL is refused with `530 5.7.0` until the session is encrypted.
    pub require_tls: bool,
    /// AUTH is offered without TLS too (never by default: it would expose passwords).
    pub auth_plaintext_allowed: bool,
    /// PROXY protocol (v1 or v2) expected first, only from these networks; `None` when the
    /// listener does not use it.
    pub proxy_trusted_networks: Option<Vec<IpNet>>,
}

/// Inbound TLS: certificate and key files, or a self-signed certificate made at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain and PEM private key; `None` means self-signed.
    pub files: Option<(PathBuf, PathBuf)>,
    pub handshake_timeout: Duration,
}

/// AUTH: how failures are throttled per source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub failures_per_ip_max_count: u32,
    pub failure_window: Duration,
    pub tracked_ips_max_count: usize,
}

/// One AUTH login of an account.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    /// A PHC string (`$argon2id$v=19$…`), checked to parse at load.
    pub password_hash: String,
}

impl fmt::Debug for Credential {
    /// The hash is not printed: `check-config` output ends up in tickets and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credential {{ username: {:?}, password_hash: \"…\" }}",
            self.username
        )
    }
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub segment_max_bytes: u64,
    pub commit_batch_max_count: usize,
    pub commit_batch_max_bytes: usize,
    /// New messages of accounts with nothing waiting for a commit go to the express stream
    /// (`spool::Spool`); false: every message to the bulk stream.
    pub express: bool,
    /// Written free files each segment stream keeps ready for its next segment (0..=2; see
    /// `spool::commit`, "prepared segments").
    pub prepared_segment_count: usize,
    /// Blocked time per second the express stream may spend committing with blocking
    /// system calls instead of io_uring (`spool::blocking`); zero: never.
    pub express_blocking_budget: Duration,
    pub memory_max_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub ring_max_count: usize,
}

/// Outbound: where mail goes and how patiently.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    pub mx_port: u16,
    /// `host:port` to send everything to instead of the recipient domains' MX hosts.
    pub smarthost: Option<(String, u16)>,
    /// Nameservers; empty means "read /etc/resolv.conf".
    pub dns_servers: Vec<SocketAddr>,
    pub dns_timeout: Duration,
    pub dns_attempts_count: usize,
    pub helo_name: String,
    pub concurrency_per_core_max_count: usize,
    pub retry_schedule: Vec<Duration>,
    pub message_max_age: Duration,
    pub connect_timeout: Duration,
    pub greeting_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub idle_connection: Duration,
    pub messages_per_connection_max_count: usize,
}

/// The HTTP listener: metrics, health, tracking.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub limits: crate::http::HttpLimits,
}

/// The keys that sign tracking tokens: every listed key verifies, `signing_key_id` mints.
/// No keys means one is made once and kept in `<spool-dir>/tracking.key`.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    pub keys: Vec<(u8, PathBuf)>,
    pub signing_key_id: u8,
    /// The tracking endpoint's address in links, for accounts that do not set their own.
    pub base_url: String,
}

/// An account's tracking: what the rewrite adds, and whether to add one-click unsubscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTracking {
    pub options: crate::rewrite::TrackingOptions,
    pub unsubscribe: bool,
}

/// One DKIM key of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKeyConfig {
    /// The signing domain (`d=`), lower case.
    pub domain: String,
    pub selector: String,
    pub key_file: PathBuf,
    /// Header fields to sign; empty means the default list.
    pub headers: Vec<String>,
}

/// Which sender domains an account may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderDomains {
    Any,
    /// Lower-case domain names.
    List(Vec<String>),
}

impl SenderDomains {
    pub fn allows(&self, domain: &str) -> bool {
        match self {
            SenderDomains::Any => true,
            SenderDomains::List(l) => l.iter().any(|d| d.eq_ignore_ascii_case(domain)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub id: String,
    pub networks: Vec<IpNet>,
    pub sender_domains: SenderDomains,
    /// The core this account is pinned to; otherwise a stable hash of `id` decides.
    pub core: Option<usize>,
    /// AUTH logins that identify this account (several per account).
    pub credentials: Vec<Credential>,
    /// Reputation class (a key of `egress.classes`): its pool wins over every route.
    pub class: Option<String>,
    /// The pool for this account's mail when no class or route picks one.
    pub pool: Option<String>,
    /// Open/click tracking; `None` leaves the account's messages as they are.
    pub tracking: Option<AccountTracking>,
    /// DKIM keys; a message is signed with those of its header From domain.
    pub dkim: Vec<DkimKeyConfig>,
    /// The account's share at every DRR stage of its owner core (1..=1000).
    pub weight: u32,
    /// No other account is placed on this account's core.
    pub dedicated: bool,
    /// Messages accepted per second at most (`451 4.7.0` beyond); 0 = no limit.
    pub messages_per_second_max_count: u32,
    /// Bytes of this account's messages queued for delivery at most (`452 4.3.1`
    /// beyond); 0 = no limit.
    pub queued_max_bytes: u64,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub smtp: SmtpConfig,
    pub spool: SpoolConfig,
    pub log: LogConfig,
    pub delivery: DeliveryConfig,
    pub http: HttpConfig,
    pub tracking: TrackingConfig,
    pub egress: EgressConfig,
    pub bounce: BounceConfig,
    pub fairness: FairnessConfig,
    pub lending: LendingConfig,
    pub accounts: Vec<AccountConfig>,
    pub tls: TlsSettings,
    pub auth: AuthConfig,
}

/// Command-line settings that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub cores: Option<String>,
    pub spool_dir: Option<String>,
    pub log_dir: Option<String>,
    pub dns: Option<String>,
    pub smarthost: Option<String>,
    pub http_listen: Option<String>,
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with(text, &Overrides::default())
    }

    /// Parses a TOML document, applies the command-line overrides, and validates.
    pub fn from_toml_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut raw = parse_raw(text)?;
        apply_overrides(&mut raw, overrides)?;
        Config::from_raw(raw)
    }

    /// Reads the file at `path` (the embedded default when `None`), applies the overrides,
    /// and validates. Errors name the file and the key.
    pub fn load(path: Option<&std::path::Path>, overrides: &Overrides) -> Result<Config, String> {
        match path {
            None => Config::embedded(overrides).map_err(|e| e.to_string()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Config::from_toml_with(&text, overrides).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }

    /// The embedded default with overrides applied.
    pub fn embedded(overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::from_toml_with(DEFAULT_TOML, overrides)
    }

    /// The number of executors this configuration runs on a machine with `online` CPUs.
    pub fn core_count(&self, online: usize) -> usize {
        self.server.cores.count(online)
    }

    fn from_raw(mut raw: RawConfig) -> Result<Config, ConfigError> {
        let server = ServerConfig {
            cores: match raw.server.cores {
                RawCores::Named(s) => Cores::parse_flag(&s)?,
                RawCores::Count(n) => Cores::Count(n),
                RawCores::List(l) => Cores::List(l),
            },
            pin: raw.server.pin,
            hostname: non_empty("server.hostname", raw.server.hostname)?,
            io_memory_bytes: raw.server.io_memory_bytes,
            handoff_window_max_count: positive_usize(
                "server.handoff_window_max_count",
                raw.server.handoff_window_max_count,
            )?,
            shutdown_grace: millis("server.shutdown_grace_ms", raw.server.shutdown_grace_ms)?,
            startup_timeout: millis("server.startup_timeout_ms", raw.server.startup_timeout_ms)?,
            handoff_window_max_bytes: at_least(
                "server.handoff_window_max_bytes",
                raw.server.handoff_window_max_bytes,
                64 << 10,
            )?,
            handoff_wait: millis("server.handoff_wait_ms", raw.server.handoff_wait_ms)?,
        };
        match &server.cores {
            Cores::Count(0) => return Err(ConfigError::new("server.cores", "must be at least 1")),
            Cores::List(l) if l.is_empty() => {
                return Err(ConfigError::new("server.cores", "the list of CPUs is empty"));
            }
            Cores::List(l) => {
                let mut sorted = l.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != l.len() {
                    return Err(ConfigError::new("server.cores", "a CPU is listed twice"));
                }
            }
            _ => {}
        }
        let listeners = listeners(raw.smtp.listen.take(), std::mem::take(&mut raw.listeners))?;
        let s = raw.smtp;
        let smtp = SmtpConfig {
            listeners,
            backlog_count: positive("smtp.backlog_count", s.backlog_count as u64)? as u32,
            connections_per_core_max_count: positive_usize(
                "smtp.connections_per_core_max_count",
                s.connections_per_core_max_count,
            )?,
            command_line_max_bytes: at_least("smtp.command_line_max_bytes", s.command_line_max_bytes, 512)?,
            text_line_max_bytes: at_least("smtp.text_line_max_bytes", s.text_line_max_bytes, 1000)?,
            message_max_bytes: at_most(
                "smtp.message_max_bytes",
                positive_usize("smtp.message_max_bytes", s.message_max_bytes)?,
                MESSAGE_MAX_BYTES_LIMIT,
            )?,
            recipients_max_count: positive_usize("smtp.recipients_max_count", s.recipients_max_count)?,
            messages_per_connection_max_count: positive_usize(
                "smtp.messages_per_connection_max_count",
                s.messages_per_connection_max_count,
            )?,
            errors_max_count: positive_usize("smtp.errors_max_count", s.errors_max_count)?,
            command_timeout: millis("smtp.command_timeout_ms", s.command_timeout_ms)?,
            data_timeout: millis("smtp.data_timeout_ms", s.data_timeout_ms)?,
            connections_per_ip_max_count: positive_usize(
                "smtp.connections_per_ip_max_count",
                s.connections_per_ip_max_count,
            )?,
            greeting_timeout: millis("smtp.greeting_timeout_ms", s.greeting_timeout_ms)?,
            data_end_timeout: millis("smtp.data_end_timeout_ms", s.data_end_timeout_ms)?,
            bare_line_feed: match s.bare_line_feed.as_str() {
                "reject" => BareLineFeed::Reject,
                "normalize" => BareLineFeed::Normalize,
                other => {
                    return Err(ConfigError::new(
                        "smtp.bare_line_feed",
                        format!("`{other}` is not \"reject\" or \"normalize\""),
                    ));
                }
            },
        };
        let sp = raw.spool;
        let spool = SpoolConfig {
            dir: PathBuf::from(non_empty("spool.dir", sp.dir)?),
            segment_max_bytes: at_least("spool.segment_max_bytes", sp.segment_max_bytes as usize, 1 << 20)?
                as u64,
            commit_batch_max_count: positive_usize(
                "spool.commit_batch_max_count",
                sp.commit_batch_max_count,
            )?,
            commit_batch_max_bytes: at_least(
                "spool.commit_batch_max_bytes",
                sp.commit_batch_max_bytes,
                64 << 10,
            )?,
            express: sp.express,
            // A stream keeps at most two free files.
            prepared_segment_count: at_most("spool.prepared_segment_count", sp.prepared_segment_count, 2)?,
            // Milliseconds of each second.
            express_blocking_budget: Duration::from_millis(at_most(
                "spool.express_blocking_budget_ms",
                sp.express_blocking_budget_ms as usize,
                1000,
            )? as u64),
            memory_max_bytes: sp.memory_max_bytes,
        };
        let log = LogConfig {
            dir: PathBuf::from(non_empty("log.dir", raw.log.dir)?),
            ring_max_count: positive_usize("log.ring_max_count", raw.log.ring_max_count)?,
        };
        let d = raw.delivery;
        if d.retry_schedule_ms.is_empty() {
            return Err(ConfigError::new(
                "delivery.retry_schedule_ms",
                "needs at least one delay",
            ));
        }
        if d.retry_schedule_ms.contains(&0) {
            return Err(ConfigError::new(
                "delivery.retry_schedule_ms",
                "a delay of 0 would retry in a loop",
            ));
        }
        let delivery = DeliveryConfig {
            mx_port: positive("delivery.mx_port", d.mx_port as u64)? as u16,
            smarthost: match d.smarthost {
                None => None,
                Some(s) => Some(host_port("delivery.smarthost", &s)?),
            },
            dns_servers: d
                .dns_servers
                .iter()
                .map(|s| socket_addr("delivery.dns_servers", s, Some(53)))
                .collect::<Result<_, _>>()?,
            dns_timeout: millis("delivery.dns_timeout_ms", d.dns_timeout_ms)?,
            dns_attempts_count: positive_usize("delivery.dns_attempts_count", d.dns_attempts_count)?,
            helo_name: if d.helo_name.is_empty() {
                server.hostname.clone()
            } else {
                d.helo_name
            },
            concurrency_per_core_max_count: positive_usize(
                "delivery.concurrency_per_core_max_count",
                d.concurrency_per_core_max_count,
            )?,
            retry_schedule: d
                .retry_schedule_ms
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
            message_max_age: millis("delivery.message_max_age_ms", d.message_max_age_ms)?,
            connect_timeout: millis("delivery.connect_timeout_ms", d.connect_timeout_ms)?,
            greeting_timeout: millis("delivery.greeting_timeout_ms", d.greeting_timeout_ms)?,
            command_timeout: millis("delivery.command_timeout_ms", d.command_timeout_ms)?,
            data_timeout: millis("delivery.data_timeout_ms", d.data_timeout_ms)?,
            idle_connection: Duration::from_millis(d.idle_connection_ms),
            messages_per_connection_max_count: positive_usize(
                "delivery.messages_per_connection_max_count",
                d.messages_per_connection_max_count,
            )?,
        };
        let h = raw.http;
        let http = HttpConfig {
            listen: socket_addr("http.listen", &h.listen, None)?,
            limits: crate::http::HttpLimits {
                header_max_bytes: at_least("http.header_max_bytes", h.header_max_bytes, 1024)?,
                body_max_bytes: h.body_max_bytes,
                request_timeout: millis("http.request_timeout_ms", h.request_timeout_ms)?,
                requests_per_connection_max_count: positive_usize(
                    "http.requests_per_connection_max_count",
                    h.requests_per_connection_max_count,
                )?,
                connections_per_core_max_count: positive_usize(
                    "http.connections_per_core_max_count",
                    h.connections_per_core_max_count,
                )?,
            },
        };
        let tracking = tracking(raw.tracking)?;
        let egress = egress::validate(
            raw.egress,
            &delivery.helo_name,
            delivery.messages_per_connection_max_count,
        )?;
        let bounce = BounceConfig::from_raw(raw.bounce);
        let (fairness, account_limits) = fairness::validate(&raw.fairness)?;
        let lending = lending::validate(&raw.lending)?;
        let accounts = raw
            .accounts
            .into_iter()
            .enumerate()
            .map(|(i, a)| account(i, a, &tracking.base_url, account_limits))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::new(
                "accounts",
                format!("account id `{}` is used twice", w[0]),
            ));
        }
        check_usernames(&accounts)?;
        check_account_routing(&accounts, &egress)?;
        let config = Config {
            server,
            smtp,
            spool,
            log,
            delivery,
            http,
            tracking,
            egress,
            bounce,
            fairness,
            lending,
            accounts,
            tls: tls(raw.tls)?,
            auth: AuthConfig {
                failures_per_ip_max_count: positive(
                    "auth.failures_per_ip_max_count",
                    raw.auth.failures_per_ip_max_count as u64,
                )? as u32,
                failure_window: millis("auth.failure_window_ms", raw.auth.failure_window_ms)?,
                tracked_ips_max_count: positive_usize(
                    "auth.tracked_ips_max_count",
                    raw.auth.tracked_ips_max_count,
                )?,
            },
        };
        config.check_pinned_cores()?;
        Ok(config)
    }

    /// A pinned core must exist. With `cores = "all"` the count is only known at start, so
    /// the runtime calls this again with the real count.
    fn check_pinned_cores(&self) -> Result<(), ConfigError> {
        let known = match &self.server.cores {
            Cores::All => return Ok(()),
            c => c.count(0),
        };
        self.check_pinned_against(known)
    }

    /// Checks every account's `core` against the number of executors that will run.
    pub fn check_pinned_against(&self, cores: usize) -> Result<(), ConfigError> {
        for (i, a) in self.accounts.iter().enumerate() {
            if let Some(c) = a.core
                && c >= cores
            {
                return Err(ConfigError::new(
                    format!("accounts[{i}].core"),
                    format!(
                        "account `{}` is pinned to core {c}, but only {cores} cores run (0..{cores})",
                        a.id
                    ),
                ));
            }
        }
        fairness::check_dedicated(&self.accounts, cores)
    }
}

fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::new("", e.to_string().trim_end().to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(key, e.into_inner().message().trim_end().to_string())
    })
}

fn apply_overrides(raw: &mut RawConfig, o: &Overrides) -> Result<(), ConfigError> {
    if let Some(v) = &o.listen {
        match raw.listeners.first_mut() {
            Some(first) => first.address = v.clone(),
            None => raw.smtp.listen = Some(v.clone()),
        }
    }
    if let Some(v) = &o.cores {
        raw.server.cores = RawCores::Named(v.clone());
    }
    if let Some(v) = &o.spool_dir {
        raw.spool.dir = v.clone();
    }
    if let Some(v) = &o.log_dir {
        raw.log.dir = v.clone();
    }
    if let Some(v) = &o.dns {
        raw.delivery.dns_servers = vec![v.clone()];
    }
    if let Some(v) = &o.smarthost {
        raw.delivery.smarthost = Some(v.clone());
    }
    if let Some(v) = &o.http_listen {
        raw.http.listen = v.clone();
    }
    Ok(())
}

/// `limits`: the `[fairness]` defaults of the per-account limits.
fn account(
    i: usize,
    a: raw::RawAccount,
    base_url: &str,
    limits: (u32, u64),
) -> Result<AccountConfig, ConfigError> {
    let key = |field: &str| format!("accounts[{i}].{field}");
    if a.id.is_empty()
        || !a
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ConfigError::new(
            key("id"),
            format!(
                "`{}` must be non-empty ASCII letters, digits, '-', '_' or '.'",
                a.id
            ),
        ));
    }
    if a.networks.is_empty() {
        return Err(ConfigError::new(
            key("networks"),
            "an account needs at least one source network",
        ));
    }
    let networks = a
        .networks
        .iter()
        .map(|n| {
            parse_net(n).ok_or_else(|| {
                ConfigError::new(
                    key("networks"),
                    format!("`{n}` is not a CIDR network or an IP address"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sender_domains = if a.sender_domains.iter().any(|d| d == "*") {
        if a.sender_domains.len() > 1 {
            return Err(ConfigError::new(
                key("sender_domains"),
                "`*` allows every domain and cannot be combined with others",
            ));
        }
        SenderDomains::Any
    } else if a.sender_domains.is_empty() {
        return Err(ConfigError::new(
            key("sender_domains"),
            "list the account's domains, or `*` for any",
        ));
    } else {
        for d in &a.sender_domains {
            if d.is_empty() || d.contains('@') || d.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    key("sender_domains"),
                    format!("`{d}` is not a domain name"),
                ));
            }
        }
        SenderDomains::List(a.sender_domains.iter().map(|d| d.to_ascii_lowercase()).collect())
    };
    let credentials = a
        .credentials
        .into_iter()
        .map(|c| credential(&key("credentials"), c))
        .collect::<Result<Vec<_>, _>>()?;
    let tracking = match a.tracking {
        None => None,
        Some(t) => Some(account_tracking(t, base_url).map_err(|e| ConfigError::new(key("tracking"), e))?),
    };
    let mut dkim = Vec::with_capacity(a.dkim.len());
    for (k, d) in a.dkim.into_iter().enumerate() {
        let field = |f: &str| key(&format!("dkim[{k}].{f}"));
        if d.domain.is_empty() || d.domain.contains(['@', ' ']) {
            return Err(ConfigError::new(
                field("domain"),
                format!("`{}` is not a domain name", d.domain),
            ));
        }
        if d.selector.is_empty()
            || !d
                .selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(
                field("selector"),
                format!("`{}` is not a DKIM selector", d.selector),
            ));
        }
        dkim.push(DkimKeyConfig {
            domain: d.domain.to_ascii_lowercase(),
            selector: d.selector,
            key_file: PathBuf::from(d.key_file),
            headers: d.headers,
        });
    }
    Ok(AccountConfig {
        id: a.id,
        networks,
        sender_domains,
        core: a.core,
        credentials,
        class: a.class,
        pool: a.pool,
        tracking,
        dkim,
        weight: fairness::weight(i, a.weight)?,
        dedicated: a.dedicated,
        messages_per_second_max_count: a.messages_per_second_max_count.unwrap_or(limits.0),
        queued_max_bytes: a.queued_max_bytes.unwrap_or(limits.1),
    })
}

fn account_tracking(t: raw::RawAccountTracking, default_base_url: &str) -> Result<AccountTracking, String> {
    let options = crate::rewrite::TrackingOptions {
        opens: t.opens,
        clicks: t.clicks,
        plain_text_clicks: t.plain_text_clicks,
        base_url: if t.base_url.is_empty() {
            default_base_url.to_string()
        } else {
            t.base_url
        },
        exclude_domains: t
            .exclude_domains
            .iter()
            .map(|d| d.trim_start_matches('.').to_ascii_lowercase())
            .collect(),
        exclude_attribute: t.exclude_attribute,
        expiry: (t.expiry_ms > 0).then(|| Duration::from_millis(t.expiry_ms)),
        per_recipient: t.per_recipient,
    };
    options.validate()?;
    Ok(AccountTracking {
        options,
        unsubscribe: t.unsubscribe,
    })
}

fn tracking(t: raw::RawTracking) -> Result<TrackingConfig, ConfigError> {
    let mut ids: Vec<u8> = t.keys.iter().map(|k| k.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(ConfigError::new("tracking.keys", "a key id is listed twice"));
    }
    if !t.keys.is_empty() && !ids.contains(&t.signing_key_id) {
        return Err(ConfigError::new(
            "tracking.signing_key_id",
            format!("key {} is not among tracking.keys", t.signing_key_id),
        ));
    }
    let probe = crate::rewrite::TrackingOptions {
        base_url: t.base_url.clone(),
        ..Default::default()
    };
    probe
        .validate()
        .map_err(|e| ConfigError::new("tracking.base_url", e))?;
    Ok(TrackingConfig {
        keys: t
            .keys
            .into_iter()
            .map(|k| (k.id, PathBuf::from(k.secret_file)))
            .collect(),
        signing_key_id: t.signing_key_id,
        base_url: t.base_url,
    })
}

/// The listeners: `smtp.listen` alone (the default address when neither is written), or
/// the `[[listeners]]` entries. Both at once would leave it unclear which addresses are
/// meant, so that is an error.
fn listeners(listen: Option<String>, raw: Vec<raw::RawListener>) -> Result<Vec<ListenerConfig>, ConfigError> {
    if raw.is_empty() {
        let listen = listen.unwrap_or_else(|| raw::DEFAULT_LISTEN.to_string());
        return Ok(vec![ListenerConfig {
            address: socket_addr("smtp.listen", &listen, None)?,
            implicit_tls: false,
            require_tls: false,
            auth_plaintext_allowed: false,
            proxy_trusted_networks: None,
        }]);
    }
    if listen.is_some() {
        return Err(ConfigError::new(
            "smtp.listen",
            "name the listeners either with smtp.listen or with [[listeners]], not both",
        ));
    }
    raw.into_iter().enumerate().map(|(i, l)| listener(i, l)).collect()
}

fn listener(i: usize, l: raw::RawListener) -> Result<ListenerConfig, ConfigError> {
    let key = |field: &str| format!("listeners[{i}].{field}");
    let trusted = l
        .proxy_trusted_networks
        .iter()
        .map(|n| {
            parse_net(n).ok_or_else(|| {
                ConfigError::new(
                    key("proxy_trusted_networks"),
                    format!("`{n}` is not a CIDR network or an IP address"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let proxy_trusted_networks = match (l.proxy_protocol, trusted.is_empty()) {
        (true, true) => {
            return Err(ConfigError::new(
                key("proxy_trusted_networks"),
                "a PROXY protocol listener needs the networks its proxies connect from",
            ));
        }
        (true, false) => Some(trusted),
        (false, true) => None,
        (false, false) => {
            return Err(ConfigError::new(
                key("proxy_trusted_networks"),
                "set only with proxy_protocol = true",
            ));
        }
    };
    Ok(ListenerConfig {
        address: socket_addr(&key("address"), &l.address, None)?,
        implicit_tls: l.implicit_tls,
        require_tls: l.require_tls,
        auth_plaintext_allowed: l.auth_plaintext_allowed,
        proxy_trusted_networks,
    })
}

fn tls(t: raw::RawTls) -> Result<TlsSettings, ConfigError> {
    let files = match (t.cert_file.is_empty(), t.key_file.is_empty()) {
        (true, true) => None,
        (false, false) => Some((PathBuf::from(t.cert_file), PathBuf::from(t.key_file))),
        (false, true) => {
            return Err(ConfigError::new(
                "tls.key_file",
                "cert_file is set, key_file is not",
            ));
        }
        (true, false) => {
            return Err(ConfigError::new(
                "tls.cert_file",
                "key_file is set, cert_file is not",
            ));
        }
    };
    Ok(TlsSettings {
        files,
        handshake_timeout: millis("tls.handshake_timeout_ms", t.handshake_timeout_ms)?,
    })
}

fn credential(key: &str, c: raw::RawCredential) -> Result<Credential, ConfigError> {
    // AUTH PLAIN carries the user name between NULs, and LOGIN as one line.
    if c.username.is_empty() || c.username.len() > 255 || c.username.chars().any(|ch| ch.is_control()) {
        return Err(ConfigError::new(
            key,
            format!(
                "`{}` is not a user name (1 to 255 bytes, no control characters)",
                c.username
            ),
        ));
    }
    if let Err(e) = argon2::PasswordHash::new(&c.password_hash) {
        return Err(ConfigError::new(
            key,
            format!(
                "the password_hash of `{}` is not a PHC hash string ({e}); make one with `corerelay hash-password`",
                c.username
            ),
        ));
    }
    Ok(Credential {
        username: c.username,
        password_hash: c.password_hash,
    })
}

/// A user name identifies one account: it may appear only once.
fn check_usernames(accounts: &[AccountConfig]) -> Result<(), ConfigError> {
    let mut names: Vec<&str> = accounts
        .iter()
        .flat_map(|a| a.credentials.iter().map(|c| c.username.as_str()))
        .collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(ConfigError::new(
            "accounts",
            format!("user name `{}` is given twice", w[0]),
        )),
        None => Ok(()),
    }
}

/// An account's class and pool must name what `[egress]` defines.
fn check_account_routing(accounts: &[AccountConfig], egress: &EgressConfig) -> Result<(), ConfigError> {
    for (i, a) in accounts.iter().enumerate() {
        if let Some(class) = &a.class
            && !egress.classes.contains_key(class)
        {
            return Err(ConfigError::new(
                format!("accounts[{i}].class"),
                format!("class `{class}` is not in egress.classes"),
            ));
        }
        if let Some(pool) = &a.pool
            && egress.pool_index(pool).is_none()
        {
            return Err(ConfigError::new(
                format!("accounts[{i}].pool"),
                format!("no pool is named `{pool}`"),
            ));
        }
    }
    Ok(())
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn non_empty(key: &str, v: String) -> Result<String, ConfigError> {
    if v.trim().is_empty() {
        Err(ConfigError::new(key, "must not be empty"))
    } else {
        Ok(v)
    }
}

fn positive(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

fn positive_usize(key: &str, v: usize) -> Result<usize, ConfigError> {
    positive(key, v as u64).map(|v| v as usize)
}

fn at_least(key: &str, v: usize, min: usize) -> Result<usize, ConfigError> {
    if v < min {
        Err(ConfigError::new(
            key,
            format!("{v} is below the minimum of {min}"),
        ))
    } else {
        Ok(v)
    }
}

fn at_most(key: &str, v: usize, max: usize) -> Result<usize, ConfigError> {
    if v > max {
        Err(ConfigError::new(
            key,
            format!("{v} is above the maximum of {max}"),
        ))
    } else {
        Ok(v)
    }
}

fn millis(key: &str, v: u64) -> Result<Duration, ConfigError> {
    positive(key, v).map(Duration::from_millis)
}

/// `ip:port`, `[v6]:port`, or (with a default port) a bare IP.
fn socket_addr(key: &str, s: &str, default_port: Option<u16>) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let (Some(port), Ok(ip)) = (default_port, s.parse::<IpAddr>()) {
        return Ok(SocketAddr::new(ip, port));
    }
    if default_port.is_none()
        && let Ok(mut addrs) = s.to_socket_addrs()
        && let Some(a) = addrs.next()
    {
        return Ok(a);
    }
    Err(ConfigError::new(
        key,
        format!("`{s}` is not an address of the form IP:PORT"),
    ))
}

/// `host:port` where host is a name or an IP literal (`[v6]` for IPv6).
fn host_port(key: &str, s: &str) -> Result<(String, u16), ConfigError> {
    let bad = || ConfigError::new(key, format!("`{s}` is not of the form HOST:PORT"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::from_toml(DEFAULT_TOML).unwrap();
        assert_eq!(c.smtp.listeners[0].address, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.accounts[0].id, "local");
        assert_eq!(c.accounts[0].sender_domains, SenderDomains::Any);
        assert_eq!(c.delivery.mx_port, 25);
        assert_eq!(c.delivery.helo_name, "corerelay.localhost");
        assert_eq!(c.server.cores, Cores::All);
    }

    /// The embedded file documents every default; it must agree with the serde defaults
    /// a key falls back to when it is left out.
    #[test]
    fn embedded_file_and_field_defaults_agree() {
        let file = Config::from_toml(DEFAULT_TOML).unwrap();
        let empty = Config::from_toml("").unwrap();
        assert_eq!(format!("{:?}", file.server), format!("{:?}", empty.server));
        assert_eq!(format!("{:?}", file.smtp), format!("{:?}", empty.smtp));
        assert_eq!(format!("{:?}", file.spool), format!("{:?}", empty.spool));
        assert_eq!(format!("{:?}", file.log), format!("{:?}", empty.log));
        assert_eq!(format!("{:?}", file.delivery), format!("{:?}", empty.delivery));
        assert_eq!(format!("{:?}", file.http), format!("{:?}", empty.http));
        assert_eq!(format!("{:?}", file.tracking), format!("{:?}", empty.tracking));
        assert_eq!(file.tls, empty.tls);
        assert_eq!(file.auth, empty.auth);
        assert_eq!(file.egress, empty.egress);
        assert_eq!(file.bounce, empty.bounce);
        assert_eq!(file.fairness, empty.fairness);
        assert_eq!(file.lending, empty.lending);
    }

    #[test]
    fn empty_file_takes_field_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.smtp.message_max_bytes, 25 << 20);
        assert!(c.accounts.is_empty());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("[smtp]\nlisten = \"127.0.0.1:25\"\nlistne = 1\n").unwrap_err();
        assert!(e.to_string().contains("listne"), "{e}");
        let e = Config::from_toml("[smtpd]\n").unwrap_err();
        assert!(e.to_string().contains("smtpd"), "{e}");
        let e = Config::from_toml("[[accounts]]\nid = \"a\"\nnetwork = []\n").unwrap_err();
        assert!(e.to_string().contains("network"), "{e}");
    }

    #[test]
    fn wrong_types_and_bad_values_name_the_key() {
        let e = Config::from_toml("[smtp]\nrecipients_max_count = \"many\"\n").unwrap_err();
        assert_eq!(e.key, "smtp.recipients_max_count", "{e}");
        let e = Config::from_toml("[smtp]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.key, "smtp.listen");
        let e = Config::from_toml("[smtp]\nrecipients_max_count = 0\n").unwrap_err();
        assert_eq!(e.key, "smtp.recipients_max_count");
        let e = Config::from_toml(
            "[[accounts]]\nid = \"a\"\nnetworks = [\"10.0.0.0/33\"]\nsender_domains = [\"*\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "accounts[0].networks");
        let e = Config::from_toml("[server]\ncores = 2\n[[accounts]]\nid = \"a\"\nnetworks = [\"10.0.0.1\"]\nsender_domains = [\"*\"]\ncore = 2\n").unwrap_err();
        assert_eq!(e.key, "accounts[0].core");
        let e = Config::from_toml("[delivery]\nsmarthost = \"localhost\"\n").unwrap_err();
        assert_eq!(e.key, "delivery.smarthost");
        let e = Config::from_toml("[spool]\nprepared_segment_count = 3\n").unwrap_err();
        assert_eq!(e.key, "spool.prepared_segment_count");
        let c = Config::from_toml("[spool]\nprepared_segment_count = 0\n").unwrap();
        assert_eq!(c.spool.prepared_segment_count, 0);
        let e = Config::from_toml("[spool]\nexpress_blocking_budget_ms = 1001\n").unwrap_err();
        assert_eq!(e.key, "spool.express_blocking_budget_ms");
        let c = Config::from_toml("[spool]\nexpress_blocking_budget_ms = 0\n").unwrap();
        assert_eq!(c.spool.express_blocking_budget, Duration::ZERO);
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.spool.express_blocking_budget, Duration::from_millis(100));
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            listen: Some("127.0.0.1:0".into()),
            cores: Some("0,1".into()),
            spool_dir: Some("/tmp/s".into()),
            log_dir: Some("/tmp/l".into()),
            dns: Some("127.0.0.1:5353".into()),
            smarthost: Some("127.0.0.1:2526".into()),
            http_listen: Some("127.0.0.1:0".into()),
        };
        let c = Config::embedded(&o).unwrap();
        assert_eq!(c.smtp.listeners[0].address.port(), 0);
        assert_eq!(c.server.cores, Cores::List(vec![0, 1]));
        assert_eq!(c.spool.dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.delivery.dns_servers, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.delivery.smarthost, Some(("127.0.0.1".into(), 2526)));
        assert_eq!(c.http.listen.port(), 0);
        let c = Config::embedded(&Overrides {
            dns: Some("10.0.0.53".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.delivery.dns_servers, vec!["10.0.0.53:53".parse().unwrap()]);
    }

    #[test]
    fn star_domains_cannot_be_mixed() {
        let e = Config::from_toml(
            "[[accounts]]\nid = \"a\"\nnetworks = [\"10.0.0.1\"]\nsender_domains = [\"*\", \"x.com\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "accounts[0].sender_domains");
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0KnOlrDnf5bQ+PhWJDGQ1EvBg+eaHW+rUB2O7pOEBNE";

    #[test]
    fn listeners_tls_and_auth() {
        let c = Config::from_toml(&format!(
            r#"
[[listeners]]
address = "127.0.0.1:587"
require_tls = true
[[listeners]]
address = "127.0.0.1:465"
implicit_tls = true
[[listeners]]
address = "127.0.0.1:2526"
proxy_protocol = true
proxy_trusted_networks = ["10.0.0.0/8", "::1"]
auth_plaintext_allowed = true
[tls]
cert_file = "/etc/c.pem"
key_file = "/etc/k.pem"
[[accounts]]
id = "a"
networks = ["10.0.0.1"]
sender_domains = ["*"]
credentials = [{{ username = "a1", password_hash = "{HASH}" }}, {{ username = "a2", password_hash = "{HASH}" }}]
"#
        ))
        .unwrap();
        let l = &c.smtp.listeners;
        assert_eq!(l.len(), 3);
        assert!(l[0].require_tls && !l[0].implicit_tls);
        assert!(l[1].implicit_tls);
        assert_eq!(l[2].proxy_trusted_networks.as_ref().map(Vec::len), Some(2));
        assert!(l[2].auth_plaintext_allowed);
        assert_eq!(c.tls.files, Some(("/etc/c.pem".into(), "/etc/k.pem".into())));
        assert_eq!(c.accounts[0].credentials.len(), 2);
        assert!(
            !format!("{:?}", c.accounts[0]).contains("argon2"),
            "hashes are not printed"
        );
        let o = Overrides {
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let text = "[[listeners]]\naddress = \"127.0.0.1:25\"\n[[listeners]]\naddress = \"127.0.0.1:26\"\n";
        let c = Config::from_toml_with(text, &o).unwrap();
        assert_eq!(c.smtp.listeners[0].address.port(), 0);
        assert_eq!(c.smtp.listeners[1].address.port(), 26);
    }

    #[test]
    fn bad_listener_tls_and_auth_settings_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[smtp]\nlisten = \"127.0.0.1:25\"\n[[listeners]]\naddress = \"127.0.0.1:26\"\n",
                "smtp.listen",
            ),
            ("[[listeners]]\naddress = \"x\"\n", "listeners[0].address"),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\nproxy_protocol = true\n",
                "listeners[0].proxy_trusted_networks",
            ),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\nproxy_trusted_networks = [\"10.0.0.0/8\"]\n",
                "listeners[0].proxy_trusted_networks",
            ),
            ("[tls]\ncert_file = \"/c\"\n", "tls.key_file"),
            ("[tls]\nhandshake_timeout_ms = 0\n", "tls.handshake_timeout_ms"),
            ("[smtp]\nbare_line_feed = \"fix\"\n", "smtp.bare_line_feed"),
            (
                "[smtp]\nconnections_per_ip_max_count = 0\n",
                "smtp.connections_per_ip_max_count",
            ),
            (
                "[auth]\nfailures_per_ip_max_count = 0\n",
                "auth.failures_per_ip_max_count",
            ),
            (
                "[[accounts]]\nid = \"a\"\nnetworks = [\"10.0.0.1\"]\nsender_domains = [\"*\"]\ncredentials = [{ username = \"u\", password_hash = \"secret\" }]\n",
                "accounts[0].credentials",
            ),
        ];
        for (text, key) in cases {
            let e = Config::from_toml(text).unwrap_err();
            assert_eq!(&e.key, key, "{text}: {e}");
        }
        let twice = format!(
            "[[accounts]]\nid = \"a\"\nnetworks = [\"10.0.0.1\"]\nsender_domains = [\"*\"]\ncredentials = [{{ username = \"u\", password_hash = \"{HASH}\" }}]\n[[accounts]]\nid = \"b\"\nnetworks = [\"10.0.0.2\"]\nsender_domains = [\"*\"]\ncredentials = [{{ username = \"u\", password_hash = \"{HASH}\" }}]\n"
        );
        let e = Config::from_toml(&twice).unwrap_err();
        assert!(e.message.contains("`u`"), "{e}");
    }
}
