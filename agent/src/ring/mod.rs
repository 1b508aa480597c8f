//! Ring: per-target rings of recent windows, bounded by age, bytes and count, under one global byte budget.
//!
//! Takes in: windows from [`crate::collect`] (room is reserved while a window
//! streams in, so the budget holds at every moment). Hands on: frozen
//! windows to [`crate::snapshot`], and new ones as they arrive to snapshots
//! still recording their post-trigger part. Owns: every window's bytes
//! ([`window`], stored in compressed blocks, see `blocks`).
//!
//! Windows are `Arc`s: freezing a ring for a snapshot clones handles, never
//! trace bytes. A frozen window evicted from its ring stays alive (and in
//! memory) until the snapshot that holds it is written.

mod blocks;
pub mod window;

pub use blocks::{compress, give_back, Builder, BLOCK};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use ringbuf::traits::Observer;
use ringbuf::HeapRb;
use tokio::sync::broadcast;

use crate::config::Target;
use crate::ring::window::{Span, Window};

/// Why a window left its ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Age,
    TargetBytes,
    Count,
    GlobalBudget,
}

impl Eviction {
    pub fn label(self) -> &'static str {
        match self {
            Eviction::Age => "max_age",
            Eviction::TargetBytes => "max_bytes",
            Eviction::Count => "max_windows",
            Eviction::GlobalBudget => "global_budget",
        }
    }
}

/// A frozen ring: the windows held at the trigger, and the feed of later ones.
pub type Frozen = (Vec<Arc<Window>>, broadcast::Receiver<Arc<Window>>);

/// What one ring holds now.
#[derive(Debug, Clone, Default)]
pub struct RingStatus {
    pub windows: usize,
    /// Bytes held in memory (compressed if compression is on).
    pub stored_bytes: u64,
    /// Bytes of trace those windows hold uncompressed.
    pub raw_bytes: u64,
    pub oldest: Option<SystemTime>,
    pub newest: Option<SystemTime>,
    /// Fraction of the wall time from the oldest start to the newest end
    /// that the windows cover.
    pub coverage: Option<f64>,
}

struct TargetRing {
    windows: HeapRb<Arc<Window>>,
    bytes: u64,
    /// Bytes reserved by the window being recorded, already compressed but
    /// not yet a window.
    pending: u64,
    max_age: Duration,
    max_bytes: u64,
    /// New windows for snapshots waiting on post-trigger recording.
    feed: broadcast::Sender<Arc<Window>>,
}

struct Inner {
    rings: BTreeMap<Arc<str>, TargetRing>,
    total_bytes: u64,
}

pub struct Rings {
    inner: Mutex<Inner>,
    max_bytes: u64,
}

impl Rings {
    pub fn new(targets: &[Target], max_bytes: u64) -> Self {
        let rings = Rings {
            inner: Mutex::new(Inner {
                rings: BTreeMap::new(),
                total_bytes: 0,
            }),
            max_bytes,
        };
        for t in targets {
            rings.set_target(t);
        }
        rings
    }

