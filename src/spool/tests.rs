//! Tests of the whole spool on real files: group commit, recovery, updates and reclaiming,
//! damaged segments, core-count changes, the lock, relocation and the I/O error path. Each
//! runs on its own small glommio executor over a temporary directory.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::commit::FREE_MAX_COUNT;
use super::payload::tests::sample;
use super::segment::{core_dir, list_free, list_segments, segment_path};
use super::*;

fn run<F: Future<Output = ()>>(f: impl FnOnce() -> F) {
    let ex = LocalExecutorBuilder::default()
        .io_memory(512 << 10)
        .make()
        .unwrap();
    ex.run(f());
}

fn config(dir: &Path, segment_max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        segment_max_bytes,
        commit_batch_max_count: 64,
        commit_batch_max_bytes: 1 << 20,
        express: false,
        // Files appear only when a test asks (a test of them sets 1).
        prepared_segment_count: 0,
        express_blocking_budget: Duration::ZERO,
        memory_max_bytes: 64 << 20,
    }
}

/// `config` with the express stream on, its blocking commits too, as configured by default
/// (the unit tests' default keeps every message in the bulk stream, whose internals several
/// tests look into).
fn express_config(dir: &Path, segment_max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        express: true,
        express_blocking_budget: Duration::from_millis(100),
        ..config(dir, segment_max_bytes)
    }
}

/// A message with a few random chunks (sometimes empty ones, sometimes none).
fn random_message(rng: &mut SmallRng, id: u128) -> Message {
    let chunks: Vec<Vec<u8>> = (0..rng.random_range(0..4))
        .map(|_| {
            let mut chunk = vec![0u8; rng.random_range(0..6000)];
            rng.fill(&mut chunk[..]);
            chunk
        })
        .collect();
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    sample(id, rng.random_range(1..4), &refs)
}

fn flat(m: &Message) -> Vec<u8> {
    m.body.concat()
}

fn assert_same(got: &Message, want: &Message) {
    assert_eq!(got.envelope, want.envelope);
    assert_eq!(got.trace, want.trace);
    assert_eq!(flat(got), flat(want));
    assert!(got.body.len() <= 1, "a loaded body is one chunk");
}

