//! Outbound routing configuration: egress sources (a local address to send from and the
//! EHLO name that goes with it), weighted pools of sources, recipient-domain routes
//! (pool, smarthost, TLS policy, AUTH, limits), reputation classes, the default limits
//! per site and source, and bounces. Raw serde structs with named defaults, then one
//! validation pass that turns names into indexes so delivery never looks a name up.
//!
//! Nothing configured means one implicit source `default` (the system's choice of
//! address, `delivery.helo_name`) in one implicit pool `default`: the relay works out of
//! the box and a config only grows what it needs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// The name of the implicit source and pool.
pub const DEFAULT_NAME: &str = "default";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEgress {
    /// Pool used when no class, route or account picks one; empty means `default`.
    pub default_pool: String,
    pub site_connections_max_count: usize,
    pub site_messages_per_minute_max_count: u32,
    pub transaction_recipients_max_count: usize,
    pub tls: String,
    pub tls_verify: bool,
    pub tls_failure_memory_ms: u64,
    pub tls_failure_hosts_max_count: usize,
    /// Reputation class → pool.
    pub classes: BTreeMap<String, String>,
    pub sources: Vec<RawSource>,
    pub pools: Vec<RawPool>,
    pub routes: Vec<RawRoute>,
}

impl Default for RawEgress {
    fn default() -> Self {
        RawEgress {
            default_pool: String::new(),
            site_connections_max_count: 32,
            site_messages_per_minute_max_count: 0,
            transaction_recipients_max_count: 100,
            tls: "opportunistic".into(),
            tls_verify: true,
            tls_failure_memory_ms: 3_600_000,
            tls_failure_hosts_max_count: 4096,
            classes: BTreeMap::new(),
            sources: Vec::new(),
            pools: Vec::new(),
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: String,
    /// Local address to bind before connecting; absent: the system picks.
    #[serde(default)]
    pub bind: Option<String>,
    /// EHLO name sent from this source; absent: `delivery.helo_name`.
    #[serde(default)]
    pub ehlo: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: String,
    /// Source name → weight.
    pub sources: BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    /// `example.com` matches that domain; `.example.com` matches every subdomain of it.
    pub domains: Vec<String>,
    pub pool: Option<String>,
    /// `HOST:PORT` to hand these recipients to instead of their MX hosts.
    pub smarthost: Option<String>,
    pub auth_user: Option<String>,
    pub auth_password: Option<String>,
    pub tls: Option<String>,
    pub tls_verify: Option<bool>,
    pub connections_max_count: Option<usize>,
    pub messages_per_connection_max_count: Option<usize>,
    pub messages_per_minute_max_count: Option<u32>,
    /// Per-phase timeouts for this route; absent: `delivery.*_timeout_ms`.
    pub connect_timeout_ms: Option<u64>,
    pub greeting_timeout_ms: Option<u64>,
    pub command_timeout_ms: Option<u64>,
    pub data_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBounce {
    pub enabled: bool,
    pub delay_notification_after_ms: u64,
    pub return_message_max_bytes: usize,
}

impl Default for RawBounce {
    fn default() -> Self {
        RawBounce {
            enabled: true,
            delay_notification_after_ms: 0,
            return_message_max_bytes: 256 << 10,
        }
    }
}

/// Whether and how STARTTLS is used towards a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// STARTTLS or no delivery (the attempt is deferred).
    Required,
    /// STARTTLS when offered; plaintext when not, or after a failed handshake.
    Opportunistic,
    /// Never STARTTLS.
    Disabled,
}

/// One source: where connections come from and what they call themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub name: String,
    pub bind: Option<IpAddr>,
    pub ehlo: String,
}

/// A weighted set of sources (indexes into [`EgressConfig::sources`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    pub members: Vec<(usize, u32)>,
}

/// A route's domain pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatch {
    Exact(String),
    /// Matches names ending in `.<suffix>` (stored without the leading dot).
    Suffix(String),
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Never the password: `check-config` prints the configuration, and logs may too.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmarthostConfig {
    pub host: String,
    pub port: u16,
    pub auth: Option<Credentials>,
}

/// Limits per (source, site).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shaping {
    pub connections_max_count: usize,
    pub messages_per_connection_max_count: usize,
    /// 0: no limit.
    pub messages_per_minute_max_count: u32,
    pub recipients_per_transaction_max_count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub policy: TlsPolicy,
    /// Check the certificate chain and name (only when `policy` is `Required`).
    pub verify: bool,
}

/// A route's own phase timeouts; `None` takes the `[delivery]` one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PhaseTimeouts {
    pub connect: Option<Duration>,
    pub greeting: Option<Duration>,
    pub command: Option<Duration>,
    pub data: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub domains: Vec<DomainMatch>,
    pub pool: Option<usize>,
    pub smarthost: Option<SmarthostConfig>,
    pub tls: TlsSettings,
    pub shaping: Shaping,
    pub timeouts: PhaseTimeouts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfig {
    pub sources: Vec<SourceConfig>,
    pub pools: Vec<PoolConfig>,
    pub routes: Vec<RouteConfig>,
    pub default_pool: usize,
    /// Reputation class → pool index.
    pub classes: HashMap<String, usize>,
    /// What a recipient without a route gets.
    pub tls: TlsSettings,
    pub shaping: Shaping,
    pub tls_failure_memory: Duration,
    pub tls_failure_hosts_max_count: usize,
}

