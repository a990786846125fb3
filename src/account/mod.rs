//! Accounts: who is sending, and which core owns them.
//!
//! The [`Directory`] is an immutable snapshot built once from the configuration and read by
//! every core. It answers two questions: at `MAIL FROM`, which account does this client
//! (source IP + sender domain) belong to ([`Directory::identify`]); and which core owns that
//! account's spool records and queues ([`Directory::owner`]). After DATA,
//! [`check_header_from`] holds the header `From:` to the same sender domains.
//!
//! A client that authenticated (SMTP AUTH) is identified by its login instead of its
//! source address: [`Directory::credential`] finds the account of a user name (the
//! password hash is checked by `ingress::auth`, off the session), and
//! [`Directory::identify_authenticated`] holds its MAIL FROM to the account's domains.

pub mod header;
pub mod limits;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{AccountConfig, Credential, SenderDomains};
use crate::message::domain_of;
use crate::smtp::reply::{Enhanced, Reply};

pub use header::check_header_from;

/// One account, as every core sees it.
#[derive(Debug)]
pub struct Account {
    pub id: String,
    pub networks: Vec<ipnet::IpNet>,
    pub sender_domains: SenderDomains,
    /// The core that owns this account.
    pub owner: usize,
    /// AUTH logins of this account (user name and PHC password hash).
    pub credentials: Vec<Credential>,
    /// Weight, placement and limits.
    pub share: Share,
}

/// What an account may take of its owner core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Its share at every DRR stage of the owner core.
    pub weight: u32,
    /// The owner core serves no other account.
    pub dedicated: bool,
    /// Messages accepted per second at most; 0 = no limit.
    pub messages_per_second_max_count: u32,
    /// Bytes queued for delivery at most; 0 = no limit.
    pub queued_max_bytes: u64,
}

impl Default for Share {
    fn default() -> Self {
        Share {
            weight: 1,
            dedicated: false,
            messages_per_second_max_count: 0,
            queued_max_bytes: 0,
        }
    }
}

/// A shared reference to an account; cheap to clone into a session.
pub type AccountRef = Arc<Account>;

/// The account directory: every account with its owner core.
#[derive(Debug, Clone)]
pub struct Directory {
    accounts: Vec<AccountRef>,
    cores: usize,
}

const NOT_ALLOWED: Enhanced = Enhanced::new(5, 7, 1);

