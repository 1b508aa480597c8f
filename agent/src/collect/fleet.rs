//! The targets being recorded now, and those that departed: starts, stops and restarts collectors as the targets change.
//!
//! A reload changes only what changed: a target whose collection settings
//! (URL, path, window, timeouts, compression, window cap) are the same keeps
//! its collector and its ring untouched; new ring bounds, labels or crash
//! setting apply in place; only a target whose collection changed is
//! restarted. A removed target (a reload, or discovery losing a pod) stops
//! recording but is not forgotten: it is *departed*, its ring kept for its
//! `max_age` so the minute before it went can still be snapshotted; it comes
//! back into the same ring if it returns under the same name, and is freed
//! once its `max_age` is over.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::events;
use crate::collect::{Collector, Crash, Outputs, SharedStatus, State, TargetStatus};
use crate::config::Target;
use crate::ring::Rings;
use crate::telemetry::Metrics;
use crate::tls::ExtraRoots;

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for target {target}: {source}")]
pub struct FleetError {
    pub target: String,
    #[source]
    pub source: reqwest::Error,
}

/// What an [`Fleet::apply`] changed, by target name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// New, or back after departing.
    pub added: Vec<String>,
    /// Departed: no longer recorded, their rings kept for `max_age`.
    pub removed: Vec<String>,
    /// Collection settings changed: the collector was restarted.
    pub restarted: Vec<String>,
    /// Only ring bounds, labels or the crash setting changed: applied in place.
    pub updated: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.restarted.is_empty()
            && self.updated.is_empty()
    }
}

/// A target being recorded.
struct Live {
    target: Target,
    status: SharedStatus,
    seq: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// A target no longer recorded whose ring is kept.
struct Departed {
    target: Target,
    status: SharedStatus,
    seq: Arc<AtomicU64>,
    since: SystemTime,
}

#[derive(Default)]
struct Members {
    live: BTreeMap<String, Live>,
    departed: BTreeMap<String, Departed>,
}

pub struct Fleet {
    rings: Arc<Rings>,
    metrics: Arc<Metrics>,
    crashes: Option<mpsc::Sender<Box<Crash>>>,
    extra_roots: ExtraRoots,
    /// Parent of every collector's stop token.
    stop_all: CancellationToken,
    tasks: TaskTracker,
    members: RwLock<Members>,
}

/// Does `b` need a new collector, or only new ring bounds and labels?
fn collection_changed(a: &Target, b: &Target) -> bool {
    let ring_only = |t: &Target| Target {
        max_age: Duration::ZERO,
        max_bytes: 0,
        max_windows: 0,
        labels: Default::default(),
        // Read by the crash trigger when a death is reported.
        crash: true,
        ..t.clone()
    };
    ring_only(a) != ring_only(b)
}

impl Fleet {
    /// `crashes` receives every death the collectors see; with `None` they
    /// are only logged and counted (`[crash] enabled = false`).
    pub fn new(
        rings: Arc<Rings>,
        metrics: Arc<Metrics>,
        extra_roots: ExtraRoots,
        crashes: Option<mpsc::Sender<Box<Crash>>>,
    ) -> Arc<Self> {
        Arc::new(Fleet {
            rings,
            metrics,
            crashes,
            extra_roots,
            stop_all: CancellationToken::new(),
            tasks: TaskTracker::new(),
            members: RwLock::new(Members::default()),
        })
    }

