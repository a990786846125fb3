//! The payloads of the three record kinds, pure: what a Message, Update or Done record
//! carries and how it is laid out inside the frame of [`super::record`].
//!
//! A Message payload is `[u32 envelope length][envelope (postcard)][u32 trace length]
//! [trace][body]`: the body runs to the end of the payload, so it is never length-prefixed
//! and its chunks can be copied straight from the message's `Bytes` into the write buffer.
//! Update and Done payloads are small postcard structs; postcard plus the record version
//! byte is how later issues add fields.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::RcptState;
use super::record::PAYLOAD_MAX_BYTES;
use crate::message::{Envelope, Message, MessageId};

/// The payload of a Message record, as the parts that are written back to back.
pub struct MessageParts {
    pub parts: Vec<Bytes>,
    pub payload_len: usize,
}

/// Lays out a message's payload without copying its trace or body: the parts are the
/// small encoded prefix followed by the message's own `Bytes` handles. `None` when the
/// payload would exceed [`PAYLOAD_MAX_BYTES`] or the envelope cannot be encoded.
pub fn message_parts(message: &Message) -> Option<MessageParts> {
    let envelope = postcard::to_allocvec(&message.envelope).ok()?;
    let payload_len = 8 + envelope.len() + message.trace.len() + message.body_len();
    if payload_len > PAYLOAD_MAX_BYTES {
        return None;
    }
    let mut prefix = BytesMut::with_capacity(8 + envelope.len());
    prefix.put_u32_le(envelope.len() as u32);
    prefix.put_slice(&envelope);
    prefix.put_u32_le(message.trace.len() as u32);
    let mut parts = Vec::with_capacity(2 + message.body.len());
    parts.push(prefix.freeze());
    parts.push(message.trace.clone());
    parts.extend(message.body.iter().filter(|c| !c.is_empty()).cloned());
    Some(MessageParts { parts, payload_len })
}

/// A decoded Message payload, borrowing the trace and body from the record bytes.
#[derive(Debug)]
pub struct MessageView<'a> {
    pub envelope: Envelope,
    pub trace: &'a [u8],
    pub body: &'a [u8],
}

impl MessageView<'_> {
    /// Builds an owned message whose body is one chunk.
    pub fn to_message(&self) -> Message {
        Message {
            envelope: self.envelope.clone(),
            trace: Bytes::copy_from_slice(self.trace),
            body: vec![Bytes::copy_from_slice(self.body)],
        }
    }

    /// The message without its body (read back with `Spool::load` when needed).
    pub fn to_message_without_body(&self) -> Message {
        Message {
            envelope: self.envelope.clone(),
            trace: Bytes::copy_from_slice(self.trace),
            body: Vec::new(),
        }
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// Decodes a Message payload of the current version; `None` if it is malformed.
pub fn decode_message(payload: &[u8]) -> Option<MessageView<'_>> {
    decode_message_of(super::record::VERSION, payload)
}

/// Decodes a Message payload written under record `version`; `None` if it is malformed
/// or of a version this code does not read.
pub fn decode_message_of(version: u8, payload: &[u8]) -> Option<MessageView<'_>> {
    let (envelope, rest) = split_prefixed(payload)?;
    let (trace, body) = split_prefixed(rest)?;
    let envelope: Envelope = match version {
        1 => postcard::from_bytes::<v1::Envelope>(envelope).ok()?.into(),
        super::record::VERSION => postcard::from_bytes(envelope).ok()?,
        _ => return None,
    };
    Some(MessageView {
        envelope,
        trace,
        body,
    })
}

/// Re-encodes an older Message payload in the current layout (one copy of the record).
pub fn upgrade_message(version: u8, payload: &[u8]) -> Option<Bytes> {
    let view = decode_message_of(version, payload)?;
    let parts = message_parts(&view.to_message())?;
    Some(Bytes::from(parts.parts.concat()))
}

/// The envelope layouts of earlier record versions, kept to read old spools.
mod v1 {
    use std::net::IpAddr;

    use serde::Deserialize;

    use crate::message::{self, MessageId};

    #[derive(Deserialize)]
    pub struct Recipient {
        pub addr: String,
    }

    /// `BodyType` had only its first two variants in version 1; postcard numbers variants,
    /// so today's enum reads them unchanged.
    #[derive(Deserialize)]
    pub struct Envelope {
        pub id: MessageId,
        pub account: String,
        pub received_at_ms: u64,
        pub source: IpAddr,
        pub helo: String,
        pub mail_from: String,
        pub body_type: message::BodyType,
        pub rcpts: Vec<Recipient>,
    }

    impl From<Envelope> for message::Envelope {
        fn from(e: Envelope) -> message::Envelope {
            message::Envelope {
                id: e.id,
                account: e.account,
                received_at_ms: e.received_at_ms,
                source: e.source,
                helo: e.helo,
                mail_from: e.mail_from,
                body_type: e.body_type,
                rcpts: e
                    .rcpts
                    .into_iter()
                    .map(|r| message::Recipient {
                        addr: r.addr,
                        ..Default::default()
                    })
                    .collect(),
                smtputf8: false,
                dsn_return: None,
                dsn_envid: None,
                auth_user: None,
            }
        }
    }
}

/// Splits `[u32 len][len bytes]rest`.
fn split_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let rest = &bytes[4..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// Delivery progress of one message: recipient states that changed (by index into the
/// envelope's recipients), the attempt count and when the next attempt is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePayload {
    pub id: MessageId,
    pub rcpt_states: Vec<(u32, RcptState)>,
    pub attempts: u32,
    pub next_attempt_ms: u64,
}

/// The message is finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonePayload {
    pub id: MessageId,
}