impl Directory {
    /// Builds the directory for `cores` executors, placed by [`placement`].
    pub fn new(accounts: &[AccountConfig], cores: usize) -> Directory {
        assert!(cores > 0, "a directory needs at least one core");
        let owners = placement(accounts, cores);
        let accounts = accounts
            .iter()
            .zip(owners)
            .map(|(a, owner)| {
                Arc::new(Account {
                    id: a.id.clone(),
                    networks: a.networks.clone(),
                    sender_domains: a.sender_domains.clone(),
                    owner,
                    credentials: a.credentials.clone(),
                    share: Share {
                        weight: a.weight,
                        dedicated: a.dedicated,
                        messages_per_second_max_count: a.messages_per_second_max_count,
                        queued_max_bytes: a.queued_max_bytes,
                    },
                })
            })
            .collect();
        Directory { accounts, cores }
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    pub fn accounts(&self) -> &[AccountRef] {
        &self.accounts
    }

    pub fn get(&self, id: &str) -> Option<&AccountRef> {
        self.accounts.iter().find(|a| a.id == id)
    }

    /// Whether any account has AUTH credentials (AUTH is offered only then).
    pub fn has_credentials(&self) -> bool {
        self.accounts.iter().any(|a| !a.credentials.is_empty())
    }

    /// The account a user name logs in to, with the password hash to check. User names are
    /// unique across accounts (the configuration refuses duplicates).
    pub fn credential(&self, username: &str) -> Option<(&AccountRef, &str)> {
        self.accounts.iter().find_map(|a| {
            a.credentials
                .iter()
                .find(|c| c.username == username)
                .map(|c| (a, c.password_hash.as_str()))
        })
    }

    /// MAIL FROM of a client authenticated as `account`: the sender's domain must be one
    /// of the account's (the null sender is always allowed); the source address is not
    /// consulted, since the login identifies the account.
    pub fn identify_authenticated(&self, account: &AccountRef, mail_from: &str) -> Result<AccountRef, Reply> {
        let domain = domain_of(mail_from);
        if mail_from.is_empty() || account.sender_domains.allows(domain) {
            Ok(account.clone())
        } else {
            Err(Reply::new(
                550,
                NOT_ALLOWED,
                format!("Sender domain {domain} is not allowed for account {}", account.id),
            ))
        }
    }

    /// The core that owns `account`.
    pub fn owner(&self, account: &Account) -> usize {
        account.owner
    }

    /// The account a client at `source` sending as `mail_from` belongs to.
    ///
    /// Among the accounts whose networks contain `source` and whose sender domains allow
    /// the sender's domain, the one with the most specific network wins, and an account that
    /// lists the domain explicitly wins over one that allows any (`*`). The null sender
    /// (`<>`) is identified by source address alone. Refusals are `550 5.7.1` with the reason.
    pub fn identify(&self, source: IpAddr, mail_from: &str) -> Result<AccountRef, Reply> {
        let domain = domain_of(mail_from);
        let mut by_network = false;
        let mut best: Option<(&AccountRef, (u8, bool))> = None;
        for account in &self.accounts {
            let Some(prefix) = account
                .networks
                .iter()
                .filter(|n| n.contains(&source))
                .map(|n| n.prefix_len())
                .max()
            else {
                continue;
            };
            by_network = true;
            let allowed = mail_from.is_empty() || account.sender_domains.allows(domain);
            if !allowed {
                continue;
            }
            let explicit = matches!(account.sender_domains, SenderDomains::List(_));
            let rank = (prefix, explicit);
            if best.is_none_or(|(_, r)| rank > r) {
                best = Some((account, rank));
            }
        }
        match best {
            Some((account, _)) => Ok(account.clone()),
            None if by_network => Err(Reply::new(
                550,
                NOT_ALLOWED,
                format!("Sender domain {domain} is not allowed for this client"),
            )),
            None => Err(Reply::new(
                550,
                NOT_ALLOWED,
                format!("Relay access denied for {source}"),
            )),
        }
    }
}

/// The owner core of each account, in the order given. A dedicated account keeps its
/// `core`, or takes the highest core no other dedicated account holds (in id order, so
/// the choice is stable); an account pinned with `core` keeps it; every other account goes
/// to `shard_of(id)` over the cores that are not dedicated, so placement survives
/// restarts and does not depend on the order accounts are listed in. The configuration
/// has checked that at least one core is left undedicated (`config::fairness`); if not,
/// the hash spreads over every core rather than fail here.
pub fn placement(accounts: &[AccountConfig], cores: usize) -> Vec<usize> {
    let mut owners: Vec<Option<usize>> = accounts.iter().map(|a| a.core.filter(|&c| c < cores)).collect();
    let mut dedicated: Vec<usize> = accounts
        .iter()
        .zip(&owners)
        .filter_map(|(a, o)| a.dedicated.then_some(*o).flatten())
        .collect();
    let mut unplaced: Vec<usize> = (0..accounts.len())
        .filter(|&i| accounts[i].dedicated && owners[i].is_none())
        .collect();
    unplaced.sort_by(|&a, &b| accounts[a].id.cmp(&accounts[b].id));
    for i in unplaced {
        let Some(core) = (0..cores).rev().find(|c| !dedicated.contains(c)) else {
            break;
        };
        owners[i] = Some(core);
        dedicated.push(core);
    }
    let mut shared: Vec<usize> = (0..cores).filter(|c| !dedicated.contains(c)).collect();
    if shared.is_empty() {
        shared = (0..cores).collect();
    }
    accounts
        .iter()
        .zip(owners)
        .map(|(a, owner)| owner.unwrap_or_else(|| shared[shard_of(&a.id, shared.len())]))
        .collect()
}

/// The stable placement of an account id on `cores` shards (CRC32C of the id). Stable
/// across runs, platforms and account order.
pub fn shard_of(id: &str, cores: usize) -> usize {
    (crc32c::crc32c(id.as_bytes()) as usize) % cores
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn directory(toml: &str, cores: usize) -> Directory {
        Directory::new(&Config::from_toml(toml).unwrap().accounts, cores)
    }

    const TWO: &str = r#"
[[accounts]]
id = "wide"
networks = ["10.0.0.0/8"]
sender_domains = ["*"]
[[accounts]]
id = "shop"
networks = ["10.1.0.0/16"]
sender_domains = ["shop.example"]
core = 1
"#;

    #[test]
    fn most_specific_account_wins() {
        let d = directory(TWO, 2);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(d.identify(ip, "a@shop.example").unwrap().id, "shop");
        assert_eq!(d.identify(ip, "a@SHOP.example").unwrap().id, "shop");
        assert_eq!(d.identify(ip, "a@other.example").unwrap().id, "wide");
        assert_eq!(
            d.identify("10.9.9.9".parse().unwrap(), "a@shop.example")
                .unwrap()
                .id,
            "wide"
        );
        assert_eq!(d.identify(ip, "").unwrap().id, "shop");
    }

    #[test]
    fn refusals_say_why() {
        let d = directory(TWO, 2);
        let e = d
            .identify("192.0.2.1".parse().unwrap(), "a@shop.example")
            .unwrap_err();
        assert_eq!(e.to_wire(), "550 5.7.1 Relay access denied for 192.0.2.1\r\n");
        let only_shop = directory(
            "[[accounts]]\nid = \"shop\"\nnetworks = [\"10.1.0.0/16\"]\nsender_domains = [\"shop.example\"]\n",
            1,
        );
        let e = only_shop
            .identify("10.1.0.1".parse().unwrap(), "a@evil.example")
            .unwrap_err();
        assert_eq!(e.code, 550);
        assert!(e.text.contains("evil.example"), "{e}");
    }

    #[test]
    fn credentials_identify_their_account_and_its_domains_only() {
        let hash =
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0KnOlrDnf5bQ+PhWJDGQ1EvBg+eaHW+rUB2O7pOEBNE";
        let d = directory(
            &format!(
                "{TWO}[[accounts]]\nid = \"api\"\nnetworks = [\"192.0.2.0/24\"]\nsender_domains = [\"api.example\"]\ncredentials = [{{ username = \"u1\", password_hash = \"{hash}\" }}, {{ username = \"u2\", password_hash = \"{hash}\" }}]\n"
            ),
            2,
        );
        assert!(d.has_credentials());
        assert!(!directory(TWO, 2).has_credentials());
        let (account, h) = d.credential("u2").unwrap();
        assert_eq!((account.id.as_str(), h), ("api", hash));
        assert!(d.credential("U2").is_none(), "user names are exact");
        let account = account.clone();
        assert_eq!(
            d.identify_authenticated(&account, "a@API.example").unwrap().id,
            "api"
        );
        assert_eq!(d.identify_authenticated(&account, "").unwrap().id, "api");
        let e = d.identify_authenticated(&account, "a@shop.example").unwrap_err();
        assert_eq!(
            e.to_wire(),
            "550 5.7.1 Sender domain shop.example is not allowed for account api\r\n"
        );
    }

    #[test]
    fn placement_is_stable_and_pins_hold() {
        let d = directory(TWO, 2);
        assert_eq!(d.get("shop").unwrap().owner, 1);
        let wide = d.get("wide").unwrap().owner;
        assert_eq!(wide, shard_of("wide", 2));
        assert_eq!(directory(TWO, 2).get("wide").unwrap().owner, wide);
        let spread: std::collections::HashSet<usize> =
            (0..64).map(|i| shard_of(&format!("acct{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "64 accounts should land on all 4 cores");
    }

    #[test]
    fn dedicated_cores_are_skipped_by_the_hash() {
        let mut toml = String::from(
            "[[accounts]]\nid = \"big\"\nnetworks = [\"10.0.0.1\"]\nsender_domains = [\"*\"]\ndedicated = true\n",
        );
        for i in 0..40 {
            toml.push_str(&format!(
                "[[accounts]]\nid = \"small{i}\"\nnetworks = [\"10.0.0.2\"]\nsender_domains = [\"*\"]\n"
            ));
        }
        let d = directory(&toml, 4);
        let big = d.get("big").unwrap();
        assert_eq!((big.owner, big.share.dedicated), (3, true), "the highest core");
        let others: std::collections::HashSet<usize> = d
            .accounts()
            .iter()
            .filter(|a| a.id != "big")
            .map(|a| a.owner)
            .collect();
        assert_eq!(
            others,
            [0, 1, 2].into(),
            "the hash spreads over the other cores only"
        );
        let pinned = directory(
            &toml.replacen("dedicated = true\n", "dedicated = true\ncore = 0\n", 1),
            2,
        );
        assert_eq!(pinned.get("big").unwrap().owner, 0);
        assert!(
            pinned
                .accounts()
                .iter()
                .filter(|a| a.id != "big")
                .all(|a| a.owner == 1)
        );
    }
}
