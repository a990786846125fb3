//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), kept in the library so the
//! same checks also run as ordinary tests over the seed corpus (`fuzz/corpus/<target>/`,
//! replayed by `corpus_replay` below) on the stable toolchain. Each takes arbitrary bytes,
//! must never panic, and asserts the parser's own invariants.

use std::net::IpAddr;
use std::rc::Rc;

use bytes::BytesMut;

use crate::smtp::bdat::ChunkReceiver;
use crate::smtp::command;
use crate::smtp::data::{DataProgress, DataReceiver};
use crate::smtp::reply::Reply;
use crate::smtp::server::{Options, Policy, Session, SessionConfig, Step};

/// The command parser: any line parses or is refused with a 5xx; never a panic.
pub fn command_line(data: &[u8]) {
    match command::parse(data) {
        Ok(_) => {}
        Err(reply) => assert!(reply.is_permanent(), "{reply}"),
    }
}

/// Splits `data` into pieces whose sizes come from its first bytes.
fn pieces(data: &[u8]) -> (u8, Vec<&[u8]>) {
    let (&seed, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut out = Vec::new();
    let mut rest = rest;
    let mut n = seed as usize;
    while !rest.is_empty() {
        n = (n * 31 + 7) % 64 + 1;
        let take = n.min(rest.len());
        out.push(&rest[..take]);
        rest = &rest[take..];
    }
    (seed, out)
}

/// The DATA receiver: fed in pieces, it ends at most once, keeps within its limits, and
/// gives the same result whole or split.
pub fn data_receiver(data: &[u8]) {
    let (seed, parts) = pieces(data);
    let normalize = seed & 1 == 1;
    let run = |parts: &[&[u8]]| {
        let mut receiver = DataReceiver::new(4096, 200).normalizing_bare_lf(normalize);
        let (mut buf, mut body) = (BytesMut::new(), Vec::new());
        for (i, part) in parts.iter().enumerate() {
            buf.extend_from_slice(part);
            if let DataProgress::Done(result) = receiver.feed(&mut buf, &mut body) {
                // What was not consumed: the rest of the buffer and the parts not fed.
                buf.extend_from_slice(&parts[i + 1..].concat());
                let joined: Vec<u8> = body.concat();
                if let Ok(len) = result {
                    assert_eq!(len, joined.len());
                    assert!(len <= 4096);
                    if !normalize {
                        assert!(!joined.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
                    }
                }
                return Some((result, joined, buf.to_vec()));
            }
            assert!(buf.is_empty(), "nothing is held back");
        }
        None
    };
    let whole: Vec<u8> = parts.concat();
    assert_eq!(run(&parts), run(&[&whole]), "the split does not matter");
}

/// The BDAT receiver: a chunk is consumed exactly; text rules hold across chunks.
pub fn bdat_receiver(data: &[u8]) {
    let (seed, parts) = pieces(data);
    let mut receiver = ChunkReceiver::new(4096, 200, seed & 1 == 1).normalizing_bare_lf(seed & 2 == 2);
    let mut body = Vec::new();
    for part in &parts {
        receiver.start_chunk(part.len() as u64);
        let mut buf = BytesMut::from(*part);
        buf.extend_from_slice(b"NEXT");
        assert!(receiver.feed(&mut buf, &mut body), "a whole chunk completes it");
        assert_eq!(&buf[..], b"NEXT", "exactly the chunk is consumed");
    }
    if let Ok(len) = receiver.finish(&mut body) {
        assert_eq!(len, body.concat().len());
        assert!(len <= 4096);
    }
}

/// The whole session: any input, in any pieces, never panics and never holds more than
/// one command line.
pub fn session(data: &[u8]) {
    struct Anyone;
    impl Policy for Anyone {
        type Account = ();
        fn identify(&self, _peer: IpAddr, _mail_from: &str) -> Result<(), Reply> {
            Ok(())
        }
    }
    let config = Rc::new(SessionConfig {
        hostname: "fuzz.test".into(),
        message_max_bytes: 4096,
        recipients_max_count: 5,
        command_line_max_bytes: 512,
        text_line_max_bytes: 200,
        errors_max_count: 50,
        messages_per_connection_max_count: 5,
    });
    let (seed, parts) = pieces(data);
    let options = Options {
        starttls: true,
        auth: true,
        auth_plaintext_allowed: seed & 1 == 1,
        require_tls: seed & 2 == 2,
        normalize_bare_lf: seed & 4 == 4,
    };
    let mut session = Session::new(config, Anyone, IpAddr::from([192, 0, 2, 1])).with_options(options);
    let mut buf = BytesMut::new();
    for part in parts {
        buf.extend_from_slice(part);
        for _ in 0..10_000 {
            match session.step(&mut buf) {
                Step::Reply(_) => {}
                Step::NeedMore => break,
                Step::Message(_) => {
                    session.message_done(Ok(()));
                }
                Step::Authenticate(_) => {
                    session.auth_done(Ok(()));
                }
                Step::StartTls(_) => session.tls_started(),
                Step::Close(_) => return,
            }
        }
        assert!(
            buf.len() <= crate::smtp::server::AUTH_LINE_MAX_BYTES,
            "bounded input"
        );
    }
}

#[cfg(test)]
mod corpus_replay {
    use std::path::PathBuf;

    /// Runs `check` on every seed of `fuzz/corpus/<target>/`; the corpus must not be empty.
    fn replay(target: &str, check: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut count = 0;
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            check(&bytes);
            count += 1;
        }
        assert!(count > 0, "the {target} corpus is empty");
    }

    #[test]
    fn command_corpus() {
        replay("command", super::command_line);
    }

    #[test]
    fn data_corpus() {
        replay("data", super::data_receiver);
    }

    #[test]
    fn bdat_corpus() {
        replay("bdat", super::bdat_receiver);
    }

    #[test]
    fn session_corpus() {
        replay("session", super::session);
    }

    #[test]
    fn proxy_corpus() {
        replay("proxy", crate::ingress::proxy::fuzz_check);
    }
}