impl EgressConfig {
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceConfig {
    pub enabled: bool,
    /// Send an `Action: delayed` notice once a message is this old; `None`: never.
    pub delay_notification_after: Option<Duration>,
    /// A returned message (RET=FULL) larger than this is returned as headers only.
    pub return_message_max_bytes: usize,
}

impl BounceConfig {
    pub fn from_raw(raw: RawBounce) -> BounceConfig {
        BounceConfig {
            enabled: raw.enabled,
            delay_notification_after: (raw.delay_notification_after_ms > 0)
                .then(|| Duration::from_millis(raw.delay_notification_after_ms)),
            return_message_max_bytes: raw.return_message_max_bytes,
        }
    }
}

/// Validates the `[egress]` section. `helo_name` is the EHLO name of sources that give
/// none; `messages_per_connection_max_count` the default of routes that give none.
pub fn validate(
    raw: RawEgress,
    helo_name: &str,
    messages_per_connection_max_count: usize,
) -> Result<EgressConfig, ConfigError> {
    let sources = sources(&raw.sources, helo_name)?;
    let pools = pools(&raw.pools, &sources)?;
    let pool_index = |key: String, name: &str| {
        pools
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| ConfigError::new(key, format!("no pool is named `{name}`")))
    };
    let default_pool = match raw.default_pool.as_str() {
        "" => pool_index("egress.default_pool".into(), DEFAULT_NAME)?,
        name => pool_index("egress.default_pool".into(), name)?,
    };
    let mut classes = HashMap::new();
    for (class, pool) in &raw.classes {
        classes.insert(
            class.clone(),
            pool_index(format!("egress.classes.{class}"), pool)?,
        );
    }
    let tls = TlsSettings {
        policy: tls_policy("egress.tls", &raw.tls)?,
        verify: raw.tls_verify,
    };
    let shaping = Shaping {
        connections_max_count: positive(
            "egress.site_connections_max_count",
            raw.site_connections_max_count,
        )?,
        messages_per_connection_max_count,
        messages_per_minute_max_count: raw.site_messages_per_minute_max_count,
        recipients_per_transaction_max_count: positive(
            "egress.transaction_recipients_max_count",
            raw.transaction_recipients_max_count,
        )?,
    };
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(i, r, tls, shaping, &pool_index))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EgressConfig {
        sources,
        pools,
        routes,
        default_pool,
        classes,
        tls,
        shaping,
        tls_failure_memory: Duration::from_millis(raw.tls_failure_memory_ms),
        tls_failure_hosts_max_count: positive(
            "egress.tls_failure_hosts_max_count",
            raw.tls_failure_hosts_max_count,
        )?,
    })
}

fn sources(raw: &[RawSource], helo_name: &str) -> Result<Vec<SourceConfig>, ConfigError> {
    let mut out = vec![SourceConfig {
        name: DEFAULT_NAME.into(),
        bind: None,
        ehlo: helo_name.to_string(),
    }];
    for (i, s) in raw.iter().enumerate() {
        let key = |field: &str| format!("egress.sources[{i}].{field}");
        name_ok(&key("name"), &s.name)?;
        let bind = match &s.bind {
            None => None,
            Some(b) => Some(
                b.parse::<IpAddr>()
                    .map_err(|_| ConfigError::new(key("bind"), format!("`{b}` is not an IP address")))?,
            ),
        };
        let ehlo = s.ehlo.clone().unwrap_or_else(|| helo_name.to_string());
        if ehlo.is_empty() || !ehlo.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                key("ehlo"),
                format!("`{ehlo}` is not a host name"),
            ));
        }
        let source = SourceConfig {
            name: s.name.clone(),
            bind,
            ehlo,
        };
        // A source named `default` replaces the implicit one.
        match out.iter().position(|o| o.name == s.name) {
            Some(0) if s.name == DEFAULT_NAME => out[0] = source,
            Some(_) => {
                return Err(ConfigError::new(
                    key("name"),
                    format!("source `{}` is defined twice", s.name),
                ));
            }
            None => out.push(source),
        }
    }
    Ok(out)
}

fn pools(raw: &[RawPool], sources: &[SourceConfig]) -> Result<Vec<PoolConfig>, ConfigError> {
    let mut out = vec![PoolConfig {
        name: DEFAULT_NAME.into(),
        members: vec![(0, 1)],
    }];
    for (i, p) in raw.iter().enumerate() {
        let key = format!("egress.pools[{i}].sources");
        name_ok(&format!("egress.pools[{i}].name"), &p.name)?;
        if p.sources.is_empty() {
            return Err(ConfigError::new(key, "a pool needs at least one source"));
        }
        let mut members = Vec::with_capacity(p.sources.len());
        for (name, &weight) in &p.sources {
            let index = sources
                .iter()
                .position(|s| &s.name == name)
                .ok_or_else(|| ConfigError::new(key.clone(), format!("no source is named `{name}`")))?;
            if weight == 0 {
                return Err(ConfigError::new(
                    key.clone(),
                    format!("source `{name}` has weight 0"),
                ));
            }
            members.push((index, weight));
        }
        let pool = PoolConfig {
            name: p.name.clone(),
            members,
        };
        match out.iter().position(|o| o.name == p.name) {
            Some(0) if p.name == DEFAULT_NAME => out[0] = pool,
            Some(_) => {
                return Err(ConfigError::new(
                    format!("egress.pools[{i}].name"),
                    format!("pool `{}` is defined twice", p.name),
                ));
            }
            None => out.push(pool),
        }
    }
    Ok(out)
}

