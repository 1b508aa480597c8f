//! Trigger: decides when to snapshot: latency probes, metric thresholds, what the trace shows, alerts and deaths, all through one gate.
//!
//! Takes in: probe answers and scrapes (`latency`, `metric`: one task per
//! `[[triggers]]` entry), the windows the ring takes with their summaries
//! (`trace`, one task per entry too), alert notifications (`webhook`, whose
//! HTTP side is `api::webhooks`), the deaths the collectors see (`crash`)
//! and the alerts of Alertmanager's API (`alertmanager`, one task per
//! Alertmanager followed). Hands on: a [`crate::snapshot::Firing`] to
//! `Snapshots::fire`, through [`Gate`], which owns the per-target cooldowns,
//! the global rate limit and the dedupe of alerts seen twice. `events` logs
//! and counts what happens.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod alertmanager;
pub mod crash;
pub mod events;
pub mod gate;
pub mod latency;
pub mod metric;
pub mod promtext;
pub mod trace;
pub mod webhook;

pub use gate::{Gate, Outcome};

use crate::config::{Poll, Rule, TriggerConfig};
use crate::ring::Rings;
use crate::tls::ExtraRoots;

/// The client a trigger probes or scrapes with: its own (never the
/// collector's), one connection kept alive, the trigger's timeout.
fn http_client(poll: &Poll, roots: &ExtraRoots) -> Result<reqwest::Client, reqwest::Error> {
    roots
        .reqwest(reqwest::Client::builder())
        .timeout(poll.timeout)
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .user_agent(concat!("flightrec-", "trigger/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The running `[[triggers]]`: one task each, restarted only when its own
/// config changes on reload.
pub struct Triggers {
    gate: Arc<Gate>,
    /// Where trace triggers watch windows arrive.
    rings: Arc<Rings>,
    /// Trust for HTTPS probes and scrapes.
    roots: ExtraRoots,
    /// Parent of every trigger's stop token: cancelled when shutdown begins.
    stop: CancellationToken,
    tasks: TaskTracker,
    running: Mutex<BTreeMap<String, (TriggerConfig, CancellationToken)>>,
}

impl Triggers {
    pub fn start(
        triggers: &[TriggerConfig],
        gate: &Arc<Gate>,
        rings: &Arc<Rings>,
        stop: &CancellationToken,
        roots: &ExtraRoots,
    ) -> Arc<Self> {
        let t = Arc::new(Triggers {
            gate: gate.clone(),
            rings: rings.clone(),
            roots: roots.clone(),
            stop: stop.clone(),
            tasks: TaskTracker::new(),
            running: Mutex::new(BTreeMap::new()),
        });
        t.apply(triggers);
        t
    }

    /// Starts new triggers, stops removed ones and restarts changed ones;
    /// returns the names of those started or restarted, and of those stopped.
    pub fn apply(&self, triggers: &[TriggerConfig]) -> (Vec<String>, Vec<String>) {
        let mut running = self.running.lock();
        let mut stopped = Vec::new();
        let wanted: BTreeMap<&str, &TriggerConfig> = triggers.iter().map(|t| (t.name.as_str(), t)).collect();
        running.retain(|name, (cfg, token)| {
            let keep = wanted.get(name.as_str()).is_some_and(|w| *w == cfg);
            if !keep {
                token.cancel();
                stopped.push(name.clone());
            }
            keep
        });
        let mut started = Vec::new();
        for t in triggers {
            if running.contains_key(&t.name) {
                continue;
            }
            let token = self.stop.child_token();
            let (cfg, gate, stop) = (t.clone(), self.gate.clone(), token.clone());
            let client = |poll: &Poll| {
                http_client(poll, &self.roots)
                    .map_err(|e| tracing::error!(trigger = %cfg.name, error = %e, "cannot build the HTTP client; this trigger is off"))
                    .ok()
            };
            match &t.rule {
                Rule::Latency(rule) => {
                    let Some(client) = client(&rule.poll) else {
                        continue;
                    };
                    self.tasks
                        .spawn(latency::run(cfg, rule.clone(), client, gate, stop));
                }
                Rule::Metric(rule) => {
                    let Some(client) = client(&rule.poll) else {
                        continue;
                    };
                    self.tasks
                        .spawn(metric::run(cfg, rule.clone(), client, gate, stop));
                }
                Rule::Trace(rule) => {
                    self.tasks
                        .spawn(trace::run(cfg, rule.clone(), self.rings.clone(), gate, stop));
                }
            }
            running.insert(t.name.clone(), (t.clone(), token));
            started.push(t.name.clone());
        }
        (started, stopped)
    }

    /// Waits up to `deadline` for every trigger task to end (after the stop
    /// token given to [`Triggers::start`] is cancelled).
    pub async fn wait(&self, deadline: std::time::Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait()).await.is_ok()
    }
}
