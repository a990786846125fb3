//! The SMTP wire, with no sockets: typed replies, the command parser, the DATA receiver,
//! the server session state machine and the client transaction state machine. Everything
//! here takes bytes in and gives bytes or decisions out, so it is unit-tested, fuzzed and
//! benchmarked without an executor.

pub mod address;
pub mod bdat;
pub mod client;
pub mod command;
pub mod data;
pub mod fuzz;
pub mod reply;
pub mod server;

pub use reply::{Enhanced, Reply};
