//! Ingress: each core's SMTP listener and the driver of each client connection.
//!
//! Every core binds the same address (SO_REUSEPORT), so the kernel spreads clients across
//! cores and no accept lock is shared. A connection is served entirely on the core that
//! accepted it; only the finished message crosses to its owner core (see [`crate::handoff`]).

pub mod connection;
pub mod listener;

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::account::{AccountRef, Directory};
use crate::config::SmtpConfig;
use crate::handoff::Handoff;
use crate::message::IdGenerator;
use crate::observe::{Event, Log};
use crate::smtp::reply::Reply;
use crate::smtp::server::{Policy, SessionConfig};

/// What every connection on a core shares: read-only settings and the core's handles.
pub struct Ingress {
    pub smtp: SmtpConfig,
    pub hostname: String,
    pub session: Rc<SessionConfig>,
    pub directory: Arc<Directory>,
    pub handoff: Rc<Handoff>,
    pub log: Log,
    pub ids: RefCell<IdGenerator>,
    /// Connections open on this core now.
    pub open_connections: Cell<usize>,
}

impl Ingress {
    pub fn new(
        smtp: SmtpConfig,
        hostname: String,
        directory: Arc<Directory>,
        handoff: Rc<Handoff>,
        log: Log,
    ) -> Rc<Ingress> {
        let session = Rc::new(SessionConfig {
            hostname: hostname.clone(),
            message_max_bytes: smtp.message_max_bytes,
            recipients_max_count: smtp.recipients_max_count,
            command_line_max_bytes: smtp.command_line_max_bytes,
            text_line_max_bytes: smtp.text_line_max_bytes,
            errors_max_count: smtp.errors_max_count,
            messages_per_connection_max_count: smtp.messages_per_connection_max_count,
        });
        let core = handoff.core() as u16;
        Rc::new(Ingress {
            smtp,
            hostname,
            session,
            directory,
            handoff,
            log,
            ids: RefCell::new(IdGenerator::new(core)),
            open_connections: Cell::new(0),
        })
    }
}

/// The session policy of the relay: identify the account from the account directory, and
/// log the clients it refuses.
pub struct DirectoryPolicy {
    pub directory: Arc<Directory>,
    pub log: Log,
}

impl Policy for DirectoryPolicy {
    type Account = AccountRef;

    fn identify(&self, peer: IpAddr, mail_from: &str) -> Result<AccountRef, Reply> {
        self.directory.identify(peer, mail_from).inspect_err(|reply| {
            self.log.emit(Event::Reject {
                peer,
                account: None,
                from: mail_from.to_string(),
                reply: reply.to_string(),
            })
        })
    }
}
