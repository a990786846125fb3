//! Connection steering: the SMTP connections of a placed account (`core = N` or
//! `dedicated = true`) are accepted on its owner core, so its sessions do not run on the
//! cores of the other accounts (`fairness.steer_placed_connections`).
//!
//! Every core listens on every SMTP address with SO_REUSEPORT, and the kernel spreads
//! clients over those sockets by a hash. A classic BPF program attached to the group
//! (SO_ATTACH_REUSEPORT_CBPF, on any one socket of it) replaces that choice: it returns
//! the index of a socket in the group, and `runtime` creates the sockets so that index
//! `k` of every group is core `k`'s. The program knows only the client's source address,
//! so it steers the networks of accounts identified by network; an address in no such
//! network (or one shared with an account of another core) gets an index beyond the
//! group, and the kernel falls back to its hash ([`bpf`] says where in the kernel). When
//! some cores are dedicated, such an address goes to one of the other cores instead
//! (picked at random), so a dedicated core accepts its own account's clients only.
//! Clients identified by AUTH alone, and listeners behind a PROXY protocol proxy (whose
//! TCP peer is the proxy, not the client), are spread as before.

pub mod bpf;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::{Rc, Weak};

use glommio::net::TcpListener;
use ipnet::IpNet;
use libc::sock_filter;

use crate::account::Directory;
use crate::config::Config;
use bpf::{NOT_STEERED, Rule, SPREAD};

/// `SO_ATTACH_REUSEPORT_CBPF` from the kernel's `asm/socket.h` (the `libc` crate has it
/// only for Android): 51 on every architecture but SPARC.
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;

/// What steering does under one configuration: the program for every steered listener,
/// and the lines that say which networks go to which core, and which do not and why.
pub struct Plan {
    /// The rules behind the program, in match order.
    pub rules: Vec<Rule>,
    pub program: Vec<sock_filter>,
    pub lines: Vec<String>,
}

/// The accounts that list a network: (account id, owner core, placed by `core` or
/// `dedicated`).
type Listers<'a> = Vec<(&'a str, usize, bool)>;

/// The steering plan of `config` on the cores of `directory` (built from the same
/// accounts). An address is steered to core `k` when the most specific network that
/// holds it belongs to placed accounts owned by core `k` only; the program tries the
/// networks most specific first, as `Directory::identify` prefers them. When cores are
/// dedicated, other addresses go to the cores that are not.
pub fn plan(config: &Config, directory: &Directory) -> Plan {
    if !config.fairness.steer_placed_connections {
        return Plan {
            rules: vec![],
            program: vec![],
            lines: vec!["connections are not steered (fairness.steer_placed_connections = false)".into()],
        };
    }
    let mut lines = Vec::new();
    let targets = listed(config, directory)
        .into_iter()
        .map(|(network, listers)| (network, target(network, &listers, &mut lines)))
        .collect();
    let rules = rules(targets);
    let spread = spread(directory);
    if !spread.is_empty() {
        let cores: Vec<String> = spread.iter().map(u32::to_string).collect();
        lines.push(format!(
            "steering other clients to core {} (a dedicated core takes only its account's clients)",
            cores.join(", ")
        ));
    }
    match bpf::program(&rules, &spread) {
        Ok(program) => Plan {
            rules,
            program,
            lines,
        },
        Err(why) => Plan {
            rules: vec![],
            program: vec![],
            lines: vec![format!("connections are not steered: {why}")],
        },
    }
}

/// Every network of the configuration, with the accounts that list it.
fn listed<'a>(config: &'a Config, directory: &Directory) -> BTreeMap<IpNet, Listers<'a>> {
    let mut listed: BTreeMap<IpNet, Listers> = BTreeMap::new();
    for account in &config.accounts {
        let Some(owner) = directory.get(&account.id).map(|a| a.owner) else {
            continue;
        };
        let placed = account.core.is_some() || account.dedicated;
        for network in &account.networks {
            listed
                .entry(network.trunc())
                .or_default()
                .push((account.id.as_str(), owner, placed));
        }
    }
    listed
}

