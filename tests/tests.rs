//! corerelay's one integration-test binary: every test drives the real `corerelay` binary
//! or the library's real servers over sockets on 127.0.0.1.
//!
//! - `crash`: issue 9: `kill -9` of the relay under load loses no acknowledged message.
//! - `dns`: the per-core resolver against a real DNS server started by the test.
//! - `observe`: `/metrics`, `/healthz`, `/readyz` while traffic flows.
//! - `relay`: issue 2's end-to-end path: client → relay → MX (via DNS) → sink.

mod crash;
mod dns;
mod observe;
mod relay;
mod support;
