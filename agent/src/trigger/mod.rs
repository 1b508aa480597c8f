//! Automatic triggers: latency probes, metric thresholds and alert webhooks, all through one gate.
//!
//! `config` reads `[[triggers]]`, `[webhooks]` and `[trigger_limits]`;
//! `latency` and `metric` run one task per trigger; `webhook` serves the
//! Alertmanager and Grafana endpoints; `gate` applies cooldowns, the global
//! rate limit and webhook dedupe before `Snapshots::fire`; `events` logs and
//! counts what happens.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod config;
pub mod events;
pub mod gate;
pub mod latency;
pub mod metric;
pub mod promtext;
pub mod webhook;

pub use config::Settings;
pub use gate::Gate;

use config::Rule;

/// Starts one task per `[[triggers]]` entry; each stops when `stop` is
/// cancelled. The tracker is closed: wait on it to see them all stopped.
pub fn spawn(settings: &Settings, gate: &Arc<Gate>, stop: &CancellationToken) -> TaskTracker {
    let tasks = TaskTracker::new();
    for t in &settings.triggers {
        let (cfg, gate, stop) = (t.clone(), gate.clone(), stop.clone());
        match &t.rule {
            Rule::Latency(rule) => {
                tasks.spawn(latency::run(cfg, rule.clone(), gate, stop));
            }
            Rule::Metric(rule) => {
                tasks.spawn(metric::run(cfg, rule.clone(), gate, stop));
            }
        }
    }
    tasks.close();
    tasks
}
