//! Dialogue tests for the session: tables of client input and the exact replies expected,
//! each run three ways (chunk by chunk as written, all at once, byte by byte) that must
//! give the same wire output.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::message::{BodyType, domain_of};

pub(super) const EHLO: &str = "250-relay.test\r\n250-PIPELINING\r\n250-SIZE 200\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 DSN\r\n";
const HELO: &str = "250 relay.test\r\n";
const SENDER_OK: &str = "250 2.1.0 Sender OK\r\n";
const RCPT_OK: &str = "250 2.1.5 Recipient OK\r\n";
const GO_AHEAD: &str = "354 Start mail input; end with <CRLF>.<CRLF>\r\n";
const OK: &str = "250 2.0.0 OK\r\n";
const RESET: &str = "250 2.0.0 Reset OK\r\n";
const BYE: &str = "221 2.0.0 Bye\r\n";
const NEED_EHLO: &str = "503 5.5.1 Send EHLO/HELO first\r\n";
const NEED_MAIL: &str = "503 5.5.1 Need MAIL command\r\n";
const NEED_RCPT: &str = "503 5.5.1 Need RCPT command\r\n";
const NESTED: &str = "503 5.5.1 Sender already specified\r\n";
const NO_VALID_RCPT: &str = "554 5.5.1 No valid recipients\r\n";
const SYNTAX: &str = "500 5.5.2 Syntax error, command unrecognized\r\n";
const BARE_LF_COMMAND: &str = "500 5.5.2 Bare LF; command lines must end with CRLF\r\n";
const LINE_TOO_LONG: &str = "500 5.5.2 Line too long\r\n";
const NOT_IMPLEMENTED: &str = "502 5.5.1 Command not implemented\r\n";
const BAD_ADDRESS: &str = "501 5.1.3 Bad local part\r\n";
const BARE_LF_DATA: &str = "550 5.6.0 Message contains bare CR or LF; lines must end with CRLF\r\n";
const TOO_MANY_ERRORS: &str = "421 4.7.0 Too many errors; closing connection\r\n";

pub(super) fn config() -> SessionConfig {
    SessionConfig {
        hostname: "relay.test".into(),
        message_max_bytes: 200,
        recipients_max_count: 2,
        command_line_max_bytes: 64,
        text_line_max_bytes: 40,
        errors_max_count: 20,
        messages_per_connection_max_count: 3,
    }
}

/// Identifies every sender by its domain, refuses `blocked.example`, and logs each call so
/// tests can prove a command was never executed.
pub(super) struct TestPolicy {
    identified: Rc<RefCell<Vec<String>>>,
}

impl Policy for TestPolicy {
    type Account = String;

    fn identify(&self, _peer: IpAddr, mail_from: &str) -> Result<String, Reply> {
        self.identified.borrow_mut().push(mail_from.to_owned());
        match domain_of(mail_from) {
            "blocked.example" => Err(Reply::new(550, Enhanced::new(5, 7, 1), "Sender not allowed")),
            domain => Ok(format!("acct:{domain}")),
        }
    }
}

/// A driver in miniature: steps until NeedMore or Close, as the socket driver will. It
/// logs `user`/`secret` in to `acct:auth` and refuses other credentials, and starts TLS
/// (as if the handshake succeeded) when asked.
pub(super) struct Harness {
    pub(super) session: Session<TestPolicy>,
    pub(super) buf: BytesMut,
    pub(super) identified: Rc<RefCell<Vec<String>>>,
    pub(super) messages: Vec<Transaction<String>>,
    /// What `message_done` reports for the next messages; `Ok` when empty.
    pub(super) outcomes: VecDeque<Result<(), Reply>>,
    pub(super) logins: Vec<Credentials>,
    pub(super) tls_starts: usize,
    pub(super) closed: bool,
}

impl Harness {
    pub(super) fn with_options(config: SessionConfig, options: Options) -> Harness {
        let mut h = Harness::new(config);
        h.session.options = options;
        h
    }

