//! The Alertmanager follower: every agent reads the firing alerts from Alertmanager's API and snapshots the targets they select.
//!
//! Takes in: `[alertmanager]`, and the targets alerts select among (the
//! webhooks' [`AlertTargets`], so one rule and one reload serve both).
//! Hands on: a [`Firing`] of kind `alertmanager` to the [`Gate`], as the
//! webhook does. One task per Alertmanager URL, each polling on its own, so
//! a member of an HA pair that is down, slow or broken holds nothing up.
//! One alert is one capture: the same alert from both members of a pair, or
//! from the webhook too, has one dedupe key ([`Alert::dedupe_key`]), and
//! every poll that still returns an alert renews the gate's memory of it,
//! so an alert firing for days is captured once.

mod poll;

pub use poll::decode;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info};

use super::events::AlertmanagerHealth;
use super::gate::Gate;
use super::webhook::{alert_details, reason, Alert, AlertTargets, Source};
use crate::config::AlertmanagerConfig;
use crate::snapshot::{Firing, SnapshotError};
use crate::tls::ExtraRoots;
use crate::units::Secs;
use poll::Member;

/// What every member's task shares.
struct Shared {
    gate: Arc<Gate>,
    targets: Arc<AlertTargets>,
    /// Per-target cooldown of alert triggers (`trigger_limits.cooldown`).
    cooldown: Duration,
}

/// The running follower: restarted as a whole when `[alertmanager]` changes
/// on reload, stopped with the other triggers at shutdown.
pub struct Follower {
    shared: Arc<Shared>,
    roots: ExtraRoots,
    /// Parent of every task's stop token: cancelled when shutdown begins.
    stop: CancellationToken,
    tasks: TaskTracker,
    running: Mutex<(AlertmanagerConfig, CancellationToken)>,
}

impl Follower {
    pub fn start(
        cfg: &AlertmanagerConfig,
        targets: &Arc<AlertTargets>,
        cooldown: Duration,
        gate: &Arc<Gate>,
        stop: &CancellationToken,
        roots: &ExtraRoots,
    ) -> Arc<Self> {
        let f = Arc::new(Follower {
            shared: Arc::new(Shared {
                gate: gate.clone(),
                targets: targets.clone(),
                cooldown,
            }),
            roots: roots.clone(),
            stop: stop.clone(),
            tasks: TaskTracker::new(),
            running: Mutex::new((AlertmanagerConfig::default(), stop.child_token())),
        });
        f.apply(cfg);
        f
    }

    /// Follows `cfg` from now on; true when that changed anything.
    pub fn apply(&self, cfg: &AlertmanagerConfig) -> bool {
        let mut running = self.running.lock();
        if running.0 == *cfg {
            return false;
        }
        running.1.cancel();
        let token = self.stop.child_token();
        *running = (cfg.clone(), token.clone());
        if !cfg.enabled() {
            return true;
        }
        let client = match client(cfg, &self.roots) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "cannot build the HTTP client for [alertmanager]; not following Alertmanager");
                return true;
            }
        };
        let members: Vec<Member> = cfg.urls.iter().map(|u| Member::new(u, cfg)).collect();
        info!(
            alertmanagers = ?members.iter().map(|m| m.shown.as_str()).collect::<Vec<_>>(),
            filter = ?cfg.filter, interval = %Secs(cfg.interval),
            "following Alertmanager's API for alerts about this agent's targets"
        );
        let cfg = Arc::new(cfg.clone());
        for member in members {
            self.tasks.spawn(follow(
                member,
                self.shared.clone(),
                client.clone(),
                cfg.clone(),
                token.clone(),
            ));
        }
        true
    }

    /// Waits up to `deadline` for every task to end (after the stop token
    /// given to [`Follower::start`] is cancelled).
    pub async fn wait(&self, deadline: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait()).await.is_ok()
    }
}

