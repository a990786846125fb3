//! Fixtures for the integration tests: small real servers started inside tests.

pub mod dns;
