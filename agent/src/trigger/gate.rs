//! The gate between automatic triggers and snapshots: per-target cooldown, a global rate limit, webhook dedupe.
//!
//! Every automatic trigger (latency, metric, trace, alerts, crash) goes through
//! [`Gate::fire`]; a person's snapshot (API, CLI) does not, and leaves no
//! trace here either. Deciding and firing happen under one lock, so two
//! webhooks arriving together cannot both slip through a cooldown.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::error;

use super::events::{self, Suppressed};
use crate::config::{Limits, TriggerConfig};
use crate::snapshot::{Firing, Scope, SnapshotError, Snapshots};
use crate::telemetry::Metrics;

/// Dedupe keys remembered at most; the oldest go first beyond this, so a
/// sender inventing new fingerprints cannot grow memory without bound.
const MAX_SEEN: usize = 50_000;

/// What became of a trigger that held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A snapshot started; its ids.
    Started(Vec<String>),
    Suppressed(Suppressed),
}

pub struct Gate {
    snapshots: Arc<Snapshots>,
    metrics: Arc<Metrics>,
    limits: Limits,
    dedupe_ttl: Duration,
    state: Mutex<State>,
}

impl Gate {
    pub fn new(
        limits: Limits,
        dedupe_ttl: Duration,
        snapshots: Arc<Snapshots>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Gate {
            snapshots,
            metrics,
            limits,
            dedupe_ttl,
            state: Mutex::new(State::default()),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn target_names(&self) -> Vec<String> {
        self.snapshots.target_names()
    }

    /// Snapshots `target` unless its cooldown or the global rate limit says
    /// no. `Err` only when no snapshot can be made at all (shutting down).
    pub fn fire(&self, target: &str, cooldown: Duration, firing: Firing) -> Result<Outcome, SnapshotError> {
        self.fire_scoped(target, cooldown, firing, Scope::PostTrigger)
    }

    /// [`Gate::fire`], the bundle holding what `scope` says.
    pub fn fire_scoped(
        &self,
        target: &str,
        cooldown: Duration,
        firing: Firing,
        scope: Scope,
    ) -> Result<Outcome, SnapshotError> {
        let kind = firing.kind.as_str();
        let reason = firing.reason.clone();
        let now = Instant::now();
        let mut state = self.state.lock();
        if let Err(why) = state.admit(now, target, cooldown, &self.limits) {
            drop(state);
            events::suppressed(&self.metrics, kind, target, why, &reason);
            return Ok(Outcome::Suppressed(why));
        }
        // Snapshots::fire only freezes a ring and spawns the writer: cheap
        // enough to hold the lock across, which makes decide-and-fire atomic.
        let ids = self.snapshots.fire_scoped(Some(target), firing, scope)?;
        state.record(now, target);
        drop(state);
        events::fired(&self.metrics, kind, target, &reason, &ids);
        Ok(Outcome::Started(ids))
    }

    /// [`Gate::fire`] for a trigger that judges on its own clock (latency,
    /// metric, trace): `Some(until)` is how long it stays quiet (the cooldown
    /// it started or the one the gate says remains, `None` when nothing holds
    /// it back); `None` means it stops, the agent shutting down or the target
    /// unable to snapshot (logged here).
    pub fn fire_polled(&self, cfg: &TriggerConfig, firing: Firing) -> Option<Option<Instant>> {
        let now = Instant::now();
        match self.fire(&cfg.target, cfg.cooldown, firing) {
            Ok(Outcome::Started(_)) => Some(Some(now + cfg.cooldown)),
            Ok(Outcome::Suppressed(Suppressed::Cooldown { remaining })) => Some(Some(now + remaining)),
            Ok(Outcome::Suppressed(Suppressed::RateLimit { retry_in })) => Some(Some(now + retry_in)),
            Ok(Outcome::Suppressed(Suppressed::Duplicate)) => Some(None),
            Err(SnapshotError::ShuttingDown) => None,
            Err(e) => {
                error!(trigger = %cfg.name, error = %e, "trigger cannot snapshot its target; this trigger is off");
                None
            }
        }
    }

    /// True the first time `key` is seen, or when it was last seen more than
    /// the dedupe TTL ago. Every sighting renews the memory, so an alert
    /// still being resent, or still returned by Alertmanager's API, is never
    /// new again however long it fires.
    pub fn first_delivery(&self, key: &str) -> bool {
        self.state
            .lock()
            .first_delivery(Instant::now(), key, self.dedupe_ttl)
    }
}

#[derive(Default)]
struct State {
    /// When each target last had an automatic snapshot.
    last_fired: HashMap<String, Instant>,
    /// Automatic snapshots within the rate-limit period, oldest first.
    recent: VecDeque<Instant>,
    seen: HashMap<String, Instant>,
    seen_order: VecDeque<(Instant, String)>,
}

impl State {
    fn admit(
        &mut self,
        now: Instant,
        target: &str,
        cooldown: Duration,
        limits: &Limits,
    ) -> Result<(), Suppressed> {
        if let Some(last) = self.last_fired.get(target) {
            let since = now.saturating_duration_since(*last);
            if since < cooldown {
                return Err(Suppressed::Cooldown {
                    remaining: cooldown - since,
                });
            }
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= limits.per)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u64 >= limits.max_fires {
            let oldest = self.recent.front().copied().unwrap_or(now);
            return Err(Suppressed::RateLimit {
                retry_in: limits.per.saturating_sub(now.saturating_duration_since(oldest)),
            });
        }
        Ok(())
    }

    fn record(&mut self, now: Instant, target: &str) {
        self.last_fired.insert(target.to_string(), now);
        self.recent.push_back(now);
    }

    fn first_delivery(&mut self, now: Instant, key: &str, ttl: Duration) -> bool {
        while let Some((at, k)) = self.seen_order.front() {
            if now.saturating_duration_since(*at) < ttl && self.seen_order.len() <= MAX_SEEN {
                break;
            }
            if self.seen.get(k) == Some(at) {
                self.seen.remove(k);
            }
            self.seen_order.pop_front();
        }
        // The entry in `seen_order` an earlier sighting left goes stale: it
        // no longer matches `seen` and is dropped when it reaches the front.
        let known = self.seen.insert(key.to_string(), now).is_some();
        self.seen_order.push_back((now, key.to_string()));
        !known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_fires: u64, per_secs: u64) -> Limits {
        Limits {
            cooldown: Duration::from_secs(60),
            max_fires,
            per: Duration::from_secs(per_secs),
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn cooldown_is_per_target_and_ends() {
        let l = limits(100, 3600);
        let t0 = Instant::now();
        let mut st = State::default();
        assert_eq!(st.admit(t0, "a", s(60), &l), Ok(()));
        st.record(t0, "a");
        assert_eq!(
            st.admit(t0 + s(10), "a", s(60), &l),
            Err(Suppressed::Cooldown { remaining: s(50) })
        );
        assert_eq!(
            st.admit(t0 + s(10), "b", s(60), &l),
            Ok(()),
            "other targets are free"
        );
        // A trigger with a shorter cooldown of its own is judged by it.
        assert_eq!(st.admit(t0 + s(10), "a", s(5), &l), Ok(()));
        assert_eq!(st.admit(t0 + s(60), "a", s(60), &l), Ok(()));
    }

    #[test]
    fn global_rate_limit_is_a_sliding_window_across_targets() {
        let l = limits(2, 100);
        let t0 = Instant::now();
        let mut st = State::default();
        for (i, t) in ["a", "b"].iter().enumerate() {
            assert_eq!(st.admit(t0 + s(i as u64), t, s(0), &l), Ok(()));
            st.record(t0 + s(i as u64), t);
        }
        assert_eq!(
            st.admit(t0 + s(30), "c", s(0), &l),
            Err(Suppressed::RateLimit { retry_in: s(70) })
        );
        assert_eq!(
            st.admit(t0 + s(100), "c", s(0), &l),
            Ok(()),
            "the first fire left the window"
        );
    }

    #[test]
    fn a_suppressed_trigger_does_not_use_up_the_rate_limit() {
        let l = limits(2, 100);
        let t0 = Instant::now();
        let mut st = State::default();
        st.record(t0, "a");
        for i in 1..10 {
            assert!(st.admit(t0 + s(i), "a", s(60), &l).is_err());
        }
        assert_eq!(st.admit(t0 + s(10), "b", s(60), &l), Ok(()));
    }

    #[test]
    fn dedupe_remembers_keys_for_the_ttl_only() {
        let t0 = Instant::now();
        let mut st = State::default();
        assert!(st.first_delivery(t0, "k", s(10)));
        assert!(!st.first_delivery(t0 + s(9), "k", s(10)));
        assert!(st.first_delivery(t0 + s(9), "other", s(10)));
        assert!(
            st.first_delivery(t0 + s(19), "k", s(10)),
            "expired: 10s after it was last seen"
        );
        assert!(!st.first_delivery(t0 + s(20), "k", s(10)));
    }

    #[test]
    fn an_alert_seen_again_and_again_is_remembered_past_the_ttl() {
        let t0 = Instant::now();
        let mut st = State::default();
        assert!(st.first_delivery(t0, "k", s(10)));
        // Seen every 5s for a minute, six times the TTL: never new again.
        for i in 1..=12 {
            assert!(!st.first_delivery(t0 + s(5 * i), "k", s(10)), "at {}s", 5 * i);
        }
        // Gone for longer than the TTL: new.
        assert!(st.first_delivery(t0 + s(71), "k", s(10)));
        // The stale entries of the renewals are dropped as they age.
        assert!(st.first_delivery(t0 + s(200), "other", s(10)));
        assert_eq!(st.seen.len(), 1);
        assert_eq!(st.seen_order.len(), 1);
    }

    #[test]
    fn dedupe_memory_is_bounded() {
        let t0 = Instant::now();
        let mut st = State::default();
        for i in 0..(MAX_SEEN + 10) {
            assert!(st.first_delivery(t0, &format!("k{i}"), s(3600)));
        }
        assert!(st.seen.len() <= MAX_SEEN + 1, "{}", st.seen.len());
        assert!(st.seen_order.len() <= MAX_SEEN + 1);
    }
}
