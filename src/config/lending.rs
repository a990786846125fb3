//! Lending configuration: the `[lending]` section. A core with CPU to spare does the
//! tracking rewrite and DKIM signing of messages owned by another core (see
//! [`crate::deliver::lend`]); these keys bound how much and when.
//!
//! Kept apart from `mod.rs` so the keys of this one concern read together.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[lending]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLending {
    pub window_count: usize,
    pub backlog_min_count: usize,
    pub shares: usize,
    pub timeout_ms: u64,
}

impl Default for RawLending {
    fn default() -> Self {
        RawLending {
            window_count: 4,
            backlog_min_count: 8,
            shares: 100,
            timeout_ms: 2000,
        }
    }
}

/// How a core lends its spare CPU to the transforms of other cores' messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LendingConfig {
    /// Transforms one core may have in flight at one other core (0: lending is off).
    pub window_count: usize,
    /// An owner lends only while at least this many of its messages are in delivery
    /// (routed, not yet settled): below that it has the CPU to do its own.
    pub backlog_min_count: usize,
    /// glommio shares of the task queue that does other cores' transforms.
    pub shares: usize,
    /// A lent transform not back within this is done by the owner itself.
    pub timeout: Duration,
}

/// Validates `[lending]`.
pub fn validate(raw: &RawLending) -> Result<LendingConfig, ConfigError> {
    if !(1..=1000).contains(&raw.shares) {
        return Err(ConfigError::new(
            "lending.shares",
            format!("{} is not within 1..=1000 (glommio's share range)", raw.shares),
        ));
    }
    if raw.timeout_ms == 0 {
        return Err(ConfigError::new("lending.timeout_ms", "must be greater than 0"));
    }
    // The mesh channel between two cores holds the window: keep it a channel's size.
    if raw.window_count > 1024 {
        return Err(ConfigError::new(
            "lending.window_count",
            format!("{} is above the maximum of 1024", raw.window_count),
        ));
    }
    Ok(LendingConfig {
        window_count: raw.window_count,
        backlog_min_count: raw.backlog_min_count,
        shares: raw.shares,
        timeout: Duration::from_millis(raw.timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    #[test]
    fn defaults_and_bounds() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.lending.window_count, 4);
        assert_eq!(c.lending.timeout, Duration::from_millis(2000));
        let off = Config::from_toml("[lending]\nwindow_count = 0\n").unwrap();
        assert_eq!(off.lending.window_count, 0);
        for (bad, key) in [
            ("shares = 0", "lending.shares"),
            ("shares = 1001", "lending.shares"),
            ("timeout_ms = 0", "lending.timeout_ms"),
            ("window_count = 5000", "lending.window_count"),
        ] {
            let err = Config::from_toml(&format!("[lending]\n{bad}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }
}
