//! Transform lending: a core with CPU to spare rewrites and signs messages that another
//! core owns.
//!
//! One account's messages are owned by one core (its spool records, queues and delivery
//! state live there), and so, until now, was all of its tracking rewrite and DKIM signing:
//! a large tracked and signed sender could use one core while the other cores idled. But
//! the transform is a pure function of the spool record and the account's options (see
//! [`super::transform`]), so any core can compute it. An owner that is busy (at least
//! `lending.backlog_min_count` messages in delivery) sends a job's transform to another
//! core over the lend mesh, with its own snapshot of the options and keys, and the bytes
//! come back on the lent mesh; the owner keeps everything else (the connection, the
//! outcome, the spool).
//!
//! The lender does borrowed work in its own task queue with few shares
//! (`lending.shares`), so its own sessions and deliveries go first: a big sender borrows
//! only CPU the other cores' accounts leave unused. At most `lending.window_count`
//! transforms are in flight from one owner to one lender; a lender that does not answer
//! keeps its window full and is no longer asked, and a result not back within
//! `lending.timeout_ms` is computed by the owner (the same bytes, minus DKIM's `t=`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::FutureExt;
use glommio::TaskQueueHandle;
use glommio::channels::channel_mesh::{Receivers, Senders};

use super::transform::Transform;
use crate::config::LendingConfig;
use crate::mesh::{LendMsg, LentMsg};
use crate::message::Envelope;
use crate::observe::Log;

/// One core's side of lending: asks other cores, and answers them.
pub struct Lender {
    core: usize,
    senders: Senders<LendMsg>,
    /// Transforms in flight at each core (this one's own slot stays 0).
    in_flight: RefCell<Vec<usize>>,
    waiters: RefCell<HashMap<u64, oneshot::Sender<Vec<Bytes>>>>,
    next_key: Cell<u64>,
    /// Where the search for a lender starts, so the lenders share the work.
    next_core: Cell<usize>,
    limits: LendingConfig,
    log: Log,
}

impl Lender {
    /// Joins this core's lending: starts the task that does other cores' transforms (in
    /// `queue`) and the one that completes this core's lent transforms as results come.
    pub fn start(
        senders: Senders<LendMsg>,
        receivers: Receivers<LendMsg>,
        result_senders: Senders<LentMsg>,
        result_receivers: Receivers<LentMsg>,
        limits: LendingConfig,
        queue: TaskQueueHandle,
        log: Log,
    ) -> Result<Rc<Lender>, String> {
        let cores = senders.nr_consumers();
        let lender = Rc::new(Lender {
            core: senders.peer_id(),
            senders,
            in_flight: RefCell::new(vec![0; cores]),
            waiters: RefCell::new(HashMap::new()),
            next_key: Cell::new(0),
            next_core: Cell::new(0),
            limits,
            log: log.clone(),
        });
        let window = lender.limits.window_count as f64;
        log.metrics().core.lend_window_max_messages.set(window);
        serve_peers(receivers, Rc::new(result_senders), queue, log)?;
        lender.receive_results(result_receivers);
        Ok(lender)
    }

    /// True when an owner with `in_delivery` messages routed and not settled should lend.
    pub fn busy(&self, in_delivery: usize) -> bool {
        self.limits.window_count > 0 && in_delivery >= self.limits.backlog_min_count
    }

    /// Transforms this core has in flight at other cores.
    pub fn in_flight(&self) -> usize {
        self.in_flight.borrow().iter().sum()
    }

    /// Has another core transform `chunks` for `recipient`: `None` when no core has room
    /// in its window, the channel is closed, or the result is not back in time — the
    /// caller then does the transform itself.
    pub async fn lend(
        &self,
        transform: &Arc<Transform>,
        envelope: &Envelope,
        chunks: &[Bytes],
        recipient: &str,
    ) -> Option<Vec<Bytes>> {
        let to = self.pick()?;
        let key = self.next_key.get();
        self.next_key.set(key.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(key, tx);
        self.in_flight.borrow_mut()[to] += 1;
        let msg = LendMsg {
            from: self.core,
            key,
            transform: transform.clone(),
            envelope: envelope.clone(),
            chunks: chunks.to_vec(),
            recipient: recipient.to_string(),
        };
        // The window is never larger than the channel, so this does not wait.
        if self.senders.send_to(to, msg).await.is_err() {
            self.waiters.borrow_mut().remove(&key);
            self.in_flight.borrow_mut()[to] -= 1;
            return None;
        }
        let lending = &self.log.metrics().core;
        lending.transforms_lent_total.increment(1);
        let timeout = self.limits.timeout;
        let result = async { rx.await.ok() }
            .or(async {
                glommio::timer::sleep(timeout).await;
                None
            })
            .await;
        if result.is_none() {
            // The window slot stays taken until the late result comes (if ever), so a
            // lender that stopped answering is not asked again.
            self.waiters.borrow_mut().remove(&key);
            lending.transform_lend_timeouts_total.increment(1);
        }
        result
    }

    /// The other core with the fewest transforms in flight, if one has room.
    fn pick(&self) -> Option<usize> {
        let in_flight = self.in_flight.borrow();
        let cores = in_flight.len();
        let start = self.next_core.get();
        let best = (0..cores)
            .map(|i| (start + i) % cores)
            .filter(|&c| c != self.core && in_flight[c] < self.limits.window_count)
            .min_by_key(|&c| in_flight[c])?;
        self.next_core.set((best + 1) % cores);
        Some(best)
    }

    /// One task per peer core: hands results to the waiting deliveries and frees their
    /// window slots (also of results that came too late to be waited for).
    fn receive_results(self: &Rc<Self>, mut receivers: Receivers<LentMsg>) {
        for (peer, rx) in receivers.streams() {
            let me = self.clone();
            glommio::spawn_local(async move {
                while let Some(result) = rx.recv().await {
                    if let Some(slot) = me.in_flight.borrow_mut().get_mut(peer) {
                        *slot = slot.saturating_sub(1);
                    }
                    let waiter = me.waiters.borrow_mut().remove(&result.key);
                    if let Some(tx) = waiter {
                        let _ = tx.send(result.chunks);
                    }
                }
            })
            .detach();
        }
    }
}

/// One task per peer core, in the lending queue: does that core's transforms one after
/// the other and sends each result back. The peer's window bounds what waits here.
fn serve_peers(
    mut receivers: Receivers<LendMsg>,
    results: Rc<Senders<LentMsg>>,
    queue: TaskQueueHandle,
    log: Log,
) -> Result<(), String> {
    for (_, rx) in receivers.streams() {
        let results = results.clone();
        let log = log.clone();
        let task = async move {
            while let Some(msg) = rx.recv().await {
                let metrics = log.metrics();
                let chunks = msg
                    .transform
                    .apply(&msg.envelope, &msg.chunks, &msg.recipient, metrics);
                metrics.core.transforms_borrowed_total.increment(1);
                let _ = results.send_to(msg.from, LentMsg { key: msg.key, chunks }).await;
                // A transform is a few hundred microseconds of CPU: let the core's own
                // work in between.
                glommio::yield_if_needed().await;
            }
        };
        glommio::spawn_local_into(task, queue)
            .map(|t| t.detach())
            .map_err(|e| format!("cannot spawn the lending task: {e}"))?;
    }
    Ok(())
}
