//! What the report shows, drawn from a manifest: every window on one time axis (seconds from the trigger), the worst moments, and whether the trigger's neighbourhood differs from the rest.

use std::time::SystemTime;

use gotrace::summary::Summary;
use serde::Serialize;

use crate::bundle::{Manifest, WindowEntry};
use crate::units::{Bytes, Nanos};

/// How far before the trigger a window counts as "near" it: long enough to
/// hold the window that tripped it and the one before at usual window
/// lengths, short enough that most of a one-minute ring is "the rest".
pub const NEAR_SECONDS: f64 = 10.0;

/// A metric near the trigger is called different when it is at least this
/// many times its median over the other windows (and the difference is
/// above the metric's floor).
pub const DIFFERENT_RATIO: f64 = 2.0;

/// Everything the page draws, serialised into it for its script.
#[derive(Debug, Serialize)]
pub struct Model<'a> {
    /// Seconds from the trigger of the left and right edges of the axis.
    pub range: (f64, f64),
    /// The trigger moment as written in the manifest (the axis' zero).
    pub fired_at: &'a str,
    pub kind: &'a str,
    /// The window to open first (`Manifest::trigger_window`), 1-based.
    pub trigger_window: Option<usize>,
    /// Seconds after the trigger that were recorded on purpose.
    pub post_trigger: Option<(f64, f64)>,
    pub windows: Vec<Win<'a>>,
    pub gaps: Vec<Gap>,
    pub ending: Option<EndingView<'a>>,
}

/// One window on the axis.
#[derive(Debug, Serialize)]
pub struct Win<'a> {
    /// 1-based position in the bundle, as `inspect` numbers them.
    pub n: usize,
    pub file: &'a str,
    pub seq: u64,
    /// Seconds from the trigger; `None` when the manifest's time is unreadable.
    pub x0: Option<f64>,
    pub x1: Option<f64>,
    pub start: &'a str,
    pub end: &'a str,
    pub go: &'a str,
    pub complete: bool,
    pub truncation: Option<&'a str>,
    pub bytes: u64,
    pub summary: Option<&'a Summary>,
    /// `not summarised: <reason>` (and why), when there is no summary.
    pub missing: Option<String>,
    /// The window whose summary met a trace trigger's condition.
    pub met: bool,
    /// Counted as near the trigger by the verdict.
    pub near: bool,
}

/// Time between two windows that no trace covers.
#[derive(Debug, Serialize)]
pub struct Gap {
    pub x0: f64,
    pub x1: f64,
    /// The gap in the target's trace clock when the manifest has it.
    pub seconds: f64,
    /// The window after the gap.
    pub before: usize,
}

#[derive(Debug, Serialize)]
pub struct EndingView<'a> {
    pub how: &'a str,
    pub seen: &'a str,
    pub at: &'a str,
    /// The death, in seconds from the trigger.
    pub x: Option<f64>,
    /// From the last event Go's parser reads to the death.
    pub blind: Option<(f64, f64)>,
    /// The same counting the tails' events.
    pub tail_blind: Option<(f64, f64)>,
}

/// One row of the worst moments table.
#[derive(Debug, Clone, PartialEq)]
pub struct Worst {
    pub what: &'static str,
    pub value: String,
    /// 1-based window number.
    pub window: usize,
}

/// One metric compared near the trigger and elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    pub what: &'static str,
    pub near: String,
    pub typical: String,
    /// near / typical, when typical is not zero.
    pub ratio: Option<f64>,
    pub different: bool,
}

/// Whether the trigger's neighbourhood looks different from the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub headline: String,
    pub rows: Vec<Compared>,
}

pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

