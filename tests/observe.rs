//! Metrics and health through the real binary: scrape `/metrics` while traffic flows and
//! check the counters move as the traffic says; `/healthz` and `/readyz` answer.

use std::net::SocketAddr;

use crate::support::dns::TestDns;
use crate::support::http::{body, get, metric_sum, metrics, status};
use crate::support::process::{self, RelayConfig, maildir_messages, wait_for};
use crate::support::smtp::Client;

#[test]
fn counters_follow_the_traffic_and_health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let dns = TestDns::start();
    let config = RelayConfig::new(dir.path(), 2)
        .section(&format!(
            r#"
[delivery]
smarthost = "{sink}"
dns_servers = ["{dns}"]
[[accounts]]
id = "shop"
networks = ["127.0.0.0/8"]
sender_domains = ["shop.example"]
"#,
            sink = sink.addr,
            dns = dns.addr,
        ))
        .build();
    let relay = process::relay(dir.path(), &config);
    let http: SocketAddr = relay
        .line_after("on http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();

    let health = get(http, "/healthz");
    assert_eq!((status(&health), body(&health)), (200, "ok\n"));
    wait_for("readiness", || {
        (status(&get(http, "/readyz")) == 200).then_some(())
    });
    let before = metrics(http);
    assert_eq!(
        metric_sum(&before, "corerelay_account_accepted_total", "account=\"shop\""),
        0.0
    );

    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    let body = "From: <a@shop.example>\r\nSubject: metrics\r\n\r\nhello\r\n";
    assert!(
        c.send_mail("a@shop.example", &["r@dest.example"], body)
            .starts_with("250")
    );
    assert!(c.cmd("MAIL FROM:<a@bank.example>").starts_with("550"));
    c.cmd("QUIT");
    wait_for("delivery", || maildir_messages(&maildir).pop());

    let after = wait_for("the delivered counter", || {
        let m = metrics(http);
        (metric_sum(&m, "corerelay_account_delivered_total", "account=\"shop\"") == 1.0).then_some(m)
    });
    assert_eq!(
        metric_sum(&after, "corerelay_account_accepted_total", "account=\"shop\""),
        1.0
    );
    assert_eq!(metric_sum(&after, "corerelay_messages_rejected_total", ""), 1.0);
    assert_eq!(metric_sum(&after, "corerelay_connections_total", ""), 1.0);
    assert_eq!(metric_sum(&after, "corerelay_messages_spooled_total", ""), 1.0);
    assert!(after.contains("# HELP corerelay_spool_append_seconds"), "{after}");
    // EHLO, MAIL, RCPT, DATA (354), the 250 after the data, QUIT, and the greeting.
    assert!(
        metric_sum(&after, "corerelay_smtp_replies_positive_total", "") >= 7.0,
        "{after}"
    );
    assert_eq!(
        metric_sum(&after, "corerelay_smtp_replies_permanent_total", ""),
        1.0
    );
    assert!(metric_sum(&after, "corerelay_delivery_transaction_seconds_count", "") >= 1.0);
    assert!(metric_sum(&after, "corerelay_dns_lookups_total", "") >= 1.0);
    let spooled_commits = wait_for("the spool gauges", || {
        let m = metrics(http);
        let c = metric_sum(&m, "corerelay_spool_commits_total", "");
        (c >= 1.0).then_some(c)
    });
    assert!(spooled_commits >= 1.0);
    assert!(metric_sum(&after, "corerelay_spool_append_seconds_count", "") >= 1.0);

    // Issue 7's remaining families move with the one message.
    for (verb, count) in [
        ("ehlo", 1.0),
        ("mail", 2.0),
        ("rcpt", 1.0),
        ("data", 1.0),
        ("quit", 1.0),
    ] {
        let seen = metric_sum(
            &after,
            "corerelay_smtp_commands_total",
            &format!("verb=\"{verb}\""),
        );
        assert_eq!(seen, count, "{verb} commands: {after}");
    }
    assert_eq!(
        metric_sum(&after, "corerelay_smtp_commands_total", "verb=\"other\""),
        0.0
    );
    // The message's record went in one group commit: at least one commit size observed,
    // and its fdatasync timed.
    assert!(
        metric_sum(&after, "corerelay_spool_commit_records_count", "") >= 1.0,
        "{after}"
    );
    assert!(
        metric_sum(&after, "corerelay_spool_commit_records_sum", "") >= 1.0,
        "{after}"
    );
    assert!(
        metric_sum(&after, "corerelay_spool_fsync_seconds_count", "") >= 1.0,
        "{after}"
    );
    // Routed by the implicit default pool: one recipient delivered in that site class, and
    // one transaction timed; the account's wait from due to delivery observed once.
    let class = "class=\"default\"";
    let delivered = format!("{class},outcome=\"delivered\"");
    assert_eq!(
        metric_sum(&after, "corerelay_delivery_outcomes_total", &delivered),
        1.0
    );
    let deferred = format!("{class},outcome=\"deferred\"");
    assert_eq!(
        metric_sum(&after, "corerelay_delivery_outcomes_total", &deferred),
        0.0
    );
    assert_eq!(
        metric_sum(&after, "corerelay_delivery_attempt_seconds_count", class),
        1.0
    );
    assert_eq!(
        metric_sum(
            &after,
            "corerelay_account_scheduler_wait_seconds_count",
            "account=\"shop\""
        ),
        1.0
    );
    // Its time in the relay (end of data to the sink's 2xx) observed once, in the
    // histogram's own fine buckets: it took more than nothing and less than a minute.
    let shop = "account=\"shop\"";
    assert_eq!(
        metric_sum(&after, "corerelay_account_delivery_seconds_count", shop),
        1.0
    );
    let in_relay = metric_sum(&after, "corerelay_account_delivery_seconds_sum", shop);
    assert!(in_relay > 0.0 && in_relay < 60.0, "{after}");
    let fine = format!("{shop},le=\"0.00075\"");
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("corerelay_account_delivery_seconds_bucket{") && l.contains(&fine)),
        "{after}"
    );
    // Delivered and done: nothing of the account is queued any more.
    let drained = wait_for("the queue gauges", || {
        let m = metrics(http);
        let queued = metric_sum(&m, "corerelay_account_queued_messages", "account=\"shop\"");
        (m.contains("corerelay_account_queued_messages{") && queued == 0.0).then_some(m)
    });
    assert!(
        drained.contains("# HELP corerelay_dns_cache_hits_total"),
        "{drained}"
    );
    assert_eq!(metric_sum(&drained, "corerelay_events_dropped_total", ""), 0.0);
    assert_eq!(status(&get(http, "/nope")), 404);
}

