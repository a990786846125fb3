//! Checking AUTH credentials on a core: the password hash, the per-source throttle, and a
//! cache of logins already verified.
//!
//! Argon2 is slow on purpose (tens of milliseconds and ~19 MiB per check with the default
//! parameters), which is exactly what an executor serving thousands of connections must
//! not do inline. So a check runs on glommio's blocking thread pool, and a login that was
//! verified once is remembered in a bounded per-core cache keyed by an HMAC (with a random
//! per-core key) of user name, password and hash: a sending service's client that logs in
//! on every connection costs one HMAC after the first time, and the cache holds no
//! password nor anything that can be tested offline without the key.
//!
//! Failures are counted per source address in a bounded table: after
//! `auth.failures_per_ip_max_count` failures within `auth.failure_window_ms`, AUTH from
//! that address is answered `454 4.7.0` without looking at the password until the window
//! ends, so guessing costs the guesser time and costs corerelay nothing. The table and the
//! cache are per core, like every other piece of mutable state.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use ring::hmac;

use crate::account::{AccountRef, Directory};
use crate::config::AuthConfig;
use crate::smtp::reply::{Reply, catalogue};
use crate::smtp::server::Credentials;

/// Verified logins a core remembers; when full, the cache starts over.
const VERIFIED_CACHE_MAX_COUNT: usize = 4096;

/// A hash checked when the user name is unknown, so that an unknown name takes as long
/// to refuse as a wrong password (no user enumeration by timing). Argon2id with the
/// crate's default parameters, of a random password nobody knows.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Y29yZXJlbGF5ZGVjb3k$GbSYbaFZyjYdGdVzXOtMhZtW9KGxVeCJ7Nk5jmXxxBA";

/// One address's recent failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
}

/// Failures per source address, bounded.
#[derive(Debug)]
pub struct FailureTable {
    config: AuthConfig,
    by_ip: HashMap<IpAddr, Failures>,
}

impl FailureTable {
    pub fn new(config: AuthConfig) -> FailureTable {
        FailureTable {
            config,
            by_ip: HashMap::new(),
        }
    }

    /// Whether `ip` has used up its failures in the current window.
    pub fn throttled(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_ip.get(&ip).is_some_and(|f| {
            now.duration_since(f.window_start) < self.config.failure_window
                && f.count >= self.config.failures_per_ip_max_count
        })
    }

