//! Tests of the steering program, run in a small classic-BPF interpreter that follows the
//! kernel's semantics for what the program uses (loads relative to `SKF_NET_OFF`, a load
//! out of the packet ends the program with 0), and checked as the kernel's verifier would
//! (jumps inside the program, a `ret` last). The kernel itself runs it in `steer`'s tests.

use std::net::IpAddr;

use libc::sock_filter;

use super::*;

/// Runs `program` on a packet whose network header is `header` (no payload).
fn run(program: &[sock_filter], header: &[u8]) -> u32 {
    run_with(program, header, 0)
}

/// Runs `program` with `random` as what `SKF_AD_RANDOM` loads.
fn run_with(program: &[sock_filter], header: &[u8], random: u32) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |k: u32, size: usize| -> Option<u32> {
        let at = (k as i32).checked_sub(libc::SKF_NET_OFF)?;
        let bytes = header.get(usize::try_from(at).ok()?..)?.get(..size)?;
        Some(bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
    };
    loop {
        let i = program[pc];
        pc += 1;
        let code = u32::from(i.code);
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS
                && i.k as i32 == libc::SKF_AD_OFF + libc::SKF_AD_RANDOM =>
            {
                a = random
            }
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => match load(i.k, 4) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => match load(i.k, 1) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K => a >>= i.k,
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= i.k,
            c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= i.k,
            c if c == libc::BPF_MISC | libc::BPF_TAX => x = a,
            c if c == libc::BPF_MISC | libc::BPF_TXA => a = x,
            c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
            c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                pc += usize::from(if a == i.k { i.jt } else { i.jf })
            }
            c if c == libc::BPF_RET | libc::BPF_K => return i.k,
            other => panic!("instruction {other:#x} at {} is not interpreted", pc - 1),
        }
    }
}

/// What `bpf_check_classic` insists on that a builder could get wrong: every jump lands
/// inside the program and the last instruction returns.
fn check(program: &[sock_filter]) {
    assert!(!program.is_empty() && program.len() <= MAX_INSTRUCTIONS);
    let last = program[program.len() - 1];
    assert_eq!(u32::from(last.code), libc::BPF_RET | libc::BPF_K);
    for (pc, i) in program.iter().enumerate() {
        let code = u32::from(i.code);
        let targets: Vec<usize> = if code == libc::BPF_JMP | libc::BPF_JA {
            vec![pc + 1 + i.k as usize]
        } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
            vec![pc + 1 + usize::from(i.jt), pc + 1 + usize::from(i.jf)]
        } else {
            vec![]
        };
        for t in targets {
            assert!(t < program.len(), "jump at {pc} to {t} of {}", program.len());
        }
    }
}

/// A minimal IP header from `source`: version, and the source address where the kernel
/// has it.
fn header(source: IpAddr) -> Vec<u8> {
    match source {
        IpAddr::V4(v4) => {
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            h[12..16].copy_from_slice(&v4.octets());
            h
        }
        IpAddr::V6(v6) => {
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[8..24].copy_from_slice(&v6.octets());
            h
        }
    }
}

fn rule(network: &str, index: u32) -> Rule {
    Rule {
        network: network.parse().unwrap(),
        index,
    }
}

/// The index the built program picks for `source`, after checking the program.
fn steer(rules: &[Rule], source: &str) -> u32 {
    let program = program(rules, &[]).unwrap();
    check(&program);
    run(&program, &header(source.parse().unwrap()))
}

#[test]
fn no_rules_steer_nothing() {
    assert_eq!(program(&[], &[]).unwrap().len(), 1);
    assert_eq!(steer(&[], "10.0.0.1"), NOT_STEERED);
    assert_eq!(steer(&[], "2001:db8::1"), NOT_STEERED);
}

#[test]
fn ipv4_hosts_and_prefixes() {
    let rules = [
        rule("10.1.0.0/16", NOT_STEERED),
        rule("127.0.0.5/32", 1),
        rule("10.0.0.0/8", 2),
        rule("192.168.7.0/31", 0),
    ];
    assert_eq!(steer(&rules, "127.0.0.5"), 1);
    assert_eq!(steer(&rules, "127.0.0.4"), NOT_STEERED);
    assert_eq!(steer(&rules, "10.200.3.4"), 2);
    assert_eq!(steer(&rules, "10.1.2.3"), NOT_STEERED, "carved out before the /8");
    assert_eq!(steer(&rules, "192.168.7.1"), 0);
    assert_eq!(steer(&rules, "192.168.7.2"), NOT_STEERED);
    assert_eq!(steer(&rules, "11.0.0.1"), NOT_STEERED);
    assert_eq!(
        steer(&rules, "2001:db8::1"),
        NOT_STEERED,
        "IPv6 clients are not held to IPv4 rules"
    );
}

#[test]
fn ipv6_prefixes_within_and_across_words() {
    let rules = [
        rule("2001:db8::5/128", 3),
        rule("2001:db8:1::/48", 1),
        rule("2001:db8:8000::/33", 2),
        rule("::/0", 0),
    ];
    assert_eq!(steer(&rules, "2001:db8::5"), 3);
    assert_eq!(steer(&rules, "2001:db8::6"), 0, "only the /0 holds it");
    assert_eq!(steer(&rules, "2001:db8:1:ffff::1"), 1);
    assert_eq!(steer(&rules, "2001:db8:2::1"), 0);
    assert_eq!(steer(&rules, "2001:db8:ffff::1"), 2);
    assert_eq!(steer(&rules, "2001:db8:7fff::1"), 0);
    assert_eq!(steer(&rules, "10.0.0.1"), NOT_STEERED, "no IPv4 rule");
    let no_default = &rules[..3];
    assert_eq!(steer(no_default, "2001:db9::1"), NOT_STEERED);
}

