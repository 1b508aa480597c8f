//! Snapshot: turns a trigger into bundles: freeze the ring, keep recording for `post_trigger`, write atomically.
//!
//! Takes in: a [`Firing`] (from a trigger through its gate, the API, the
//! CLI, Kubernetes) for one target or all, and its [`Scope`]: a crash (or a
//! departed target) is written up to its last window at once, with no
//! post-trigger recording. Hands on: a bundle written aside
//! with [`crate::bundle::BundleWriter`] and committed to the spool of
//! [`crate::deliver`]; the snapshot is acknowledged only once committed,
//! and queued for delivery once its derived files are made (`derive`).
//! Owns: the frozen windows (`Arc` clones of the ring's, no copy) until they
//! are on disk, and the progress of every snapshot the API shows.

mod derive;
mod events;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::bundle::{BundleMeta, BundleWriter, Death, TargetInfo, Trigger};
use crate::config::Config;

use crate::collect::Fleet;
use crate::deliver::spool::Spool;
use crate::ring::window::Window;
use crate::ring::{Frozen, Rings};
use crate::telemetry::{KindResult, Metrics};

/// What fired a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    Manual,
    Latency,
    Metric,
    Alertmanager,
    Grafana,
    Crash,
    Trace,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Manual => "manual",
            TriggerKind::Latency => "latency",
            TriggerKind::Metric => "metric",
            TriggerKind::Alertmanager => "alertmanager",
            TriggerKind::Grafana => "grafana",
            TriggerKind::Crash => "crash",
            TriggerKind::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Firing {
    pub kind: TriggerKind,
    pub reason: String,
    pub fired_at: SystemTime,
    pub details: serde_json::Value,
    /// How long to keep recording after the trigger, when not the
    /// configured `snapshots.post_trigger` (a FlightSnapshot may say).
    pub post_trigger: Option<Duration>,
}

impl Firing {
    pub fn manual(reason: impl Into<String>) -> Self {
        Firing {
            kind: TriggerKind::Manual,
            reason: reason.into(),
            fired_at: SystemTime::now(),
            details: serde_json::json!({}),
            post_trigger: None,
        }
    }
}

/// What a firing writes.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The ring as frozen now and `post_trigger` more: every trigger but a
    /// crash.
    PostTrigger,
    /// The ring's windows up to and including window `last_seq`, written at
    /// once: the target is gone (dead, or no longer recorded), so nothing
    /// newer belongs with what happened. `death` says how it died.
    UpTo { last_seq: u64, death: Option<Death> },
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("unknown target {0:?}; GET /v1/targets lists the configured ones")]
    UnknownTarget(String),
    #[error("agent is shutting down; no new snapshots")]
    ShuttingDown,
    #[error(transparent)]
    SpoolFull(#[from] crate::deliver::spool::Refusal),
}

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Ring frozen; recording `post_trigger` more.
    Recording,
    /// Writing files.
    Writing,
    /// Durable on disk.
    Complete,
    Failed,
}

/// A snapshot the agent is making or has made since it started.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub id: String,
    pub target: String,
    pub phase: Phase,
    pub trigger_kind: TriggerKind,
    pub reason: String,
    pub fired_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct TargetMeta {
    info: TargetInfo,
    window: Duration,
}

pub struct Snapshots {
    rings: Arc<Rings>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    /// The targets recorded now (they change on reload).
    fleet: Arc<Fleet>,
    post_trigger: Duration,
    progress: Mutex<BTreeMap<String, Progress>>,
    tasks: TaskTracker,
    /// Cancelled once every collector has stopped: no window will come.
    recording_stopped: CancellationToken,
    /// Cancelled when the agent starts shutting down: no new snapshots.
    closing: CancellationToken,
}

/// How many finished snapshots are remembered in memory for the API.
const REMEMBER: usize = 256;

impl Snapshots {
    pub fn new(
        config: &Config,
        fleet: Arc<Fleet>,
        rings: Arc<Rings>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        recording_stopped: CancellationToken,
        closing: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Snapshots {
            rings,
            spool,
            metrics,
            fleet,
            post_trigger: config.snapshots.post_trigger,
            progress: Mutex::new(BTreeMap::new()),
            tasks: TaskTracker::new(),
            recording_stopped,
            closing,
        })
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    pub fn target_names(&self) -> Vec<String> {
        self.fleet.names()
    }