    /// Counts a failure of `ip`. When the table is full, expired windows are dropped
    /// first, then the oldest window, so the table never grows past its bound.
    pub fn record(&mut self, ip: IpAddr, now: Instant) {
        let window = self.config.failure_window;
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= self.config.tracked_ips_max_count {
            self.by_ip
                .retain(|_, f| now.duration_since(f.window_start) < window);
            if self.by_ip.len() >= self.config.tracked_ips_max_count
                && let Some(oldest) = self
                    .by_ip
                    .iter()
                    .min_by_key(|(_, f)| f.window_start)
                    .map(|(ip, _)| *ip)
            {
                self.by_ip.remove(&oldest);
            }
        }
        let entry = self.by_ip.entry(ip).or_insert(Failures {
            count: 0,
            window_start: now,
        });
        if now.duration_since(entry.window_start) >= window {
            *entry = Failures {
                count: 0,
                window_start: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// A core's AUTH checker.
pub struct Authenticator {
    failures: RefCell<FailureTable>,
    verified: RefCell<HashMap<[u8; 32], ()>>,
    key: hmac::Key,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Authenticator {
        let rng = ring::rand::SystemRandom::new();
        // Key generation from the OS RNG does not fail on Linux; should it, a key from
        // the clock still keeps the cache entries unguessable to a remote client.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            let seed = format!("{:?}{:?}", Instant::now(), std::thread::current().id());
            hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes())
        });
        Authenticator {
            failures: RefCell::new(FailureTable::new(config)),
            verified: RefCell::new(HashMap::new()),
            key,
        }
    }

    /// Checks `credentials` from `peer` against the directory: the account on success,
    /// `535 5.7.8` on failure, `454 4.7.0` while `peer` is throttled.
    pub async fn authenticate(
        &self,
        directory: &Directory,
        peer: IpAddr,
        credentials: Credentials,
    ) -> Result<AccountRef, Reply> {
        if self.failures.borrow().throttled(peer, Instant::now()) {
            return Err(catalogue::AUTH_THROTTLED);
        }
        let found = directory.credential(&credentials.username);
        // corerelay does not let one login act for another (no proxy authorization).
        let proxying = !credentials.authzid.is_empty() && credentials.authzid != credentials.username;
        let hash = found.map(|(_, h)| h).unwrap_or(DECOY_HASH).to_string();
        let ok = self.verify(&credentials, hash).await && found.is_some() && !proxying;
        match found {
            Some((account, _)) if ok => Ok(account.clone()),
            _ => {
                self.failures.borrow_mut().record(peer, Instant::now());
                Err(catalogue::AUTH_FAILED)
            }
        }
    }

    /// Whether the password matches the PHC hash: from the cache, or by Argon2 on the
    /// blocking pool (remembered when it matches).
    async fn verify(&self, credentials: &Credentials, hash: String) -> bool {
        let tag = hmac::sign(
            &self.key,
            &[
                credentials.username.as_bytes(),
                b"\0",
                credentials.password.as_bytes(),
                b"\0",
                hash.as_bytes(),
            ]
            .concat(),
        );
        let mut cache_key = [0u8; 32];
        cache_key.copy_from_slice(tag.as_ref());
        if self.verified.borrow().contains_key(&cache_key) {
            return true;
        }
        let password = credentials.password.clone();
        let ok = glommio::executor()
            .spawn_blocking(move || verify_password(&password, &hash))
            .await;
        if ok {
            let mut verified = self.verified.borrow_mut();
            if verified.len() >= VERIFIED_CACHE_MAX_COUNT {
                verified.clear();
            }
            verified.insert(cache_key, ());
        }
        ok
    }

    #[cfg(test)]
    fn failures_len(&self) -> usize {
        self.failures.borrow().len()
    }
}

/// Argon2 (any variant the PHC string names) check of `password` against `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A PHC Argon2id hash of `password` with a random salt (`corerelay hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;
    let mut salt_bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt_bytes)
        .map_err(|_| "no randomness for the salt".to_string())?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    fn auth_config(max: u32, tracked: usize) -> AuthConfig {
        AuthConfig {
            failures_per_ip_max_count: max,
            failure_window: Duration::from_secs(60),
            tracked_ips_max_count: tracked,
        }
    }

    #[test]
    fn hashes_verify_and_the_decoy_is_a_valid_hash() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &hash));
        assert!(!verify_password("s3cret ", &hash));
        assert!(!verify_password("x", "not a hash"));
        assert!(PasswordHash::new(DECOY_HASH).is_ok());
        assert!(!verify_password("", DECOY_HASH));
    }

    #[test]
    fn failures_throttle_per_address_within_the_window_and_stay_bounded() {
        let mut t = FailureTable::new(auth_config(3, 4));
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            t.record(ip, now);
        }
        assert!(!t.throttled(ip, now));
        t.record(ip, now);
        assert!(t.throttled(ip, now));
        assert!(
            !t.throttled("192.0.2.2".parse().unwrap(), now),
            "other addresses are not"
        );
        assert!(!t.throttled(ip, now + Duration::from_secs(61)), "the window ends");
        t.record(ip, now + Duration::from_secs(61));
        assert!(
            !t.throttled(ip, now + Duration::from_secs(61)),
            "a new window starts at one"
        );
        for i in 0..100u8 {
            t.record(IpAddr::from([10, 0, 0, i]), now + Duration::from_millis(i as u64));
            assert!(t.len() <= 4);
        }
    }

    #[test]
    fn authenticate_checks_the_hash_throttles_and_caches() {
        let hash = hash_password("pw").unwrap();
        let config = Config::from_toml(&format!(
            "[[accounts]]\nid = \"api\"\nnetworks = [\"10.0.0.0/8\"]\nsender_domains = [\"*\"]\ncredentials = [{{ username = \"u\", password_hash = \"{hash}\" }}]\n"
        ))
        .unwrap();
        let directory = Directory::new(&config.accounts, 1);
        let ex = glommio::LocalExecutorBuilder::default()
            .io_memory(512 << 10)
            .make()
            .unwrap();
        ex.run(async move {
            let auth = Authenticator::new(auth_config(2, 100));
            let peer: IpAddr = "192.0.2.9".parse().unwrap();
            let creds = |user: &str, pw: &str, authzid: &str| Credentials {
                authzid: authzid.into(),
                username: user.into(),
                password: pw.into(),
            };
            let ok = auth.authenticate(&directory, peer, creds("u", "pw", "")).await;
            assert_eq!(ok.unwrap().id, "api");
            let started = Instant::now();
            assert!(
                auth.authenticate(&directory, peer, creds("u", "pw", "u"))
                    .await
                    .is_ok()
            );
            assert!(
                started.elapsed() < Duration::from_millis(5),
                "the second login is cached"
            );
            assert_eq!(
                auth.authenticate(&directory, peer, creds("u", "pw", "other"))
                    .await
                    .unwrap_err(),
                catalogue::AUTH_FAILED,
                "no proxy authorization"
            );
            assert_eq!(
                auth.authenticate(&directory, peer, creds("nobody", "pw", ""))
                    .await
                    .unwrap_err(),
                catalogue::AUTH_FAILED
            );
            assert_eq!(
                auth.authenticate(&directory, peer, creds("u", "pw", ""))
                    .await
                    .unwrap_err(),
                catalogue::AUTH_THROTTLED,
                "two failures: even the right password waits for the window"
            );
            let other: IpAddr = "192.0.2.10".parse().unwrap();
            assert_eq!(
                auth.authenticate(&directory, other, creds("u", "wrong", ""))
                    .await
                    .unwrap_err(),
                catalogue::AUTH_FAILED
            );
            assert_eq!(auth.failures_len(), 2);
        });
    }
}
