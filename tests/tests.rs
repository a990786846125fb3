//! corerelay's one integration-test binary: every test drives the real `corerelay` binary
//! or the library's real servers over sockets on 127.0.0.1.

mod dns;
mod support;
