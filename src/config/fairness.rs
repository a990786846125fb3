//! Fairness configuration: the `[fairness]` section (DRR quanta, glommio task-queue shares,
//! the default per-account limits), the per-account keys that shape an account's share
//! (`weight`, `dedicated`, `messages_per_second_max_count`, `queued_max_bytes`), and the
//! placement checks that need the core count (`dedicated` accounts).
//!
//! Kept apart from `mod.rs` so the keys of this one concern read together, as `egress` does.

use std::time::Duration;

use serde::Deserialize;

use super::{AccountConfig, ConfigError};

/// `[fairness]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFairness {
    pub spool_quantum_bytes: u64,
    pub ingress_shares: usize,
    pub ingress_latency_ms: u64,
    pub io_poll_max_ms: u64,
    pub delivery_shares: usize,
    pub account_messages_per_second_max_count: u32,
    pub account_queued_max_bytes: u64,
    pub steer_placed_connections: bool,
}

impl Default for RawFairness {
    fn default() -> Self {
        RawFairness {
            spool_quantum_bytes: 65_536,
            ingress_shares: 1000,
            ingress_latency_ms: 1,
            io_poll_max_ms: 1,
            delivery_shares: 250,
            account_messages_per_second_max_count: 0,
            account_queued_max_bytes: 0,
            steer_placed_connections: true,
        }
    }
}

/// How the work of one core is shared between accounts and between latency classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairnessConfig {
    /// Bytes of spool records an account of weight 1 may put in a group commit per DRR
    /// round, when more is pending than one batch takes.
    pub spool_quantum_bytes: u64,
    /// glommio shares of the latency-sensitive task queue (SMTP sessions, HTTP).
    pub ingress_shares: usize,
    /// The latency the ingress task queue asks of the executor.
    pub ingress_latency: Duration,
    /// The longest a busy core runs tasks before it polls its I/O and the messages other
    /// cores sent it (glommio's preempt timer, which otherwise defaults to 100 ms).
    pub io_poll_max: Duration,
    /// glommio shares of the throughput task queue (delivery: router, connections).
    pub delivery_shares: usize,
    /// The kernel hands a placed account's connections (by source network) to the
    /// listener of its owner core (`ingress::steer`), instead of spreading them by hash.
    pub steer_placed_connections: bool,
}

/// Validates `[fairness]`; also returns the default per-account limits (messages per
/// second, queued bytes; 0 = none).
pub fn validate(raw: &RawFairness) -> Result<(FairnessConfig, (u32, u64)), ConfigError> {
    let shares = |key: &str, v: usize| {
        if (1..=1000).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(
                format!("fairness.{key}"),
                format!("{v} is not within 1..=1000 (glommio's share range)"),
            ))
        }
    };
    for (key, ms) in [
        ("ingress_latency_ms", raw.ingress_latency_ms),
        ("io_poll_max_ms", raw.io_poll_max_ms),
    ] {
        if ms == 0 {
            return Err(ConfigError::new(
                format!("fairness.{key}"),
                "must be greater than 0",
            ));
        }
    }
    if raw.spool_quantum_bytes < 4096 {
        return Err(ConfigError::new(
            "fairness.spool_quantum_bytes",
            format!("{} is below the minimum of 4096", raw.spool_quantum_bytes),
        ));
    }
    let config = FairnessConfig {
        spool_quantum_bytes: raw.spool_quantum_bytes,
        ingress_shares: shares("ingress_shares", raw.ingress_shares)?,
        ingress_latency: Duration::from_millis(raw.ingress_latency_ms),
        io_poll_max: Duration::from_millis(raw.io_poll_max_ms),
        delivery_shares: shares("delivery_shares", raw.delivery_shares)?,
        steer_placed_connections: raw.steer_placed_connections,
    };
    Ok((
        config,
        (
            raw.account_messages_per_second_max_count,
            raw.account_queued_max_bytes,
        ),
    ))
}

/// An account's `weight` must be 1..=1000: a share, not a priority that starves the rest.
pub fn weight(i: usize, weight: u32) -> Result<u32, ConfigError> {
    if (1..=1000).contains(&weight) {
        Ok(weight)
    } else {
        Err(ConfigError::new(
            format!("accounts[{i}].weight"),
            format!("{weight} is not within 1..=1000"),
        ))
    }
}