    pub(super) fn new(config: SessionConfig) -> Harness {
        let identified = Rc::new(RefCell::new(Vec::new()));
        let policy = TestPolicy {
            identified: identified.clone(),
        };
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        Harness {
            session: Session::new(Rc::new(config), policy, peer),
            buf: BytesMut::new(),
            identified,
            messages: Vec::new(),
            outcomes: VecDeque::new(),
            logins: Vec::new(),
            tls_starts: 0,
            closed: false,
        }
    }

    /// Appends `input` and returns everything the session answered.
    pub(super) fn feed(&mut self, input: &[u8]) -> String {
        self.buf.extend_from_slice(input);
        let mut out = String::new();
        for _ in 0..100_000 {
            if self.closed {
                return out;
            }
            match self.session.step(&mut self.buf) {
                Step::Reply(reply) => out += &reply.to_wire(),
                Step::NeedMore => {
                    self.assert_bounded();
                    return out;
                }
                Step::Message(transaction) => {
                    self.messages.push(transaction);
                    let outcome = self.outcomes.pop_front().unwrap_or(Ok(()));
                    out += &self.session.message_done(outcome).to_wire();
                }
                Step::Close(reply) => {
                    out += &reply.to_wire();
                    self.closed = true;
                }
                Step::Authenticate(credentials) => {
                    let ok = credentials.username == "user" && credentials.password == "secret";
                    self.logins.push(credentials);
                    let result = if ok {
                        Ok("acct:auth".to_string())
                    } else {
                        Err(catalogue::AUTH_FAILED)
                    };
                    out += &self.session.auth_done(result).to_wire();
                    self.closed = self.session.is_closed();
                }
                Step::StartTls(reply) => {
                    out += &reply.to_wire();
                    assert!(self.buf.is_empty(), "nothing may be read across the handshake");
                    self.tls_starts += 1;
                    self.session.tls_started();
                }
            }
        }
        panic!("the session never asked for more input");
    }

    /// Whatever the input, the session holds back at most one partial command line, and
    /// nothing at all while receiving data.
    fn assert_bounded(&self) {
        let line_max_bytes = match self.session.options.auth {
            true => AUTH_LINE_MAX_BYTES.max(self.session.config.command_line_max_bytes),
            false => self.session.config.command_line_max_bytes,
        };
        match self.session.phase() {
            Phase::Command => assert!(self.buf.len() < line_max_bytes),
            Phase::Data => assert!(self.buf.is_empty()),
        }
    }

    pub(super) fn bodies(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|t| String::from_utf8(t.body.concat()).unwrap())
            .collect()
    }
}

/// Runs a dialogue table and returns the harness that ran it chunk by chunk. The same
/// input all at once and byte by byte must give the same output.
pub(super) fn check_with(config: SessionConfig, dialogue: &[(&str, &[&str])]) -> Harness {
    check_options(config, Options::default(), dialogue)
}

/// [`check_with`] for a session with these listener options.
pub(super) fn check_options(
    config: SessionConfig,
    options: Options,
    dialogue: &[(&str, &[&str])],
) -> Harness {
    let mut stepwise = Harness::with_options(config.clone(), options);
    for (input, expected) in dialogue {
        assert_eq!(
            stepwise.feed(input.as_bytes()),
            expected.concat(),
            "after {input:?}"
        );
    }
    let input: String = dialogue.iter().map(|(i, _)| *i).collect();
    let expected: String = dialogue.iter().flat_map(|(_, e)| e.iter().copied()).collect();
    let mut at_once = Harness::with_options(config.clone(), options);
    assert_eq!(at_once.feed(input.as_bytes()), expected, "all at once");
    let mut bytewise = Harness::with_options(config, options);
    let output: String = input.as_bytes().iter().map(|b| bytewise.feed(&[*b])).collect();
    assert_eq!(output, expected, "byte by byte");
    assert_eq!(bytewise.bodies(), stepwise.bodies());
    stepwise
}

pub(super) fn check(dialogue: &[(&str, &[&str])]) -> Harness {
    check_with(config(), dialogue)
}

