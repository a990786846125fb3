//! Routing: where a message goes.
//!
//! Today that is DNS — the MX hosts of a recipient domain and their addresses, looked up by a
//! per-core [`Resolver`] (hickory running on glommio, with its own cache) — or the smarthost
//! from the config. Egress pools (which source address and which class of account) come later.
//!
//! - `runtime`: hickory's `RuntimeProvider` for glommio (UDP, TCP, timers, spawning).
//! - [`plan`]: the route of a recipient (smarthost or MX) and the hosts to try for it.
//! - [`resolver`]: the per-core resolver, RFC 5321 §5.1 MX order, implicit MX, null MX, and the
//!   permanent/temporary split of DNS failures ([`DnsError`]).

pub mod plan;
pub mod resolver;
mod runtime;

pub use resolver::{DnsError, MxHost, Resolver};
