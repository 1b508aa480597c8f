//! Recording events: each one logs AND counts, so logs and metrics never disagree.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::crash::{Crash, Cut};
use crate::ring::window::{Truncation, Window, WindowSummary};
use crate::ring::Eviction;
use crate::telemetry::{Metrics, TargetThen, TargetVerdict};
use crate::units::{Bytes, Secs};

/// Why a window attempt produced nothing usable. One metric label each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("trace slot is held by another client (HTTP 500 {body:?}); backing off")]
    SlotBusy { body: String },
    #[error(
        "target rejects {window} windows: its http.Server WriteTimeout is shorter (Go <= 1.22: {body:?})"
    )]
    WriteTimeout { window: String, body: String },
    #[error("HTTP {status} from the trace endpoint: {body:?}")]
    HttpStatus { status: u16, body: String },
    #[error("{0}")]
    NotATrace(String),
    #[error("corrupt trace: {0}")]
    Corrupt(String),
    #[error("stream ended before one whole trace generation ({0}); nothing to keep")]
    TruncatedEmpty(String),
    #[error("processing is behind; window dropped so the target is never read slowly")]
    Backlog,
}

impl WindowError {
    pub fn reason(&self) -> &'static str {
        match self {
            WindowError::Connect(_) => "connect",
            WindowError::Request(_) => "request",
            WindowError::SlotBusy { .. } => "slot_busy",
            WindowError::WriteTimeout { .. } => "write_timeout",
            WindowError::HttpStatus { .. } => "http_status",
            WindowError::NotATrace(_) => "not_a_trace",
            WindowError::Corrupt(_) => "corrupt",
            WindowError::TruncatedEmpty(_) => "truncated_empty",
            WindowError::Backlog => "backlog",
        }
    }
}

pub fn window_error(m: &Metrics, target: &str, err: &WindowError) {
    m.window_errors
        .get_or_create(&m.target_reason(target, err.reason()))
        .inc();
    match err {
        // Expected while a target restarts; the backoff line says the rest.
        WindowError::Connect(_) => info!(%target, reason = err.reason(), "{err}"),
        _ => warn!(%target, reason = err.reason(), "{err}"),
    }
}

pub fn window_kept(m: &Metrics, w: &Window, received: u64) {
    let labels = m.target(&w.target);
    let result = if w.is_complete() { "complete" } else { "truncated" };
    m.windows
        .get_or_create(&crate::telemetry::TargetResult {
            target: w.target.to_string(),
            result: result.into(),
        })
        .inc();
    m.received_bytes.get_or_create(&labels).inc_by(received);
    m.stored_bytes.get_or_create(&labels).inc_by(w.stored_len());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    m.last_window.get_or_create(&labels).set(now);
    m.freshness.window_kept(&w.target);
    match &w.truncation {
        None => debug!(

            target = %w.target, seq = w.seq, bytes = w.raw_len, stored = w.stored_len(),
            go = %w.info.version, span = %Secs(w.duration()),
            "window kept"
        ),
        Some(t) => warn!(

            target = %w.target, seq = w.seq, reason = t.label(),
            kept = %Bytes(w.raw_len), trimmed = %Bytes(w.trimmed_bytes),
            tail = w.tail.map_or(0, |t| t.bytes),
            "stream cut short ({}); kept the {} whole generations received, marked incomplete{}",
            describe_truncation(t), w.info.generations,
            if w.tail.is_some() { ", and the bytes after them as the window's tail" } else { "" }
        ),
    }
}

/// A kept window's summary: added to the target's trace metrics, or, when
/// there is none, counted with its reason. The reason is logged when it
/// changes (`last` is the previous window's), so a target on Go 1.21 says
/// so once, not every window.
pub(super) fn window_summary(m: &Metrics, w: &Window, last: &mut Option<&'static str>) {
    let labels = m.target(&w.target);
    let sm = &m.summaries;
    match &w.summary {
        WindowSummary::Summarised(s) => {
            let secs = |ns: u64| ns as f64 / 1e9;
            sm.gc_cycles.get_or_create(&labels).inc_by(s.gc_cycles);
            sm.stw_pauses.get_or_create(&labels).inc_by(s.stw_count);
            sm.stw_seconds.get_or_create(&labels).inc_by(secs(s.stw_total_ns));
            sm.gc_assist_seconds
                .get_or_create(&labels)
                .inc_by(secs(s.gc_assist_ns));
            sm.stw_max.get_or_create(&labels).observe(secs(s.stw_max_ns));
            if s.sched_latency_samples > 0 {
                sm.sched_latency_p99
                    .get_or_create(&labels)
                    .observe(secs(s.sched_latency_p99_ns));
            }
            let level = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            sm.goroutines_max
                .get_or_create(&labels)
                .set(level(s.goroutines_max));
            sm.runnable_max.get_or_create(&labels).set(level(s.runnable_max));
            sm.heap_max.get_or_create(&labels).set(level(s.heap_max_bytes));
            if last.take().is_some() {
                info!(target = %w.target, seq = w.seq, "windows are summarised again");
            }
            debug!(
                target = %w.target, seq = w.seq, gc = s.gc_cycles, stw_max = %Secs(Duration::from_nanos(s.stw_max_ns)),
                sched_p99 = %Secs(Duration::from_nanos(s.sched_latency_p99_ns)), runnable_max = s.runnable_max,
                goroutines_max = s.goroutines_max, heap = %Bytes(s.heap_max_bytes), "window summarised"
            );
        }
        WindowSummary::NotSummarised { reason, why } => {
            sm.not_summarised
                .get_or_create(&m.target_reason(&w.target, reason))
                .inc();
            if last.replace(reason) == Some(reason) {
                debug!(target = %w.target, seq = w.seq, reason, "window not summarised: {why}");
            } else {
                info!(target = %w.target, seq = w.seq, reason, "window kept but not summarised: {why} (said again only when the reason changes)");
            }
        }
        WindowSummary::Off => {}
    }
}

