//! The spool's append path on the real disk: records/s and the latency from `append` to
//! durable (the wait a client's `250` includes), with 1, 4 and 16 appends in flight, so
//! the effect of group commit (one fdatasync for every record written meanwhile) shows.
//!
//! One glommio executor thread owns one spool in a directory under Cargo's target tmpdir
//! (the disk the build is on, never tmpfs) for the whole run; criterion's `iter_custom`
//! sends it jobs and gets back the time the appends took, measured inside the executor.
//! Between jobs the previous job's messages are completed, untimed, so segments are
//! reclaimed and reused as in a relay's steady state. The latency percentiles and the
//! records per fdatasync are printed after each case (criterion only reports means).

mod common;

use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corerelay::config::SpoolConfig;
use corerelay::message::{IdGenerator, MessageId};
use corerelay::spool::Spool;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_channel::mpsc as async_mpsc;
use futures_lite::StreamExt;
use glommio::{LocalExecutorBuilder, Placement};

/// One timed batch of appends, `concurrency` at a time.
struct Job {
    appends: u64,
    concurrency: usize,
    body: Vec<Bytes>,
    reply: mpsc::Sender<JobResult>,
}

struct JobResult {
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// fdatasyncs (group commits) the job's appends took.
    commits: u64,
}

/// The executor thread that owns the spool; dropping `jobs` ends it.
struct Runner {
    jobs: async_mpsc::UnboundedSender<Job>,
    thread: JoinHandle<()>,
}

impl Runner {
    fn start(dir: &Path) -> Runner {
        let config = SpoolConfig {
            dir: dir.to_path_buf(),
            segment_max_bytes: 16 << 20,
            commit_batch_max_count: 64,
            commit_batch_max_bytes: 8 << 20,
            // One account's concurrent appends: the group commit of the bulk stream is
            // what is measured (the express stream would take one of them at a time).
            express: false,
            prepared_segment_count: 1,
            express_blocking_budget: Duration::ZERO,
            memory_max_bytes: 256 << 20,
        };
        let (jobs, rx) = async_mpsc::unbounded();
        let thread = LocalExecutorBuilder::new(Placement::Unbound)
            .name("spool-bench")
            .io_memory(2 << 20)
            .spawn(move || serve(config, rx))
            .expect("start the spool executor");
        Runner {
            jobs,
            thread: std::thread::spawn(move || {
                thread.join().expect("spool executor");
            }),
        }
    }

    fn run(&self, job: Job) {
        self.jobs.unbounded_send(job).expect("spool executor alive");
    }

    fn stop(self) {
        drop(self.jobs);
        self.thread.join().expect("spool runner");
    }
}

async fn serve(config: SpoolConfig, mut jobs: async_mpsc::UnboundedReceiver<Job>) {
    let (spool, _, _) = Spool::open(&config, 0, 1).await.expect("open the spool");
    let spool = Rc::new(spool);
    let mut ids = IdGenerator::new(0);
    let mut live: Vec<MessageId> = Vec::new();
    while let Some(job) = jobs.next().await {
        // Untimed: finish what the last job appended, so its segments can be reused.
        run_tasks(16, std::mem::take(&mut live), {
            let spool = spool.clone();
            move |id| {
                let spool = spool.clone();
                async move { spool.complete(id).await.expect("complete") }
            }
        })
        .await;
        let now_us = common_now_us();
        let batch: Vec<MessageId> = (0..job.appends).map(|_| ids.next(now_us)).collect();
        let commits_before = spool.stats().commits;
        let started = Instant::now();
        let latencies_us = run_tasks(job.concurrency, batch.clone(), {
            let (spool, body) = (spool.clone(), job.body.clone());
            move |id| {
                let (spool, message) = (spool.clone(), common::message(id, body.clone()));
                async move {
                    let t0 = Instant::now();
                    spool.append(&message).await.expect("append");
                    t0.elapsed().as_micros().min(u32::MAX as u128) as u32
                }
            }
        })
        .await;
        let elapsed = started.elapsed();
        live = batch;
        let _ = job.reply.send(JobResult {
            elapsed,
            latencies_us,
            commits: spool.stats().commits - commits_before,
        });
    }
    Rc::try_unwrap(spool)
        .ok()
        .expect("no other spool handle")
        .close()
        .await;
}

/// Runs `work` for every item with at most `concurrency` at once (each of `concurrency`
/// tasks takes the next item when it is done), collecting the results.
async fn run_tasks<T, F, Fut>(concurrency: usize, items: Vec<MessageId>, work: F) -> Vec<T>
where
    T: 'static,
    F: Fn(MessageId) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let queue = Rc::new(std::cell::RefCell::new(items.into_iter()));
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (queue, work) = (queue.clone(), work.clone());
            glommio::spawn_local(async move {
                let mut out = Vec::new();
                loop {
                    let next = queue.borrow_mut().next();
                    let Some(id) = next else { break };
                    out.push(work(id).await);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await);
    }
    all
}

fn common_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What one case measured over all its jobs (warm-up included).
#[derive(Default)]
struct Totals {
    latencies_us: Vec<u32>,
    appends: u64,
    commits: u64,
}

impl Totals {
    fn print(mut self, name: &str) {
        self.latencies_us.sort_unstable();
        let l = &self.latencies_us;
        println!(
            "{name}: append→durable p50 {} µs, p99 {} µs, max {} µs; {:.1} records per fdatasync ({} appends)",
            common::quantile_us(l, 0.50),
            common::quantile_us(l, 0.99),
            l.last().copied().unwrap_or(0),
            self.appends as f64 / self.commits.max(1) as f64,
            self.appends
        );
    }
}

fn bench_append(c: &mut Criterion) {
    let tmp = tempfile::Builder::new()
        .prefix("spool-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir on the build disk");
    let runner = Runner::start(tmp.path());
    let mut g = c.benchmark_group("spool_append");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for (size_bytes, concurrency) in [(20 << 10, 1), (20 << 10, 4), (20 << 10, 16), (2 << 10, 16)] {
        let body = common::fresh_chunks(&common::body_bytes(size_bytes));
        let name = format!("{}KiB_{concurrency}_in_flight", size_bytes >> 10);
        let mut totals = Totals::default();
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let (reply, result) = mpsc::channel();
                runner.run(Job {
                    appends: iters,
                    concurrency,
                    body: body.clone(),
                    reply,
                });
                let r = result.recv().expect("job result");
                totals.latencies_us.extend(r.latencies_us);
                totals.appends += iters;
                totals.commits += r.commits;
                r.elapsed
            })
        });
        totals.print(&format!("spool_append/{name}"));
    }
    g.finish();
    runner.stop();
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
