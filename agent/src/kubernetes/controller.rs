//! The FlightSnapshot controller: each FlightSnapshot becomes one snapshot of every matching pod of this node.
//!
//! Every node's agent watches every FlightSnapshot. For each, it captures the
//! matching pods of its own node that existed when the FlightSnapshot was
//! made, once: the entry it writes into the status (`Running` with the
//! bundle id as soon as the ring is frozen) is what tells it, after a
//! restart or a relist, that a pod was taken. Status writes read the latest
//! object, change only this node's entries and replace it under its
//! `resourceVersion`, retrying on conflict, so nodes never clobber each
//! other. A FlightSnapshot a person made is a manual capture (like `POST
//! /v1/snapshots`); one made from an alert goes through the trigger gate as
//! the alert would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::core::Selector;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::discovery::{CappedBackoff, LocalPods};
use super::health::{describe, describe_watch, Health};
use super::pods::{self, Selection};
use super::resource::{
    FlightSnapshot, FlightSnapshotSpec, FlightSnapshotStatus, PodCapture, COMPLETE, FAILED, PENDING, RUNNING,
};
use crate::config::KubernetesConfig;
use crate::snapshot::{Firing, Phase, SnapshotError, Snapshots, TriggerKind};
use crate::telemetry::{Metrics, ResultLabels};
use crate::trigger::{Gate, Outcome};
use crate::units::{parse_duration, Secs};

/// Attempts at a status write that keeps meeting newer versions.
const STATUS_ATTEMPTS: usize = 20;
/// How often FlightSnapshots past `kubernetes.snapshot_ttl` are looked for.
const SWEEP: Duration = Duration::from_secs(60);

pub struct Controller {
    cfg: KubernetesConfig,
    client: kube::Client,
    local: Arc<LocalPods>,
    snapshots: Arc<Snapshots>,
    gate: Arc<Gate>,
    /// The cooldown of alerts (`trigger_limits.cooldown`).
    cooldown: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// FlightSnapshots being handled now, by uid, and whether another event
    /// came meanwhile (then it is handled again once done).
    busy: Mutex<BTreeMap<String, bool>>,
    /// Every FlightSnapshot seen, by uid, for the TTL sweep.
    seen: Mutex<BTreeMap<String, Seen>>,
    tasks: TaskTracker,
}

/// A FlightSnapshot as the TTL sweep needs it: namespace, name, creation.
type Seen = (String, String, Option<Time>);

/// Why a FlightSnapshot's spec cannot be acted on.
#[derive(Debug, thiserror::Error)]
enum SpecError {
    #[error("spec.selector is not a valid label selector: {0}")]
    Selector(String),
    #[error("spec.postTrigger {0:?} is not a duration like \"5s\"")]
    PostTrigger(String),
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: KubernetesConfig,
        client: kube::Client,
        local: Arc<LocalPods>,
        snapshots: Arc<Snapshots>,
        gate: Arc<Gate>,
        cooldown: Duration,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Arc<Self> {
        Arc::new(Controller {
            cfg,
            client,
            local,
            snapshots,
            gate,
            cooldown,
            metrics,
            health,
            busy: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(BTreeMap::new()),
            tasks: TaskTracker::new(),
        })
    }

