//! Spool and delivery events: each one logs AND counts, so logs and metrics never disagree.

use std::time::Duration;

use tracing::{error, info, warn};

use super::sink::SinkError;
use crate::telemetry::{EvictionLabels, Metrics, SinkResult};
use crate::units::Secs;

/// `damaged` names the sinks the bundle could never reach; evicting it then
/// drops a bundle that is not delivered everywhere, so it is said loudly.
pub fn spool_evicted(m: &Metrics, id: &str, target: &str, bytes: u64, reason: &str, damaged: &[&str]) {
    let state = if damaged.is_empty() {
        "delivered"
    } else {
        "undelivered"
    };
    m.spool_evictions
        .get_or_create(&EvictionLabels {
            reason: reason.to_string(),
            state: state.to_string(),
        })
        .inc();
    if damaged.is_empty() {
        info!(%id, %target, bytes, reason, "evicted a delivered bundle from the spool to stay within {reason}");
    } else {
        warn!(
            %id, %target, bytes, reason, sinks = ?damaged,
            "evicted a bundle that was never delivered to {damaged:?} (damaged on disk, it could not be) to stay within {reason}"
        );
    }
}

/// A bundle of an earlier run that a sink had already seen before its
/// derived files were made: it goes as it is.
pub fn delivered_without_derived(m: &Metrics, id: &str) {
    m.bundle_stitch
        .get_or_create(&crate::telemetry::ResultLabels {
            result: "undone".into(),
        })
        .inc();
    warn!(%id, "this bundle's derived files (bundle.trace) were never made: the agent stopped after a sink had started delivering it, so it is delivered without them, the same bytes to every sink");
}

pub fn ledger_write_failed(id: &str, err: &std::io::Error) {
    error!(%id, error = %err, "cannot record delivery state in the spool ledger; after a restart this bundle is delivered again");
}

pub fn delivered(
    m: &Metrics,
    sink: &str,
    id: &str,
    location: &str,
    bytes: u64,
    took: Duration,
    attempts: u32,
) {
    let labels = m.sink(sink);
    m.deliveries
        .get_or_create(&SinkResult {
            sink: sink.to_string(),
            result: "delivered".into(),
        })
        .inc();
    m.delivered_bytes.get_or_create(&labels).inc_by(bytes);
    m.delivery_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    info!(%sink, %id, %location, bytes, took = %Secs(took), attempts, "bundle delivered");
}

/// A failed attempt; `retry_in` is `None` when no retry can help.
pub fn delivery_failed(
    m: &Metrics,
    sink: &str,
    id: &str,
    err: &SinkError,
    attempts: u32,
    retry_in: Option<Duration>,
) {
    m.deliveries
        .get_or_create(&SinkResult {
            sink: sink.to_string(),
            result: "failed".into(),
        })
        .inc();
    match retry_in {
        Some(delay) => {
            m.delivery_retries.get_or_create(&m.sink(sink)).inc();
            warn!(%sink, %id, attempts, reason = err.reason(), retry_in = %Secs(delay), "delivery failed, retrying: {err}");
        }
        None => {
            error!(%sink, %id, attempts, reason = err.reason(), "delivery failed for good, the bundle is damaged on disk: {err}")
        }
    }
}

pub fn circuit_opened(m: &Metrics, sink: &str, failures: u32, cooldown: Duration) {
    m.circuit_open.get_or_create(&m.sink(sink)).set(1);
    m.circuit_opened.get_or_create(&m.sink(sink)).inc();
    warn!(%sink, failures, cooldown = %Secs(cooldown), "sink circuit open after {failures} consecutive failures; pausing deliveries for {}", Secs(cooldown));
}

pub fn circuit_closed(m: &Metrics, sink: &str) {
    m.circuit_open.get_or_create(&m.sink(sink)).set(0);
    info!(%sink, "sink circuit closed: deliveries succeed again");
}
