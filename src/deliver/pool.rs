//! Warm outbound connections, per remote address, on one core. A connection that finished a
//! transaction cleanly waits here for the next message to the same host, for at most
//! `delivery.idle_connection_ms` and `delivery.messages_per_connection_max_count` messages:
//! reusing it saves the TCP handshake, the greeting and EHLO on every message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::connection::Connection;

/// Idle connections kept per remote address at most.
const IDLE_PER_ADDR_MAX_COUNT: usize = 64;

#[derive(Default)]
pub struct Pool {
    idle: HashMap<SocketAddr, Vec<(Connection, Instant)>>,
}

impl Pool {
    /// The most recently used idle connection to `addr` that is still fresh.
    pub fn take(&mut self, addr: SocketAddr, idle_max: Duration) -> Option<Connection> {
        let list = self.idle.get_mut(&addr)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < idle_max {
                return Some(conn);
            }
            // Stale: drop it without QUIT; the remote has likely timed it out already.
        }
        None
    }

    /// Returns a connection for reuse, or gives it back when it has served its share (the
    /// caller then closes it).
    pub fn put(&mut self, conn: Connection, messages_max: usize) -> Option<Connection> {
        if conn.messages_sent() >= messages_max {
            return Some(conn);
        }
        let list = self.idle.entry(conn.peer()).or_default();
        if list.len() >= IDLE_PER_ADDR_MAX_COUNT {
            return Some(conn);
        }
        list.push((conn, Instant::now()));
        None
    }

    /// Takes out every connection idle for longer than `idle_max` (to be closed).
    pub fn expired(&mut self, idle_max: Duration) -> Vec<Connection> {
        let mut out = Vec::new();
        for list in self.idle.values_mut() {
            let (stale, fresh): (Vec<_>, Vec<_>) =
                list.drain(..).partition(|(_, since)| since.elapsed() >= idle_max);
            *list = fresh;
            out.extend(stale.into_iter().map(|(c, _)| c));
        }
        self.idle.retain(|_, l| !l.is_empty());
        out
    }

    pub fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}
