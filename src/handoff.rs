//! Acceptor → owner transfer of an accepted message, and the spool acknowledgement back.
//!
//! The core a client is connected to (the acceptor) hands the whole message — envelope and
//! `Bytes` chunks, no copy — to the core that owns the account (the owner). The owner
//! spools it, and only when the record is durable does the acceptor send `250`. When the
//! acceptor is the owner, the same path runs inline without touching the mesh.
//!
//! Isolation across cores: each acceptor keeps one [`Window`] per owner core (itself
//! included), bounding the messages it has in flight to that owner both in count
//! (`server.handoff_window_max_count`) and in bytes (`server.handoff_window_max_bytes`). A
//! message enters the window before it is handed over and leaves it when the owner's ack
//! (durable, or refused) is back. When an owner is saturated its windows fill, and only
//! the sessions sending mail of that owner's accounts wait: each session is its own task,
//! and a session waiting at the window of core 1 holds nothing the acceptor's sessions
//! for core 0 need. A message that finds no room within `server.handoff_wait_ms` is
//! answered `451 4.3.2`, so a sending service learns to back off rather than hold its
//! connections open indefinitely. Since an acceptor never has more in flight to an owner
//! than the mesh channel holds, sending on the mesh never waits.
//!
//! Per-account limits are checked by the owner, where the account's state lives, just
//! before the spool append (see [`crate::account::limits`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_lite::FutureExt;
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::sync::{Semaphore, StaticPermit};
use slab::Slab;

use crate::account::Directory;
use crate::account::limits::{Admission, Throttle, window_full};
use crate::config::Config;
use crate::deliver::engine::Deliverer;
use crate::http::Health;
use crate::mesh::{AckMsg, HandoffMsg};
use crate::message::Message;
use crate::observe::{Event, Log};
use crate::smtp::reply::{Reply, catalogue};
use crate::spool::{Spool, SpoolError};

/// The owner side of a core: admit the message under its account's limits, spool it,
/// then queue it for delivery.
pub struct Owner {
    spool: Spool,
    deliverer: Rc<Deliverer>,
    log: Log,
    /// Where `/readyz` learns whether this core's spool takes writes.
    health: Arc<Health>,
    /// The accounts and their limits; replaced whole by a reload.
    directory: RefCell<Arc<Directory>>,
    admission: RefCell<Admission>,
}

impl Owner {
    pub fn new(
        spool: Spool,
        deliverer: Rc<Deliverer>,
        log: Log,
        health: Arc<Health>,
        directory: Arc<Directory>,
    ) -> Owner {
        Owner {
            spool,
            deliverer,
            log,
            health,
            directory: RefCell::new(directory),
            admission: RefCell::new(Admission::default()),
        }
    }

    /// Applies a reload: new accounts and limits here, new weights in the delivery queues
    /// and the spool's commits.
    pub fn reload(&self, directory: Arc<Directory>, config: &Config) {
        self.deliverer.set_weights(config);
        self.spool
            .set_fairness(config.fairness.spool_quantum_bytes, weights(&directory));
        self.admission
            .borrow_mut()
            .retain(|id| directory.get(id).is_some());
        *self.directory.borrow_mut() = directory;
    }

    /// The delivery engine of this core.
    pub fn deliverer(&self) -> &Rc<Deliverer> {
        &self.deliverer
    }

    /// The account's limits for a message of `size_bytes`: its accepted-message rate and
    /// the bytes it has queued here. An account the directory no longer knows (removed by
    /// a reload while its message was on the way) is not limited.
    fn admit(&self, account: &str, size_bytes: u64) -> Result<(), Reply> {
        let directory = self.directory.borrow().clone();
        let Some(account) = directory.get(account) else {
            return Ok(());
        };
        let queued = self.deliverer.queued_bytes(&account.id);
        let now_ms = crate::observe::log::now_ms();
        let verdict = self
            .admission
            .borrow_mut()
            .admit(account, size_bytes, queued, now_ms);
        verdict.map_err(|(why, reply)| {
            self.log.metrics().throttled(&account.id, why);
            reply
        })
    }

