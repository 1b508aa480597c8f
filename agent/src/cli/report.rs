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
    let Opened {
        manifest,
        raw,
        checks,
    } = open(path)?;
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
            stitched: report::stitched_listed(&raw),
            note: None,
            problems: problems.clone(),
        }
    } else {
        Options {
            bundle: manifest.id.clone(),
            stitched: report::stitched_listed(&raw),
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
