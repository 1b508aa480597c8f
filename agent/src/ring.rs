//! Per-target rings of recent windows, bounded by age, bytes and count, under one global byte budget.
//!
//! Windows are `Arc`s: freezing a ring for a snapshot clones handles, never
//! trace bytes. A frozen window evicted from its ring stays alive (and in
//! memory) until the snapshot that holds it is written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use ringbuf::traits::Observer;
use ringbuf::HeapRb;
use tokio::sync::broadcast;

use crate::config::Target;
use crate::window::Window;

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
        let rings = targets
            .iter()
            .map(|t| {
                let (feed, _) = broadcast::channel(64);
                let ring = TargetRing {
                    windows: HeapRb::new(t.max_windows.max(1)),
                    bytes: 0,
                    max_age: t.max_age,
                    max_bytes: t.max_bytes,
                    feed,
                };
                (Arc::<str>::from(t.name.as_str()), ring)
            })
            .collect();
        Rings {
            inner: Mutex::new(Inner {
                rings,
                total_bytes: 0,
            }),
            max_bytes,
        }
    }

    pub fn global_max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn total_bytes(&self) -> u64 {
        self.inner.lock().total_bytes
    }

    /// Adds a window and evicts what the bounds require, oldest first. Returns
    /// what was evicted, with the reason.
    pub fn insert(&self, window: Arc<Window>, now: SystemTime) -> Vec<(Arc<Window>, Eviction)> {
        let mut evicted = Vec::new();
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(ring) = inner.rings.get_mut(&window.target) else {
            return evicted;
        };
        let _ = ring.feed.send(window.clone());
        let size = window.stored_len();
        ring.bytes += size;
        inner.total_bytes += size;
        if let Some(old) = ring.windows.push_overwrite(window) {
            ring.bytes -= old.stored_len();
            inner.total_bytes -= old.stored_len();
            evicted.push((old, Eviction::Count));
        }
        while let Some(front) = ring.windows.first() {
            let too_old = now
                .duration_since(front.received_at)
                .is_ok_and(|age| age > ring.max_age);
            let reason = if too_old {
                Eviction::Age
            } else if ring.bytes > ring.max_bytes {
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
            coverage: coverage(windows.iter().map(|w| w.as_ref())).map(|c| c.ratio),
        })
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
pub fn coverage<'a>(windows: impl Iterator<Item = &'a Window> + Clone) -> Option<Coverage> {
    let traced: Option<Vec<(u64, u64)>> = windows
        .clone()
        .map(|w| Some((w.info.start_ns()?, w.info.end_ns()?)))
        .collect();
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
