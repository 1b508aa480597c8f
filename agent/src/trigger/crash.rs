//! The crash trigger: a target's death, reported by its collector, becomes a bundle of its ring up to the death, through the gate.
//!
//! The collector judges the death (see `collect::crash`); this task only
//! decides whether to snapshot it: `[crash] enabled` (else it never runs),
//! the target's own `crash` setting as configured now, and the gate's
//! cooldown and rate limit. The bundle is written at once, without
//! post-trigger recording: nothing after the death is about it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::events;
use super::gate::Gate;
use crate::bundle::Death;
use crate::collect::{Crash, Fleet};
use crate::snapshot::{Firing, Scope, TriggerKind};

/// Snapshots every death reported on `deaths` until `stop`.
pub async fn run(
    mut deaths: mpsc::Receiver<Box<Crash>>,
    cooldown: Duration,
    gate: Arc<Gate>,
    fleet: Arc<Fleet>,
    stop: CancellationToken,
) {
    loop {
        let crash = tokio::select! {
            got = deaths.recv() => match got {
                Some(c) => c,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        fire(&gate, &fleet, cooldown, &crash);
    }
}

fn fire(gate: &Gate, fleet: &Fleet, cooldown: Duration, crash: &Crash) {
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
    let firing = Firing {
        kind: TriggerKind::Crash,
        reason: format!("{target} died: {seen}"),
        // The bundle is named and dated by the death, not by this task.
        fired_at: crash.seen_at,
        details: crash.details(),
        post_trigger: None,
    };
    let scope = Scope::UpTo {
        last_seq: crash.last_seq,
        death: Some(Death {
            seen,
            at: crash.seen_at,
        }),
    };
    // Only a shutdown refuses; the gate has logged and counted the rest.
    if let Err(e) = gate.fire_scoped(&target, cooldown, firing, scope) {
        events::crash_not_snapshotted(gate.metrics(), &target, "shutting_down", &e.to_string());
    }
}
