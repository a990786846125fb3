//! The per-core resolver (`corerelay::route::Resolver`) against the real DNS server fixture:
//! MX order, implicit and null MX, negative answers, failures, TCP fallback and the cache.
//! Every test runs the resolver on its own small glommio executor, as a core would.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corerelay::route::{DnsError, MxHost, Resolver};
use glommio::LocalExecutorBuilder;

use crate::support::dns::TestDns;

const TIMEOUT: Duration = Duration::from_millis(500);
const ATTEMPTS: usize = 2;

/// Runs `test` on a fresh glommio executor with little locked memory (tests run in parallel).
fn on_executor<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .io_memory(512 << 10)
        .spawn(test)
        .expect("executor")
        .join()
        .expect("test executor");
}

/// Runs `test` on an executor with a resolver that asks only `dns`.
fn with_resolver<F, Fut>(dns: &Arc<TestDns>, test: F)
where
    F: FnOnce(Resolver, Arc<TestDns>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dns = Arc::clone(dns);
    on_executor(move || async move {
        let resolver = Resolver::new(&[dns.addr], TIMEOUT, ATTEMPTS).expect("resolver");
        test(resolver, dns).await;
    });
}

fn names(hosts: &[MxHost]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

fn implicit(name: &str) -> Vec<MxHost> {
    vec![MxHost {
        name: name.into(),
        preference: 0,
    }]
}

#[test]
fn mx_hosts_ascend_by_preference_and_shuffle_within_one() {
    let dns = Arc::new(TestDns::start());
    for (preference, exchange) in [(10, "a"), (20, "d"), (10, "b"), (5, "e"), (10, "c")] {
        dns.add_mx("order.test", preference, &format!("{exchange}.mx.order.test"));
    }
    with_resolver(&dns, |resolver, dns| async move {
        let mut leaders = std::collections::HashMap::<String, usize>::new();
        for _ in 0..300 {
            let hosts = resolver.mx("order.test").await.expect("mx");
            let preferences: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
            assert_eq!(preferences, [5, 10, 10, 10, 20]);
            assert_eq!(
                (hosts[0].name.as_str(), hosts[4].name.as_str()),
                ("e.mx.order.test", "d.mx.order.test")
            );
            let mut tier = names(&hosts[1..4]);
            *leaders.entry(tier[0].to_string()).or_default() += 1;
            tier.sort_unstable();
            assert_eq!(tier, ["a.mx.order.test", "b.mx.order.test", "c.mx.order.test"]);
        }
        // Each equal host leads about 100 times in 300; under 50 would be a broken shuffle (the
        // chance of that with a fair one is far below 1e-9).
        assert_eq!(leaders.len(), 3, "{leaders:?}");
        assert!(leaders.values().all(|&n| n >= 50), "{leaders:?}");
        // One query: the answer is cached and the shuffle happens per call.
        assert_eq!(dns.queries(), 1);
    });
}

#[test]
fn mx_names_are_lowercase_without_trailing_dot() {
    let dns = Arc::new(TestDns::start());
    dns.add_mx("Case.Test", 10, "MX1.Case.Test.");
    with_resolver(&dns, |resolver, _| async move {
        let hosts = resolver.mx("CASE.test.").await.expect("mx");
        assert_eq!(
            hosts,
            [MxHost {
                name: "mx1.case.test".into(),
                preference: 10
            }]
        );
    });
}

#[test]
fn no_mx_but_an_address_is_an_implicit_mx() {
    let dns = Arc::new(TestDns::start());
    dns.add_a("bare.test", Ipv4Addr::new(192, 0, 2, 10));
    dns.add_aaaa("v6only.test", "2001:db8::10".parse().unwrap());
    with_resolver(&dns, |resolver, _| async move {
        assert_eq!(resolver.mx("bare.test").await, Ok(implicit("bare.test")));
        assert_eq!(resolver.mx("v6only.test").await, Ok(implicit("v6only.test")));
    });
}

#[test]
fn no_mx_and_no_address_is_not_found() {
    let dns = Arc::new(TestDns::start());
    dns.add_txt("text-only.test", "v=spf1 -all");
    dns.add_mx("mx-only.test", 10, "elsewhere.test");
    with_resolver(&dns, |resolver, _| async move {
        let result = resolver.mx("text-only.test").await;
        assert!(
            matches!(&result, Err(DnsError::NotFound(t)) if t.contains("no MX, A or AAAA")),
            "{result:?}"
        );
        assert!(result.unwrap_err().is_permanent());
        let result = resolver.addresses("mx-only.test").await;
        assert!(matches!(&result, Err(DnsError::NotFound(_))), "{result:?}");
    });
}

#[test]
fn null_mx_is_permanent_even_with_an_address() {
    let dns = Arc::new(TestDns::start());
    dns.add_mx("null.test", 0, ".");
    dns.add_a("null.test", Ipv4Addr::new(192, 0, 2, 20));
    with_resolver(&dns, |resolver, _| async move {
        let result = resolver.mx("null.test").await;
        assert_eq!(result, Err(DnsError::NullMx("null.test".into())));
        assert!(result.unwrap_err().is_permanent());
    });
}

#[test]
fn null_mx_beside_real_exchanges_is_skipped() {
    let dns = Arc::new(TestDns::start());
    dns.add_mx("mixed.test", 0, ".");
    dns.add_mx("mixed.test", 10, "mx.mixed.test");
    with_resolver(&dns, |resolver, _| async move {
        let hosts = resolver.mx("mixed.test").await.expect("mx");
        assert_eq!(names(&hosts), ["mx.mixed.test"]);
    });
}

#[test]
fn nxdomain_is_permanent_and_negative_answers_are_cached() {
    let dns = Arc::new(TestDns::start());
    dns.add_a("bare.test", Ipv4Addr::new(192, 0, 2, 10));
    with_resolver(&dns, |resolver, dns| async move {
        for _ in 0..3 {
            let result = resolver.mx("nowhere.test").await;
            assert!(
                matches!(&result, Err(DnsError::NotFound(t)) if t.contains("NXDOMAIN")),
                "{result:?}"
            );
            assert!(result.unwrap_err().is_permanent());
            let result = resolver.addresses("nowhere.test").await;
            assert!(matches!(&result, Err(DnsError::NotFound(_))), "{result:?}");
        }
        // MX, then A and AAAA: NXDOMAIN each, cached through the SOA's negative TTL.
        assert_eq!(dns.queries(), 3);
        assert_eq!(
            resolver.cache_hits(),
            6,
            "the second and third rounds come from the cache"
        );
        for _ in 0..3 {
            assert_eq!(resolver.mx("bare.test").await, Ok(implicit("bare.test")));
        }
        // MX (no data), A, AAAA (no data): the two empty answers are cached too.
        assert_eq!(dns.queries(), 6);
        assert_eq!(resolver.cache_hits(), 12);
    });
}

#[test]
fn servfail_is_temporary_and_not_cached() {
    let dns = Arc::new(TestDns::start());
    dns.set_servfail("broken.test");
    with_resolver(&dns, |resolver, dns| async move {
        let result = resolver.mx("broken.test").await;
        assert!(matches!(&result, Err(DnsError::Temporary(_))), "{result:?}");
        assert!(!result.unwrap_err().is_permanent());
        let asked = dns.queries();
        assert!(asked >= 1);
        let result = resolver.addresses("broken.test").await;
        assert!(matches!(&result, Err(DnsError::Temporary(_))), "{result:?}");
        let result = resolver.mx("broken.test").await;
        assert!(matches!(&result, Err(DnsError::Temporary(_))), "{result:?}");
        assert!(
            dns.queries() > asked + 2,
            "SERVFAIL must not be served from the cache"
        );
        assert_eq!(resolver.cache_hits(), 0);
    });
}

#[test]
fn dead_nameserver_is_temporary_within_timeout_times_attempts() {
    // A bound socket that never answers: queries vanish, as with a dead server.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let timeout = Duration::from_millis(300);
    on_executor(move || async move {
        let resolver = Resolver::new(&[addr], timeout, 2).expect("resolver");
        let started = Instant::now();
        let result = resolver.mx("example.test").await;
        let elapsed = started.elapsed();
        assert!(matches!(&result, Err(DnsError::Temporary(_))), "{result:?}");
        // Two tries of 300 ms; a third try would end near 900 ms.
        assert!(elapsed >= timeout * 2, "gave up after {elapsed:?}");
        assert!(
            elapsed < timeout * 2 + Duration::from_millis(200),
            "took {elapsed:?}"
        );
    });
    drop(silent);
}

#[test]
fn a_dead_nameserver_beside_a_live_one_does_not_block() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dead = silent.local_addr().expect("addr");
    let dns = Arc::new(TestDns::start());
    dns.add_mx("alive.test", 10, "mx.alive.test");
    let live = dns.addr;
    on_executor(move || async move {
        let resolver = Resolver::new(&[dead, live], TIMEOUT, ATTEMPTS).expect("resolver");
        let started = Instant::now();
        let hosts = resolver.mx("alive.test").await.expect("mx");
        assert_eq!(names(&hosts), ["mx.alive.test"]);
        assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
    });
    drop(silent);
}

