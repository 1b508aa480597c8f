//! The snapshot bundle on disk: manifest types, the atomic writer, and the reader that verifies.
//!
//! A bundle is written into a hidden directory beside its final place, every
//! file and the directory fsynced, then renamed into place and the parent
//! fsynced: it appears whole or not at all.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flightrec_proto::prost_types;
use flightrec_proto::v1 as pb;
use flightrec_proto::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ring::coverage;
use crate::ring::window::{Span, Window};
use crate::units::{compact_time, rfc3339};

pub const MANIFEST_JSON: &str = "manifest.json";
pub const MANIFEST_PB: &str = "manifest.pb";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub id: String,
    pub agent_version: String,
    #[serde(default)]
    pub agent_host: String,
    pub created_at: String,
    pub target: TargetInfo,
    pub trigger: Trigger,
    #[serde(default)]
    pub post_trigger_seconds: f64,
    #[serde(default)]
    pub post_trigger_complete: bool,
    #[serde(default)]
    pub coverage: Option<CoverageInfo>,
    pub windows: Vec<WindowEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetInfo {
    pub name: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trigger {
    /// manual | latency | metric | alertmanager | grafana
    pub kind: String,
    pub reason: String,
    pub fired_at: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CoverageInfo {
    pub span_seconds: f64,
    pub covered_seconds: f64,
    pub ratio: f64,
    pub max_gap_seconds: f64,
    pub clock: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowEntry {
    pub file: String,
    pub start: String,
    pub end: String,
    pub bytes: u64,
    pub sha256: String,
    pub go_version: String,
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    pub clock: String,
    #[serde(default)]
    pub trace_start_ns: u64,
    #[serde(default)]
    pub trace_end_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_before_seconds: Option<f64>,
    #[serde(default)]
    pub batches: u32,
    #[serde(default)]
    pub generations: u32,
    #[serde(default)]
    pub requested_at: String,
    #[serde(default)]
    pub received_at: String,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub trimmed_bytes: u64,
}

/// What a snapshot needs besides its windows.
#[derive(Debug, Clone)]
pub struct BundleMeta {
    pub id: String,
    pub target: TargetInfo,
    pub trigger: Trigger,
    pub post_trigger_seconds: f64,
    pub post_trigger_complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot write bundle {id}: the disk holding {dir} is full ({source}); the half-written bundle was removed and nothing else was touched. Free space there, or lower snapshots.max_bytes so the spool fits")]
    DiskFull {
        id: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write bundle {id} in {dir}: {source}")]
    Write {
        id: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read bundle {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bad manifest in {path}: {why}")]
    Manifest { path: PathBuf, why: String },
}

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

    /// Writes the next window (in time order) as a plain trace and fsyncs it.
    pub fn add(&mut self, w: &Window) -> Result<(), BundleError> {
        let (start, end, clock) = w.wall_span();
        let file = format!("{:04}-{}.trace", self.entries.len() + 1, compact_time(start));
        let (bytes, sha256) =
            write_synced(&self.tmp.join(&file), |out| w.write_trace(out)).map_err(|e| self.fail(e))?;
        let gap = match (self.prev_end, w.info.start_ns()) {
            (Some(p), Some(s)) if s >= p => Some((s - p) as f64 / 1e9),
            _ => None,
        };
        self.prev_end = w.info.end_ns();
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
        });
        Ok(())
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
        let manifest = Manifest {
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
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| self.fail(io::Error::other(e)))?;
        write_synced(&self.tmp.join(MANIFEST_JSON), |out| out.write_all(&json)).map_err(|e| self.fail(e))?;
        let pb = manifest.to_proto().encode_to_vec();
        write_synced(&self.tmp.join(MANIFEST_PB), |out| out.write_all(&pb)).map_err(|e| self.fail(e))?;
        sync_dir(&self.tmp).map_err(|e| self.fail(e))?;
        Ok(manifest)
    }
}

/// Writes a file through a buffer while hashing it, then fsyncs it.
fn write_synced(
    path: &Path,
    body: impl FnOnce(&mut HashingWriter<BufWriter<&File>>) -> io::Result<()>,
) -> io::Result<(u64, String)> {
    let file = File::create(path)?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, &file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    body(&mut out)?;
    out.inner.flush()?;
    let (bytes, digest) = (out.bytes, hex::encode(out.hasher.finalize()));
    file.sync_all()?;
    Ok((bytes, digest))
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

pub fn read_manifest(dir: &Path) -> Result<Manifest, BundleError> {
    let path = dir.join(MANIFEST_JSON);
    let text = fs::read(&path).map_err(|source| BundleError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| BundleError::Manifest {
        path,
        why: e.to_string(),
    })
}

/// One window's verification result.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowCheck {
    pub file: String,
    pub problem: Option<String>,
}

/// What verification needs of one file: its size, sha256 and first bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct FileFacts {
    pub bytes: u64,
    pub sha256: String,
    pub head: Vec<u8>,
}

/// Reads a file to its end, hashing it.
pub fn facts(mut r: impl Read) -> io::Result<FileFacts> {
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(gotrace::HEADER_LEN);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < gotrace::HEADER_LEN {
            let take = (gotrace::HEADER_LEN - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(FileFacts {
        bytes: total,
        sha256: hex::encode(hasher.finalize()),
        head,
    })
}

/// Re-hashes every window file in `dir` and checks it against the manifest,
/// that the file is a Go trace, and that `manifest.pb` says the same as the JSON.
pub fn verify(dir: &Path, manifest: &Manifest) -> Vec<WindowCheck> {
    let pb = fs::read(dir.join(MANIFEST_PB)).map_err(|e| format!("cannot read: {e}"));
    verify_with(manifest, pb, |name| {
        if name.contains('/') || name.contains("..") {
            return Err("file name leaves the bundle".into());
        }
        let f = File::open(dir.join(name)).map_err(|e| format!("cannot open: {e}"))?;
        facts(f).map_err(|e| format!("read failed: {e}"))
    })
}

/// The checks of [`verify`], with the files' facts from `file` (a directory,
/// or an archive already read) and `manifest.pb`'s bytes.
pub fn verify_with(
    manifest: &Manifest,
    pb: Result<Vec<u8>, String>,
    mut file: impl FnMut(&str) -> Result<FileFacts, String>,
) -> Vec<WindowCheck> {
    let mut out: Vec<WindowCheck> = manifest
        .windows
        .iter()
        .map(|w| WindowCheck {
            file: w.file.clone(),
            problem: file(&w.file).and_then(|f| check_window(w, &f)).err(),
        })
        .collect();
    let pb_problem = match pb {
        Ok(bytes) => match pb::Manifest::decode(bytes.as_slice()) {
            Ok(m) if m == manifest.to_proto() => None,
            Ok(_) => Some("manifest.pb differs from manifest.json".to_string()),
            Err(e) => Some(format!("manifest.pb does not decode: {e}")),
        },
        Err(e) => Some(e),
    };
    out.push(WindowCheck {
        file: MANIFEST_PB.into(),
        problem: pb_problem,
    });
    out
}

fn check_window(w: &WindowEntry, f: &FileFacts) -> Result<(), String> {
    if f.bytes != w.bytes {
        return Err(format!("size is {} bytes, manifest says {}", f.bytes, w.bytes));
    }
    if f.sha256 != w.sha256 {
        return Err(format!("sha256 is {}, manifest says {}", f.sha256, w.sha256));
    }
    gotrace::check_header(&f.head).map_err(|e| e.to_string())?;
    Ok(())
}

impl Manifest {
    pub fn to_proto(&self) -> pb::Manifest {
        pb::Manifest {
            id: self.id.clone(),
            agent_version: self.agent_version.clone(),
            target: Some(pb::Target {
                name: self.target.name.clone(),
                url: self.target.url.clone(),
                labels: self.target.labels.clone().into_iter().collect(),
            }),
            trigger: Some(pb::Trigger {
                kind: self.trigger.kind.clone(),
                reason: self.trigger.reason.clone(),
                fired_at: self.trigger.fired_at.clone(),
                details: match &self.trigger.details {
                    serde_json::Value::Object(m) => Some(json_struct(m)),
                    _ => None,
                },
            }),
            windows: self
                .windows
                .iter()
                .map(|w| pb::Window {
                    file: w.file.clone(),
                    start: w.start.clone(),
                    end: w.end.clone(),
                    bytes: w.bytes,
                    sha256: w.sha256.clone(),
                    go_version: w.go_version.clone(),
                    complete: w.complete,
                    truncation: w.truncation.clone().unwrap_or_default(),
                    clock: w.clock.clone(),
                    trace_start_ns: w.trace_start_ns,
                    trace_end_ns: w.trace_end_ns,
                    gap_before_seconds: w.gap_before_seconds.unwrap_or(-1.0),
                    batches: w.batches,
                    generations: w.generations,
                    requested_at: w.requested_at.clone(),
                    received_at: w.received_at.clone(),
                    seq: w.seq,
                    trimmed_bytes: w.trimmed_bytes,
                })
                .collect(),
            created_at: self.created_at.clone(),
            coverage: self.coverage.as_ref().map(|c| pb::Coverage {
                span_seconds: c.span_seconds,
                covered_seconds: c.covered_seconds,
                ratio: c.ratio,
                max_gap_seconds: c.max_gap_seconds,
                clock: c.clock.clone(),
            }),
            agent_host: self.agent_host.clone(),
            post_trigger_complete: self.post_trigger_complete,
            post_trigger_seconds: self.post_trigger_seconds,
        }
    }

    /// The window holding the trigger moment (the one to open first), else
    /// the last one. Times share one format, so text order is time order.
    pub fn trigger_window(&self) -> Option<&WindowEntry> {
        let fired = self.trigger.fired_at.as_str();
        self.windows
            .iter()
            .find(|w| w.start.as_str() <= fired && fired <= w.end.as_str())
            .or_else(|| self.windows.iter().find(|w| w.start.as_str() >= fired))
            .or(self.windows.last())
    }

    pub fn total_bytes(&self) -> u64 {
        self.windows.iter().map(|w| w.bytes).sum()
    }
}

fn json_struct(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
    }
}

fn json_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(m) => Kind::StructValue(json_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}
