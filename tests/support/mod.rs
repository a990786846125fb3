//! Fixtures for the integration tests: small real servers started inside tests.

#![allow(dead_code)]

pub mod dns;
pub mod http;
pub mod load;
pub mod process;
pub mod smtp;