/// Appends each message as its own batch (sequentially), so each starts on a block.
async fn append_each(spool: &Spool, msgs: &[Message]) {
    for m in msgs {
        spool.append(m).await.unwrap();
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn segment_files(dir: &Path, core: usize) -> Vec<u64> {
    list_segments(&core_dir(dir, core)).unwrap()
}

#[test]
fn concurrent_appends_share_fdatasyncs_and_recover_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 64 << 20);
    run(|| async move {
        let mut rng = SmallRng::seed_from_u64(1);
        let msgs: Vec<Message> = (0..100).map(|i| random_message(&mut rng, 1000 + i)).collect();
        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert!(recovered.is_empty());
        assert_eq!(report.segments, 0);
        let tasks: Vec<_> = msgs
            .iter()
            .cloned()
            .map(|m| {
                let s = spool.clone();
                glommio::spawn_local(async move { s.append(&m).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let stats = spool.stats();
        assert_eq!(stats.records, 100);
        assert_eq!(stats.live_messages, 100);
        assert!(
            stats.commits < 100,
            "group commit: {} fdatasyncs for 100 appends",
            stats.commits
        );
        for m in &msgs[..3] {
            assert_same(&spool.load(m.envelope.id).await.unwrap(), m);
        }
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.records, 100);
        assert_eq!(report.messages, 100);
        assert_eq!(report.corrupt_records, 0);
        assert_eq!(recovered.len(), 100);
        for (r, m) in recovered.iter().zip(&msgs) {
            assert_same(&r.message, m);
            assert_eq!(r.rcpt_states, vec![RcptState::Pending; m.envelope.rcpts.len()]);
            assert_eq!(spool.load(m.envelope.id).await.unwrap().body, r.message.body);
        }
        spool.close().await;
    });
}

#[test]
fn updates_and_completion_survive_reopen_and_free_segments() {
    let tmp = tempfile::tempdir().unwrap();
    // Tiny segments: every batch rotates to a new one.
    let cfg = config(tmp.path(), 4096);
    let dir = tmp.path().to_path_buf();
    run(|| async move {
        // Each record is over a quarter of a segment, so relocation leaves them alone here.
        let msgs: Vec<Message> = (0..6).map(|i| sample(i, 3, &[&[b'h'; 1500]])).collect();
        let id = |i: usize| msgs[i].envelope.id;
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        append_each(&spool, &msgs).await;
        let u = Update {
            rcpt_states: vec![(0, RcptState::Delivered), (2, RcptState::Failed)],
            attempts: 1,
            next_attempt_ms: 5_000,
        };
        spool.update(id(1), u).await.unwrap();
        spool.complete(id(0)).await.unwrap();
        spool.complete(id(2)).await.unwrap();
        assert!(matches!(spool.complete(id(0)).await, Err(SpoolError::Unknown(_))));
        assert!(matches!(
            spool
                .update(
                    MessageId(99),
                    Update {
                        rcpt_states: vec![],
                        attempts: 0,
                        next_attempt_ms: 0
                    }
                )
                .await,
            Err(SpoolError::Unknown(_))
        ));
        // Segment 1 (message 0) is free and oldest: it goes. Segment 3 (message 2) is free
        // but segment 2 still holds message 1, so it stays.
        let d = dir.clone();
        wait_for("segment 1 to go", move || !segment_files(&d, 0).contains(&1)).await;
        let files = segment_files(&dir, 0);
        assert!(
            !files.contains(&1) && files.contains(&2) && files.contains(&3),
            "{files:?}"
        );
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.corrupt_records, 0);
        let ids: Vec<MessageId> = recovered.iter().map(|r| r.message.envelope.id).collect();
        assert_eq!(ids, vec![id(1), id(3), id(4), id(5)]);
        let r1 = &recovered[0];
        assert_eq!(
            r1.rcpt_states,
            vec![RcptState::Delivered, RcptState::Pending, RcptState::Failed]
        );
        assert_eq!((r1.attempts, r1.next_attempt_ms), (1, 5_000));
        for i in [1, 3, 4, 5] {
            spool.complete(id(i)).await.unwrap();
        }
        // Everything is finished: only the active segment (holding the last Done) is left.
        // Deleting runs after the acknowledgement, so give it a moment.
        assert_eq!(spool.stats().live_messages, 0);
        let s = spool.clone();
        wait_for("reclaiming", move || s.stats().segments == 1).await;
        assert_eq!(segment_files(&dir, 0).len(), 1);
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert!(recovered.is_empty());
        assert_eq!(report.segments, 1);
        spool.close().await;
    });
}

/// Writes `n` messages as separate batches into one segment and returns them.
fn write_batches(cfg: &SpoolConfig, n: u128) -> Vec<Message> {
    let cfg = cfg.clone();
    let msgs: Vec<Message> = (0..n).map(|i| sample(i, 1, &[&[i as u8; 1000]])).collect();
    let copy = msgs.clone();
    run(|| async move {
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        append_each(&spool, &copy).await;
        spool.close().await;
    });
    msgs
}

fn reopen(cfg: &SpoolConfig) -> (Vec<RecoveredMessage>, RecoveryReport) {
    let cfg = cfg.clone();
    let out = std::rc::Rc::new(std::cell::RefCell::new(None));
    let slot = out.clone();
    run(|| async move {
        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        for r in &recovered {
            let loaded = spool.load(r.message.envelope.id).await.unwrap();
            if r.body_loaded {
                assert_same(&loaded, &r.message);
            } else {
                assert_eq!(loaded.envelope, r.message.envelope);
            }
        }
        spool.close().await;
        *slot.borrow_mut() = Some((recovered, report));
    });
    out.take().unwrap()
}

#[test]
fn recovery_keeps_bodies_within_the_memory_budget_and_leaves_the_rest_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        memory_max_bytes: 2500,
        ..config(dir.path(), 1 << 20)
    };
    let msgs = write_batches(&cfg, 5);
    let (recovered, report) = reopen(&cfg);
    assert_eq!(report.messages, 5);
    let loaded = recovered.iter().filter(|r| r.body_loaded).count();
    assert_eq!(loaded, 2, "two 1000-byte bodies fit a 2500-byte budget");
    for r in &recovered {
        let want = msgs
            .iter()
            .find(|m| m.envelope.id == r.message.envelope.id)
            .unwrap();
        assert_eq!(r.message.envelope, want.envelope);
        if r.body_loaded {
            assert_same(&r.message, want);
        } else {
            assert!(r.message.body.is_empty());
        }
    }
}

fn first_segment(cfg: &SpoolConfig) -> PathBuf {
    let seqs = segment_files(&cfg.dir, 0);
    segment_path(&core_dir(&cfg.dir, 0), seqs[0])
}

