//! Table-driven dialogues for [`Transaction`]: the server's replies in, the client's bytes
//! and the final result out.

use bytes::BytesMut;

use super::*;
use crate::smtp::reply::parse;

/// One dialogue. `sent` is everything the client wrote, with `[nnn]` where it consumed a
/// reply and `<BODY>` where it sent the message body.
struct Case {
    name: &'static str,
    pipelining: bool,
    chunking: bool,
    rcpts: &'static [&'static str],
    replies: &'static [&'static str],
    sent: &'static str,
    mail: u16,
    rcpt_codes: &'static [Option<u16>],
    data: Option<u16>,
    reset_needed: bool,
}

const TWO: &[&str] = &["r1@b.example", "r2@b.example"];

fn run(
    pipelining: bool,
    rcpts: &[&str],
    replies: &[&str],
) -> (String, Result<TransactionResult, UnexpectedReply>) {
    run_with(pipelining, false, rcpts, replies)
}

fn run_with(
    pipelining: bool,
    chunking: bool,
    rcpts: &[&str],
    replies: &[&str],
) -> (String, Result<TransactionResult, UnexpectedReply>) {
    run_sized(pipelining, chunking, 42, rcpts, replies)
}

/// A dialogue for a message of `size_bytes`.
fn run_sized(
    pipelining: bool,
    chunking: bool,
    size_bytes: u64,
    rcpts: &[&str],
    replies: &[&str],
) -> (String, Result<TransactionResult, UnexpectedReply>) {
    let caps = Capabilities {
        pipelining,
        chunking,
        size: Some(1 << 30),
        ..Capabilities::default()
    };
    let mut tx = Transaction::new(&caps, "s@a.example", rcpts, size_bytes, false).unwrap();
    let mut out = BytesMut::new();
    let mut sent = String::new();
    let mut replies = replies.iter();
    let mut next = tx.start(&mut out);
    loop {
        sent.push_str(&String::from_utf8_lossy(&out.split()));
        match next {
            Next::Done(result) => {
                assert!(replies.next().is_none(), "replies left over");
                return (sent, Ok(result));
            }
            Next::Body => sent.push_str("<BODY>"),
            Next::Chunk => sent.push_str("<CHUNK>"),
            Next::Reply => {}
        }
        let wire = replies
            .next()
            .expect("the client wants more replies than scripted");
        let reply = parse(wire.as_bytes()).unwrap().0;
        sent.push_str(&format!("[{}]", reply.code));
        match tx.on_reply(reply, &mut out) {
            Ok(n) => next = n,
            Err(e) => return (sent, Err(e)),
        }
    }
}

fn check(case: &Case) {
    let (sent, result) = run_with(case.pipelining, case.chunking, case.rcpts, case.replies);
    assert_eq!(sent, case.sent, "{}: bytes sent", case.name);
    let result = result.unwrap_or_else(|e| panic!("{}: unexpected reply {e:?}", case.name));
    assert_eq!(result.mail.code, case.mail, "{}: MAIL", case.name);
    let rcpt_codes: Vec<Option<u16>> = result.rcpts.iter().map(|r| r.as_ref().map(|r| r.code)).collect();
    assert_eq!(rcpt_codes, case.rcpt_codes, "{}: RCPT", case.name);
    assert_eq!(result.data.map(|r| r.code), case.data, "{}: DATA", case.name);
    assert_eq!(result.reset_needed, case.reset_needed, "{}: reset", case.name);
}

