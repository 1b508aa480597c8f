//! The trace trigger: fires on what the trace itself shows, as soon as a window whose summary meets `when` (`"stw_max > 10ms"`) is in its target's ring.
//!
//! It watches the ring's feed of new windows (the one snapshots record their
//! post-trigger part from), so the window that met the condition is in the
//! ring the gate freezes. A window without a summary (summaries off, Go <=
//! 1.21, rejected by the decoder) is not judged and breaks a run of
//! `consecutive` windows.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::events::{self};
use super::gate::Gate;
use crate::config::condition::Unit;
use crate::config::{TraceRule, TriggerConfig};
use crate::ring::window::Window;
use crate::ring::Rings;
use crate::snapshot::{Firing, TriggerKind};

/// How often to look for a target's ring that is not there yet (or any
/// more: it departed and expired, and may come back).
const RING_POLL: Duration = Duration::from_secs(1);

/// Watches the target's windows until `stop`.
pub async fn run(
    cfg: TriggerConfig,
    rule: TraceRule,
    rings: Arc<Rings>,
    gate: Arc<Gate>,
    stop: CancellationToken,
) {
    let metrics = gate.metrics().clone();
    info!(trigger = %cfg.name, target = %cfg.target, when = %rule.when, consecutive = rule.consecutive, "trace trigger watching the target's window summaries");
    let mut judge = Judge::new(rule);
    let mut quiet_until: Option<Instant> = None;
    loop {
        let Some(mut feed) = rings.watch(&cfg.target) else {
            tokio::select! {
                _ = tokio::time::sleep(RING_POLL) => continue,
                _ = stop.cancelled() => return,
            }
        };
        loop {
            let got = tokio::select! {
                got = feed.recv() => got,
                _ = stop.cancelled() => return,
            };
            let w = match got {
                Ok(w) => w,
                Err(RecvError::Lagged(n)) => {
                    events::trace_windows_missed(&metrics, &cfg.name, &cfg.target, n);
                    judge.streak = 0;
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            let Some((observed, held)) = judge.window(&w) else {
                continue;
            };
            events::observed(&metrics, &cfg.name, &cfg.target, judge.base_unit(observed));
            if !held || quiet_until.is_some_and(|q| Instant::now() < q) {
                continue;
            }
            let firing = Firing {
                kind: TriggerKind::Trace,
                reason: format!("trace: {}", judge.reason(&w, observed)),
                fired_at: SystemTime::now(),
                details: judge.details(&cfg, &w, observed),
                post_trigger: None,
            };
            match gate.fire_polled(&cfg, firing) {
                Some(q) => quiet_until = q,
                None => return,
            }
        }
    }
}

/// The condition over a run of windows; no I/O, so it is tested alone.
struct Judge {
    rule: TraceRule,
    /// Windows in a row that met the condition.
    streak: u32,
}

impl Judge {
    fn new(rule: TraceRule) -> Self {
        Judge { rule, streak: 0 }
    }

    /// Judges the next window: `None` when it has no summary, else the
    /// field's value and whether the trigger holds (the condition met by
    /// `consecutive` windows in a row, this one the last). Holding starts a
    /// new run.
    fn window(&mut self, w: &Window) -> Option<(f64, bool)> {
        let Some(s) = w.summary.get() else {
            self.streak = 0;
            return None;
        };
        let (value, met) = self.rule.when.judge(s);
        self.streak = if met { self.streak + 1 } else { 0 };
        let held = self.streak >= self.rule.consecutive;
        if held {
            self.streak = 0;
        }
        Some((value, held))
    }

    /// A value in its Prometheus base unit (seconds for durations), for
    /// `trigger_observed_value`.
    fn base_unit(&self, v: f64) -> f64 {
        match self.rule.when.field.unit {
            Unit::Nanos => v / 1e9,
            _ => v,
        }
    }

    fn reason(&self, w: &Window, observed: f64) -> String {
        let when = &self.rule.when;
        let pause = w
            .summary
            .get()
            .filter(|s| when.field.name.starts_with("stw") && !s.stw_max_reason.is_empty())
            .map(|s| format!("; longest pause: {}", s.stw_max_reason))
            .unwrap_or_default();
        let run = match self.rule.consecutive {
            1 => String::new(),
            n => format!(", {n} windows in a row"),
        };
        format!(
            "window {} has {} {} ({when}{run}){pause}",
            w.seq,
            when.field.short_name(),
            when.field.show(observed)
        )
    }

    /// What goes into the manifest: the condition, the window that met it
    /// (its `seq` is the manifest's `windows[i].seq`), the value seen, and
    /// the window's whole summary.
    fn details(&self, cfg: &TriggerConfig, w: &Window, observed: f64) -> Value {
        let when = &self.rule.when;
        let (start, end, _) = w.wall_span();
        json!({
            "trigger": cfg.name,
            "when": when.text,
            "field": when.field.name,
            "op": when.op.as_str(),
            "threshold": when.threshold,
            "unit": when.field.unit.as_str(),
            "observed": observed,
            "seen": when.field.show(observed),
            "consecutive": self.rule.consecutive,
            "window": {
                "seq": w.seq,
                "start": crate::units::rfc3339(start),
                "end": crate::units::rfc3339(end),
                "trace_start_ns": w.info.start_ns(),
                "trace_end_ns": w.info.end_ns(),
                "complete": w.is_complete(),
            },
            "summary": w.summary.get().and_then(|s| serde_json::to_value(s).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::condition::Condition;
    use crate::config::Compression;
    use crate::ring::window::WindowSummary;
    use gotrace::summary::Summary;

    fn window(seq: u64, summary: WindowSummary) -> Window {
        Window {
            target: "t".into(),
            seq,
            requested_at: SystemTime::UNIX_EPOCH,
            received_at: SystemTime::UNIX_EPOCH,
            info: gotrace::inspect(b"go 1.26 trace\0\0\0").expect("header"),
            truncation: None,
            trimmed_bytes: 0,
            raw_len: 16,
            tail: None,
            stored: Vec::new(),
            compression: Compression::None,
            summary,
        }
    }

    fn stw(seq: u64, ms: u64) -> Window {
        let s = Summary {
            stw_count: 1,
            stw_max_ns: ms * 1_000_000,
            stw_max_reason: "write heap dump".into(),
            ..Summary::default()
        };
        window(seq, WindowSummary::Summarised(Box::new(s)))
    }

    fn judge(when: &str, consecutive: u32) -> Judge {
        Judge::new(TraceRule {
            when: Condition::parse(when).expect("condition"),
            consecutive,
        })
    }

    #[test]
    fn a_window_that_meets_the_condition_holds_and_others_do_not() {
        let mut j = judge("stw_max > 10ms", 1);
        assert_eq!(j.window(&stw(1, 2)), Some((2e6, false)));
        assert_eq!(j.window(&stw(2, 213)), Some((213e6, true)));
        assert_eq!(j.window(&window(3, WindowSummary::Off)), None);
        let reason = j.reason(&stw(2, 213), 213e6);
        assert_eq!(
            reason,
            "window 2 has stw_max 213.0ms (stw_max > 10ms); longest pause: write heap dump"
        );
        assert_eq!(j.base_unit(213e6), 0.213);
    }

    #[test]
    fn consecutive_windows_must_meet_it_in_an_unbroken_run() {
        let mut j = judge("stw_max > 10ms", 2);
        assert_eq!(j.window(&stw(1, 20)), Some((20e6, false)));
        assert_eq!(j.window(&stw(2, 1)), Some((1e6, false)), "the run breaks");
        assert_eq!(j.window(&stw(3, 20)), Some((20e6, false)));
        let no_summary = WindowSummary::NotSummarised {
            reason: "behind",
            why: "x".into(),
        };
        assert_eq!(
            j.window(&window(4, no_summary)),
            None,
            "a window not judged breaks it too"
        );
        assert_eq!(j.window(&stw(5, 20)).map(|v| v.1), Some(false));
        assert_eq!(j.window(&stw(6, 20)).map(|v| v.1), Some(true));
        assert_eq!(
            j.window(&stw(7, 20)).map(|v| v.1),
            Some(false),
            "holding starts a new run"
        );
    }

    #[test]
    fn the_details_name_the_window_the_field_and_the_value() {
        let j = judge("stw_max > 10ms", 1);
        let cfg = TriggerConfig {
            name: "trace-t".into(),
            target: "t".into(),
            cooldown: Duration::from_secs(60),
            rule: crate::config::Rule::Trace(j.rule.clone()),
        };
        let d = j.details(&cfg, &stw(7, 213), 213e6);
        assert_eq!(d["window"]["seq"], 7);
        assert_eq!(d["field"], "stw_max_ns");
        assert_eq!(d["observed"], 213e6);
        assert_eq!(d["seen"], "213.0ms");
        assert_eq!(d["threshold"], 1e7);
        assert_eq!(d["summary"]["stw_max_reason"], "write heap dump");
    }
}
