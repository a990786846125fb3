//! Egress routing: for one message of an account and one recipient domain, which pool of
//! sources sends it and which route's settings (smarthost, TLS, AUTH, limits) apply; and,
//! per core, which source of a pool goes next.
//!
//! The order, from the most to the least specific reason to pick a pool:
//! 1. the account's reputation class (`class = "certified"` → `egress.classes`): a
//!    certified sender's mail always leaves from the certified pool;
//! 2. the recipient domain's route (exact domain, else the longest matching suffix);
//! 3. the account's own `pool`;
//! 4. `egress.default_pool`.
//!
//! The route (2) also decides the target: its smarthost, else `delivery.smarthost`, else
//! the recipient domain's MX hosts; and its TLS policy and limits, else the defaults.
//!
//! Within a pool, sources take turns by smooth weighted round robin (as nginx balances
//! upstreams): over any window of `sum(weights)` picks, each source is picked exactly
//! `weight` times, spread out rather than in runs.

use std::collections::HashMap;

use super::plan::Route;
use crate::config::Config;
use crate::config::egress::{
    Credentials, DomainMatch, EgressConfig, PhaseTimeouts, PoolConfig, Shaping, SourceConfig, TlsSettings,
};

/// Where one recipient's mail goes: a pool, and the route whose settings apply (`None`:
/// the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decision {
    pub pool: usize,
    pub route: Option<usize>,
}

/// The routing table, built from the configuration at start and at each reload; read-only.
#[derive(Debug, Clone, PartialEq)]
pub struct Egress {
    config: EgressConfig,
    /// Exact domain → route.
    exact: HashMap<String, usize>,
    /// Suffix → route, longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// Account id → (class pool, account pool).
    accounts: HashMap<String, (Option<usize>, Option<usize>)>,
    smarthost: Option<(String, u16)>,
}

impl Egress {
    pub fn new(config: &Config) -> Egress {
        let egress = config.egress.clone();
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        for (i, route) in egress.routes.iter().enumerate() {
            for domain in &route.domains {
                match domain {
                    // The first route to name a domain keeps it.
                    DomainMatch::Exact(d) => {
                        exact.entry(d.clone()).or_insert(i);
                    }
                    DomainMatch::Suffix(s) => suffixes.push((s.clone(), i)),
                }
            }
        }
        // Longest first; equal lengths keep the config order (stable sort).
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        let accounts = config
            .accounts
            .iter()
            .map(|a| {
                let class_pool = a.class.as_ref().and_then(|c| egress.classes.get(c).copied());
                let pool = a.pool.as_ref().and_then(|p| egress.pool_index(p));
                (a.id.clone(), (class_pool, pool))
            })
            .collect();
        Egress {
            config: egress,
            exact,
            suffixes,
            accounts,
            smarthost: config.delivery.smarthost.clone(),
        }
    }

    /// The pool and route for mail of `account` to a recipient in `domain`.
    pub fn decide(&self, account: &str, domain: &str) -> Decision {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let route = self.route_for(&domain);
        let (class_pool, account_pool) = self.accounts.get(account).copied().unwrap_or((None, None));
        let route_pool = route.and_then(|r| self.config.routes[r].pool);
        let pool = class_pool
            .or(route_pool)
            .or(account_pool)
            .unwrap_or(self.config.default_pool);
        Decision { pool, route }
    }

    fn route_for(&self, domain: &str) -> Option<usize> {
        if let Some(&r) = self.exact.get(domain) {
            return Some(r);
        }
        self.suffixes
            .iter()
            .find(|(suffix, _)| {
                domain.len() > suffix.len()
                    && domain.ends_with(suffix.as_str())
                    && domain.as_bytes()[domain.len() - suffix.len() - 1] == b'.'
            })
            .map(|&(_, r)| r)
    }

    /// Where the recipients of a decision go: the route's smarthost, the global smarthost,
    /// or the domain's MX hosts.
    pub fn target(&self, decision: Decision, domain: &str) -> Route {
        let routed = decision
            .route
            .and_then(|r| self.config.routes[r].smarthost.as_ref())
            .map(|s| (s.host.clone(), s.port));
        match routed.or_else(|| self.smarthost.clone()) {
            Some((host, port)) => Route::Smarthost { host, port },
            None => Route::Mx {
                domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            },
        }
    }

    pub fn shaping(&self, route: Option<usize>) -> Shaping {
        route.map_or(self.config.shaping, |r| self.config.routes[r].shaping)
    }

    /// The route's own phase timeouts (each `None` takes the `[delivery]` default).
    pub fn timeouts(&self, route: Option<usize>) -> PhaseTimeouts {
        route.map_or(PhaseTimeouts::default(), |r| self.config.routes[r].timeouts)
    }

    pub fn tls(&self, route: Option<usize>) -> TlsSettings {
        route.map_or(self.config.tls, |r| self.config.routes[r].tls)
    }

