//! The runtime: turns a validated [`Config`] into running cores. It takes the process lock,
//! reserves the listening address, makes every core's SMTP listening sockets (in core
//! order, and steers placed accounts' connections through them: `ingress::steer`), builds
//! the channel meshes, starts one glommio executor
//! per selected core (pinned in production), and waits until every core reports that it
//! recovered its spool and listens — or exits naming the core that could not.
//!
//! This module wires everything; nothing below it depends on it.

pub mod control;
mod shard;

use std::fs::File;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::account::Directory;
use crate::config::{Config, Cores};
use crate::deliver::transform::Transform;
use crate::http::Health;
use crate::http::tracking::load_keyring;
use crate::ingress::tls::{self, TlsSnapshot};
use crate::ingress::{listener, steer};
use crate::mesh::Meshes;
use crate::observe::metrics::{HISTOGRAM_BUCKETS, LATENCY_BUCKETS_SECONDS, describe_all};
use crate::rewrite::Keyring;
use control::{Control, Source, spawn_signal_thread};

/// What every core is started with (read-only after start).
pub struct Shared {
    pub config: Config,
    pub directory: Arc<Directory>,
    /// The bound address of each listener, in configuration order.
    pub listen: Vec<SocketAddr>,
    /// The certificate every core starts with.
    pub tls: Arc<TlsSnapshot>,
    pub http_listen: SocketAddr,
    pub cores: usize,
    pub prometheus: PrometheusHandle,
    pub health: Arc<Health>,
    pub keyring: Arc<Keyring>,
    pub transform: Arc<Transform>,
    pub control: Arc<Control>,
    /// Every core's listening SMTP sockets, `[core][listener]`, each taken by its core.
    smtp_sockets: std::sync::Mutex<Vec<Vec<socket2::Socket>>>,
    ready: mpsc::Sender<Result<usize, String>>,
}

impl Shared {
    /// Core `core`'s listening SMTP sockets, in listener order (once).
    pub fn take_smtp_sockets(&self, core: usize) -> Option<Vec<socket2::Socket>> {
        let mut all = self.smtp_sockets.lock().ok()?;
        all.get_mut(core).map(std::mem::take)
    }
}

