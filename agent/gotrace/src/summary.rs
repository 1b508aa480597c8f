//! Window summaries: a few numbers per trace, computed from the decoder's
//! events as they stream by, with exactly the definitions of
//! `docs/summary.md` (which the Go oracle `tests/go/cmd/tracesummary`
//! computes from Go's parser).
//!
//! Memory is bounded by the goroutines alive at once, not by the trace: the
//! scheduling latencies are counted per microsecond, which is all the
//! percentiles of the definition need.

use rustc_hash::FxHashMap;

use crate::event::{metric, Event, RangeName};
use crate::resources::{GoId, GoState, ResourceId};
use crate::spec::EventKind;
use crate::{DecodeError, Decoder};

/// What one window (one trace) looked like. The field names are those of
/// `docs/summary.md`; every duration is nanoseconds of the trace's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Summary {
    /// Events the parser yields, of every kind.
    pub events: u64,
    /// `Time()` of the first and last event.
    pub first_ns: i64,
    pub last_ns: i64,
    /// GC mark phases that began in the window.
    pub gc_cycles: u64,
    /// Stop-the-world pauses that began in the window.
    pub stw_count: u64,
    /// Total and longest stop-the-world pause that began and ended in it.
    pub stw_total_ns: u64,
    pub stw_max_ns: u64,
    /// Why the longest pause stopped the world (e.g. "GC mark termination").
    pub stw_max_reason: String,
    /// Time goroutines spent in GC mark assists that ended in the window.
    pub gc_assist_ns: u64,
    /// Most goroutines alive, and runnable, at once.
    pub goroutines_max: u64,
    pub runnable_max: u64,
    /// Scheduling latency: runnable until running.
    pub sched_latency_samples: u64,
    /// Percentiles rounded down to the microsecond; the max is exact.
    pub sched_latency_p50_ns: u64,
    pub sched_latency_p99_ns: u64,
    pub sched_latency_max_ns: u64,
    /// Time goroutines spent in system calls that ended in the window.
    pub syscall_ns: u64,
    /// Largest heap in use, and heap goal, that the window reports.
    pub heap_max_bytes: u64,
    pub heap_goal_max_bytes: u64,
    /// Largest GOMAXPROCS.
    pub gomaxprocs: u64,
}

/// Per goroutine: its last state and the starts of what is pending, in 32
/// bytes (the map holds one per live goroutine and is hit by most events).
#[derive(Debug, Clone, Copy)]
struct Goroutine {
    since: [i64; 3],
    /// Which of `since` are set.
    pending: u8,
    state: GoState,
}

const RUNNABLE: usize = 0;
const SYSCALL: usize = 1;
const ASSIST: usize = 2;

impl Goroutine {
    const UNSEEN: Goroutine = Goroutine {
        since: [0; 3],
        pending: 0,
        state: GoState::NotExist,
    };

    fn start(&mut self, what: usize, t: i64) {
        self.since[what] = t;
        self.pending |= 1 << what;
    }

    fn take(&mut self, what: usize) -> Option<i64> {
        let bit = 1 << what;
        let set = self.pending & bit != 0;
        self.pending &= !bit;
        set.then_some(self.since[what])
    }

    fn is_pending(&self, what: usize) -> bool {
        self.pending & (1 << what) != 0
    }

    /// Nothing left to remember: dropped from the map.
    fn forgettable(&self) -> bool {
        self.pending == 0 && !alive(self.state)
    }
}

/// The states in which a goroutine is alive, as a set of state numbers.
const ALIVE: u8 = 1 << GoState::Runnable as u8
    | 1 << GoState::Running as u8
    | 1 << GoState::Syscall as u8
    | 1 << GoState::Waiting as u8;

#[inline]
fn alive(s: GoState) -> bool {
    ALIVE & (1 << s as u8) != 0
}

/// Builds a [`Summary`] from the events of one trace, in the order the
/// decoder yields them.
#[derive(Debug, Default)]
pub struct Summarizer {
    s: Summary,
    stw_begin: Option<i64>,
    stw_reason: Vec<u8>,
    stw_max_reason: Vec<u8>,
    goroutines: FxHashMap<i64, Goroutine>,
    alive: u64,
    runnable: u64,
    latency: Histogram,
}