#[test]
fn truncated_udp_answer_is_retried_over_tcp() {
    let dns = Arc::new(TestDns::start());
    // About 22 bytes per compressed MX record: 100 of them exceed the 1232-byte EDNS size.
    for i in 0..100u16 {
        dns.add_mx("big.test", 10 + i % 4, &format!("mx{i:03}.big.test"));
    }
    with_resolver(&dns, |resolver, dns| async move {
        let hosts = resolver.mx("big.test").await.expect("mx");
        assert_eq!(hosts.len(), 100);
        assert!(hosts.windows(2).all(|w| w[0].preference <= w[1].preference));
        let mut all = names(&hosts);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100);
        assert_eq!(dns.tcp_queries(), 1, "the full answer must come over TCP");
    });
}

#[test]
fn many_concurrent_lookups_all_complete() {
    let dns = Arc::new(TestDns::start());
    const HOSTS: u8 = 200;
    for i in 0..HOSTS {
        dns.add_a(&format!("h{i}.load.test"), Ipv4Addr::new(10, 0, 0, i));
    }
    with_resolver(&dns, |resolver, dns| async move {
        let resolver = std::rc::Rc::new(resolver);
        let tasks: Vec<_> = (0..HOSTS)
            .map(|i| {
                let resolver = std::rc::Rc::clone(&resolver);
                glommio::spawn_local(async move { (i, resolver.addresses(&format!("h{i}.load.test")).await) })
            })
            .collect();
        for task in tasks {
            let (i, result) = task.await;
            assert_eq!(result, Ok(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))]));
        }
        // An A and an AAAA query per host at least (more only if a datagram was lost and resent).
        assert!(dns.queries() >= 2 * usize::from(HOSTS));
    });
}

