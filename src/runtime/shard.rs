//! One core's start-up, in dependency order: join the meshes (first, so a core that fails
//! later cannot leave the others waiting at the join), open the log ring, recover the spool,
//! start delivery, start the handoff endpoint, take its SMTP listeners (made by the
//! runtime) and bind the HTTP one, report ready, accept on every listener.
//!
//! Two glommio task queues split the core's time (`[fairness]`): "ingress", latency
//! sensitive, runs the SMTP and HTTP accept loops and so every session (a task inherits
//! its parent's queue); "delivery", throughput work with fewer shares, runs the delivery
//! engine's router, routing and connection tasks. The handoff and ack receivers run in the
//! ingress queue too (they are on the path of a `250`), and so does the spool's express
//! committer (a small sender's commit: waking it there needs no switch of queue, which on
//! a busy core waits for the running queue's slice to end; BENCHMARKS.md, fairness round
//! eight); the bulk stream's committer stays in the default queue (1000 shares). A third
//! queue, "lending", with few shares (`lending.shares`), does other cores' transforms
//! (`deliver::lend`).
//! Start-up itself runs in the default queue, and so do the tasks it spawns without a
//! queue of their own. (An EBADF once seen at start-up came from glommio opening relative
//! directories, not from the queue: `runtime` makes the spool and log directories absolute.)
//! The executor's preempt timer (`fairness.io_poll_max_ms`) bounds how long a busy core goes
//! without polling I/O and the messages of other cores.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{Latency, Shares, TaskQueueHandle};

use super::Shared;
use super::control::{self, Control, Reload};
use crate::deliver::engine::Deliverer;
use crate::deliver::lend::Lender;
use crate::handoff::{self, Handoff, Owner, WindowLimits};
use crate::http;
use crate::ingress::steer::{self, Steered};
use crate::ingress::{Ingress, Limits, listener};
use crate::mesh::Meshes;
use crate::observe::Event;
use crate::observe::log::{self, Log};
use crate::observe::metrics::CoreMetrics;
use crate::route::resolver::Resolver;
use crate::spool::Spool;

pub async fn run(shared: Arc<Shared>, meshes: Meshes) {
    let f = &shared.config.fairness;
    let executor = glommio::executor();
    let queues = Queues {
        ingress: executor.create_task_queue(
            Shares::Static(f.ingress_shares),
            Latency::Matters(f.ingress_latency),
            "ingress",
        ),
        delivery: executor.create_task_queue(
            Shares::Static(f.delivery_shares),
            Latency::NotImportant,
            "delivery",
        ),
        lending: executor.create_task_queue(
            Shares::Static(shared.config.lending.shares),
            Latency::NotImportant,
            "lending",
        ),
    };
    // glommio can miss a wake-up from another executor when this one parks with no timer
    // armed (seen as start-ups that hung in the mesh join now and then); a timer that ticks
    // bounds any such wait. During start-up this ticker does it, afterwards the watchdog.
    let starting = Rc::new(std::cell::Cell::new(true));
    {
        let starting = starting.clone();
        glommio::spawn_local(async move {
            while starting.get() {
                glommio::timer::sleep(WATCHDOG).await;
            }
        })
        .detach();
    }
    let started = start(&shared, meshes, queues).await;
    starting.set(false);
    match started {
        Ok(core) => {
            let _ = shared.ready.send(Ok(core.id));
            core.serve(&shared).await;
        }
        Err(e) => {
            let _ = shared.ready.send(Err(e));
        }
    }
}

/// A started core: what its lifecycle (serve, reload, stop) needs to reach.
struct Core {
    id: usize,
    deliverer: Rc<Deliverer>,
    /// The SMTP listeners in configuration order, with their descriptors.
    listeners: Vec<(Rc<TcpListener>, RawFd)>,
    ingress: Rc<Ingress>,
    app: Rc<http::App>,
    spool: Spool,
    log: Log,
    events: Log,
    ingress_queue: TaskQueueHandle,
}