#[test]
fn dialogues() {
    let cases = [
        Case {
            name: "pipelined, all accepted",
            pipelining: true,
            chunking: false,
            rcpts: TWO,
            replies: &[
                "250 ok\r\n",
                "250 ok\r\n",
                "250 ok\r\n",
                "354 go\r\n",
                "250 queued\r\n",
            ],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nRCPT TO:<r2@b.example>\r\n\
                   DATA\r\n[250][250][250][354]<BODY>[250]",
            mail: 250,
            rcpt_codes: &[Some(250), Some(250)],
            data: Some(250),
            reset_needed: false,
        },
        Case {
            name: "one command per round trip, all accepted",
            pipelining: false,
            chunking: false,
            rcpts: TWO,
            replies: &[
                "250 ok\r\n",
                "250 ok\r\n",
                "251 fwd\r\n",
                "354 go\r\n",
                "250 queued\r\n",
            ],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\n[250]RCPT TO:<r1@b.example>\r\n[250]\
                   RCPT TO:<r2@b.example>\r\n[251]DATA\r\n[354]<BODY>[250]",
            mail: 250,
            rcpt_codes: &[Some(250), Some(251)],
            data: Some(250),
            reset_needed: false,
        },
        Case {
            name: "pipelined, mixed recipients",
            pipelining: true,
            chunking: false,
            rcpts: TWO,
            replies: &[
                "250 ok\r\n",
                "550 5.1.1 no\r\n",
                "250 ok\r\n",
                "354 go\r\n",
                "250 ok\r\n",
            ],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nRCPT TO:<r2@b.example>\r\n\
                   DATA\r\n[250][550][250][354]<BODY>[250]",
            mail: 250,
            rcpt_codes: &[Some(550), Some(250)],
            data: Some(250),
            reset_needed: false,
        },
        Case {
            name: "pipelined, all recipients refused, DATA refused",
            pipelining: true,
            chunking: false,
            rcpts: TWO,
            replies: &[
                "250 ok\r\n",
                "550 no\r\n",
                "450 later\r\n",
                "554 no valid recipients\r\n",
            ],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nRCPT TO:<r2@b.example>\r\n\
                   DATA\r\n[250][550][450][554]",
            mail: 250,
            rcpt_codes: &[Some(550), Some(450)],
            data: Some(554),
            reset_needed: true,
        },
        Case {
            name: "pipelined, all recipients refused, 354 anyway: a lone dot",
            pipelining: true,
            chunking: false,
            rcpts: &["r1@b.example"],
            replies: &["250 ok\r\n", "550 no\r\n", "354 go\r\n", "554 no recipients\r\n"],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nDATA\r\n[250][550][354]\
                   .\r\n[554]",
            mail: 250,
            rcpt_codes: &[Some(550)],
            data: Some(554),
            reset_needed: false,
        },
        Case {
            name: "one per round trip, all recipients refused: no DATA",
            pipelining: false,
            chunking: false,
            rcpts: TWO,
            replies: &["250 ok\r\n", "550 no\r\n", "451 later\r\n"],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\n[250]RCPT TO:<r1@b.example>\r\n[550]\
                   RCPT TO:<r2@b.example>\r\n[451]",
            mail: 250,
            rcpt_codes: &[Some(550), Some(451)],
            data: None,
            reset_needed: true,
        },
        Case {
            name: "one per round trip, MAIL refused: no RCPT",
            pipelining: false,
            chunking: false,
            rcpts: TWO,
            replies: &["550 5.7.1 sender blocked\r\n"],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\n[550]",
            mail: 550,
            rcpt_codes: &[None, None],
            data: None,
            reset_needed: true,
        },
        Case {
            name: "pipelined, MAIL refused: every reply still consumed",
            pipelining: true,
            chunking: false,
            rcpts: TWO,
            replies: &[
                "451 later\r\n",
                "503 no MAIL\r\n",
                "503 no MAIL\r\n",
                "503 no RCPT\r\n",
            ],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nRCPT TO:<r2@b.example>\r\n\
                   DATA\r\n[451][503][503][503]",
            mail: 451,
            rcpt_codes: &[Some(503), Some(503)],
            data: Some(503),
            reset_needed: true,
        },
        Case {
            name: "4xx after the final dot",
            pipelining: false,
            chunking: false,
            rcpts: &["r1@b.example"],
            replies: &[
                "250 ok\r\n",
                "250 ok\r\n",
                "354 go\r\n",
                "451 4.3.0 try later\r\n",
            ],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\n[250]RCPT TO:<r1@b.example>\r\n[250]DATA\r\n\
                   [354]<BODY>[451]",
            mail: 250,
            rcpt_codes: &[Some(250)],
            data: Some(451),
            reset_needed: false,
        },
        Case {
            name: "pipelined, 421 in the middle ends the transaction",
            pipelining: true,
            chunking: false,
            rcpts: TWO,
            replies: &["250 ok\r\n", "421 4.3.2 shutting down\r\n"],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nRCPT TO:<r2@b.example>\r\n\
                   DATA\r\n[250][421]",
            mail: 250,
            rcpt_codes: &[Some(421), None],
            data: None,
            reset_needed: true,
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn chunking_dialogues() {
    let cases = [
        Case {
            name: "pipelined BDAT: MAIL, RCPTs, BDAT and the chunk in one flight, then the replies",
            pipelining: true,
            chunking: true,
            rcpts: TWO,
            replies: &["250 ok\r\n", "250 ok\r\n", "550 no\r\n", "250 2.0.0 queued\r\n"],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nRCPT TO:<r2@b.example>\r\n\
                   BDAT 42 LAST\r\n<CHUNK>[250][250][550][250]",
            mail: 250,
            rcpt_codes: &[Some(250), Some(550)],
            data: Some(250),
            reset_needed: false,
        },
        Case {
            name: "BDAT one command per round trip, refused chunk needs RSET",
            pipelining: false,
            chunking: true,
            rcpts: &["r1@b.example"],
            replies: &["250 ok\r\n", "250 ok\r\n", "554 5.6.0 no\r\n"],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\n[250]RCPT TO:<r1@b.example>\r\n[250]\
                   BDAT 42 LAST\r\n<CHUNK>[554]",
            mail: 250,
            rcpt_codes: &[Some(250)],
            data: Some(554),
            reset_needed: true,
        },
        Case {
            name: "pipelined BDAT with every recipient refused: the server's refusal of the chunk is read too",
            pipelining: true,
            chunking: true,
            rcpts: TWO,
            replies: &[
                "250 ok\r\n",
                "550 no\r\n",
                "450 later\r\n",
                "554 5.5.1 No valid recipients\r\n",
            ],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nRCPT TO:<r2@b.example>\r\n\
                   BDAT 42 LAST\r\n<CHUNK>[250][550][450][554]",
            mail: 250,
            rcpt_codes: &[Some(550), Some(450)],
            data: Some(554),
            reset_needed: true,
        },
        Case {
            name: "pipelined BDAT after a refused MAIL: every reply consumed",
            pipelining: true,
            chunking: true,
            rcpts: &["r1@b.example"],
            replies: &[
                "451 later\r\n",
                "503 no MAIL\r\n",
                "503 5.5.1 No mail transaction for BDAT; chunk discarded\r\n",
            ],
            sent: "MAIL FROM:<s@a.example> SIZE=42\r\nRCPT TO:<r1@b.example>\r\nBDAT 42 LAST\r\n<CHUNK>[451][503][503]",
            mail: 451,
            rcpt_codes: &[Some(503)],
            data: Some(503),
            reset_needed: true,
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn a_large_message_waits_for_an_accepted_recipient_before_its_chunk() {
    let big = PIPELINED_BDAT_MAX_BYTES + 1;
    let head =
        format!("MAIL FROM:<s@a.example> SIZE={big}\r\nRCPT TO:<r1@b.example>\r\nRCPT TO:<r2@b.example>\r\n");
    // One accepted: then BDAT and the chunk, a second round trip.
    let replies = ["250 ok\r\n", "250 ok\r\n", "550 no\r\n", "250 2.0.0 queued\r\n"];
    let (sent, result) = run_sized(true, true, big, TWO, &replies);
    assert_eq!(
        sent,
        format!("{head}[250][250][550]BDAT {big} LAST\r\n<CHUNK>[250]")
    );
    assert_eq!(result.unwrap().data.map(|r| r.code), Some(250));
    // None accepted: no chunk at all, and RSET before the next transaction.
    let (sent, result) = run_sized(
        true,
        true,
        big,
        TWO,
        &["250 ok\r\n", "550 no\r\n", "450 later\r\n"],
    );
    assert_eq!(sent, format!("{head}[250][550][450]"));
    let result = result.unwrap();
    assert_eq!(result.data, None);
    assert!(result.reset_needed);
    // At the bound it still goes in the first flight.
    let at = PIPELINED_BDAT_MAX_BYTES;
    let (sent, _) = run_sized(
        true,
        true,
        at,
        &["r1@b.example"],
        &["250 ok\r\n", "250 ok\r\n", "250 ok\r\n"],
    );
    assert!(
        sent.contains(&format!("BDAT {at} LAST\r\n<CHUNK>[250]")),
        "{sent}"
    );
}

#[test]
fn a_message_above_the_servers_size_is_not_offered() {
    let caps = Capabilities {
        size: Some(1000),
        ..Capabilities::default()
    };
    let rcpts = ["r@b.example"];
    assert_eq!(
        Transaction::new(&caps, "s@a", &rcpts, 1001, false).map(|_| ()),
        Err(Unsendable::TooLarge {
            size_bytes: 1001,
            max_bytes: 1000
        })
    );
    assert!(Transaction::new(&caps, "s@a", &rcpts, 1000, false).is_ok());
    let unlimited = Capabilities {
        size: Some(0),
        ..Capabilities::default()
    };
    assert!(Transaction::new(&unlimited, "s@a", &rcpts, u64::MAX, false).is_ok());
}

#[test]
fn closing_reply_is_found() {
    let (_, result) = run(true, TWO, &["250 ok\r\n", "421 4.3.2 bye\r\n"]);
    let result = result.unwrap();
    assert!(result.server_closing());
    assert_eq!(result.closing_reply().map(|r| r.code), Some(421));
    let (_, result) = run(false, TWO, &["550 no\r\n"]);
    assert!(!result.unwrap().server_closing());
}

#[test]
fn nonsense_replies_are_refused() {
    let (_, result) = run(
        false,
        &["r@b.example"],
        &["250 ok\r\n", "250 ok\r\n", "250 ok\r\n"],
    );
    assert_eq!(result.unwrap_err().phase, Phase::Data);
    let (_, result) = run(false, &["r@b.example"], &["354 what\r\n"]);
    assert_eq!(result.unwrap_err().phase, Phase::Mail);
    let (_, result) = run(true, &["r@b.example"], &["250 ok\r\n", "354 what\r\n"]);
    assert_eq!(result.unwrap_err().phase, Phase::Rcpt);
}

#[test]
fn partial_result_keeps_what_was_answered() {
    let caps = Capabilities {
        pipelining: true,
        ..Capabilities::default()
    };
    let rcpts = ["r1@b.example", "r2@b.example"];
    let mut tx = Transaction::new(&caps, "", &rcpts, 1, false).unwrap();
    let mut out = BytesMut::new();
    tx.start(&mut out);
    assert!(String::from_utf8_lossy(&out).starts_with("MAIL FROM:<>\r\n"));
    assert_eq!(tx.partial(), None);
    tx.on_reply(parse(b"250 ok\r\n").unwrap().0, &mut out).unwrap();
    tx.on_reply(parse(b"550 no\r\n").unwrap().0, &mut out).unwrap();
    let partial = tx.partial().unwrap();
    assert_eq!(partial.mail.code, 250);
    assert_eq!(partial.rcpts[0].as_ref().map(|r| r.code), Some(550));
    assert_eq!(partial.rcpts[1], None);
    assert_eq!(tx.phase(), Phase::Rcpt);
}

#[test]
fn unsendable_messages_are_refused_before_any_byte() {
    let plain = Capabilities::default();
    let all = Capabilities {
        eightbitmime: true,
        smtputf8: true,
        ..Capabilities::default()
    };
    let new = |caps, from, rcpts, eight| Transaction::new(caps, from, rcpts, 1, eight).map(|_| ());
    assert_eq!(new(&plain, "a@b", &["c@d"], true), Err(Unsendable::EightBit));
    assert_eq!(new(&plain, "a@b", &["jörg@d"], false), Err(Unsendable::SmtpUtf8));
    assert_eq!(new(&plain, "a@b", &[], false), Err(Unsendable::NoRecipients));
    assert!(matches!(
        new(&all, "a@b\r\n", &["c@d"], false),
        Err(Unsendable::BadPath(_))
    ));
    assert_eq!(new(&all, "a@b", &["jörg@d"], true), Ok(()));

    let rcpts = ["jörg@d"];
    let mut tx = Transaction::new(&all, "a@b", &rcpts, 1, true).unwrap();
    let mut out = BytesMut::new();
    tx.start(&mut out);
    assert_eq!(&out[..], b"MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8\r\n");
}

#[test]
fn binary_mime_needs_binarymime_and_chunking() {
    let rcpts = ["r@b.example"];
    let chunking_only = Capabilities {
        chunking: true,
        ..Capabilities::default()
    };
    let new = |caps: &Capabilities| Transaction::new(caps, "s@a", &rcpts, 3, false).unwrap();
    assert_eq!(
        new(&chunking_only).with_binary_mime(&chunking_only).map(|_| ()),
        Err(Unsendable::Binary)
    );
    let both = Capabilities {
        chunking: true,
        binarymime: true,
        ..Capabilities::default()
    };
    let mut tx = new(&both).with_binary_mime(&both).unwrap();
    let mut out = BytesMut::new();
    tx.start(&mut out);
    assert_eq!(&out[..], b"MAIL FROM:<s@a> BODY=BINARYMIME\r\n");
}
