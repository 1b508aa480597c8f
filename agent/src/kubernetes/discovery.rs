//! Discovery: watches the pods of this node and publishes the targets the opted-in ones become.
//!
//! One list, then a watch from its `resourceVersion` with bookmarks; a watch
//! that expires (`410 Gone`) is relisted; errors back off up to
//! `kubernetes.interval`. A pod that starts or gets the annotation is
//! recorded as soon as its event arrives; one that goes is dropped from the
//! targets (its ring is kept for `max_age`, see `collect::Fleet`). The pods
//! seen are kept in [`LocalPods`] for the FlightSnapshot controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::health::{describe_watch, Health};
use super::pods::{self, Selection};
use crate::config::{KubernetesConfig, Target};
use crate::telemetry::Metrics;
use crate::units::unix_seconds;

/// How long a pod that went is still known, so that the death of a pod
/// deleted a moment ago is still told from a crash.
const GONE_FOR: Duration = Duration::from_secs(300);

/// The pods of this node, as the last list and watch events left them.
#[derive(Default)]
pub struct LocalPods {
    pods: RwLock<BTreeMap<(String, String), Pod>>,
    /// Pods that went, as they last were, and when.
    gone: RwLock<BTreeMap<(String, String), (Pod, Instant)>>,
    /// Set once the first list is in: before it, "no such pod" means nothing.
    synced: watch::Sender<bool>,
}

impl LocalPods {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods
            .read()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The pods of this node a selection takes.
    pub fn matching(&self, sel: &Selection) -> Vec<Pod> {
        self.pods
            .read()
            .values()
            .filter(|p| sel.matches(p))
            .cloned()
            .collect()
    }

    /// The pod that is (or was, a moment ago) the target named `target`.
    pub fn by_target(&self, target: &str) -> Option<Pod> {
        let named = |p: &Pod| pods::target_name(pods::namespace(p), pods::name(p)) == target;
        if let Some(p) = self.pods.read().values().find(|p| named(p)) {
            return Some(p.clone());
        }
        self.gone
            .read()
            .values()
            .find(|(p, at)| at.elapsed() < GONE_FOR && named(p))
            .map(|(p, _)| p.clone())
    }

    /// Waits until the first list of this node's pods is in.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn replace(&self, all: BTreeMap<(String, String), Pod>) {
        let before = std::mem::replace(&mut *self.pods.write(), all);
        let now = self.pods.read().keys().cloned().collect::<BTreeSet<_>>();
        for (k, p) in before.into_iter().filter(|(k, _)| !now.contains(k)) {
            self.went(k, p);
        }
        self.synced.send_replace(true);
    }

    fn apply(&self, p: Pod) {
        self.pods.write().insert(key(&p), p);
    }

    fn delete(&self, p: &Pod) {
        let k = key(p);
        self.pods.write().remove(&k);
        self.went(k, p.clone());
    }

    fn went(&self, k: (String, String), p: Pod) {
        let mut gone = self.gone.write();
        gone.retain(|_, (_, at)| at.elapsed() < GONE_FOR);
        gone.insert(k, (p, Instant::now()));
    }

    fn targets(&self, cfg: &KubernetesConfig) -> (Vec<Target>, Vec<String>) {
        pods::targets_of(cfg, self.pods.read().values())
    }
}

fn key(p: &Pod) -> (String, String) {
    (pods::namespace(p).to_string(), pods::name(p).to_string())
}

/// Exponential backoff with jitter from 500 ms up to `max`, starting over
/// once a watch works again.
pub struct CappedBackoff {
    next: Duration,
    max: Duration,
}

impl CappedBackoff {
    pub fn new(max: Duration) -> Self {
        CappedBackoff {
            next: Duration::from_millis(500),
            max,
        }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        // Up to a quarter less, so that many agents do not retry in step.
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        Some(base - jitter)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = Duration::from_millis(500);
    }
}

/// Watches this node's pods until `stop`, keeping `local` and publishing the
/// targets on `out` whenever they change.
pub async fn run(
    cfg: KubernetesConfig,
    client: kube::Client,
    local: Arc<LocalPods>,
    out: watch::Sender<Vec<Target>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    info!(node = %cfg.node, api = %cfg.api_server, "watching the pods of this node annotated {}", cfg.port_annotation);
    let api: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node));
    let mut events = watcher(api, wc).backoff(CappedBackoff::new(cfg.interval)).boxed();
    let mut listing: Option<BTreeMap<(String, String), Pod>> = None;
    let mut reported_skips = BTreeSet::new();
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = stop.cancelled() => return,
        };
        let Some(event) = event else { return };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                let (reason, message) = describe_watch("watching this node's pods", &e);
                health.failed(&metrics, "pods", reason, &message);
                continue;
            }
        };
        health.ok("pods");
        metrics
            .discovery_last_success
            .set(unix_seconds(SystemTime::now()));
        match event {
            watcher::Event::Init => {
                listing = Some(BTreeMap::new());
                continue;
            }
            watcher::Event::InitApply(p) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(key(&p), p);
                }
                continue;
            }
            watcher::Event::InitDone => local.replace(listing.take().unwrap_or_default()),
            watcher::Event::Apply(p) => local.apply(p),
            watcher::Event::Delete(p) => local.delete(&p),
        }
        let (targets, skipped) = local.targets(&cfg);
        for s in skipped {
            if reported_skips.insert(s.clone()) {
                warn!("pod skipped: {s}");
            }
        }
        metrics.discovery_targets.set(targets.len() as i64);
        out.send_if_modified(|current| {
            let changed = *current != targets;
            if changed {
                *current = targets;
            }
            changed
        });
    }
}
