//! What `corerelay load` sends: one or more accounts at once, each with its own source
//! address (any of 127.0.0.0/8 on Linux, all routed to `lo`), sender, message count, size,
//! rate and concurrency — from flags (`--account name=big,source=127.0.0.2,…`) or from a
//! small TOML file (`--scenario FILE`):
//!
//! ```toml
//! target = "127.0.0.1:2525"      # optional: --target otherwise
//! to = "sink@sink.example"       # optional
//! [[accounts]]
//! name = "big"                   # X-Load-Account, and the report's name
//! from = "load@big.example"      # the sender (its domain picks the relay account)
//! source = "127.0.0.2"           # optional: the system picks
//! messages = 50000               # 0: until duration_s passes
//! size = 20480                   # body bytes
//! rate = 0.0                     # messages per second; 0: as fast as the relay takes them
//! concurrency = 20               # connections
//! duration_s = 0.0               # optional: stop sending after this long (0: no limit)
//! start_s = 0.0                  # optional: wait this long before the first message
//! group = "small"                # optional: X-Load-Group; the sink also sums the group
//! ```
//!
//! `start_s` staggers accounts of the same rate, so five independent senders do not send
//! at the very same instants (one hiccup would otherwise hit all of them at once);
//! `group` lets the sink give one percentile over several accounts' messages.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// One account's share of a load run.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountLoad {
    pub name: String,
    pub from: String,
    pub source: Option<IpAddr>,
    pub messages: u64,
    pub size_bytes: usize,
    /// Messages started per second over the account's connections (0: as fast as they go).
    pub rate_per_second: f64,
    pub concurrency: usize,
    /// Stop starting messages after this long (`None`: when `messages` are sent).
    pub duration: Option<Duration>,
    /// Wait this long after the start before the first message.
    pub start: Duration,
    /// Stamped as `X-Load-Group`: the sink sums the group's messages too.
    pub group: Option<String>,
}

impl AccountLoad {
    /// Checks that the account ends and sends something.
    pub fn validate(&self) -> Result<(), String> {
        if self.messages == 0 && self.duration.is_none() {
            return Err(format!(
                "account {}: give messages or duration_s, or it never ends",
                self.name
            ));
        }
        if self.concurrency == 0 {
            return Err(format!("account {}: concurrency must be at least 1", self.name));
        }
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "account name `{}` must be printable ASCII without spaces",
                self.name
            ));
        }
        Ok(())
    }
}

/// A scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub target: Option<SocketAddr>,
    pub to: Option<String>,
    pub accounts: Vec<RawAccountLoad>,
}

/// One `[[accounts]]` entry; keys left out take `defaults`' values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccountLoad {
    pub name: Option<String>,
    pub from: Option<String>,
    pub source: Option<IpAddr>,
    pub messages: Option<u64>,
    pub size: Option<usize>,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub duration_s: Option<f64>,
    pub start_s: Option<f64>,
    pub group: Option<String>,
}

impl RawAccountLoad {
    /// The account with `defaults` for what is not given (the name: `account<N>`).
    pub fn resolve(self, index: usize, defaults: &AccountLoad) -> Result<AccountLoad, String> {
        let duration = match self.duration_s {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(0.0) => None,
            Some(s) => return Err(format!("duration_s {s} is not a positive number of seconds")),
            None => defaults.duration,
        };
        let start = match self.start_s {
            None => defaults.start,
            Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
            Some(s) => return Err(format!("start_s {s} is not a number of seconds")),
        };
        let account = AccountLoad {
            name: self.name.unwrap_or_else(|| format!("account{index}")),
            from: self.from.unwrap_or_else(|| defaults.from.clone()),
            source: self.source.or(defaults.source),
            messages: self.messages.unwrap_or(defaults.messages),
            size_bytes: self.size.unwrap_or(defaults.size_bytes),
            rate_per_second: self.rate.unwrap_or(defaults.rate_per_second).max(0.0),
            concurrency: self.concurrency.unwrap_or(defaults.concurrency),
            duration,
            start,
            group: self.group.or_else(|| defaults.group.clone()),
        };
        account.validate()?;
        Ok(account)
    }
}

