//! The peers corerelay is tested and measured against: `corerelay sink` plays the remote MX,
//! `corerelay load` plays the sending service's client. `scripted` and `record` are the
//! sink's scripted remote-MX behaviours for the delivery tests.

pub mod latency;
pub mod load;
pub mod record;
pub mod scenario;
pub mod scripted;
pub mod sink;
