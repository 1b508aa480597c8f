//! The metric families of window summaries: what each target's trace shows (GC, pauses, scheduling latency, goroutines, heap).
//!
//! Totals are counters (nothing is lost between scrapes); per-window peaks
//! are histograms with one observation per window (a 5 s window peak does
//! not vanish under a 15 s scrape); levels are gauges of the newest window.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::{TargetLabels, TargetReason};

fn pause_histogram() -> Histogram {
    // 10µs .. ~2.6s by 4: a healthy pause is tens of µs, a sick one
    // hundreds of ms.
    Histogram::new(exponential_buckets(0.00001, 4.0, 10))
}

type PerWindow = Family<TargetLabels, Histogram, fn() -> Histogram>;

/// The metric families of summaries.
#[derive(Clone)]
pub struct SummaryMetrics {
    pub gc_cycles: Family<TargetLabels, Counter>,
    pub stw_pauses: Family<TargetLabels, Counter>,
    pub stw_seconds: Family<TargetLabels, Counter<f64>>,
    pub gc_assist_seconds: Family<TargetLabels, Counter<f64>>,
    pub stw_max: PerWindow,
    pub sched_latency_p99: PerWindow,
    pub goroutines_max: Family<TargetLabels, Gauge>,
    pub runnable_max: Family<TargetLabels, Gauge>,
    pub heap_max: Family<TargetLabels, Gauge>,
    pub not_summarised: Family<TargetReason, Counter>,
}

impl Default for SummaryMetrics {
    fn default() -> Self {
        SummaryMetrics {
            gc_cycles: Family::default(),
            stw_pauses: Family::default(),
            stw_seconds: Family::default(),
            gc_assist_seconds: Family::default(),
            stw_max: Family::new_with_constructor(pause_histogram),
            sched_latency_p99: Family::new_with_constructor(pause_histogram),
            goroutines_max: Family::default(),
            runnable_max: Family::default(),
            heap_max: Family::default(),
            not_summarised: Family::default(),
        }
    }
}

impl SummaryMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "trace_gc_cycles",
            "GC cycles whose mark phase began in the target's summarised windows",
            self.gc_cycles.clone(),
        );
        registry.register(
            "trace_stw_pauses",
            "Stop-the-world pauses that began in the target's summarised windows",
            self.stw_pauses.clone(),
        );
        registry.register_with_unit(
            "trace_stw",
            "Time the target's world was stopped, over pauses that began and ended in a summarised window",
            Unit::Seconds,
            self.stw_seconds.clone(),
        );
        registry.register_with_unit(
            "trace_gc_assist",
            "Time the target's goroutines spent in GC mark assists (assists that ended in a summarised window)",
            Unit::Seconds,
            self.gc_assist_seconds.clone(),
        );
        registry.register_with_unit(
            "trace_stw_max",
            "Longest stop-the-world pause of each summarised window (one observation per window)",
            Unit::Seconds,
            self.stw_max.clone(),
        );
        registry.register_with_unit(
            "trace_sched_latency_p99",
            "99th percentile of scheduling latency (runnable to running) of each summarised window (one observation per window)",
            Unit::Seconds,
            self.sched_latency_p99.clone(),
        );
        registry.register(
            "trace_goroutines_max",
            "Most goroutines alive at once in the target's newest summarised window",
            self.goroutines_max.clone(),
        );
        registry.register(
            "trace_goroutines_runnable_max",
            "Most goroutines runnable (waiting for a P) at once in the target's newest summarised window",
            self.runnable_max.clone(),
        );
        registry.register_with_unit(
            "trace_heap_max",
            "Largest heap in use (/memory/classes/heap/objects:bytes) in the target's newest summarised window",
            Unit::Bytes,
            self.heap_max.clone(),
        );
        registry.register(
            "windows_not_summarised",
            "Windows kept without a summary, by reason: old_go (Go <= 1.21), rejected (the decoder refuses the trace), behind (decoding fell behind the stream), too_large (a generation over the memory bound), failed",
            self.not_summarised.clone(),
        );
    }

    /// Removes a target's series (it departed and its ring expired).
    pub fn forget(&self, labels: &TargetLabels) {
        self.gc_cycles.remove(labels);
        self.stw_pauses.remove(labels);
        self.stw_seconds.remove(labels);
        self.gc_assist_seconds.remove(labels);
        self.stw_max.remove(labels);
        self.sched_latency_p99.remove(labels);
        self.goroutines_max.remove(labels);
        self.runnable_max.remove(labels);
        self.heap_max.remove(labels);
    }
}