#[test]
fn a_zero_prefix_takes_every_address_of_its_family() {
    let rules = [
        rule("10.0.0.1/32", 1),
        rule("0.0.0.0/0", 0),
        rule("10.0.0.2/32", 1),
    ];
    assert_eq!(steer(&rules, "10.0.0.1"), 1);
    assert_eq!(steer(&rules, "10.0.0.2"), 0, "rules after a /0 never match");
    assert_eq!(steer(&rules, "2001:db8::1"), NOT_STEERED);
}

/// A packet too short for the load makes the program end with 0, as in the kernel; the
/// version check keeps that from happening to a real IP header of either family.
#[test]
fn unknown_versions_fall_back() {
    let program = program(&[rule("10.0.0.0/8", 1), rule("2001:db8::/32", 1)], &[]).unwrap();
    let mut odd = header("10.0.0.1".parse().unwrap());
    odd[0] = 0x55;
    assert_eq!(run(&program, &odd), NOT_STEERED);
    assert_eq!(run(&program, &[0x45]), 0, "a truncated header ends the program");
}

/// Random networks of both families against random addresses: the program agrees with
/// the plain "first rule whose network holds the address" (`SPREAD` being the hash here).
#[test]
fn agrees_with_a_linear_search() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..50 {
        let rules: Vec<Rule> = (0..20)
            .map(|i| {
                let network = if next() % 2 == 0 {
                    let prefix = (next() % 33) as u8;
                    IpNet::new(IpAddr::from((next() as u32 & 0xff00_00ff).to_be_bytes()), prefix)
                } else {
                    let prefix = (next() % 129) as u8;
                    let bits = (u128::from(next()) << 64 | u128::from(next())) & (0xffff_0000 << 96 | 0xff);
                    IpNet::new(IpAddr::from(bits.to_be_bytes()), prefix)
                };
                Rule {
                    network: network.unwrap().trunc(),
                    index: match i % 5 {
                        0 => NOT_STEERED,
                        1 => SPREAD,
                        _ => i,
                    },
                }
            })
            .collect();
        let program = program(&rules, &[]).unwrap();
        check(&program);
        for _ in 0..200 {
            let source = if next() % 2 == 0 {
                IpAddr::from((next() as u32 & 0xff00_00ff).to_be_bytes())
            } else {
                let bits = (u128::from(next()) << 64 | u128::from(next())) & (0xffff_0000 << 96 | 0xff);
                IpAddr::from(bits.to_be_bytes())
            };
            let want = rules
                .iter()
                .find(|r| r.network.contains(&source))
                .map_or(NOT_STEERED, |r| r.index);
            let want = if want == SPREAD { NOT_STEERED } else { want };
            assert_eq!(run(&program, &header(source)), want, "{source} in {rules:?}");
        }
    }
}

#[test]
fn size_is_bounded_by_the_kernel_limit() {
    let hosts = |count: u32| -> Vec<Rule> {
        (0..count)
            .map(|i| Rule {
                network: IpNet::new(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), 32).unwrap(),
                index: 1,
            })
            .collect()
    };
    // 4 + 2 + 3 per host + 1 + 3 (an empty IPv6 part).
    let fits = program(&hosts(1362), &[]).unwrap();
    assert_eq!(fits.len(), 4096);
    check(&fits);
    let e = program(&hosts(1363), &[]).unwrap_err();
    assert!(e.contains("1363 networks need 4099 BPF instructions"), "{e}");
}

/// With dedicated cores, a client no rule steers (or one carved out with `SPREAD`) goes to
/// one of the `spread` sockets, whichever the random word picks, and never to another; one
/// carved out with `NOT_STEERED` goes to the kernel's hash.
#[test]
fn unsteered_clients_are_spread_over_the_given_sockets() {
    let rules = [
        rule("10.1.0.0/16", SPREAD),
        rule("10.2.0.0/16", NOT_STEERED),
        rule("10.0.0.0/8", 3),
        rule("::1/128", 3),
    ];
    let spread = program(&rules, &[0, 2]).unwrap();
    check(&spread);
    for source in ["10.1.0.1", "192.0.2.1", "2001:db8::1"] {
        let h = header(source.parse().unwrap());
        let picked: std::collections::BTreeSet<u32> =
            (0..16).map(|random| run_with(&spread, &h, random)).collect();
        assert_eq!(picked, [0, 2].into(), "{source}");
    }
    assert_eq!(run_with(&spread, &header("10.3.0.1".parse().unwrap()), 1), 3);
    assert_eq!(
        run_with(&spread, &header("10.2.0.1".parse().unwrap()), 1),
        NOT_STEERED
    );
    let hashed = program(&rules, &[]).unwrap();
    assert_eq!(run(&hashed, &header("10.1.0.1".parse().unwrap())), NOT_STEERED);
    assert_eq!(run_with(&spread, &header("::1".parse().unwrap()), 1), 3);
    let one = program(&[], &[1]).unwrap();
    check(&one);
    assert_eq!(run_with(&one, &header("192.0.2.1".parse().unwrap()), 7), 1);
}
