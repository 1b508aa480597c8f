//! A window's summary in the manifest (`windows[i].summary`, manifest.proto `WindowSummary`): the fields of gotrace's `docs/summary.md`, or why there is none.

use flightrec_proto::v1 as pb;
use gotrace::summary::Summary;
use serde::{Deserialize, Serialize};

use crate::ring::window::WindowSummary;

/// `{"summarised": true, "events": ..., "gc_cycles": ..., ...}` with every
/// field of `docs/summary.md` (durations in ns), or `{"summarised": false,
/// "reason": "old_go", "why": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SummaryEntry {
    pub summarised: bool,
    /// `off`, `old_go`, `rejected`, `behind`, `too_large`, `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Summary>,
}

impl SummaryEntry {
    pub fn of(s: &WindowSummary) -> SummaryEntry {
        let reason = match s {
            WindowSummary::Off => Some("off"),
            WindowSummary::Summarised(_) => None,
            WindowSummary::NotSummarised { reason, .. } => Some(*reason),
        };
        SummaryEntry {
            summarised: reason.is_none(),
            reason: reason.map(str::to_string),
            why: s.missing().map(str::to_string),
            fields: s.get().cloned(),
        }
    }

    pub fn to_proto(&self) -> pb::WindowSummary {
        let s = self.fields.clone().unwrap_or_default();
        pb::WindowSummary {
            summarised: self.summarised,
            reason: self.reason.clone().unwrap_or_default(),
            why: self.why.clone().unwrap_or_default(),
            events: s.events,
            first_ns: s.first_ns,
            last_ns: s.last_ns,
            gc_cycles: s.gc_cycles,
            stw_count: s.stw_count,
            stw_total_ns: s.stw_total_ns,
            stw_max_ns: s.stw_max_ns,
            stw_max_reason: s.stw_max_reason,
            gc_assist_ns: s.gc_assist_ns,
            goroutines_max: s.goroutines_max,
            runnable_max: s.runnable_max,
            sched_latency_samples: s.sched_latency_samples,
            sched_latency_p50_ns: s.sched_latency_p50_ns,
            sched_latency_p99_ns: s.sched_latency_p99_ns,
            sched_latency_max_ns: s.sched_latency_max_ns,
            syscall_ns: s.syscall_ns,
            heap_max_bytes: s.heap_max_bytes,
            heap_goal_max_bytes: s.heap_goal_max_bytes,
            gomaxprocs: s.gomaxprocs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_from_json_and_a_missing_one_says_why() {
        let trace = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/gotrace/testdata/go1.26-gc.trace"
        ))
        .expect("testdata");
        let s = gotrace::summary::summarize(&trace).expect("a whole trace");
        let entry = SummaryEntry::of(&WindowSummary::Summarised(Box::new(s.clone())));
        let json = serde_json::to_value(&entry).expect("json");
        assert_eq!(json["summarised"], true);
        assert_eq!(json["gc_cycles"], s.gc_cycles);
        assert_eq!(json["stw_max_ns"], s.stw_max_ns);
        assert!(json.get("reason").is_none(), "{json}");
        let back: SummaryEntry = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, entry);
        assert_eq!(entry.to_proto().gc_cycles, s.gc_cycles);

        let old = WindowSummary::NotSummarised {
            reason: "old_go",
            why: "not supported: v1 trace (Go 1.21 or older): the header says go 1.21".into(),
        };
        let json = serde_json::to_value(SummaryEntry::of(&old)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"summarised": false, "reason": "old_go",
                "why": "not supported: v1 trace (Go 1.21 or older): the header says go 1.21"})
        );
        let back: SummaryEntry = serde_json::from_value(json).expect("reads back");
        assert_eq!(back.fields, None);
        let off = SummaryEntry::of(&WindowSummary::Off);
        assert_eq!(off.reason.as_deref(), Some("off"));
        assert!(!off.to_proto().summarised);
    }
}
