//! Dialogue tests for the extensions: STARTTLS, AUTH, CHUNKING/BDAT with BINARYMIME,
//! SMTPUTF8, DSN parameters, TLS required before MAIL, bare LF normalization. Tables of
//! input and the exact replies, run whole, chunk by chunk and byte by byte where the
//! dialogue allows it (STARTTLS cannot be pipelined, by design).

use super::tests::{EHLO, Harness, check, check_options, config};
use super::*;
use crate::message::{BodyType, DsnReturn, Notify};

const SENDER_OK: &str = "250 2.1.0 Sender OK\r\n";
const RCPT_OK: &str = "250 2.1.5 Recipient OK\r\n";
const OK: &str = "250 2.0.0 OK\r\n";
const BYE: &str = "221 2.0.0 Bye\r\n";
const READY: &str = "220 2.0.0 Ready to start TLS\r\n";
const AUTH_OK: &str = "235 2.7.0 Authentication successful\r\n";
const AUTH_FAILED: &str = "535 5.7.8 Authentication credentials invalid\r\n";
const BARE_LF_DATA: &str = "550 5.6.0 Message contains bare CR or LF; lines must end with CRLF\r\n";

fn ehlo_with(extra: &[&str]) -> String {
    let mut lines: Vec<String> = EHLO
        .trim_end()
        .split("\r\n")
        .map(|l| l[4..].to_string())
        .collect();
    lines.extend(extra.iter().map(|e| e.to_string()));
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
        .collect()
}

fn tls_and_auth() -> Options {
    Options {
        starttls: true,
        auth: true,
        ..Options::default()
    }
}

#[test]
fn starttls_is_offered_until_active_and_resets_the_session() {
    let mut h = Harness::with_options(config(), tls_and_auth());
    assert_eq!(
        h.feed(b"EHLO c\r\n"),
        ehlo_with(&["STARTTLS"]),
        "no AUTH before TLS"
    );
    assert_eq!(h.feed(b"MAIL FROM:<a@s.example>\r\n"), SENDER_OK);
    assert_eq!(h.feed(b"STARTTLS\r\n"), READY);
    assert_eq!(h.tls_starts, 1);
    // RFC 3207 §4.2: everything is forgotten, EHLO again.
    assert_eq!(h.session.helo(), None);
    assert_eq!(
        h.feed(b"RCPT TO:<b@r.example>\r\n"),
        "503 5.5.1 Need MAIL command\r\n"
    );
    assert_eq!(h.feed(b"EHLO c\r\n"), ehlo_with(&["AUTH PLAIN LOGIN"]));
    assert_eq!(h.session.protocol(), "ESMTPS");
    assert_eq!(h.feed(b"STARTTLS\r\n"), "503 5.5.1 TLS already active\r\n");
}

/// CVE-2011-0411: a command pipelined behind STARTTLS in the same packet must not be
/// executed after the handshake; the connection is closed before any TLS.
#[test]
fn plaintext_pipelined_after_starttls_closes_the_connection() {
    let mut h = Harness::with_options(config(), tls_and_auth());
    h.feed(b"EHLO c\r\n");
    let out = h.feed(b"STARTTLS\r\nMAIL FROM:<evil@evil.example>\r\n");
    assert_eq!(
        out,
        "554 5.5.1 Commands pipelined after STARTTLS; closing connection\r\n"
    );
    assert!(h.closed);
    assert_eq!(h.tls_starts, 0);
    assert!(h.identified.borrow().is_empty());
}

