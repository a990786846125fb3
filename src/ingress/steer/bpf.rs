//! The classic BPF program that picks a socket of an SO_REUSEPORT group by the client's
//! source address: a pure function from rules (network → socket index) to instructions.
//!
//! The kernel runs the program on the connection's first packet (the SYN) with the data
//! pointer past the TCP header, so the IP header is read at `SKF_NET_OFF`. The program
//! checks the IP version (the first nibble of the header: an IPv6 listener also receives
//! IPv4 packets, dual-stack), loads the source address (IPv4: one word at offset 12;
//! IPv6: four words at offset 8) and tries the rules in order; the first whose network
//! holds the address returns its index. Anything else returns [`NOT_STEERED`], an index
//! beyond any group: `run_bpf_filter` (net/core/sock_reuseport.c) then returns no socket,
//! and `reuseport_select_sock` falls back to the kernel's usual hash. Or, when some sockets
//! must not take other clients (cores dedicated to one account), anything else goes to a
//! socket picked at random (`SKF_AD_RANDOM`) among the `spread` ones.
//!
//! Conditional jumps in classic BPF reach at most 255 instructions ahead, so every rule
//! carries its own `ret` right after its compare (`jeq` falls into it or jumps over it);
//! only the jump from the IPv4 part to the IPv6 part is a `ja`, whose offset is 32 bits.

use ipnet::IpNet;
use libc::sock_filter;

/// What the program returns for a client it does not steer: beyond any socket index, so
/// the kernel's hash picks among all sockets.
pub const NOT_STEERED: u32 = u32::MAX;

/// A rule index (and what a client no rule matches gets): one of the `spread` sockets of
/// [`program`], or [`NOT_STEERED`] when there are none.
pub const SPREAD: u32 = u32::MAX - 1;

/// The kernel's limit on the length of a classic BPF program (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = libc::BPF_MAXINSNS as usize;

/// Clients in `network` go to the socket at `index` of the group; [`NOT_STEERED`] and
/// [`SPREAD`] carve a network out of a wider one listed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub network: IpNet,
    pub index: u32,
}

/// The program for `rules`, tried in the order given (the first match wins), or why it
/// cannot be loaded (longer than [`MAX_INSTRUCTIONS`]). A client no rule matches goes, as
/// [`SPREAD`] does, to one of the `spread` indices, or to the kernel's hash when `spread`
/// is empty.
pub fn program(rules: &[Rule], spread: &[u32]) -> Result<Vec<sock_filter>, String> {
    let mut out = Vec::new();
    if !rules.is_empty() {
        let ipv4 = ipv4_part(rules);
        let ipv6 = ipv6_part(rules);
        out.reserve(4 + ipv4.len() + ipv6.len());
        out.push(load_byte(0));
        out.push(op(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 4));
        // Version 4: skip the `ja` into the IPv4 part; anything else: on to the IPv6 part.
        out.push(jeq(4, 1, 0));
        out.push(op(libc::BPF_JMP | libc::BPF_JA, ipv4.len() as u32));
        out.extend(ipv4);
        out.extend(ipv6);
    }
    let spread_at = (rules.is_empty() || !spread.is_empty()).then_some(out.len());
    if spread_at.is_some() {
        out.extend(spread_part(spread));
    }
    // Every `ret SPREAD` becomes a jump to the spreading block at the end (or the hash).
    let end = spread_at.unwrap_or(out.len());
    for (pc, i) in out.iter_mut().enumerate().take(end) {
        if u32::from(i.code) == libc::BPF_RET | libc::BPF_K && i.k == SPREAD {
            *i = match spread_at {
                Some(at) if !spread.is_empty() => op(libc::BPF_JMP | libc::BPF_JA, (at - pc - 1) as u32),
                _ => ret(NOT_STEERED),
            };
        }
    }
    if out.len() > MAX_INSTRUCTIONS {
        return Err(format!(
            "{} networks need {} BPF instructions, more than the kernel's limit of {MAX_INSTRUCTIONS}",
            rules.len(),
            out.len()
        ));
    }
    Ok(out)
}

/// The IPv4 rules, with the source address kept in X so each rule can mask a copy.
fn ipv4_part(rules: &[Rule]) -> Vec<sock_filter> {
    let mut out = vec![load_word(12), op(libc::BPF_MISC | libc::BPF_TAX, 0)];
    for rule in rules {
        let IpNet::V4(net) = rule.network else { continue };
        let prefix = u32::from(net.prefix_len());
        if prefix == 0 {
            // Every address matches: nothing after it can.
            out.push(ret(rule.index));
            return out;
        }
        out.push(op(libc::BPF_MISC | libc::BPF_TXA, 0));
        if prefix < 32 {
            out.push(op(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, mask(prefix)));
        }
        out.push(jeq(u32::from(net.network()), 0, 1));
        out.push(ret(rule.index));
    }
    out.push(ret(SPREAD));
    out
}

/// The IPv6 rules: each compares the words its prefix covers, the last one masked.
fn ipv6_part(rules: &[Rule]) -> Vec<sock_filter> {
    // A still holds the version here (the `ja` leaves it alone).
    let mut out = vec![jeq(6, 1, 0), ret(SPREAD)];
    for rule in rules {
        let IpNet::V6(net) = rule.network else { continue };
        let prefix = u32::from(net.prefix_len());
        let words = u128::from(net.network()).to_be_bytes();
        let mut body = Vec::new();
        let mut compares = Vec::new();
        for i in 0..prefix.div_ceil(32) {
            let bits = (prefix - 32 * i).min(32);
            let at = 4 * i as usize;
            let word = u32::from_be_bytes([words[at], words[at + 1], words[at + 2], words[at + 3]]);
            body.push(load_word(8 + 4 * i));
            if bits < 32 {
                body.push(op(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, mask(bits)));
            }
            compares.push(body.len());
            body.push(jeq(word, 0, 0));
        }
        body.push(ret(rule.index));
        // A failed compare jumps past the rule's `ret`, to the next rule.
        let len = body.len();
        for at in compares {
            body[at].jf = (len - 1 - at) as u8;
        }
        out.extend(body);
        if prefix == 0 {
            return out;
        }
    }
    out.push(ret(SPREAD));
    out
}

/// One of `indices` at random, for a client no rule steers.
fn spread_part(indices: &[u32]) -> Vec<sock_filter> {
    let Some((last, others)) = indices.split_last() else {
        return vec![ret(NOT_STEERED)];
    };
    let random = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
    let mut out = vec![];
    if !others.is_empty() {
        out.push(op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, random));
        out.push(op(
            libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
            indices.len() as u32,
        ));
    }
    for (i, index) in others.iter().enumerate() {
        out.push(jeq(i as u32, 0, 1));
        out.push(ret(*index));
    }
    out.push(ret(*last));
    out
}

/// The netmask of a `prefix` of 1..=32 bits, as a host-order word.
fn mask(prefix: u32) -> u32 {
    u32::MAX << (32 - prefix)
}

/// `SKF_NET_OFF + offset`: `offset` bytes into the network (IP) header.
fn net(offset: u32) -> u32 {
    (libc::SKF_NET_OFF as u32).wrapping_add(offset)
}

fn load_word(offset: u32) -> sock_filter {
    op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, net(offset))
}

fn load_byte(offset: u32) -> sock_filter {
    op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, net(offset))
}

fn ret(k: u32) -> sock_filter {
    op(libc::BPF_RET | libc::BPF_K, k)
}

fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn op(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

#[cfg(test)]
#[path = "bpf_tests.rs"]
mod tests;