/// One client for every member: `tls.ca_file` trusted, `timeout` bounding
/// each whole poll, answer included.
fn client(cfg: &AlertmanagerConfig, roots: &ExtraRoots) -> Result<reqwest::Client, reqwest::Error> {
    roots
        .reqwest(reqwest::Client::builder())
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(1)
        .user_agent(concat!("flightrec-", "alertmanager/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// How long a member that failed `failures` times in a row waits before its
/// next poll: the interval doubling up to `backoff_max`, half of it random
/// so a fleet of agents does not come back in step.
fn backoff(interval: Duration, max: Duration, failures: u32) -> Duration {
    let full = interval
        .saturating_mul(1u32 << failures.min(16))
        .min(max.max(interval));
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Polls one Alertmanager until `stop`.
async fn follow(
    member: Member,
    shared: Arc<Shared>,
    client: reqwest::Client,
    cfg: Arc<AlertmanagerConfig>,
    stop: CancellationToken,
) {
    let metrics = shared.gate.metrics().clone();
    let mut health = AlertmanagerHealth::new(&member.shown);
    // Agents started together (a rollout) would poll in step for ever; a
    // random first wait spreads them over the interval.
    let mut wait = cfg.interval.mul_f64(rand::random::<f64>());
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
        let started = Instant::now();
        let answer = tokio::select! {
            a = member.poll(&client, &cfg) => a,
            _ = stop.cancelled() => break,
        };
        let took = started.elapsed();
        match answer {
            Ok(alerts) => {
                failures = 0;
                let Some(matching) = shared.judge(&member.shown, &alerts) else {
                    break;
                };
                health.succeeded(&metrics, alerts.len(), matching, took);
                wait = cfg.interval.saturating_sub(took);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                health.failed(&metrics, e.reason(), &e.to_string());
                wait = backoff(cfg.interval, cfg.backoff_max, failures);
            }
        }
    }
    health.forget(&metrics);
}

impl Shared {
    /// Fires for the alerts of one answer that are new and select a target
    /// here, one firing per target; returns how many alerts select a
    /// target, or `None` once the agent is shutting down.
    fn judge(&self, shown: &str, alerts: &[Alert]) -> Option<usize> {
        let mut per_target: BTreeMap<String, Vec<&Alert>> = BTreeMap::new();
        let mut matching = 0;
        for alert in alerts {
            let targets = self.targets.select(&alert.labels);
            if targets.is_empty() {
                // About another host: what most alerts of a fleet are.
                continue;
            }
            matching += 1;
            // Known (from an earlier poll, the other member, the webhook):
            // seen again, remembered longer, captured no more.
            if !self.gate.first_delivery(&alert.dedupe_key(Source::Alertmanager)) {
                continue;
            }
            for t in targets {
                per_target.entry(t).or_default().push(alert);
            }
        }
        for (target, alerts) in per_target {
            let mut details = alert_details(&alerts);
            details["source"] = json!("api");
            details["alertmanager"] = json!(shown);
            let firing = Firing {
                kind: Source::Alertmanager.kind(),
                reason: reason(Source::Alertmanager, &alerts),
                fired_at: SystemTime::now(),
                details,
                post_trigger: None,
            };
            // The gate logs and counts what becomes of it; a refused
            // snapshot (spool full) is logged and counted by the snapshot
            // stage.
            match self.gate.fire(&target, self.cooldown, firing) {
                Ok(_) => {}
                Err(SnapshotError::ShuttingDown) => return None,
                Err(e) => debug!(%target, error = %e, "alert from Alertmanager made no snapshot"),
            }
        }
        Some(matching)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_up_to_the_cap_with_jitter() {
        let s = Duration::from_secs;
        for _ in 0..100 {
            let b1 = backoff(s(5), s(60), 1);
            assert!(b1 >= s(5) && b1 <= s(10), "{b1:?}");
            let b3 = backoff(s(5), s(60), 3);
            assert!(b3 >= s(20) && b3 <= s(40), "{b3:?}");
            let b9 = backoff(s(5), s(60), 9);
            assert!(b9 >= s(30) && b9 <= s(60), "{b9:?}");
            let huge = backoff(s(5), s(60), u32::MAX);
            assert!(huge <= s(60), "{huge:?}");
            // A cap below the interval never polls faster than the interval.
            let low_cap = backoff(s(5), s(1), 1);
            assert!(
                low_cap >= Duration::from_millis(2500) && low_cap <= s(5),
                "{low_cap:?}"
            );
        }
    }
}
