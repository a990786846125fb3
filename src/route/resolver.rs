//! The per-core resolver: MX and address lookups for delivery, with hickory's cache.
//!
//! One [`Resolver`] lives on each core and is `!Send`: it runs hickory on glommio (see
//! `runtime.rs`), so lookups never leave the core and the cache needs no lock. hickory's cache
//! honours record TTLs and caches negative answers (NXDOMAIN and "no records of that type") for
//! the SOA's negative TTL (RFC 2308); SERVFAIL, timeouts and network errors are not cached, so
//! the next attempt asks again.
//!
//! This module turns hickory's answers into what delivery needs: the RFC 5321 §5.1 host order,
//! the implicit MX, RFC 7505 null MX, and one [`DnsError`] that says whether a failure is
//! permanent (bounce) or temporary (retry later).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use rand::seq::SliceRandom;

use super::runtime::GlommioRuntime;

/// The DNS port, for nameservers read from resolv.conf (which has no port syntax).
const DNS_PORT: u16 = 53;

/// One host to try for a domain, as RFC 5321 §5.1 orders them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Lowercase, without the trailing dot; IDNs in their `xn--` form. An IP address when the
    /// domain was an address literal.
    pub name: String,
    pub preference: u16,
}

/// Why a lookup gave no usable answer, split the way delivery must act on it.
///
/// A closed enum of three, not a wrapped hickory error: the caller only decides bounce versus
/// retry, and the text is kept for the log and the DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN, no usable records, or a name that cannot exist. Permanent.
    NotFound(String),
    /// The domain publishes a null MX (RFC 7505): it accepts no mail. Permanent.
    NullMx(String),
    /// Timeout, SERVFAIL, REFUSED, network or setup error. Worth retrying later.
    Temporary(String),
}

impl DnsError {
    /// True when retrying cannot help: the message should bounce.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DnsError::NotFound(_) | DnsError::NullMx(_))
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NotFound(text) => write!(f, "not found: {text}"),
            DnsError::NullMx(domain) => write!(f, "{domain} accepts no mail (null MX)"),
            DnsError::Temporary(text) => write!(f, "temporary DNS failure: {text}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// A caching stub resolver bound to the current glommio executor.
pub struct Resolver {
    inner: hickory_resolver::Resolver<GlommioRuntime>,
    /// Queries answered from the cache (see [`Resolver::cache_hits`]), and the metric
    /// that counts them too (a no-op until the core sets its own).
    hits: Cell<u64>,
    hit_counter: metrics::Counter,
    /// Sockets and timers inside `inner` belong to this executor thread (see `runtime.rs`).
    _not_send: PhantomData<Rc<()>>,
}

impl Resolver {
    /// Nameservers given explicitly (ip:port each); `timeout` per try and `attempts` tries in
    /// all (at least one). Each server is asked over UDP, and over TCP when an answer is
    /// truncated. Must be called on the glommio executor that will run the lookups.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration, attempts: usize) -> Result<Resolver, DnsError> {
        if nameservers.is_empty() {
            return Err(DnsError::Temporary("no nameservers configured".into()));
        }
        let servers = nameservers.iter().map(|addr| name_server(*addr)).collect();
        let mut builder = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            GlommioRuntime,
        );
        let options = builder.options_mut();
        options.timeout = timeout;
        // hickory counts retries after the first try.
        options.attempts = attempts.saturating_sub(1);
        // Mail routing follows DNS only; /etc/hosts must not redirect a recipient domain.
        options.use_hosts_file = ResolveHosts::Never;
        let inner = builder
            .build()
            .map_err(|e| DnsError::Temporary(format!("cannot build the resolver: {e}")))?;
        Ok(Resolver {
            inner,
            hits: Cell::new(0),
            hit_counter: metrics::Counter::noop(),
            _not_send: PhantomData,
        })
    }