#[test]
fn greeting_and_a_full_transaction() {
    let h = Harness::new(config());
    assert_eq!(
        h.session.greeting().to_wire(),
        "220 relay.test ESMTP corerelay\r\n"
    );
    assert_eq!(h.session.helo(), None);
    let h = check(&[
        ("EHLO client.example\r\n", &[EHLO]),
        (
            "MAIL FROM:<Alice@Sender.example> SIZE=100 BODY=8BITMIME\r\n",
            &[SENDER_OK],
        ),
        ("RCPT TO:<bob@rcpt.example>\r\n", &[RCPT_OK]),
        ("rcpt to: <postmaster>\r\n", &[RCPT_OK]),
        ("DATA\r\n", &[GO_AHEAD]),
        ("Subject: hi\r\n\r\n..dot\r\n", &[]),
        (".\r\n", &[OK]),
        ("QUIT\r\n", &[BYE]),
    ]);
    assert_eq!(h.session.helo(), Some("client.example"));
    let [message] = &h.messages[..] else {
        panic!("{} messages", h.messages.len())
    };
    assert_eq!(message.mail_from, "Alice@Sender.example");
    assert_eq!(message.rcpts, ["bob@rcpt.example", "postmaster"]);
    assert_eq!(message.account, "acct:Sender.example");
    assert_eq!(message.params.size, Some(100));
    assert_eq!(message.params.body, BodyType::EightBitMime);
    assert_eq!(h.bodies(), ["Subject: hi\r\n\r\n.dot\r\n"]);
    assert_eq!(message.body_bytes, 21);
}

#[test]
fn pipelined_groups_are_answered_in_order() {
    let h = check(&[
        ("EHLO c\r\n", &[EHLO]),
        (
            "MAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nRCPT TO:<c@r.example>\r\nDATA\r\n",
            &[SENDER_OK, RCPT_OK, RCPT_OK, GO_AHEAD],
        ),
        (
            "one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@r.example>\r\nDATA\r\ntwo\r\n.\r\nRSET\r\nQUIT\r\n",
            &[OK, SENDER_OK, RCPT_OK, GO_AHEAD, OK, RESET, BYE],
        ),
    ]);
    assert_eq!(h.bodies(), ["one\r\n", "two\r\n"]);
    assert_eq!(h.messages[1].mail_from, "");
    assert_eq!(*h.identified.borrow(), ["a@s.example", ""]);
}

#[test]
fn data_after_every_rcpt_failed_is_554_not_503() {
    check(&[
        ("EHLO c\r\n", &[EHLO]),
        (
            "MAIL FROM:<a@s.example>\r\nRCPT TO:<bad>\r\nRCPT TO:<bad2>\r\nDATA\r\nRSET\r\n",
            &[SENDER_OK, BAD_ADDRESS, BAD_ADDRESS, NO_VALID_RCPT, RESET],
        ),
        ("MAIL FROM:<a@s.example>\r\nDATA\r\n", &[SENDER_OK, NEED_RCPT]),
    ]);
}

#[test]
fn commands_out_of_sequence() {
    let size_after_helo = "555 5.5.4 Unsupported MAIL/RCPT parameter\r\n";
    check(&[
        ("MAIL FROM:<a@s.example>\r\n", &[NEED_EHLO]),
        ("RCPT TO:<b@r.example>\r\n", &[NEED_MAIL]),
        ("DATA\r\n", &[NEED_MAIL]),
        ("EHLO c\r\n", &[EHLO]),
        ("DATA\r\n", &[NEED_MAIL]),
        ("MAIL FROM:<a@s.example>\r\n", &[SENDER_OK]),
        ("MAIL FROM:<a@s.example>\r\n", &[NESTED]),
        ("DATA\r\n", &[NEED_RCPT]),
        ("RSET\r\nRCPT TO:<b@r.example>\r\n", &[RESET, NEED_MAIL]),
        // EHLO drops the transaction too.
        ("MAIL FROM:<a@s.example>\r\nEHLO c2\r\n", &[SENDER_OK, EHLO]),
        ("RCPT TO:<b@r.example>\r\n", &[NEED_MAIL]),
        // HELO gets a plain reply and allows no ESMTP parameters.
        ("HELO c3\r\n", &[HELO]),
        ("MAIL FROM:<a@s.example> SIZE=10\r\n", &[size_after_helo]),
        ("MAIL FROM:<a@s.example>\r\n", &[SENDER_OK]),
    ]);
}

