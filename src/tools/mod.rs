//! The peers corerelay is tested and measured against: `corerelay sink` plays the remote MX,
//! `corerelay load` plays the sending service's client.

pub mod load;
pub mod sink;