    pub fn auth(&self, route: Option<usize>) -> Option<&Credentials> {
        let r = route?;
        self.config.routes[r].smarthost.as_ref()?.auth.as_ref()
    }

    pub fn source(&self, index: usize) -> &SourceConfig {
        &self.config.sources[index]
    }

    pub fn pool(&self, index: usize) -> &PoolConfig {
        &self.config.pools[index]
    }

    pub fn config(&self) -> &EgressConfig {
        &self.config
    }
}

/// Smooth weighted round robin over every pool's sources; one per core.
#[derive(Debug, Default)]
pub struct Picker {
    /// Per pool, per member: the running weight.
    current: HashMap<usize, Vec<i64>>,
}

impl Picker {
    /// The source (index into the sources) that sends next from `pool`.
    pub fn pick(&mut self, egress: &Egress, pool: usize) -> usize {
        let members = &egress.pool(pool).members;
        let current = self.current.entry(pool).or_default();
        if current.len() != members.len() {
            // A pool that changed shape (a reload) starts its turns over.
            *current = vec![0; members.len()];
        }
        let total: i64 = members.iter().map(|&(_, w)| i64::from(w)).sum();
        let mut best = 0;
        for (i, &(_, weight)) in members.iter().enumerate() {
            current[i] += i64::from(weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        members[best].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[egress]
default_pool = "shared"
classes = { certified = "certified" }

[[egress.sources]]
name = "s1"
bind = "127.0.0.2"
[[egress.sources]]
name = "s2"
bind = "127.0.0.3"
[[egress.sources]]
name = "s3"
bind = "127.0.0.4"

[[egress.pools]]
name = "shared"
sources = { s1 = 1 }
[[egress.pools]]
name = "certified"
sources = { s2 = 1 }
[[egress.pools]]
name = "google"
sources = { s2 = 1, s3 = 3 }
[[egress.pools]]
name = "own"
sources = { s3 = 1 }

[[egress.routes]]
domains = ["gmail.com", "googlemail.com"]
pool = "google"
[[egress.routes]]
domains = [".example.net"]
smarthost = "relay.example.net:2525"
[[egress.routes]]
domains = [".deep.example.net"]
tls = "disabled"

[[accounts]]
id = "bank"
networks = ["10.0.0.1"]
sender_domains = ["*"]
class = "certified"
[[accounts]]
id = "shop"
networks = ["10.0.0.2"]
sender_domains = ["*"]
pool = "own"
[[accounts]]
id = "plain"
networks = ["10.0.0.3"]
sender_domains = ["*"]
"#;

    fn egress() -> Egress {
        Egress::new(&Config::from_toml(CONFIG).unwrap())
    }

    fn pool_name(e: &Egress, d: Decision) -> &str {
        &e.pool(d.pool).name
    }

    #[test]
    fn class_then_route_then_account_then_default() {
        let e = egress();
        let cases = [
            ("bank", "gmail.com", "certified", Some(0)),
            ("bank", "other.org", "certified", None),
            ("shop", "GMail.com", "google", Some(0)),
            ("shop", "other.org", "own", None),
            ("plain", "googlemail.com.", "google", Some(0)),
            ("plain", "other.org", "shared", None),
            ("unknown-account", "other.org", "shared", None),
        ];
        for (account, domain, pool, route) in cases {
            let d = e.decide(account, domain);
            assert_eq!((pool_name(&e, d), d.route), (pool, route), "{account} → {domain}");
        }
    }

    #[test]
    fn suffix_routes_match_subdomains_longest_first() {
        let e = egress();
        assert_eq!(e.decide("plain", "a.example.net").route, Some(1));
        assert_eq!(e.decide("plain", "x.deep.example.net").route, Some(2));
        assert_eq!(
            e.decide("plain", "example.net").route,
            None,
            "a suffix is not the apex"
        );
        assert_eq!(e.decide("plain", "badexample.net").route, None);
        let smarthost = e.target(e.decide("plain", "a.example.net"), "a.example.net");
        assert_eq!(
            smarthost,
            Route::Smarthost {
                host: "relay.example.net".into(),
                port: 2525
            }
        );
        assert_eq!(
            e.target(e.decide("plain", "Other.org"), "Other.org"),
            Route::Mx {
                domain: "other.org".into()
            }
        );
    }

    #[test]
    fn weighted_sources_take_smooth_turns() {
        let e = egress();
        let google = e.config().pool_index("google").unwrap();
        let mut picker = Picker::default();
        let names: Vec<&str> = (0..8)
            .map(|_| e.source(picker.pick(&e, google)).name.as_str())
            .collect();
        assert_eq!(names, ["s3", "s2", "s3", "s3", "s3", "s2", "s3", "s3"]);
        let shared = e.config().default_pool;
        assert_eq!(e.source(picker.pick(&e, shared)).name, "s1");
    }
}