    /// Freezes the ring of `target` (or of every target) now and starts the
    /// bundles in the background. Returns their ids at once.
    pub fn fire(
        self: &Arc<Self>,
        target: Option<&str>,
        firing: Firing,
    ) -> Result<Vec<String>, SnapshotError> {
        self.fire_scoped(target, firing, Scope::PostTrigger)
    }

    /// [`Snapshots::fire`], writing what `scope` says. A target that has
    /// departed is always written as frozen: no window will come.
    pub fn fire_scoped(
        self: &Arc<Self>,
        target: Option<&str>,
        firing: Firing,
        scope: Scope,
    ) -> Result<Vec<String>, SnapshotError> {
        if self.closing.is_cancelled() {
            return Err(SnapshotError::ShuttingDown);
        }
        let names: Vec<String> = match target {
            Some(t) if self.fleet.get(t).is_some() => vec![t.to_string()],
            Some(t) => return Err(SnapshotError::UnknownTarget(t.to_string())),
            // A departed target whose windows all aged out has nothing to give.
            None => self
                .fleet
                .names()
                .into_iter()
                .filter(|n| !self.fleet.is_departed(n) || self.rings.status(n).is_some_and(|r| r.windows > 0))
                .collect(),
        };
        let mut ids = Vec::with_capacity(names.len());
        let mut refused = None;
        for name in names {
            // What the bundle says of its target is fixed when it fires.
            let Some(meta) = self.fleet.get(&name).map(|t| TargetMeta {
                info: TargetInfo {
                    name: t.name.clone(),
                    url: t.public_url(),
                    labels: t.labels.clone(),
                },
                window: t.window,
            }) else {
                continue;
            };
            let Some((mut frozen, feed)) = self.rings.freeze(&name) else {
                continue;
            };
            let scope = match &scope {
                Scope::PostTrigger if self.fleet.is_departed(&name) => Scope::UpTo {
                    last_seq: u64::MAX,
                    death: None,
                },
                s => s.clone(),
            };
            if let Scope::UpTo { last_seq, .. } = scope {
                frozen.retain(|w| w.seq <= last_seq);
            }
            let id = new_id(firing.fired_at, &name);
            // What the ring holds now; post_trigger adds a little more,
            // which the quota absorbs as a soft limit.
            let estimate: u64 = frozen
                .iter()
                .map(|w| w.raw_len + w.tail.map_or(0, |t| t.bytes))
                .sum();
            if let Err(r) = self.spool.admit(&id, estimate) {
                events::snapshot_refused(&self.metrics, &name, firing.kind.as_str(), &r);
                refused = Some(r);
                continue;
            }
            let after = match scope {
                Scope::PostTrigger => {
                    crate::units::Secs(firing.post_trigger.unwrap_or(self.post_trigger)).to_string()
                }
                Scope::UpTo { .. } => "nothing".into(),
            };
            info!(
                target = %name, id = %id, kind = firing.kind.as_str(), reason = %firing.reason,
                windows = frozen.len(), "snapshot triggered; ring frozen, recording {after} more"
            );
            self.set_progress(Progress {
                id: id.clone(),
                target: name.clone(),
                phase: Phase::Recording,
                trigger_kind: firing.kind,
                reason: firing.reason.clone(),
                fired_at: crate::units::rfc3339(firing.fired_at),
                path: None,
                error: None,
            });
            let this = self.clone();
            let firing = firing.clone();
            let id2 = id.clone();
            self.tasks
                .spawn(async move { this.make(id2, name, meta, firing, (frozen, feed), scope).await });
            ids.push(id);
        }
        match refused {
            Some(r) if ids.is_empty() => Err(SnapshotError::SpoolFull(r)),
            _ => Ok(ids),
        }
    }

