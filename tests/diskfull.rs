//! Disk full and unwritable logs (issue 9): the spool and the log live on a small ext4 file
//! system mounted by the test from a loop device (glommio silently gives up O_DIRECT on
//! tmpfs, so tmpfs would not exercise the real write path). The test fills it on purpose:
//! a message that cannot be made durable gets `452 4.3.1`, never `250`; the relay stays up
//! and answers; when space returns, acceptance resumes by itself; and every message that
//! did get `250` reaches the sink. A second test gives the relay a read-only log directory:
//! mail flows regardless.
//!
//! Mounting needs root (the tests run as root in CI); a failed mount fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::load;
use crate::support::process::{self, wait_for};
use crate::support::smtp::Client;

/// A file system mounted for one test, unmounted (lazily, so a process still holding a file
/// cannot keep it) when dropped.
struct Mount {
    point: PathBuf,
}

impl Mount {
    /// A `size_mib` ext4 image in `dir`, mounted through a loop device on `dir/mnt`.
    fn ext4(dir: &Path, size_mib: u64) -> Mount {
        let image = dir.join("fs.img");
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(size_mib << 20).unwrap();
        run("mkfs.ext4", &["-q", "-F", "-m", "0", image.to_str().unwrap()]);
        Mount::at(dir, &["-o", "loop", image.to_str().unwrap()])
    }

    /// A read-only tmpfs on `dir/mnt` (nothing can be created in it, even by root).
    fn read_only(dir: &Path) -> Mount {
        Mount::at(dir, &["-t", "tmpfs", "-o", "size=1m,ro", "tmpfs"])
    }

    fn at(dir: &Path, args: &[&str]) -> Mount {
        let point = dir.join("mnt");
        std::fs::create_dir_all(&point).unwrap();
        let mut all = args.to_vec();
        all.push(point.to_str().unwrap());
        run("mount", &all);
        Mount { point }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.point).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed (the disk-full tests need root and loop devices): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fills the file system holding `path` with one file until the kernel says ENOSPC, then
/// gives back `leave_bytes`, so the spool runs out in the middle of the messages that follow.
fn fill(path: &Path, leave_bytes: u64) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk_bytes in [1 << 20, 4096] {
        let chunk = vec![0x55u8; chunk_bytes];
        while f.write_all(&chunk).is_ok() {
            written += chunk_bytes as u64;
        }
    }
    f.set_len(written.saturating_sub(leave_bytes)).unwrap();
    let _ = f.sync_all();
    written
}

fn body(i: usize) -> String {
    let filler = format!("{}\r\n", "y".repeat(98)).repeat(300);
    format!("From: <a@shop.example>\r\nX-Load-Id: disk.{i}\r\nSubject: {i}\r\n\r\n{filler}")
}

#[test]
fn a_full_disk_answers_452_and_acceptance_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::ext4(dir.path(), 48);
    let maildir = dir.path().join("maildir");
    // The sink stays down while the disk is full, so no delivery frees spool space and
    // the spool really runs out.
    let sink_port = process::free_port();
    // Spool and log on the small file system: both run out of space together.
    let cfg = load::relay_config(&mount.point, "127.0.0.1:0", 2, sink_port, "");
    let mut relay = process::relay(&mount.point, &cfg);
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    let mut acked = Vec::new();
    for i in 0..5 {
        let r = c.send_mail("a@shop.example", &["b@dest.example"], &body(i));
        assert!(r.starts_with("250 "), "{r}");
        acked.push(format!("disk.{i}"));
    }

    let filler = mount.point.join("filler");
    assert!(fill(&filler, 1536 << 10) > 0);
    // The space left, blocks already allocated (the active segment's tail, free segment
    // files kept for reuse) still take records, and each of those is durable; after them
    // the spool must refuse every message. Each message is 30 KB: 300 of them exceed any preallocation.
    let (mut refused, mut in_a_row) = (0, 0);
    for i in 5..305 {
        let r = c.send_mail("a@shop.example", &["b@dest.example"], &body(i));
        if r.starts_with("250 ") {
            acked.push(format!("disk.{i}"));
            in_a_row = 0;
            continue;
        }
        assert!(
            r.starts_with("452 4.3.1 "),
            "a full spool must answer 452 4.3.1: {r}"
        );
        refused += 1;
        in_a_row += 1;
        if in_a_row == 5 {
            break;
        }
    }
    assert_eq!(in_a_row, 5, "no run of 452s with the disk full");
    assert!(
        acked.len() > 6,
        "some messages fit in the space left: {}",
        acked.len()
    );
    // The relay stays up: this connection goes on, and new ones are served (and refused
    // with the same temporary reply).
    assert!(c.cmd("NOOP").starts_with("250"));
    let (mut other, greeting) = Client::connect(relay.addr);
    assert!(greeting.starts_with("220 "), "{greeting}");
    other.cmd("EHLO other.test");
    let r = other.send_mail("a@shop.example", &["b@dest.example"], &body(1000));
    assert!(r.starts_with("452 4.3.1 "), "still full: {r}");

    // Space returns: acceptance resumes by itself, without a restart.
    std::fs::remove_file(&filler).unwrap();
    wait_for("acceptance to resume after space returned", || {
        let r = c.send_mail("a@shop.example", &["b@dest.example"], &body(2000));
        r.starts_with("250 ").then_some(())
    });
    acked.push("disk.2000".into());
    c.cmd("QUIT");

    // Every 250 was durable: after a crash and restart, with the sink back, all of them
    // are delivered from the spool.
    relay.kill();
    let _sink = process::sink_on(&format!("127.0.0.1:{sink_port}"), &maildir, &[]);
    let _relay = process::relay(&mount.point, &cfg);
    wait_for("every acknowledged message at the sink", || {
        let tally = load::tally(&acked, &load::sink_ids(&maildir));
        tally.lost.is_empty().then_some(())
    });
    eprintln!(
        "diskfull: {} acknowledged (of them {} while the disk was filling), {refused} answered 452, 0 lost",
        acked.len(),
        acked.len() - 6
    );
}

#[test]
fn an_unwritable_log_directory_never_stops_mail() {
    let dir = tempfile::tempdir().unwrap();
    let log_mount = Mount::read_only(dir.path());
    let maildir = dir.path().join("maildir");
    let sink = process::sink(&maildir, &[]);
    let cfg = load::relay_config(dir.path(), "127.0.0.1:0", 2, sink.addr.port(), "").replace(
        &format!("dir = \"{}\"", dir.path().join("log").display()),
        &format!("dir = \"{}\"", log_mount.point.display()),
    );
    assert!(cfg.contains(log_mount.point.to_str().unwrap()));
    let relay = process::relay(dir.path(), &cfg);
    let (mut c, _) = Client::connect(relay.addr);
    c.cmd("EHLO client.test");
    let mut acked = Vec::new();
    for i in 0..20 {
        let r = c.send_mail("a@shop.example", &["b@dest.example"], &body(i));
        assert!(r.starts_with("250 "), "{r}");
        acked.push(format!("disk.{i}"));
    }
    c.cmd("QUIT");
    wait_for("every message at the sink", || {
        load::tally(&acked, &load::sink_ids(&maildir))
            .lost
            .is_empty()
            .then_some(())
    });
    assert_eq!(
        std::fs::read_dir(&log_mount.point).unwrap().count(),
        0,
        "nothing could be written to the read-only log directory"
    );
}
