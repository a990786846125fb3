//! Acceptor → owner transfer of an accepted message, and the spool acknowledgement back.
//!
//! The core a client is connected to (the acceptor) hands the whole message — envelope and
//! `Bytes` chunks, no copy — to the core that owns the account (the owner). The owner
//! spools it, and only when the record is durable does the acceptor send `250`. When the
//! acceptor is the owner, the same path runs inline without touching the mesh.
//!
//! Bounds: the handoff channel from one acceptor to one owner holds at most
//! `server.handoff_window_max_count` messages, and the owner spools at most that many
//! handed-over messages at once per acceptor; a full window makes acceptors wait, which
//! slows only the clients whose accounts that owner serves.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::sync::Semaphore;
use slab::Slab;

use crate::deliver::engine::Deliverer;
use crate::http::Health;
use crate::mesh::{AckMsg, HandoffMsg};
use crate::message::Message;
use crate::observe::{Event, Log};
use crate::smtp::reply::{Reply, catalogue};
use crate::spool::{Spool, SpoolError};

/// The owner side of a core: spool the message, then queue it for delivery.
pub struct Owner {
    spool: Spool,
    deliverer: Rc<Deliverer>,
    log: Log,
    /// Where `/readyz` learns whether this core's spool takes writes.
    health: Arc<Health>,
}

impl Owner {
    pub fn new(spool: Spool, deliverer: Rc<Deliverer>, log: Log, health: Arc<Health>) -> Owner {
        Owner {
            spool,
            deliverer,
            log,
            health,
        }
    }

    /// Spools `message` durably and queues it. `Err` is the reply the client gets instead
    /// of `250` (`452 4.3.1` when the spool cannot write).
    pub async fn accept(&self, message: Message) -> Result<(), Reply> {
        let started = std::time::Instant::now();
        let appended = self.spool.append(&message).await;
        self.log
            .metrics()
            .core
            .spool_append_seconds
            .record(started.elapsed().as_secs_f64());
        self.health
            .set_spool_ok(self.log.core(), !matches!(appended, Err(SpoolError::Io(_))));
        if let Err(e) = appended {
            self.log.emit(Event::Error {
                what: format!("spool append of {} failed: {e}", message.envelope.id),
            });
            return Err(match e {
                SpoolError::TooLarge => catalogue::SIZE_EXCEEDED,
                _ => catalogue::SPOOL_ERROR,
            });
        }
        self.log.emit(Event::Spooled {
            msg: message.envelope.id,
            account: message.envelope.account.clone(),
            size: message.body_len(),
        });
        self.deliverer.enqueue(message);
        Ok(())
    }
}

/// A core's handoff endpoint: submits messages to owners and answers for its own.
pub struct Handoff {
    core: usize,
    senders: Senders<HandoffMsg>,
    waiters: RefCell<Slab<oneshot::Sender<Result<(), Reply>>>>,
    owner: Rc<Owner>,
}

impl Handoff {
    /// Joins the handoff endpoint for this core and starts the tasks that serve other cores'
    /// handoffs and receive the acks for this core's.
    pub fn start(
        owner: Rc<Owner>,
        senders: Senders<HandoffMsg>,
        receivers: Receivers<HandoffMsg>,
        ack_senders: Senders<AckMsg>,
        ack_receivers: Receivers<AckMsg>,
        window_max_count: usize,
    ) -> Rc<Handoff> {
        let handoff = Rc::new(Handoff {
            core: senders.peer_id(),
            senders,
            waiters: RefCell::new(Slab::new()),
            owner,
        });
        handoff.serve_peers(receivers, Rc::new(ack_senders), window_max_count);
        handoff.receive_acks(ack_receivers);
        handoff
    }

    pub fn core(&self) -> usize {
        self.core
    }

    /// Hands `message` to `owner` and waits until it is durable there. `Err` is the reply
    /// for the client.
    pub async fn submit(&self, owner: usize, message: Message) -> Result<(), Reply> {
        if owner == self.core {
            return self.owner.accept(message).await;
        }
        let (tx, rx) = oneshot::channel();
        let key = self.waiters.borrow_mut().insert(tx);
        let msg = HandoffMsg {
            from: self.core,
            key,
            message,
        };
        if self.senders.send_to(owner, msg).await.is_err() {
            self.waiters.borrow_mut().try_remove(key);
            return Err(catalogue::LOCAL_ERROR);
        }
        // The sender side lives in the slab until the ack arrives; a dropped sender means
        // the owner core is gone.
        rx.await.unwrap_or(Err(catalogue::LOCAL_ERROR))
    }

    /// One task per peer core: receive its handoffs and spool them, at most
    /// `window_max_count` at once per peer, each acked when durable.
    fn serve_peers(
        &self,
        mut receivers: Receivers<HandoffMsg>,
        acks: Rc<Senders<AckMsg>>,
        window_max_count: usize,
    ) {
        for (_, rx) in receivers.streams() {
            let owner = self.owner.clone();
            let acks = acks.clone();
            let window = Rc::new(Semaphore::new(window_max_count as u64));
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    let Ok(permit) = window.acquire_static_permit(1).await else {
                        return;
                    };
                    let owner = owner.clone();
                    let acks = acks.clone();
                    glommio::spawn_local(async move {
                        let result = owner.accept(msg.message).await;
                        let _ = acks.send_to(msg.from, AckMsg { key: msg.key, result }).await;
                        drop(permit);
                    })
                    .detach();
                }
            })
            .detach();
        }
    }

    /// One task per peer core: complete this core's waiting submissions as acks arrive.
    fn receive_acks(self: &Rc<Self>, mut ack_receivers: Receivers<AckMsg>) {
        for (_, rx) in ack_receivers.streams() {
            let me = self.clone();
            glommio::spawn_local(async move {
                while let Some(ack) = rx.recv().await {
                    if let Some(tx) = me.waiters.borrow_mut().try_remove(ack.key) {
                        let _ = tx.send(ack.result);
                    }
                }
            })
            .detach();
        }
    }
}