    /// Nameservers from a resolv.conf file, port 53. Its `search`, `ndots` and `options` lines do
    /// not apply: every name is looked up as a fully qualified name.
    pub fn from_resolv_conf(path: &Path, timeout: Duration, attempts: usize) -> Result<Resolver, DnsError> {
        let text = std::fs::read(path)
            .map_err(|e| DnsError::Temporary(format!("cannot read {}: {e}", path.display())))?;
        let nameservers = resolv_conf_nameservers(&text);
        if nameservers.is_empty() {
            return Err(DnsError::Temporary(format!(
                "no nameserver line in {}",
                path.display()
            )));
        }
        Resolver::new(&nameservers, timeout, attempts)
    }

    /// Counts this resolver's cache hits in `counter` too.
    pub fn with_cache_hit_counter(mut self, counter: metrics::Counter) -> Resolver {
        self.hit_counter = counter;
        self
    }

    /// Queries (MX, A, AAAA each) answered from the cache so far, negative answers
    /// included.
    pub fn cache_hits(&self) -> u64 {
        self.hits.get()
    }

    /// One hickory query. hickory looks in its cache before it touches the network, and a
    /// cached answer (positive or negative) is ready when the lookup is first polled;
    /// anything that asks a nameserver has to wait for a socket. So "ready at the first
    /// poll" is a cache hit, counted without reaching into hickory's cache.
    async fn lookup(&self, name: Name, record_type: RecordType) -> Result<Lookup, NetError> {
        let mut polls = 0u32;
        let mut query = std::pin::pin!(self.inner.lookup(name, record_type));
        let result = std::future::poll_fn(|cx| {
            polls += 1;
            query.as_mut().poll(cx)
        })
        .await;
        if polls == 1 {
            self.hits.set(self.hits.get() + 1);
            self.hit_counter.increment(1);
        }
        result
    }

    /// The hosts to try for `domain`, in RFC 5321 §5.1 order: ascending preference, randomised
    /// among equal preference on every call (so cached answers still spread the load). No MX
    /// records but the domain has A/AAAA → implicit MX `[domain, 0]`. A lone MX with exchange
    /// "." → `Err(NullMx)`; a "." mixed with real exchanges is skipped. NXDOMAIN → `NotFound`.
    /// An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is its own single host.
    pub async fn mx(&self, domain: &str) -> Result<Vec<MxHost>, DnsError> {
        if let Some(ip) = address_literal(domain) {
            return Ok(vec![MxHost {
                name: ip.to_string(),
                preference: 0,
            }]);
        }
        let name = fqdn(domain)?;
        let mut hosts = match self.lookup(name.clone(), RecordType::MX).await {
            Ok(lookup) => mx_hosts(domain, &lookup)?,
            Err(e) => match classify(e) {
                Failure::NoData => Vec::new(),
                failure => return Err(failure.into_error(domain)),
            },
        };
        if hosts.is_empty() {
            // RFC 5321 §5.1: no MX, so the domain itself is the host, if it has an address.
            self.lookup_addresses(name.clone(), domain)
                .await
                .map_err(|e| match e {
                    DnsError::NotFound(_) => {
                        DnsError::NotFound(format!("{domain}: no MX, A or AAAA records"))
                    }
                    other => other,
                })?;
            return Ok(vec![MxHost {
                name: host_name(&name),
                preference: 0,
            }]);
        }
        order_by_preference(&mut hosts);
        Ok(hosts)
    }

