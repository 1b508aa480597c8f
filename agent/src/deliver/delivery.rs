//! Drains the spool to the sinks: one task per sink, exponential backoff with jitter, a circuit breaker each.
//!
//! Every outcome is written to the spool's ledger before the next attempt,
//! so what the API shows and what a restart resumes from agree. A sink that
//! keeps failing opens its circuit: no attempts for `breaker_cooldown`, then
//! one probe; its bundles wait in the spool, never dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::events;
use super::sink::{Sink, SinkError};
use crate::config::RetryPolicy;
use crate::deliver::spool::Spool;
use crate::telemetry::Metrics;

/// Pause after the `failures`-th consecutive failure: doubling from
/// `initial`, capped at `max`, then "equal jitter" (half fixed, half random)
/// so agents that lost the same sink together do not retry in lockstep.
pub fn backoff(failures: u32, initial: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << exp).min(max);
    let half = base / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Consecutive-failure circuit breaker: closed → open (after `threshold`
/// failures, for `cooldown`) → half-open (one probe) → closed or open again.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// What a failure did to the breaker.
#[derive(Debug, PartialEq, Eq)]
pub enum Trip {
    /// Still closed: back off and retry.
    Closed,
    /// Just opened from closed.
    Opened,
    /// The half-open probe failed: open again.
    Reopened,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            failures: 0,
            open_until: None,
            probing: false,
        }
    }

    /// How long deliveries must still wait; `None` when an attempt may go.
    /// Once the cooldown has passed, the next attempt is the probe.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        match self.open_until {
            Some(until) if until > now => Some(until - now),
            Some(_) => {
                self.open_until = None;
                self.probing = true;
                None
            }
            None => None,
        }
    }

    pub fn failure(&mut self, now: Instant) -> Trip {
        self.failures = self.failures.saturating_add(1);
        if self.probing {
            self.probing = false;
            self.open_until = Some(now + self.cooldown);
            Trip::Reopened
        } else if self.failures >= self.threshold {
            self.open_until = Some(now + self.cooldown);
            Trip::Opened
        } else {
            Trip::Closed
        }
    }

    /// Returns true when this success closed an open (or probing) circuit.
    pub fn success(&mut self) -> bool {
        let was_open = self.probing || self.failures >= self.threshold;
        self.failures = 0;
        self.probing = false;
        self.open_until = None;
        was_open
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

pub struct Delivery {
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub policy: RetryPolicy,
    pub spool: Arc<Spool>,
    pub metrics: Arc<Metrics>,
}

impl Delivery {
    /// Delivers until `stop`; an attempt in flight at `stop` is abandoned
    /// (the bundle stays pending and goes again after a restart).
    pub async fn run(self, stop: CancellationToken) {
        let mut changes = self.spool.subscribe();
        let mut breaker = Breaker::new(self.policy.breaker_failures, self.policy.breaker_cooldown);
        self.metrics
            .circuit_open
            .get_or_create(&self.metrics.sink(&self.name))
            .set(0);
        debug!(sink = %self.name, to = %self.sink.describe(), "delivery started");
        loop {
            if let Some(wait) = breaker.wait(Instant::now()) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.cancelled() => return,
                }
            }
            // Seen before looking, so a commit racing with an empty queue
            // still wakes us.
            changes.borrow_and_update();
            let spool = self.spool.clone();
            let name = self.name.clone();
            let next = tokio::task::spawn_blocking(move || spool.next_for(&name))
                .await
                .ok()
                .flatten();
            let Some(bundle) = next else {
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
                continue;
            };
            let started = Instant::now();
            let timeout = self.policy.attempt_timeout;
            let result = tokio::select! {
                r = tokio::time::timeout(timeout, self.sink.deliver(&bundle)) => r.unwrap_or_else(|_| Err(SinkError::Remote(format!(
                    "sink {:?}: delivery did not finish within attempt_timeout ({})",
                    self.name, crate::units::Secs(timeout)
                )))),
                _ = stop.cancelled() => {
                    self.spool.abandon(&bundle.id, &self.name);
                    return;
                }
            };
            // The outcome is in the ledger before anything else happens, so
            // a crash from here on neither loses nor repeats more than this bundle.
            let spool = self.spool.clone();
            let (name, id) = (self.name.clone(), bundle.id.clone());
            let result = match tokio::task::spawn_blocking(move || {
                spool.finish(&id, &name, result.as_ref());
                result
            })
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    debug!(sink = %self.name, error = %e, "ledger update task failed");
                    continue;
                }
            };
            let attempts = self
                .spool
                .deliveries(&bundle.id)
                .and_then(|d| d.get(&self.name).map(|s| s.attempts))
                .unwrap_or(0);
            match result {
                Ok(d) => {
                    events::delivered(
                        &self.metrics,
                        &self.name,
                        &bundle.id,
                        &d.location,
                        d.bytes,
                        started.elapsed(),
                        attempts,
                    );
                    if breaker.success() {
                        events::circuit_closed(&self.metrics, &self.name);
                    }
                }
                Err(e) if e.is_permanent() => {
                    events::delivery_failed(&self.metrics, &self.name, &bundle.id, &e, attempts, None);
                }
                Err(e) => {
                    let trip = breaker.failure(Instant::now());
                    let delay = match trip {
                        Trip::Closed => backoff(breaker.failures(), self.policy.initial, self.policy.max),
                        Trip::Opened | Trip::Reopened => self.policy.breaker_cooldown,
                    };
                    events::delivery_failed(&self.metrics, &self.name, &bundle.id, &e, attempts, Some(delay));
                    match trip {
                        Trip::Opened => events::circuit_opened(
                            &self.metrics,
                            &self.name,
                            breaker.failures(),
                            self.policy.breaker_cooldown,
                        ),
                        Trip::Reopened => {
                            debug!(sink = %self.name, "probe failed; circuit stays open")
                        }
                        Trip::Closed => {
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = stop.cancelled() => return,
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..200 {
            let d1 = backoff(1, i, m);
            assert!(d1 >= Duration::from_millis(50) && d1 <= i, "{d1:?}");
            let d3 = backoff(3, i, m);
            assert!(
                d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
                "{d3:?}"
            );
            let d40 = backoff(40, i, m);
            assert!(d40 >= m / 2 && d40 <= m, "{d40:?}");
        }
    }

    #[test]
    fn the_breaker_opens_after_n_failures_probes_once_and_closes_on_success() {
        let now = Instant::now();
        let cool = Duration::from_secs(10);
        let mut b = Breaker::new(3, cool);
        assert_eq!(b.failure(now), Trip::Closed);
        assert_eq!(b.failure(now), Trip::Closed);
        assert_eq!(b.wait(now), None);
        assert_eq!(b.failure(now), Trip::Opened);
        assert_eq!(b.wait(now), Some(cool));
        assert!(b.wait(now + cool / 2).is_some());
        // Cooldown over: one probe may go; it fails, so open again.
        assert_eq!(b.wait(now + cool), None);
        assert_eq!(b.failure(now + cool), Trip::Reopened);
        assert_eq!(b.wait(now + cool), Some(cool));
        assert_eq!(b.wait(now + cool * 2), None);
        assert!(b.success(), "the probe's success closes the circuit");
        assert_eq!(b.failure(now), Trip::Closed, "counting starts over");
        assert!(!b.success());
    }
}