/// `b - a` in seconds, negative when `b` is earlier.
fn seconds(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The summary's fields when the window was summarised.
pub fn fields(w: &WindowEntry) -> Option<&Summary> {
    w.summary
        .as_ref()
        .filter(|s| s.summarised)
        .and_then(|s| s.fields.as_ref())
}

/// `not summarised: old_go (why)`, or `not summarised: no summary in the
/// manifest` for bundles written before summaries existed.
pub fn missing(w: &WindowEntry) -> Option<String> {
    if fields(w).is_some() {
        return None;
    }
    Some(match &w.summary {
        None => "not summarised: no summary in the manifest (written before summaries, or by an older agent)"
            .to_string(),
        Some(s) => {
            let reason = s.reason.as_deref().unwrap_or("unknown");
            match s.why.as_deref() {
                Some(why) if !why.is_empty() => format!("not summarised: {reason} ({why})"),
                _ => format!("not summarised: {reason}"),
            }
        }
    })
}

impl<'a> Model<'a> {
    pub fn of(m: &'a Manifest) -> Model<'a> {
        let t0 = parse_time(&m.trigger.fired_at)
            .or_else(|| m.windows.iter().find_map(|w| parse_time(&w.start)))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let at = |s: &str| parse_time(s).map(|t| seconds(t0, t));
        let met = m.trace_trigger_window().map(|w| w.seq);
        let mut windows: Vec<Win<'a>> = m
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| Win {
                n: i + 1,
                file: &w.file,
                seq: w.seq,
                x0: at(&w.start),
                x1: at(&w.end),
                start: &w.start,
                end: &w.end,
                go: &w.go_version,
                complete: w.complete,
                truncation: w.truncation.as_deref(),
                bytes: w.bytes,
                summary: fields(w),
                missing: missing(w),
                met: met == Some(w.seq),
                near: false,
            })
            .collect();
        mark_near(m, &mut windows);
        let mut gaps = Vec::new();
        for pair in windows.windows(2) {
            if let (Some(end), Some(start)) = (pair[0].x1, pair[1].x0) {
                let trace_gap = m.windows[pair[1].n - 1].gap_before_seconds;
                let seconds = trace_gap.unwrap_or(start - end).max(0.0);
                if start > end || seconds > 0.0 {
                    gaps.push(Gap {
                        x0: end,
                        x1: start.max(end),
                        seconds,
                        before: pair[1].n,
                    });
                }
            }
        }
        let ending = m.ending.as_ref().map(|e| {
            let x = at(&e.at);
            let span = |s: Option<f64>| match (x, s) {
                (Some(x), Some(s)) if s >= 0.0 => Some((x - s, x)),
                _ => None,
            };
            EndingView {
                how: &e.how,
                seen: &e.seen,
                at: &e.at,
                x,
                blind: span(e.blind_spot_seconds),
                tail_blind: span(e.tail_blind_spot_seconds),
            }
        });
        let post_trigger =
            (m.ending.is_none() && m.post_trigger_seconds > 0.0).then_some((0.0, m.post_trigger_seconds));
        let mut xs: Vec<f64> = windows.iter().flat_map(|w| [w.x0, w.x1]).flatten().collect();
        xs.push(0.0);
        if let Some(e) = &ending {
            xs.extend(e.x);
            xs.extend(e.blind.map(|b| b.0));
        }
        if let Some((_, p)) = post_trigger {
            xs.push(p);
        }
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.01).max(0.05);
        let trigger_window = m
            .trigger_window()
            .and_then(|t| m.windows.iter().position(|w| std::ptr::eq(w, t)))
            .map(|i| i + 1);
        Model {
            range: (lo - pad, hi + pad),
            fired_at: &m.trigger.fired_at,
            kind: &m.trigger.kind,
            trigger_window,
            post_trigger,
            windows,
            gaps,
            ending,
        }
    }

    /// The rows of the worst moments table: the window to open first, then
    /// for each measure the window where it was worst (measures no window
    /// shows are left out).
    pub fn worst(&self) -> Vec<Worst> {
        let mut out = Vec::new();
        if let Some(n) = self.trigger_window {
            let met = self.windows.get(n - 1).is_some_and(|w| w.met);
            out.push(Worst {
                what: if met {
                    "Met the trace trigger's condition"
                } else {
                    "Holds the trigger"
                },
                value: format!(
                    "{} trigger, fired {} UTC",
                    self.kind,
                    self.fired_at.get(11..23).unwrap_or(self.fired_at)
                ),
                window: n,
            });
        }
        let mut pick = |what: &'static str, key: fn(&Summary) -> u64, show: fn(&Summary) -> String| {
            let best = self
                .windows
                .iter()
                .filter_map(|w| w.summary.map(|s| (w, s)))
                .filter(|(_, s)| key(s) > 0)
                // The first of equals: the earliest window where it happened.
                .fold(None::<(&Win, &Summary)>, |acc, (w, s)| match acc {
                    Some((_, a)) if key(a) >= key(s) => acc,
                    _ => Some((w, s)),
                });
            if let Some((w, s)) = best {
                out.push(Worst {
                    what,
                    value: show(s),
                    window: w.n,
                });
            }
        };
        pick(
            "Longest stop-the-world pause",
            |s| s.stw_max_ns,
            |s| format!("{} ({})", Nanos(s.stw_max_ns), s.stw_max_reason),
        );
        pick(
            "Most stop-the-world time",
            |s| s.stw_total_ns,
            |s| format!("{} in {} pauses", Nanos(s.stw_total_ns), s.stw_count),
        );
        pick(
            "Worst scheduling latency p99",
            |s| s.sched_latency_p99_ns,
            |s| {
                format!(
                    "p99 {} (p50 {}, {} samples)",
                    Nanos(s.sched_latency_p99_ns),
                    Nanos(s.sched_latency_p50_ns),
                    s.sched_latency_samples
                )
            },
        );
        pick(
            "Longest wait to run",
            |s| s.sched_latency_max_ns,
            |s| format!("{} runnable before running", Nanos(s.sched_latency_max_ns)),
        );
        pick(
            "Most runnable goroutines",
            |s| s.runnable_max,
            |s| format!("{} at once (GOMAXPROCS {})", s.runnable_max, s.gomaxprocs),
        );
        pick(
            "Most goroutines",
            |s| s.goroutines_max,
            |s| s.goroutines_max.to_string(),
        );
        pick(
            "Most GC cycles",
            |s| s.gc_cycles,
            |s| {
                format!(
                    "{} cycles, {} in mark assists",
                    s.gc_cycles,
                    Nanos(s.gc_assist_ns)
                )
            },
        );
        pick(
            "Largest heap",
            |s| s.heap_max_bytes,
            |s| {
                format!(
                    "{} (goal up to {})",
                    Bytes(s.heap_max_bytes),
                    Bytes(s.heap_goal_max_bytes)
                )
            },
        );
        if let Some(g) = self
            .gaps
            .iter()
            .filter(|g| g.seconds > 0.0)
            .fold(None::<&Gap>, |acc, g| match acc {
                Some(a) if a.seconds >= g.seconds => acc,
                _ => Some(g),
            })
        {
            out.push(Worst {
                what: "Longest time without trace",
                value: format!(
                    "{} between windows {} and {}",
                    secs(g.seconds),
                    g.before - 1,
                    g.before
                ),
                window: g.before,
            });
        }
        out
    }

    /// Compares the windows near the trigger with the others, metric by metric.
    pub fn verdict(&self) -> Verdict {
        let summarised: Vec<(&Win, &Summary)> = self
            .windows
            .iter()
            .filter_map(|w| w.summary.map(|s| (w, s)))
            .collect();
        if summarised.is_empty() {
            return Verdict {
                headline: "No window of this bundle has a summary, so there is nothing to compare: see each window's reason below, and open the traces.".into(),
                rows: Vec::new(),
            };
        }
        let near: Vec<&Summary> = summarised
            .iter()
            .filter(|(w, _)| w.near)
            .map(|(_, s)| *s)
            .collect();
        let rest: Vec<&Summary> = summarised
            .iter()
            .filter(|(w, _)| !w.near)
            .map(|(_, s)| *s)
            .collect();
        if near.is_empty() {
            return Verdict {
                headline: "No summarised window is near the trigger, so there is nothing to compare.".into(),
                rows: Vec::new(),
            };
        }
        if rest.is_empty() {
            return Verdict {
                headline: format!(
                    "Every summarised window is within {NEAR_SECONDS:.0} s of the trigger: nothing to compare it with."
                ),
                rows: Vec::new(),
            };
        }
        type Metric = (&'static str, fn(&Summary) -> u64, fn(u64) -> String, u64);
        let metrics: [Metric; 8] = [
            (
                "scheduling latency p99",
                |s| s.sched_latency_p99_ns,
                |v| Nanos(v).to_string(),
                100_000,
            ),
            (
                "longest wait to run",
                |s| s.sched_latency_max_ns,
                |v| Nanos(v).to_string(),
                1_000_000,
            ),
            (
                "longest stop-the-world pause",
                |s| s.stw_max_ns,
                |v| Nanos(v).to_string(),
                100_000,
            ),
            (
                "stop-the-world time",
                |s| s.stw_total_ns,
                |v| Nanos(v).to_string(),
                1_000_000,
            ),
            ("runnable goroutines", |s| s.runnable_max, |v| v.to_string(), 10),
            ("goroutines", |s| s.goroutines_max, |v| v.to_string(), 50),
            ("GC cycles", |s| s.gc_cycles, |v| v.to_string(), 2),
            ("heap", |s| s.heap_max_bytes, |v| Bytes(v).to_string(), 1 << 20),
        ];
        let rows: Vec<Compared> = metrics
            .iter()
            .map(|(what, key, show, floor)| {
                let near_v = near.iter().map(|s| key(s)).max().unwrap_or(0);
                let typical = median(rest.iter().map(|s| key(s)).collect());
                let ratio = (typical > 0).then(|| near_v as f64 / typical as f64);
                let different =
                    near_v.saturating_sub(typical) >= *floor && ratio.is_none_or(|r| r >= DIFFERENT_RATIO);
                Compared {
                    what,
                    near: show(near_v),
                    typical: show(typical),
                    ratio,
                    different,
                }
            })
            .collect();
        let differ: Vec<String> = rows
            .iter()
            .filter(|r| r.different)
            .map(|r| match r.ratio {
                Some(x) => format!("{} {:.1}×", r.what, x),
                None => format!("{} {} (none elsewhere)", r.what, r.near),
            })
            .collect();
        let n_near = near.len();
        let headline = if differ.is_empty() {
            format!(
                "Near the trigger ({n_near} window{} in the {NEAR_SECONDS:.0} s before it) looks like the rest of the bundle: no measure is {DIFFERENT_RATIO:.0}× its usual value.",
                plural(n_near)
            )
        } else {
            format!(
                "Near the trigger ({n_near} window{} in the {NEAR_SECONDS:.0} s before it) differs from the rest: {}.",
                plural(n_near),
                differ.join(", ")
            )
        };
        Verdict { headline, rows }
    }
}

