//! Test support: fixed test keys, an independent verifier (mail-auth's own, fed the public
//! keys through its TXT cache instead of DNS) and chunking helpers.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use bytes::Bytes;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt};

use super::{PrivateKey, Signer};

pub const RSA_PEM: &[u8] = include_bytes!("testdata/rsa2048-pkcs8.pem");
pub const ED25519_PEM: &[u8] = include_bytes!("testdata/ed25519-pkcs8.pem");

/// An RSA-2048 signer for example.com (selector `rsa`) and its DNS record.
pub fn rsa_signer() -> (Signer, String) {
    let key = PrivateKey::from_pem(RSA_PEM).unwrap();
    let record = key.dns_record();
    (Signer::with_default_headers("example.com", "rsa", key), record)
}

/// An Ed25519 signer for example.com (selector `ed`) and its DNS record.
pub fn ed25519_signer() -> (Signer, String) {
    let key = PrivateKey::from_pem(ED25519_PEM).unwrap();
    let record = key.dns_record();
    (Signer::with_default_headers("example.com", "ed", key), record)
}

/// A TXT cache that only answers what the test put in it.
struct TxtCache(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _valid_until: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// Verifies every DKIM-Signature of `message` against the records of `keys`; one `true`
/// per signature that passes, in header order.
pub fn verify(message: &[u8], keys: &[(&Signer, &String)]) -> Vec<bool> {
    let cache = TxtCache(Mutex::new(HashMap::new()));
    for (signer, record) in keys {
        let name = format!("{}._domainkey.{}.", signer.selector(), signer.domain());
        cache.insert(
            name.into_boxed_str(),
            Txt::from(DomainKey::parse(record.as_bytes())),
            std::time::Instant::now(),
        );
    }
    let auth_message = AuthenticatedMessage::parse(message).expect("the message parses");
    // The authenticator's resolver is never asked: every key is in the cache. Should a test
    // miss it anyway, the lookup fails (no tokio runtime runs here, and the only nameserver
    // is a closed port on loopback): nothing ever reaches the network.
    let mut udp = ConnectionConfig::udp();
    udp.port = 1;
    let loopback = NameServerConfig::new(IpAddr::from([127, 0, 0, 1]), true, vec![udp]);
    let config = ResolverConfig::from_name_servers(vec![loopback]);
    let authenticator = MessageAuthenticator::new(config, ResolverOpts::default()).expect("resolver config");
    let params = Parameters::new(&auth_message).with_txt_cache(&cache);
    let outputs = futures_lite::future::block_on(authenticator.verify_dkim(params));
    outputs.iter().map(|o| *o.result() == DkimResult::Pass).collect()
}

/// Asserts that signing `a` and `b` (two chunkings of one message) gives the same field.
/// mail-auth stamps `t=` from the clock, so a pair straddling a second is signed again.
pub fn assert_same_signature(signer: &Signer, a: &[Bytes], b: &[Bytes]) {
    for _ in 0..5 {
        let (x, y) = (signer.sign(a).unwrap(), signer.sign(b).unwrap());
        if t_tag(&x) == t_tag(&y) {
            assert_eq!(x, y);
            return;
        }
    }
    panic!("the clock moved on every attempt");
}

fn t_tag(field: &Bytes) -> String {
    let text = String::from_utf8_lossy(field).replace("\r\n\t", " ");
    text.split(';')
        .map(str::trim)
        .find(|t| t.starts_with("t="))
        .unwrap_or_default()
        .to_string()
}

/// `whole` split at the given offsets.
pub fn split_at(whole: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        out.push(whole.slice(start..cut));
        start = cut;
    }
    out.push(whole.slice(start..));
    out
}

/// A deterministic generator, so failures reproduce.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize % n.max(1)
    }

    /// `whole` cut at random places (empty chunks included).
    pub fn split(&mut self, whole: &Bytes) -> Vec<Bytes> {
        let mut cuts: Vec<usize> = (0..self.below(12)).map(|_| self.below(whole.len() + 1)).collect();
        cuts.sort_unstable();
        split_at(whole, &cuts)
    }
}
