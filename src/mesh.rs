//! The closed set of messages that cross cores, and the channel meshes that carry them.
//!
//! Cores share nothing mutable; the only way one core talks to another is by sending one of
//! these values through a glommio channel mesh. There are two meshes so that neither
//! direction can block the other: the handoff mesh carries accepted messages from the core a
//! client is connected to (the acceptor) to the core that owns the account (the owner), and
//! the ack mesh carries the owner's spool result back. An owner's ack never waits behind
//! handoffs, so a full handoff channel can slow acceptors down but never deadlock them.
//! The lend and lent meshes are the same pair for transforms: an owner asks another core to
//! rewrite and sign one of its messages, and the result comes back on the other mesh.

use std::sync::Arc;

use bytes::Bytes;
use glommio::channels::channel_mesh::{Full, MeshBuilder};

use crate::deliver::transform::Transform;
use crate::message::{Envelope, Message};
use crate::smtp::reply::Reply;

/// An accepted message on its way to its owner core.
pub struct HandoffMsg {
    /// The acceptor core, where the ack goes back to.
    pub from: usize,
    /// The acceptor's key for the waiting client session.
    pub key: usize,
    pub message: Message,
}

/// The owner's answer: `Ok` once the message is durable in the owner's spool, or the reply
/// the client should get instead of `250`.
pub struct AckMsg {
    pub key: usize,
    pub result: Result<(), Reply>,
}

/// A transform an owner core asks another core to do: the owner's own snapshot of every
/// account's options and keys goes along, so the result is what the owner would make.
pub struct LendMsg {
    /// The owner core, where the result goes back to.
    pub from: usize,
    /// The owner's key for the waiting delivery.
    pub key: u64,
    pub transform: Arc<Transform>,
    pub envelope: Envelope,
    /// The message as spooled: trace header, then body.
    pub chunks: Vec<Bytes>,
    pub recipient: String,
}

/// The bytes to send for a [`LendMsg`].
pub struct LentMsg {
    pub key: u64,
    pub chunks: Vec<Bytes>,
}

/// The meshes, built once before the executors start and cloned into each of them.
#[derive(Clone)]
pub struct Meshes {
    pub handoff: MeshBuilder<HandoffMsg, Full>,
    pub ack: MeshBuilder<AckMsg, Full>,
    pub lend: MeshBuilder<LendMsg, Full>,
    pub lent: MeshBuilder<LentMsg, Full>,
}

impl Meshes {
    /// Meshes for `cores` executors. `handoff_max_count` bounds the messages in flight from
    /// one acceptor to one owner; acks get the same room so an owner never waits to ack.
    /// `lend_max_count` bounds the transforms one owner has in flight at one other core.
    pub fn new(cores: usize, handoff_max_count: usize, lend_max_count: usize) -> Meshes {
        let lend_max_count = lend_max_count.max(1);
        Meshes {
            handoff: MeshBuilder::full(cores, handoff_max_count),
            ack: MeshBuilder::full(cores, handoff_max_count),
            lend: MeshBuilder::full(cores, lend_max_count),
            lent: MeshBuilder::full(cores, lend_max_count),
        }
    }
}