    /// Brings the collectors in line with `targets`. Clients are built first,
    /// so an error changes nothing.
    pub fn apply(&self, targets: &[Target]) -> Result<Changes, FleetError> {
        let mut clients = BTreeMap::new();
        {
            let members = self.members.read();
            for t in targets {
                let needs_collector = members
                    .live
                    .get(&t.name)
                    .is_none_or(|l| collection_changed(&l.target, t));
                if needs_collector {
                    let client =
                        Collector::client_for(t, &self.extra_roots).map_err(|source| FleetError {
                            target: t.name.clone(),
                            source,
                        })?;
                    clients.insert(t.name.clone(), client);
                }
            }
        }
        let mut changes = Changes::default();
        let mut members = self.members.write();
        let members = &mut *members;
        let wanted: BTreeMap<&str, &Target> = targets.iter().map(|t| (t.name.as_str(), t)).collect();
        let gone: Vec<String> = members
            .live
            .keys()
            .filter(|n| !wanted.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(l) = members.live.remove(&name) {
                // The collector keeps the whole generations of the window in
                // flight: its ring is still there to take them.
                l.stop.cancel();
                events::target_departed(&self.metrics, &name, l.target.max_age);
                members.departed.insert(
                    name.clone(),
                    Departed {
                        target: l.target,
                        status: l.status,
                        seq: l.seq,
                        since: SystemTime::now(),
                    },
                );
            }
            changes.removed.push(name);
        }
        for t in targets {
            let existing = members.live.get_mut(&t.name);
            match (existing, clients.remove(&t.name)) {
                (None, Some(client)) => {
                    let evicted = self.rings.set_target(t);
                    events::evicted(&self.metrics, &evicted);
                    // Back under the same name: same ring, numbers go on.
                    let (status, seq) = match members.departed.remove(&t.name) {
                        Some(d) => {
                            events::target_returned(&self.metrics, &t.name);
                            let mut st = d.status.lock();
                            st.window = t.window;
                            st.consecutive_failures = 0;
                            st.departed_at = None;
                            drop(st);
                            (d.status, d.seq)
                        }
                        None => (super::new_status(t), Arc::new(AtomicU64::new(0))),
                    };
                    let l = self.start(t, client, status, seq);
                    members.live.insert(t.name.clone(), l);
                    changes.added.push(t.name.clone());
                }
                (Some(l), Some(client)) => {
                    l.stop.cancel();
                    let evicted = self.rings.set_target(t);
                    events::evicted(&self.metrics, &evicted);
                    {
                        let mut st = l.status.lock();
                        st.window = t.window;
                        st.consecutive_failures = 0;
                    }
                    let (status, seq) = (l.status.clone(), l.seq.clone());
                    *l = self.start(t, client, status, seq);
                    info!(target = %t.name, url = %t.public_url(), "target's collection settings changed: collector restarted");
                    changes.restarted.push(t.name.clone());
                }
                (Some(l), None) => {
                    if l.target != *t {
                        let evicted = self.rings.set_target(t);
                        events::evicted(&self.metrics, &evicted);
                        l.target = t.clone();
                        info!(target = %t.name, "target's ring bounds, labels or crash setting changed: applied in place");
                        changes.updated.push(t.name.clone());
                    }
                }
                (None, None) => {}
            }
        }
        Ok(changes)
    }

    fn start(&self, t: &Target, client: reqwest::Client, status: SharedStatus, seq: Arc<AtomicU64>) -> Live {
        let stop = self.stop_all.child_token();
        info!(target = %t.name, url = %t.public_url(), window = %crate::units::Secs(t.window), "recording");
        let out = Outputs {
            rings: self.rings.clone(),
            metrics: self.metrics.clone(),
            crashes: self.crashes.clone(),
        };
        let c = Collector::new(t.clone(), seq.clone(), client, out, status.clone(), stop.clone());
        self.tasks.spawn(c.run());
        Live {
            target: t.clone(),
            status,
            seq,
            stop,
        }
    }

