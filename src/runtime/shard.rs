//! One core's start-up, in dependency order: join the meshes (first, so a core that fails
//! later cannot leave the others waiting at the join), open the log ring, recover the spool,
//! start delivery, start the handoff endpoint, bind the listeners, report ready, accept
//! on every listener.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use glommio::net::TcpListener;

use super::Shared;
use crate::deliver::engine::Deliverer;
use crate::handoff::{Handoff, Owner};
use crate::http;
use crate::ingress::{Ingress, listener};
use crate::mesh::Meshes;
use crate::observe::Event;
use crate::observe::log::{self, Log};
use crate::observe::metrics::CoreMetrics;
use crate::route::resolver::Resolver;
use crate::spool::Spool;

pub async fn run(shared: Arc<Shared>, meshes: Meshes) {
    match start(&shared, meshes).await {
        Ok((core, listeners, ingress)) => {
            let _ = shared.ready.send(Ok(core));
            let runtimes = ingress.listeners(shared.config.smtp.bare_line_feed);
            let mut loops = Vec::new();
            for (socket, runtime) in listeners.into_iter().zip(runtimes) {
                let ingress = ingress.clone();
                loops.push(glommio::spawn_local(listener::accept_loop(
                    socket, ingress, runtime,
                )));
            }
            for task in loops {
                task.await;
            }
        }
        Err(e) => {
            let _ = shared.ready.send(Err(e));
        }
    }
}

async fn start(shared: &Shared, meshes: Meshes) -> Result<(usize, Vec<TcpListener>, Rc<Ingress>), String> {
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
    let core = senders.peer_id();
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("core {core}: {what}: {e}");

    let accounts = shared.directory.accounts().iter().map(|a| a.id.as_str());
    let metrics = Rc::new(CoreMetrics::new(core, accounts));
    let (log, drain) = Log::with_metrics(core, config.log.ring_max_count, metrics);
    glommio::spawn_local(log::run_drain(drain, log::log_path(&config.log.dir, core))).detach();

    let (spool, recovered, report) = Spool::open(&config.spool, core, shared.cores)
        .await
        .map_err(|e| fail("spool", &e))?;
    log.emit(Event::Recovered {
        segments: report.segments,
        records: report.records,
        messages: report.messages,
        corrupt_records: report.corrupt_records,
    });
    let resolver = resolver(config, &log).map_err(|e| fail("DNS resolver", &e))?;
    let deliverer = Deliverer::new(config, core, spool.clone(), resolver, log.clone())
        .map_err(|e| fail("delivery", &e))?;
    for message in recovered {
        deliverer.enqueue_recovered(message);
    }
    deliverer.start();
    let deliverer_gauge = deliverer.clone();

    let owner = Rc::new(Owner::new(spool, deliverer, log.clone(), shared.health.clone()));
    let handoff = Handoff::start(
        owner,
        senders,
        receivers,
        ack_senders,
        ack_receivers,
        config.server.handoff_window_max_count,
    );
    let ingress = Ingress::new(
        config,
        shared.directory.clone(),
        shared.tls.clone(),
        handoff,
        log.clone(),
    );
    let mut listeners = Vec::new();
    for addr in &shared.listen {
        let socket = listener::bind(*addr, config.smtp.backlog_count)
            .map_err(|e| fail(&format!("cannot listen on {addr}"), &e))?;
        listeners.push(socket);
    }
    let listen: Vec<String> = shared.listen.iter().map(|a| a.to_string()).collect();
    let http_listener = listener::bind(shared.http_listen, config.smtp.backlog_count)
        .map_err(|e| fail(&format!("cannot listen on {}", shared.http_listen), &e))?;
    let (events, events_drain) = Log::with_metrics(core, config.log.ring_max_count, log.metrics_rc());
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
            keyring: shared.keyring.clone(),
            events,
        }),
    });
    glommio::spawn_local(http::accept_loop(http_listener, app)).detach();
    glommio::spawn_local(gauges(deliverer_gauge, log.clone())).detach();
    shared.health.set_running(core);
    log.emit(Event::Start {
        listen: listen.join(" "),
        accounts: shared.directory.accounts().len(),
    });
    Ok((core, listeners, ingress))
}

/// Sets the core's gauges once a second.
async fn gauges(deliverer: Rc<Deliverer>, log: Log) {
    loop {
        log.metrics().core.queue_messages.set(deliverer.queued() as f64);
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
