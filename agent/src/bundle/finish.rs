//! The step after a bundle is durable: files derived from its windows (`bundle.trace`, `report.html`), then the manifest rewritten to list them.
//!
//! A bundle is acknowledged once its windows and manifest are durable
//! ([`super::BundleWriter`]); nothing here delays that. Then, on the
//! blocking pool and before the bundle is queued for delivery, [`finish`]
//! stitches the windows of Go >= 1.22 into one trace Go's parser accepts
//! ([`gotrace::stitch`]): `bundle.trace`, and `bundle-2.trace`... when a
//! seam cannot be stitched (another process, another Go version, a window
//! cut short); then `report.html`, the page of the whole bundle
//! ([`super::report`]), whose commands open the stitched trace. Each file is written under a hidden temporary name, fsynced
//! and renamed; then `manifest.pb` and `manifest.json` are replaced the same
//! way with a `derived` section listing the files with their sha256, how
//! each seam went, and when they were ready. Until that last rename the
//! bundle is exactly what it was when acknowledged, so a crash in between
//! loses nothing: the spool finishes the bundle again at startup.
//!
//! A stitch that fails (a window unreadable, the disk full) never fails the
//! bundle: its derived files are removed and the manifest says why in
//! `derived.stitch.error`.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gotrace::stitch::{Output, SeamOutcome, Stitcher, Summary, WindowOutcome};
use prost::Message;
use sha2::{Digest, Sha256};

use super::report;
use super::write::write_synced;
use super::{
    read_manifest, sync_dir, BundleError, Derived, FileEntry, Manifest, StitchInfo, StitchPiece, StitchSeam,
    StitchSkip, MANIFEST_JSON, MANIFEST_PB,
};

pub use super::BUNDLE_TRACE;

/// Prefix of the temporary files this step writes in a bundle directory
/// (hidden, so never listed nor delivered; removed when the step reruns).
const TEMP_PREFIX: &str = ".derived-";

/// What [`finish`] made of a bundle.
#[derive(Debug, Clone)]
pub struct Finished {
    pub manifest: Manifest,
    /// For the `flightrec_bundle_stitch_total` metric: `stitched` (one
    /// trace), `split` (several pieces), `none` (no window of Go >= 1.22),
    /// `failed` (see the manifest's `derived.stitch.error`), `already` (the
    /// manifest had its derived section).
    pub result: &'static str,
    /// Why `report.html` could not be written, if it could not (the bundle
    /// is whole and delivered without it; `flightrec report` writes it).
    pub report_error: Option<String>,
}

/// The name of piece `index` (from 0).
pub fn piece_name(index: usize) -> String {
    match index {
        0 => BUNDLE_TRACE.to_string(),
        i => format!("bundle-{}.trace", i + 1),
    }
}

/// Writes the derived files of the bundle in `dir` and rewrites its
/// manifests to list them. `Err` only when the manifest cannot be read or
/// rewritten: the bundle is then as it was, without derived files.
pub fn finish(dir: &Path) -> Result<Finished, BundleError> {
    finish_again(dir, false)
}