    /// Adds a ring for `target`, or applies new bounds to its ring (evicting
    /// what no longer fits, oldest first). Returns what was evicted.
    pub fn set_target(&self, target: &Target) -> Vec<(Arc<Window>, Eviction)> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let capacity = target.max_windows.max(1);
        let Some(ring) = inner.rings.get_mut(target.name.as_str()) else {
            let (feed, _) = broadcast::channel(64);
            let ring = TargetRing {
                windows: HeapRb::new(capacity),
                bytes: 0,
                pending: 0,
                max_age: target.max_age,
                max_bytes: target.max_bytes,
                feed,
            };
            inner.rings.insert(Arc::from(target.name.as_str()), ring);
            return Vec::new();
        };
        ring.max_age = target.max_age;
        ring.max_bytes = target.max_bytes;
        let mut evicted = Vec::new();
        if ring.windows.capacity().get() != capacity {
            // A ring's capacity is fixed: move the newest windows to a new one.
            let mut kept: Vec<Arc<Window>> = ring.windows.pop_iter().collect();
            let drop = kept.len().saturating_sub(capacity);
            for old in kept.drain(..drop) {
                ring.bytes -= old.stored_len();
                inner.total_bytes -= old.stored_len();
                evicted.push((old, Eviction::Count));
            }
            ring.windows = HeapRb::new(capacity);
            for w in kept {
                let _ = ring.windows.try_push(w);
            }
        }
        // Age follows on the next `expire` tick; bytes must fit now.
        evicted.extend(self.enforce(inner, &target.name, None));
        evicted
    }

    /// Drops a target's ring and the windows in it (a snapshot that froze
    /// them keeps its copies). Its feed closes, so snapshots waiting on it
    /// write what they have.
    pub fn remove_target(&self, target: &str) {
        let mut inner = self.inner.lock();
        if let Some(ring) = inner.rings.remove(target) {
            inner.total_bytes -= ring.bytes + ring.pending;
        }
    }

    pub fn global_max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn total_bytes(&self) -> u64 {
        self.inner.lock().total_bytes
    }

    /// Makes room for `bytes` more of the window being recorded for `target`,
    /// evicting old windows as the bounds require. The room stays reserved
    /// until [`Rings::insert`] turns it into the window or [`Rings::release`]
    /// gives it back, so memory in flight counts against the budgets too.
    pub fn reserve(&self, target: &str, bytes: u64) -> Vec<(Arc<Window>, Eviction)> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(ring) = inner.rings.get_mut(target) else {
            return Vec::new();
        };
        ring.pending += bytes;
        inner.total_bytes += bytes;
        // Only room matters here; age is enforced on insert and by `expire`.
        self.enforce(inner, target, None)
    }

    /// Gives back room reserved for a window that was dropped.
    pub fn release(&self, target: &str, bytes: u64) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if let Some(ring) = inner.rings.get_mut(target) {
            let bytes = bytes.min(ring.pending);
            ring.pending -= bytes;
            inner.total_bytes -= bytes;
        }
    }

    /// Adds a window that had `reserved` bytes reserved for it and evicts what
    /// the bounds require, oldest first. Returns what was evicted, and why.
    pub fn insert(
        &self,
        window: Arc<Window>,
        reserved: u64,
        now: SystemTime,
    ) -> Vec<(Arc<Window>, Eviction)> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let name = window.target.clone();
        let Some(ring) = inner.rings.get_mut(&name) else {
            return Vec::new();
        };
        let reserved = reserved.min(ring.pending);
        ring.pending -= reserved;
        inner.total_bytes -= reserved;
        let _ = ring.feed.send(window.clone());
        let size = window.stored_len();
        ring.bytes += size;
        inner.total_bytes += size;
        let mut evicted = Vec::new();
        if let Some(old) = ring.windows.push_overwrite(window) {
            ring.bytes -= old.stored_len();
            inner.total_bytes -= old.stored_len();
            evicted.push((old, Eviction::Count));
        }
        evicted.extend(self.enforce(inner, &name, Some(now)));
        evicted
    }

    /// Evicts from `target`'s ring for its own bounds, then from any ring for
    /// the global budget, oldest first. Reserved bytes cannot be evicted.
    fn enforce(
        &self,
        inner: &mut Inner,
        target: &str,
        now: Option<SystemTime>,
    ) -> Vec<(Arc<Window>, Eviction)> {
        let mut evicted = Vec::new();
        if let Some(ring) = inner.rings.get_mut(target) {
            while let Some(front) = ring.windows.first() {
                let too_old = now.is_some_and(|now| {
                    now.duration_since(front.received_at)
                        .is_ok_and(|age| age > ring.max_age)
                });
                let reason = if too_old {
                    Eviction::Age
                } else if ring.bytes + ring.pending > ring.max_bytes {
                    Eviction::TargetBytes
                } else {
                    break;
                };
                if let Some(old) = ring.windows.try_pop() {
                    ring.bytes -= old.stored_len();
                    inner.total_bytes -= old.stored_len();
                    evicted.push((old, reason));
                }
            }
        }
        while inner.total_bytes > self.max_bytes {
            let oldest = inner
                .rings
                .iter_mut()
                .filter_map(|(name, r)| Some((r.windows.first()?.received_at, name.clone())))
                .min();
            let Some((_, name)) = oldest else { break };
            if let Some(r) = inner.rings.get_mut(&name) {
                if let Some(old) = r.windows.try_pop() {
                    r.bytes -= old.stored_len();
                    inner.total_bytes -= old.stored_len();
                    evicted.push((old, Eviction::GlobalBudget));
                }
            }
        }
        evicted
    }

    /// Drops windows older than `max_age`; called periodically so an idle or
    /// dead target's ring empties even when nothing new arrives.
    pub fn expire(&self, now: SystemTime) -> Vec<(Arc<Window>, Eviction)> {
        let mut evicted = Vec::new();
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        for ring in inner.rings.values_mut() {
            while let Some(front) = ring.windows.first() {
                if !now
                    .duration_since(front.received_at)
                    .is_ok_and(|age| age > ring.max_age)
                {
                    break;
                }
                if let Some(old) = ring.windows.try_pop() {
                    ring.bytes -= old.stored_len();
                    inner.total_bytes -= old.stored_len();
                    evicted.push((old, Eviction::Age));
                }
            }
        }
        evicted
    }

    /// Handles to every window now in the target's ring, oldest first, and a
    /// feed of windows that arrive afterwards. `None` for an unknown target.
    pub fn freeze(&self, target: &str) -> Option<Frozen> {
        let mut inner = self.inner.lock();
        let ring = inner.rings.get_mut(target)?;
        let held = ring.windows.iter().cloned().collect();
        Some((held, ring.feed.subscribe()))
    }

    pub fn status(&self, target: &str) -> Option<RingStatus> {
        let mut inner = self.inner.lock();
        let ring = inner.rings.get_mut(target)?;
        let bytes = ring.bytes;
        let windows: Vec<&Arc<Window>> = ring.windows.iter().collect();
        Some(RingStatus {
            windows: windows.len(),
            stored_bytes: bytes,
            raw_bytes: windows.iter().map(|w| w.raw_len).sum(),
            oldest: windows.first().map(|w| w.wall_span().0),
            newest: windows.last().map(|w| w.wall_span().1),
            coverage: coverage(windows.iter().map(|w| w.span())).map(|c| c.ratio),
        })
    }

    /// The newest window in the target's ring.
    pub fn newest(&self, target: &str) -> Option<Arc<Window>> {
        let mut inner = self.inner.lock();
        inner.rings.get_mut(target)?.windows.last().cloned()
    }

    /// Every window put in the target's ring from now on, as it arrives
    /// (the feed snapshots record their post-trigger part from). `None` for
    /// an unknown target; the feed closes when the target's ring goes.
    pub fn watch(&self, target: &str) -> Option<broadcast::Receiver<Arc<Window>>> {
        let inner = self.inner.lock();
        Some(inner.rings.get(target)?.feed.subscribe())
    }

    pub fn capacity(&self, target: &str) -> Option<usize> {
        let inner = self.inner.lock();
        Some(inner.rings.get(target)?.windows.capacity().get())
    }
}

