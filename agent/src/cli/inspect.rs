//! `flightrec inspect`: prints a bundle (a directory or an archive of one) in human terms and verifies every file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::CliError;
use crate::bundle::{self, Manifest};
use crate::units::{Bytes, Nanos, Secs};

/// Reads and verifies a bundle (a directory, or a `.tar`, `.tar.gz` or
/// `.tar.zst` archive of one); returns the report and whether it is sound.
pub fn inspect(path: &Path, as_json: bool) -> Result<(String, bool), CliError> {
    let Opened { manifest, checks, .. } = open(path)?;
    let ok = checks.iter().all(|c| c.problem.is_none());
    if as_json {
        let v = json!({
            "path": path,
            "ok": ok,
            "manifest": manifest,
            "checks": checks.iter().map(|c| json!({"file": c.file, "problem": c.problem})).collect::<Vec<_>>(),
        });
        return Ok((serde_json::to_string_pretty(&v).unwrap_or_default(), ok));
    }
    Ok((render(path, &manifest, &checks), ok))
}

/// A bundle read and verified.
pub(super) struct Opened {
    pub manifest: Manifest,
    pub checks: Vec<bundle::WindowCheck>,
}

/// Reads a bundle directory or an archive of one, and verifies every file
/// its manifest lists.
pub(super) fn open(path: &Path) -> Result<Opened, CliError> {
    if path.is_dir() {
        let manifest = bundle::read_manifest(path).map_err(|e| CliError::Bundle(e.to_string()))?;
        let checks = bundle::verify(path, &manifest);
        Ok(Opened { manifest, checks })
    } else if path.is_file() {
        read_archive(path)
    } else {
        Err(CliError::Bundle(format!(
            "{} is neither a bundle directory (holding manifest.json) nor an archive of one",
            path.display()
        )))
    }
}

/// Reads a tar archive (plain, gzip or zstd, told apart by their first
/// bytes) in one pass: every file is hashed as it streams by, nothing is
/// written to disk. The bundle may sit at the root or in one directory.
fn read_archive(path: &Path) -> Result<Opened, CliError> {
    let fail = |why: String| CliError::Bundle(format!("{}: {why}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut magic = [0u8; 4];
    let n = std::io::Read::read(&mut file, &mut magic).map_err(|e| fail(e.to_string()))?;
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let reader: Box<dyn std::io::Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(file)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| fail(e.to_string()))?)
        }
        _ => Box::new(file),
    };
    let mut archive = tar::Archive::new(reader);
    let mut facts: BTreeMap<String, bundle::FileFacts> = BTreeMap::new();
    let (mut json_bytes, mut pb_bytes) = (None, None);
    let entries = archive
        .entries()
        .map_err(|e| fail(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(format!("unreadable archive entry: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_default();
        match name.as_str() {
            bundle::MANIFEST_JSON | bundle::MANIFEST_PB => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| fail(e.to_string()))?;
                if name == bundle::MANIFEST_JSON {
                    json_bytes = Some(bytes);
                } else {
                    pb_bytes = Some(bytes);
                }
            }
            _ => {
                let f = bundle::facts(&mut entry).map_err(|e| fail(e.to_string()))?;
                facts.insert(name, f);
            }
        }
    }
    let json_bytes = json_bytes.ok_or_else(|| fail("no manifest.json in the archive".into()))?;
    let manifest: Manifest =
        serde_json::from_slice(&json_bytes).map_err(|e| fail(format!("bad manifest.json: {e}")))?;
    let pb = pb_bytes.ok_or_else(|| "missing from the archive".to_string());
    let checks = bundle::verify_with(&manifest, pb, |name| {
        facts
            .get(name)
            .cloned()
            .ok_or_else(|| "missing from the archive".to_string())
    });
    Ok(Opened { manifest, checks })
}

