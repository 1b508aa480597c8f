//! The metric families of the triggers: probes, webhooks, and what fired or was held back.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindTarget {
    pub kind: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindTargetReason {
    pub kind: String,
    pub target: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceStatus {
    pub source: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceReason {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerTarget {
    pub trigger: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerTargetReason {
    pub trigger: String,
    pub target: String,
    pub reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn probe_histogram() -> Histogram {
    // 1ms .. ~16s: a healthy endpoint answers in milliseconds, a sick one
    // runs into the probe timeout.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The metric families of triggers and webhooks.
#[derive(Clone)]
pub struct TriggerMetrics {
    pub fired: Family<KindTarget, Counter>,
    pub suppressed: Family<KindTargetReason, Counter>,
    pub webhook_alerts: Family<SourceStatus, Counter>,
    pub webhook_rejected: Family<SourceReason, Counter>,
    pub unmatched: Family<SourceLabel, Counter>,
    pub probe_duration: Family<TriggerTarget, Histogram, fn() -> Histogram>,
    pub errors: Family<TriggerTargetReason, Counter>,
    pub observed: Family<TriggerTarget, FloatGauge>,
}

impl Default for TriggerMetrics {
    fn default() -> Self {
        TriggerMetrics {
            fired: Family::default(),
            suppressed: Family::default(),
            webhook_alerts: Family::default(),
            webhook_rejected: Family::default(),
            unmatched: Family::default(),
            probe_duration: Family::new_with_constructor(probe_histogram),
            errors: Family::default(),
            observed: Family::default(),
        }
    }
}

impl TriggerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "triggers_fired",
            "Automatic triggers that started a snapshot, by kind and target",
            self.fired.clone(),
        );
        registry.register(
            "triggers_suppressed",
            "Automatic triggers that held but made no snapshot, by reason: cooldown, rate_limit, duplicate; for crashes also off (targets[].crash = false) and shutting_down",
            self.suppressed.clone(),
        );
        registry.register(
            "webhook_alerts",
            "Alerts received on the webhooks, by source and status (firing, resolved)",
            self.webhook_alerts.clone(),
        );
        registry.register(
            "webhook_rejected",
            "Webhook requests refused, by source and reason: unauthorized, malformed, too_large",
            self.webhook_rejected.clone(),
        );
        registry.register(
            "webhook_unmatched_alerts",
            "Firing alerts whose labels selected no target",
            self.unmatched.clone(),
        );
        registry.register_with_unit(
            "trigger_probe_duration",
            "Latency of latency-trigger probes (timeouts observed at the timeout)",
            Unit::Seconds,
            self.probe_duration.clone(),
        );
        registry.register(
            "trigger_errors",
            "Failed probes and scrapes of triggers, by reason: timeout, connect, status, request, body, parse, no_series",
            self.errors.clone(),
        );
        registry.register(
            "trigger_observed_value",
            "Last value a trigger judged: a probe's latency in seconds, or the histogram quantile it computed",
            self.observed.clone(),
        );
    }
}