    /// A and AAAA addresses of a host, IPv4 first; the two lookups run concurrently. IP
    /// literals (bare or bracketed) are returned as-is without a lookup. When one family fails
    /// temporarily and the other has addresses, the addresses are returned.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(ip) = address_literal(host) {
            return Ok(vec![ip]);
        }
        self.lookup_addresses(fqdn(host)?, host).await
    }

    async fn lookup_addresses(&self, name: Name, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = futures_lite::future::zip(
            self.lookup(name.clone(), RecordType::A),
            self.lookup(name, RecordType::AAAA),
        )
        .await;
        let mut ips = Vec::new();
        let mut failures = Vec::with_capacity(2);
        for result in [v4, v6] {
            match result {
                Ok(lookup) => ips.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })),
                Err(e) => failures.push(classify(e)),
            }
        }
        if !ips.is_empty() {
            return Ok(ips);
        }
        // The worst failure decides: a temporary one may hide addresses, NXDOMAIN says more
        // than "no data".
        let failure = failures
            .into_iter()
            .max_by_key(Failure::rank)
            .unwrap_or(Failure::NoData);
        Err(failure.into_error(host))
    }
}

/// One nameserver over UDP, and TCP for truncated answers, on the given port.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// The `nameserver` addresses of a resolv.conf, in file order. Lines the parser does not know
/// are skipped rather than fatal: glibc ignores them too.
fn resolv_conf_nameservers(text: &[u8]) -> Vec<SocketAddr> {
    let (config, _unknown_lines) = resolv_conf::Config::parse_with_errors(text);
    config
        .nameservers
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::from(ip), DNS_PORT))
        .collect()
}

/// How a hickory failure reads for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// NOERROR with no records of the type asked.
    NoData,
    NxDomain,
    Temporary(String),
}

impl Failure {
    fn rank(&self) -> u8 {
        match self {
            Failure::NoData => 0,
            Failure::NxDomain => 1,
            Failure::Temporary(_) => 2,
        }
    }

    fn into_error(self, name: &str) -> DnsError {
        match self {
            Failure::NoData => DnsError::NotFound(format!("{name}: no A or AAAA records")),
            Failure::NxDomain => DnsError::NotFound(format!("{name}: no such domain (NXDOMAIN)")),
            Failure::Temporary(text) => DnsError::Temporary(format!("{name}: {text}")),
        }
    }
}

fn classify(error: NetError) -> Failure {
    match error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            match response_code {
                ResponseCode::NoError => Failure::NoData,
                ResponseCode::NXDomain => Failure::NxDomain,
                code => Failure::Temporary(format!("response code {code}")),
            }
        }
        other => Failure::Temporary(other.to_string()),
    }
}

/// The MX records of an answer. A lone "." exchange is a null MX (RFC 7505).
fn mx_hosts(domain: &str, lookup: &Lookup) -> Result<Vec<MxHost>, DnsError> {
    let mut null_mx = false;
    let mut hosts = Vec::new();
    for record in lookup.answers() {
        let RData::MX(mx) = &record.data else { continue };
        if mx.exchange.is_root() {
            null_mx = true;
        } else {
            hosts.push(MxHost {
                name: host_name(&mx.exchange),
                preference: mx.preference,
            });
        }
    }
    if null_mx && hosts.is_empty() {
        return Err(DnsError::NullMx(domain.to_string()));
    }
    Ok(hosts)
}

/// Ascending preference; a shuffle first, then a stable sort, leaves equal preferences in
/// random order (RFC 5321 §5.1).
fn order_by_preference(hosts: &mut [MxHost]) {
    hosts.shuffle(&mut rand::rng());
    hosts.sort_by_key(|host| host.preference);
}

/// A domain as a fully qualified name (trailing dot), so no search domain is ever appended.
/// Internationalised names become their punycode form.
fn fqdn(domain: &str) -> Result<Name, DnsError> {
    let invalid = |why: String| DnsError::NotFound(format!("{domain}: invalid domain name: {why}"));
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.is_empty() {
        return Err(invalid("empty".into()));
    }
    let mut name = Name::from_utf8(trimmed).map_err(|e| invalid(e.to_string()))?;
    name.set_fqdn(true);
    Ok(name)
}

/// A name as delivery uses it: lowercase ASCII, no trailing dot.
fn host_name(name: &Name) -> String {
    let ascii = name.to_lowercase().to_ascii();
    match ascii.strip_suffix('.') {
        Some(stripped) => stripped.to_string(),
        None => ascii,
    }
}

