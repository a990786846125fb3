//! Routing on the owner core: recipients of a due message → egress decisions (pool,
//! route) → targets (smarthost or MX) → hops (DNS) → jobs keyed by (generation, source,
//! site, route) on the ready queues; and what a reload asks of routing: jobs waiting in a
//! ready queue of an older generation of settings are taken out and routed again under the
//! current one.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::Bytes;

use super::engine::Deliverer;
use super::outcome::{Outcome, Reason};
use super::ready::{Job, OnPush, ReadyKey, ReadyQueue};
use super::settings::Settings;
use crate::message::{Envelope, MessageId};
use crate::route::egress::Decision;
use crate::route::plan::{self, Hop, Route};
use crate::route::resolver::DnsError;
use crate::smtp::reply::Enhanced;

impl Deliverer {
    /// Routes recipients `rcpts` of a message under one generation of settings: the jobs
    /// for the ready queues, one per (source, site, route) (or per recipient when tokens
    /// name recipients), and the outcomes decided without a connection (DNS).
    pub(super) async fn plan(&self, settings: &Settings, message: &Routed, rcpts: Vec<usize>) -> Planned {
        let egress = &settings.egress;
        let mut groups: BTreeMap<(Decision, Route), Vec<usize>> = BTreeMap::new();
        for i in rcpts {
            let domain = message.envelope.rcpts[i].domain();
            let decision = egress.decide(&message.envelope.account, domain);
            let target = egress.target(decision, domain);
            groups.entry((decision, target)).or_default().push(i);
        }
        let mut sources: HashMap<usize, usize> = HashMap::new();
        // Tokens that name the recipient make every recipient's copy different: one job each.
        let per_recipient = self.transform.borrow().per_recipient(&message.envelope.account);
        let mut jobs: BTreeMap<(usize, String, Option<usize>, Option<usize>), Job> = BTreeMap::new();
        let mut decided: Vec<(usize, Outcome)> = Vec::new();
        for ((decision, target), idxs) in groups {
            let mx_port = settings.delivery.mx_port;
            let hops = match self.timed_dns(plan::hops(&self.resolver, &target, mx_port)).await {
                Ok(h) if !h.is_empty() => h,
                Ok(_) => {
                    let reason = Reason::deferred(format!("no hosts for {}", target.describe()));
                    let outcomes: Vec<_> = idxs.into_iter().map(|i| (i, reason.clone())).collect();
                    settings.count_outcomes(decision.pool, &outcomes);
                    decided.extend(outcomes);
                    continue;
                }
                Err(e) => {
                    let outcome = dns_outcome(&target, &e);
                    let outcomes: Vec<_> = idxs.into_iter().map(|i| (i, outcome.clone())).collect();
                    settings.count_outcomes(decision.pool, &outcomes);
                    decided.extend(outcomes);
                    continue;
                }
            };
            let source = *sources
                .entry(decision.pool)
                .or_insert_with(|| settings.pick(decision.pool));
            let site = plan::site(&hops);
            let hops: Rc<[Hop]> = Rc::from(hops);
            let splits: Vec<(Option<usize>, Vec<usize>)> = match per_recipient {
                true => idxs.into_iter().map(|i| (Some(i), vec![i])).collect(),
                false => vec![(None, idxs)],
            };
            for (split, rcpts) in splits {
                let job = jobs
                    .entry((source, site.clone(), decision.route, split))
                    .or_insert_with(|| Job {
                        id: message.id,
                        envelope: message.envelope.clone(),
                        chunks: message.chunks.clone(),
                        rcpts: Vec::new(),
                        hops: hops.clone(),
                        pool: decision.pool,
                        due_ms: message.due_ms,
                    });
                job.rcpts.extend(rcpts);
            }
        }
        let jobs = jobs
            .into_iter()
            .map(|((source, site, route, _), job)| {
                let key = ReadyKey {
                    generation: settings.generation,
                    source,
                    site: Rc::from(site),
                    route,
                };
                (key, job)
            })
            .collect();
        Planned { jobs, decided }
    }

