//! Fair scheduling on a core: per-account queues served by deficit round robin, so one
//! account's backlog delays another's next message by at most about one quantum of work.

pub mod drr;

pub use drr::Drr;