/// Where clients in `network` go: the owner core of its placed accounts, [`SPREAD`] when
/// none is placed, [`NOT_STEERED`] when its accounts are on different cores. Says so in
/// `lines` when it is placed.
fn target(network: IpNet, listers: &Listers, lines: &mut Vec<String>) -> u32 {
    let owner = listers.first().map_or(0, |l| l.1);
    if !listers.iter().any(|l| l.2) {
        return SPREAD;
    }
    if listers.iter().all(|l| l.1 == owner) {
        let ids: Vec<&str> = listers.iter().map(|l| l.0).collect();
        lines.push(format!(
            "steering {network} to core {owner} (account {})",
            ids.join(", ")
        ));
        return owner as u32;
    }
    let who: Vec<String> = listers
        .iter()
        .map(|l| format!("{} on core {}", l.0, l.1))
        .collect();
    lines.push(format!(
        "not steering {network}: it is shared by accounts on different cores ({})",
        who.join(", ")
    ));
    NOT_STEERED
}

/// The cores other clients may go to when some are dedicated (none otherwise: then the
/// kernel's hash spreads them over every core).
fn spread(directory: &Directory) -> Vec<u32> {
    let dedicated: Vec<usize> = directory
        .accounts()
        .iter()
        .filter(|a| a.share.dedicated)
        .map(|a| a.owner)
        .collect();
    if dedicated.is_empty() {
        return vec![];
    }
    (0..directory.cores())
        .filter(|c| !dedicated.contains(c))
        .map(|c| c as u32)
        .collect()
}

/// The rules in match order (longest prefix first). The networks of unplaced accounts
/// are kept only where a shorter steered network holds them, to carve them out of it;
/// networks shared across cores go to the kernel's hash over every core.
fn rules(mut targets: Vec<(IpNet, u32)>) -> Vec<Rule> {
    targets.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));
    let steered: Vec<IpNet> = targets.iter().filter(|t| t.1 < SPREAD).map(|t| t.0).collect();
    targets
        .iter()
        .filter(|(network, index)| {
            *index != SPREAD
                || steered
                    .iter()
                    .any(|s| s.prefix_len() < network.prefix_len() && s.contains(network))
        })
        .map(|&(network, index)| Rule { network, index })
        .collect()
}

impl Plan {
    /// Whether the plan steers anything (a listener needs no program otherwise).
    pub fn steers(&self) -> bool {
        self.program.len() > 1
    }

    /// Attaches the program to the SO_REUSEPORT group of `socket`, a listening socket;
    /// it replaces the group's program, if any. A plan that steers nothing attaches a
    /// program that always falls back to the hash.
    pub fn attach(&self, socket: BorrowedFd<'_>) -> io::Result<()> {
        let mut program = if self.program.is_empty() {
            bpf::program(&[], &[]).map_err(io::Error::other)?
        } else {
            self.program.clone()
        };
        let prog = libc::sock_fprog {
            len: program.len() as libc::c_ushort,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: `socket` is an open descriptor for the duration of the borrow; `prog`
        // points at `program`, which outlives the call and holds `prog.len` instructions
        // (at most BPF_MAXINSNS, checked by `bpf::program`); the kernel copies the
        // program and keeps no pointer into it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                (&raw const prog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// The steered listeners as one core holds them, to attach a new plan after a reload:
/// one socket per group is enough, and only core 0 keeps them. A weak reference, so the
/// listener still closes when its accept loop ends.
#[derive(Default)]
pub struct Steered {
    listeners: Vec<(Weak<TcpListener>, RawFd)>,
}

impl Steered {
    /// Adds `listener`, whose descriptor is `fd`.
    pub fn add(&mut self, listener: &Rc<TcpListener>, fd: RawFd) {
        self.listeners.push((Rc::downgrade(listener), fd));
    }

    /// Attaches `plan` to every listener still open; returns the errors.
    pub fn reattach(&self, plan: &Plan) -> Vec<String> {
        let mut errors = Vec::new();
        for (listener, fd) in &self.listeners {
            let Some(open) = listener.upgrade() else { continue };
            // SAFETY: `open` keeps the glommio listener, which owns `fd`, from closing it
            // while the borrow lives.
            let socket = unsafe { BorrowedFd::borrow_raw(*fd) };
            if let Err(e) = plan.attach(socket) {
                errors.push(format!("cannot steer connections: {e}"));
            }
            drop(open);
        }
        errors
    }
}

#[cfg(test)]
mod tests;
