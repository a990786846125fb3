//! The classifier's rules, one table per kind of attempt.

use std::io;

use super::*;
use crate::smtp::client::Unsendable;
use crate::smtp::reply::parse;

const REMOTE: Remote<'static> = Remote {
    host: "mx.example.com",
    addr: SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 2525)),
};

fn reply(wire: &str) -> Reply {
    parse(format!("{wire}\r\n").as_bytes()).unwrap().0
}

fn result(mail: &str, rcpts: &[Option<&str>], data: Option<&str>) -> TransactionResult {
    TransactionResult {
        mail: reply(mail),
        rcpts: rcpts.iter().map(|r| r.map(reply)).collect(),
        data: data.map(reply),
        reset_needed: false,
    }
}

/// The text of a deferral or failure, the reply of a delivery.
fn text(o: &Outcome) -> &str {
    match o {
        Outcome::Delivered(reply) => reply,
        Outcome::Deferred(r) | Outcome::Failed(r) => &r.text,
    }
}

/// `D`, `T` (deferred, temporary) or `F` per recipient, to keep tables short.
fn kinds(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| match o {
            Outcome::Delivered(_) => 'D',
            Outcome::Deferred(_) => 'T',
            Outcome::Failed(_) => 'F',
        })
        .collect()
}

#[test]
fn replies_decide_per_recipient() {
    let cases: &[(&str, TransactionResult, &str)] = &[
        (
            "all delivered",
            result(
                "250 ok",
                &[Some("250 ok"), Some("251 ok")],
                Some("250 2.0.0 queued"),
            ),
            "DD",
        ),
        (
            "rcpt 5xx and 4xx alongside a delivery",
            result(
                "250 ok",
                &[
                    Some("550 5.1.1 no such user"),
                    Some("450 4.2.1 busy"),
                    Some("250 ok"),
                ],
                Some("250 ok"),
            ),
            "FTD",
        ),
        (
            "MAIL 5xx fails everyone",
            result("550 5.7.1 no", &[None, None], None),
            "FF",
        ),
        (
            "MAIL 4xx defers everyone",
            result("451 4.3.0 later", &[None, None], None),
            "TT",
        ),
        (
            "data 5xx fails the accepted only",
            result(
                "250 ok",
                &[Some("250 ok"), Some("450 later")],
                Some("554 5.6.0 spam"),
            ),
            "FT",
        ),
        (
            "data 4xx defers the accepted",
            result(
                "250 ok",
                &[Some("550 no"), Some("250 ok")],
                Some("451 4.3.0 later"),
            ),
            "FT",
        ),
        (
            "552 to RCPT is too many recipients: temporary",
            result("250 ok", &[Some("552 too many")], None),
            "T",
        ),
        (
            "552 5.5.3 likewise",
            result("250 ok", &[Some("552 5.5.3 too many")], None),
            "T",
        ),
        (
            "552 5.2.2 names its cause: permanent",
            result("250 ok", &[Some("552 5.2.2 full")], None),
            "F",
        ),
        (
            "5.x.x under a 4xx: the code wins",
            result("250 ok", &[Some("451 5.7.1 odd")], None),
            "T",
        ),
        (
            "421 mid-transaction: the rest was not tried",
            result("250 ok", &[Some("550 no"), Some("421 4.3.2 bye"), None], None),
            "FTT",
        ),
        (
            "accepted but no data reply",
            result("250 ok", &[Some("250 ok")], None),
            "T",
        ),
    ];
    for (name, r, expected) in cases {
        let outcomes = classify(&Ok(r.clone()), r.rcpts.len(), REMOTE);
        assert_eq!(kinds(&outcomes), *expected, "{name}");
    }
}

#[test]
fn reasons_name_the_host_and_quote_the_reply() {
    let r = result(
        "250 ok",
        &[Some("550 5.1.1 no such user"), Some("250 ok")],
        Some("250 2.0.0 queued as 1"),
    );
    let outcomes = classify(&Ok(r), 2, REMOTE);
    assert_eq!(
        outcomes[0],
        Outcome::Failed(Reason {
            text: "mx.example.com[127.0.0.1]:2525 said: 550 5.1.1 no such user (in reply to RCPT TO)".into(),
            status: Enhanced::new(5, 1, 1),
            reply: Some("550 5.1.1 no such user".into()),
            remote: Some("mx.example.com".into()),
        })
    );
    assert_eq!(outcomes[1], Outcome::Delivered("250 2.0.0 queued as 1".into()));
    let closing = result("250 ok", &[Some("421 4.3.2 bye"), None], None);
    assert_eq!(
        text(&classify(&Ok(closing), 2, REMOTE)[1]),
        "mx.example.com[127.0.0.1]:2525 said: 421 4.3.2 bye \
         (closing the session before this recipient was tried)"
    );
}

