//! The spool is the ledger: durable bundles under `snapshots.dir` and, per bundle, what each sink has.
//!
//! Bundles are assembled in `.partial/<id>/` and renamed to `<id>/` once every
//! file is fsynced; only then is a snapshot acknowledged. Anything left in
//! `.partial/` after a crash was never acknowledged and is removed at startup;
//! a directory without a leading dot is always a whole bundle. Files derived
//! from a bundle afterwards (its report.html) are renamed into it whole; a
//! dot file `*.tmp` an interrupted one left in the spool is removed too.
//!
//! Delivery state lives beside the bundles in `.ledger/<id>.json`, one small
//! file per bundle written aside, fsynced and renamed, never inside the
//! bundle directory (whose bytes are exactly what the manifest hashes). The
//! in-memory index is rebuilt from disk at startup: a bundle without a ledger
//! file is pending for every configured sink, so a crash between commit and
//! delivery loses nothing; a crash after an upload but before its ledger
//! write delivers the bundle again under the same keys.
//!
//! Quotas (`max_bytes`, `max_bundles`) are met by evicting bundles that every
//! sink has (oldest first). An undelivered bundle is never evicted to make
//! room: new snapshots are refused instead. The one exception is a bundle
//! that is damaged on disk for some sink (it can never be delivered there);
//! it is evicted like a delivered one, and that eviction is logged and counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::{info, warn};

use super::events;
use super::ledger::{read_ledger, write_ledger, LedgerFile};
pub use super::ledger::{DeliveryState, SinkState};
use crate::bundle::{self, Manifest};
use crate::deliver::sink::{BundleRef, Delivered, SinkError};
use crate::telemetry::Metrics;

