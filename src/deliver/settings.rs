//! The delivery settings a reload replaces, as one snapshot per core: the routing table
//! (sources and their EHLO names and bind addresses, pools, domain routes, classes, the
//! limits and timeouts per site and source), `[delivery]`'s timeouts, retry schedule and
//! smarthost, and `[bounce]`.
//!
//! The engine holds the current snapshot in an `Rc` and swaps it whole, so every routing
//! decision reads one generation, never a mix. Ready queues are keyed by the generation
//! that routed their jobs: a connection task keeps the snapshot of its queue, so a
//! transaction in flight finishes under the settings it started with, while the jobs still
//! waiting in a queue of an older generation are taken out and routed again under the new
//! one (see `Deliverer::retire_stale_queues`). Messages in the scheduled tier are routed
//! when their attempt comes, so they meet the new settings by themselves.
//!
//! What the engine built once at start stays until a restart: the resolver (its
//! nameservers, timeout and attempts), the core's connection semaphore, and the memory of
//! failed TLS handshakes. [`needs_restart`] names those keys when a reload changes them.

use std::cell::RefCell;

use super::connection::Timeouts;
use super::outcome::Outcome;
use crate::config::{BounceConfig, Config, DeliveryConfig};
use crate::observe::metrics::{ClassMetrics, CoreMetrics};
use crate::route::egress::{Egress, Picker};

/// One generation of delivery settings.
#[derive(Debug)]
pub struct Settings {
    /// Counts the swaps on this core; part of every ready queue's key.
    pub generation: u64,
    pub delivery: DeliveryConfig,
    pub bounce: BounceConfig,
    pub egress: Egress,
    /// `[delivery]`'s phase timeouts (a route may override each).
    pub timeouts: Timeouts,
    /// Whose turn it is in each pool; a new generation starts the turns over, since pools
    /// may have changed members.
    pub picker: RefCell<Picker>,
    /// Per pool (the site class of the metrics), its delivery counters; resolved here,
    /// once per generation, so delivery only indexes them.
    pub classes: Vec<ClassMetrics>,
}

impl Settings {
    pub fn new(config: &Config, generation: u64, metrics: &CoreMetrics) -> Settings {
        let egress = Egress::new(config);
        let classes = egress
            .config()
            .pools
            .iter()
            .map(|p| metrics.class(&p.name))
            .collect();
        Settings {
            generation,
            delivery: config.delivery.clone(),
            bounce: config.bounce.clone(),
            egress,
            timeouts: Timeouts::from(&config.delivery),
            picker: RefCell::new(Picker::default()),
            classes,
        }
    }

    /// Counts what an attempt gave each recipient routed by `pool`.
    pub fn count_outcomes(&self, pool: usize, outcomes: &[(usize, Outcome)]) {
        let Some(class) = self.classes.get(pool) else {
            return;
        };
        for (_, outcome) in outcomes {
            match outcome {
                Outcome::Delivered(_) => class.delivered.increment(1),
                Outcome::Deferred(_) => class.deferred.increment(1),
                Outcome::Failed(_) => class.failed.increment(1),
            }
        }
    }

    /// Records the time of one transaction of mail routed by `pool`.
    pub fn record_attempt(&self, pool: usize, seconds: f64) {
        if let Some(class) = self.classes.get(pool) {
            class.attempt_seconds.record(seconds);
        }
    }

    /// True when `config` would give these same settings (a reload that changed only
    /// other sections leaves delivery alone: no queue is retired).
    pub fn same_as(&self, config: &Config) -> bool {
        self.delivery == config.delivery && self.bounce == config.bounce && self.egress == Egress::new(config)
    }

    /// The next source of `pool` for this generation's routing.
    pub fn pick(&self, pool: usize) -> usize {
        self.picker.borrow_mut().pick(&self.egress, pool)
    }
}

/// The delivery keys whose change a reload cannot apply (built once at start), by name.
pub fn needs_restart(new: &Config, running: &Config) -> Vec<&'static str> {
    let (n, r) = (&new.delivery, &running.delivery);
    let mut out = Vec::new();
    if n.dns_servers != r.dns_servers {
        out.push("delivery.dns_servers");
    }
    if n.dns_timeout != r.dns_timeout {
        out.push("delivery.dns_timeout_ms");
    }
    if n.dns_attempts_count != r.dns_attempts_count {
        out.push("delivery.dns_attempts_count");
    }
    if n.concurrency_per_core_max_count != r.concurrency_per_core_max_count {
        out.push("delivery.concurrency_per_core_max_count");
    }
    if new.egress.tls_failure_memory != running.egress.tls_failure_memory {
        out.push("egress.tls_failure_memory_ms");
    }
    if new.egress.tls_failure_hosts_max_count != running.egress.tls_failure_hosts_max_count {
        out.push("egress.tls_failure_hosts_max_count");
    }
    out
}

