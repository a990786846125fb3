//! The cost of moving an accepted message to the core that owns its account and hearing
//! back: a `Message` with a 20 KiB body (as `Bytes` chunks) goes from one glommio executor
//! to another over corerelay's handoff mesh, and an `AckMsg` comes back over the ack mesh,
//! exactly the values and meshes the relay uses (`corerelay::mesh`), without the spool.
//!
//! Cases: one message in flight (the round trip a `250` waits for when acceptor and owner
//! differ) and a window of 64 (throughput); body chunks either shared (a refcount clone:
//! the channel alone) or freshly allocated and filled on the sending core and freed on the
//! receiving one, as the ingress's read buffers are (allocation, copy and cross-core free).
//! The two executors are pinned to two CPUs when the machine has them.

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corerelay::mesh::{AckMsg, HandoffMsg, Meshes};
use corerelay::message::MessageId;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use glommio::sync::Semaphore;
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

#[derive(Clone, Copy)]
enum Chunks {
    /// Refcount clones of one body.
    Shared,
    /// A new allocation per chunk, filled on the sender, freed on the receiver.
    Fresh,
}

#[derive(Clone)]
struct Case {
    messages: u64,
    window: usize,
    chunks: Chunks,
    body: Arc<Vec<u8>>,
    shared_body: Vec<Bytes>,
}

/// Runs one case on two fresh executors and returns the sending core's elapsed time.
fn run(case: Case) -> Duration {
    let meshes = Meshes::new(2, case.window.max(1), 1);
    let cpus = CpuSet::online().map(|s| s.len()).unwrap_or(1);
    let placement = if cpus >= 2 {
        PoolPlacement::MaxSpread(2, None)
    } else {
        PoolPlacement::Unbound(2)
    };
    let handles = LocalExecutorPoolBuilder::new(placement)
        .name("handoff-bench")
        .io_memory(512 << 10)
        .on_all_shards(move || {
            let (meshes, case) = (meshes.clone(), case.clone());
            async move { shard(meshes, case).await }
        })
        .expect("start two executors");
    handles
        .join_all()
        .into_iter()
        .filter_map(|r| r.expect("executor"))
        .next()
        .expect("the sending core's time")
}

async fn shard(meshes: Meshes, case: Case) -> Option<Duration> {
    let (senders, mut receivers) = meshes.handoff.join().await.expect("handoff mesh");
    let (ack_senders, mut ack_receivers) = meshes.ack.join().await.expect("ack mesh");
    if senders.peer_id() == 1 {
        // The owner: acknowledge each message as it arrives; the message is dropped here,
        // on the receiving core.
        for (_, rx) in receivers.streams() {
            while let Some(msg) = rx.recv().await {
                let ack = AckMsg {
                    key: msg.key,
                    result: Ok(()),
                };
                drop(msg.message);
                ack_senders.send_to(msg.from, ack).await.expect("ack");
            }
        }
        ack_senders.close();
        return None;
    }
    let window = Rc::new(Semaphore::new(case.window as u64));
    let acks = {
        let window = window.clone();
        let streams = ack_receivers.streams();
        glommio::spawn_local(async move {
            let mut count = 0;
            for (_, rx) in streams {
                while count < case.messages {
                    rx.recv().await.expect("ack").result.expect("ok");
                    count += 1;
                    window.signal(1);
                }
            }
        })
    };
    let started = Instant::now();
    for seq in 0..case.messages {
        window.acquire(1).await.expect("window");
        let body = match case.chunks {
            Chunks::Shared => case.shared_body.clone(),
            Chunks::Fresh => common::fresh_chunks(&case.body),
        };
        let message = common::message(MessageId::new(0, 0, seq), body);
        let msg = HandoffMsg {
            from: 0,
            key: seq as usize,
            message,
        };
        senders.send_to(1, msg).await.expect("handoff");
    }
    acks.await;
    let elapsed = started.elapsed();
    senders.close();
    Some(elapsed)
}

fn bench_handoff(c: &mut Criterion) {
    let body = common::body_bytes(20 << 10);
    let shared_body = common::fresh_chunks(&body);
    let body = Arc::new(body);
    let mut g = c.benchmark_group("handoff_20KiB");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for (window, chunks, name) in [
        (1, Chunks::Shared, "round_trip_shared_chunks"),
        (64, Chunks::Shared, "window_64_shared_chunks"),
        (64, Chunks::Fresh, "window_64_fresh_chunks"),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                run(Case {
                    messages: iters,
                    window,
                    chunks,
                    body: body.clone(),
                    shared_body: shared_body.clone(),
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_handoff);
criterion_main!(benches);