/// Checks `dedicated` accounts against the number of executors: at most `cores - 1` of
/// them (one core is left for everyone else), no two on one core, and no other account
/// pinned to a dedicated core.
pub fn check_dedicated(accounts: &[AccountConfig], cores: usize) -> Result<(), ConfigError> {
    let dedicated: Vec<(usize, &AccountConfig)> =
        accounts.iter().enumerate().filter(|(_, a)| a.dedicated).collect();
    if dedicated.len() > cores.saturating_sub(1) {
        let (i, a) = dedicated[dedicated.len() - 1];
        return Err(ConfigError::new(
            format!("accounts[{i}].dedicated"),
            format!(
                "{} accounts ask for a dedicated core (`{}` among them), but {cores} cores run: at most {} can have one, so that one core is left for the other accounts",
                dedicated.len(),
                a.id,
                cores.saturating_sub(1)
            ),
        ));
    }
    for (i, a) in accounts.iter().enumerate() {
        let Some(core) = a.core else { continue };
        let holder = dedicated.iter().find(|(j, d)| *j != i && d.core == Some(core));
        if let Some((_, d)) = holder {
            return Err(ConfigError::new(
                format!("accounts[{i}].core"),
                format!(
                    "account `{}` is pinned to core {core}, which is dedicated to account `{}`",
                    a.id, d.id
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn accounts(extra: &str) -> String {
        format!(
            "[server]\ncores = 3\n{}",
            ["a", "b", "c"]
                .iter()
                .map(|id| format!(
                    "[[accounts]]\nid = \"{id}\"\nnetworks = [\"10.0.0.1\"]\nsender_domains = [\"{id}.example\"]\n{}\n",
                    if *id == "a" { extra } else { "" }
                ))
                .collect::<String>()
        )
    }

    #[test]
    fn defaults_and_account_keys() {
        let c = Config::from_toml(&accounts("weight = 5\nqueued_max_bytes = 1000")).unwrap();
        assert_eq!(c.accounts[0].weight, 5);
        assert_eq!(c.accounts[0].queued_max_bytes, 1000);
        assert_eq!(c.accounts[1].weight, 1);
        assert_eq!(c.accounts[1].messages_per_second_max_count, 0);
        assert_eq!(c.fairness.ingress_shares, 1000);
        let c = Config::from_toml(&format!(
            "[fairness]\naccount_messages_per_second_max_count = 7\n{}",
            accounts("messages_per_second_max_count = 2")
        ))
        .unwrap();
        assert_eq!(c.accounts[0].messages_per_second_max_count, 2);
        assert_eq!(
            c.accounts[1].messages_per_second_max_count, 7,
            "the default applies"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::from_toml(&accounts("weight = 0")).unwrap_err();
        assert_eq!(e.key, "accounts[0].weight");
        let e = Config::from_toml("[fairness]\ndelivery_shares = 0\n").unwrap_err();
        assert_eq!(e.key, "fairness.delivery_shares");
        let e = Config::from_toml("[fairness]\ningress_latency_ms = 0\n").unwrap_err();
        assert_eq!(e.key, "fairness.ingress_latency_ms");
        let e = Config::from_toml("[server]\nhandoff_window_max_bytes = 1000\n").unwrap_err();
        assert_eq!(e.key, "server.handoff_window_max_bytes");
    }

    #[test]
    fn dedicated_cores_leave_one_for_the_rest() {
        assert!(Config::from_toml(&accounts("dedicated = true")).is_ok());
        let two = accounts("dedicated = true").replace(
            "sender_domains = [\"b.example\"]\n",
            "sender_domains = [\"b.example\"]\ndedicated = true\n",
        );
        let e = Config::from_toml(&two.replace("cores = 3", "cores = 2")).unwrap_err();
        assert_eq!(e.key, "accounts[1].dedicated", "{e}");
        assert!(e.message.contains("at most 1"), "{e}");
        assert!(
            Config::from_toml(&two).is_ok(),
            "two of three cores may be dedicated"
        );
        let pinned_onto = accounts("dedicated = true\ncore = 1").replace(
            "sender_domains = [\"c.example\"]\n",
            "sender_domains = [\"c.example\"]\ncore = 1\n",
        );
        let e = Config::from_toml(&pinned_onto).unwrap_err();
        assert_eq!(e.key, "accounts[2].core");
        assert!(e.message.contains("dedicated to account `a`"), "{e}");
    }
}
