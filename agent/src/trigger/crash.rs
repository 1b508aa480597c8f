//! The crash trigger: a target's death, reported by its collector, becomes a bundle of its ring up to the death, through the gate.
//!
//! The collector judges the death (see `collect::crash`); this task only
//! decides whether to snapshot it: `[crash] enabled` (else it never runs),
//! the target's own `crash` setting as configured now, and the gate's
//! cooldown and rate limit. The bundle is written at once, without
//! post-trigger recording: nothing after the death is about it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events;
use super::gate::Gate;
use crate::bundle::Death;
use crate::collect::{Crash, Fleet};
use crate::snapshot::{Firing, Scope, TriggerKind};

/// What the platform a target runs on knows of its death: on Kubernetes,
/// the container's status (reason, exit code, restarts) and its last log.
pub trait CrashContext: Send + Sync {
    /// Whether this context knows the target (a discovered pod).
    fn knows(&self, target: &str) -> bool;
    /// Waits (bounded) for what the platform says of the target's death
    /// seen at `died_at`.
    fn describe<'a>(&'a self, target: &'a str, died_at: SystemTime) -> BoxFuture<'a, PlatformDeath>;
}

/// A death as the platform reports it.
#[derive(Debug, Clone, Default)]
pub struct PlatformDeath {
    /// Merged into the trigger details under the platform's name.
    pub details: serde_json::Value,
    /// The target was stopped on purpose (a pod being deleted): not a crash.
    pub stopped_on_purpose: Option<String>,
    /// The end of the target's log, kept in the bundle.
    pub log: Option<Bytes>,
}

/// Snapshots every death reported on `deaths` until `stop`. With a
/// `context`, a death of a target it knows waits for what the platform says
/// (bounded) and is told apart from a stop on purpose.
pub async fn run(
    mut deaths: mpsc::Receiver<Box<Crash>>,
    cooldown: Duration,
    gate: Arc<Gate>,
    fleet: Arc<Fleet>,
    context: Option<Arc<dyn CrashContext>>,
    stop: CancellationToken,
) {
    let waiting = TaskTracker::new();
    loop {
        let crash = tokio::select! {
            got = deaths.recv() => match got {
                Some(c) => c,
                None => break,
            },
            _ = stop.cancelled() => break,
        };
        match context.clone().filter(|c| c.knows(&crash.target)) {
            None => fire(&gate, &fleet, cooldown, &crash, PlatformDeath::default()),
            Some(ctx) => {
                let (gate, fleet) = (gate.clone(), fleet.clone());
                waiting.spawn(async move {
                    let said = ctx.describe(&crash.target, crash.seen_at).await;
                    fire(&gate, &fleet, cooldown, &crash, said);
                });
            }
        }
    }
    waiting.close();
    waiting.wait().await;
}

fn fire(gate: &Gate, fleet: &Fleet, cooldown: Duration, crash: &Crash, platform: PlatformDeath) {
    let target = crash.target.to_string();
    let seen = crash.seen();
    let off = match fleet.get(&target) {
        Some(t) if t.crash => None,
        Some(_) => Some("the crash trigger is off for this target (targets[].crash = false)"),
        None => Some("the target is no longer known (its departed ring expired)"),
    };
    if let Some(off) = off {
        events::crash_not_snapshotted(gate.metrics(), &target, "off", &format!("{off}; {seen}"));
        return;
    }
    if let Some(why) = &platform.stopped_on_purpose {
        events::crash_not_snapshotted(gate.metrics(), &target, "stopped", &format!("{why}; {seen}"));
        return;
    }
    let mut details = crash.details();
    if let (Some(all), Some(more)) = (details.as_object_mut(), platform.details.as_object()) {
        all.extend(more.clone());
    }
    let firing = Firing {
        kind: TriggerKind::Crash,
        reason: format!("{target} died: {seen}"),
        // The bundle is named and dated by the death, not by this task.
        fired_at: crash.seen_at,
        details,
        post_trigger: None,
    };
    let scope = Scope::UpTo {
        last_seq: crash.last_seq,
        death: Some(Death {
            seen,
            at: crash.seen_at,
            log: platform.log,
        }),
    };
    // Only a shutdown refuses; the gate has logged and counted the rest.
    if let Err(e) = gate.fire_scoped(&target, cooldown, firing, scope) {
        events::crash_not_snapshotted(gate.metrics(), &target, "shutting_down", &e.to_string());
    }
}