#[test]
fn a_torn_tail_loses_only_the_torn_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 64 << 20);
    let msgs = write_batches(&cfg, 5);
    let seg = first_segment(&cfg);
    // The last batch starts at block 4; cut its record in the middle.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(4 * 4096 + 500).unwrap();
    let (recovered, report) = reopen(&cfg);
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(recovered.len(), 4);
    for (r, m) in recovered.iter().zip(&msgs) {
        assert_same(&r.message, m);
    }
}

#[test]
fn an_overwritten_tail_and_a_damaged_middle_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 64 << 20);
    let msgs = write_batches(&cfg, 5);
    let seg = first_segment(&cfg);
    let mut image = std::fs::read(&seg).unwrap();
    image[4 * 4096 + 700] ^= 0x55; // inside the last record's payload
    std::fs::write(&seg, &image).unwrap();
    let (recovered, report) = reopen(&cfg);
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(recovered.len(), 4);

    image[4 * 4096 + 700] ^= 0x55;
    image[2 * 4096 + 1] = b'?'; // the magic of the third record
    std::fs::write(&seg, &image).unwrap();
    let (recovered, report) = reopen(&cfg);
    assert_eq!(report.corrupt_records, 1);
    let ids: Vec<u128> = recovered.iter().map(|r| r.message.envelope.id.0).collect();
    assert_eq!(ids, vec![0, 1, 3, 4], "records after the damage are recovered");
    assert_same(&recovered[3].message, &msgs[4]);
}

#[test]
fn a_smaller_core_count_adopts_and_relocates_another_cores_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 64 << 20);
    let dir = tmp.path().to_path_buf();
    run(|| async move {
        let msgs: Vec<Message> = (0..4).map(|i| sample(50 + i, 2, &[b"x\r\n", b"y\r\n"])).collect();
        let (spool, _, _) = Spool::open(&cfg, 1, 2).await.unwrap();
        append_each(&spool, &msgs).await;
        let u = Update {
            rcpt_states: vec![(1, RcptState::Delivered)],
            attempts: 3,
            next_attempt_ms: 9,
        };
        spool.update(msgs[0].envelope.id, u).await.unwrap();
        spool.complete(msgs[3].envelope.id).await.unwrap();
        spool.close().await;

        // Now one core: core 0 adopts core-1 and moves its live messages home.
        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.messages, 3);
        assert_eq!(
            recovered[0].rcpt_states,
            vec![RcptState::Pending, RcptState::Delivered]
        );
        assert_eq!(recovered[0].attempts, 3);
        for (r, m) in recovered.iter().zip(&msgs) {
            assert_same(&r.message, m);
        }
        let d = dir.clone();
        wait_for("relocation", move || segment_files(&d, 1).is_empty()).await;
        assert_same(&spool.load(msgs[1].envelope.id).await.unwrap(), &msgs[1]);
        spool.close().await;

        // Back to two cores: core 0 owns them now, core 1 has nothing.
        let (spool1, recovered1, _) = Spool::open(&cfg, 1, 2).await.unwrap();
        assert!(recovered1.is_empty());
        let (spool0, recovered0, report) = Spool::open(&cfg, 0, 2).await.unwrap();
        assert_eq!(report.corrupt_records, 0);
        assert_eq!(recovered0.len(), 3);
        assert_eq!(
            recovered0[0].rcpt_states,
            vec![RcptState::Pending, RcptState::Delivered]
        );
        assert_eq!(recovered0[0].attempts, 3);
        spool0.close().await;
        spool1.close().await;
    });
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 64 << 20);
    run(|| async move {
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        match Spool::open(&cfg, 0, 1).await {
            Err(SpoolError::Locked(p)) => assert!(p.ends_with("core-0")),
            other => panic!("expected Locked, got {:?}", other.err()),
        }
        // Core 0 of 2 would adopt core-0 too.
        assert!(matches!(
            Spool::open(&cfg, 0, 2).await,
            Err(SpoolError::Locked(_))
        ));
        spool.close().await;
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        spool.close().await;
    });
}