    /// Waits for every snapshot in flight, up to `deadline`. Returns how many
    /// were still unfinished.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait()).await.is_err() {
            return self
                .progress
                .lock()
                .values()
                .filter(|p| matches!(p.phase, Phase::Recording | Phase::Writing))
                .count();
        }
        0
    }

    pub fn progress(&self, id: &str) -> Option<Progress> {
        self.progress.lock().get(id).cloned()
    }

    /// Snapshots not yet durable (recording or writing) or failed since start.
    pub fn unfinished(&self) -> Vec<Progress> {
        self.progress
            .lock()
            .values()
            .filter(|p| p.phase != Phase::Complete)
            .cloned()
            .collect()
    }

    fn set_progress(&self, p: Progress) {
        let mut all = self.progress.lock();
        all.insert(p.id.clone(), p);
        while all.len() > REMEMBER {
            let done = all
                .iter()
                .find(|(_, p)| matches!(p.phase, Phase::Complete | Phase::Failed))
                .map(|(k, _)| k.clone());
            match done {
                Some(k) => {
                    all.remove(&k);
                }
                None => break,
            }
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Progress)) {
        if let Some(p) = self.progress.lock().get_mut(id) {
            f(p);
        }
    }

    /// Records `post_trigger` more and writes the bundle. The frozen windows
    /// are written while post-trigger recording goes on, each window as it
    /// arrives, so once the last one is in only it and the manifests remain:
    /// the bundle is durable soon after recording ends whatever the ring's
    /// size, and each window's bytes are freed once on disk.
    async fn make(
        self: Arc<Self>,
        id: String,
        target: String,
        meta: TargetMeta,
        firing: Firing,
        (frozen, mut feed): Frozen,
        scope: Scope,
    ) {
        let (post_trigger, death, as_frozen) = match scope {
            Scope::PostTrigger => (firing.post_trigger.unwrap_or(self.post_trigger), None, false),
            Scope::UpTo { death, .. } => (Duration::ZERO, death, true),
        };
        let until = firing.fired_at + post_trigger;
        // Enough for the window in flight to end, one more to start and end
        // after `until`, and slack for a slow target.
        let give_up = Instant::now() + post_trigger + meta.window * 2 + Duration::from_secs(10);
        let last_frozen = frozen.last().map_or(0, |w| w.seq);
        // Sending must not wait on the disk: the feed drops windows for a
        // snapshot that stops reading it.
        let (tx, rx) = tokio::sync::mpsc::channel::<Arc<Window>>(frozen.len() + POST_TRIGGER_WINDOWS);
        let writer = {
            let tmp = self.spool.partial_dir(&id);
            let id = id.clone();
            tokio::task::spawn_blocking(move || write_windows(&tmp, &id, rx))
        };
        let mut queue = Outbox {
            tx,
            last: None,
            open: true,
        };
        for w in frozen {
            queue.send(w).await;
        }
        let done =
            |last: Option<(u64, SystemTime)>| last.is_some_and(|(seq, at)| seq > last_frozen && at >= until);
        // Written as frozen: the target is gone, nothing newer will come.
        let mut complete = as_frozen;
        while !complete {
            if done(queue.last) {
                complete = true;
                break;
            }
            if !queue.open {
                // The writer failed; its error is reported below.
                break;
            }
            tokio::select! {
                got = feed.recv() => match got {
                    Ok(w) => queue.send(w).await,
                    Err(RecvError::Lagged(n)) => warn!(target = %target, id = %id, missed = n, "snapshot missed windows while waiting"),
                    Err(RecvError::Closed) => break,
                },
                _ = tokio::time::sleep_until(give_up.into()) => {
                    warn!(target = %target, id = %id, "target produced no window covering post_trigger in time; writing what was recorded");
                    break;
                }
                _ = self.recording_stopped.cancelled() => {
                    while let Ok(w) = feed.try_recv() {
                        queue.send(w).await;
                    }
                    complete = done(queue.last);
                    break;
                }
            }
        }
        drop(feed);
        // Closing the queue lets the writer finish the last window.
        drop(queue);
        self.update(&id, |p| p.phase = Phase::Writing);
        let started = Instant::now();
        let bundle_meta = BundleMeta {
            id: id.clone(),
            target: meta.info.clone(),
            trigger: Trigger {
                kind: firing.kind.as_str().into(),
                reason: firing.reason.clone(),
                fired_at: crate::units::rfc3339(firing.fired_at),
                details: firing.details.clone(),
            },
            post_trigger_seconds: post_trigger.as_secs_f64(),
            post_trigger_complete: complete,
            death,
        };
        let written = match writer.await {
            Ok(Ok(w)) => {
                let spool = self.spool.clone();
                let id2 = id.clone();
                tokio::task::spawn_blocking(move || {
                    if w.windows() == 0 {
                        return Err("the ring held no window and none arrived; is the target being recorded? (GET /v1/targets)".to_string());
                    }
                    let m = w.finish(&bundle_meta).map_err(|e| e.to_string())?;
                    spool.commit_to_finish(&id2, &m).map(|p| (p, m)).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("bundle writer panicked: {e}")))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("bundle writer panicked: {e}")),
        };
        if written.is_err() {
            let spool = self.spool.clone();
            let id2 = id.clone();
            let _ = tokio::task::spawn_blocking(move || spool.discard(&id2)).await;
        }
        self.spool.release(&id);
        let kind = firing.kind.as_str().to_string();
        match written {
            Ok((path, manifest)) => {
                self.metrics
                    .snapshot_write
                    .observe(started.elapsed().as_secs_f64());
                self.metrics
                    .snapshots
                    .get_or_create(&KindResult {
                        kind,
                        result: "written".into(),
                    })
                    .inc();
                info!(
                    target = %target, id = %id, path = %path.display(), windows = manifest.windows.len(),
                    bytes = manifest.total_bytes(), post_trigger_complete = complete,
                    "snapshot bundle durable on disk"
                );
                self.update(&id, |p| {
                    p.phase = Phase::Complete;
                    p.path = Some(path.clone());
                });
                // Acknowledged above: the derived files never delay it.
                self.finish_bundle(&id, path).await;
            }
            Err(why) => {
                self.metrics
                    .snapshots
                    .get_or_create(&KindResult {
                        kind,
                        result: "failed".into(),
                    })
                    .inc();
                error!(target = %target, id = %id, error = %why, "snapshot failed");
                self.update(&id, |p| {
                    p.phase = Phase::Failed;
                    p.error = Some(why);
                });
            }
        }
    }
}