/// Encodes a small postcard payload as one part.
pub fn encode_small<T: Serialize>(value: &T) -> Option<Bytes> {
    postcard::to_allocvec(value).ok().map(Bytes::from)
}

/// Decodes a small postcard payload. postcard bounds every allocation by the input length,
/// so a damaged length inside cannot ask for a huge buffer.
pub fn decode_small<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Option<T> {
    postcard::from_bytes(payload).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::message::{BodyType, Recipient};

    pub(crate) fn sample(id: u128, rcpts: usize, body: &[&[u8]]) -> Message {
        Message {
            envelope: Envelope {
                id: MessageId(id),
                account: "acct".into(),
                received_at_ms: 1_700_000_000_000,
                source: "192.0.2.7".parse().unwrap(),
                helo: "client.example".into(),
                mail_from: "sender@example.com".into(),
                body_type: BodyType::EightBitMime,
                rcpts: (0..rcpts)
                    .map(|i| Recipient {
                        addr: format!("r{i}@example.net"),
                        ..Default::default()
                    })
                    .collect(),
                smtputf8: false,
                dsn_return: None,
                dsn_envid: None,
                auth_user: None,
            },
            trace: Bytes::from_static(b"Received: from client.example\r\n"),
            body: body.iter().map(|c| Bytes::copy_from_slice(c)).collect(),
        }
    }

    #[test]
    fn message_round_trip_joins_the_chunks() {
        let m = sample(42, 3, &[b"Subject: hi\r\n", b"", b"\r\nbody\r\n"]);
        let mp = message_parts(&m).unwrap();
        let flat: Vec<u8> = mp.parts.concat();
        assert_eq!(flat.len(), mp.payload_len);
        let v = decode_message(&flat).unwrap();
        assert_eq!(v.envelope, m.envelope);
        assert_eq!(v.trace, &m.trace[..]);
        assert_eq!(v.body, b"Subject: hi\r\n\r\nbody\r\n");
        for cut in 0..flat.len() - m.body_len() {
            assert!(decode_message(&flat[..cut]).is_none(), "cut at {cut}");
        }
    }

    /// A version 1 payload, encoded with the layout version 1 wrote, still decodes, and
    /// upgrading it gives the current layout with the new fields at their defaults.
    #[test]
    fn version_1_payloads_decode_and_upgrade() {
        #[derive(Serialize)]
        struct V1Recipient {
            addr: String,
        }
        #[derive(Serialize)]
        struct V1Envelope {
            id: MessageId,
            account: String,
            received_at_ms: u64,
            source: std::net::IpAddr,
            helo: String,
            mail_from: String,
            body_type: BodyType,
            rcpts: Vec<V1Recipient>,
        }
        let m = sample(7, 2, &[b"Subject: old\r\n\r\nbody\r\n"]);
        let e = &m.envelope;
        let old = postcard::to_allocvec(&V1Envelope {
            id: e.id,
            account: e.account.clone(),
            received_at_ms: e.received_at_ms,
            source: e.source,
            helo: e.helo.clone(),
            mail_from: e.mail_from.clone(),
            body_type: e.body_type,
            rcpts: e
                .rcpts
                .iter()
                .map(|r| V1Recipient { addr: r.addr.clone() })
                .collect(),
        })
        .unwrap();
        let mut payload = Vec::new();
        payload.extend_from_slice(&(old.len() as u32).to_le_bytes());
        payload.extend_from_slice(&old);
        payload.extend_from_slice(&(m.trace.len() as u32).to_le_bytes());
        payload.extend_from_slice(&m.trace);
        payload.extend_from_slice(&m.body[0]);

        let v = decode_message_of(1, &payload).unwrap();
        assert_eq!(v.envelope, m.envelope);
        assert_eq!(v.body, &m.body[0][..]);
        // Read as the current version, the old bytes do not pass for the same envelope.
        assert!(decode_message(&payload).is_none_or(|v| v.envelope != m.envelope));
        let upgraded = upgrade_message(1, &payload).unwrap();
        let v = decode_message(&upgraded).unwrap();
        assert_eq!(v.envelope, m.envelope);
        assert_eq!(v.trace, &m.trace[..]);
        assert!(
            decode_message_of(3, &upgraded).is_none(),
            "a newer version is refused"
        );
    }

    #[test]
    fn new_envelope_fields_round_trip() {
        use crate::message::{DsnReturn, Notify, OriginalRecipient};
        let mut m = sample(8, 1, &[b"x\r\n"]);
        m.envelope.body_type = BodyType::BinaryMime;
        m.envelope.smtputf8 = true;
        m.envelope.dsn_return = Some(DsnReturn::Headers);
        m.envelope.dsn_envid = Some("QQ314159".into());
        m.envelope.auth_user = Some("shop".into());
        m.envelope.rcpts[0].notify = Some(Notify {
            success: true,
            failure: true,
            delay: false,
        });
        m.envelope.rcpts[0].orcpt = Some(OriginalRecipient {
            addr_type: "rfc822".into(),
            addr: "grün@example.net".into(),
        });
        let flat = message_parts(&m).unwrap().parts.concat();
        assert_eq!(decode_message(&flat).unwrap().envelope, m.envelope);
    }

    #[test]
    fn small_payloads_round_trip() {
        let u = UpdatePayload {
            id: MessageId(9),
            rcpt_states: vec![(0, RcptState::Delivered), (2, RcptState::Failed)],
            attempts: 3,
            next_attempt_ms: 123,
        };
        let b = encode_small(&u).unwrap();
        assert_eq!(decode_small::<UpdatePayload>(&b), Some(u));
        assert_eq!(decode_small::<DonePayload>(&[0xff; 3]), None);
    }
}