#[test]
fn a_long_deferred_message_is_relocated_and_its_segment_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 4096);
    let dir = tmp.path().to_path_buf();
    run(|| async move {
        let msgs: Vec<Message> = (0..5).map(|i| sample(i, 2, &[b"short\r\n"])).collect();
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        spool.append(&msgs[0]).await.unwrap();
        let seg1 = segment_path(&core_dir(&dir, 0), 1);
        let seg1_image = std::fs::read(&seg1).unwrap();
        append_each(&spool, &msgs[1..]).await;
        let deferred = msgs[0].envelope.id;
        let u = Update {
            rcpt_states: vec![(0, RcptState::Failed)],
            attempts: 7,
            next_attempt_ms: 1234,
        };
        spool.update(deferred, u).await.unwrap();
        for m in &msgs[1..] {
            spool.complete(m.envelope.id).await.unwrap();
        }
        let d = dir.clone();
        wait_for("segment 1 to be freed", move || {
            !segment_files(&d, 0).contains(&1)
        })
        .await;
        let s = spool.clone();
        wait_for("every old segment to be freed", move || s.stats().segments <= 2).await;
        assert_same(&spool.load(deferred).await.unwrap(), &msgs[0]);
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.corrupt_records, 0);
        assert_eq!(recovered.len(), 1);
        assert_same(&recovered[0].message, &msgs[0]);
        assert_eq!(
            recovered[0].rcpt_states,
            vec![RcptState::Failed, RcptState::Pending]
        );
        assert_eq!((recovered[0].attempts, recovered[0].next_attempt_ms), (7, 1234));
        spool.close().await;

        // A crash between the relocation and the deletion leaves both copies: one message
        // comes back, with its state, and the old segment goes again.
        std::fs::write(&seg1, &seg1_image).unwrap();
        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.corrupt_records, 0);
        assert_eq!(recovered.len(), 1);
        assert_eq!(
            recovered[0].rcpt_states,
            vec![RcptState::Failed, RcptState::Pending]
        );
        assert_eq!(recovered[0].attempts, 7);
        spool.complete(deferred).await.unwrap();
        let d = dir.clone();
        wait_for("the restored segment to go", move || {
            !segment_files(&d, 0).contains(&1)
        })
        .await;
        spool.close().await;
    });
}

#[test]
fn a_failing_directory_fails_appends_and_acceptance_resumes_when_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    // Every batch rotates, so every append has to create a file in the directory.
    let cfg = config(tmp.path(), 4096);
    let dir = tmp.path().to_path_buf();
    run(|| async move {
        let msgs: Vec<Message> = (0..3).map(|i| sample(i, 1, &[b"m\r\n"])).collect();
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        spool.append(&msgs[0]).await.unwrap();
        let own = core_dir(&dir, 0);
        let away = dir.join("moved-away");
        std::fs::rename(&own, &away).unwrap();
        match spool.append(&msgs[1]).await {
            Err(SpoolError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        std::fs::rename(&away, &own).unwrap();
        spool.append(&msgs[2]).await.unwrap();
        assert_eq!(spool.stats().live_messages, 2);
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.corrupt_records, 0);
        let ids: Vec<u128> = recovered.iter().map(|r| r.message.envelope.id.0).collect();
        assert_eq!(ids, vec![0, 2]);
        spool.close().await;
    });
}

#[test]
fn oversized_messages_are_refused_before_any_io() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 64 << 20);
    run(|| async move {
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        let mut m = sample(1, 1, &[]);
        m.body = vec![chunk; 65];
        assert!(matches!(spool.append(&m).await, Err(SpoolError::TooLarge)));
        assert_eq!(spool.stats().records, 0);
        spool.close().await;
    });
}

#[test]
fn a_large_message_is_written_and_read_back_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 64 << 20);
    run(|| async move {
        // Larger than a commit batch and than the device's largest single request here.
        let body: Vec<u8> = (0..(9u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let chunks: Vec<&[u8]> = body.chunks(64 << 10).collect();
        let m = sample(77, 2, &chunks);
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        spool.append(&m).await.unwrap();
        assert_same(&spool.load(m.envelope.id).await.unwrap(), &m);
        spool.close().await;
        let (spool, recovered, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_same(&recovered[0].message, &m);
        spool.close().await;
    });
}

#[test]
fn a_refused_write_seals_the_segment_and_the_next_batch_starts_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), u64::MAX);
    run(|| async move {
        let msgs: Vec<Message> = (0..3).map(|i| sample(i, 1, &[b"m\r\n"])).collect();
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        spool.append(&msgs[0]).await.unwrap();
        // Point the active segment's end past the largest file ext4 allows: the kernel
        // refuses the next write (EFBIG), as it would refuse one on a full or failing disk.
        let active = {
            let mut st = spool.bulk.shared.state.borrow_mut();
            let key = st.active.unwrap();
            st.segments.get_mut(&key).unwrap().size_bytes = 1 << 50;
            key
        };
        match spool.append(&msgs[1]).await {
            Err(SpoolError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge, "{e}"),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert!(spool.bulk.shared.state.borrow().segments[&active].sealed);
        spool.append(&msgs[2]).await.unwrap();
        assert_ne!(
            spool.bulk.shared.state.borrow().active,
            Some(active),
            "a new segment took over"
        );
        assert_eq!(spool.stats().live_messages, 2);
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.corrupt_records, 0);
        let ids: Vec<u128> = recovered.iter().map(|r| r.message.envelope.id.0).collect();
        assert_eq!(ids, vec![0, 2]);
        spool.close().await;
    });
}

