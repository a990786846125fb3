//! (to be written)
pub mod retry;