/// [`finish`]; with `again`, the derived files are made anew even when the
/// manifest lists them (`flightrec stitch --again`).
pub fn finish_again(dir: &Path, again: bool) -> Result<Finished, BundleError> {
    let mut manifest = read_manifest(dir)?;
    if manifest.derived.is_some() && !again {
        return Ok(Finished {
            manifest,
            result: "already",
            report_error: None,
        });
    }
    remove_leftovers(dir);
    let (files, stitch, result) = match stitch(dir, &manifest) {
        Ok((summary, files)) => {
            let result = match summary.pieces.len() {
                0 => "none",
                1 => "stitched",
                _ => "split",
            };
            (files, info(&summary), result)
        }
        Err(why) => {
            remove_leftovers(dir);
            let info = StitchInfo {
                error: Some(why),
                ..StitchInfo::default()
            };
            (Vec::new(), info, "failed")
        }
    };
    manifest.derived = Some(Derived {
        ready_at: crate::units::rfc3339(SystemTime::now()),
        files,
        stitch,
    });
    // The page goes last, so that its commands open the stitched trace.
    let report_error = match write_report(dir, &manifest) {
        Ok(entry) => {
            if let Some(d) = manifest.derived.as_mut() {
                d.files.push(entry);
            }
            None
        }
        Err(e) => Some(e.to_string()),
    };
    write_manifests(dir, &manifest).map_err(|source| BundleError::Write {
        id: manifest.id.clone(),
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(Finished {
        manifest,
        result,
        report_error,
    })
}

/// Writes `report.html` ([`super::report`]) under its temporary name,
/// fsynced, then renamed into place.
fn write_report(dir: &Path, manifest: &Manifest) -> io::Result<FileEntry> {
    let html = report::render(manifest, &report::Options::for_dir(dir, manifest));
    let tmp = dir.join(temp_name(report::REPORT_HTML));
    let (bytes, sha256) = write_synced(&tmp, |out| out.write_all(html.as_bytes()))?;
    fs::rename(&tmp, dir.join(report::REPORT_HTML))?;
    sync_dir(dir)?;
    Ok(FileEntry {
        file: report::REPORT_HTML.into(),
        bytes,
        sha256,
    })
}

/// Stitches the windows into pieces in `dir`, each renamed into place once
/// fsynced. `Err` says why none is kept.
fn stitch(dir: &Path, manifest: &Manifest) -> Result<(Summary, Vec<FileEntry>), String> {
    let mut pieces = Pieces {
        dir: dir.to_path_buf(),
        done: Vec::new(),
    };
    let mut s = Stitcher::new(&mut pieces);
    for w in &manifest.windows {
        if w.file.contains('/') || w.file.contains("..") {
            return Err(format!("window file name {:?} leaves the bundle", w.file));
        }
        let f = File::open(dir.join(&w.file)).map_err(|e| format!("cannot open {}: {e}", w.file))?;
        s.add_window(&w.file, BufReader::with_capacity(1 << 20, f))
            .map_err(|e| e.to_string())?;
    }
    let summary = s.finish().map_err(|e| e.to_string())?;
    let mut files = Vec::with_capacity(pieces.done.len());
    for (name, bytes, sha256) in pieces.done {
        fs::rename(dir.join(temp_name(&name)), dir.join(&name))
            .map_err(|e| format!("cannot rename {name} into place: {e}"))?;
        files.push(FileEntry {
            file: name,
            bytes,
            sha256,
        });
    }
    sync_dir(dir).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    Ok((summary, files))
}

fn info(summary: &Summary) -> StitchInfo {
    let idx = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    StitchInfo {
        pieces: summary
            .pieces
            .iter()
            .map(|p| StitchPiece {
                file: piece_name(p.index),
                windows: p.windows.iter().map(|&w| idx(w)).collect(),
                generations: p.generations,
                events_added: p.events_added,
            })
            .collect(),
        seams: summary
            .seams
            .iter()
            .map(|s| StitchSeam {
                after: idx(s.after),
                before: idx(s.before),
                gap_ns: s.gap_ns,
                outcome: match &s.outcome {
                    SeamOutcome::Stitched { .. } => "stitched".into(),
                    SeamOutcome::Split { reason } => format!("split: {reason}"),
                },
            })
            .collect(),
        skipped: summary
            .windows
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                WindowOutcome::Skipped { reason } => Some(StitchSkip {
                    window: idx(i),
                    reason: reason.clone(),
                }),
                WindowOutcome::Stitched { .. } => None,
            })
            .collect(),
        error: None,
    }
}

fn temp_name(name: &str) -> String {
    format!("{TEMP_PREFIX}{name}")
}

/// Temporary files of an interrupted run, and pieces the manifest does not
/// list (renamed into place before a crash): both are made again.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let piece = name.starts_with("bundle") && name.ends_with(".trace");
        if name.starts_with(TEMP_PREFIX) || piece {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Replaces both manifests: each written aside, fsynced, renamed, then the
/// directory fsynced. `manifest.pb` goes first, so a reader that sees the
/// new JSON sees the new protobuf.
fn write_manifests(dir: &Path, manifest: &Manifest) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    let pb = manifest.to_proto().encode_to_vec();
    for (name, bytes) in [(MANIFEST_PB, &pb), (MANIFEST_JSON, &json)] {
        let tmp = dir.join(temp_name(name));
        write_synced(&tmp, |out| out.write_all(bytes))?;
        fs::rename(&tmp, dir.join(name))?;
    }
    sync_dir(dir)
}

/// The stitcher's output: each piece written to its temporary name through
/// a hash.
struct Pieces {
    dir: PathBuf,
    /// Pieces written and fsynced: name, bytes, sha256.
    done: Vec<(String, u64, String)>,
}