/// How much of a run of windows' time span their windows cover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coverage {
    pub span: Duration,
    pub covered: Duration,
    pub ratio: f64,
    pub max_gap: Duration,
    /// True when measured in the target's trace clock.
    pub target_clock: bool,
}

/// Coverage of windows in time order. Uses the target's trace clock when
/// every window has one (gaps then are exact), else the agent's clock.
pub fn coverage(windows: impl Iterator<Item = Span> + Clone) -> Option<Coverage> {
    let traced: Option<Vec<(u64, u64)>> = windows.clone().map(|w| w.trace_ns).collect();
    let (spans, target_clock): (Vec<(u128, u128)>, bool) = match traced {
        Some(s) if !s.is_empty() && s.windows(2).all(|p| p[1].0 >= p[0].1) => (
            s.into_iter()
                .map(|(a, b)| (u128::from(a), u128::from(b)))
                .collect(),
            true,
        ),
        _ => {
            let ns = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
            };
            let agent = windows.map(|w| (ns(w.requested_at), ns(w.received_at)));
            (agent.collect(), false)
        }
    };
    let first = spans.first()?;
    let last = spans.last()?;
    let span = last.1.saturating_sub(first.0);
    let covered: u128 = spans.iter().map(|(a, b)| b.saturating_sub(*a)).sum();
    let max_gap = spans
        .windows(2)
        .map(|p| p[1].0.saturating_sub(p[0].1))
        .max()
        .unwrap_or(0);
    let to_d = |ns: u128| Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64);
    Some(Coverage {
        span: to_d(span),
        covered: to_d(covered.min(span)),
        ratio: if span == 0 {
            1.0
        } else {
            (covered.min(span)) as f64 / span as f64
        },
        max_gap: to_d(max_gap),
        target_clock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Compression, Target};
    use bytes::Bytes;
    use gotrace::{GoVersion, TraceInfo};

    fn target(name: &str, max_windows: usize, max_bytes: u64, max_age: Duration) -> Target {
        let mut t = crate::config::load(None, &std::collections::BTreeMap::new())
            .expect("defaults")
            .targets
            .remove(0);
        t.name = name.into();
        t.max_windows = max_windows;
        t.max_bytes = max_bytes;
        t.max_age = max_age;
        t
    }

    fn window(target: &str, seq: u64, bytes: usize, at: SystemTime) -> Arc<Window> {
        let ticks = seq * 1_000;
        Arc::new(Window {
            target: target.into(),
            seq,
            requested_at: at - Duration::from_secs(1),
            received_at: at,
            info: TraceInfo {
                version: GoVersion(26),
                walked: true,
                ends_cleanly: true,
                whole_len: bytes,
                batches: 1,
                generations: 1,
                freq: Some(1_000),
                first_ts: Some(ticks),
                last_ts: Some(ticks + 990),
                clock: None,
            },
            truncation: None,
            trimmed_bytes: 0,
            tail: None,
            raw_len: bytes as u64,
            stored: vec![Bytes::from(vec![0u8; bytes])],
            compression: Compression::None,
            summary: crate::ring::window::WindowSummary::Off,
        })
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn count_bound_overwrites_the_oldest() {
        let rings = Rings::new(&[target("a", 3, 1 << 30, Duration::from_secs(3600))], 1 << 30);
        for i in 1..=5 {
            rings.insert(window("a", i, 10, at(i)), 0, at(i));
        }
        let (held, _) = rings.freeze("a").expect("known target");
        assert_eq!(held.iter().map(|w| w.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(rings.status("a").map(|s| s.stored_bytes), Some(30));
    }

    #[test]
    fn byte_and_age_bounds_evict_oldest_first() {
        let rings = Rings::new(&[target("a", 100, 250, Duration::from_secs(10))], 1 << 30);
        for i in 1..=4 {
            rings.insert(window("a", i, 100, at(i)), 0, at(i));
        }
        let seqs = |r: &Rings| {
            r.freeze("a")
                .expect("known")
                .0
                .iter()
                .map(|w| w.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(&rings), vec![3, 4], "250 bytes hold two 100-byte windows");
        let evicted = rings.expire(at(4 + 11));
        assert_eq!(evicted.len(), 2);
        assert!(evicted.iter().all(|(_, why)| *why == Eviction::Age));
        assert_eq!(rings.total_bytes(), 0);
    }

    #[test]
    fn global_budget_evicts_the_oldest_window_of_any_target() {
        let forever = Duration::from_secs(3600);
        let rings = Rings::new(
            &[
                target("a", 100, 1 << 30, forever),
                target("b", 100, 1 << 30, forever),
            ],
            300,
        );
        rings.insert(window("a", 1, 100, at(1)), 0, at(1));
        rings.insert(window("b", 1, 100, at(2)), 0, at(2));
        rings.insert(window("a", 2, 100, at(3)), 0, at(3));
        let evicted = rings.insert(window("b", 2, 100, at(4)), 0, at(4));
        assert_eq!(evicted.len(), 1);
        assert_eq!(
            (&*evicted[0].0.target, evicted[0].0.seq, evicted[0].1),
            ("a", 1, Eviction::GlobalBudget)
        );
        assert_eq!(rings.total_bytes(), 300);
    }

    #[test]
    fn room_reserved_for_the_window_in_flight_counts_against_both_budgets() {
        let forever = Duration::from_secs(3600);
        let rings = Rings::new(
            &[target("a", 100, 250, forever), target("b", 100, 1 << 30, forever)],
            400,
        );
        rings.insert(window("a", 1, 100, at(1)), 0, at(1));
        rings.insert(window("b", 1, 100, at(2)), 0, at(2));
        rings.insert(window("a", 2, 100, at(3)), 0, at(3));
        // The window being recorded for "a" grows by 100 bytes: a's own
        // budget (250) evicts its oldest window.
        let evicted = rings.reserve("a", 100);
        assert_eq!(evicted.len(), 1);
        assert_eq!((evicted[0].0.seq, evicted[0].1), (1, Eviction::TargetBytes));
        assert_eq!(rings.total_bytes(), 300);
        // 150 for b's window in flight breaks the global budget (400): the
        // oldest window of any target goes, here b's own.
        let evicted = rings.reserve("b", 150);
        assert_eq!(evicted.len(), 1);
        assert_eq!(
            (&*evicted[0].0.target, evicted[0].1),
            ("b", Eviction::GlobalBudget)
        );
        assert_eq!(rings.total_bytes(), 350);
        // Becoming a window converts the reservation instead of adding to it.
        rings.insert(window("a", 3, 100, at(4)), 100, at(4));
        assert_eq!(rings.total_bytes(), 350);
        assert_eq!(
            rings.status("a").map(|s| (s.windows, s.stored_bytes)),
            Some((2, 200))
        );
        // A dropped window gives its room back.
        rings.release("b", 150);
        assert_eq!(rings.total_bytes(), 200);
    }

    #[test]
    fn new_bounds_apply_in_place_and_a_removed_target_frees_its_bytes() {
        let forever = Duration::from_secs(3600);
        let mut a = target("a", 5, 1 << 30, forever);
        let rings = Rings::new(&[a.clone(), target("b", 5, 1 << 30, forever)], 1 << 30);
        for i in 1..=5 {
            rings.insert(window("a", i, 10, at(i)), 0, at(i));
        }
        rings.insert(window("b", 1, 10, at(1)), 0, at(1));
        // Fewer slots: the newest windows stay.
        a.max_windows = 2;
        let evicted = rings.set_target(&a);
        assert_eq!(
            evicted.iter().map(|(w, _)| w.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let held = |r: &Rings| {
            r.freeze("a")
                .expect("a")
                .0
                .iter()
                .map(|w| w.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(held(&rings), vec![4, 5]);
        rings.insert(window("a", 6, 10, at(6)), 0, at(6));
        assert_eq!(held(&rings), vec![5, 6], "the new capacity holds");
        assert_eq!(rings.total_bytes(), 30);
        let (_, mut feed) = rings.freeze("b").expect("b");
        rings.remove_target("b");
        assert_eq!(rings.total_bytes(), 20);
        assert!(rings.freeze("b").is_none());
        assert!(matches!(
            feed.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn frozen_windows_outlive_eviction_and_later_windows_reach_the_feed() {
        let rings = Rings::new(&[target("a", 2, 1 << 30, Duration::from_secs(3600))], 1 << 30);
        rings.insert(window("a", 1, 10, at(1)), 0, at(1));
        let (held, mut feed) = rings.freeze("a").expect("known");
        rings.insert(window("a", 2, 10, at(2)), 0, at(2));
        rings.insert(window("a", 3, 10, at(3)), 0, at(3));
        assert_eq!(
            held[0].seq, 1,
            "evicted from the ring, still held by the snapshot"
        );
        assert_eq!(feed.try_recv().map(|w| w.seq).ok(), Some(2));
        assert_eq!(feed.try_recv().map(|w| w.seq).ok(), Some(3));
        assert!(rings.freeze("nope").is_none());
    }

    #[test]
    fn coverage_uses_the_trace_clock_and_finds_the_largest_gap() {
        let ws: Vec<Arc<Window>> = (1..=3).map(|i| window("a", i, 10, at(i))).collect();
        let c = coverage(ws.iter().map(|w| w.span())).expect("windows");
        assert!(c.target_clock);
        // Windows span 990 of every 1000 ticks at 1000 ticks/s.
        assert_eq!(c.span, Duration::from_millis(2990));
        assert_eq!(c.max_gap, Duration::from_millis(10));
        assert!((c.ratio - 2970.0 / 2990.0).abs() < 1e-9, "{}", c.ratio);
    }
}