    /// Watches FlightSnapshots in every namespace until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        // Before the first list of this node's pods, every selection would
        // look empty.
        tokio::select! {
            _ = self.local.synced() => {}
            _ = stop.cancelled() => return,
        }
        info!(node = %self.cfg.node, "watching FlightSnapshots");
        let api: Api<FlightSnapshot> = Api::all(self.client.clone());
        let mut events = watcher(api, watcher::Config::default())
            .backoff(CappedBackoff::new(self.cfg.interval))
            .boxed();
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = events.next() => match e {
                    None => break,
                    Some(Ok(event)) => {
                        self.health.ok("flightsnapshots");
                        match event {
                            watcher::Event::Apply(fs) | watcher::Event::InitApply(fs) => self.clone().spawn(fs, &stop),
                            watcher::Event::Delete(fs) => {
                                self.seen.lock().remove(&fs.uid().unwrap_or_default());
                            }
                            watcher::Event::Init | watcher::Event::InitDone => {}
                        }
                    }
                    Some(Err(e)) => {
                        let (reason, message) = describe_watch("watching FlightSnapshots", &e);
                        self.health.failed(&self.metrics, "flightsnapshots", reason, &message);
                    }
                },
                _ = sweep.tick() => self.sweep().await,
                _ = stop.cancelled() => break,
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn spawn(self: Arc<Self>, fs: FlightSnapshot, stop: &CancellationToken) {
        let uid = fs.uid().unwrap_or_default();
        self.seen.lock().insert(
            uid.clone(),
            (
                fs.namespace().unwrap_or_default(),
                fs.name_any(),
                fs.metadata.creation_timestamp.clone(),
            ),
        );
        {
            let mut busy = self.busy.lock();
            if let Some(again) = busy.get_mut(&uid) {
                *again = true;
                return;
            }
            busy.insert(uid.clone(), false);
        }
        let stop = stop.clone();
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut fs = fs;
            loop {
                tokio::select! {
                    _ = this.handle(&fs) => {}
                    _ = stop.cancelled() => return,
                }
                let again = {
                    let mut busy = this.busy.lock();
                    let again = busy.get(&uid).copied().unwrap_or(false);
                    if again {
                        busy.insert(uid.clone(), false);
                    } else {
                        busy.remove(&uid);
                    }
                    again
                };
                if !again {
                    return;
                }
                // Act on the newest version of it.
                let api: Api<FlightSnapshot> =
                    Api::namespaced(this.client.clone(), &fs.namespace().unwrap_or_default());
                match api.get_opt(&fs.name_any()).await {
                    Ok(Some(newer)) => fs = newer,
                    _ => {
                        this.busy.lock().remove(&uid);
                        return;
                    }
                }
            }
        });
    }

    async fn handle(&self, fs: &FlightSnapshot) {
        let status = fs.status.clone().unwrap_or_default();
        if matches!(status.phase.as_deref(), Some(COMPLETE) | Some(FAILED)) {
            return;
        }
        let (selection, post_trigger) = match read_spec(&fs.spec) {
            Ok(s) => s,
            Err(e) => {
                let message = e.to_string();
                if status.message.as_deref() != Some(message.as_str()) {
                    warn!(flightsnapshot = %describe_fs(fs), "{message}");
                    self.write_status(fs, None, |st| {
                        st.phase = Some(FAILED.into());
                        st.message = Some(message.clone());
                    })
                    .await;
                }
                return;
            }
        };
        let created = fs.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let taken: BTreeSet<(String, String)> = status
            .pods
            .iter()
            .map(|e| (e.namespace.clone(), e.name.clone()))
            .collect();
        // Entries this node wrote before a restart: the bundle became
        // durable, or it never will.
        for e in status
            .pods
            .iter()
            .filter(|e| e.node == self.cfg.node && e.phase == RUNNING)
        {
            let id = e.bundle.clone().unwrap_or_default();
            if self.snapshots.progress(&id).is_some() {
                continue;
            }
            let durable = self.snapshots.spool().bundle_dir(&id).is_some();
            let (ns, name) = (e.namespace.clone(), e.name.clone());
            self.put_entry(fs, &selection, |entry| {
                entry.namespace = ns.clone();
                entry.name = name.clone();
                if durable {
                    entry.phase = COMPLETE.into();
                    entry.message = None;
                } else {
                    entry.phase = FAILED.into();
                    entry.message = Some("the agent restarted before this bundle was durable".into());
                }
            })
            .await;
        }
        let mine: Vec<Pod> = self
            .local
            .matching(&selection)
            .into_iter()
            .filter(|p| pods::opted_in(&self.cfg, p) && existed_by(p, created))
            .filter(|p| !taken.contains(&(pods::namespace(p).to_string(), pods::name(p).to_string())))
            .collect();
        if mine.is_empty() && status.pods.is_empty() && status.phase.is_none() {
            // Nothing here; say whether any node has something (once).
            self.write_status(fs, Some(&selection), |_| {}).await;
            return;
        }
        let captures = mine.iter().map(|p| self.capture(fs, &selection, p, post_trigger));
        futures_util::future::join_all(captures).await;
    }

    /// Snapshots one pod and writes its entry: `Running` with the bundle id
    /// at once, then `Complete` or `Failed`.
    async fn capture(
        &self,
        fs: &FlightSnapshot,
        selection: &Selection,
        pod: &Pod,
        post_trigger: Option<Duration>,
    ) {
        let (ns, name) = (pods::namespace(pod).to_string(), pods::name(pod).to_string());
        let target = pods::target_name(&ns, &name);
        let kind = match fs.spec.alert.as_ref().map(|a| a.kind.as_str()) {
            Some("alertmanager") => TriggerKind::Alertmanager,
            Some("grafana") => TriggerKind::Grafana,
            _ => TriggerKind::Manual,
        };
        let reason = if fs.spec.reason.is_empty() {
            format!("FlightSnapshot {}", describe_fs(fs))
        } else {
            fs.spec.reason.clone()
        };
        let mut details = json!({
            "flightsnapshot": {
                "namespace": fs.namespace(),
                "name": fs.name_any(),
                "uid": fs.uid(),
                "reason": fs.spec.reason,
            },
            "pod": {"namespace": ns, "name": name, "node": self.cfg.node},
        });
        if let Some(alert) = &fs.spec.alert {
            details["alert"] = alert.details.clone();
        }
        let firing = Firing {
            kind,
            reason,
            fired_at: SystemTime::now(),
            details,
            post_trigger,
        };
        let outcome = if fs.spec.alert.is_some() {
            self.gate.fire(&target, self.cooldown, firing)
        } else {
            self.snapshots.fire(Some(&target), firing).map(Outcome::Started)
        };
        let set = |phase: &str, bundle: Option<String>, message: Option<String>| {
            let (ns, name, phase) = (ns.clone(), name.clone(), phase.to_string());
            move |e: &mut PodCapture| {
                e.namespace = ns.clone();
                e.name = name.clone();
                e.phase = phase.clone();
                e.bundle = bundle.clone();
                e.message = message.clone();
            }
        };
        let id = match outcome {
            Ok(Outcome::Started(ids)) if !ids.is_empty() => ids[0].clone(),
            Ok(Outcome::Started(_)) | Err(SnapshotError::UnknownTarget(_)) => {
                self.count("failed");
                let why = format!("{target} is not being recorded on this node");
                self.put_entry(fs, selection, set(FAILED, None, Some(why))).await;
                return;
            }
            Ok(Outcome::Suppressed(why)) => {
                self.count("suppressed");
                let why = format!("not captured: {}", why.label());
                self.put_entry(fs, selection, set(FAILED, None, Some(why))).await;
                return;
            }
            Err(e) => {
                self.count("failed");
                self.put_entry(fs, selection, set(FAILED, None, Some(e.to_string())))
                    .await;
                return;
            }
        };
        info!(flightsnapshot = %describe_fs(fs), target = %target, id = %id, "capturing for a FlightSnapshot");
        self.put_entry(fs, selection, set(RUNNING, Some(id.clone()), None))
            .await;
        let (phase, message) = self.until_durable(&id, post_trigger).await;
        self.count(if phase == COMPLETE { "complete" } else { "failed" });
        self.put_entry(fs, selection, set(phase, Some(id), message)).await;
    }

    /// Waits for a bundle to be durable or to fail.
    async fn until_durable(
        &self,
        id: &str,
        post_trigger: Option<Duration>,
    ) -> (&'static str, Option<String>) {
        let deadline = Instant::now() + post_trigger.unwrap_or_default() + Duration::from_secs(300);
        loop {
            match self.snapshots.progress(id) {
                Some(p) if p.phase == Phase::Complete => return (COMPLETE, None),
                Some(p) if p.phase == Phase::Failed => return (FAILED, p.error),
                None if self.snapshots.spool().bundle_dir(id).is_some() => return (COMPLETE, None),
                None => {
                    return (
                        FAILED,
                        Some("the snapshot is no longer known to the agent".into()),
                    )
                }
                Some(_) if Instant::now() > deadline => {
                    return (
                        FAILED,
                        Some(format!("not durable after {}", Secs(deadline.elapsed()))),
                    )
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .flightsnapshot_captures
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Writes (or replaces) this node's entry for one pod.
    async fn put_entry(&self, fs: &FlightSnapshot, selection: &Selection, fill: impl Fn(&mut PodCapture)) {
        let node = self.cfg.node.clone();
        self.write_status(fs, Some(selection), |st| {
            let mut entry = PodCapture {
                node: node.clone(),
                ..PodCapture::default()
            };
            fill(&mut entry);
            match st
                .pods
                .iter_mut()
                .find(|e| e.namespace == entry.namespace && e.name == entry.name)
            {
                Some(e) => *e = entry,
                None => st.pods.push(entry),
            }
        })
        .await;
    }

    /// Reads the latest FlightSnapshot, changes its status with `change`,
    /// works out the phase (when `selection` is given) and replaces it under
    /// its `resourceVersion`, again on a conflict.
    async fn write_status(
        &self,
        fs: &FlightSnapshot,
        selection: Option<&Selection>,
        change: impl Fn(&mut FlightSnapshotStatus),
    ) {
        let ns = fs.namespace().unwrap_or_default();
        let api: Api<FlightSnapshot> = Api::namespaced(self.client.clone(), &ns);
        let expected = match selection {
            Some(sel) => match self.expected(sel, fs).await {
                Ok(e) => Some(e),
                Err(message) => {
                    warn!(flightsnapshot = %describe_fs(fs), "{message}");
                    None
                }
            },
            None => None,
        };
        for _ in 0..STATUS_ATTEMPTS {
            let current = match api.get_opt(&fs.name_any()).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    warn!(flightsnapshot = %describe_fs(fs), "{}", describe("reading the FlightSnapshot", &e).1);
                    return;
                }
            };
            let mut st = current.status.clone().unwrap_or_default();
            change(&mut st);
            if let Some(expected) = &expected {
                let (phase, message) = phase_of(expected, &st.pods);
                st.phase = Some(phase.into());
                if message.is_some() || phase != FAILED {
                    st.message = message;
                }
            }
            st.pods
                .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            if current.status.as_ref() == Some(&st) {
                return;
            }
            let mut next = current;
            next.status = Some(st);
            match api
                .replace_status(&fs.name_any(), &PostParams::default(), &next)
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    let (_, message) = describe("writing the FlightSnapshot's status", &e);
                    warn!(flightsnapshot = %describe_fs(fs), "{message}");
                    return;
                }
            }
        }
        warn!(flightsnapshot = %describe_fs(fs), "status not written after {STATUS_ATTEMPTS} conflicting attempts");
    }

    /// The pods of the whole cluster the FlightSnapshot is about: those that
    /// opted in, run, and existed when it was made.
    async fn expected(
        &self,
        sel: &Selection,
        fs: &FlightSnapshot,
    ) -> Result<BTreeSet<(String, String)>, String> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&sel.selector.to_string());
        let list = api
            .list(&lp)
            .await
            .map_err(|e| describe("listing the pods a FlightSnapshot selects", &e).1)?;
        let created = fs.metadata.creation_timestamp.as_ref().map(|t| t.0);
        Ok(list
            .items
            .iter()
            .filter(|p| sel.matches(p) && pods::opted_in(&self.cfg, p) && existed_by(p, created))
            .filter(|p| pods::target_of(&self.cfg, p).ok().flatten().is_some())
            .map(|p| (pods::namespace(p).to_string(), pods::name(p).to_string()))
            .collect())
    }

    /// Deletes the FlightSnapshots older than `kubernetes.snapshot_ttl`.
    async fn sweep(&self) {
        let ttl = self.cfg.snapshot_ttl;
        let now = SystemTime::now();
        let old: Vec<(String, String)> = self
            .seen
            .lock()
            .values()
            .filter(|(_, _, created)| {
                created.as_ref().is_some_and(|c| {
                    SystemTime::from(c.0)
                        .checked_add(ttl)
                        .is_some_and(|end| end < now)
                })
            })
            .map(|(ns, name, _)| (ns.clone(), name.clone()))
            .collect();
        for (ns, name) in old {
            let api: Api<FlightSnapshot> = Api::namespaced(self.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(flightsnapshot = %format!("{ns}/{name}"), ttl = %Secs(ttl), "deleted a FlightSnapshot past kubernetes.snapshot_ttl")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => warn!(
                    "{}",
                    describe(&format!("deleting FlightSnapshot {ns}/{name}"), &e).1
                ),
            }
        }
    }
}