/// Issue 9: a Done record that fails (a full disk) is written with a later batch, so the
/// finished message stops holding its segment without waiting for a restart.
#[test]
fn a_failed_completion_is_written_with_the_next_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), u64::MAX);
    run(|| async move {
        let msgs: Vec<Message> = (0..3).map(|i| sample(i, 1, &[b"m\r\n"])).collect();
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        append_each(&spool, &msgs[..2]).await;
        // As in the refused-write test: the kernel refuses the next write (EFBIG).
        {
            let mut st = spool.bulk.shared.state.borrow_mut();
            let key = st.active.unwrap();
            st.segments.get_mut(&key).unwrap().size_bytes = 1 << 50;
        }
        assert!(matches!(
            spool.complete(MessageId(0)).await,
            Err(SpoolError::Io(_))
        ));
        assert_eq!(spool.stats().live_messages, 2, "not durable, so still live");
        // The next batch (a new segment) carries the Done record too.
        spool.append(&msgs[2]).await.unwrap();
        assert_eq!(spool.stats().live_messages, 2, "message 0 is finished now");
        assert!(spool.bulk.shared.state.borrow().done_retry.is_empty());
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.corrupt_records, 0);
        let ids: Vec<u128> = recovered.iter().map(|r| r.message.envelope.id.0).collect();
        assert_eq!(ids, vec![1, 2]);
        spool.close().await;
    });
}

/// The body of message `i` in the kill test, derived from its id so the parent can check it.
/// Every seventh message is from an account of its own, so both spool streams are written.
fn kill_test_message(i: u128) -> Message {
    let body: Vec<u8> = (0..(i as usize * 37) % 9000)
        .map(|b| (b as u128 ^ i) as u8)
        .collect();
    let message = sample(i, 2, &[b"Subject: kill\r\n\r\n", &body]);
    if i.is_multiple_of(7) {
        with_account(message, &format!("solo{i}"))
    } else {
        message
    }
}

const KILL_CHILD_ENV: &str = "CORERELAY_SPOOL_KILL_CHILD_DIR";

