//! Snapshot events: each one logs AND counts, so logs and metrics never disagree.

use tracing::{error, info, warn};

use crate::bundle::finish::Finished;
use crate::bundle::BundleError;
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

/// A durable bundle's derived files made (or not): counted by result in
/// `flightrec_bundle_stitch_total`; the bundle is delivered either way.
pub fn bundle_finished(m: &Metrics, id: &str, done: &Result<Finished, BundleError>, seconds: f64) {
    let result = match done {
        Ok(f) => f.result,
        Err(_) => "failed",
    };
    m.bundle_stitch
        .get_or_create(&ResultLabels {
            result: result.into(),
        })
        .inc();
    if let Some(f) = done.as_ref().ok().filter(|f| f.result != "already") {
        let written = if f.report_error.is_none() {
            "written"
        } else {
            "failed"
        };
        m.reports
            .get_or_create(&ResultLabels {
                result: written.into(),
            })
            .inc();
        if let Some(why) = &f.report_error {
            warn!(%id, error = %why, "cannot write the bundle's report.html; the bundle is whole and delivered without it (flightrec report writes the page later)");
        }
    }
    let f = match done {
        Ok(f) => f,
        Err(e) => {
            warn!(%id, error = %e, "could not add the derived files to the bundle's manifest; it is delivered as it was made");
            return;
        }
    };
    let d = f.manifest.derived.as_ref();
    let files: Vec<&str> = d.iter().flat_map(|d| &d.files).map(|f| f.file.as_str()).collect();
    let bytes: u64 = d.iter().flat_map(|d| &d.files).map(|f| f.bytes).sum();
    let splits: Vec<&str> = d
        .iter()
        .flat_map(|d| &d.stitch.seams)
        .filter(|s| s.outcome != "stitched")
        .map(|s| s.outcome.as_str())
        .collect();
    match d.and_then(|d| d.stitch.error.as_deref()) {
        Some(why) => warn!(
            %id, error = %why, seconds,
            "could not stitch the bundle's windows into bundle.trace; the bundle is delivered without it"
        ),
        None => {
            info!(%id, result, files = ?files, bytes, seconds, splits = ?splits, "bundle derived files ready")
        }
    }
}