#[test]
fn other_verbs() {
    check(&[
        ("NOOP\r\nnoop whatever\r\n", &[OK, OK]),
        (
            "VRFY bob\r\n",
            &["252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"],
        ),
        (
            "HELP\r\n",
            &["214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)\r\n"],
        ),
        (
            "EXPN list\r\nSTARTTLS\r\nAUTH PLAIN AGEAYg==\r\nETRN x\r\n",
            &[
                NOT_IMPLEMENTED,
                "502 5.5.1 STARTTLS not offered\r\n",
                NEED_EHLO,
                NOT_IMPLEMENTED,
            ],
        ),
        ("FOO\r\n\r\n", &[SYNTAX, SYNTAX]),
        (
            "EHLO\r\n",
            &["501 5.5.4 Syntax error in parameters or arguments\r\n"],
        ),
    ]);
}

#[test]
fn policy_refusal_is_returned_as_is() {
    let h = check(&[
        (
            "EHLO c\r\nMAIL FROM:<x@blocked.example>\r\n",
            &[EHLO, "550 5.7.1 Sender not allowed\r\n"],
        ),
        ("RCPT TO:<b@r.example>\r\n", &[NEED_MAIL]),
        ("MAIL FROM:<y@s.example>\r\n", &[SENDER_OK]),
    ]);
    assert_eq!(*h.identified.borrow(), ["x@blocked.example", "y@s.example"]);
}

#[test]
fn message_outcome_error_is_sent_and_resets_the_transaction() {
    let mut h = Harness::new(config());
    h.outcomes.push_back(Err(catalogue::SPOOL_ERROR));
    let out = h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\nx\r\n.\r\n");
    assert!(
        out.ends_with("452 4.3.1 Insufficient system storage; try again later\r\n"),
        "{out}"
    );
    assert_eq!(h.feed(b"RCPT TO:<b@r.example>\r\n"), NEED_MAIL);
    assert_eq!(h.feed(b"MAIL FROM:<a@s.example>\r\n"), SENDER_OK);
    assert_eq!(h.session.helo(), Some("c"));
}

#[test]
fn size_limits() {
    let line = format!("{}\r\n", "x".repeat(38));
    let body_200 = line.repeat(5);
    let body_240 = line.repeat(6);
    let too_large = "552 5.3.4 Message size exceeds fixed maximum message size\r\n";
    let h = check(&[
        (
            "EHLO c\r\nMAIL FROM:<a@s.example> SIZE=201\r\n",
            &[EHLO, too_large],
        ),
        (
            "MAIL FROM:<a@s.example> SIZE=200\r\nRCPT TO:<b@r.example>\r\n",
            &[SENDER_OK, RCPT_OK],
        ),
        ("DATA\r\n", &[GO_AHEAD]),
        (&body_240, &[]),
        (".\r\n", &[too_large]),
        // The session goes on, without the refused transaction.
        ("RCPT TO:<b@r.example>\r\n", &[NEED_MAIL]),
        (
            "MAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\n",
            &[SENDER_OK, RCPT_OK, GO_AHEAD],
        ),
        (&body_200, &[]),
        (".\r\n", &[OK]),
    ]);
    assert_eq!(h.bodies(), [body_200]);
}

#[test]
fn recipient_limit() {
    let h = check(&[
        ("EHLO c\r\nMAIL FROM:<a@s.example>\r\n", &[EHLO, SENDER_OK]),
        (
            "RCPT TO:<1@r.example>\r\nRCPT TO:<2@r.example>\r\n",
            &[RCPT_OK, RCPT_OK],
        ),
        (
            "RCPT TO:<3@r.example>\r\n",
            &["452 4.5.3 Too many recipients\r\n"],
        ),
        ("DATA\r\nx\r\n.\r\n", &[GO_AHEAD, OK]),
    ]);
    assert_eq!(h.messages[0].rcpts, ["1@r.example", "2@r.example"]);
}

