//! # corerelay
//!
//! An SMTP relay for email-sending services, built thread-per-core on io_uring (glommio).
//! This crate root is the architecture document: the flow of one message, the invariants,
//! and the map of the code. Keep it true when the code changes.
//!
//! ## One message, end to end
//!
//! ```text
//!  client ──TCP──▶ [any core] ingress: one SO_REUSEPORT listener per core (a reuseport BPF
//!                    │  program steers placed accounts' networks to their owner core)
//!                    │  smtp::server (sans-IO session) parses commands and DATA
//!                    │  STARTTLS / implicit TLS, PROXY header, AUTH (wins over the address)
//!                    │  MAIL FROM → account::Directory::identify(source IP, sender domain)
//!                    │  owner = account::Directory::owner(account)
//!                    │  DATA/BDAT → body arrives as bytes::Bytes slices of the read buffer
//!                    ▼
//!                handoff ──mesh──▶ [owner core]   (inline when the owner is this core)
//!                    │  spool: append envelope + message to this core's segment;
//!                    │         group commit: one fdatasync covers every record written meanwhile
//!                    ◀──ack── the client's 250 is sent only now
//!                    ▼
//!                deliver: scheduled queue → router: egress decision (class, domain route,
//!                    │  pool → source) and MX via hickory on glommio (or a smarthost)
//!                    │  ready queues per (source, site, route); connections reused under limits
//!                    │  per job: deliver::transform = tracking rewrite (lol_html over the HTML
//!                    │  parts, other bytes as received slices) + DKIM over the exact bytes sent;
//!                    │  while the owner is busy, deliver::lend has a core with spare CPU do it
//!                    │  2xx delivered · 4xx/IO retried on the backoff schedule · 5xx failed → DSN
//!                    │  each outcome appended to the spool; finished messages let segments go
//!                    ▼
//!                observe: per-core log ring ─▶ <log-dir>/core-N.log; counters ─▶ /metrics
//!  browser ──HTTP──▶ [any core] http: verify token → pixel / 302 → events-core-N.jsonl
//! ```
//!
//! Why the spool holds the message as received and the rewrite happens on the way out:
//! the `250` costs one shared fdatasync and nothing else; one copy is kept whatever the
//! number of recipients; and since the rewrite is a deterministic function of the record and
//! the account's options (tokens carry the accept time), a retry or a restart simply redoes
//! it.
//!
//! ## Invariants (what is deliberately absent)
//!
//! - **No shared mutable state between cores.** Per-core state is owned (`Rc`/`RefCell`,
//!   never held across an `.await`); cores exchange messages only through the glommio
//!   channel meshes of [`mesh`]; what every core reads (config, account directory, keys,
//!   delivery settings: routes, pools, limits) is an immutable snapshot, swapped whole on
//!   reload ([`runtime::control`], [`deliver::settings`]).
//! - **One owner per account.** An account's spool records and delivery queue live on one
//!   core, so a large sender can saturate only that core. The one exception is CPU, not
//!   state: the pure rewrite + sign of its copies may be lent to other cores, in their
//!   lowest-share task queue, so it only takes what their own accounts leave unused.
//! - **No lock and no shared file on the hot path.** Each core has its own spool segments,
//!   log file and DNS cache. Logging never blocks the data path: a full ring drops and
//!   counts.
//! - **250 means durable.** The reply to DATA is sent after the owner's fdatasync covering
//!   that message's record. A torn spool tail is detected by checksum on recovery.
//! - **Every queue, buffer and window is bounded** and its bound is a config key with a unit
//!   suffix.
//! - **Pure cores, thin I/O shells.** SMTP parsing (server and client), spool record format,
//!   retry schedule and outcome classification take bytes/time in and give bytes/decisions
//!   out; the socket and file drivers around them are small.
//! - **Bytes that do not change are not copied.** A message is a list of `Bytes` slices of
//!   what was received; the spool write and the outbound DATA walk that list.
//!
//! ## Code map (in flow order)
//!
//! - [`config`]: TOML → validated [`config::Config`]; the embedded default.
//! - [`runtime`]: starts one executor per core, binds the listeners, wires the shards;
//!   signals: live reload (SIGHUP) and graceful stop (SIGTERM).
//! - [`ingress`]: listeners and accept loops, the per-connection driver around
//!   [`smtp::server`], TLS (STARTTLS, implicit), AUTH checks, the PROXY protocol.
//! - [`lifecycle`]: the stop signal a core's tasks watch.
//! - [`smtp`]: the wire: typed replies, command parser, DATA receiver, server session,
//!   client transaction (all sans-IO).
//! - [`account`]: the account directory: identification and owner core.
//! - [`message`]: the unit that flows: id, envelope, chunk list.
//! - [`mesh`], [`handoff`]: acceptor → owner transfer and the spool acknowledgement back.
//! - [`schedule`]: deficit round robin over per-account queues (fairness on a core).
//! - [`spool`]: per-core durable segments (a bulk and an express stream), group commit, recovery.
//! - [`route`]: DNS (hickory on glommio), MX selection, egress decisions (pools, sources,
//!   domain routes, classes).
//! - [`rewrite`]: MIME walk, transfer codecs, HTML link and pixel rewrite, tracking tokens.
//! - [`dkim`]: DKIM keys and the streaming signer over chunk lists.
//! - [`deliver`]: two-tier queues (scheduled → ready per source × site × route), connection
//!   tasks with reuse and limits, outbound TLS/AUTH, outcome classifier, retries, DSN bounces.
//! - [`observe`]: per-core log ring and its file; the metrics table and per-core handles.
//! - [`http`]: the HTTP listener on every core: `/metrics`, `/healthz`, `/readyz`, and the
//!   tracking endpoint (`/o/`, `/c/`, `/u/`).
//! - [`doctor`]: `corerelay doctor`, the host checked against `tuning/`.
//! - [`tools`]: `corerelay sink` and `corerelay load`, the test and benchmark peers.

pub mod account;
pub mod config;
pub mod deliver;
pub mod dkim;
pub mod doctor;
pub mod handoff;
pub mod http;
pub mod ingress;
pub mod lifecycle;
pub mod mesh;
pub mod message;
pub mod observe;
pub mod rewrite;
pub mod route;
pub mod runtime;
pub mod schedule;
pub mod smtp;
pub mod spool;
pub mod tools;