impl Core {
    /// Accepts on every listener until the process stops, then stops gracefully: listeners
    /// close, idle sessions get `421`, transactions in flight get `server.shutdown_grace_ms`
    /// to finish on every core, and only then is the spool flushed and closed.
    async fn serve(self, shared: &Shared) {
        let runtimes = self.ingress.listeners(shared.config.smtp.bare_line_feed);
        // Core 0 re-attaches the steering program after a reload (one socket of each
        // group is enough); listeners behind a PROXY protocol proxy are never steered.
        let mut steered = Steered::default();
        for ((socket, fd), config) in self.listeners.iter().zip(&shared.config.smtp.listeners) {
            if self.id == 0 && config.proxy_trusted_networks.is_none() {
                steered.add(socket, *fd);
            }
        }
        for ((socket, _), runtime) in self.listeners.into_iter().zip(runtimes) {
            let accept = listener::accept_loop(socket, self.ingress.clone(), runtime);
            if let Err(e) = spawn_into(accept, self.ingress_queue) {
                self.log.emit(Event::Error { what: e });
            }
        }
        let watcher = Watcher {
            steered,
            deliverer: self.deliverer.clone(),
            ingress: self.ingress.clone(),
            app: self.app.clone(),
            log: self.log.clone(),
            events: self.events.clone(),
        };
        glommio::spawn_local(watcher.run(shared.control.clone())).detach();
        glommio::spawn_local(watchdog(self.log.clone())).detach();
        glommio::spawn_local(gauges(
            self.deliverer.clone(),
            self.ingress.clone(),
            self.spool.clone(),
            self.log.clone(),
        ))
        .detach();

        self.ingress.stop.wait().await;
        self.log.emit(Event::Stopping {
            connections: self.ingress.open_connections.get(),
        });
        let deadline = Instant::now() + shared.config.server.shutdown_grace;
        wait_until(deadline, || self.ingress.open_connections.get() == 0).await;
        // Other cores may still hand messages to this one: keep the spool open until every
        // core has drained its connections (or the grace period is over).
        shared.control.core_drained();
        wait_until(deadline, || shared.control.cores_serving() == 0).await;
        self.spool.close().await;
        self.log.emit(Event::Stopped {
            connections_cut: self.ingress.open_connections.get(),
        });
        let flushed = Instant::now() + Duration::from_secs(2);
        wait_until(flushed, || self.log.pending() == 0 && self.events.pending() == 0).await;
        // The drain writes what it took off the ring; give that write a moment.
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) {
    while !done() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// The core's view of the control block: raises the core's stop signal, applies reloads.
struct Watcher {
    /// Core 0's steered listeners (none on the other cores).
    steered: Steered,
    deliverer: Rc<Deliverer>,
    ingress: Rc<Ingress>,
    app: Rc<http::App>,
    log: Log,
    events: Log,
}

impl Watcher {
    async fn run(self, control: Arc<Control>) {
        let (mut generation, mut failures) = (control.generation(), control.failures());
        loop {
            glommio::timer::sleep(control::POLL).await;
            if control.stop_requested() {
                self.ingress.stop.raise();
                return;
            }
            if control.failures() != failures {
                failures = control.failures();
                self.log.emit(Event::ReloadRefused {
                    reason: control.last_failure(),
                });
            }
            if control.generation() != generation {
                generation = control.generation();
                if let Some(reload) = control.latest() {
                    self.apply(&reload, generation);
                }
            }
        }
    }

    /// Swaps in a reload on this core. Each piece is replaced whole, so a session sees
    /// either the old or the new value, never a mix within one lookup.
    fn apply(&self, reload: &Reload, generation: u64) {
        self.ingress.set_directory(reload.directory.clone());
        self.ingress
            .handoff
            .owner()
            .reload(reload.directory.clone(), &reload.config);
        self.log
            .metrics()
            .set_owned(self.ingress.handoff.core(), reload.directory.accounts());
        self.ingress.set_limits(Limits::from_config(&reload.config));
        self.ingress.tls.replace(reload.tls.clone());
        self.steer(reload);
        self.deliverer.set_transform(reload.transform.clone());
        let egress_changed = self.deliverer.reload(&reload.config);
        if let Some(tracking) = &self.app.tracking {
            *tracking.keyring.borrow_mut() = reload.keyring.clone();
        }
        self.log
            .metrics()
            .add_accounts(reload.directory.accounts().iter().map(|a| a.id.as_str()));
        self.log.reopen();
        self.events.reopen();
        self.log.emit(Event::Reloaded {
            generation,
            accounts: reload.directory.accounts().len(),
            egress_changed,
            needs_restart: reload.needs_restart.join(", "),
        });
    }
}

impl Watcher {
    /// Attaches the reloaded placement's steering program (on core 0, which holds the
    /// listeners to do it through), and says which networks now go where.
    fn steer(&self, reload: &Reload) {
        if self.ingress.handoff.core() != 0 {
            return;
        }
        let plan = steer::plan(&reload.config, &reload.directory);
        for what in self.steered.reattach(&plan) {
            self.log.emit(Event::Error { what });
        }
        for line in &plan.lines {
            println!("corerelay: after reload: {line}");
        }
    }
}

/// The core's task queues besides glommio's default one.
#[derive(Clone, Copy)]
struct Queues {
    ingress: TaskQueueHandle,
    delivery: TaskQueueHandle,
    /// Other cores' transforms, done with the CPU this core's own work leaves.
    lending: TaskQueueHandle,
}

/// Runs in the default queue (see the module doc for why, and what goes where).
async fn start(shared: &Shared, meshes: Meshes, queues: Queues) -> Result<Core, String> {
    let config = &shared.config;
    let (senders, receivers) = meshes
        .handoff
        .join()
        .await
        .map_err(|_| "cannot join the handoff mesh".to_string())?;
    let (ack_senders, ack_receivers) = meshes
        .ack
        .join()
        .await
        .map_err(|_| "cannot join the ack mesh".to_string())?;
    let (lend_senders, lend_receivers) = meshes
        .lend
        .join()
        .await
        .map_err(|_| "cannot join the lend mesh".to_string())?;
    let (lent_senders, lent_receivers) = meshes
        .lent
        .join()
        .await
        .map_err(|_| "cannot join the lent mesh".to_string())?;
    let core = senders.peer_id();
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("core {core}: {what}: {e}");

    let accounts = shared.directory.accounts().iter().map(|a| a.id.as_str());
    let metrics = Rc::new(CoreMetrics::new(core, accounts));
    let (log, drain) = Log::with_metrics(core, config.log.ring_max_count, metrics);
    glommio::spawn_local(log::run_drain(drain, log::log_path(&config.log.dir, core))).detach();

    let (spool, recovered, report) = Spool::open_in(&config.spool, core, shared.cores, Some(queues.ingress))
        .await
        .map_err(|e| fail("spool", &e))?;
    log.emit(Event::Recovered {
        segments: report.segments,
        records: report.records,
        messages: report.messages,
        corrupt_records: report.corrupt_records,
    });
    let resolver = resolver(config, &log)
        .map_err(|e| fail("DNS resolver", &e))?
        .with_cache_hit_counter(log.metrics().core.dns_cache_hits_total.clone());
    let f = &config.fairness;
    let (ingress_queue, delivery_queue) = (queues.ingress, queues.delivery);
    spool.set_fairness(f.spool_quantum_bytes, handoff::weights(&shared.directory));
    spool.set_metrics(
        log.metrics().core.spool_fsync_seconds.clone(),
        log.metrics().core.spool_commit_records.clone(),
    );
    let deliverer = Deliverer::new(config, core, spool.clone(), resolver, log.clone())
        .map_err(|e| fail("delivery", &e))?;
    for message in recovered {
        deliverer.enqueue_recovered(message);
    }
    deliverer.set_transform(shared.transform.clone());
    let lender = Lender::start(
        lend_senders,
        lend_receivers,
        lent_senders,
        lent_receivers,
        config.lending.clone(),
        queues.lending,
        log.clone(),
    )
    .map_err(|e| fail("lending", &e))?;
    deliverer.set_lender(lender);
    // The engine's tasks, and every task they spawn, run in the delivery queue.
    let engine = deliverer.clone();
    spawn_into(async move { engine.start() }, delivery_queue).map_err(|e| fail("delivery", &e))?;
    let gauge_source = deliverer.clone();
    log.metrics().set_owned(core, shared.directory.accounts());
    let windows = WindowLimits::from_config(config);
    log.metrics()
        .core
        .handoff_window_max_messages
        .set(windows.max_count as f64);
    log.metrics()
        .core
        .handoff_window_max_bytes
        .set(windows.max_bytes as f64);

    let owner = Rc::new(Owner::new(
        spool.clone(),
        deliverer,
        log.clone(),
        shared.health.clone(),
        shared.directory.clone(),
    ));
    // The handoff and ack receivers are on the path of a `250`: started from a task in the
    // ingress queue, they and the per-message tasks they spawn run there (they do no file
    // I/O, which stays on the default queue's ring).
    let handoff = glommio::spawn_local_into(
        async move { Handoff::start(owner, senders, receivers, ack_senders, ack_receivers, windows) },
        ingress_queue,
    )
    .map_err(|e| fail("handoff", &e))?
    .await;
    let ingress = Ingress::new(
        config,
        shared.directory.clone(),
        shared.tls.clone(),
        handoff,
        log.clone(),
    );
    // Made and set listening by the runtime, in core order (socket `core` of each
    // SO_REUSEPORT group is this core's: connection steering relies on it).
    let listeners: Vec<(Rc<TcpListener>, RawFd)> = shared
        .take_smtp_sockets(core)
        .filter(|s| s.len() == shared.listen.len())
        .ok_or_else(|| fail("listen", &"no listening sockets for this core"))?
        .into_iter()
        .map(|socket| {
            let fd = socket.as_raw_fd();
            (Rc::new(listener::adopt(socket)), fd)
        })
        .collect();
    let listen: Vec<String> = shared.listen.iter().map(|a| a.to_string()).collect();
    let http_listener = listener::bind(shared.http_listen, config.smtp.backlog_count)
        .map_err(|e| fail(&format!("cannot listen on {}", shared.http_listen), &e))?;
    let (events, events_drain) = Log::events_with_metrics(core, config.log.ring_max_count, log.metrics_rc());
    glommio::spawn_local(log::run_drain(
        events_drain,
        log::events_path(&config.log.dir, core),
    ))
    .detach();
    let app = Rc::new(http::App {
        core,
        limits: config.http.limits.clone(),
        prometheus: Some(shared.prometheus.clone()),
        health: shared.health.clone(),
        tracking: Some(http::tracking::Tracking {
            keyring: std::cell::RefCell::new(shared.keyring.clone()),
            events: events.clone(),
        }),
        open_connections: std::cell::Cell::new(0),
    });
    spawn_into(http::accept_loop(http_listener, app.clone()), ingress_queue).map_err(|e| fail("http", &e))?;
    shared.health.set_running(core);
    log.emit(Event::Start {
        listen: listen.join(" "),
        accounts: shared.directory.accounts().len(),
    });
    Ok(Core {
        id: core,
        deliverer: gauge_source,
        listeners,
        ingress,
        app,
        spool,
        log,
        events,
        ingress_queue,
    })
}

/// How often the watchdog wakes. Short, because its tick is also what bounds a wake-up
/// from another core that glommio missed (see [`run`]): such a handoff or ack waits at most
/// this long. ~200 wake-ups a second of an idle core cost well under 1% of it.
const WATCHDOG: Duration = Duration::from_millis(5);

/// The core's watchdog: a timer that should wake every [`WATCHDOG`]; how late it wakes is
/// how long some task held the core. Cheaper and simpler than signal-based stall
/// detection, and it sees the same thing: an executor that cannot get to its timers.
async fn watchdog(log: Log) {
    const STALL: Duration = Duration::from_millis(20);
    loop {
        let started = Instant::now();
        glommio::timer::sleep(WATCHDOG).await;
        let late = started.elapsed().saturating_sub(WATCHDOG);
        let core = &log.metrics().core;
        core.executor_lateness_seconds.record(late.as_secs_f64());
        if late >= STALL {
            core.executor_stalls_total.increment(1);
        }
    }
}

/// Spawns `task` into `queue`, one of this executor's task queues.
fn spawn_into<T: 'static>(
    task: impl std::future::Future<Output = T> + 'static,
    queue: TaskQueueHandle,
) -> Result<(), String> {
    glommio::spawn_local_into(task, queue)
        .map(|t| {
            t.detach();
        })
        .map_err(|e| format!("cannot spawn into a task queue: {e}"))
}

/// Sets the core's gauges once a second.
async fn gauges(deliverer: Rc<Deliverer>, ingress: Rc<Ingress>, spool: Spool, log: Log) {
    loop {
        let core = &log.metrics().core;
        core.queue_messages.set(deliverer.queued() as f64);
        core.connections_open.set(ingress.open_connections.get() as f64);
        let stats = spool.stats();
        core.spool_segments.set(stats.segments as f64);
        core.spool_live_messages.set(stats.live_messages as f64);
        core.spool_bytes.set(stats.bytes as f64);
        core.spool_commits_total.absolute(stats.commits);
        core.spool_records_total.absolute(stats.records);
        core.spool_express_records_total.absolute(stats.express_records);
        core.spool_segments_prepared_total
            .absolute(stats.prepared_segments);
        core.spool_segments_fresh_total.absolute(stats.fresh_segments);
        core.spool_commits_blocking_total.absolute(stats.blocking_commits);
        let (messages, bytes) = ingress.handoff.in_flight();
        core.handoff_inflight_messages.set(messages as f64);
        core.handoff_inflight_bytes.set(bytes as f64);
        core.lend_inflight_messages.set(deliverer.lent() as f64);
        let queued: Vec<(String, usize, u64)> = deliverer
            .queued_by_account()
            .into_iter()
            .map(|(account, q)| (account, q.messages, q.bytes))
            .collect();
        log.metrics().set_queued(&queued);
        glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The core's own resolver: the configured nameservers, or those of /etc/resolv.conf.
fn resolver(config: &crate::config::Config, log: &Log) -> Result<Resolver, String> {
    let d = &config.delivery;
    if !d.dns_servers.is_empty() {
        return Resolver::new(&d.dns_servers, d.dns_timeout, d.dns_attempts_count).map_err(|e| e.to_string());
    }
    Resolver::from_resolv_conf(Path::new("/etc/resolv.conf"), d.dns_timeout, d.dns_attempts_count).map_err(
        |e| {
            log.emit(Event::Error {
                what: format!("/etc/resolv.conf: {e}"),
            });
            format!("{e} (set delivery.dns_servers or --dns)")
        },
    )
}
