//! The atomic bundle writer: every file written aside and fsynced, then the directory renamed into place.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flightrec_proto::Message;
use sha2::{Digest, Sha256};

use super::{
    BundleError, CoverageInfo, Ending, FileEntry, Manifest, SummaryEntry, TailEntry, TargetInfo, Trigger,
    WindowEntry, MANIFEST_JSON, MANIFEST_PB,
};
use crate::ring::coverage;
use crate::ring::window::{Span, Window};
use crate::units::{compact_time, rfc3339};

/// What a snapshot needs besides its windows.
#[derive(Debug, Clone)]
pub struct BundleMeta {
    pub id: String,
    pub target: TargetInfo,
    pub trigger: Trigger,
    pub post_trigger_seconds: f64,
    pub post_trigger_complete: bool,
    /// Set when the target died: the bundle then ends at its death.
    pub death: Option<Death>,
}

/// A target's death, as the agent saw it.
#[derive(Debug, Clone)]
pub struct Death {
    /// In words: "stream cut 1.4 s into a 2 s window, then connection refused".
    pub seen: String,
    /// When the stream was cut (agent clock).
    pub at: SystemTime,
    /// The end of the target's own log, when its platform keeps one (a
    /// crashed container's previous log on Kubernetes).
    pub log: Option<bytes::Bytes>,
}

/// The file a target's log is kept in.
pub const LOG_FILE: &str = "target.log";

/// Assembles one bundle in `tmp`: window files as their windows come (a
/// snapshot writes the frozen ring while it still records post-trigger
/// windows), then both manifests. Keeps only what the manifest needs of a
/// window, so a written window's bytes can be freed at once. The caller
/// renames `tmp` into place.
pub struct BundleWriter {
    tmp: PathBuf,
    id: String,
    entries: Vec<WindowEntry>,
    spans: Vec<Span>,
    prev_end: Option<u64>,
    /// The latest event seen so far, in the trace files and with the tails
    /// (agent clock, see [`Window::last_event_at`]).
    last_event: Option<SystemTime>,
    last_tail_event: Option<SystemTime>,
}

impl BundleWriter {
    /// Creates `tmp` (and its parents).
    pub fn create(tmp: &Path, id: &str) -> Result<BundleWriter, BundleError> {
        let w = BundleWriter {
            tmp: tmp.to_path_buf(),
            id: id.to_string(),
            entries: Vec::new(),
            spans: Vec::new(),
            prev_end: None,
            last_event: None,
            last_tail_event: None,
        };
        fs::create_dir_all(tmp).map_err(|e| w.fail(e))?;
        Ok(w)
    }

    fn fail(&self, source: io::Error) -> BundleError {
        if source.kind() == io::ErrorKind::StorageFull {
            BundleError::DiskFull {
                id: self.id.clone(),
                dir: self
                    .tmp
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(&self.tmp)
                    .to_path_buf(),
                source,
            }
        } else {
            BundleError::Write {
                id: self.id.clone(),
                dir: self.tmp.clone(),
                source,
            }
        }
    }

    /// Windows written so far.
    pub fn windows(&self) -> usize {
        self.entries.len()
    }

    /// Writes the next window (in time order) as a plain trace and fsyncs it;
    /// its tail, if kept, goes beside it in a file of its own.
    pub fn add(&mut self, w: &Window) -> Result<(), BundleError> {
        let (start, end, clock) = w.wall_span();
        let stem = format!("{:04}-{}", self.entries.len() + 1, compact_time(start));
        let file = format!("{stem}.trace");
        let tail_file = w.tail.map(|_| format!("{stem}.tail"));
        let ((bytes, sha256), tail) = self.write_window(w, &file, tail_file.as_deref())?;
        let gap = match (self.prev_end, w.info.start_ns()) {
            (Some(p), Some(s)) if s >= p => Some((s - p) as f64 / 1e9),
            _ => None,
        };
        self.prev_end = w.info.end_ns();
        self.last_event = self.last_event.max(w.last_event_at(false));
        self.last_tail_event = self.last_tail_event.max(w.last_event_at(true));
        self.spans.push(w.span());
        self.entries.push(WindowEntry {
            file,
            start: rfc3339(start),
            end: rfc3339(end),
            bytes,
            sha256,
            go_version: w.info.version.to_string(),
            complete: w.is_complete(),
            truncation: w.truncation.as_ref().map(|t| t.label().to_string()),
            clock: clock.as_str().into(),
            trace_start_ns: w.info.start_ns().unwrap_or(0),
            trace_end_ns: w.info.end_ns().unwrap_or(0),
            gap_before_seconds: gap,
            batches: w.info.batches,
            generations: w.info.generations,
            requested_at: rfc3339(w.requested_at),
            received_at: rfc3339(w.received_at),
            seq: w.seq,
            trimmed_bytes: w.trimmed_bytes,
            tail: tail
                .zip(tail_file)
                .zip(w.tail)
                .map(|(((bytes, sha256), file), t)| TailEntry {
                    file,
                    bytes,
                    sha256,
                    generation: t.generation,
                    trace_end_ns: t.end_ns,
                }),
            summary: Some(SummaryEntry::of(&w.summary)),
        });
        Ok(())
    }

