//! `flightrec report`: writes the `report.html` of a bundle (a directory or an archive of one), of any age, summaries or not.

use std::path::{Path, PathBuf};

use super::inspect::{open, Opened};
use super::CliError;
use crate::bundle::report::{self, Options, REPORT_HTML};

/// What `flightrec report` did.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    /// Files the manifest lists that are missing or altered (also on the page).
    pub problems: Vec<String>,
}

/// Reads and verifies the bundle at `path`, then writes its page to `out`,
/// by default `report.html` inside a bundle directory or
/// `./<id>-report.html` beside an archive.
pub fn write_report(path: &Path, out: Option<&Path>) -> Result<Written, CliError> {
    let Opened { manifest, checks } = open(path)?;
    let problems: Vec<String> = checks
        .iter()
        .filter_map(|c| c.problem.as_ref().map(|p| format!("{}: {p}", c.file)))
        .collect();
    let options = if path.is_dir() {
        Options {
            bundle: std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
                .to_string(),
            stitched: report::stitched_listed(&manifest),
            note: None,
            problems: problems.clone(),
        }
    } else {
        Options {
            bundle: manifest.id.clone(),
            stitched: report::stitched_listed(&manifest),
            note: Some(format!(
                "The commands name the bundle's files as extracted from {} into {}/.",
                path.display(),
                manifest.id
            )),
            problems: problems.clone(),
        }
    };
    let dest = match out {
        Some(o) => o.to_path_buf(),
        None if path.is_dir() => path.join(REPORT_HTML),
        None => PathBuf::from(format!("{}-report.html", manifest.id)),
    };
    let html = report::render(&manifest, &options);
    report::write_file(&dest, &html).map_err(|e| {
        CliError::Bundle(format!(
            "cannot write {}: {e}{}",
            dest.display(),
            if out.is_none() {
                " (choose another place with -o FILE)"
            } else {
                ""
            }
        ))
    })?;
    Ok(Written { path: dest, problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightrec_proto::Message;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    /// A bundle as agents wrote them before summaries: no `summary`, no
    /// `coverage`, a Go 1.21 window.
    #[test]
    fn an_older_bundle_without_summaries_gets_its_page_in_place_or_where_asked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("20261129T041039.240Z-checkout-e960");
        std::fs::create_dir(&dir).expect("mkdir");
        let trace = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/gotrace/testdata/go1.21.trace"
        ))
        .expect("testdata");
        let file = "0001-20261129T041023.953Z.trace";
        std::fs::write(dir.join(file), &trace).expect("write");
        let m: crate::bundle::Manifest = serde_json::from_value(json!({
            "id": "20261129T041039.240Z-checkout-e960", "agent_version": "0.0.9",
            "created_at": "2026-11-29T04:10:44Z", "target": {"name": "checkout"},
            "trigger": {"kind": "manual", "reason": "p99 went to 2s", "fired_at": "2026-11-29T04:10:25.100000Z"},
            "windows": [{"file": file, "bytes": trace.len(), "sha256": hex::encode(Sha256::digest(&trace)),
                         "start": "2026-11-29T04:10:23.953104Z", "end": "2026-11-29T04:10:28.953391Z",
                         "go_version": "1.21", "complete": true, "clock": "agent"}]
        }))
        .expect("an old manifest reads");
        std::fs::write(
            dir.join(crate::bundle::MANIFEST_JSON),
            serde_json::to_vec(&m).expect("json"),
        )
        .expect("write");
        std::fs::write(dir.join(crate::bundle::MANIFEST_PB), m.to_proto().encode_to_vec()).expect("write");

        let w = write_report(&dir, None).expect("report");
        assert_eq!(w.path, dir.join(REPORT_HTML));
        assert!(w.problems.is_empty(), "{:?}", w.problems);
        let html = std::fs::read_to_string(&w.path).expect("read");
        assert!(html.contains("not summarised: no summary in the manifest"));
        assert!(html.contains("<dt>Go</dt><dd>1.21</dd>"));
        let abs = std::fs::canonicalize(&dir).expect("canonical");
        assert!(
            html.contains(&format!("go tool trace {}/{file}", abs.display())),
            "the command names the window by an absolute path"
        );

        // -o FILE, and a damaged bundle still gets its page, problems first.
        std::fs::write(dir.join(file), b"go 1.21 trace\0\0\0").expect("damage");
        let out = tmp.path().join("elsewhere.html");
        let w = write_report(&dir, Some(&out)).expect("report");
        assert_eq!(w.path, out);
        assert_eq!(w.problems.len(), 1, "{:?}", w.problems);
        let html = std::fs::read_to_string(&out).expect("read");
        assert!(html.contains("This bundle did not verify (1 problem;"), "{html}");
    }
}