/// The selection and post-trigger a spec asks for.
fn read_spec(spec: &FlightSnapshotSpec) -> Result<(Selection, Option<Duration>), SpecError> {
    let selector = match &spec.selector {
        Some(s) => Selector::try_from(s.clone()).map_err(|e| SpecError::Selector(e.to_string()))?,
        None => Selector::default(),
    };
    let post_trigger = match &spec.post_trigger {
        Some(text) => Some(parse_duration(text).map_err(|_| SpecError::PostTrigger(text.clone()))?),
        None => None,
    };
    Ok((
        Selection {
            selector,
            namespaces: spec.namespaces.clone(),
            names: spec.pods.clone(),
        },
        post_trigger,
    ))
}

/// A pod made after the FlightSnapshot is not part of it.
fn existed_by(p: &Pod, created: Option<k8s_openapi::jiff::Timestamp>) -> bool {
    match (p.metadata.creation_timestamp.as_ref(), created) {
        (Some(pod), Some(fs)) => pod.0 <= fs,
        _ => true,
    }
}

/// The phase, from the pods expected and the entries written so far.
fn phase_of(expected: &BTreeSet<(String, String)>, entries: &[PodCapture]) -> (&'static str, Option<String>) {
    let finished: BTreeMap<(String, String), &str> = entries
        .iter()
        .filter(|e| e.phase == COMPLETE || e.phase == FAILED)
        .map(|e| ((e.namespace.clone(), e.name.clone()), e.phase.as_str()))
        .collect();
    if expected.is_empty() && entries.is_empty() {
        return (
            FAILED,
            Some("no running pod that opted in to flightrec (annotation flightrec.dev/port) matches".into()),
        );
    }
    let all_done = expected.iter().all(|k| finished.contains_key(k)) && finished.len() == entries.len();
    if all_done {
        if finished.values().any(|p| *p == COMPLETE) {
            return (COMPLETE, None);
        }
        return (FAILED, Some("no pod could be captured; see status.pods".into()));
    }
    if entries.is_empty() {
        (PENDING, None)
    } else {
        (RUNNING, None)
    }
}

