//! Process control: signals in, reloads and stops out to every core.
//!
//! A signal thread owns the process's signals. SIGHUP re-reads and validates the
//! configuration; a valid one becomes a new immutable [`Reload`] snapshot published with a
//! new generation number, an invalid one is refused with the reason and the running
//! configuration stays. SIGTERM or SIGINT asks every core to stop gracefully; a second one
//! exits at once (a `250` already sent is on disk, so nothing acknowledged is lost).
//!
//! Cores do not share memory with each other; each one looks at this control block from
//! its own control task every [`POLL`], off the hot path, and applies what changed to its
//! own state. A reload is thereby atomic on each core: the snapshot is swapped whole.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::account::Directory;
use crate::config::{Config, Overrides};
use crate::deliver::transform::Transform;
use crate::ingress::tls::TlsSnapshot;
use crate::rewrite::Keyring;

/// How often a core looks at the control block.
pub const POLL: Duration = Duration::from_millis(50);

/// What a reload changes, built once and shared by every core.
pub struct Reload {
    pub config: Config,
    pub directory: Arc<Directory>,
    pub tls: Arc<TlsSnapshot>,
    pub keyring: Arc<Keyring>,
    pub transform: Arc<Transform>,
    /// Settings that changed but need a restart (listeners, cores, spool, …).
    pub needs_restart: Vec<&'static str>,
}

/// Where the configuration came from, so a reload reads it the same way.
#[derive(Clone)]
pub struct Source {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

/// The control block shared by the signal thread and every core.
pub struct Control {
    stop: AtomicBool,
    generation: AtomicU64,
    reload: Mutex<Option<Arc<Reload>>>,
    /// The reason the last reload was refused, with its own counter so cores log it once.
    failures: AtomicU64,
    failure: Mutex<String>,
    /// Cores still serving connections during a stop.
    serving: AtomicUsize,
}

impl Control {
    pub fn new(cores: usize) -> Arc<Control> {
        Arc::new(Control {
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            reload: Mutex::new(None),
            failures: AtomicU64::new(0),
            failure: Mutex::new(String::new()),
            serving: AtomicUsize::new(cores),
        })
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The newest reload snapshot (after `generation` moved).
    pub fn latest(&self) -> Option<Arc<Reload>> {
        self.reload.lock().ok().and_then(|r| r.clone())
    }

    pub fn publish(&self, reload: Reload) {
        if let Ok(mut slot) = self.reload.lock() {
            *slot = Some(Arc::new(reload));
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn refuse(&self, why: String) {
        if let Ok(mut f) = self.failure.lock() {
            *f = why;
        }
        self.failures.fetch_add(1, Ordering::AcqRel);
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    pub fn last_failure(&self) -> String {
        self.failure.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// A core has no connection left; returns how many cores still have some.
    pub fn core_drained(&self) -> usize {
        self.serving.fetch_sub(1, Ordering::AcqRel).saturating_sub(1)
    }

    pub fn cores_serving(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }
}

/// The sections of `config` that differ from the running configuration and that only a
/// restart applies (listeners, executors, spool, log files, task-queue shares, lending).
fn restart_only(config: &Config, running: &Config) -> Vec<&'static str> {
    let mut needs_restart = Vec::new();
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    if !same(&config.smtp.listeners, &running.smtp.listeners) {
        needs_restart.push("smtp listeners");
    }
    if !same(&config.http.listen, &running.http.listen) {
        needs_restart.push("http.listen");
    }
    if !same(&config.server, &running.server) {
        needs_restart.push("[server]");
    }
    if !same(&config.spool, &running.spool) {
        needs_restart.push("[spool]");
    }
    if !same(&config.log, &running.log) {
        needs_restart.push("[log]");
    }
    // Task-queue shares and the preempt timer are set when the executors start.
    let (f, r) = (&config.fairness, &running.fairness);
    if (
        f.ingress_shares,
        f.ingress_latency,
        f.io_poll_max,
        f.delivery_shares,
    ) != (
        r.ingress_shares,
        r.ingress_latency,
        r.io_poll_max,
        r.delivery_shares,
    ) {
        needs_restart.push("fairness shares, ingress_latency_ms, io_poll_max_ms");
    }
    if config.lending != running.lending {
        needs_restart.push("[lending]");
    }
    needs_restart
}

/// Builds a reload snapshot from the configuration source, refusing what cannot be
/// loaded, and naming the settings that only a restart applies.
pub fn prepare(source: &Source, running: &Config, cores: usize) -> Result<Reload, String> {
    let config = Config::load(source.path.as_deref(), &source.overrides)?;
    config.check_pinned_against(cores).map_err(|e| e.to_string())?;
    let mut needs_restart = restart_only(&config, running);
    crate::deliver::settings::check_new_sources(&config, running)?;
    needs_restart.extend(crate::deliver::settings::needs_restart(&config, running));
    let tls =
        Arc::new(TlsSnapshot::load(&config.tls, &config.server.hostname).map_err(|e| format!("[tls]: {e}"))?);
    let keyring = Arc::new(crate::http::tracking::load_keyring(
        &config.tracking,
        &running.spool.dir,
    )?);
    let transform = Arc::new(Transform::new(&config.accounts, keyring.clone())?);
    let directory = Arc::new(Directory::new(&config.accounts, cores));
    Ok(Reload {
        config,
        directory,
        tls,
        keyring,
        transform,
        needs_restart,
    })
}

/// Starts the signal thread: SIGHUP reloads, SIGTERM/SIGINT stop (twice: exit at once).
pub fn spawn_signal_thread(
    control: Arc<Control>,
    source: Source,
    running: Config,
    cores: usize,
) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("corerelay-signals".into())
        .spawn(move || {
            let mut running = running;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => match prepare(&source, &running, cores) {
                        Ok(reload) => {
                            if reload.needs_restart.is_empty() {
                                eprintln!("corerelay: configuration reloaded");
                            } else {
                                eprintln!(
                                    "corerelay: configuration reloaded; these changes need a restart: {}",
                                    reload.needs_restart.join(", ")
                                );
                            }
                            running = reload.config.clone();
                            control.publish(reload);
                        }
                        Err(why) => {
                            eprintln!("corerelay: reload refused, the running configuration stays: {why}");
                            control.refuse(why);
                        }
                    },
                    _ if control.stop_requested() => {
                        eprintln!("corerelay: second stop signal: exiting now");
                        std::process::exit(130);
                    }
                    _ => {
                        eprintln!("corerelay: stopping: finishing transactions in flight");
                        control.request_stop();
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::restart_only;
    use crate::config::Config;

    #[test]
    fn start_time_settings_are_named_live_ones_are_not() {
        let running = Config::from_toml("").unwrap();
        let changed = |toml: &str| restart_only(&Config::from_toml(toml).unwrap(), &running);
        assert!(changed("").is_empty());
        assert_eq!(changed("[lending]\nwindow_count = 0\n"), vec!["[lending]"]);
        assert_eq!(
            changed("[fairness]\ningress_shares = 500\n"),
            vec!["fairness shares, ingress_latency_ms, io_poll_max_ms"]
        );
        // Live on reload: the spool quantum, the default limits and steering.
        assert!(
            changed("[fairness]\nspool_quantum_bytes = 8192\nsteer_placed_connections = false\n").is_empty()
        );
    }
}