fn describe_truncation(t: &Truncation) -> String {
    match t {
        Truncation::Disconnected(e) => format!("connection lost: {e}"),
        Truncation::ReadTimeout => "target went silent past read_timeout".into(),
        Truncation::ByteCap => "window reached max_window_bytes".into(),
        Truncation::Overrun => {
            "target was still streaming read_timeout after the window should have ended".into()
        }
        Truncation::Shutdown => "agent shutting down".into(),
    }
}

pub fn window_gap(m: &Metrics, target: &str, gap: Duration) {
    m.window_gap
        .get_or_create(&m.target(target))
        .observe(gap.as_secs_f64());
}

pub fn evicted(m: &Metrics, evictions: &[(std::sync::Arc<Window>, Eviction)]) {
    for (w, why) in evictions {
        m.ring_evictions
            .get_or_create(&m.target_reason(&w.target, why.label()))
            .inc();
        debug!(target = %w.target, seq = w.seq, reason = why.label(), "window evicted");
    }
}

pub fn window_shortened(m: &Metrics, target: &str, from: Duration, to: Duration) {
    m.window_seconds
        .get_or_create(&m.target(target))
        .set(to.as_secs_f64());
    warn!(

        %target, from = %Secs(from), to = %Secs(to),
        "target's WriteTimeout is shorter than the window (Go <= 1.22 refuses longer traces); window shortened from {} to {}. Raise the service's http.Server WriteTimeout or set a shorter `window` to silence this",
        Secs(from), Secs(to)
    );
}

pub fn backing_off(target: &str, delay: Duration, attempt: u32) {
    debug!(%target, delay = %Secs(delay), attempt, "backing off");
}

pub fn target_recovered(target: &str, failures: u32) {
    info!(%target, failures, "target is answering traces again");
}

pub(super) fn crash_seen(m: &Metrics, c: &Crash) {
    m.lifecycle
        .crashes
        .get_or_create(&TargetThen {
            target: c.target.to_string(),
            then: c.then.label().into(),
        })
        .inc();
    cut_judged(m, &c.target, "crash");
    warn!(
        target = %c.target, then = c.then.label(), cut = %c.cut, last_seq = c.last_seq,
        "target died: {}", c.seen()
    );
}

pub(super) fn cut_survived(m: &Metrics, target: &str, cut: &Cut, last_gen: u64, first_gen: u64) {
    cut_judged(m, target, "survived");
    info!(
        %target, cut = %cut.why, "stream was cut {} into its window, but the same process answered next (trace generation {first_gen} after {last_gen}): the connection broke, the target lived",
        Secs(cut.into_window)
    );
}

pub(super) fn cut_unjudged(m: &Metrics, target: &str, cut: &Cut, why: &str) {
    cut_judged(m, target, "unjudged");
    info!(%target, cut = %cut.why, "cannot tell whether the stream cut {} into its window was a death: {why}", Secs(cut.into_window));
}

/// The crash trigger's queue was full: the death is logged, not snapshotted.
pub(super) fn crash_unreported(m: &Metrics, c: &Crash) {
    cut_judged(m, &c.target, "unreported");
    warn!(target = %c.target, "the crash trigger's queue is full; this death is not snapshotted: {}", c.seen());
}

fn cut_judged(m: &Metrics, target: &str, verdict: &str) {
    m.lifecycle
        .cuts
        .get_or_create(&TargetVerdict {
            target: target.into(),
            verdict: verdict.into(),
        })
        .inc();
}

pub(super) fn target_departed(m: &Metrics, target: &str, keep_for: Duration) {
    m.lifecycle.departed.get_or_create(&m.target(target)).set(1);
    m.freshness.forget(target);
    info!(%target, keep_for = %Secs(keep_for), "target removed: recording stopped; its ring is kept for {} (max_age) and can still be snapshotted", Secs(keep_for));
}

pub(super) fn target_returned(m: &Metrics, target: &str) {
    m.lifecycle.departed.remove(&m.target(target));
    info!(%target, "departed target is back: recording into its ring again");
}

/// A departed target's `max_age` is over: it and its series go.
pub(super) fn departed_expired(m: &Metrics, target: &str) {
    let labels = m.target(target);
    m.lifecycle.departed.remove(&labels);
    m.ring_bytes.remove(&labels);
    m.ring_windows.remove(&labels);
    m.ring_coverage.remove(&labels);
    m.summaries.forget(&labels);
    info!(%target, "departed target expired: its ring is freed");
}
