//! corerelay's one integration-test binary: every test drives the real `corerelay` binary
//! or the library's real servers over sockets on 127.0.0.1.
//!
//! - `crash`: issue 9: `kill -9` of the relay under load loses no acknowledged message.
//! - `diskfull`: issue 9: a full spool disk answers 452 and recovers; an unwritable log
//!   directory never stops mail (mounts a loop ext4 image: needs root).
//! - `deliver`: issue 5's delivery engine: egress routing and source addresses, limits and
//!   reuse, TLS policies, remote capabilities, restarts with mixed outcomes, bounces.
//! - `dns`: the per-core resolver against a real DNS server started by the test.
//! - `fairness`: issue 6: a small account overtakes a big backlog at a stalled MX;
//!   per-account limits answer with their reasons; pinned and dedicated placement.
//! - `faults`: issue 9: the test tools' fault injection (sink --random-fail, load --rate).
//! - `fuzz_replay`: issue 9: the fuzz corpora through the fuzz targets' checks, on stable.
//! - `hostile`: issue 9: idle connections, slowloris, floods, huge headers, MIME bombs,
//!   invalid UTF-8, trickled bodies.
//! - `hostile_http`: issue 9: forged/expired/tampered tracking tokens never redirect; HTTP
//!   request smuggling, oversized heads, trickled requests, too many connections.
//! - `observe`: `/metrics`, `/healthz`, `/readyz` while traffic flows.
//! - `relay`: issue 2's end-to-end path: client → relay → MX (via DNS) → sink.
//! - `ingress`: issue 3's conformance suite, driven by lettre: TLS, AUTH, BDAT, SMTPUTF8,
//!   DSN, pipelining.
//! - `ingress_limits`: issue 3's error paths as scripted dialogues: every limit and
//!   timeout, SMTP smuggling, STARTTLS injection, PROXY protocol, AUTH throttling.
//! - `steering`: issue 6: a placed account's connections are accepted on its owner core.
//! - `tools`: the benchmark peers (`corerelay sink`'s live count).

mod broken_peers;
mod crash;
mod deliver;
mod diskfull;
mod dns;
mod fairness;
mod faults;
mod fuzz_replay;
mod hostile;
mod hostile_http;
mod ingress;
mod ingress_limits;
mod lifecycle;
mod observe;
mod relay;
mod steering;
mod support;
mod tools;
mod tracking;