#[test]
fn tls_required_before_mail() {
    let options = Options {
        starttls: true,
        require_tls: true,
        ..Options::default()
    };
    let mut h = Harness::with_options(config(), options);
    h.feed(b"EHLO c\r\n");
    assert_eq!(
        h.feed(b"MAIL FROM:<a@s.example>\r\n"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    h.feed(b"STARTTLS\r\n");
    h.feed(b"EHLO c\r\n");
    assert_eq!(h.feed(b"MAIL FROM:<a@s.example>\r\n"), SENDER_OK);
}

#[test]
fn auth_plain_and_login_identify_the_account() {
    let options = Options {
        auth: true,
        auth_plaintext_allowed: true,
        ..Options::default()
    };
    let plain = "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"; // \0user\0secret
    let h = check_options(
        config(),
        options,
        &[
            ("EHLO c\r\n", &[&ehlo_with(&["AUTH PLAIN LOGIN"])]),
            (plain, &[AUTH_OK]),
            (plain, &["503 5.5.1 Already authenticated\r\n"]),
            (
                "MAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\nx\r\n.\r\n",
                &[
                    SENDER_OK,
                    RCPT_OK,
                    "354 Start mail input; end with <CRLF>.<CRLF>\r\n",
                    OK,
                ],
            ),
        ],
    );
    assert_eq!(
        h.messages[0].account, "acct:auth",
        "AUTH wins over the source address"
    );
    assert_eq!(h.messages[0].auth_user.as_deref(), Some("user"));
    assert!(
        h.identified.borrow().is_empty(),
        "identify() by address was not asked"
    );
    assert_eq!(h.session.protocol(), "ESMTPA");

    // LOGIN, PLAIN without an initial response, a wrong password, cancel, junk.
    let h = check_options(
        config(),
        options,
        &[
            ("EHLO c\r\n", &[&ehlo_with(&["AUTH PLAIN LOGIN"])]),
            ("AUTH LOGIN\r\n", &["334 VXNlcm5hbWU6\r\n"]),
            ("dXNlcg==\r\n", &["334 UGFzc3dvcmQ6\r\n"]),
            ("d3Jvbmc=\r\n", &[AUTH_FAILED]),
            ("AUTH PLAIN\r\n", &["334 \r\n"]),
            ("*\r\n", &["501 5.7.0 Authentication cancelled\r\n"]),
            (
                "AUTH PLAIN !!!\r\n",
                &["501 5.5.2 Cannot decode the response (base64)\r\n"],
            ),
            (
                "AUTH CRAM-MD5\r\n",
                &["504 5.5.4 Unrecognized authentication type\r\n"],
            ),
            ("AUTH LOGIN dXNlcg==\r\n", &["334 UGFzc3dvcmQ6\r\n"]),
            ("c2VjcmV0\r\n", &[AUTH_OK]),
        ],
    );
    assert_eq!(h.logins.len(), 2);
    assert_eq!(h.logins[1].username, "user");
    assert!(
        !format!("{:?}", h.logins[1]).contains("secret"),
        "passwords are not printed"
    );
}

#[test]
fn auth_needs_tls_unless_allowed_and_not_inside_a_transaction() {
    check_options(
        config(),
        tls_and_auth(),
        &[
            ("EHLO c\r\n", &[&ehlo_with(&["STARTTLS"])]),
            (
                "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n",
                &["538 5.7.11 Encryption required for requested authentication mechanism\r\n"],
            ),
        ],
    );
    let options = Options {
        auth: true,
        auth_plaintext_allowed: true,
        ..Options::default()
    };
    check_options(
        config(),
        options,
        &[
            (
                "EHLO c\r\nMAIL FROM:<a@s.example>\r\n",
                &[&ehlo_with(&["AUTH PLAIN LOGIN"]), SENDER_OK],
            ),
            (
                "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n",
                &["503 5.5.1 AUTH not allowed during a mail transaction\r\n"],
            ),
        ],
    );
    check(&[(
        "EHLO c\r\nAUTH LOGIN\r\n",
        &[EHLO, "502 5.5.1 AUTH not offered\r\n"],
    )]);
}

#[test]
fn failed_logins_count_as_errors_and_close_at_the_limit() {
    let options = Options {
        auth: true,
        auth_plaintext_allowed: true,
        ..Options::default()
    };
    let config = SessionConfig {
        errors_max_count: 2,
        ..config()
    };
    let mut h = Harness::with_options(config, options);
    h.feed(b"EHLO c\r\n");
    assert_eq!(h.feed(b"AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n"), AUTH_FAILED);
    assert_eq!(
        h.feed(b"AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n"),
        "421 4.7.0 Too many errors; closing connection\r\n"
    );
    assert!(h.closed);
}

#[test]
fn bdat_chunks_make_one_message_and_mixing_is_refused() {
    let h = check(&[
        (
            "EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\n",
            &[EHLO, SENDER_OK, RCPT_OK],
        ),
        ("BDAT 12\r\nSubject: x\r\n", &["250 2.0.0 12 octets received\r\n"]),
        ("BDAT 0\r\n", &["250 2.0.0 0 octets received\r\n"]),
        (
            "DATA\r\n",
            &["503 5.5.1 DATA not allowed after BDAT in one transaction\r\n"],
        ),
        ("BDAT 9 LAST\r\n\r\n.body\r\n", &[OK]),
        // BDAT LAST of 0 bytes ends a message too; BINARYMIME needs BDAT.
        (
            "MAIL FROM:<a@s.example> BODY=BINARYMIME\r\nRCPT TO:<b@r.example>\r\nDATA\r\n",
            &[
                SENDER_OK,
                RCPT_OK,
                "503 5.5.1 BODY=BINARYMIME requires BDAT, not DATA\r\n",
            ],
        ),
        (
            "BDAT 5\r\n\0\n.\n\rBDAT 0 LAST\r\n",
            &["250 2.0.0 5 octets received\r\n", OK],
        ),
        ("QUIT\r\n", &[BYE]),
    ]);
    assert_eq!(h.bodies(), ["Subject: x\r\n\r\n.body\r\n", "\0\n.\n\r"]);
    assert_eq!(h.messages[1].params.body, BodyType::BinaryMime);
    assert_eq!(h.messages[0].body_bytes, 21);
}

/// A failed chunk fails the transaction (RFC 3030 §2); the chunks pipelined after it are
/// read and discarded, never taken as commands; nothing is handed over.
#[test]
fn a_failed_bdat_chunk_fails_the_transaction_and_later_chunks_are_skipped() {
    let smuggled = "x\r\n.\nMAIL FROM:<evil@evil.example>\r\n";
    let input = format!("BDAT {} \r\n{smuggled}BDAT 6 LAST\r\nRSET\r\n", smuggled.len());
    let h = check(&[
        (
            "EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\n",
            &[EHLO, SENDER_OK, RCPT_OK],
        ),
        (
            &input,
            &[
                BARE_LF_DATA,
                "503 5.5.1 No mail transaction for BDAT; chunk discarded\r\n",
            ],
        ),
        (
            "MAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nBDAT 300 LAST\r\n",
            &[SENDER_OK, RCPT_OK],
        ),
        (
            &"y".repeat(300),
            &["552 5.3.4 Message size exceeds fixed maximum message size\r\n"],
        ),
    ]);
    assert!(h.messages.is_empty());
    assert_eq!(*h.identified.borrow(), ["a@s.example", "a@s.example"]);
}

#[test]
fn smtputf8_addresses_need_the_parameter() {
    let h = check(&[
        ("EHLO c\r\n", &[EHLO]),
        (
            "MAIL FROM:<jö@s.example>\r\n",
            &["553 5.6.7 Non-ASCII address needs MAIL FROM with SMTPUTF8\r\n"],
        ),
        ("MAIL FROM:<a@s.example>\r\n", &[SENDER_OK]),
        (
            "RCPT TO:<bö@r.example>\r\n",
            &["553 5.6.7 Non-ASCII address needs MAIL FROM with SMTPUTF8\r\n"],
        ),
        (
            "RSET\r\nMAIL FROM:<jö@s.example> SMTPUTF8\r\n",
            &["250 2.0.0 Reset OK\r\n", SENDER_OK],
        ),
        (
            "RCPT TO:<bö@exämple.example>\r\nDATA\r\nx\r\n.\r\n",
            &[RCPT_OK, "354 Start mail input; end with <CRLF>.<CRLF>\r\n", OK],
        ),
    ]);
    let m = &h.messages[0];
    assert!(m.params.smtputf8);
    assert_eq!(m.rcpts, ["bö@exämple.example"]);
    assert_eq!(m.mail_from, "jö@s.example");
}

#[test]
fn dsn_parameters_are_kept_per_recipient_and_need_ehlo() {
    let h = check(&[
        ("EHLO c\r\n", &[EHLO]),
        ("MAIL FROM:<a@s.example> RET=FULL ENVID=abc+2Bd\r\n", &[SENDER_OK]),
        (
            "RCPT TO:<b@r.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b@r\r\n",
            &[RCPT_OK],
        ),
        ("RCPT TO:<c@r.example>\r\nBDAT 3 LAST\r\nx\r\n", &[RCPT_OK, OK]),
        (
            "HELO c\r\nMAIL FROM:<a@s.example>\r\n",
            &["250 relay.test\r\n", SENDER_OK],
        ),
        (
            "RCPT TO:<b@r.example> NOTIFY=NEVER\r\n",
            &["555 5.5.4 Unsupported MAIL/RCPT parameter\r\n"],
        ),
    ]);
    let m = &h.messages[0];
    assert_eq!(m.params.ret, Some(DsnReturn::Full));
    assert_eq!(m.params.envid.as_deref(), Some("abc+d"));
    assert_eq!(
        m.rcpt_params[0].notify,
        Some(Notify {
            success: false,
            failure: true,
            delay: true
        })
    );
    assert_eq!(m.rcpt_params[0].orcpt.as_ref().unwrap().addr, "b@r");
    assert_eq!(m.rcpt_params[1], RcptParams::default());
}

#[test]
fn normalize_mode_reads_bare_lf_as_line_ends_but_never_as_the_end_of_data() {
    let options = Options {
        normalize_bare_lf: true,
        ..Options::default()
    };
    let h = check_options(
        config(),
        options,
        &[
            (
                "EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\nDATA\r\n",
                &[
                    EHLO,
                    SENDER_OK,
                    RCPT_OK,
                    "354 Start mail input; end with <CRLF>.<CRLF>\r\n",
                ],
            ),
            ("a\nb\n.\nMAIL FROM:<evil@evil.example>\r\n", &[]),
            ("\r\n.\r\n", &[OK]),
        ],
    );
    assert_eq!(
        h.bodies(),
        ["a\r\nb\r\n.\r\nMAIL FROM:<evil@evil.example>\r\n\r\n"]
    );
    assert_eq!(*h.identified.borrow(), ["a@s.example"]);
}

#[test]
fn transfer_spans_every_chunk_of_a_bdat_transaction() {
    let mut h = Harness::new(config());
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@r.example>\r\n");
    assert!(!h.session.in_transfer());
    h.feed(b"BDAT 2\r\nx");
    assert!(h.session.in_transfer());
    assert_eq!(h.session.phase(), Phase::Data);
    h.feed(b"y");
    assert!(h.session.in_transfer(), "between chunks");
    assert_eq!(h.session.phase(), Phase::Command);
    h.feed(b"BDAT 0 LAST\r\n");
    assert!(!h.session.in_transfer());
}
