//! After a bundle is durable: its derived files ([`crate::bundle::finish`]) made on the blocking pool, then the bundle queued for delivery.
//!
//! The snapshot is acknowledged (its progress `complete`, its trigger-to-
//! durable time observed) before this starts, so stitching never delays a
//! bundle. A bundle whose derived files fail is delivered all the same; the
//! manifest says why, the log says it, and `flightrec_bundle_stitch_total`
//! counts it. Bundles an earlier run left unfinished are finished at startup
//! ([`Snapshots::finish_leftovers`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use super::{events, Snapshots};
use crate::bundle::finish;

impl Snapshots {
    /// Makes the derived files of the committed bundle `id` in `dir`, then
    /// queues it for delivery whatever the outcome.
    pub(super) async fn finish_bundle(&self, id: &str, dir: PathBuf) {
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || finish::finish(&dir))
            .await
            .unwrap_or_else(|e| {
                Err(crate::bundle::BundleError::Manifest {
                    path: PathBuf::new(),
                    why: format!("the finishing step panicked: {e}"),
                })
            });
        events::bundle_finished(&self.metrics, id, &done, started.elapsed().as_secs_f64());
        self.spool.finished(id);
    }

    /// Finishes the bundles an earlier run made durable but stopped before
    /// finishing, one at a time, in the background.
    pub fn finish_leftovers(self: &Arc<Self>) {
        let left = self.spool.unfinished();
        if left.is_empty() {
            return;
        }
        info!(
            bundles = left.len(),
            "finishing bundles an earlier run left without their derived files"
        );
        let this = self.clone();
        self.tasks.spawn(async move {
            for (id, dir) in left {
                this.finish_bundle(&id, dir).await;
            }
        });
    }
}