#[test]
fn command_line_limit_counts_crlf_and_discards_the_rest() {
    // 64 bytes with CRLF is the limit; 65 is too long.
    let at_limit = format!("NOOP {}\r\n", "x".repeat(57));
    let over = format!("NOOP {}\r\n", "x".repeat(58));
    let huge = "y".repeat(1000);
    check(&[
        (&at_limit, &[OK]),
        (&over, &[LINE_TOO_LONG]),
        ("NOOP ", &[]),
        (&huge, &[LINE_TOO_LONG]),
        (&huge, &[]),
        ("\r\nNOOP\r\n", &[OK]),
    ]);
}

#[test]
fn text_line_limit_in_data() {
    let long_line = format!("{}\r\n", "z".repeat(39));
    check(&[
        (
            "EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\n",
            &[EHLO, SENDER_OK, RCPT_OK, GO_AHEAD],
        ),
        (&long_line, &[]),
        (
            ".\r\n",
            &["550 5.6.0 Message contains a line longer than allowed\r\n"],
        ),
    ]);
}

#[test]
fn too_many_errors_closes() {
    let config = SessionConfig {
        errors_max_count: 3,
        ..config()
    };
    let mut h = check_with(
        config,
        &[
            ("FOO\r\n", &[SYNTAX]),
            // 2xx, 3xx and 4xx replies are not errors.
            ("NOOP\r\nEHLO c\r\n", &[OK, EHLO]),
            ("BAR\r\n", &[SYNTAX]),
            ("BAZ\r\nNOOP\r\n", &[TOO_MANY_ERRORS]),
        ],
    );
    // Nothing after the close is executed or kept.
    assert!(h.closed);
    assert!(matches!(h.session.step(&mut h.buf), Step::NeedMore));
    assert!(h.buf.is_empty());
}

#[test]
fn too_many_messages_closes() {
    let config = SessionConfig {
        messages_per_connection_max_count: 2,
        ..config()
    };
    let one = "MAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\nm\r\n.\r\n";
    let closing = "421 4.7.0 Too many messages on one connection; closing\r\n";
    let h = check_with(
        config,
        &[
            ("EHLO c\r\n", &[EHLO]),
            (one, &[SENDER_OK, RCPT_OK, GO_AHEAD, OK]),
            (one, &[SENDER_OK, RCPT_OK, GO_AHEAD, OK]),
            ("RSET\r\nNOOP\r\n", &[RESET, OK]),
            (one, &[closing]),
        ],
    );
    assert_eq!(h.messages.len(), 2);
}

#[test]
fn bare_line_endings_and_control_bytes_in_commands() {
    let h = check(&[
        ("NOOP\n", &[BARE_LF_COMMAND]),
        ("NOOP\r\r\n", &[SYNTAX]),
        ("NO\0OP\r\n", &[SYNTAX]),
        ("EHLO c\r\n", &[EHLO]),
        // A line ended by a bare LF is refused, never executed.
        (
            "MAIL FROM:<a@s.example>\nRCPT TO:<b@r.example>\r\n",
            &[BARE_LF_COMMAND, NEED_MAIL],
        ),
    ]);
    assert!(h.identified.borrow().is_empty());
}

/// SMTP smuggling through the whole session: the fake end of data must not end the
/// message, and the smuggled MAIL FROM must never reach the policy.
#[test]
fn smuggled_commands_are_never_executed() {
    let nul = "550 5.6.0 Message contains NUL bytes\r\n";
    for (fake_end, refusal) in [
        ("\n.\n", BARE_LF_DATA),
        ("\n.\r\n", BARE_LF_DATA),
        ("\r.\r", BARE_LF_DATA),
        ("\r.\r\n", BARE_LF_DATA),
        ("\r\n.\r", BARE_LF_DATA),
        ("\r\n.\n", BARE_LF_DATA),
        ("\r\n\0.\r\n", nul),
    ] {
        let body = format!(
            "Subject: x\r\n\r\nhello{fake_end}MAIL FROM:<evil@evil.example>\r\nRCPT TO:<v@r.example>\r\nDATA\r\nforged\r\n"
        );
        let h = check(&[
            (
                "EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\n",
                &[EHLO, SENDER_OK, RCPT_OK, GO_AHEAD],
            ),
            (&body, &[]),
            ("\r\n.\r\nQUIT\r\n", &[refusal, BYE]),
        ]);
        assert_eq!(*h.identified.borrow(), ["a@s.example"], "{fake_end:?}");
        assert!(h.messages.is_empty(), "{fake_end:?}");
    }
}

