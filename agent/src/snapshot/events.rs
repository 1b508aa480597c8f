//! Snapshot events: each one logs AND counts, so logs and metrics never disagree.

use tracing::error;

use crate::deliver::spool::Refusal;
use crate::telemetry::{KindReason, Metrics};

pub fn snapshot_refused(m: &Metrics, target: &str, kind: &str, refusal: &Refusal) {
    m.snapshots_refused
        .get_or_create(&KindReason {
            kind: kind.to_string(),
            reason: refusal.key.to_string(),
        })
        .inc();
    error!(%target, kind, reason = refusal.key, "snapshot refused: {refusal}");
}