/// The files made from the windows once the bundle was durable, with the
/// stitch's seams.
fn render_derived(s: &mut String, dir: &Path, m: &Manifest, checks: &[bundle::WindowCheck]) {
    let Some(d) = &m.derived else {
        let _ = writeln!(
            s,
            "\nderived   none (bundle.trace not made: the agent had not finished the bundle)"
        );
        return;
    };
    let _ = writeln!(s, "\nderived   ready at {}", d.ready_at);
    if let Some(why) = &d.stitch.error {
        let _ = writeln!(s, "  no bundle.trace: {why}");
    }
    for p in &d.stitch.pieces {
        let f = d.files.iter().find(|f| f.file == p.file);
        let state = match checks
            .iter()
            .find(|c| c.file == p.file)
            .and_then(|c| c.problem.as_deref())
        {
            Some(why) => format!("BAD: {why}"),
            None => "sha256 ok".into(),
        };
        let _ = writeln!(
            s,
            "  {:<20} windows {}, {} generations, {} events added at seams, {}: {state}",
            p.file,
            p.windows
                .iter()
                .map(|w| (w + 1).to_string())
                .collect::<Vec<_>>()
                .join(","),
            p.generations,
            p.events_added,
            f.map_or("?".to_string(), |f| Bytes(f.bytes).to_string()),
        );
    }
    for seam in d.stitch.seams.iter().filter(|x| x.outcome != "stitched") {
        let _ = writeln!(
            s,
            "  seam {}|{}: {}",
            seam.after + 1,
            seam.before + 1,
            seam.outcome
        );
    }
    for k in &d.stitch.skipped {
        let _ = writeln!(s, "  window {} left out: {}", k.window + 1, k.reason);
    }
    if let Some(p) = d.stitch.pieces.first() {
        let _ = writeln!(s, "  open it with: go tool trace {}", dir.join(&p.file).display());
    }
}