fn describe_fs(fs: &FlightSnapshot) -> String {
    format!("{}/{}", fs.namespace().unwrap_or_default(), fs.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: &str, name: &str, phase: &str) -> PodCapture {
        PodCapture {
            namespace: ns.into(),
            name: name.into(),
            node: "n".into(),
            bundle: None,
            phase: phase.into(),
            message: None,
        }
    }

    fn set(pods: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        pods.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn the_phase_follows_the_pods_expected_and_their_entries() {
        let two = set(&[("shop", "a"), ("shop", "b")]);
        assert_eq!(phase_of(&two, &[]).0, PENDING);
        assert_eq!(phase_of(&two, &[entry("shop", "a", RUNNING)]).0, RUNNING);
        assert_eq!(phase_of(&two, &[entry("shop", "a", COMPLETE)]).0, RUNNING);
        let both = [entry("shop", "a", COMPLETE), entry("shop", "b", FAILED)];
        assert_eq!(phase_of(&two, &both).0, COMPLETE);
        let failed = [entry("shop", "a", FAILED), entry("shop", "b", FAILED)];
        assert_eq!(phase_of(&two, &failed).0, FAILED);
        let none = phase_of(&set(&[]), &[]);
        assert_eq!(none.0, FAILED);
        assert!(none.1.is_some_and(|m| m.contains("no running pod")));
    }

    #[test]
    fn a_bad_selector_or_post_trigger_is_named() {
        let spec: FlightSnapshotSpec = serde_json::from_value(json!({
            "selector": {"matchExpressions": [{"key": "app", "operator": "Sometimes", "values": ["x"]}]},
        }))
        .expect("spec");
        let e = read_spec(&spec).expect_err("bad operator");
        assert!(e.to_string().contains("spec.selector"), "{e}");
        let spec: FlightSnapshotSpec = serde_json::from_value(json!({"postTrigger": "soon"})).expect("spec");
        assert!(read_spec(&spec)
            .expect_err("bad duration")
            .to_string()
            .contains("spec.postTrigger"));
    }
}
