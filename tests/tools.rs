//! The benchmark peers as the benchmark script uses them: `corerelay sink` reports its
//! count on SIGUSR1 and keeps serving, so `benches/e2e.sh` can tell when every message of
//! a run has arrived without stopping the sink.

use crate::support::process;
use crate::support::smtp::Client;

const BODY: &str = "From: <a@load.example>\r\nTo: <b@sink.example>\r\nSubject: count\r\n\r\nhello\r\n";

fn send_one(addr: std::net::SocketAddr) {
    // The sink may print its address a moment before every core listens.
    process::wait_for("the sink to accept", || std::net::TcpStream::connect(addr).ok());
    let (mut c, greeting) = Client::connect(addr);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("EHLO load.test").starts_with("250"));
    let reply = c.send_mail("a@load.example", &["b@sink.example"], BODY);
    assert!(reply.starts_with("250"), "{reply}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

#[test]
fn sink_reports_its_count_on_sigusr1_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = process::sink(&dir.path().join("maildir"), &[]);
    send_one(sink.addr);
    sink.signal(libc::SIGUSR1);
    let line = sink.wait_line("corerelay sink: messages=");
    assert!(line.contains("messages=1 "), "{line}");

    // Still serving after the report; the final summary on SIGTERM counts both.
    send_one(sink.addr);
    let after = sink.terminate();
    assert!(after.iter().any(|l| l.contains("messages=2 ")), "{after:?}");
}