    /// Frees the departed targets whose `max_age` is over at `now`: their
    /// rings hold nothing younger. Returns their names.
    pub fn expire(&self, now: SystemTime) -> Vec<String> {
        let mut members = self.members.write();
        let over: Vec<String> = members
            .departed
            .iter()
            .filter(|(_, d)| {
                now.duration_since(d.since)
                    .is_ok_and(|gone| gone >= d.target.max_age)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in &over {
            members.departed.remove(name);
            self.rings.remove_target(name);
            events::departed_expired(&self.metrics, name);
        }
        over
    }

    /// The target named `name`, as configured now or when it departed.
    pub fn get(&self, name: &str) -> Option<Target> {
        let members = self.members.read();
        members
            .live
            .get(name)
            .map(|l| l.target.clone())
            .or_else(|| members.departed.get(name).map(|d| d.target.clone()))
    }

    /// Is `name` a departed target (no longer recorded, ring kept)?
    pub fn is_departed(&self, name: &str) -> bool {
        self.members.read().departed.contains_key(name)
    }

    /// Every target, recorded or departed, with its status, in name order.
    pub fn list(&self) -> Vec<(Target, TargetStatus)> {
        let members = self.members.read();
        let mut all: Vec<(Target, TargetStatus)> = members
            .live
            .values()
            .map(|l| (l.target.clone(), l.status.lock().clone()))
            .collect();
        all.extend(members.departed.values().map(|d| {
            let mut st = d.status.lock().clone();
            st.state = State::Departed;
            st.departed_at = Some(d.since);
            (d.target.clone(), st)
        }));
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        all
    }

    /// Every target's name, recorded or departed, in name order.
    pub fn names(&self) -> Vec<String> {
        let members = self.members.read();
        let mut all: Vec<String> = members
            .live
            .keys()
            .chain(members.departed.keys())
            .cloned()
            .collect();
        all.sort();
        all
    }

    /// Every target, recorded or departed: what alerts may select.
    pub fn targets(&self) -> Vec<Target> {
        self.list().into_iter().map(|(t, _)| t).collect()
    }

    /// Stops every collector (each keeps the whole generations of the window
    /// it was recording) and waits up to `deadline` for them.
    pub async fn stop(&self, deadline: Duration) -> bool {
        self.stop_all.cancel();
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        let mut t = crate::config::load(None, &BTreeMap::new())
            .expect("defaults")
            .targets
            .remove(0);
        t.name = name.into();
        t
    }

    #[tokio::test]
    async fn a_reload_restarts_only_what_changed_how_it_is_collected() {
        let a = target("a");
        let b = target("b");
        let rings = Arc::new(Rings::new(&[], 1 << 30));
        let fleet = Fleet::new(rings.clone(), Metrics::new(), ExtraRoots::default(), None);
        let first = fleet.apply(&[a.clone(), b.clone()]).expect("apply");
        assert_eq!(first.added, vec!["a", "b"]);
        assert!(rings.status("a").is_some());

        let mut a2 = a.clone();
        a2.labels.insert("service".into(), "checkout".into());
        a2.max_windows = 3;
        let mut c = target("c");
        c.window = Duration::from_secs(2);
        let mut b2 = b.clone();
        b2.window = Duration::from_secs(10);
        let second = fleet.apply(&[a2.clone(), b2, c]).expect("apply");
        assert_eq!(second.updated, vec!["a"]);
        assert_eq!(second.restarted, vec!["b"]);
        assert_eq!(second.added, vec!["c"]);
        assert!(second.removed.is_empty());
        assert_eq!(rings.capacity("a"), Some(3));
        assert_eq!(fleet.get("a").map(|t| t.labels), Some(a2.labels.clone()));

        let third = fleet.apply(&[a2.clone()]).expect("apply");
        assert_eq!(third.removed, vec!["b", "c"]);
        assert!(fleet.apply(&[a2]).expect("apply").is_empty(), "nothing changed");
        assert!(fleet.stop(Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn a_removed_target_departs_keeps_its_ring_for_max_age_and_can_come_back() {
        let a = target("a");
        let mut b = target("b");
        b.max_age = Duration::from_secs(60);
        let rings = Arc::new(Rings::new(&[], 1 << 30));
        let metrics = Metrics::new();
        let fleet = Fleet::new(rings.clone(), metrics.clone(), ExtraRoots::default(), None);
        fleet.apply(&[a.clone(), b.clone()]).expect("apply");
        let seq = fleet
            .members
            .read()
            .live
            .get("b")
            .map(|l| l.seq.clone())
            .expect("live");
        seq.store(41, std::sync::atomic::Ordering::Relaxed);

        let changes = fleet.apply(std::slice::from_ref(&a)).expect("apply");
        assert_eq!(changes.removed, vec!["b"]);
        assert!(fleet.is_departed("b") && !fleet.is_departed("a"));
        assert!(rings.status("b").is_some(), "its ring is kept");
        assert_eq!(fleet.get("b").map(|t| t.name), Some("b".to_string()));
        assert_eq!(fleet.names(), vec!["a", "b"]);
        let listed = fleet.list();
        assert_eq!(listed[1].1.state, State::Departed);
        assert!(listed[1].1.departed_at.is_some());
        assert!(metrics
            .render_text()
            .contains("flightrec_target_departed{target=\"b\"} 1"));

        // Within max_age nothing expires; a target that comes back records
        // into its ring again, its window numbers going on.
        assert!(fleet.expire(SystemTime::now()).is_empty());
        let back = fleet.apply(&[a.clone(), b.clone()]).expect("apply");
        assert_eq!(back.added, vec!["b"]);
        assert!(!fleet.is_departed("b"));
        let seq2 = fleet
            .members
            .read()
            .live
            .get("b")
            .map(|l| l.seq.clone())
            .expect("live");
        assert!(Arc::ptr_eq(&seq, &seq2));
        assert!(!metrics.render_text().contains("flightrec_target_departed{"));

        // Gone again, and past max_age: it and its ring are freed.
        fleet.apply(std::slice::from_ref(&a)).expect("apply");
        let later = SystemTime::now() + b.max_age;
        assert_eq!(fleet.expire(later), vec!["b"]);
        assert!(rings.status("b").is_none());
        assert!(fleet.get("b").is_none());
        assert_eq!(fleet.names(), vec!["a"]);
        assert!(fleet.stop(Duration::from_secs(10)).await);
    }
}
