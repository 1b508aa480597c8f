//! The targets being recorded now: starts, stops and restarts collectors as the config changes.
//!
//! A reload changes only what changed: a target whose collection settings
//! (URL, path, window, timeouts, compression, window cap) are the same keeps
//! its collector and its ring untouched; new ring bounds or labels apply in
//! place; only a target whose collection changed is restarted, and a removed
//! one stops and frees its ring.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::events;
use crate::collect::{Collector, SharedStatus, TargetStatus};
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
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Collection settings changed: the collector was restarted.
    pub restarted: Vec<String>,
    /// Only ring bounds or labels changed: applied in place.
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

struct Live {
    target: Target,
    status: SharedStatus,
    seq: Arc<AtomicU64>,
    stop: CancellationToken,
}

pub struct Fleet {
    rings: Arc<Rings>,
    metrics: Arc<Metrics>,
    extra_roots: ExtraRoots,
    /// Parent of every collector's stop token.
    stop_all: CancellationToken,
    tasks: TaskTracker,
    live: RwLock<BTreeMap<String, Live>>,
}

/// Does `b` need a new collector, or only new ring bounds and labels?
fn collection_changed(a: &Target, b: &Target) -> bool {
    let ring_only = |t: &Target| Target {
        max_age: Duration::ZERO,
        max_bytes: 0,
        max_windows: 0,
        labels: Default::default(),
        ..t.clone()
    };
    ring_only(a) != ring_only(b)
}

impl Fleet {
    pub fn new(rings: Arc<Rings>, metrics: Arc<Metrics>, extra_roots: ExtraRoots) -> Arc<Self> {
        Arc::new(Fleet {
            rings,
            metrics,
            extra_roots,
            stop_all: CancellationToken::new(),
            tasks: TaskTracker::new(),
            live: RwLock::new(BTreeMap::new()),
        })
    }

    /// Brings the collectors in line with `targets`. Clients are built first,
    /// so an error changes nothing.
    pub fn apply(&self, targets: &[Target]) -> Result<Changes, FleetError> {
        let mut clients = BTreeMap::new();
        {
            let live = self.live.read();
            for t in targets {
                let needs_collector = live.get(&t.name).is_none_or(|l| collection_changed(&l.target, t));
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
        let mut live = self.live.write();
        let wanted: BTreeMap<&str, &Target> = targets.iter().map(|t| (t.name.as_str(), t)).collect();
        let gone: Vec<String> = live
            .keys()
            .filter(|n| !wanted.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(l) = live.remove(&name) {
                l.stop.cancel();
            }
            self.rings.remove_target(&name);
            self.metrics.freshness.forget(&name);
            info!(target = %name, "target removed: recording stopped, its ring freed");
            changes.removed.push(name);
        }
        for t in targets {
            let existing = live.get_mut(&t.name);
            match (existing, clients.remove(&t.name)) {
                (None, Some(client)) => {
                    let evicted = self.rings.set_target(t);
                    events::evicted(&self.metrics, &evicted);
                    let l = self.start(t, client, super::new_status(t), Arc::new(AtomicU64::new(0)));
                    live.insert(t.name.clone(), l);
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
                        info!(target = %t.name, "target's ring bounds or labels changed: applied in place");
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
        let c = Collector::new(
            t.clone(),
            seq.clone(),
            client,
            self.rings.clone(),
            self.metrics.clone(),
            status.clone(),
            stop.clone(),
        );
        self.tasks.spawn(c.run());
        Live {
            target: t.clone(),
            status,
            seq,
            stop,
        }
    }

    /// The target named `name`, as configured now.
    pub fn get(&self, name: &str) -> Option<Target> {
        self.live.read().get(name).map(|l| l.target.clone())
    }

    /// Every target with its collector's status, in name order.
    pub fn list(&self) -> Vec<(Target, TargetStatus)> {
        self.live
            .read()
            .values()
            .map(|l| (l.target.clone(), l.status.lock().clone()))
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.live.read().keys().cloned().collect()
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
        let fleet = Fleet::new(rings.clone(), Metrics::new(), ExtraRoots::default());
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
        assert!(rings.status("c").is_none());
        assert!(fleet.apply(&[a2]).expect("apply").is_empty(), "nothing changed");
        assert!(fleet.stop(Duration::from_secs(10)).await);
    }
}
