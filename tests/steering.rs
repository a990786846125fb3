//! Issue 6's connection steering through the real binary, on two cores: a placed
//! account's clients (by source address, 127.0.0.x) are accepted on its owner core, every
//! time, as each core's log of connections shows; a dedicated core accepts no other
//! client; without one, an unplaced client is accepted on both cores; a listener behind
//! PROXY protocol is not steered; a reload that moves an account moves its connections.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::support::process::{self, RelayConfig, wait_for};

fn config(dir: &Path, accounts: &str) -> String {
    RelayConfig::new(dir, 2)
        .server(r#"hostname = "relay.test""#)
        .listeners(
            r#"
[[listeners]]
address = "127.0.0.1:0"

[[listeners]]
address = "127.0.0.1:0"
proxy_protocol = true
proxy_trusted_networks = ["127.0.0.0/8"]
"#,
        )
        .section(accounts)
        .build()
}

fn account(id: &str, network: &str, extra: &str) -> String {
    format!(
        "[[accounts]]\nid = \"{id}\"\nnetworks = [\"{network}\"]\nsender_domains = [\"{id}.example\"]\n{extra}\n"
    )
}

/// One SMTP session from `source`: greeting, QUIT, closed.
fn session_from(source: &str, relay: SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let source: IpAddr = source.parse().unwrap();
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0))).unwrap();
    socket.connect(&SockAddr::from(relay)).unwrap();
    let mut stream: TcpStream = socket.into();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("220 "), "{source}: {line}");
    stream.write_all(b"QUIT\r\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("221 "), "{source}: {line}");
}

/// Every logged connection as (client address, core), once `count` are logged.
fn connections(log: &Path, count: usize) -> Vec<(String, usize)> {
    wait_for(&format!("{count} connections in the core logs"), || {
        let all: Vec<(String, usize)> = (0..2)
            .flat_map(|core| {
                std::fs::read_to_string(log.join(format!("core-{core}.log")))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|r| r["event"] == "connect")
                    .map(|r| (r["peer"].as_str().unwrap_or("?").to_string(), core))
                    .collect::<Vec<_>>()
            })
            .collect();
        (all.len() >= count).then_some(all)
    })
}

/// The cores that accepted `source`'s connections, with how many each.
fn cores_of(all: &[(String, usize)], source: &str) -> [usize; 2] {
    let mut by_core = [0; 2];
    for (peer, core) in all {
        if peer == source {
            by_core[*core] += 1;
        }
    }
    by_core
}

/// `vip` is dedicated (core 1), `pinned` asks for core 0, `rest` (all of 127/8) is placed
/// by the hash (on core 0, the one not dedicated): 24 sessions from each of their
/// addresses. Without steering about half of each would land on the other core (all 24
/// on the same core by chance: 1 in 2^23).
#[test]
fn placed_accounts_are_accepted_on_their_owner_core() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = account("vip", "127.0.0.5", "dedicated = true")
        + &account("pinned", "127.0.0.6", "core = 0")
        + &account("rest", "127.0.0.0/8", "");
    let relay = process::relay(dir.path(), &config(dir.path(), &accounts));
    let proxied = relay.more_listeners(1)[0];
    for want in [
        "corerelay: steering 127.0.0.5/32 to core 1 (account vip)".to_string(),
        "corerelay: steering 127.0.0.6/32 to core 0 (account pinned)".to_string(),
        "corerelay: steering other clients to core 0 (a dedicated core takes only its account's clients)"
            .to_string(),
        format!("corerelay: not steering {proxied}: its clients come through a PROXY protocol proxy"),
    ] {
        assert!(relay.before.contains(&want), "{want} in {:?}", relay.before);
    }
    let sources = ["127.0.0.5", "127.0.0.6", "127.0.0.1"];
    for _ in 0..24 {
        for source in sources {
            session_from(source, relay.addr);
        }
    }
    let all = connections(&dir.path().join("log"), 72);
    assert_eq!(all.len(), 72);
    assert_eq!(cores_of(&all, "127.0.0.5"), [0, 24], "vip");
    assert_eq!(cores_of(&all, "127.0.0.6"), [24, 0], "pinned");
    assert_eq!(
        cores_of(&all, "127.0.0.1"),
        [24, 0],
        "kept off the dedicated core"
    );
    drop(relay);
}

/// `moving` is pinned to core 1, then a reload pins it to core 0: the program is attached
/// again and its next connections go to core 0. Other clients are left to the kernel's
/// hash over both cores (no core is dedicated).
#[test]
fn a_reload_moves_steering_with_the_placement() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = account("moving", "127.0.0.6", "core = 1") + &account("rest", "127.0.0.0/8", "");
    let relay = process::relay(dir.path(), &config(dir.path(), &accounts));
    let want = "corerelay: steering 127.0.0.6/32 to core 1 (account moving)".to_string();
    assert!(relay.before.contains(&want), "{want} in {:?}", relay.before);
    let log = dir.path().join("log");
    for _ in 0..24 {
        session_from("127.0.0.6", relay.addr);
        session_from("127.0.0.1", relay.addr);
    }
    let all = connections(&log, 48);
    assert_eq!(cores_of(&all, "127.0.0.6"), [0, 24]);
    // The hash of the source port (one core for all 24: 1 in 2^23).
    let rest = cores_of(&all, "127.0.0.1");
    assert!(rest[0] > 0 && rest[1] > 0, "127.0.0.1 spread: {rest:?}");

    let path = dir.path().join("corerelay.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("core = 1", "core = 0")).unwrap();
    relay.signal(libc::SIGHUP);
    let moved = relay.line_after("corerelay: after reload: steering 127.0.0.6/32 to ");
    assert_eq!(moved, "core 0 (account moving)");
    for _ in 0..12 {
        session_from("127.0.0.6", relay.addr);
    }
    assert_eq!(cores_of(&connections(&log, 60), "127.0.0.6"), [12, 24]);
    drop(relay);
}
