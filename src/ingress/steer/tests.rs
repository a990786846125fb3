//! Steering plans from configurations, and the program run by the kernel: sockets made by
//! `listener::listen_per_core` (next to a `reserve`d one, as the runtime does) are picked
//! by the index the program returns, and clients it does not steer are still accepted.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::*;
use crate::config::Config;
use crate::ingress::listener;

fn plan_of(toml: &str, cores: usize) -> Plan {
    let config = Config::from_toml(&format!("[server]\ncores = {cores}\n{toml}")).unwrap();
    let directory = Directory::new(&config.accounts, cores);
    plan(&config, &directory)
}

fn account(id: &str, networks: &str, extra: &str) -> String {
    format!(
        "[[accounts]]\nid = \"{id}\"\nnetworks = [{networks}]\nsender_domains = [\"{id}.example\"]\n{extra}\n"
    )
}

#[test]
fn placed_networks_are_steered_to_their_owner() {
    let toml = account("vip", "\"127.0.0.5\", \"2001:db8::/32\"", "dedicated = true")
        + &account("pinned", "\"10.1.0.0/16\"", "core = 0")
        + &account("wide", "\"10.0.0.0/8\"", "core = 2")
        + &account("carved", "\"10.0.5.0/24\"", "")
        + &account("loose", "\"192.0.2.0/24\"", "");
    let p = plan_of(&toml, 4);
    assert!(p.steers());
    assert_eq!(
        p.lines,
        [
            "steering 10.0.0.0/8 to core 2 (account wide)",
            "steering 10.1.0.0/16 to core 0 (account pinned)",
            "steering 127.0.0.5/32 to core 3 (account vip)",
            "steering 2001:db8::/32 to core 3 (account vip)",
            "steering other clients to core 0, 1, 2 (a dedicated core takes only its account's clients)",
        ]
    );
    assert_eq!(
        rules_of(&p),
        expected(&[
            ("127.0.0.5/32", 3),
            ("2001:db8::/32", 3),
            ("10.0.5.0/24", SPREAD),
            ("10.1.0.0/16", 0),
            ("10.0.0.0/8", 2),
        ]),
        "most specific first; `loose` is left out, `carved` is cut out of `wide`"
    );
}

/// A plan's rules as (network, index).
fn rules_of(plan: &Plan) -> Vec<(String, u32)> {
    plan.rules
        .iter()
        .map(|r| (r.network.to_string(), r.index))
        .collect()
}

fn expected(rules: &[(&str, u32)]) -> Vec<(String, u32)> {
    rules.iter().map(|(n, i)| (n.to_string(), *i)).collect()
}

#[test]
fn networks_shared_across_cores_are_not_steered() {
    let toml = account("vip", "\"127.0.0.0/8\"", "dedicated = true")
        + &account("other", "\"127.0.0.0/8\"", "core = 0");
    let p = plan_of(&toml, 2);
    assert_eq!(
        p.lines,
        [
            "not steering 127.0.0.0/8: it is shared by accounts on different cores (vip on core 1, other on core 0)",
            "steering other clients to core 0 (a dedicated core takes only its account's clients)",
        ]
    );
    // Left to the hash over both cores: `vip`'s clients are among them.
    assert_eq!(rules_of(&p), expected(&[("127.0.0.0/8", NOT_STEERED)]));
    let shared = account("a", "\"10.0.0.0/8\"", "core = 1") + &account("b", "\"10.0.0.0/8\"", "core = 0");
    let p = plan_of(&shared, 2);
    assert_eq!(rules_of(&p), expected(&[("10.0.0.0/8", NOT_STEERED)]));
    // The same network on the same core is one steered rule naming both accounts.
    let same = account("a", "\"10.0.0.0/8\"", "core = 1") + &account("b", "\"10.0.0.0/8\"", "core = 1");
    assert_eq!(
        plan_of(&same, 2).lines,
        ["steering 10.0.0.0/8 to core 1 (account a, b)"]
    );
}

#[test]
fn steering_can_be_turned_off_and_too_many_networks_turn_it_off() {
    let toml = account("vip", "\"127.0.0.5\"", "dedicated = true");
    let off = plan_of(
        &format!("[fairness]\nsteer_placed_connections = false\n{toml}"),
        2,
    );
    assert!(!off.steers());
    assert!(off.lines[0].contains("steer_placed_connections = false"));
    let many: Vec<String> = (0..1400)
        .map(|i| format!("\"10.{}.{}.1\"", i / 256, i % 256))
        .collect();
    let big = plan_of(&account("big", &many.join(", "), "core = 1"), 2);
    assert!(!big.steers());
    assert_eq!(
        big.lines,
        [
            "connections are not steered: 1400 networks need 4210 BPF instructions, more than the kernel's limit of 4096"
        ]
    );
}