impl Summarizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next event of the trace.
    #[inline]
    pub fn add(&mut self, ev: &Event<'_>) {
        let t = ev.time();
        if self.s.events == 0 {
            self.s.first_ns = t;
        }
        self.s.last_ns = t;
        self.s.events += 1;
        // Goroutine transitions are most events; ranges and metrics are few.
        if let Some((g, from, to)) = ev.goroutine_transition() {
            self.transition(g, from, to, t);
            return;
        }
        match ev.kind() {
            EventKind::RangeBegin | EventKind::RangeActive | EventKind::RangeEnd => self.range(ev, t),
            EventKind::Metric => self.metric(ev),
            _ => {}
        }
    }

    #[cold]
    fn metric(&mut self, ev: &Event<'_>) {
        let Some(m) = ev.metric() else { return };
        let slot = match m.name {
            metric::HEAP_OBJECTS => &mut self.s.heap_max_bytes,
            metric::HEAP_GOAL => &mut self.s.heap_goal_max_bytes,
            metric::GOMAXPROCS => &mut self.s.gomaxprocs,
            _ => return,
        };
        *slot = (*slot).max(m.value);
    }

    /// GC mark phases, stop-the-world pauses and mark assists (rare).
    #[cold]
    fn range(&mut self, ev: &Event<'_>, t: i64) {
        let Some(name) = ev.range().map(|r| r.name) else {
            return;
        };
        match (ev.kind(), name) {
            (EventKind::RangeBegin, RangeName::GcMarkPhase) => self.s.gc_cycles += 1,
            (EventKind::RangeBegin, RangeName::StopTheWorld(reason)) => {
                self.s.stw_count += 1;
                self.stw_begin = Some(t);
                self.stw_reason.clear();
                self.stw_reason.extend_from_slice(reason);
            }
            (EventKind::RangeEnd, RangeName::StopTheWorld(_)) => {
                if let Some(begin) = self.stw_begin.take() {
                    let d = t.wrapping_sub(begin) as u64;
                    self.s.stw_total_ns = self.s.stw_total_ns.wrapping_add(d);
                    if d > self.s.stw_max_ns {
                        self.s.stw_max_ns = d;
                        std::mem::swap(&mut self.stw_max_reason, &mut self.stw_reason);
                    }
                }
            }
            (kind, RangeName::GcMarkAssist) => {
                let Some(g) = scope_goroutine(ev) else { return };
                let e = self.goroutines.entry(g.0).or_insert(Goroutine::UNSEEN);
                match kind {
                    EventKind::RangeBegin => e.start(ASSIST, t),
                    // Go repeats the Active at each generation while the
                    // assist runs: only the first one starts it.
                    EventKind::RangeActive if !e.is_pending(ASSIST) => e.start(ASSIST, t),
                    EventKind::RangeEnd => {
                        if let Some(start) = e.take(ASSIST) {
                            self.s.gc_assist_ns =
                                self.s.gc_assist_ns.wrapping_add(t.wrapping_sub(start) as u64);
                        }
                        if e.forgettable() {
                            self.goroutines.remove(&g.0);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    #[inline]
    fn transition(&mut self, g: GoId, from: GoState, to: GoState, t: i64) {
        let e = self.goroutines.entry(g.0).or_insert(Goroutine::UNSEEN);
        let prev = e.state;
        e.state = to;
        let mut sample = None;
        if to == GoState::Runnable && from != GoState::Runnable && from != GoState::Undetermined {
            e.start(RUNNABLE, t);
        } else if from == GoState::Runnable && to != GoState::Runnable {
            if let Some(start) = e.take(RUNNABLE) {
                if to == GoState::Running {
                    sample = Some(t.wrapping_sub(start) as u64);
                }
            }
        }
        if to == GoState::Syscall && from != GoState::Syscall && from != GoState::Undetermined {
            e.start(SYSCALL, t);
        } else if from == GoState::Syscall && to != GoState::Syscall {
            if let Some(start) = e.take(SYSCALL) {
                self.s.syscall_ns = self.s.syscall_ns.wrapping_add(t.wrapping_sub(start) as u64);
            }
        }
        // Only a goroutine that ends may be forgotten.
        if !alive(to) && e.forgettable() {
            self.goroutines.remove(&g.0);
        }
        if let Some(l) = sample {
            self.latency.add(l);
        }
        self.alive = self.alive + u64::from(alive(to)) - u64::from(alive(prev));
        self.runnable =
            self.runnable + u64::from(to == GoState::Runnable) - u64::from(prev == GoState::Runnable);
        self.s.goroutines_max = self.s.goroutines_max.max(self.alive);
        self.s.runnable_max = self.s.runnable_max.max(self.runnable);
    }

    /// The summary of the events taken so far.
    pub fn summary(&self) -> Summary {
        let mut s = self.s.clone();
        s.stw_max_reason = go_json_string(&self.stw_max_reason);
        s.sched_latency_samples = self.latency.n;
        s.sched_latency_max_ns = self.latency.max;
        s.sched_latency_p50_ns = self.latency.percentile(50);
        s.sched_latency_p99_ns = self.latency.percentile(99);
        s
    }
}

fn scope_goroutine(ev: &Event<'_>) -> Option<GoId> {
    match ev.range()?.scope {
        ResourceId::Goroutine(g) => Some(g),
        _ => None,
    }
}

/// Bytes as Go's `encoding/json` writes a string: each byte that is not
/// part of valid UTF-8 becomes U+FFFD.
fn go_json_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        s.push_str(chunk.valid());
        for _ in chunk.invalid() {
            s.push('\u{fffd}');
        }
    }
    s
}

/// Microseconds in a second: the last bucket, where longer samples count.
const MAX_US: usize = 1_000_000;
const PAGE: usize = 1024;

/// Samples counted per whole microsecond, up to one second, in pages
/// allocated when first used (a healthy window touches a few).
#[derive(Debug, Default)]
struct Histogram {
    pages: Vec<Option<Box<[u64; PAGE]>>>,
    n: u64,
    max: u64,
}

impl Histogram {
    #[inline]
    fn add(&mut self, ns: u64) {
        self.n += 1;
        self.max = self.max.max(ns);
        let us = (ns / 1000).min(MAX_US as u64) as usize;
        let (page, slot) = (us / PAGE, us % PAGE);
        match self.pages.get_mut(page) {
            Some(Some(p)) => p[slot] += 1,
            _ => self.add_to_new_page(page, slot),
        }
    }

    #[cold]
    fn add_to_new_page(&mut self, page: usize, slot: usize) {
        if self.pages.len() <= page {
            self.pages.resize(page + 1, None);
        }
        let p = self.pages[page].get_or_insert_with(|| Box::new([0; PAGE]));
        p[slot] += 1;
    }

    /// The nearest-rank percentile `q`, in whole microseconds as ns.
    fn percentile(&self, q: u64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = (self.n * q).div_ceil(100);
        let mut seen = 0;
        for (i, page) in self.pages.iter().enumerate() {
            let Some(page) = page else { continue };
            for (j, &c) in page.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return ((i * PAGE + j) as u64) * 1000;
                }
            }
        }
        self.max / 1000 * 1000
    }
}

/// Decodes a trace as it streams in and summarises it on the way: what an
/// agent runs beside its read loop.
///
/// ```
/// let trace = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/go1.26.trace")).unwrap();
/// let mut s = gotrace::summary::SummaryDecoder::new();
/// for chunk in trace.chunks(16 << 10) {
///     s.feed(chunk).expect("a v2 trace");
/// }
/// let summary = s.finish(true).expect("a whole trace");
/// assert_eq!(summary.events, 1737);
/// assert_eq!(summary.gomaxprocs, 2);
/// ```
#[derive(Debug, Default)]
pub struct SummaryDecoder {
    decoder: Decoder,
    summarizer: Summarizer,
}

impl SummaryDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        let s = &mut self.summarizer;
        self.decoder.feed(data, |ev| s.add(ev))
    }

    /// Ends the stream (see [`Decoder::finish`]) and returns the summary.
    /// After an error, [`SummaryDecoder::summary`] still tells what the
    /// events before it (the whole generations of a cut stream) looked like.
    pub fn finish(&mut self, stream_complete: bool) -> Result<Summary, DecodeError> {
        let s = &mut self.summarizer;
        self.decoder.finish(stream_complete, |ev| s.add(ev))?;
        Ok(self.summarizer.summary())
    }

    /// The summary of the events yielded so far.
    pub fn summary(&self) -> Summary {
        self.summarizer.summary()
    }

    /// The decoder, for its version and offsets.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

/// The summary of a whole trace in memory.
pub fn summarize(trace: &[u8]) -> Result<Summary, DecodeError> {
    let mut s = SummaryDecoder::new();
    s.feed(trace)?;
    s.finish(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank_per_microsecond() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50), 0);
        for ns in [1_500, 900, 2_999, 7_000_000_000, 3_000] {
            h.add(ns);
        }
        // Floors, sorted: 0, 1000, 2000, 3000, 1e9 (capped at one second).
        assert_eq!(h.percentile(50), 2_000);
        assert_eq!(h.percentile(99), 1_000_000_000);
        assert_eq!(h.max, 7_000_000_000);
        let mut h = Histogram::default();
        for ns in 1..=100u64 {
            h.add(ns * 1000 + 999);
        }
        assert_eq!((h.percentile(50), h.percentile(99)), (50_000, 99_000));
        assert_eq!(h.pages.iter().flatten().count(), 1);
    }

    #[test]
    fn reasons_that_are_not_utf8_read_as_go_json_writes_them() {
        assert_eq!(go_json_string(b"GC mark termination"), "GC mark termination");
        assert_eq!(go_json_string(b"a\xe2\x82b\xff"), "a\u{fffd}\u{fffd}b\u{fffd}");
    }
}