fn route(
    i: usize,
    r: RawRoute,
    tls_default: TlsSettings,
    shaping_default: Shaping,
    pool_index: &impl Fn(String, &str) -> Result<usize, ConfigError>,
) -> Result<RouteConfig, ConfigError> {
    let key = |field: &str| format!("egress.routes[{i}].{field}");
    if r.domains.is_empty() {
        return Err(ConfigError::new(
            key("domains"),
            "a route needs at least one domain",
        ));
    }
    let domains = r
        .domains
        .iter()
        .map(|d| {
            domain_match(d).ok_or_else(|| ConfigError::new(key("domains"), format!("`{d}` is not a domain")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pool = r
        .pool
        .as_deref()
        .map(|p| pool_index(key("pool"), p))
        .transpose()?;
    let auth = match (r.auth_user, r.auth_password) {
        (None, None) => None,
        (Some(user), Some(password)) if !user.is_empty() => Some(Credentials { user, password }),
        _ => {
            return Err(ConfigError::new(
                key("auth_user"),
                "AUTH needs both auth_user and auth_password",
            ));
        }
    };
    let smarthost = match r.smarthost {
        None if auth.is_some() => {
            return Err(ConfigError::new(
                key("auth_user"),
                "AUTH is only for a smarthost route",
            ));
        }
        None => None,
        Some(s) => {
            let (host, port) = super::host_port(&key("smarthost"), &s)?;
            Some(SmarthostConfig { host, port, auth })
        }
    };
    let tls = TlsSettings {
        policy: match &r.tls {
            Some(t) => tls_policy(&key("tls"), t)?,
            None => tls_default.policy,
        },
        verify: r.tls_verify.unwrap_or(tls_default.verify),
    };
    if smarthost.as_ref().is_some_and(|s| s.auth.is_some()) && tls.policy != TlsPolicy::Required {
        // Credentials never cross the network in plaintext.
        return Err(ConfigError::new(
            key("tls"),
            "a route with AUTH needs tls = \"required\"",
        ));
    }
    let shaping = Shaping {
        connections_max_count: positive(
            &key("connections_max_count"),
            r.connections_max_count
                .unwrap_or(shaping_default.connections_max_count),
        )?,
        messages_per_connection_max_count: positive(
            &key("messages_per_connection_max_count"),
            r.messages_per_connection_max_count
                .unwrap_or(shaping_default.messages_per_connection_max_count),
        )?,
        messages_per_minute_max_count: r
            .messages_per_minute_max_count
            .unwrap_or(shaping_default.messages_per_minute_max_count),
        recipients_per_transaction_max_count: shaping_default.recipients_per_transaction_max_count,
    };
    let timeout = |field: &str, ms: Option<u64>| match ms {
        Some(0) => Err(ConfigError::new(key(field), "must be greater than 0")),
        other => Ok(other.map(Duration::from_millis)),
    };
    let timeouts = PhaseTimeouts {
        connect: timeout("connect_timeout_ms", r.connect_timeout_ms)?,
        greeting: timeout("greeting_timeout_ms", r.greeting_timeout_ms)?,
        command: timeout("command_timeout_ms", r.command_timeout_ms)?,
        data: timeout("data_timeout_ms", r.data_timeout_ms)?,
    };
    Ok(RouteConfig {
        domains,
        pool,
        smarthost,
        tls,
        shaping,
        timeouts,
    })
}

fn domain_match(d: &str) -> Option<DomainMatch> {
    let d = d.trim().to_ascii_lowercase();
    let d = d.strip_suffix('.').unwrap_or(&d).to_string();
    let (suffix, name) = match d.strip_prefix('.') {
        Some(rest) => (true, rest.to_string()),
        None => (false, d),
    };
    let valid = !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    match (valid, suffix) {
        (false, _) => None,
        (true, true) => Some(DomainMatch::Suffix(name)),
        (true, false) => Some(DomainMatch::Exact(name)),
    }
}

fn tls_policy(key: &str, s: &str) -> Result<TlsPolicy, ConfigError> {
    match s {
        "required" => Ok(TlsPolicy::Required),
        "opportunistic" => Ok(TlsPolicy::Opportunistic),
        "disabled" => Ok(TlsPolicy::Disabled),
        other => Err(ConfigError::new(
            key,
            format!("`{other}` is not \"required\", \"opportunistic\" or \"disabled\""),
        )),
    }
}

fn name_ok(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("`{name}` must be ASCII letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn positive(key: &str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