/// Runs the relay until the process is stopped. Returns an error message when start-up
/// fails.
pub fn serve(mut config: Config, source: Source) -> Result<(), String> {
    // glommio opens directories relative to no directory at all (EBADF for "spool/core-0"),
    // and a relative path would change meaning if the process ever changed directory: make
    // the spool and log directories absolute once, against the directory we started in.
    for dir in [&mut config.spool.dir, &mut config.log.dir] {
        *dir = std::path::absolute(&*dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let online = CpuSet::online().map(|s| s.len()).unwrap_or(1);
    let cores = config.core_count(online);
    config.check_pinned_against(cores).map_err(|e| e.to_string())?;
    let _lock = lock_spool(&config)?;
    std::fs::create_dir_all(&config.log.dir)
        .map_err(|e| format!("cannot create log dir {}: {e}", config.log.dir.display()))?;
    let directory = Arc::new(Directory::new(&config.accounts, cores));
    // Held for the life of the process so the ports stay ours even with port 0.
    let mut reserved = Vec::new();
    let mut listen = Vec::new();
    for l in &config.smtp.listeners {
        let (socket, bound) =
            listener::reserve(l.address).map_err(|e| format!("cannot bind {}: {e}", l.address))?;
        reserved.push(socket);
        listen.push(bound);
    }
    tls::ensure_provider();
    let tls = Arc::new(TlsSnapshot::load(&config.tls, &config.server.hostname)?);
    let (_reserved_http, http_listen) = listener::reserve(config.http.listen)
        .map_err(|e| format!("cannot bind {}: {e}", config.http.listen))?;
    let prometheus = install_metrics()?;
    let keyring = Arc::new(load_keyring(&config.tracking, &config.spool.dir)?);
    let transform = Arc::new(Transform::new(&config.accounts, keyring.clone())?);
    for account in directory.accounts() {
        let dedicated = if account.share.dedicated {
            " (dedicated)"
        } else {
            ""
        };
        println!(
            "corerelay: account {} on core {}{dedicated}",
            account.id, account.owner
        );
    }
    let smtp_sockets = listen_and_steer(&config, &directory, &listen, cores)?;
    let shared_listeners = config.smtp.listeners.clone();
    let placement = placement(&config.server.cores, config.server.pin, cores)?;
    let io_memory = config.server.io_memory_bytes;
    let io_poll_max = config.fairness.io_poll_max;
    let startup_timeout = config.server.startup_timeout;
    let (ready_tx, ready_rx) = mpsc::channel();
    let control = Control::new(cores);
    let running_config = config.clone();
    // glommio's MeshBuilder keeps its peer list behind an `Rc` (and declares itself Send):
    // cloning or dropping it on several threads at once races on the reference count, which
    // freed the peer list under a joining executor and hung start-up now and then. So every
    // clone is made here, on this thread, one per executor, and the original is leaked (once
    // per process): racing drops can then only leak the count, never free the list early.
    let meshes = Meshes::new(
        cores,
        config.server.handoff_window_max_count,
        config.lending.window_count,
    );
    let per_core = Arc::new(std::sync::Mutex::new(
        (0..cores).map(|_| meshes.clone()).collect::<Vec<_>>(),
    ));
    std::mem::forget(meshes);
    let shared = Arc::new(Shared {
        config,
        directory,
        listen: listen.clone(),
        tls,
        http_listen,
        cores,
        prometheus: prometheus.clone(),
        health: Arc::new(Health::new(cores)),
        keyring,
        transform,
        control: control.clone(),
        smtp_sockets: std::sync::Mutex::new(smtp_sockets),
        ready: ready_tx,
    });
    let handles = LocalExecutorPoolBuilder::new(placement)
        .name("corerelay")
        .io_memory(io_memory)
        .preempt_timer(io_poll_max)
        .on_all_shards(move || {
            let shared = shared.clone();
            let mine = per_core.lock().ok().and_then(|mut m| m.pop());
            async move {
                match mine {
                    Some(meshes) => shard::run(shared, meshes).await,
                    None => {
                        let _ = shared.ready.send(Err("more executors than meshes".into()));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start executors: {e}"))?;
    let started_by = Instant::now() + startup_timeout;
    for _ in 0..cores {
        match ready_rx.recv_timeout(started_by.saturating_duration_since(Instant::now())) {
            Ok(Ok(_core)) => {}
            Ok(Err(e)) => return Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => return restart_after_stuck_start(startup_timeout),
            // Every core is gone without a word: an executor failed to start (io_uring
            // unavailable, or not enough locked memory for `server.io_memory_bytes`).
            Err(_) => {
                let why: Vec<String> = handles
                    .join_all()
                    .into_iter()
                    .filter_map(|r| r.err())
                    .map(|e| e.to_string())
                    .collect();
                return Err(format!(
                    "the executors stopped during start-up: {}",
                    why.join("; ")
                ));
            }
        }
    }
    spawn_signal_thread(control, source, running_config, cores)?;
    // One line per listener; the first keeps the form scripts and tests parse.
    for (i, (addr, l)) in listen.iter().zip(&shared_listeners).enumerate() {
        if i == 0 {
            println!("corerelay: listening on {addr} with {cores} cores");
        } else {
            println!("corerelay: listening on {addr} ({})", describe(l));
        }
    }
    println!("corerelay: metrics and health on http://{http_listen}/metrics");
    spawn_metrics_upkeep(prometheus);
    for result in handles.join_all() {
        if let Err(e) = result {
            return Err(format!("a core stopped: {e}"));
        }
    }
    println!("corerelay: stopped");
    Ok(())
}

/// Creates every core's listening socket on each SMTP address (on this thread, core 0
/// first: see `listener::listen_per_core`), and steers the placed accounts' networks to
/// their owner cores on the listeners without PROXY protocol. A kernel that refuses the
/// program leaves connections spread by hash, which works, only less fairly: said, not fatal.
fn listen_and_steer(
    config: &Config,
    directory: &Directory,
    listen: &[SocketAddr],
    cores: usize,
) -> Result<Vec<Vec<socket2::Socket>>, String> {
    let sockets = listener::listen_per_core(listen, cores, config.smtp.backlog_count)
        .map_err(|e| format!("cannot listen on {e}"))?;
    let plan = steer::plan(config, directory);
    for line in &plan.lines {
        println!("corerelay: {line}");
    }
    if !plan.steers() {
        return Ok(sockets);
    }
    for (i, (addr, l)) in listen.iter().zip(&config.smtp.listeners).enumerate() {
        if l.proxy_trusted_networks.is_some() {
            println!("corerelay: not steering {addr}: its clients come through a PROXY protocol proxy");
            continue;
        }
        if let Some(first) = sockets.first().and_then(|s| s.get(i)) {
            use std::os::fd::AsFd;
            if let Err(e) = plan.attach(first.as_fd()) {
                eprintln!("corerelay: cannot steer connections on {addr}, they are spread by hash: {e}");
            }
        }
    }
    Ok(sockets)
}

/// Installs the process's Prometheus recorder (no HTTP server of its own: corerelay serves
/// `/metrics` from its own listener) and registers every metric's help text.
fn install_metrics() -> Result<PrometheusHandle, String> {
    let mut builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS_SECONDS);
    for (name, buckets) in HISTOGRAM_BUCKETS {
        let matcher = metrics_exporter_prometheus::Matcher::Full(name.to_string());
        builder = builder.and_then(|b| b.set_buckets_for_metric(matcher, buckets));
    }
    let handle = builder
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe_all();
    Ok(handle)
}

/// The recorder needs `run_upkeep` regularly to drain histogram buckets; a plain thread
/// does it so no core's executor carries the work.
fn spawn_metrics_upkeep(handle: PrometheusHandle) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            handle.run_upkeep();
        }
    });
}

/// A listener's options, for the start-up line.
fn describe(l: &crate::config::ListenerConfig) -> String {
    let mut parts = vec![if l.implicit_tls {
        "implicit TLS"
    } else {
        "STARTTLS"
    }];
    if l.require_tls {
        parts.push("TLS required");
    }
    if l.auth_plaintext_allowed {
        parts.push("AUTH without TLS");
    }
    if l.proxy_trusted_networks.is_some() {
        parts.push("PROXY protocol");
    }
    parts.join(", ")
}

/// Takes `<spool-dir>/corerelay.lock`: with SO_REUSEPORT a second relay would otherwise
/// bind the same port silently and share the spool.
fn lock_spool(config: &Config) -> Result<File, String> {
    let dir = &config.spool.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create spool dir {}: {e}", dir.display()))?;
    let path = dir.join("corerelay.lock");
    // Not truncated before the lock is ours: the pid in it may be another relay's.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.try_lock()
        .map_err(|_| format!("{} is locked: another corerelay uses this spool", path.display()))?;
    // The pid, for `corerelay reload`.
    use std::io::Write;
    file.set_len(0)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut writer = &file;
    writer
        .write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(file)
}

/// Where the executors run: pinned one per CPU in production, unpinned when `pin = false`
/// (tests that run more cores than the machine has).
fn placement(cores: &Cores, pin: bool, count: usize) -> Result<PoolPlacement, String> {
    if !pin {
        return Ok(PoolPlacement::Unbound(count));
    }
    match cores {
        Cores::All | Cores::Count(_) => Ok(PoolPlacement::MaxSpread(count, None)),
        Cores::List(list) => {
            let online = CpuSet::online().map_err(|e| format!("cannot read CPU topology: {e}"))?;
            let sets = list
                .iter()
                .map(|&cpu| {
                    let set = online.clone().filter(|l| l.cpu == cpu);
                    if set.is_empty() {
                        Err(format!(
                            "configuration key `server.cores`: CPU {cpu} is not online"
                        ))
                    } else {
                        Ok(set)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(PoolPlacement::Custom(sets))
        }
    }
}

/// A core that has not started within `server.startup_timeout_ms` is stuck, not slow: glommio
/// can lose an I/O completion while an executor starts (about one start-up in a hundred on a
/// busy machine), and nothing would ever wake that core. Nothing is acknowledged until the
/// cores are up, except by cores that are (and their messages are in their spools), so the
/// process replaces itself: the same binary and arguments, at most twice in a row.
fn restart_after_stuck_start(timeout: std::time::Duration) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    const ATTEMPT: &str = "CORERELAY_START_ATTEMPT";
    let attempt: u32 = std::env::var(ATTEMPT)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let why = format!(
        "a core did not finish starting within {} ms (server.startup_timeout_ms)",
        timeout.as_millis()
    );
    if attempt >= 3 {
        return Err(format!("{why}, {attempt} times in a row; giving up"));
    }
    eprintln!("corerelay: {why}; starting again (attempt {})", attempt + 1);
    let error = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .env(ATTEMPT, (attempt + 1).to_string())
        .exec();
    Err(format!("{why}, and starting again failed: {error}"))
}