#[test]
fn a_bdat_chunk_without_a_transaction_is_skipped_not_executed() {
    let chunk = "MAIL FROM:<evil@evil.example>\r\n";
    let input = format!("EHLO c\r\nBDAT {} LAST\r\n{chunk}NOOP\r\n", chunk.len());
    let skipped = "503 5.5.1 No mail transaction for BDAT; chunk discarded\r\n";
    let h = check(&[(&input, &[EHLO, skipped, OK]), ("BDAT 0\r\n", &[skipped])]);
    assert!(h.identified.borrow().is_empty());
}

#[test]
fn phases_follow_the_session() {
    let mut h = Harness::new(config());
    assert_eq!(h.session.phase(), Phase::Command);
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\n");
    assert_eq!(h.session.phase(), Phase::Data);
    h.feed(b"x\r\n.\r\nBDAT 10\r\n");
    assert_eq!(h.session.phase(), Phase::Data);
    h.feed(b"0123456789");
    assert_eq!(h.session.phase(), Phase::Command);
}

#[test]
fn stepping_before_the_outcome_is_reported_closes() {
    let mut session = Harness::new(config()).session;
    let mut buf = BytesMut::from(
        &b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n"[..],
    );
    let mut steps = 0;
    while !matches!(session.step(&mut buf), Step::Message(_)) {
        steps += 1;
        assert!(steps < 10);
    }
    match session.step(&mut buf) {
        Step::Close(reply) => assert_eq!(reply.to_wire(), "421 4.3.0 Local error; closing connection\r\n"),
        other => panic!("{other:?}"),
    }
}

/// Random dialogues made of valid and broken lines, cut at random places: the output and
/// the messages never depend on how the input was split, and memory stays bounded (the
/// harness checks it at every NeedMore).
#[test]
fn random_dialogues_split_anywhere_give_the_same_result() {
    const PIECES: &[&str] = &[
        "MAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\n",
        "MAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\n",
        "EHLO c\r\n",
        "HELO c\r\n",
        "MAIL FROM:<a@s.example>\r\n",
        "MAIL FROM:<a@s.example> SIZE=500\r\n",
        "MAIL FROM:<b@blocked.example>\r\n",
        "RCPT TO:<b@r.example>\r\n",
        "RCPT TO:<bad>\r\n",
        "DATA\r\n",
        "line\r\n",
        "..stuffed\r\n",
        ".\r\n",
        ".\r\n",
        ".\r\n",
        "\n.\n",
        "RSET\r\n",
        "NOOP\n",
        "BDAT 3\r\n",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "\r\n",
        "\0",
    ];
    let config = SessionConfig {
        errors_max_count: 1000,
        messages_per_connection_max_count: 1000,
        ..config()
    };
    let mut rng = StdRng::seed_from_u64(2920);
    let mut messages_count = 0;
    for _ in 0..300 {
        let count = rng.random_range(0..40);
        let mut input = String::from("EHLO c\r\n");
        input.extend((0..count).map(|_| PIECES[rng.random_range(0..PIECES.len())]));
        let mut whole = Harness::new(config.clone());
        let expected = whole.feed(input.as_bytes());
        let mut split = Harness::new(config.clone());
        let mut output = String::new();
        let mut rest = input.as_bytes();
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(20));
            output += &split.feed(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(output, expected, "{input:?}");
        assert_eq!(split.bodies(), whole.bodies(), "{input:?}");
        messages_count += whole.messages.len();
    }
    // Enough of the dialogues got a message through for the comparison to cover bodies.
    assert!(messages_count > 80, "{messages_count} messages");
}