/// Near the trigger: windows overlapping the `NEAR_SECONDS` before it, the
/// window that met a trace trigger's condition, and at least the window
/// `Manifest::trigger_window` names.
fn mark_near(m: &Manifest, windows: &mut [Win<'_>]) {
    for w in windows.iter_mut() {
        w.near = w.met || matches!((w.x0, w.x1), (Some(a), Some(b)) if b > -NEAR_SECONDS && a < 0.0);
    }
    if !windows.iter().any(|w| w.near) {
        if let Some(t) = m.trigger_window() {
            if let Some(w) = windows.iter_mut().find(|w| w.seq == t.seq && w.file == t.file) {
                w.near = true;
            }
        }
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Seconds, short: `350ms`, `1.25s`.
pub fn secs(s: f64) -> String {
    Nanos((s.max(0.0) * 1e9) as u64).to_string()
}

/// Where a moment sits relative to the trigger: `12.3 s before the trigger`.
pub fn relative(x: Option<f64>) -> String {
    match x {
        None => "at an unreadable time".to_string(),
        Some(x) if x.abs() < 0.0005 => "at the trigger".to_string(),
        Some(x) if x < 0.0 => format!("{:.1} s before the trigger", -x),
        Some(x) => format!("{x:.1} s after the trigger"),
    }
}