/// The child side of the kill -9 test: appends without end from many tasks, printing each
/// id once acknowledged, and completes every third one, printing that too. Without the
/// environment variable (a normal test run) it does nothing.
#[test]
fn kill_child_writer() {
    let Some(dir) = std::env::var_os(KILL_CHILD_ENV) else {
        return;
    };
    let cfg = express_config(Path::new(&dir), 64 << 10);
    run(|| async move {
        use std::io::Write;
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        let next = std::rc::Rc::new(std::cell::Cell::new(0u128));
        let workers: Vec<_> = (0..16)
            .map(|_| {
                let (spool, next) = (spool.clone(), next.clone());
                glommio::spawn_local(async move {
                    // Bounded so an orphaned child stops by itself.
                    while next.get() < 100_000 {
                        let i = next.get();
                        next.set(i + 1);
                        spool.append(&kill_test_message(i)).await.unwrap();
                        println!("acked {i}");
                        if i % 3 == 0 {
                            spool.complete(MessageId(i)).await.unwrap();
                            println!("done {i}");
                        }
                        std::io::stdout().flush().unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.await;
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_message() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spool::tests::kill_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut acked, mut done) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    let mut record = |line: &str| {
        if let Some(i) = line.strip_prefix("acked ") {
            acked.insert(i.parse::<u128>().unwrap());
        } else if let Some(i) = line.strip_prefix("done ") {
            done.insert(i.parse::<u128>().unwrap());
        }
    };
    for line in lines.by_ref() {
        let line = line.unwrap();
        record(&line);
        if line.starts_with("acked 2000") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    for line in lines {
        record(&line.unwrap());
    }
    child.wait().unwrap();
    assert!(
        acked.len() >= 2000,
        "the child acknowledged {} messages",
        acked.len()
    );

    let cfg = config(tmp.path(), 64 << 10);
    run(|| async move {
        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        let found: std::collections::HashMap<u128, &RecoveredMessage> =
            recovered.iter().map(|r| (r.message.envelope.id.0, r)).collect();
        for i in acked.iter().filter(|i| *i % 3 != 0) {
            let r = found
                .get(i)
                .unwrap_or_else(|| panic!("acknowledged message {i} lost ({report:?})"));
            assert_same(&r.message, &kill_test_message(*i));
        }
        // A message whose completion was under way at the kill may be either way, but whole.
        for (i, r) in &found {
            assert_same(&r.message, &kill_test_message(*i));
        }
        for i in &done {
            assert!(!found.contains_key(i), "completed message {i} came back");
        }
        // A torn tail in each of the two streams at most.
        assert!(report.corrupt_records <= 2, "{report:?}");
        assert!(
            found.keys().any(|i| spool.express.known(MessageId(*i)).is_ok()),
            "the express stream was written and recovered"
        );
        spool.close().await;
    });
}

#[test]
fn reclaimed_segments_are_reused_and_their_old_records_stay_dead() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 4096);
    let dir = tmp.path().to_path_buf();
    run(|| async move {
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        // Messages come and go; every batch rotates, so without reuse this would create 81
        // files. One message stays live, and relocation keeps it from pinning old segments.
        let keep = sample(1_000, 1, &[b"small enough to relocate"]);
        spool.append(&keep).await.unwrap();
        let mut reused = 0;
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        for i in 0..40u128 {
            let free_inodes: Vec<u64> = spool
                .bulk
                .shared
                .state
                .borrow()
                .free
                .iter()
                .map(|p| inode(p))
                .collect();
            let m = sample(i, 1, &[&[i as u8; 1500]]);
            spool.append(&m).await.unwrap();
            {
                let st = spool.bulk.shared.state.borrow();
                if free_inodes.contains(&inode(&st.segments[&st.active.unwrap()].path)) {
                    reused += 1;
                }
                assert!(st.free.len() <= FREE_MAX_COUNT);
            }
            spool.complete(m.envelope.id).await.unwrap();
        }
        assert!(reused > 10, "only {reused} of 40 appends went to a reused file");
        let d = dir.clone();
        wait_for("reclaiming", move || {
            segment_files(&d, 0).len() + list_free(&core_dir(&d, 0)).unwrap().len() <= 6
        })
        .await;
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&cfg, 0, 1).await.unwrap();
        assert_eq!(report.corrupt_records, 0, "{report:?}");
        let ids: Vec<MessageId> = recovered.iter().map(|r| r.message.envelope.id).collect();
        assert_eq!(
            ids,
            vec![keep.envelope.id],
            "a finished message came back from a reused file"
        );
        spool.close().await;
    });
}

fn segment_count(dir: &Path) -> usize {
    list_segments(dir).unwrap().len()
}

fn with_account(mut message: Message, account: &str) -> Message {
    message.envelope.account = account.into();
    message
}

/// The express stream: a message of an account with nothing else waiting for a commit goes
/// there, the rest of a busy account's go to the bulk stream; progress and completion follow
/// the message to its stream, and a reopen recovers both streams with their state (a
/// finished message stays finished, a delivered recipient stays delivered).
#[test]
fn an_account_with_nothing_waiting_goes_to_the_express_stream_and_both_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = express_config(tmp.path(), 1 << 20);
    let check = cfg.clone();
    run(|| async move {
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        // The big account: 20 appends at once; one of them finds nothing waiting.
        let big: Vec<_> = (0..20u128)
            .map(|i| {
                let spool = spool.clone();
                glommio::spawn_local(async move {
                    spool
                        .append(&with_account(sample(i, 2, &[b"big\r\n"]), "big"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        // A small account while the big one's records wait.
        let small = with_account(sample(100, 2, &[b"small\r\n"]), "small");
        spool.append(&small).await.unwrap();
        for task in big {
            task.await;
        }
        assert!(
            spool.express.known(MessageId(100)).is_ok(),
            "the small account's message"
        );
        let big_in_express = (0..20u128)
            .filter(|i| spool.express.known(MessageId(*i)).is_ok())
            .count();
        assert_eq!(big_in_express, 1, "only the first of the big account's");
        assert_eq!(spool.stats().live_messages, 21);
        assert!(spool.stats().express_records >= 2);
        // The express stream commits with blocking calls (its first commit at least: the
        // budget starts full); the bulk stream never does.
        assert!(spool.express.stats().blocking_commits >= 1);
        assert_eq!(spool.bulk.stats().blocking_commits, 0);
        // Progress and completion, in both streams.
        let delivered_first = Update {
            rcpt_states: vec![(0, RcptState::Delivered)],
            attempts: 1,
            next_attempt_ms: 5,
        };
        spool
            .update(MessageId(100), delivered_first.clone())
            .await
            .unwrap();
        spool.update(MessageId(5), delivered_first).await.unwrap();
        for id in [1u128, 2, 3] {
            spool.complete(MessageId(id)).await.unwrap();
        }
        let express_id = (0..20u128)
            .find(|i| spool.express.known(MessageId(*i)).is_ok())
            .unwrap();
        spool.complete(MessageId(express_id)).await.unwrap();
        let finished = [1u128, 2, 3, express_id]
            .into_iter()
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(spool.stats().live_messages, 21 - finished.len());
        spool.close().await;
    });
    let (recovered, report) = reopen(&check);
    assert_eq!(report.corrupt_records, 0);
    let mut ids: Vec<u128> = recovered.iter().map(|r| r.message.envelope.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), recovered.len());
    assert!(
        !ids.contains(&1) && !ids.contains(&2) && !ids.contains(&3),
        "finished stay finished"
    );
    assert!(ids.contains(&100));
    for r in &recovered {
        let id = r.message.envelope.id.0;
        if id == 100 || id == 5 {
            assert_eq!(
                r.rcpt_states,
                vec![RcptState::Delivered, RcptState::Pending],
                "message {id}"
            );
            assert_eq!(r.next_attempt_ms, 5);
        } else {
            assert_eq!(
                r.rcpt_states,
                vec![RcptState::Pending, RcptState::Pending],
                "message {id}"
            );
        }
    }
    assert!(
        segment_count(&express_dir(tmp.path()).join("core-0")) >= 1,
        "the express stream has its own segments"
    );
}

/// Switching the express stream off keeps what it holds: it is still recovered, and the
/// progress of its messages still goes to it.
#[test]
fn messages_in_the_express_stream_are_kept_when_it_is_switched_off() {
    let tmp = tempfile::tempdir().unwrap();
    let on = express_config(tmp.path(), 1 << 20);
    let off = config(tmp.path(), 1 << 20);
    run(|| async move {
        let (spool, _, _) = Spool::open(&on, 0, 1).await.unwrap();
        spool.append(&sample(7, 1, &[b"x\r\n"])).await.unwrap();
        assert!(spool.express.known(MessageId(7)).is_ok());
        spool.close().await;
        let (spool, recovered, _) = Spool::open(&off, 0, 1).await.unwrap();
        assert_eq!(recovered.len(), 1);
        spool.append(&sample(8, 1, &[b"y\r\n"])).await.unwrap();
        assert!(spool.bulk.known(MessageId(8)).is_ok(), "new messages go to bulk");
        spool.complete(MessageId(7)).await.unwrap();
        assert_eq!(spool.stats().live_messages, 1);
        spool.close().await;
    });
    let (recovered, _) = reopen(&config(tmp.path(), 1 << 20));
    let ids: Vec<u128> = recovered.iter().map(|r| r.message.envelope.id.0).collect();
    assert_eq!(ids, vec![8]);
}

/// Prepared segments: once the active segment is half full, a free file full of zeros is
/// written in the background; the next rotation takes it (no new empty file), and what was
/// written into it recovers like any other segment.
#[test]
fn a_half_full_segment_gets_a_prepared_successor_which_the_next_rotation_takes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        prepared_segment_count: 1,
        ..config(tmp.path(), 64 << 10)
    };
    let reopen_cfg = cfg.clone();
    let dir = tmp.path().to_path_buf();
    run(|| async move {
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let msgs: Vec<Message> = (0..12u128).map(|i| sample(i, 1, &[&[i as u8; 10_000]])).collect();
        // Four 10 KB records pass half of the first (new, empty) 64 KiB segment.
        append_each(&spool, &msgs[..4]).await;
        assert_eq!(segment_files(&dir, 0).len(), 1);
        let s = spool.clone();
        wait_for("a prepared free file", move || s.stats().prepared_segments == 1).await;
        let free = list_free(&core_dir(&dir, 0)).unwrap();
        assert_eq!(free.len(), 1, "one file, as configured");
        let free_path = super::segment::free_path(&core_dir(&dir, 0), free[0]);
        let content = std::fs::read(&free_path).unwrap();
        assert!(
            content.len() >= 64 << 10,
            "a whole segment's size: {}",
            content.len()
        );
        assert!(content.iter().all(|&b| b == 0), "written full of zeros");
        let prepared_inode = inode(&free_path);
        // The rest rotate into the prepared file.
        append_each(&spool, &msgs[4..]).await;
        {
            let st = spool.bulk.shared.state.borrow();
            let segments: Vec<u64> = st.segments.values().map(|s| inode(&s.path)).collect();
            assert!(
                segments.contains(&prepared_inode),
                "the prepared file became a segment"
            );
        }
        let stats = spool.stats();
        assert_eq!(
            stats.fresh_segments, 1,
            "only the first segment started empty: {stats:?}"
        );
        spool.close().await;

        let (spool, recovered, report) = Spool::open(&reopen_cfg, 0, 1).await.unwrap();
        assert_eq!(report.corrupt_records, 0, "{report:?}");
        assert_eq!(recovered.len(), msgs.len());
        for (r, m) in recovered.iter().zip(&msgs) {
            assert_same(&r.message, m);
        }
        spool.close().await;
    });
}

/// A free file left by an earlier run keeps its number; new segments are numbered above
/// it, so a segment reclaimed later never takes (and replaces) a free file's name.
#[test]
fn recovery_numbers_new_segments_above_every_free_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 1 << 20);
    let own = core_dir(tmp.path(), 0);
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(super::segment::free_path(&own, 9), vec![0u8; 8192]).unwrap();
    let dir = tmp.path().to_path_buf();
    run(|| async move {
        let (spool, _, _) = Spool::open(&cfg, 0, 1).await.unwrap();
        spool.append(&sample(1, 1, &[b"hello"])).await.unwrap();
        assert_eq!(
            segment_files(&dir, 0),
            vec![10],
            "the free file became segment 10"
        );
        assert!(list_free(&core_dir(&dir, 0)).unwrap().is_empty());
        spool.close().await;
    });
}

/// Blocking commits stop when their budget is spent: with 100 µs of blocked time per second,
/// a run of express commits goes on through io_uring once the first few have used it up,
/// and every record of both kinds of commit recovers. A zero budget never blocks.
#[test]
fn express_commits_block_within_their_budget_and_go_through_io_uring_beyond_it() {
    let tmp = tempfile::tempdir().unwrap();
    let tight = SpoolConfig {
        express_blocking_budget: Duration::from_micros(100),
        ..express_config(tmp.path(), 1 << 20)
    };
    let never = SpoolConfig {
        express_blocking_budget: Duration::ZERO,
        ..tight.clone()
    };
    let check = tight.clone();
    run(|| async move {
        let (spool, _, _) = Spool::open(&tight, 0, 1).await.unwrap();
        // One at a time: each is its own express commit.
        for i in 0..200u128 {
            spool.append(&sample(i, 1, &[b"x\r\n"])).await.unwrap();
        }
        let express = spool.express.stats();
        assert_eq!(express.commits, 200);
        assert!(express.blocking_commits >= 1, "the budget starts full");
        assert!(
            express.blocking_commits < 200,
            "200 commits cannot take under 100 µs and what accrued meanwhile"
        );
        assert_eq!(spool.stats().blocking_commits, express.blocking_commits);
        spool.close().await;
        let (spool, recovered, _) = Spool::open(&never, 0, 1).await.unwrap();
        assert_eq!(recovered.len(), 200);
        spool.append(&sample(500, 1, &[b"y\r\n"])).await.unwrap();
        assert!(spool.express.known(MessageId(500)).is_ok());
        assert_eq!(spool.express.stats().commits, 1);
        assert_eq!(spool.stats().blocking_commits, 0, "a zero budget never blocks");
        spool.close().await;
    });
    let (recovered, report) = reopen(&check);
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(recovered.len(), 201);
}

/// The express committer can run in a task queue of its own choosing (a core puts it in its
/// latency-sensitive queue): express commits are then made by a task of that queue, and
/// what they wrote recovers.
#[test]
fn the_express_committer_runs_in_the_queue_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = express_config(tmp.path(), 1 << 20);
    let check = cfg.clone();
    run(|| async move {
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(1000),
            glommio::Latency::Matters(Duration::from_millis(1)),
            "express-test",
        );
        let ran = || {
            glommio::executor()
                .task_queue_stats(queue)
                .unwrap()
                .queue_selected()
        };
        let (spool, _, _) = Spool::open_in(&cfg, 0, 1, Some(queue)).await.unwrap();
        let before = ran();
        for i in 0..5u128 {
            spool.append(&sample(i, 1, &[b"x\r\n"])).await.unwrap();
        }
        assert_eq!(spool.express.stats().commits, 5);
        assert!(ran() > before, "the committer's turns are that queue's");
        spool.close().await;
    });
    let (recovered, _) = reopen(&check);
    assert_eq!(recovered.len(), 5);
}