#[test]
fn errors_before_the_transaction_defer_everyone_but_unsendable_fails() {
    let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
    let cases: Vec<(AttemptError, &str)> = vec![
        (
            AttemptError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused)),
            "TT",
        ),
        (AttemptError::Timeout(Phase::Greeting), "TT"),
        (AttemptError::Io(Phase::Ehlo, eof()), "TT"),
        (
            AttemptError::Protocol(Phase::Greeting, "reply too long".into()),
            "TT",
        ),
        (
            AttemptError::Refused(Phase::Greeting, reply("554 5.7.1 go away")),
            "TT",
        ),
        (
            AttemptError::Refused(Phase::Ehlo, reply("550 no HELO for you")),
            "TT",
        ),
        (AttemptError::Unsendable(Unsendable::EightBit), "FF"),
        (AttemptError::Unsendable(Unsendable::SmtpUtf8), "FF"),
    ];
    for (e, expected) in cases {
        let name = e.to_string();
        assert_eq!(kinds(&classify(&Err(e), 2, REMOTE)), expected, "{name}");
    }
    let greeting = classify(
        &Err(AttemptError::Refused(Phase::Greeting, reply("554 5.7.1 go away"))),
        1,
        REMOTE,
    );
    assert_eq!(
        text(&greeting[0]),
        "mx.example.com[127.0.0.1]:2525 said: 554 5.7.1 go away (in its greeting)"
    );
    let Outcome::Deferred(reason) = &greeting[0] else {
        panic!("{greeting:?}")
    };
    assert_eq!(
        reason.status,
        Enhanced::new(4, 7, 1),
        "a deferral's status is of class 4"
    );
    let timeout = classify(&Err(AttemptError::Timeout(Phase::DataEnd)), 1, REMOTE);
    assert_eq!(
        text(&timeout[0]),
        "mx.example.com[127.0.0.1]:2525: timed out at end of data"
    );
}

#[test]
fn interrupted_attempts_keep_the_recipients_already_decided() {
    let partial = result("250 ok", &[Some("550 5.1.1 gone"), Some("250 ok"), None], None);
    let e = AttemptError::Interrupted {
        partial: Box::new(partial),
        cause: Box::new(AttemptError::Io(
            Phase::DataEnd,
            io::Error::new(io::ErrorKind::UnexpectedEof, "eof"),
        )),
    };
    let outcomes = classify(&Err(e), 3, REMOTE);
    assert_eq!(kinds(&outcomes), "FTT");
    assert_eq!(
        text(&outcomes[1]),
        "mx.example.com[127.0.0.1]:2525: connection closed by the server at end of data"
    );

    let refused_mail = result("550 5.7.1 blocked", &[None], None);
    let e = AttemptError::Interrupted {
        partial: Box::new(refused_mail),
        cause: Box::new(AttemptError::Timeout(Phase::Rcpt)),
    };
    assert_eq!(kinds(&classify(&Err(e), 1, REMOTE)), "F");
}

#[test]
fn outcome_count_follows_rcpt_count() {
    let r = result("250 ok", &[Some("250 ok")], Some("250 ok"));
    assert_eq!(kinds(&classify(&Ok(r), 2, REMOTE)), "DT");
    assert!(classify(&Err(AttemptError::Timeout(Phase::Connect)), 0, REMOTE).is_empty());
}

#[test]
fn reasons_are_bounded_and_printable() {
    let long = format!("550 5.1.1 {}\tend", "é".repeat(600));
    let outcomes = classify(&Ok(result("250 ok", &[Some(&long)], None)), 1, REMOTE);
    let Outcome::Failed(reason) = &outcomes[0] else {
        panic!("expected a failure, got {outcomes:?}");
    };
    let reason = &reason.text;
    assert!(reason.len() <= REASON_MAX_BYTES, "{} bytes", reason.len());
    assert!(reason.ends_with('…'));
    assert!(!reason.chars().any(char::is_control));

    let short = classify(&Ok(result("250 ok", &[Some("550 a\tb")], None)), 1, REMOTE);
    assert_eq!(
        text(&short[0]),
        "mx.example.com[127.0.0.1]:2525 said: 550 a b (in reply to RCPT TO)"
    );
}

#[test]
fn statuses_for_the_dsn() {
    let status = |o: &Outcome| match o {
        Outcome::Deferred(r) | Outcome::Failed(r) => r.status.to_string(),
        Outcome::Delivered(_) => "2".into(),
    };
    let r = result("250 ok", &[Some("550 no"), Some("450 4.2.1 busy")], None);
    let o = classify(&Ok(r), 2, REMOTE);
    assert_eq!((status(&o[0]), status(&o[1])), ("5.0.0".into(), "4.2.1".into()));
    let too_big = AttemptError::Unsendable(Unsendable::TooLarge {
        size_bytes: 2,
        max_bytes: 1,
    });
    assert_eq!(status(&classify(&Err(too_big), 1, REMOTE)[0]), "5.3.4");
    let refused = AttemptError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
    assert_eq!(status(&classify(&Err(refused), 1, REMOTE)[0]), "4.4.1");
    assert_eq!(
        status(&classify(&Err(AttemptError::Tls("bad cert".into())), 1, REMOTE)[0]),
        "4.7.5"
    );
    assert_eq!(
        status(&classify(&Err(AttemptError::TlsUnavailable), 1, REMOTE)[0]),
        "4.7.0"
    );
}

#[test]
fn too_many_recipients_are_sent_again_only_when_the_server_was_counting() {
    let r = result(
        "250 ok",
        &[
            Some("250 ok"),
            Some("452 4.5.3 too many recipients"),
            Some("452 4.2.2 mailbox full"),
            Some("552 too many"),
        ],
        Some("250 ok"),
    );
    assert_eq!(too_many_recipients(&r), vec![1, 3]);
    let none_accepted = result("250 ok", &[Some("452 4.5.3 too many")], None);
    assert!(too_many_recipients(&none_accepted).is_empty());
    let mail_refused = result("451 later", &[Some("250 ok"), Some("452 4.5.3 x")], None);
    assert!(too_many_recipients(&mail_refused).is_empty());
}
