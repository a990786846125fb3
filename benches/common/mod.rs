//! What several benches share: a realistic message (envelope, trace header and a body of
//! `Bytes` chunks the size the ingress reads them in) and percentiles of measured latencies.

#![allow(dead_code)]

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use corerelay::message::{BodyType, Envelope, Message, MessageId, Recipient};

/// The size of the reads the ingress driver slices a body from; a body arrives as chunks
/// of about this size.
pub const READ_CHUNK_BYTES: usize = 16 << 10;

/// A header block like the load generator's, then 78-byte text lines up to `size_bytes`.
pub fn body_bytes(size_bytes: usize) -> Vec<u8> {
    let mut out = b"From: <load@load.example>\r\nTo: <sink@sink.example>\r\nSubject: bench\r\n\
Message-ID: <1.2@load.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    while out.len() < size_bytes {
        out.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n",
        );
    }
    out
}

/// `body` cut into fresh chunks of at most [`READ_CHUNK_BYTES`], each its own allocation,
/// as the ingress produces them.
pub fn fresh_chunks(body: &[u8]) -> Vec<Bytes> {
    body.chunks(READ_CHUNK_BYTES)
        .map(|c| BytesMut::from(c).freeze())
        .collect()
}

/// An accepted message with one recipient and the given body chunks.
pub fn message(id: MessageId, body: Vec<Bytes>) -> Message {
    Message {
        envelope: Envelope {
            id,
            account: "local".into(),
            received_at_ms: 1_800_000_000_000,
            source: IpAddr::from([127, 0, 0, 1]),
            helo: "load.corerelay.localhost".into(),
            mail_from: "load@load.example".into(),
            body_type: BodyType::SevenBit,
            rcpts: vec![Recipient {
                addr: "sink@sink.example".into(),
                ..Recipient::default()
            }],
            smtputf8: false,
            dsn_return: None,
            dsn_envid: None,
            auth_user: None,
        },
        trace: Bytes::from_static(
            b"Received: from load.corerelay.localhost ([127.0.0.1])\r\n\tby corerelay.localhost with ESMTP id 0123456789abcdef; Fri, 27 Nov 2026 23:14:29 +0000\r\n",
        ),
        body,
    }
}

/// The `p`-quantile (0..=1) of sorted microsecond samples, in microseconds.
pub fn quantile_us(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}
