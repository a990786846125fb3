//! Ingress: each core's SMTP listeners and the driver of each client connection.
//!
//! Every core binds every listener's address (SO_REUSEPORT), so the kernel spreads clients
//! across cores and no accept lock is shared; `steer` makes it hand a placed account's
//! clients to the account's owner core. A connection is served entirely on the core
//! that accepted it; only the finished message crosses to its owner core (see
//! [`crate::handoff`]).
//!
//! - `listener`: sockets and the accept loop, with the per-core connection limit.
//! - `connection`: the per-connection driver around [`crate::smtp::server::Session`].
//! - `stream`: plain or TLS, swapped by STARTTLS.
//! - `tls`: the certificate snapshot (configured files or self-signed), swappable.
//! - `auth`: AUTH password checks off the executor, failure throttling per address.
//! - `proxy`: the PROXY protocol v1/v2 header parser.
//! - `steer`: the BPF program that hands a placed account's connections to its owner core.

pub mod auth;
pub mod connection;
pub mod listener;
pub mod proxy;
pub mod steer;
pub mod stream;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::account::{AccountRef, Directory};
use crate::config::{BareLineFeed, Config, ListenerConfig, SmtpConfig};
use crate::handoff::Handoff;
use crate::lifecycle::Stop;
use crate::message::IdGenerator;
use crate::observe::{Event, Log};
use crate::smtp::reply::{Reply, catalogue};
use crate::smtp::server::{Options, Policy, SessionConfig};

use connection::Timeouts;
use tls::{TlsSnapshot, TlsStore};

/// One listener as a core runs it: its configuration and what its sessions offer.
#[derive(Debug)]
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    pub options: Options,
}

impl ListenerRuntime {
    /// STARTTLS is offered on plain listeners (an implicit-TLS session is already
    /// encrypted); AUTH when some account has credentials.
    pub fn new(
        config: ListenerConfig,
        auth_available: bool,
        bare_line_feed: BareLineFeed,
    ) -> ListenerRuntime {
        let options = Options {
            starttls: !config.implicit_tls,
            auth: auth_available,
            auth_plaintext_allowed: config.auth_plaintext_allowed,
            require_tls: config.require_tls,
            normalize_bare_lf: bare_line_feed == BareLineFeed::Normalize,
        };
        ListenerRuntime { config, options }
    }
}

/// The limits a connection runs under, taken when it starts; replaced whole by a reload.
pub struct Limits {
    pub smtp: SmtpConfig,
    pub session: Rc<SessionConfig>,
    pub timeouts: Timeouts,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            smtp: config.smtp.clone(),
            session: Rc::new(SessionConfig::from_config(config)),
            timeouts: Timeouts::from_config(&config.smtp, &config.tls),
        }
    }
}

/// What every connection on a core shares: settings and the core's handles.
pub struct Ingress {
    pub hostname: String,
    limits: RefCell<Rc<Limits>>,
    /// The account directory; replaced whole by a reload (the next MAIL sees the new one).
    directory: RefCell<Arc<Directory>>,
    pub handoff: Rc<Handoff>,
    pub log: Log,
    pub ids: RefCell<IdGenerator>,
    pub tls: TlsStore,
    pub auth: auth::Authenticator,
    /// Raised when the server stops: listeners close, idle sessions get `421`.
    pub stop: Stop,
    /// Connections open on this core now.
    pub open_connections: Cell<usize>,
    /// Connections open on this core now, per client address (bounded by the above).
    open_per_ip: RefCell<HashMap<IpAddr, usize>>,
}

impl Ingress {
    pub fn new(
        config: &Config,
        directory: Arc<Directory>,
        tls: Arc<TlsSnapshot>,
        handoff: Rc<Handoff>,
        log: Log,
    ) -> Rc<Ingress> {
        let core = handoff.core() as u16;
        Rc::new(Ingress {
            hostname: config.server.hostname.clone(),
            limits: RefCell::new(Rc::new(Limits::from_config(config))),
            directory: RefCell::new(directory),
            handoff,
            log,
            ids: RefCell::new(IdGenerator::new(core)),
            tls: TlsStore::new(tls),
            auth: auth::Authenticator::new(config.auth.clone()),
            stop: Stop::new(),
            open_connections: Cell::new(0),
            open_per_ip: RefCell::new(HashMap::new()),
        })
    }

