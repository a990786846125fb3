//! Observability: what each core records about its work. Today the per-core log ring;
//! metrics join it (one event vocabulary for logs and counters).

pub mod log;
pub mod metrics;

pub use log::{Event, Log};
