//! The metric families of a target's life: deaths seen, cut streams judged, departures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::TargetLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetThen {
    pub target: String,
    /// What followed the cut: `refused` or `new_process`.
    pub then: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetVerdict {
    pub target: String,
    pub verdict: String,
}

/// The metric families of deaths and departures.
#[derive(Clone, Default)]
pub struct LifecycleMetrics {
    pub crashes: Family<TargetThen, Counter>,
    pub cuts: Family<TargetVerdict, Counter>,
    pub departed: Family<TargetLabels, Gauge>,
}

impl LifecycleMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "crashes",
            "Target deaths seen: a trace stream cut mid-window, then the target refused connections (then=refused) or answered as a new process (then=new_process)",
            self.crashes.clone(),
        );
        registry.register(
            "stream_cuts",
            "Trace streams cut mid-window (connection lost), by verdict: crash, survived (the same process answered next), unjudged (too late to tell, or a trace without generation numbers), unreported (the crash trigger's queue was full)",
            self.cuts.clone(),
        );
        registry.register(
            "target_departed",
            "1 while a target that left the config or discovery keeps its ring (for its max_age); it can still be snapshotted",
            self.departed.clone(),
        );
    }
}