fn render(dir: &Path, m: &Manifest, checks: &[bundle::WindowCheck]) -> String {
    let mut s = String::new();
    let labels: Vec<String> = m.target.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(s, "bundle    {}", m.id);
    let _ = writeln!(s, "path      {}", dir.display());
    let _ = writeln!(
        s,
        "target    {}  {}{}",
        m.target.name,
        m.target.url,
        if labels.is_empty() {
            String::new()
        } else {
            format!("  {{{}}}", labels.join(", "))
        }
    );
    let _ = writeln!(
        s,
        "trigger   {} at {}: {}",
        m.trigger.kind, m.trigger.fired_at, m.trigger.reason
    );
    let _ = writeln!(
        s,
        "written   {} by flightrec {}{}",
        m.created_at,
        m.agent_version,
        if m.agent_host.is_empty() {
            String::new()
        } else {
            format!(" on {}", m.agent_host)
        }
    );
    match &m.ending {
        Some(e) => {
            let _ = writeln!(s, "ended     {} at {}: {}", e.how, e.at, e.seen);
            let _ = writeln!(s, "recorded  up to the death, nothing after it");
            let secs = |v: Option<f64>| v.map_or("unknown".to_string(), |v| format!("{v:.3}s"));
            let _ = writeln!(
                s,
                "blind     {} from the last event Go's parser reads to the death; {} counting the tails (events of an unfinished generation, which need a decoder that reads them)",
                secs(e.blind_spot_seconds),
                secs(e.tail_blind_spot_seconds)
            );
            if let Some(log) = &e.log {
                let _ = writeln!(s, "log       {} ({})", log.file, Bytes(log.bytes));
            }
        }
        None => {
            let _ = writeln!(
                s,
                "recorded  {} after the trigger{}",
                Secs(Duration::from_secs_f64(m.post_trigger_seconds.max(0.0))),
                if m.post_trigger_complete {
                    ""
                } else {
                    " (cut short: the target stopped answering or the agent stopped)"
                }
            );
        }
    }
    if let Some(c) = &m.coverage {
        let _ = writeln!(
            s,
            "coverage  {:.3}% of {:.1}s ({} clock), largest gap {}",
            c.ratio * 100.0,
            c.span_seconds,
            c.clock,
            Secs(Duration::from_secs_f64(c.max_gap_seconds.max(0.0)))
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  {:>3}  {:<36} {:<24} {:>9} {:>9} {:>10} {:>5}  state",
        "#", "file", "start", "span", "gap", "size", "go"
    );
    for (i, w) in m.windows.iter().enumerate() {
        let span = if w.trace_end_ns > w.trace_start_ns {
            Secs(Duration::from_nanos(w.trace_end_ns - w.trace_start_ns)).to_string()
        } else {
            "?".into()
        };
        let gap = w.gap_before_seconds.map_or("-".to_string(), |g| {
            Secs(Duration::from_secs_f64(g.max(0.0))).to_string()
        });
        let problem = |file: &str| {
            checks
                .iter()
                .find(|c| c.file == file)
                .and_then(|c| c.problem.clone())
        };
        let check = problem(&w.file);
        let state = match (&check, w.complete) {
            (Some(p), _) => format!("BAD: {p}"),
            (None, true) => "complete, sha256 ok".to_string(),
            (None, false) => format!(
                "truncated ({}), sha256 ok",
                w.truncation.as_deref().unwrap_or("cut")
            ),
        };
        let start = w.start.get(11..23).unwrap_or(&w.start);
        let _ = writeln!(
            s,
            "  {:>3}  {:<36} {:<24} {:>9} {:>9} {:>10} {:>5}  {}",
            i + 1,
            w.file,
            start,
            span,
            gap,
            Bytes(w.bytes).to_string(),
            w.go_version,
            state
        );
        if let Some(t) = &w.tail {
            let state = match problem(&t.file) {
                Some(p) => format!("BAD: {p}"),
                None => "sha256 ok".to_string(),
            };
            let reach = match (t.trace_end_ns, w.trace_end_ns) {
                (Some(end), whole) if end > whole && whole > 0 => {
                    format!(", events to +{}", Secs(Duration::from_nanos(end - whole)))
                }
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "       + tail {:<29} generation {}{reach}, {} not in the trace above: {}",
                t.file,
                t.generation.map_or("?".to_string(), |g| g.to_string()),
                Bytes(t.bytes),
                state
            );
        }
    }
    render_summaries(&mut s, m);
    render_derived(&mut s, dir, m, checks);
    let bad: Vec<&bundle::WindowCheck> = checks.iter().filter(|c| c.problem.is_some()).collect();
    let _ = writeln!(s);
    if bad.is_empty() {
        let tails = m.windows.iter().filter(|w| w.tail.is_some()).count();
        let _ = writeln!(
            s,
            "verified: {} windows{}{}, {}, every sha256 matches; manifest.pb agrees",
            m.windows.len(),
            match tails {
                0 => String::new(),
                n => format!(" and {n} tail{}", if n == 1 { "" } else { "s" }),
            },
            match m.derived.as_ref().map_or(0, |d| d.files.len()) {
                0 => String::new(),
                n => format!(" and {n} derived file{}", if n == 1 { "" } else { "s" }),
            },
            Bytes(m.total_bytes())
        );
    } else {
        for c in bad {
            let _ = writeln!(
                s,
                "PROBLEM {}: {}",
                c.file,
                c.problem.as_deref().unwrap_or_default()
            );
        }
    }
    if let Some(w) = m.trigger_window() {
        if dir.is_dir() {
            let _ = writeln!(
                s,
                "open the window holding the trigger: go tool trace {}",
                dir.join(&w.file).display()
            );
        } else {
            let _ = writeln!(
                s,
                "open the window holding the trigger: extract the archive, then go tool trace {}",
                w.file
            );
        }
    }
    s
}

/// One line per window of what its trace shows, for a person to scan.
fn render_summaries(s: &mut String, m: &Manifest) {
    if m.windows.iter().all(|w| w.summary.is_none()) {
        return;
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "what the windows show (agent/gotrace/docs/summary.md; latencies in the target's clock)"
    );
    let _ = writeln!(
        s,
        "  {:>3}  {:>4}  {:<30} {:>10} {:>9} {:>10} {:>10}",
        "#", "gc", "stw max", "sched p99", "runnable", "goroutines", "heap"
    );
    let fired = m.trace_trigger_window().map(|w| w.seq);
    for (i, w) in m.windows.iter().enumerate() {
        let Some(summary) = &w.summary else {
            let _ = writeln!(s, "  {:>3}  -", i + 1);
            continue;
        };
        let mark = if fired == Some(w.seq) {
            "  <- met the trace trigger's condition"
        } else {
            ""
        };
        let Some(f) = summary.fields.as_ref().filter(|_| summary.summarised) else {
            let _ = writeln!(
                s,
                "  {:>3}  not summarised ({}): {}",
                i + 1,
                summary.reason.as_deref().unwrap_or("?"),
                summary.why.as_deref().unwrap_or("no reason given")
            );
            continue;
        };
        let stw = match f.stw_count {
            0 => "-".to_string(),
            _ => format!("{} ({})", Nanos(f.stw_max_ns), f.stw_max_reason),
        };
        let p99 = match f.sched_latency_samples {
            0 => "-".to_string(),
            _ => Nanos(f.sched_latency_p99_ns).to_string(),
        };
        let _ = writeln!(
            s,
            "  {:>3}  {:>4}  {:<30} {:>10} {:>9} {:>10} {:>10}{mark}",
            i + 1,
            f.gc_cycles,
            stw,
            p99,
            f.runnable_max,
            f.goroutines_max,
            Bytes(f.heap_max_bytes).to_string()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightrec_proto::Message;
    use sha2::{Digest, Sha256};

    fn put(dir: &Path, name: &str, bytes: &[u8]) -> serde_json::Value {
        std::fs::write(dir.join(name), bytes).expect("write");
        json!({"file": name, "bytes": bytes.len(), "sha256": hex::encode(Sha256::digest(bytes))})
    }

    /// A crash bundle as the agent writes it, plus the log Kubernetes
    /// discovery is to add.
    fn crash_bundle(dir: &Path) -> Manifest {
        let trace = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/gotrace/testdata/go1.26.trace"
        ))
        .expect("testdata");
        let w = put(dir, "0001-20261204T101010.000Z.trace", &trace);
        let tail = put(dir, "0001-20261204T101010.000Z.tail", &[1, 7, 0, 1, 2, 3]);
        let log = put(dir, "previous.log", b"panic: boom\n");
        let m: Manifest = serde_json::from_value(json!({
            "id": "20261204T101011.400Z-svc-0001", "agent_version": "0", "created_at": "2026-12-04T10:10:12Z",
            "target": {"name": "svc"},
            "trigger": {"kind": "crash", "reason": "svc died", "fired_at": "2026-12-04T10:10:11.400Z"},
            "windows": [{
                "file": w["file"], "bytes": w["bytes"], "sha256": w["sha256"],
                "start": "2026-12-04T10:10:10Z", "end": "2026-12-04T10:10:11Z", "go_version": "1.26",
                "complete": false, "truncation": "disconnected", "clock": "target",
                "trace_start_ns": 1_000_000_000u64, "trace_end_ns": 2_000_000_000u64,
                "tail": {"file": tail["file"], "bytes": tail["bytes"], "sha256": tail["sha256"],
                         "generation": 9, "trace_end_ns": 2_390_000_000u64}
            }],
            "ending": {"how": "crash", "seen": "stream cut 1.4 s into a 2 s window, then connection refused",
                       "at": "2026-12-04T10:10:11.400Z", "blind_spot_seconds": 0.4,
                       "tail_blind_spot_seconds": 0.01, "log": log}
        }))
        .expect("manifest");
        std::fs::write(
            dir.join(bundle::MANIFEST_JSON),
            serde_json::to_vec(&m).expect("json"),
        )
        .expect("write");
        std::fs::write(dir.join(bundle::MANIFEST_PB), m.to_proto().encode_to_vec()).expect("write");
        m
    }

    #[test]
    fn a_crash_bundle_says_how_it_ended_and_every_file_it_lists_is_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = crash_bundle(tmp.path());
        assert_eq!(m.files().len(), 3, "trace, tail, log");
        assert_eq!(m.total_bytes(), 12522 + 6 + 12);
        let (text, ok) = inspect(tmp.path(), false).expect("inspect");
        assert!(ok, "{text}");
        for want in [
            "ended     crash at 2026-12-04T10:10:11.400Z: stream cut 1.4 s into a 2 s window, then connection refused",
            "recorded  up to the death",
            "blind     0.400s from the last event Go's parser reads to the death; 0.010s counting the tails",
            "log       previous.log (12 B)",
            "+ tail 0001-20261204T101010.000Z.tail",
            "generation 9, events to +390ms",
            "verified: 1 windows and 1 tail",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }

        // A damaged tail or log is found, and named.
        std::fs::write(
            tmp.path().join("0001-20261204T101010.000Z.tail"),
            [1, 7, 0, 1, 2, 4],
        )
        .expect("write");
        std::fs::remove_file(tmp.path().join("previous.log")).expect("rm");
        let (text, ok) = inspect(tmp.path(), false).expect("inspect");
        assert!(!ok);
        assert!(
            text.contains("PROBLEM 0001-20261204T101010.000Z.tail: sha256 is"),
            "{text}"
        );
        assert!(text.contains("PROBLEM previous.log: cannot open"), "{text}");
    }

    #[test]
    fn each_window_s_summary_is_one_line_and_a_missing_one_says_why() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let data = |name: &str| {
            std::fs::read(format!("{}/gotrace/testdata/{name}", env!("CARGO_MANIFEST_DIR")))
                .expect("testdata")
        };
        let gc = data("go1.26-gc.trace");
        let summary = gotrace::summary::summarize(&gc).expect("a whole trace");
        let mut entry = serde_json::to_value(bundle::SummaryEntry::of(
            &crate::ring::window::WindowSummary::Summarised(Box::new(summary.clone())),
        ))
        .expect("json");
        let w1 = put(dir, "0001-20261204T101010.000Z.trace", &gc);
        let w2 = put(dir, "0002-20261204T101011.000Z.trace", &data("go1.21.trace"));
        let window = |w: &serde_json::Value, seq: u64, summary: serde_json::Value| {
            json!({"file": w["file"], "bytes": w["bytes"], "sha256": w["sha256"], "seq": seq,
                   "start": "2026-12-04T10:10:10Z", "end": "2026-12-04T10:10:11Z", "go_version": "1.26",
                   "complete": true, "clock": "target", "summary": summary})
        };
        let old = json!({"summarised": false, "reason": "old_go",
                         "why": "not supported: v1 trace (Go 1.21 or older): the header says go 1.21"});
        entry["stw_max_ns"] = json!(213_235_072u64);
        entry["stw_max_reason"] = json!("write heap dump");
        let m: Manifest = serde_json::from_value(json!({
            "id": "20261204T101012.000Z-svc-0001", "agent_version": "0", "created_at": "2026-12-04T10:10:12Z",
            "target": {"name": "svc"},
            "trigger": {"kind": "trace", "reason": "trace: window 41 has stw_max 213.2ms",
                        "fired_at": "2026-12-04T10:10:11Z", "details": {"window": {"seq": 41}}},
            "windows": [window(&w1, 41, entry), window(&w2, 42, old)]
        }))
        .expect("manifest");
        std::fs::write(
            dir.join(bundle::MANIFEST_JSON),
            serde_json::to_vec(&m).expect("json"),
        )
        .expect("write");
        std::fs::write(dir.join(bundle::MANIFEST_PB), m.to_proto().encode_to_vec()).expect("write");
        let (text, ok) = inspect(dir, false).expect("inspect");
        assert!(ok, "{text}");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("1 ") && l.contains("write heap dump"))
            .unwrap_or_else(|| panic!("no summary line for window 1 in:\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], summary.gc_cycles.to_string(), "{line}");
        assert!(line.contains("213.2ms (write heap dump)"), "{line}");
        assert!(line.contains(&format!(" {} ", summary.runnable_max)), "{line}");
        assert!(line.ends_with("<- met the trace trigger's condition"), "{line}");
        assert!(
            text.contains("open the window holding the trigger: go tool trace")
                && text.contains("0001-20261204T101010.000Z.trace\n"),
            "the window that met the condition is the one to open:\n{text}"
        );
        assert!(
            text.contains("    2  not summarised (old_go): not supported: v1 trace (Go 1.21 or older)"),
            "{text}"
        );
        assert_eq!(Nanos(850).to_string(), "850ns");
        assert_eq!(Nanos(71_400).to_string(), "71µs");
        assert_eq!(Nanos(1_250_000_000).to_string(), "1.25s");
    }
}
