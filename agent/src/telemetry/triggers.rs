//! The metric families of the triggers: probes, webhooks, the Alertmanager follower, and what fired or was held back.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UrlLabel {
    /// An Alertmanager's URL, without credentials.
    pub url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UrlReason {
    pub url: String,
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
    pub alertmanager: AlertmanagerMetrics,
}

/// The Alertmanager follower's families, by Alertmanager URL.
#[derive(Clone)]
pub struct AlertmanagerMetrics {
    pub up: Family<UrlLabel, Gauge>,
    pub last_success: Family<UrlLabel, FloatGauge>,
    /// Counted once each time a URL starts failing, or fails for a new reason.
    pub poll_errors: Family<UrlReason, Counter>,
    pub poll_duration: Family<UrlLabel, Histogram, fn() -> Histogram>,
    pub alerts: Family<UrlLabel, Gauge>,
    pub matching: Family<UrlLabel, Gauge>,
}

impl Default for AlertmanagerMetrics {
    fn default() -> Self {
        AlertmanagerMetrics {
            up: Family::default(),
            last_success: Family::default(),
            poll_errors: Family::default(),
            poll_duration: Family::new_with_constructor(probe_histogram),
            alerts: Family::default(),
            matching: Family::default(),
        }
    }
}

impl AlertmanagerMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "alertmanager_up",
            "1 while the last poll of this Alertmanager's API worked, else 0",
            self.up.clone(),
        );
        registry.register(
            "alertmanager_last_success_timestamp_seconds",
            "Unix time of the last poll of this Alertmanager's API that worked",
            self.last_success.clone(),
        );
        registry.register(
            "alertmanager_poll_errors",
            "Times polling this Alertmanager started failing, or failed for a new reason: connect, timeout, status, too_large, not_json, schema, body, credentials, request",
            self.poll_errors.clone(),
        );
        registry.register_with_unit(
            "alertmanager_poll_duration",
            "Time of a poll of this Alertmanager's API that worked, request to answer decoded",
            Unit::Seconds,
            self.poll_duration.clone(),
        );
        registry.register(
            "alertmanager_alerts",
            "Alerts in this Alertmanager's last answer: active, not silenced, not inhibited, through the filter",
            self.alerts.clone(),
        );
        registry.register(
            "alertmanager_matching_alerts",
            "Of the alerts in this Alertmanager's last answer, those selecting a target of this agent",
            self.matching.clone(),
        );
    }
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
            alertmanager: AlertmanagerMetrics::default(),
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
        self.alertmanager.register(registry);
    }
}