struct PieceFile {
    out: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for PieceFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Output for &mut Pieces {
    type Piece = PieceFile;

    fn begin(&mut self, index: usize) -> io::Result<PieceFile> {
        let f = File::create(self.dir.join(temp_name(&piece_name(index))))?;
        Ok(PieceFile {
            out: BufWriter::with_capacity(1 << 20, f),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    fn end(&mut self, index: usize, piece: PieceFile) -> io::Result<()> {
        let PieceFile { out, hasher, bytes } = piece;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        self.done
            .push((piece_name(index), bytes, hex::encode(hasher.finalize())));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle of the gotrace crate's recorded windows (testdata/stitch),
    /// with a manifest listing them; `missing` names one listed but absent.
    fn bundle(dir: &Path, names: &[&str], missing: Option<&str>) {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("gotrace/testdata/stitch");
        let mut windows = Vec::new();
        for name in names {
            let bytes = fs::read(data.join(name)).expect("testdata");
            if missing != Some(*name) {
                fs::write(dir.join(name), &bytes).expect("write");
            }
            windows.push(serde_json::json!({
                "file": name, "start": "", "end": "", "bytes": bytes.len(),
                "sha256": hex::encode(Sha256::digest(&bytes)), "go_version": "1.26",
                "complete": true, "clock": "target"
            }));
        }
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "id": "20260101T000000.000Z-t-0001", "agent_version": "0",
            "created_at": "2026-01-01T00:00:00Z", "target": {"name": "t"},
            "trigger": {"kind": "manual", "reason": "", "fired_at": "2026-01-01T00:00:00Z"},
            "windows": windows
        }))
        .expect("manifest");
        write_manifests(dir, &m).expect("manifests");
    }

    #[test]
    fn windows_become_one_listed_trace_and_a_second_run_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let names = ["go1.26-gc-1.trace", "go1.26-gc-2.trace", "go1.26-gc-3.trace"];
        bundle(tmp.path(), &names, None);
        fs::write(tmp.path().join(temp_name(BUNDLE_TRACE)), b"left by a crash").expect("leftover");
        let f = finish(tmp.path()).expect("finish");
        assert_eq!(f.result, "stitched");
        let d = f.manifest.derived.as_ref().expect("derived");
        let files: Vec<&str> = d.files.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(files, [BUNDLE_TRACE, report::REPORT_HTML], "the page last");
        let page = fs::read_to_string(tmp.path().join(report::REPORT_HTML)).expect("report.html");
        assert!(
            page.contains("/bundle.trace"),
            "the page's commands open the stitched trace"
        );
        assert_eq!(d.stitch.pieces[0].windows, [0, 1, 2]);
        assert!(d.stitch.seams.iter().all(|s| s.outcome == "stitched"));
        assert!(!tmp.path().join(temp_name(BUNDLE_TRACE)).exists());
        // Read back: every file, bundle.trace included, and manifest.pb.
        let m = read_manifest(tmp.path()).expect("read");
        assert_eq!(m, f.manifest);
        let checks = super::super::verify(tmp.path(), &m);
        assert!(checks.iter().all(|c| c.problem.is_none()), "{checks:?}");
        assert!(checks.iter().any(|c| c.file == BUNDLE_TRACE));
        assert!(checks.iter().any(|c| c.file == report::REPORT_HTML));
        let again = finish(tmp.path()).expect("finish");
        assert_eq!(again.result, "already");
        assert_eq!(read_manifest(tmp.path()).expect("read"), m);
    }

    #[test]
    fn a_stitch_that_fails_leaves_the_bundle_whole_and_says_why() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let names = ["go1.26-gc-1.trace", "go1.26-gc-2.trace"];
        bundle(tmp.path(), &names, Some("go1.26-gc-2.trace"));
        let f = finish(tmp.path()).expect("the manifest is still written");
        assert_eq!(f.result, "failed");
        let d = f.manifest.derived.as_ref().expect("derived");
        let files: Vec<&str> = d.files.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(files, [report::REPORT_HTML], "the page, without a stitched trace");
        let why = d.stitch.error.as_deref().expect("error");
        assert!(why.contains("go1.26-gc-2.trace"), "{why}");
        let left: Vec<String> = fs::read_dir(tmp.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            !left
                .iter()
                .any(|n| n.starts_with("bundle") || n.starts_with(TEMP_PREFIX)),
            "{left:?}"
        );
    }
}