    /// The limits new connections run under.
    pub fn limits(&self) -> Rc<Limits> {
        self.limits.borrow().clone()
    }

    /// Swaps in new limits (a reload); connections opened from now on use them.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.borrow_mut() = Rc::new(limits);
    }

    /// The current account directory.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.borrow().clone()
    }

    /// Swaps in a new account directory (a reload); sessions see it at their next MAIL.
    pub fn set_directory(&self, directory: Arc<Directory>) {
        *self.directory.borrow_mut() = directory;
    }

    /// The listeners as this core runs them.
    pub fn listeners(&self, bare_line_feed: BareLineFeed) -> Vec<Rc<ListenerRuntime>> {
        let auth = self.directory().has_credentials();
        self.limits()
            .smtp
            .listeners
            .iter()
            .map(|l| Rc::new(ListenerRuntime::new(l.clone(), auth, bare_line_feed)))
            .collect()
    }

    /// Takes a connection slot for a client at `peer`, or the `421 4.7.0` that refuses it
    /// (too many connections on this core, or from this address on this core).
    pub fn open_slot(self: &Rc<Self>, peer: IpAddr) -> Result<Slot, Reply> {
        let limits = self.limits();
        if self.open_connections.get() >= limits.smtp.connections_per_core_max_count {
            return Err(catalogue::TOO_MANY_CONNECTIONS);
        }
        let mut per_ip = self.open_per_ip.borrow_mut();
        let count = per_ip.entry(peer).or_insert(0);
        if *count >= limits.smtp.connections_per_ip_max_count {
            return Err(catalogue::TOO_MANY_CONNECTIONS_FROM_IP);
        }
        *count += 1;
        self.open_connections.set(self.open_connections.get() + 1);
        Ok(Slot {
            ingress: self.clone(),
            peer,
        })
    }
}

/// An open connection's place in the limits; given back when dropped.
pub struct Slot {
    ingress: Rc<Ingress>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let ingress = &self.ingress;
        ingress
            .open_connections
            .set(ingress.open_connections.get().saturating_sub(1));
        let mut per_ip = ingress.open_per_ip.borrow_mut();
        if let Some(count) = per_ip.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.peer);
            }
        }
    }
}

/// The session policy of the relay: identify the account from the core's current account
/// directory (so a reload applies to the next MAIL of an open session), and log the
/// clients it refuses.
pub struct DirectoryPolicy {
    pub ingress: Rc<Ingress>,
    pub log: Log,
}

impl DirectoryPolicy {
    fn logged(
        &self,
        peer: IpAddr,
        mail_from: &str,
        result: Result<AccountRef, Reply>,
    ) -> Result<AccountRef, Reply> {
        result.inspect_err(|reply| {
            self.log.emit(Event::Reject {
                peer,
                account: None,
                from: mail_from.to_string(),
                reply: reply.to_string(),
            })
        })
    }
}

impl Policy for DirectoryPolicy {
    type Account = AccountRef;

    fn identify(&self, peer: IpAddr, mail_from: &str) -> Result<AccountRef, Reply> {
        self.logged(
            peer,
            mail_from,
            self.ingress.directory().identify(peer, mail_from),
        )
    }

    fn identify_authenticated(
        &self,
        peer: IpAddr,
        account: &AccountRef,
        mail_from: &str,
    ) -> Result<AccountRef, Reply> {
        self.logged(
            peer,
            mail_from,
            self.ingress
                .directory()
                .identify_authenticated(account, mail_from),
        )
    }

    fn command(&self, kind: crate::smtp::command::CommandKind) {
        self.log.metrics().command(kind);
    }
}
