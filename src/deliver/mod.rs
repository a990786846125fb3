//! Delivery: the per-core queue, outbound connections, outcome classification, retries.
//!
//! - [`connection`]: one outbound SMTP session over a glommio socket, driving the
//!   sans-IO client of [`crate::smtp::client`] with a timeout per phase.
//! - [`outcome`]: the one place that decides, per recipient, whether an attempt
//!   delivered, deferred (retry later) or failed (bounce).

pub mod connection;
pub mod outcome;