    /// Writes a window's trace, and its tail when `tail_file` names one, in
    /// one pass over its blocks; both files fsynced. Returns each file's
    /// size and sha256.
    fn write_window(
        &self,
        w: &Window,
        file: &str,
        tail_file: Option<&str>,
    ) -> Result<(Facts, Option<Facts>), BundleError> {
        let Some(tail_file) = tail_file else {
            let trace =
                write_synced(&self.tmp.join(file), |out| w.write_trace(out)).map_err(|e| self.fail(e))?;
            return Ok((trace, None));
        };
        let tail = File::create(self.tmp.join(tail_file)).map_err(|e| self.fail(e))?;
        let mut tail_out = hashing(&tail);
        let trace = write_synced(&self.tmp.join(file), |out| {
            w.write_split(out, &mut tail_out)?;
            tail_out.flush()
        })
        .map_err(|e| self.fail(e))?;
        let tail_facts = (tail_out.bytes, hex::encode(tail_out.hasher.finalize()));
        tail.sync_all().map_err(|e| self.fail(e))?;
        Ok((trace, Some(tail_facts)))
    }

    /// Writes both manifests and fsyncs the directory; returns the manifest.
    pub fn finish(mut self, meta: &BundleMeta) -> Result<Manifest, BundleError> {
        let cov = coverage(self.spans.iter().copied()).map(|c| CoverageInfo {
            span_seconds: c.span.as_secs_f64(),
            covered_seconds: c.covered.as_secs_f64(),
            ratio: c.ratio,
            max_gap_seconds: c.max_gap.as_secs_f64(),
            clock: if c.target_clock { "target" } else { "agent" }.into(),
        });
        let mut manifest = Manifest {
            id: meta.id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            agent_host: host_name(),
            created_at: rfc3339(SystemTime::now()),
            target: meta.target.clone(),
            trigger: meta.trigger.clone(),
            post_trigger_seconds: meta.post_trigger_seconds,
            post_trigger_complete: meta.post_trigger_complete,
            coverage: cov,
            windows: std::mem::take(&mut self.entries),
            ending: None,
            derived: None,
        };
        if let Some(d) = &meta.death {
            let log = match &d.log {
                Some(text) => {
                    let (bytes, sha256) = write_synced(&self.tmp.join(LOG_FILE), |out| out.write_all(text))
                        .map_err(|e| self.fail(e))?;
                    Some(FileEntry {
                        file: LOG_FILE.into(),
                        bytes,
                        sha256,
                    })
                }
                None => None,
            };
            let before = |event: Option<SystemTime>| {
                event
                    .and_then(|e| d.at.duration_since(e).ok())
                    .map(|b| b.as_secs_f64())
            };
            manifest.ending = Some(Ending {
                how: "crash".into(),
                seen: d.seen.clone(),
                at: rfc3339(d.at),
                blind_spot_seconds: before(self.last_event),
                tail_blind_spot_seconds: before(self.last_tail_event),
                log,
            });
        }
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| self.fail(io::Error::other(e)))?;
        write_synced(&self.tmp.join(MANIFEST_JSON), |out| out.write_all(&json)).map_err(|e| self.fail(e))?;
        let pb = manifest.to_proto().encode_to_vec();
        write_synced(&self.tmp.join(MANIFEST_PB), |out| out.write_all(&pb)).map_err(|e| self.fail(e))?;
        sync_dir(&self.tmp).map_err(|e| self.fail(e))?;
        Ok(manifest)
    }
}

/// A written file's size and sha256 (lower-case hex).
type Facts = (u64, String);

/// Writes a file through a buffer while hashing it, then fsyncs it.
pub(super) fn write_synced(
    path: &Path,
    body: impl FnOnce(&mut HashingWriter<BufWriter<&File>>) -> io::Result<()>,
) -> io::Result<Facts> {
    let file = File::create(path)?;
    let mut out = hashing(&file);
    body(&mut out)?;
    out.inner.flush()?;
    let (bytes, digest) = (out.bytes, hex::encode(out.hasher.finalize()));
    file.sync_all()?;
    Ok((bytes, digest))
}

fn hashing(file: &File) -> HashingWriter<BufWriter<&File>> {
    HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    }
}

pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// fsync a directory so a rename or new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
