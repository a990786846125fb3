//! Routing: where a message goes.
//!
//! - [`egress`]: which pool of sources and which route (smarthost, TLS, AUTH, limits) a
//!   recipient of an account gets, and the weighted turn of sources within a pool.
//! - `runtime`: hickory's `RuntimeProvider` for glommio (UDP, TCP, timers, spawning).
//! - [`plan`]: a route's target (smarthost or MX), the hosts to try, and their site.
//! - [`resolver`]: the per-core resolver, RFC 5321 §5.1 MX order, implicit MX, null MX, and the
//!   permanent/temporary split of DNS failures ([`DnsError`]).

pub mod egress;
pub mod plan;
pub mod resolver;
mod runtime;

pub use resolver::{DnsError, MxHost, Resolver};