    /// Takes the jobs out of every ready queue of an older generation than the current
    /// settings and routes them again (at most once per reload). Their connection tasks
    /// finish what they are sending and close.
    pub(super) fn retire_stale_queues(self: &Rc<Self>) {
        let generation = self.settings.borrow().generation;
        if self.retired.replace(generation) == generation {
            return;
        }
        let stale: Vec<Rc<RefCell<ReadyQueue>>> = {
            let mut ready = self.ready.borrow_mut();
            let keys: Vec<ReadyKey> = ready
                .keys()
                .filter(|k| k.generation != generation)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| ready.remove(k)).collect()
        };
        for cell in stale {
            let jobs = cell.borrow_mut().retire();
            for job in jobs {
                let me = self.clone();
                glommio::spawn_local(async move { me.reroute(job).await }).detach();
            }
        }
    }

    /// Routes a job of an older generation under the current settings. It stays part of
    /// its message's attempt: it becomes the jobs it now splits into (or the outcomes DNS
    /// decided), so the attempt ends when they do.
    async fn reroute(self: Rc<Self>, job: Job) {
        let settings = self.settings();
        let message = Routed {
            id: job.id,
            envelope: job.envelope,
            chunks: job.chunks,
            due_ms: job.due_ms,
        };
        let planned = self.plan(&settings, &message, job.rcpts).await;
        let id = message.id;
        if planned.jobs.is_empty() {
            // Settled like a job that ran: it counts itself done in the attempt.
            return self.settle_job(id, String::new(), planned.decided);
        }
        let more = planned.jobs.len() - 1;
        if let Some(a) = self
            .queue
            .borrow_mut()
            .get_mut(&id)
            .and_then(|e| e.attempt.as_mut())
        {
            a.jobs_left += more;
        }
        self.record(id, planned.decided);
        for (key, job) in planned.jobs {
            self.dispatch(key, job);
        }
    }

    /// Hands a job to its ready queue, starting a connection task when the queue wants one.
    /// A job routed under settings that a reload replaced meanwhile is routed again.
    pub(super) fn dispatch(self: &Rc<Self>, key: ReadyKey, job: Job) {
        let settings = self.settings();
        if key.generation != settings.generation {
            let me = self.clone();
            glommio::spawn_local(async move { me.reroute(job).await }).detach();
            return;
        }
        let cell = {
            let mut ready = self.ready.borrow_mut();
            ready
                .entry(key.clone())
                .or_insert_with(|| Rc::new(RefCell::new(ReadyQueue::new(settings.egress.shaping(key.route)))))
                .clone()
        };
        let weight = self.weight_of(&job.envelope.account);
        let action = cell.borrow_mut().push(job, weight);
        if action == OnPush::Spawn {
            let me = self.clone();
            glommio::spawn_local(async move { me.connection_task(key, cell, settings).await }).detach();
        }
    }
}

/// A message being routed: what every job made of it carries.
pub(super) struct Routed {
    pub id: MessageId,
    pub envelope: Rc<Envelope>,
    pub chunks: Rc<[Bytes]>,
    pub due_ms: u64,
}

/// What routing some recipients gave.
pub(super) struct Planned {
    pub jobs: Vec<(ReadyKey, Job)>,
    pub decided: Vec<(usize, Outcome)>,
}

/// What a DNS failure means for the recipients of a route.
fn dns_outcome(route: &Route, e: &DnsError) -> Outcome {
    let domain = match route {
        Route::Mx { domain } => domain.as_str(),
        Route::Smarthost { host, .. } => host.as_str(),
    };
    match e {
        DnsError::NullMx(_) => Outcome::Failed(Reason::local(
            Enhanced::new(5, 1, 10),
            format!("{domain} does not accept mail (null MX, RFC 7505)"),
        )),
        DnsError::NotFound(why) => Outcome::Failed(Reason::local(
            Enhanced::new(5, 1, 2),
            format!("{domain}: domain not found ({why})"),
        )),
        DnsError::Temporary(why) => Outcome::Deferred(Reason::local(
            Enhanced::new(4, 4, 3),
            format!("DNS lookup for {domain} failed: {why}"),
        )),
    }
}
