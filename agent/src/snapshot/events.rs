//! Snapshot events: each one logs AND counts, so logs and metrics never disagree.

use std::path::Path;
use std::time::Duration;

use tracing::{debug, error, warn};

use crate::deliver::spool::Refusal;
use crate::telemetry::{KindReason, Metrics, ResultLabels};

pub fn snapshot_refused(m: &Metrics, target: &str, kind: &str, refusal: &Refusal) {
    m.snapshots_refused
        .get_or_create(&KindReason {
            kind: kind.to_string(),
            reason: refusal.key.to_string(),
        })
        .inc();
    error!(%target, kind, reason = refusal.key, "snapshot refused: {refusal}");
}

pub fn report_written(m: &Metrics, id: &str, path: &Path, took: Duration) {
    m.reports
        .get_or_create(&ResultLabels {
            result: "written".into(),
        })
        .inc();
    debug!(id, path = %path.display(), took_ms = took.as_millis() as u64, "report.html written");
}

/// The bundle stays as it is, durable and delivered: only its page is missing.
pub fn report_failed(m: &Metrics, id: &str, why: &str) {
    m.reports
        .get_or_create(&ResultLabels {
            result: "failed".into(),
        })
        .inc();
    warn!(id, error = %why, "cannot write the bundle's report.html; the bundle itself is whole (flightrec report writes the page later)");
}