/// Room in the writer's queue beyond the frozen windows: more than
/// post-trigger recording brings at sane settings (it lasts `post_trigger` +
/// 2 windows + 10 s). Past it the snapshot waits for the writer, which only
/// happens when the disk is slower than the target's trace.
const POST_TRIGGER_WINDOWS: usize = 256;

/// The snapshot's side of the writer's queue: passes each window once, in
/// sequence order, and remembers the last one for the post-trigger rule.
struct Outbox {
    tx: tokio::sync::mpsc::Sender<Arc<Window>>,
    last: Option<(u64, SystemTime)>,
    /// False once the writer has stopped (it failed; its error says why).
    open: bool,
}

impl Outbox {
    async fn send(&mut self, w: Arc<Window>) {
        if self.last.is_some_and(|(seq, _)| w.seq <= seq) {
            return;
        }
        self.last = Some((w.seq, w.received_at));
        if self.open && self.tx.send(w).await.is_err() {
            self.open = false;
        }
    }
}

/// The bundle writer: writes each window it is sent, in order, until the
/// queue closes or a write fails.
fn write_windows(
    tmp: &std::path::Path,
    id: &str,
    mut rx: tokio::sync::mpsc::Receiver<Arc<Window>>,
) -> Result<BundleWriter, crate::bundle::BundleError> {
    let mut writer = BundleWriter::create(tmp, id)?;
    while let Some(w) = rx.blocking_recv() {
        writer.add(&w)?;
    }
    Ok(writer)
}

/// `<UTC time>-<target>-<random>`: sorts by time, names the target, and two
/// triggers in the same millisecond still differ.
fn new_id(at: SystemTime, target: &str) -> String {
    format!(
        "{}-{}-{:04x}",
        crate::units::compact_time(at),
        target,
        rand::random::<u16>()
    )
}