/// Refuses a reload whose new or changed source address this host cannot send from: the
/// connections from it would all fail, and every message routed there would be deferred.
/// Addresses that did not change are not probed again (one may be down for a while
/// without blocking unrelated reloads).
pub fn check_new_sources(new: &Config, running: &Config) -> Result<(), String> {
    for source in &new.egress.sources {
        let Some(ip) = source.bind else { continue };
        let unchanged = running
            .egress
            .sources
            .iter()
            .any(|s| s.name == source.name && s.bind == Some(ip));
        if unchanged {
            continue;
        }
        // Binding a UDP socket to port 0 checks the address the way a connect from it would
        // (EADDRNOTAVAIL when no interface has it), with no traffic.
        std::net::UdpSocket::bind((ip, 0))
            .map_err(|e| format!("egress source `{}`: cannot send from {ip}: {e}", source.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[delivery]
dns_servers = ["127.0.0.1:53"]
[[egress.sources]]
name = "s1"
bind = "127.0.0.2"
[[egress.pools]]
name = "p"
sources = { s1 = 1 }
[[egress.routes]]
domains = ["a.example"]
pool = "p"
smarthost = "127.0.0.1:2525"
"#;

    fn settings(toml: &str) -> Settings {
        Settings::new(&Config::from_toml(toml).unwrap(), 1, &CoreMetrics::new(0, []))
    }

    #[test]
    fn only_routing_and_delivery_changes_make_new_settings() {
        let base = settings(BASE);
        let same = Config::from_toml(&format!("{BASE}\n[smtp]\nmessage_max_bytes = 1000\n")).unwrap();
        assert!(base.same_as(&same), "another section changed only");
        let routed = Config::from_toml(&BASE.replace("2525", "2526")).unwrap();
        assert!(!base.same_as(&routed), "a route's smarthost moved");
        let ehlo = Config::from_toml(&BASE.replace("bind = \"127.0.0.2\"", "ehlo = \"out.example\""));
        assert!(!base.same_as(&ehlo.unwrap()), "a source's EHLO name changed");
        let retry = Config::from_toml(&BASE.replace("[delivery]", "[delivery]\nretry_schedule_ms = [5]"));
        assert!(!base.same_as(&retry.unwrap()), "the retry schedule changed");
    }

    #[test]
    fn the_resolver_and_the_connection_budget_need_a_restart() {
        let running = Config::from_toml(BASE).unwrap();
        assert!(needs_restart(&running, &running).is_empty());
        let changed = BASE.replace(
            "dns_servers = [\"127.0.0.1:53\"]",
            "dns_servers = [\"127.0.0.1:5353\"]\nconcurrency_per_core_max_count = 7",
        );
        let new = Config::from_toml(&changed).unwrap();
        assert_eq!(
            needs_restart(&new, &running),
            ["delivery.dns_servers", "delivery.concurrency_per_core_max_count"]
        );
    }

    #[test]
    fn a_new_source_address_must_be_on_this_host() {
        let running = Config::from_toml(BASE).unwrap();
        let moved = Config::from_toml(&BASE.replace("127.0.0.2", "127.0.0.9")).unwrap();
        assert_eq!(check_new_sources(&moved, &running), Ok(()));
        // 192.0.2.0/24 is TEST-NET-1: no host has it.
        let away = Config::from_toml(&BASE.replace("127.0.0.2", "192.0.2.1")).unwrap();
        let why = check_new_sources(&away, &running).unwrap_err();
        assert!(
            why.contains("egress source `s1`: cannot send from 192.0.2.1"),
            "{why}"
        );
        // Unchanged, it is not probed again.
        assert_eq!(check_new_sources(&away, &away), Ok(()));
    }

    #[test]
    fn a_pool_that_grows_starts_its_turns_over() {
        let old = settings(BASE);
        let pool = old.egress.config().pool_index("p").unwrap();
        let mut picker = Picker::default();
        assert_eq!(old.egress.source(picker.pick(&old.egress, pool)).name, "s1");
        let grown = BASE.replace(
            "[[egress.pools]]",
            "[[egress.sources]]\nname = \"s2\"\n[[egress.pools]]",
        );
        let grown = grown.replace("sources = { s1 = 1 }", "sources = { s1 = 1, s2 = 1 }");
        let new = settings(&grown);
        // The same picker over the grown pool (a routing task of the old generation may
        // still pick): its state is reset, not indexed out of bounds.
        let picked: Vec<String> = (0..4)
            .map(|_| new.egress.source(picker.pick(&new.egress, pool)).name.clone())
            .collect();
        assert_eq!(picked, ["s1", "s2", "s1", "s2"]);
        assert_eq!(new.egress.source(new.pick(pool)).name, "s1");
    }
}