const PARTIAL: &str = ".partial";
const LEDGER: &str = ".ledger";
const TRASH: &str = ".trash";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot use spool directory {dir}: {source}; check that it exists and is writable by the agent")]
    Open {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move bundle {id} into place in {dir}: {source}")]
    Commit {
        id: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why a new snapshot cannot be taken now.
#[derive(Debug, Clone, thiserror::Error)]
#[error("spool {dir} is full: {why}, and every bundle in it still waits for delivery, so nothing can be freed; fix the sinks (GET /v1/snapshots shows their last error) or raise snapshots.{key}")]
pub struct Refusal {
    pub dir: String,
    pub why: String,
    /// The quota that refused: `max_bytes` or `max_bundles`.
    pub key: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_bytes: u64,
    pub max_bundles: usize,
}

#[derive(Debug)]
struct Record {
    target: String,
    bytes: u64,
    created: SystemTime,
    /// Every sink the ledger mentions, configured or not (an entry for a
    /// sink removed from the config is kept, so adding it back does not
    /// deliver everything again).
    sinks: BTreeMap<String, SinkState>,
    /// Sinks delivering this bundle right now.
    in_flight: BTreeSet<String>,
    /// Durable, its derived files being made ([`crate::bundle::finish`]):
    /// not delivered nor evicted until [`Spool::finished`].
    finishing: bool,
}

#[derive(Default)]
struct Index {
    bundles: BTreeMap<String, Record>,
    /// Snapshots being made: their estimated bytes, held against the quota.
    reserved: BTreeMap<String, u64>,
}

pub struct Spool {
    dir: PathBuf,
    sinks: Vec<String>,
    quota: Quota,
    index: Mutex<Index>,
    changed: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl Spool {
    /// Creates the directories if needed, clears half-written bundles, and
    /// rebuilds the delivery index from the bundles and the ledger.
    pub fn open(
        dir: &Path,
        sinks: &[String],
        quota: Quota,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SpoolError> {
        let fail = |source| SpoolError::Open {
            dir: dir.to_path_buf(),
            source,
        };
        for sub in [PARTIAL, LEDGER, TRASH] {
            fs::create_dir_all(dir.join(sub)).map_err(fail)?;
        }
        for sub in [PARTIAL, TRASH] {
            for entry in fs::read_dir(dir.join(sub)).map_err(fail)?.flatten() {
                let path = entry.path();
                if sub == PARTIAL {
                    warn!(path = %path.display(), "removing a bundle left half-written by an earlier run; it was never acknowledged");
                }
                if let Err(e) = fs::remove_dir_all(&path) {
                    warn!(path = %path.display(), error = %e, "cannot remove leftover directory");
                }
            }
        }
        // A file derived from a committed bundle (its report.html) is
        // written as a dot file beside the bundle, then renamed in; one that
        // an interrupted write left behind is removed.
        for entry in fs::read_dir(dir).map_err(fail)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.ends_with(".tmp") && entry.file_type().is_ok_and(|t| t.is_file())
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        let probe = dir.join(PARTIAL).join(".write-test");
        fs::write(&probe, b"ok").map_err(fail)?;
        let _ = fs::remove_file(&probe);
        // Absolute, so paths in API answers and logs work from anywhere.
        let dir = dir.canonicalize().map_err(fail)?;
        let spool = Spool {
            dir,
            sinks: sinks.to_vec(),
            quota,
            index: Mutex::new(Index::default()),
            changed: watch::Sender::new(0),
            metrics,
        };
        spool.rebuild();
        Ok(spool)
    }

    fn rebuild(&self) {
        let mut bundles = BTreeMap::new();
        for (path, m) in self.list() {
            let ledger = read_ledger(&self.ledger_path(&m.id));
            let mut record = self.record(&path, &m, ledger.clone().unwrap_or_default());
            if m.derived.is_none() {
                // Acknowledged, but the agent stopped before its derived
                // files were made: made now, unless a sink has seen it
                // (then it goes as it is, the same bytes to every sink).
                match ledger {
                    None => record.finishing = true,
                    Some(_) => events::delivered_without_derived(&self.metrics, &m.id),
                }
            }
            bundles.insert(m.id.clone(), record);
        }
        // Ledger files whose bundle is gone (a crash mid-eviction) and
        // temporary files of interrupted ledger writes.
        if let Ok(entries) = fs::read_dir(self.dir.join(LEDGER)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let keep = name
                    .strip_suffix(".json")
                    .is_some_and(|id| bundles.contains_key(id));
                if !keep {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
        for r in bundles.values() {
            for s in r.sinks.keys().filter(|s| !self.sinks.contains(s)) {
                *unknown.entry(s.clone()).or_default() += 1;
            }
        }
        for (sink, n) in &unknown {
            warn!(sink = %sink, bundles = n, "the delivery ledger mentions a sink that is no longer configured; its entries are kept but ignored");
        }
        let mut index = self.index.lock();
        index.bundles = bundles;
        let waiting: Vec<(String, usize)> = self
            .sinks
            .iter()
            .map(|s| {
                let n = index.bundles.values().filter(|r| is_pending(r, s)).count();
                (s.clone(), n)
            })
            .collect();
        info!(
            dir = %self.dir.display(), bundles = index.bundles.len(),
            bytes = index.bundles.values().map(|r| r.bytes).sum::<u64>(),
            "spool ready"
        );
        for (sink, n) in waiting.into_iter().filter(|(_, n)| *n > 0) {
            info!(sink = %sink, bundles = n, "bundles from an earlier run still to deliver");
        }
        self.update_gauges(&index);
    }

    fn record(&self, path: &Path, m: &Manifest, mut sinks: BTreeMap<String, SinkState>) -> Record {
        for s in &self.sinks {
            sinks.entry(s.clone()).or_insert_with(SinkState::pending);
        }
        let created = humantime::parse_rfc3339(&m.created_at)
            .ok()
            .or_else(|| fs::metadata(path).and_then(|md| md.modified()).ok())
            .unwrap_or_else(SystemTime::now);
        Record {
            target: m.target.name.clone(),
            bytes: dir_bytes(path),
            created,
            sinks,
            in_flight: BTreeSet::new(),
            finishing: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn sinks(&self) -> &[String] {
        &self.sinks
    }

    /// Where a bundle is assembled before it is committed.
    pub fn partial_dir(&self, id: &str) -> PathBuf {
        self.dir.join(PARTIAL).join(id)
    }

    fn ledger_path(&self, id: &str) -> PathBuf {
        self.dir.join(LEDGER).join(format!("{id}.json"))
    }

    /// Holds room for a snapshot about to be made, or says why there is none.
    /// Only undelivered bundles count: delivered ones are evicted at commit.
    pub fn admit(&self, id: &str, estimate: u64) -> Result<(), Refusal> {
        let mut index = self.index.lock();
        let waiting: Vec<&Record> = index.bundles.values().filter(|r| !self.evictable(r)).collect();
        let count = waiting.len() + index.reserved.len() + 1;
        let bytes =
            waiting.iter().map(|r| r.bytes).sum::<u64>() + index.reserved.values().sum::<u64>() + estimate;
        let refusal = if count > self.quota.max_bundles {
            Some(Refusal {
                dir: self.dir.display().to_string(),
                why: format!(
                    "{} undelivered bundles or snapshots in progress, max_bundles is {}",
                    count - 1,
                    self.quota.max_bundles
                ),
                key: "max_bundles",
            })
        } else if bytes > self.quota.max_bytes {
            Some(Refusal {
                dir: self.dir.display().to_string(),
                why: format!(
                    "{} undelivered plus about {} for this snapshot exceed max_bytes {}",
                    crate::units::Bytes(bytes - estimate),
                    crate::units::Bytes(estimate),
                    crate::units::Bytes(self.quota.max_bytes)
                ),
                key: "max_bytes",
            })
        } else {
            None
        };
        match refusal {
            Some(r) => Err(r),
            None => {
                index.reserved.insert(id.to_string(), estimate);
                Ok(())
            }
        }
    }

    /// Gives back the room held by `admit` (the snapshot failed or was written).
    pub fn release(&self, id: &str) {
        self.index.lock().reserved.remove(id);
    }

    /// Renames the assembled bundle into place and makes the rename durable;
    /// from here on it is acknowledged and queued for every sink.
    pub fn commit(&self, id: &str, manifest: &Manifest) -> Result<PathBuf, SpoolError> {
        self.commit_as(id, manifest, false)
    }

    /// [`Spool::commit`], but the bundle is queued only once
    /// [`Spool::finished`] says its derived files are made.
    pub fn commit_to_finish(&self, id: &str, manifest: &Manifest) -> Result<PathBuf, SpoolError> {
        self.commit_as(id, manifest, true)
    }

    /// Bundles durable but not finished, from an earlier run: their ids and
    /// directories, oldest first.
    pub fn unfinished(&self) -> Vec<(String, PathBuf)> {
        let index = self.index.lock();
        index
            .bundles
            .iter()
            .filter(|(_, r)| r.finishing)
            .map(|(id, _)| (id.clone(), self.dir.join(id)))
            .collect()
    }

    /// Queues a bundle committed with [`Spool::commit_to_finish`] for
    /// delivery, its size counted again with the derived files.
    pub fn finished(&self, id: &str) {
        let mut index = self.index.lock();
        let Some(r) = index.bundles.get_mut(id) else {
            return;
        };
        r.finishing = false;
        r.bytes = dir_bytes(&self.dir.join(id));
        self.enforce_quota(&mut index, Some(id));
        self.update_gauges(&index);
        drop(index);
        self.changed.send_modify(|n| *n += 1);
    }

    fn commit_as(&self, id: &str, manifest: &Manifest, finishing: bool) -> Result<PathBuf, SpoolError> {
        let fail = |source| SpoolError::Commit {
            id: id.to_string(),
            dir: self.dir.clone(),
            source,
        };
        let dest = self.dir.join(id);
        fs::rename(self.partial_dir(id), &dest).map_err(fail)?;
        bundle::sync_dir(&self.dir).map_err(fail)?;
        let mut record = self.record(&dest, manifest, BTreeMap::new());
        record.finishing = finishing;
        {
            let mut index = self.index.lock();
            index.reserved.remove(id);
            index.bundles.insert(id.to_string(), record);
            // The bundle just acknowledged stays even if it alone is over
            // the quota: it was accepted by admit().
            self.enforce_quota(&mut index, Some(id));
            self.update_gauges(&index);
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(dest)
    }

    /// Drops a bundle that failed while being assembled.
    pub fn discard(&self, id: &str) {
        let _ = fs::remove_dir_all(self.partial_dir(id));
        self.release(id);
    }

    /// Wakes up whenever a bundle is committed or a delivery finishes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Takes the next bundle to deliver to `sink`: never tried ones oldest
    /// first, then the least recently tried, so one bundle a sink keeps
    /// refusing does not hold back the others. Reads its manifest from disk.
    pub fn next_for(&self, sink: &str) -> Option<BundleRef> {
        loop {
            let id = {
                let mut index = self.index.lock();
                let id = index
                    .bundles
                    .iter()
                    .filter(|(_, r)| is_pending(r, sink) && !r.in_flight.contains(sink) && !r.finishing)
                    .min_by_key(|(id, r)| (r.sinks.get(sink).and_then(|s| s.tried), id.as_str()))
                    .map(|(id, _)| id.clone())?;
                if let Some(r) = index.bundles.get_mut(&id) {
                    r.in_flight.insert(sink.to_string());
                }
                id
            };
            let dir = self.dir.join(&id);
            match bundle::read_manifest(&dir) {
                Ok(manifest) => return Some(BundleRef { id, dir, manifest }),
                Err(e) => {
                    let err = SinkError::Damaged {
                        id: id.clone(),
                        why: e.to_string(),
                    };
                    self.finish(&id, sink, Err(&err));
                }
            }
        }
    }

    /// Records the outcome of one delivery attempt, durably, and frees room
    /// if the bundle is now delivered everywhere.
    pub fn finish(&self, id: &str, sink: &str, outcome: Result<&Delivered, &SinkError>) {
        let mut index = self.index.lock();
        let Some(r) = index.bundles.get_mut(id) else {
            return;
        };
        r.in_flight.remove(sink);
        let now = crate::units::rfc3339(SystemTime::now());
        let s = r.sinks.entry(sink.to_string()).or_insert_with(SinkState::pending);
        s.attempts += 1;
        s.last_attempt_at = Some(now.clone());
        s.tried = Some(Instant::now());
        match outcome {
            Ok(d) => {
                s.state = DeliveryState::Delivered;
                s.delivered_at = Some(now);
                s.location = Some(d.location.clone());
                s.last_error = None;
            }
            Err(e) => {
                s.last_error = Some(e.to_string());
                if e.is_permanent() {
                    s.state = DeliveryState::Failed;
                }
            }
        }
        let file = LedgerFile {
            id: id.to_string(),
            sinks: r.sinks.clone(),
        };
        if let Err(e) = write_ledger(&self.dir.join(LEDGER), &file) {
            // The bundle stays; after a restart it is delivered again under
            // the same keys, which the sinks make harmless.
            events::ledger_write_failed(id, &e);
        }
        self.enforce_quota(&mut index, None);
        self.update_gauges(&index);
        drop(index);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forgets an attempt cut short by shutdown: no outcome, nothing recorded.
    pub fn abandon(&self, id: &str, sink: &str) {
        if let Some(r) = self.index.lock().bundles.get_mut(id) {
            r.in_flight.remove(sink);
        }
    }

    /// Bundles not yet delivered to `sink` (damaged ones excluded).
    pub fn pending_count(&self, sink: &str) -> usize {
        self.index
            .lock()
            .bundles
            .values()
            .filter(|r| is_pending(r, sink))
            .count()
    }

    /// Per configured sink, where a bundle is; `None` for an unknown id.
    pub fn deliveries(&self, id: &str) -> Option<BTreeMap<String, SinkState>> {
        let index = self.index.lock();
        let r = index.bundles.get(id)?;
        Some(
            r.sinks
                .iter()
                .filter(|(s, _)| self.sinks.contains(s))
                .map(|(s, st)| (s.clone(), st.clone()))
                .collect(),
        )
    }

    /// A bundle may go once no configured sink still waits for it.
    fn evictable(&self, r: &Record) -> bool {
        r.in_flight.is_empty() && !r.finishing && self.sinks.iter().all(|s| !is_pending(r, s))
    }

    fn enforce_quota(&self, index: &mut Index, keep: Option<&str>) {
        loop {
            let bytes: u64 = index.bundles.values().map(|r| r.bytes).sum();
            let over_bytes = bytes > self.quota.max_bytes;
            let over_count = index.bundles.len() > self.quota.max_bundles;
            if !over_bytes && !over_count {
                return;
            }
            let victim = index
                .bundles
                .iter()
                .filter(|(id, r)| self.evictable(r) && Some(id.as_str()) != keep)
                .min_by_key(|(id, r)| (r.created, id.as_str()))
                .map(|(id, _)| id.clone());
            let Some(id) = victim else {
                // Only undelivered bundles left: they stay, and admit()
                // refuses new snapshots until deliveries catch up.
                return;
            };
            let Some(r) = index.bundles.remove(&id) else {
                return;
            };
            let reason = if over_bytes { "max_bytes" } else { "max_bundles" };
            let damaged: Vec<&str> = self
                .sinks
                .iter()
                .filter(|s| {
                    r.sinks
                        .get(*s)
                        .is_some_and(|st| st.state == DeliveryState::Failed)
                })
                .map(String::as_str)
                .collect();
            match self.evict(&id) {
                Ok(()) => events::spool_evicted(&self.metrics, &id, &r.target, r.bytes, reason, &damaged),
                Err(e) => {
                    warn!(id = %id, error = %e, "cannot evict bundle from the spool; it stays");
                    index.bundles.insert(id, r);
                    return;
                }
            }
        }
    }

    /// Moves the bundle out of sight atomically, then deletes it and its ledger entry.
    fn evict(&self, id: &str) -> io::Result<()> {
        let trash = self.dir.join(TRASH).join(id);
        fs::rename(self.dir.join(id), &trash)?;
        bundle::sync_dir(&self.dir)?;
        let _ = fs::remove_file(self.ledger_path(id));
        let _ = bundle::sync_dir(&self.dir.join(LEDGER));
        fs::remove_dir_all(&trash)
    }

    /// Refreshes the spool and delivery gauges; called at scrape time so
    /// ages are current.
    pub fn refresh_gauges(&self) {
        let index = self.index.lock();
        self.update_gauges(&index);
    }

    fn update_gauges(&self, index: &Index) {
        let m = &self.metrics;
        m.spool_bytes
            .set(index.bundles.values().map(|r| r.bytes).sum::<u64>() as i64);
        m.spool_bundles.set(index.bundles.len() as i64);
        let now = SystemTime::now();
        for sink in &self.sinks {
            let labels = m.sink(sink);
            let states = || {
                index
                    .bundles
                    .values()
                    .filter_map(|r| r.sinks.get(sink).map(|s| (r, s)))
            };
            let pending = states().filter(|(_, s)| s.state == DeliveryState::Pending);
            let (mut n, mut retrying, mut oldest) = (0i64, 0i64, None::<SystemTime>);
            for (r, s) in pending {
                n += 1;
                if s.attempts > 0 {
                    retrying += 1;
                }
                oldest = Some(oldest.map_or(r.created, |o| o.min(r.created)));
            }
            let failed = states().filter(|(_, s)| s.state == DeliveryState::Failed).count();
            m.delivery_pending.get_or_create(&labels).set(n);
            m.delivery_retrying.get_or_create(&labels).set(retrying);
            m.delivery_failed_bundles
                .get_or_create(&labels)
                .set(failed as i64);
            let age = oldest.map_or(0.0, |o| now.duration_since(o).unwrap_or_default().as_secs_f64());
            m.delivery_oldest_age.get_or_create(&labels).set(age);
        }
    }

    /// The directory of a committed bundle, if `id` is a valid id that exists.
    pub fn bundle_dir(&self, id: &str) -> Option<PathBuf> {
        if !valid_id(id) {
            return None;
        }
        let dir = self.dir.join(id);
        dir.join(bundle::MANIFEST_JSON).is_file().then_some(dir)
    }

    /// Every committed bundle with its manifest, oldest first.
    pub fn list(&self) -> Vec<(PathBuf, Manifest)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, Manifest)> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(valid_id))
            .filter_map(|e| {
                let path = e.path();
                let m = bundle::read_manifest(&path).ok()?;
                Some((path, m))
            })
            .collect();
        out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        out
    }
}

fn is_pending(r: &Record, sink: &str) -> bool {
    r.sinks
        .get(sink)
        .is_none_or(|s| s.state == DeliveryState::Pending)
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Bundle ids are generated by the agent; anything else in a path is refused,
/// which also rules out traversal (`..`, `/`, percent-decoded or not).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 160
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