/// Accepts on whichever of `sockets` got the connection; its index.
fn accepted_on(sockets: &[Socket]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, s) in sockets.iter().enumerate() {
            if let Ok((mut conn, _)) = s.accept() {
                let _ = conn.write_all(b"x");
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no socket accepted the connection");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Connects to `port` on the loopback address of `from`'s family, from `from` (port chosen
/// by the kernel).
fn connect_from(from: IpAddr, port: u16) -> TcpStream {
    let loopback = match from {
        IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    };
    let to = SocketAddr::new(loopback, port);
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.bind(&SockAddr::from(SocketAddr::new(from, 0))).unwrap();
    socket.connect(&SockAddr::from(to)).unwrap();
    socket.into()
}

/// Clients of one address, each from its source, as the kernel steers them.
struct Case<'a> {
    listen: &'a str,
    /// (network and its first address as the source, index).
    steered: &'a [(&'a str, usize)],
    /// A source no rule steers.
    unsteered: Option<&'a str>,
    /// The sockets such a source may go to (empty: the kernel's hash, over all three).
    spread: &'a [u32],
}

/// Three "cores" on one address, the program attached through socket 0: the steered
/// sources land on the socket of their index, every time; an unsteered source is still
/// accepted, and spread over the sockets allowed (by the kernel's hash, or the program).
fn kernel_steers(case: Case) {
    let (_reserved, bound) = listener::reserve(case.listen.parse().unwrap()).unwrap();
    let per_core = listener::listen_per_core(&[bound], 3, 64).unwrap();
    let sockets: Vec<Socket> = per_core.into_iter().flatten().collect();
    let rules: Vec<Rule> = case
        .steered
        .iter()
        .map(|(network, index)| Rule {
            network: network.parse().unwrap(),
            index: *index as u32,
        })
        .collect();
    let plan = Plan {
        program: bpf::program(&rules, case.spread).unwrap(),
        rules,
        lines: vec![],
    };
    plan.attach(sockets[0].as_fd()).unwrap();
    for (network, index) in case.steered {
        let source: IpAddr = network.split('/').next().unwrap().parse().unwrap();
        for _ in 0..8 {
            let mut client = connect_from(source, bound.port());
            assert_eq!(accepted_on(&sockets), *index, "{source}");
            let mut byte = [0u8];
            client.read_exact(&mut byte).unwrap();
        }
    }
    let Some(unsteered) = case.unsteered else { return };
    let mut seen = [0usize; 3];
    for _ in 0..48 {
        let _client = connect_from(unsteered.parse().unwrap(), bound.port());
        seen[accepted_on(&sockets)] += 1;
    }
    // 48 connections from one address differ only by source port (and the program's
    // random word): all on one socket would take odds of 1 in 2^47.
    let allowed: Vec<usize> = if case.spread.is_empty() {
        vec![0, 1, 2]
    } else {
        case.spread.iter().map(|&i| i as usize).collect()
    };
    let used: Vec<usize> = (0..3).filter(|&i| seen[i] > 0).collect();
    assert!(
        used.iter().all(|i| allowed.contains(i)),
        "{seen:?} outside {allowed:?}"
    );
    assert!(used.len() >= 2.min(allowed.len()), "{seen:?}");
}

#[test]
fn the_kernel_picks_the_socket_of_the_returned_index() {
    kernel_steers(Case {
        listen: "127.0.0.1:0",
        steered: &[("127.0.0.5/32", 2), ("127.0.0.6/32", 0), ("127.0.0.7/32", 1)],
        unsteered: Some("127.0.0.9"),
        spread: &[],
    });
}

/// As with a dedicated core 1: other clients go to sockets 0 and 2 only.
#[test]
fn the_kernel_keeps_other_clients_off_a_dedicated_socket() {
    kernel_steers(Case {
        listen: "127.0.0.1:0",
        steered: &[("127.0.0.5/32", 1)],
        unsteered: Some("127.0.0.9"),
        spread: &[0, 2],
    });
}

/// The same through an IPv6 listener: `::1` by its four words, and an IPv4 client of the
/// dual-stack socket by its IPv4 header. Skipped where the host has no IPv6 loopback (and
/// `::1` is the only IPv6 source there is, so it cannot also show the fallback).
#[test]
fn the_kernel_steers_ipv6_and_ipv4_on_a_dual_stack_listener() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: the IPv6 part of steering is tested by the interpreter only");
        return;
    }
    kernel_steers(Case {
        listen: "[::1]:0",
        steered: &[("::1/128", 1)],
        unsteered: None,
        spread: &[],
    });
    let probe = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).unwrap();
    if probe.only_v6().unwrap_or(true) {
        return;
    }
    kernel_steers(Case {
        listen: "[::]:0",
        steered: &[("127.0.0.5/32", 2), ("::1/128", 1)],
        unsteered: Some("127.0.0.9"),
        spread: &[],
    });
}
