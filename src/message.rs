//! The unit that flows through corerelay: a message id, its envelope, and its bytes as a
//! list of `Bytes` chunks that are slices of the buffers the client's data arrived in.
//!
//! The same types are handed from the acceptor core to the owner core, written to and read
//! back from the spool, and walked by delivery, so a message is never reassembled into a
//! second contiguous copy on its way through.

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A message id, unique across cores and restarts: accept time in microseconds since the
/// Unix epoch, the accepting core, and a per-core sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub u128);

impl MessageId {
    const SEQ_BITS: u32 = 48;

    pub fn new(unix_us: u64, core: u16, seq: u64) -> MessageId {
        let seq = seq & ((1 << Self::SEQ_BITS) - 1);
        MessageId(((unix_us as u128) << 64) | ((core as u128) << Self::SEQ_BITS) | seq as u128)
    }

    /// The core that accepted the message.
    pub fn core(self) -> u16 {
        (self.0 >> Self::SEQ_BITS) as u16
    }

    /// Accept time, microseconds since the Unix epoch.
    pub fn unix_us(self) -> u64 {
        (self.0 >> 64) as u64
    }

    /// Parses the form [`fmt::Display`] writes.
    pub fn parse(s: &str) -> Option<MessageId> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(MessageId)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Hands out message ids on one core. Ids are strictly increasing on a core, even if the
/// clock steps back, so they never collide.
#[derive(Debug)]
pub struct IdGenerator {
    core: u16,
    last_us: u64,
    seq: u64,
}

impl IdGenerator {
    pub fn new(core: u16) -> IdGenerator {
        IdGenerator {
            core,
            last_us: 0,
            seq: 0,
        }
    }

    pub fn next(&mut self, now_us: u64) -> MessageId {
        if now_us > self.last_us {
            self.last_us = now_us;
            self.seq = 0;
        } else {
            self.seq += 1;
        }
        MessageId::new(self.last_us, self.core, self.seq)
    }
}

/// The body type declared with `MAIL FROM … BODY=` (RFC 1652, RFC 3030).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    /// RFC 3030: arrived by BDAT, may hold any bytes (bare CR/LF, NUL). It can only be
    /// sent on with BDAT to a server offering BINARYMIME; DATA could not carry it safely.
    BinaryMime,
}

/// RFC 3461 `RET=`: what a failure DSN returns of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DsnReturn {
    Full,
    Headers,
}

/// RFC 3461 `NOTIFY=`: which delivery outcomes the sender wants a DSN for. All false is
/// `NOTIFY=NEVER`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// RFC 3461 `ORCPT=`: the original recipient, its xtext decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalRecipient {
    /// The address type, e.g. `rfc822` or `utf-8` (RFC 6533), as sent.
    pub addr_type: String,
    pub addr: String,
}

/// One envelope recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward-path without angle brackets, e.g. `user@example.com`.
    pub addr: String,
    /// RFC 3461 `NOTIFY`; `None` when not given (the default: failures and delays).
    #[serde(default)]
    pub notify: Option<Notify>,
    /// RFC 3461 `ORCPT`.
    #[serde(default)]
    pub orcpt: Option<OriginalRecipient>,
}

impl Recipient {
    pub fn domain(&self) -> &str {
        domain_of(&self.addr)
    }
}

/// What the acceptor learned about a message, stored with it in the spool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: MessageId,
    /// The account that sent it (see `account::Directory::identify`).
    pub account: String,
    /// Accept time, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The client's address (after PROXY, when that is enabled).
    pub source: IpAddr,
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// The reverse-path without angle brackets; empty for the null sender `<>`.
    pub mail_from: String,
    pub body_type: BodyType,
    pub rcpts: Vec<Recipient>,
    /// RFC 6531: the sender asked for SMTPUTF8 (addresses or headers may be UTF-8).
    #[serde(default)]
    pub smtputf8: bool,
    /// RFC 3461 `RET`.
    #[serde(default)]
    pub dsn_return: Option<DsnReturn>,
    /// RFC 3461 `ENVID`, its xtext decoded.
    #[serde(default)]
    pub dsn_envid: Option<String>,
    /// The AUTH user name the client logged in with (RFC 4954), if it did.
    #[serde(default)]
    pub auth_user: Option<String>,
}

/// A whole message: envelope, the trace header corerelay prepended, and the client's
/// bytes exactly as received (dot-unstuffed), as chunks.
#[derive(Clone, Debug)]
pub struct Message {
    pub envelope: Envelope,
    /// `Received: …\r\n`, added by corerelay (RFC 5321 §4.4).
    pub trace: Bytes,
    /// The message as the client sent it, in the order received.
    pub body: Vec<Bytes>,
}

impl Message {
    /// Length of the body as received, in bytes.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// The bytes to send onwards: the trace header, then the body chunks.
    pub fn wire_chunks(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.trace).chain(self.body.iter())
    }
}

/// The domain part of an address (`user@Example.COM` → `Example.COM`); empty when there is
/// no `@`.
pub fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let mut g = IdGenerator::new(3);
        let a = g.next(1_000);
        let b = g.next(1_000);
        let c = g.next(999);
        assert!(a < b && b < c);
        assert_eq!(a.core(), 3);
        assert_eq!(a.unix_us(), 1_000);
        assert_eq!(MessageId::parse(&c.to_string()), Some(c));
        assert_eq!(MessageId::parse("xyz"), None);
    }

    #[test]
    fn domain_of_takes_the_last_at() {
        assert_eq!(domain_of("\"a@b\"@example.com"), "example.com");
        assert_eq!(domain_of("postmaster"), "");
    }
}