/// Parses `--account name=big,from=a@b.example,source=127.0.0.2,messages=10,size=2048,
/// rate=5,concurrency=1,duration_s=30`.
pub fn parse_account_flag(spec: &str, index: usize, defaults: &AccountLoad) -> Result<AccountLoad, String> {
    let mut raw = RawAccountLoad::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("--account: `{part}` is not key=value"))?;
        let bad = |what: &str| format!("--account: {key}=`{value}` is not {what}");
        match key {
            "name" => raw.name = Some(value.to_string()),
            "from" => raw.from = Some(value.to_string()),
            "source" => raw.source = Some(value.parse().map_err(|_| bad("an IP address"))?),
            "messages" => raw.messages = Some(value.parse().map_err(|_| bad("a count"))?),
            "size" => raw.size = Some(value.parse().map_err(|_| bad("a size in bytes"))?),
            "rate" => raw.rate = Some(value.parse().map_err(|_| bad("messages per second"))?),
            "concurrency" => raw.concurrency = Some(value.parse().map_err(|_| bad("a count"))?),
            "duration_s" => raw.duration_s = Some(value.parse().map_err(|_| bad("seconds"))?),
            "start_s" => raw.start_s = Some(value.parse().map_err(|_| bad("seconds"))?),
            "group" => raw.group = Some(value.to_string()),
            _ => return Err(format!("--account: unknown key `{key}`")),
        }
    }
    raw.resolve(index, defaults)
}

/// What a scenario file gives: its target and recipient (when given) and its accounts.
pub struct Scenario {
    pub target: Option<SocketAddr>,
    pub to: Option<String>,
    pub accounts: Vec<AccountLoad>,
}

/// Reads a scenario file.
pub fn read_file(path: &std::path::Path, defaults: &AccountLoad) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: ScenarioFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.accounts.is_empty() {
        return Err(format!("{}: no [[accounts]]", path.display()));
    }
    let accounts = file
        .accounts
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.resolve(i, defaults))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Scenario {
        target: file.target,
        to: file.to,
        accounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> AccountLoad {
        AccountLoad {
            name: "load".into(),
            from: "load@load.example".into(),
            source: None,
            messages: 100,
            size_bytes: 2048,
            rate_per_second: 0.0,
            concurrency: 10,
            duration: None,
            start: Duration::ZERO,
            group: None,
        }
    }

    #[test]
    fn flags_and_files_give_the_same_accounts() {
        let flag = parse_account_flag(
            "name=small1,from=s@small1.example,source=127.0.0.3,messages=0,rate=5,concurrency=1,duration_s=30,start_s=0.04,group=small",
            1,
            &defaults(),
        )
        .unwrap();
        assert_eq!(flag.source, Some("127.0.0.3".parse().unwrap()));
        assert_eq!(flag.duration, Some(Duration::from_secs(30)));
        assert_eq!(
            (flag.start, flag.group.as_deref()),
            (Duration::from_millis(40), Some("small"))
        );
        assert_eq!(
            (flag.messages, flag.size_bytes, flag.rate_per_second),
            (0, 2048, 5.0)
        );
        let dir = std::env::temp_dir().join(format!("corerelay-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.toml");
        std::fs::write(
            &path,
            "target = \"127.0.0.1:2600\"\n[[accounts]]\nname = \"big\"\nmessages = 5\n[[accounts]]\nname = \"small1\"\nfrom = \"s@small1.example\"\nsource = \"127.0.0.3\"\nmessages = 0\nrate = 5.0\nconcurrency = 1\nduration_s = 30.0\nstart_s = 0.04\ngroup = \"small\"\n",
        )
        .unwrap();
        let Scenario { target, to, accounts } = read_file(&path, &defaults()).unwrap();
        assert_eq!(target, Some("127.0.0.1:2600".parse().unwrap()));
        assert_eq!(to, None);
        assert_eq!(accounts[0].name, "big");
        assert_eq!(accounts[0].from, "load@load.example");
        assert_eq!(accounts[1], flag);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse_account_flag("messages=0", 0, &defaults()).unwrap_err();
        assert!(e.contains("never ends"), "{e}");
        let e = parse_account_flag("speed=3", 0, &defaults()).unwrap_err();
        assert!(e.contains("unknown key `speed`"), "{e}");
        let e = parse_account_flag("source=localhost", 0, &defaults()).unwrap_err();
        assert!(e.contains("an IP address"), "{e}");
    }
}
