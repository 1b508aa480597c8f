//! The manifest: what a bundle holds, as `manifest.json` and (the same data) `manifest.pb`.

use std::collections::BTreeMap;

use flightrec_proto::prost_types;
use flightrec_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::SummaryEntry;

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
    /// How the recording ended when not after `post_trigger` (a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<Ending>,
    /// Files made from the windows after the bundle was durable
    /// ([`crate::bundle::finish`]); `None` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived: Option<Derived>,
}

/// Files made from the windows once the bundle was durable (manifest.proto
/// `Derived`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Derived {
    /// When they were written (RFC 3339, agent clock).
    pub ready_at: String,
    pub files: Vec<FileEntry>,
    pub stitch: StitchInfo,
}

/// How the windows were stitched into `bundle.trace` (and its pieces).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StitchInfo {
    pub pieces: Vec<StitchPiece>,
    pub seams: Vec<StitchSeam>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<StitchSkip>,
    /// Why stitching failed altogether.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StitchPiece {
    pub file: String,
    /// Indices into `windows`.
    pub windows: Vec<u32>,
    pub generations: u64,
    pub events_added: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StitchSeam {
    pub after: u32,
    pub before: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_ns: Option<u64>,
    /// `stitched`, or `split: <why>`.
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StitchSkip {
    pub window: u32,
    pub reason: String,
}

/// How a bundle's recording ended (manifest.proto `Ending`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ending {
    /// `crash`
    pub how: String,
    /// What the agent saw, in words.
    pub seen: String,
    /// When the death was seen (RFC 3339, agent clock).
    pub at: String,
    /// From the last event Go's parser reads in the bundle to `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blind_spot_seconds: Option<f64>,
    /// The same, counting the tails' events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_blind_spot_seconds: Option<f64>,
    /// The target's log of its last moments. No collector writes one yet:
    /// Kubernetes discovery will (a crashed container's previous log);
    /// readers, `inspect` and the sinks handle it already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<FileEntry>,
}

/// A file of the bundle besides a window's trace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A window's tail (manifest.proto `Tail`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TailEntry {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_end_ns: Option<u64>,
}

/// What a listed file is, which tells how to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A Go execution trace, starting with its header.
    Window,
    /// Bytes that follow a window's trace.
    Tail,
    /// Text.
    Log,
    /// A file made from the windows after the bundle was durable
    /// (`bundle.trace`: a Go execution trace).
    Derived,
}

impl FileRole {
    /// The name of its part in the HTTP collector's multipart body.
    pub fn as_str(self) -> &'static str {
        match self {
            FileRole::Window => "window",
            FileRole::Tail => "tail",
            FileRole::Log => "log",
            FileRole::Derived => "derived",
        }
    }
}

/// One file the manifest lists, with what it must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed<'a> {
    pub role: FileRole,
    pub file: &'a str,
    pub bytes: u64,
    pub sha256: &'a str,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<TailEntry>,
    /// What the window's events show, or why there is no summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryEntry>,
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
                    tail: w.tail.as_ref().map(|t| pb::Tail {
                        file: t.file.clone(),
                        bytes: t.bytes,
                        sha256: t.sha256.clone(),
                        generation: t.generation.unwrap_or(0),
                        trace_end_ns: t.trace_end_ns.unwrap_or(0),
                    }),
                    summary: w.summary.as_ref().map(SummaryEntry::to_proto),
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
            ending: self.ending.as_ref().map(|e| pb::Ending {
                how: e.how.clone(),
                seen: e.seen.clone(),
                at: e.at.clone(),
                blind_spot_seconds: e.blind_spot_seconds.unwrap_or(-1.0),
                tail_blind_spot_seconds: e.tail_blind_spot_seconds.unwrap_or(-1.0),
                log: e.log.as_ref().map(pb_file),
            }),
            derived: self.derived.as_ref().map(|d| pb::Derived {
                ready_at: d.ready_at.clone(),
                files: d.files.iter().map(pb_file).collect(),
                stitch: Some(pb::Stitch {
                    pieces: d
                        .stitch
                        .pieces
                        .iter()
                        .map(|p| pb::StitchPiece {
                            file: p.file.clone(),
                            windows: p.windows.clone(),
                            generations: p.generations,
                            events_added: p.events_added,
                        })
                        .collect(),
                    seams: d
                        .stitch
                        .seams
                        .iter()
                        .map(|s| pb::StitchSeam {
                            after: s.after,
                            before: s.before,
                            gap_ns: s.gap_ns.map_or(-1, |g| i64::try_from(g).unwrap_or(i64::MAX)),
                            outcome: s.outcome.clone(),
                        })
                        .collect(),
                    skipped: d
                        .stitch
                        .skipped
                        .iter()
                        .map(|s| pb::StitchSkip {
                            window: s.window,
                            reason: s.reason.clone(),
                        })
                        .collect(),
                    error: d.stitch.error.clone().unwrap_or_default(),
                }),
            }),
        }
    }

    /// Every file the manifest lists besides itself, in delivery order: each
    /// window's trace and then its tail, then the log, then the derived
    /// files (`bundle.trace`...). Sinks deliver these and `inspect` checks
    /// them.
    pub fn files(&self) -> Vec<Listed<'_>> {
        let mut out = Vec::with_capacity(self.windows.len() + 1);
        for w in &self.windows {
            out.push(Listed {
                role: FileRole::Window,
                file: &w.file,
                bytes: w.bytes,
                sha256: &w.sha256,
            });
            if let Some(t) = &w.tail {
                out.push(Listed {
                    role: FileRole::Tail,
                    file: &t.file,
                    bytes: t.bytes,
                    sha256: &t.sha256,
                });
            }
        }
        if let Some(l) = self.ending.as_ref().and_then(|e| e.log.as_ref()) {
            out.push(Listed {
                role: FileRole::Log,
                file: &l.file,
                bytes: l.bytes,
                sha256: &l.sha256,
            });
        }
        for d in self.derived.iter().flat_map(|d| &d.files) {
            out.push(Listed {
                role: FileRole::Derived,
                file: &d.file,
                bytes: d.bytes,
                sha256: &d.sha256,
            });
        }
        out
    }

    /// The window holding the trigger moment (the one to open first), else
    /// the last one. Times share one format, so text order is time order.
    pub fn trigger_window(&self) -> Option<&WindowEntry> {
        if let Some(w) = self.trace_trigger_window() {
            return Some(w);
        }
        let fired = self.trigger.fired_at.as_str();
        self.windows
            .iter()
            .find(|w| w.start.as_str() <= fired && fired <= w.end.as_str())
            .or_else(|| self.windows.iter().find(|w| w.start.as_str() >= fired))
            .or(self.windows.last())
    }

    /// The window whose summary met a trace trigger's condition: it ended
    /// before the trigger fired, so it is the one to open first.
    pub fn trace_trigger_window(&self) -> Option<&WindowEntry> {
        if self.trigger.kind != "trace" {
            return None;
        }
        let seq = self.trigger.details.pointer("/window/seq")?.as_u64()?;
        self.windows.iter().find(|w| w.seq == seq)
    }

    /// Bytes of every listed file.
    pub fn total_bytes(&self) -> u64 {
        self.files().iter().map(|f| f.bytes).sum()
    }
}

fn pb_file(f: &FileEntry) -> pb::File {
    pb::File {
        file: f.file.clone(),
        bytes: f.bytes,
        sha256: f.sha256.clone(),
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
