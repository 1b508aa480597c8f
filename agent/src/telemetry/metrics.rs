//! The Prometheus registry and every metric family the agent exports at `/metrics`.

use super::process::Freshness;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetReason {
    pub target: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetResult {
    pub target: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindResult {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkResult {
    pub sink: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub reason: String,
    /// `delivered` or `undelivered` (damaged on disk for some sink).
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStatus {
    /// The route (`/v1/snapshots/{id}`), or `unmatched`.
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchReason {
    pub watch: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindReason {
    pub kind: String,
    pub reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn gap_histogram() -> Histogram {
    // 100µs .. ~6.5s: loopback gaps are sub-millisecond, a struggling target's
    // are seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 4.0, 9,
    ))
}

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.5, 12,
    ))
}

pub struct Metrics {
    registry: Registry,
    /// Windows kept in the ring, by result (complete | truncated).
    pub windows: Family<TargetResult, Counter>,
    /// Bytes of trace received (uncompressed, before any trimming).
    pub received_bytes: Family<TargetLabels, Counter>,
    /// Bytes held in memory for kept windows (after compression).
    pub stored_bytes: Family<TargetLabels, Counter>,
    /// Windows or attempts that failed, by reason.
    pub window_errors: Family<TargetReason, Counter>,
    pub ring_bytes: Family<TargetLabels, Gauge>,
    pub ring_windows: Family<TargetLabels, Gauge>,
    pub ring_coverage: Family<TargetLabels, FloatGauge>,
    pub ring_evictions: Family<TargetReason, Counter>,
    pub ring_global_bytes: Gauge,
    pub ring_global_budget: Gauge,
    /// Unix time of the last window kept.
    pub last_window: Family<TargetLabels, FloatGauge>,
    /// The window length now asked for (shortened after WriteTimeout answers).
    pub window_seconds: Family<TargetLabels, FloatGauge>,
    /// Gap between consecutive windows in the target's clock.
    pub window_gap: Family<TargetLabels, Histogram, fn() -> Histogram>,
    /// Snapshot bundles by trigger kind and result (written | failed).
    pub snapshots: Family<KindResult, Counter>,
    /// Time from trigger to bundle durable on disk, not counting post_trigger.
    pub snapshot_write: Histogram,
    /// report.html pages written into durable bundles, by result (written | failed).
    pub reports: Family<ResultLabels, Counter>,
    /// Derived files of durable bundles (bundle.trace), by result.
    pub bundle_stitch: Family<ResultLabels, Counter>,
    /// When each target last gave a good window.
    pub freshness: Arc<Freshness>,
    /// Kubernetes: targets found, watch failures, last good event; pod
    /// captures made for FlightSnapshots, and FlightSnapshots made from alerts.
    pub discovery_targets: Gauge,
    pub discovery_last_success: FloatGauge,
    pub kubernetes_watch_errors: Family<WatchReason, Counter>,
    pub flightsnapshot_captures: Family<ResultLabels, Counter>,
    pub alerts_routed: Family<ResultLabels, Counter>,
    /// Config reloads by result (applied | rejected).
    pub config_reloads: Family<ResultLabels, Counter>,
    /// Unix time of the last config load that was applied (startup included).
    pub config_last_reload_success: FloatGauge,
    /// Triggers and webhooks.
    pub triggers: super::triggers::TriggerMetrics,
    /// Deaths, cut streams and departed targets.
    pub lifecycle: super::lifecycle::LifecycleMetrics,
    /// What the targets' window summaries show.
    pub summaries: super::summaries::SummaryMetrics,
    /// Snapshots refused because the spool is full of undelivered bundles.
    pub snapshots_refused: Family<KindReason, Counter>,
    pub spool_bytes: Gauge,
    pub spool_bundles: Gauge,
    pub spool_max_bytes: Gauge,
    pub spool_max_bundles: Gauge,
    pub spool_evictions: Family<EvictionLabels, Counter>,
    /// Delivery attempts by outcome (delivered | failed).
    pub deliveries: Family<SinkResult, Counter>,
    pub delivered_bytes: Family<SinkLabels, Counter>,
    /// Failed attempts that will be retried.
    pub delivery_retries: Family<SinkLabels, Counter>,
    pub delivery_pending: Family<SinkLabels, Gauge>,
    pub delivery_retrying: Family<SinkLabels, Gauge>,
    pub delivery_failed_bundles: Family<SinkLabels, Gauge>,
    pub delivery_oldest_age: Family<SinkLabels, FloatGauge>,
    pub delivery_seconds: Family<SinkLabels, Histogram, fn() -> Histogram>,
    pub circuit_open: Family<SinkLabels, Gauge>,
    pub circuit_opened: Family<SinkLabels, Counter>,
    /// API requests answered 4xx/5xx, by route and status.
    pub api_errors: Family<EndpointStatus, Counter>,
    /// `/v1/*` requests being handled now (at most `api::MAX_API_REQUESTS`).
    pub api_in_flight: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("flightrec");
        let m = Metrics {
            windows: Family::default(),
            received_bytes: Family::default(),
            stored_bytes: Family::default(),
            window_errors: Family::default(),
            ring_bytes: Family::default(),
            ring_windows: Family::default(),
            ring_coverage: Family::default(),
            ring_evictions: Family::default(),
            ring_global_bytes: Gauge::default(),
            ring_global_budget: Gauge::default(),
            last_window: Family::default(),
            window_seconds: Family::default(),
            window_gap: Family::new_with_constructor(gap_histogram),
            snapshots: Family::default(),
            snapshot_write: latency_histogram(),
            reports: Family::default(),
            bundle_stitch: Family::default(),
            freshness: Arc::new(Freshness::default()),
            discovery_targets: Gauge::default(),
            discovery_last_success: FloatGauge::default(),
            kubernetes_watch_errors: Family::default(),
            flightsnapshot_captures: Family::default(),
            alerts_routed: Family::default(),
            config_reloads: Family::default(),
            config_last_reload_success: FloatGauge::default(),
            triggers: Default::default(),
            lifecycle: Default::default(),
            summaries: Default::default(),
            snapshots_refused: Family::default(),
            spool_bytes: Gauge::default(),
            spool_bundles: Gauge::default(),
            spool_max_bytes: Gauge::default(),
            spool_max_bundles: Gauge::default(),
            spool_evictions: Family::default(),
            deliveries: Family::default(),
            delivered_bytes: Family::default(),
            delivery_retries: Family::default(),
            delivery_pending: Family::default(),
            delivery_retrying: Family::default(),
            delivery_failed_bundles: Family::default(),
            delivery_oldest_age: Family::default(),
            delivery_seconds: Family::new_with_constructor(latency_histogram),
            circuit_open: Family::default(),
            circuit_opened: Family::default(),
            api_errors: Family::default(),
            api_in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "windows",
            "Trace windows kept in the ring, by result",
            m.windows.clone(),
        );
        registry.register_with_unit(
            "received",
            "Bytes of trace received from targets, uncompressed",
            Unit::Bytes,
            m.received_bytes.clone(),
        );
        registry.register_with_unit(
            "stored",
            "Bytes of kept windows as held in memory, after compression",
            Unit::Bytes,
            m.stored_bytes.clone(),
        );
        registry.register(
            "window_errors",
            "Window attempts that failed or were rejected, by reason",
            m.window_errors.clone(),
        );
        registry.register_with_unit(
            "ring",
            "Bytes held in the target's ring",
            Unit::Bytes,
            m.ring_bytes.clone(),
        );
        registry.register(
            "ring_windows",
            "Windows held in the target's ring",
            m.ring_windows.clone(),
        );
        registry.register(
            "ring_coverage_ratio",
            "Fraction of the ring's time span covered by its windows",
            m.ring_coverage.clone(),
        );
        registry.register(
            "ring_evictions",
            "Windows evicted from a ring, by the bound that evicted them",
            m.ring_evictions.clone(),
        );
        registry.register_with_unit(
            "ring_global",
            "Bytes held in all rings",
            Unit::Bytes,
            m.ring_global_bytes.clone(),
        );
        registry.register_with_unit(
            "ring_global_budget",
            "Byte budget shared by all rings (ring.max_bytes)",
            Unit::Bytes,
            m.ring_global_budget.clone(),
        );
        registry.register(
            "last_window_timestamp_seconds",
            "Unix time at which the last window was kept",
            m.last_window.clone(),
        );
        registry.register_with_unit(
            "window_length",
            "Window length now requested from the target",
            Unit::Seconds,
            m.window_seconds.clone(),
        );
        registry.register_with_unit(
            "window_gap",
            "Gap between consecutive windows, in the target's trace clock",
            Unit::Seconds,
            m.window_gap.clone(),
        );
        registry.register(
            "snapshots",
            "Snapshot bundles by trigger kind and result",
            m.snapshots.clone(),
        );
        registry.register_with_unit(
            "snapshot_write",
            "Time from the end of post-trigger recording to the bundle durable on disk",
            Unit::Seconds,
            m.snapshot_write.clone(),
        );
        registry.register(
            "reports",
            "report.html pages written into bundles once durable, by result (written | failed)",
            m.reports.clone(),
        );
        registry.register(
            "bundle_stitch",
            "Durable bundles whose windows were stitched into bundle.trace, by result: stitched (one trace), split (several pieces), none (no window of Go >= 1.22), failed (the manifest says why), undone (delivered without, see the log)",
            m.bundle_stitch.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "Version of the running agent", build);
        registry.register_collector(Box::new(super::process::ProcessCollector::new()));
        registry.register_collector(Box::new(m.freshness.clone()));
        registry.register(
            "discovery_targets",
            "Targets found by Kubernetes discovery",
            m.discovery_targets.clone(),
        );
        registry.register(
            "discovery_last_success_timestamp_seconds",
            "Unix time of the last list or event of this node's pods from the API server",
            m.discovery_last_success.clone(),
        );
        registry.register(
            "kubernetes_watch_errors",
            "Failed lists and watches of the API server by watch (pods, flightsnapshots) and reason (unauthorized, forbidden, not_found, unreachable, status)",
            m.kubernetes_watch_errors.clone(),
        );
        registry.register(
            "flightsnapshot_captures",
            "Pods of this node captured for a FlightSnapshot, by result (complete, failed, suppressed)",
            m.flightsnapshot_captures.clone(),
        );
        registry.register(
            "alerts_routed",
            "Alerts turned into FlightSnapshots so the node running the pod captures it, by result (created, exists, failed)",
            m.alerts_routed.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP) by result: applied, or rejected (the previous config keeps running)",
            m.config_reloads.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time the config in effect was loaded",
            m.config_last_reload_success.clone(),
        );
        m.triggers.register(&mut registry);
        m.lifecycle.register(&mut registry);
        m.summaries.register(&mut registry);
        registry.register(
            "snapshots_refused",
            "Snapshots refused because the spool quota is taken by undelivered bundles",
            m.snapshots_refused.clone(),
        );
        registry.register_with_unit(
            "spool",
            "Bytes of committed bundles in the spool",
            Unit::Bytes,
            m.spool_bytes.clone(),
        );
        registry.register(
            "spool_bundles",
            "Committed bundles in the spool",
            m.spool_bundles.clone(),
        );
        registry.register_with_unit(
            "spool_max",
            "Spool quota in bytes (snapshots.max_bytes)",
            Unit::Bytes,
            m.spool_max_bytes.clone(),
        );
        registry.register(
            "spool_max_bundles",
            "Spool quota in bundles (snapshots.max_bundles)",
            m.spool_max_bundles.clone(),
        );
        registry.register(
            "spool_evictions",
            "Bundles evicted from the spool to meet its quota",
            m.spool_evictions.clone(),
        );
        registry.register(
            "deliveries",
            "Attempts to deliver a bundle to a sink, by result",
            m.deliveries.clone(),
        );
        registry.register_with_unit(
            "delivered",
            "Bytes of bundles delivered to a sink",
            Unit::Bytes,
            m.delivered_bytes.clone(),
        );
        registry.register(
            "delivery_retries",
            "Failed delivery attempts that will be retried with backoff",
            m.delivery_retries.clone(),
        );
        registry.register(
            "delivery_pending_bundles",
            "Bundles not yet delivered to the sink",
            m.delivery_pending.clone(),
        );
        registry.register(
            "delivery_retrying_bundles",
            "Bundles whose delivery to the sink failed at least once and is being retried",
            m.delivery_retrying.clone(),
        );
        registry.register(
            "delivery_failed_bundles",
            "Bundles that can never be delivered to the sink (damaged on disk)",
            m.delivery_failed_bundles.clone(),
        );
        registry.register_with_unit(
            "delivery_oldest_pending_age",
            "Age of the oldest bundle not yet delivered to the sink (0 when none)",
            Unit::Seconds,
            m.delivery_oldest_age.clone(),
        );
        registry.register_with_unit(
            "delivery",
            "Time to deliver one bundle to the sink (successful attempts)",
            Unit::Seconds,
            m.delivery_seconds.clone(),
        );
        registry.register(
            "sink_circuit_open",
            "1 while the sink's circuit breaker is open (deliveries paused), else 0",
            m.circuit_open.clone(),
        );
        registry.register(
            "sink_circuit_opened",
            "Times the sink's circuit breaker opened",
            m.circuit_opened.clone(),
        );
        registry.register(
            "api_errors",
            "API requests answered with a 4xx or 5xx status, by route and status",
            m.api_errors.clone(),
        );
        registry.register(
            "api_requests_in_flight",
            "API requests being handled now; at the limit, more are answered 503",
            m.api_in_flight.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    pub fn api_errors(&self, endpoint: &str, status: u16) {
        self.api_errors
            .get_or_create(&EndpointStatus {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn target(&self, target: &str) -> TargetLabels {
        TargetLabels {
            target: target.to_string(),
        }
    }

    pub fn sink(&self, sink: &str) -> SinkLabels {
        SinkLabels {
            sink: sink.to_string(),
        }
    }

    pub fn target_reason(&self, target: &str, reason: &str) -> TargetReason {
        TargetReason {
            target: target.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The OpenMetrics exposition (what Prometheus asks for first).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format 0.0.4, for scrapers and tools that
    /// do not speak OpenMetrics (and people with curl).
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render_openmetrics())
    }
}

/// OpenMetrics names a counter family without `_total` in HELP/TYPE and adds
/// UNIT and EOF lines; the 0.0.4 text format names it as its samples are
/// named and knows neither line.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_by_their_samples_and_drops_openmetrics_lines() {
        let m = Metrics::new();
        m.windows
            .get_or_create(&TargetResult {
                target: "a".into(),
                result: "complete".into(),
            })
            .inc();
        m.received_bytes.get_or_create(&m.target("a")).inc_by(10);
        let om = m.render_openmetrics();
        assert!(om.contains("# TYPE flightrec_windows counter") && om.ends_with("# EOF\n"));
        let text = m.render_text();
        assert!(
            text.contains("# HELP flightrec_windows_total Trace windows"),
            "{text}"
        );
        assert!(text.contains("# TYPE flightrec_windows_total counter"));
        assert!(text.contains("# TYPE flightrec_received_bytes_total counter"));
        assert!(text.contains("flightrec_received_bytes_total{target=\"a\"} 10"));
        assert!(text.contains("# TYPE flightrec_ring_global_bytes gauge"));
        assert!(!text.contains("# UNIT") && !text.contains("# EOF"));
    }
}