#[test]
fn answers_are_cached_until_their_ttl_expires() {
    let dns = Arc::new(TestDns::start());
    dns.set_ttl(1);
    dns.add_a("short.test", Ipv4Addr::new(192, 0, 2, 30));
    with_resolver(&dns, |resolver, dns| async move {
        let expected = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 30))];
        assert_eq!(resolver.addresses("short.test").await, Ok(expected.clone()));
        let asked = dns.queries();
        assert_eq!(asked, 2, "A and AAAA");
        assert_eq!(resolver.addresses("short.test").await, Ok(expected.clone()));
        assert_eq!(dns.queries(), asked, "second lookup must be a cache hit");
        glommio::timer::sleep(Duration::from_millis(1200)).await;
        assert_eq!(resolver.addresses("short.test").await, Ok(expected));
        assert_eq!(dns.queries(), asked + 2, "expired entries must be asked again");
    });
}

#[test]
fn addresses_list_ipv4_first() {
    let dns = Arc::new(TestDns::start());
    let v6: Ipv6Addr = "2001:db8::40".parse().unwrap();
    dns.add_aaaa("dual.test", v6);
    dns.add_a("dual.test", Ipv4Addr::new(192, 0, 2, 40));
    dns.add_a("dual.test", Ipv4Addr::new(192, 0, 2, 41));
    with_resolver(&dns, move |resolver, _| async move {
        let ips = resolver.addresses("dual.test").await.expect("addresses");
        assert_eq!(ips.len(), 3);
        assert!(ips[..2].iter().all(IpAddr::is_ipv4), "{ips:?}");
        assert_eq!(ips[2], IpAddr::V6(v6));
    });
}

#[test]
fn ip_literals_pass_through_without_a_query() {
    let dns = Arc::new(TestDns::start());
    with_resolver(&dns, |resolver, dns| async move {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        for (literal, ip) in [
            ("192.0.2.7", v4),
            ("[192.0.2.7]", v4),
            ("2001:db8::7", v6),
            ("[IPv6:2001:db8::7]", v6),
        ] {
            assert_eq!(resolver.addresses(literal).await, Ok(vec![ip]), "{literal}");
        }
        assert_eq!(resolver.mx("[192.0.2.7]").await, Ok(implicit("192.0.2.7")));
        assert_eq!(dns.queries(), 0);
    });
}

#[test]
fn resolv_conf_nameservers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("resolv.conf");
    std::fs::write(
        &good,
        "search corp.example\nnameserver 127.0.0.1\noptions ndots:2\n",
    )
    .expect("write");
    let empty = dir.path().join("empty.conf");
    std::fs::write(&empty, "# nothing here\n").expect("write");
    let missing = dir.path().join("missing.conf");
    on_executor(move || async move {
        assert!(Resolver::from_resolv_conf(&good, TIMEOUT, ATTEMPTS).is_ok());
        for path in [empty, missing] {
            let result = Resolver::from_resolv_conf(&path, TIMEOUT, ATTEMPTS);
            assert!(matches!(&result, Err(DnsError::Temporary(_))), "{path:?}");
        }
    });
}
