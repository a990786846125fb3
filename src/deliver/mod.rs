//! Delivery: the per-core queues, outbound connections, outcome classification, retries
//! and bounces.
//!
//! - [`queue`]: the scheduled tier as plain data: entries, retry heap, due line.
//! - [`ready`]: the ready tier as plain data: one queue per (source, site, route) with its
//!   connection, per-connection and rate limits.
//! - [`engine`]: the scheduler and the router that turns due messages into jobs.
//! - `routing`: due message → egress decision → hops → jobs on the ready queues; the
//!   re-routing of waiting jobs after a reload.
//! - `dispatch`: the connection tasks that work the ready queues.
//! - `settle`: outcomes to the spool, retries, expiry, bounces.
//! - [`connection`]: one outbound SMTP session over a glommio socket (from a chosen
//!   source address, with STARTTLS and AUTH), driving the sans-IO client of
//!   [`crate::smtp::client`] with a timeout per phase.
//! - [`stream`]: plain or TLS stream, and the connect from a source address.
//! - [`tls`]: the rustls client configurations and the memory of failed handshakes.
//! - [`outcome`]: the one place that decides, per recipient, whether an attempt
//!   delivered, deferred (retry later) or failed (bounce).
//! - [`retry`]: the retry schedule as a pure function.
//! - [`settings`]: the routing and delivery settings as one snapshot, swapped whole by a
//!   reload.
//! - [`dsn`]: RFC 3464 delivery status notifications as a pure function.
//! - [`transform`]: the account's tracking rewrite and DKIM signing of a job's bytes.
//! - [`lend`]: another core with CPU to spare does a busy owner's transforms.
//! - [`clock`]: the injected clock.

pub mod clock;
pub mod connection;
mod dispatch;
pub mod dsn;
pub mod engine;
pub mod lend;
pub mod outcome;
pub mod queue;
pub mod ready;
pub mod retry;
mod routing;
pub mod settings;
mod settle;
pub mod stream;
pub mod tls;
pub mod transform;