#[test]
fn doctor_reports_a_lowered_limit() {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(process::BIN);
    cmd.arg("doctor");
    // SAFETY: between fork and exec the child only calls setrlimit, a plain system call
    // that takes no locks and allocates nothing; it lowers the child's own limit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("WARN open files: limit 256 is below"), "{text}");
    assert!(text.contains("fix: LimitNOFILE="), "{text}");
    assert!(text.contains("corerelay doctor: "), "{text}");
}

#[test]
fn check_config_prints_placement_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        r#"
[server]
cores = 2
[[egress.routes]]
domains = [".partner.example"]
smarthost = "relay.partner.example:587"
tls = "required"
auth_user = "corerelay"
auth_password = "hunter2-very-secret"
[[accounts]]
id = "shop"
networks = ["192.0.2.0/24"]
sender_domains = ["shop.example"]
core = 1
credentials = [{ username = "shop", password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$3LOEKM4bKbR3Bw5EaOg0JTcSQbE6zJqL4lTTmYJK0qA" }]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(process::BIN)
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("account shop -> core 1"), "{text}");
    assert!(!text.contains("hunter2"), "a password was printed: {text}");
    assert!(
        !text.contains("3LOEKM4bKbR3Bw5EaOg0JTcSQbE6zJqL4lTTmYJK0qA"),
        "a password hash was printed"
    );
}