/// An IP address written as a host: bare (`192.0.2.1`, `2001:db8::1`) or as an RFC 5321
/// address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
fn address_literal(host: &str) -> Option<IpAddr> {
    let inner = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(bracketed) => match bracketed.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
                return bracketed[5..].parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
            }
            _ => return bracketed.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        },
        None => host,
    };
    inner.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, preference: u16) -> MxHost {
        MxHost {
            name: name.into(),
            preference,
        }
    }

    #[test]
    fn equal_preferences_are_shuffled_and_groups_stay_in_order() {
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut hosts = vec![
                host("c", 10),
                host("z", 30),
                host("a", 10),
                host("b", 10),
                host("y", 5),
            ];
            order_by_preference(&mut hosts);
            let preferences: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
            assert_eq!(preferences, [5, 10, 10, 10, 30]);
            assert_eq!((hosts[0].name.as_str(), hosts[4].name.as_str()), ("y", "z"));
            firsts.insert(hosts[1].name.clone());
        }
        // Each of three equal hosts leads with probability 1/3; missing one in 200 tries has
        // probability about 3·(2/3)^200.
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn address_literals() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_literal("192.0.2.7"), Some(v4));
        assert_eq!(address_literal("[192.0.2.7]"), Some(v4));
        assert_eq!(address_literal("2001:db8::1"), Some(v6));
        assert_eq!(address_literal("[IPv6:2001:db8::1]"), Some(v6));
        assert_eq!(address_literal("[ipv6:2001:db8::1]"), Some(v6));
        // RFC 5321 writes IPv6 literals with the tag only.
        assert_eq!(address_literal("[2001:db8::1]"), None);
        assert_eq!(address_literal("[IPv6:192.0.2.7]"), None);
        assert_eq!(address_literal("example.com"), None);
        assert_eq!(address_literal("[example.com]"), None);
        assert_eq!(address_literal("["), None);
    }

    #[test]
    fn names_become_fully_qualified_and_normalised() {
        let name = fqdn("Mail.Example.COM").unwrap();
        assert!(name.is_fqdn());
        assert_eq!(host_name(&name), "mail.example.com");
        assert_eq!(host_name(&fqdn("example.com.").unwrap()), "example.com");
        assert_eq!(
            host_name(&fqdn("bücher.example").unwrap()),
            "xn--bcher-kva.example"
        );
        assert!(matches!(fqdn(""), Err(DnsError::NotFound(_))));
        assert!(matches!(fqdn("."), Err(DnsError::NotFound(_))));
        assert!(matches!(fqdn(&"a".repeat(64)), Err(DnsError::NotFound(_))));
    }

    #[test]
    fn resolv_conf_gives_nameservers_on_port_53_and_skips_unknown_lines() {
        let text = b"# comment\nsearch corp.example\nnameserver 192.0.2.53\nfrobnicate yes\n\
                     nameserver 2001:db8::53\noptions ndots:3 timeout:1\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse::<SocketAddr>().unwrap()
            ]
        );
        assert!(resolv_conf_nameservers(b"search corp.example\n").is_empty());
    }

    #[test]
    fn permanence() {
        assert!(DnsError::NotFound("x".into()).is_permanent());
        assert!(DnsError::NullMx("x".into()).is_permanent());
        assert!(!DnsError::Temporary("x".into()).is_permanent());
    }

    #[test]
    fn worst_failure_wins() {
        let worst = |list: Vec<Failure>| list.into_iter().max_by_key(Failure::rank);
        assert_eq!(
            worst(vec![Failure::NoData, Failure::NxDomain]),
            Some(Failure::NxDomain)
        );
        let temporary = Failure::Temporary("timeout".into());
        assert_eq!(worst(vec![temporary.clone(), Failure::NoData]), Some(temporary));
    }
}
