//! Every default of the trigger settings, in one place (the README's tables
//! list the same values).

use std::time::Duration;

/// Per-target cooldown for triggers without their own, and for webhooks.
pub const COOLDOWN: Duration = Duration::from_secs(5 * 60);
/// Global rate limit: at most `MAX_FIRES` automatic bundles per `PER`.
pub const MAX_FIRES: u64 = 10;
pub const PER: Duration = Duration::from_secs(60 * 60);

pub const LATENCY_INTERVAL: Duration = Duration::from_secs(1);
pub const LATENCY_CONSECUTIVE: u64 = 3;
pub const LATENCY_SAMPLES: u64 = 20;
/// The probe timeout is at least this, and at least twice the threshold.
pub const LATENCY_MIN_TIMEOUT: Duration = Duration::from_secs(1);

pub const METRIC_INTERVAL: Duration = Duration::from_secs(15);
pub const METRIC_TIMEOUT: Duration = Duration::from_secs(5);
pub const METRIC_QUANTILE: f64 = 0.99;
pub const METRIC_MIN_COUNT: u64 = 10;
pub const METRIC_CONSECUTIVE: u64 = 1;
pub const METRIC_PATH: &str = "/metrics";

pub const TRACE_CONSECUTIVE: u64 = 1;

pub const MATCH_LABELS: [&str; 4] = ["service", "pod", "instance", "job"];
/// Longer than Alertmanager's default `repeat_interval` (4h), so the
/// resends of one long-firing alert never make a second bundle.
pub const DEDUPE_TTL: Duration = Duration::from_secs(6 * 60 * 60);
pub const HMAC_HEADER: &str = "X-Grafana-Alerting-Signature";
pub const HMAC_MAX_SKEW: Duration = Duration::from_secs(5 * 60);
