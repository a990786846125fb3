//! Delivery: the per-core queue, outbound connections, outcome classification, retries.
//!
//! - [`queue`]: the per-core queue as plain data: entries, retry heap, ready line.
//! - [`engine`]: the workers that take due messages, deliver them and settle the outcome.
//! - [`connection`]: one outbound SMTP session over a glommio socket, driving the
//!   sans-IO client of [`crate::smtp::client`] with a timeout per phase.
//! - [`pool`]: warm connections kept for the next message to the same host.
//! - [`outcome`]: the one place that decides, per recipient, whether an attempt
//!   delivered, deferred (retry later) or failed (bounce).
//! - [`retry`]: the retry schedule as a pure function.

pub mod connection;
pub mod engine;
pub mod outcome;
pub mod pool;
pub mod queue;
pub mod retry;