    /// Admits `message` under its account's limits, spools it durably and queues it. `Err`
    /// is the reply the client gets instead of `250` (`452 4.3.1` when the spool cannot
    /// write or the account has too much queued, `451 4.7.0` over its rate).
    pub async fn accept(&self, message: Message) -> Result<(), Reply> {
        let size_bytes = (message.trace.len() + message.body_len()) as u64;
        self.admit(&message.envelope.account, size_bytes)?;
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

/// The DRR weight of every account in the directory.
pub fn weights(directory: &Directory) -> std::collections::HashMap<String, u32> {
    directory
        .accounts()
        .iter()
        .map(|a| (a.id.clone(), a.share.weight))
        .collect()
}

/// The messages and bytes one acceptor has in flight to one owner, bounded.
pub struct Window {
    count: Rc<Semaphore>,
    bytes: Rc<Semaphore>,
    max_count: u64,
    max_bytes: u64,
}

/// A message's place in a window, given back when dropped (when the owner answered).
pub struct Ticket {
    _count: StaticPermit,
    _bytes: StaticPermit,
}

impl Window {
    pub fn new(max_count: usize, max_bytes: usize) -> Window {
        let (max_count, max_bytes) = (max_count.max(1) as u64, max_bytes.max(1) as u64);
        Window {
            count: Rc::new(Semaphore::new(max_count)),
            bytes: Rc::new(Semaphore::new(max_bytes)),
            max_count,
            max_bytes,
        }
    }

    /// Room for a message of `size_bytes` (one larger than the window takes all of it),
    /// waiting at most `wait`; `None` when the window stayed full that long.
    pub async fn enter(&self, size_bytes: usize, wait: Duration) -> Option<Ticket> {
        let bytes = (size_bytes as u64).clamp(1, self.max_bytes);
        async {
            let count = self.count.acquire_static_permit(1).await.ok()?;
            let bytes = self.bytes.acquire_static_permit(bytes).await.ok()?;
            Some(Ticket {
                _count: count,
                _bytes: bytes,
            })
        }
        // A waiter that gives up leaves the semaphores' queues, and a count it already
        // holds is given back with it.
        .or(async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await
    }

    /// Messages and bytes in flight now.
    pub fn in_flight(&self) -> (u64, u64) {
        (
            self.max_count - self.count.available(),
            self.max_bytes - self.bytes.available(),
        )
    }
}

/// A core's handoff endpoint: submits messages to owners and answers for its own.
pub struct Handoff {
    core: usize,
    senders: Senders<HandoffMsg>,
    waiters: RefCell<Slab<oneshot::Sender<Result<(), Reply>>>>,
    owner: Rc<Owner>,
    /// One window per owner core, this one included.
    windows: Vec<Window>,
    wait: Duration,
}

/// The bounds of the windows of [`Handoff`].
#[derive(Debug, Clone, Copy)]
pub struct WindowLimits {
    pub max_count: usize,
    pub max_bytes: usize,
    /// How long a message waits for room before its client gets `451 4.3.2`.
    pub wait: Duration,
}

impl WindowLimits {
    pub fn from_config(config: &Config) -> WindowLimits {
        WindowLimits {
            max_count: config.server.handoff_window_max_count,
            max_bytes: config.server.handoff_window_max_bytes,
            wait: config.server.handoff_wait,
        }
    }
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
        limits: WindowLimits,
    ) -> Rc<Handoff> {
        let windows = (0..senders.nr_consumers())
            .map(|_| Window::new(limits.max_count, limits.max_bytes))
            .collect();
        let handoff = Rc::new(Handoff {
            core: senders.peer_id(),
            senders,
            waiters: RefCell::new(Slab::new()),
            owner,
            windows,
            wait: limits.wait,
        });
        handoff.serve_peers(receivers, Rc::new(ack_senders), limits.max_count);
        handoff.receive_acks(ack_receivers);
        handoff
    }

    pub fn core(&self) -> usize {
        self.core
    }

    /// This core's owner side.
    pub fn owner(&self) -> &Rc<Owner> {
        &self.owner
    }

    /// Messages and bytes this core has in flight to all owners.
    pub fn in_flight(&self) -> (u64, u64) {
        self.windows
            .iter()
            .map(Window::in_flight)
            .fold((0, 0), |(c, b), (wc, wb)| (c + wc, b + wb))
    }

    /// Hands `message` to `owner` and waits until it is durable there. `Err` is the reply
    /// for the client: `451 4.3.2` when the owner's window stayed full for
    /// `server.handoff_wait_ms`.
    pub async fn submit(&self, owner: usize, message: Message) -> Result<(), Reply> {
        let size_bytes = message.trace.len() + message.body_len();
        let Some(window) = self.windows.get(owner) else {
            return Err(catalogue::LOCAL_ERROR);
        };
        let Some(ticket) = window.enter(size_bytes, self.wait).await else {
            let account = &message.envelope.account;
            self.owner
                .log
                .metrics()
                .throttled(account, Throttle::HandoffWindow);
            return Err(window_full(owner));
        };
        let result = self.transfer(owner, message).await;
        drop(ticket);
        result
    }

    async fn transfer(&self, owner: usize, message: Message) -> Result<(), Reply> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;

    fn run<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::default()
            .io_memory(512 << 10)
            .spawn(test)
            .unwrap()
            .join()
            .unwrap();
    }

    const SHORT: Duration = Duration::from_millis(20);

    /// A window holds at most its count and its bytes; a message that finds no room in
    /// time gets nothing (its client then gets 451 4.3.2), and room comes back with the
    /// tickets.
    #[test]
    fn a_window_bounds_messages_and_bytes() {
        run(|| async {
            let w = Window::new(2, 1000);
            let a = w.enter(300, SHORT).await.unwrap();
            let b = w.enter(300, SHORT).await.unwrap();
            assert_eq!(w.in_flight(), (2, 600));
            assert!(w.enter(1, SHORT).await.is_none(), "two messages at most");
            drop(a);
            assert!(w.enter(800, SHORT).await.is_none(), "1000 bytes at most");
            let c = w.enter(400, SHORT).await.unwrap();
            drop((b, c));
            assert_eq!(w.in_flight(), (0, 0), "a waiter that gave up holds nothing");
            let huge = w.enter(50_000, SHORT).await.unwrap();
            assert_eq!(
                w.in_flight(),
                (1, 1000),
                "a message larger than the window takes all of it"
            );
            drop(huge);
            assert_eq!(
                window_full(1).to_wire(),
                "451 4.3.2 Core 1 is not accepting more messages now (handoff window full); try again later\r\n"
            );
        });
    }

    /// Isolation: while a session waits at the full window of one owner, sessions for
    /// another owner enter theirs at once, and the waiter gets in as soon as room comes.
    #[test]
    fn a_full_window_holds_only_the_sessions_of_its_owner() {
        run(|| async {
            let windows = Rc::new([Window::new(1, 1 << 20), Window::new(1, 1 << 20)]);
            let held = windows[1].enter(10, SHORT).await.unwrap();
            let waiter = {
                let windows = windows.clone();
                glommio::spawn_local(
                    async move { windows[1].enter(10, Duration::from_secs(5)).await.is_some() },
                )
            };
            glommio::timer::sleep(Duration::from_millis(5)).await;
            for _ in 0..3 {
                let other = windows[0].enter(10, Duration::from_millis(1)).await;
                assert!(other.is_some(), "core 0's window is not held up by core 1's");
            }
            drop(held);
            assert!(waiter.await, "the waiter gets the room given back");
        });
    }
}
