//! The closed set of messages that cross cores, and the channel meshes that carry them.
//!
//! Cores share nothing mutable; the only way one core talks to another is by sending one of
//! these values through a glommio channel mesh. There are two meshes so that neither
//! direction can block the other: the handoff mesh carries accepted messages from the core a
//! client is connected to (the acceptor) to the core that owns the account (the owner), and
//! the ack mesh carries the owner's spool result back. An owner's ack never waits behind
//! handoffs, so a full handoff channel can slow acceptors down but never deadlock them.

use glommio::channels::channel_mesh::{Full, MeshBuilder};

use crate::message::Message;
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

/// Both meshes, built once before the executors start and cloned into each of them.
#[derive(Clone)]
pub struct Meshes {
    pub handoff: MeshBuilder<HandoffMsg, Full>,
    pub ack: MeshBuilder<AckMsg, Full>,
}

impl Meshes {
    /// Meshes for `cores` executors. `handoff_max_count` bounds the messages in flight from
    /// one acceptor to one owner; acks get the same room so an owner never waits to ack.
    pub fn new(cores: usize, handoff_max_count: usize) -> Meshes {
        Meshes {
            handoff: MeshBuilder::full(cores, handoff_max_count),
            ack: MeshBuilder::full(cores, handoff_max_count),
        }
    }
}
