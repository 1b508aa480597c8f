//! `report.html`: one self-contained page that shows a whole bundle on one time axis, for a person to judge in seconds.
//!
//! The page holds everything it shows: styles, its script and the data are
//! inline, and its Content-Security-Policy forbids every request, so it
//! opens the same from a laptop, an object store's download or a mail
//! attachment. [`data`] turns a manifest into what is drawn (times become
//! seconds from the trigger), [`page`] writes the HTML; the plots are drawn
//! by the page's own script as inline SVG, the tables are plain HTML that
//! reads without it.

mod data;
mod page;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{sync_dir, Manifest};

pub use data::{Compared, Model, Verdict, Worst, DIFFERENT_RATIO, NEAR_SECONDS};

/// The report's name inside a bundle.
pub const REPORT_HTML: &str = "report.html";

/// The stitched trace's name in a bundle, when its manifest lists one.
pub const STITCHED_TRACE: &str = super::BUNDLE_TRACE;

/// How the page names the bundle's files in the commands it shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Where the bundle's files are, as the reader will type it: the
    /// bundle directory's path, or the id for an archive to extract.
    pub bundle: String,
    /// A stitched trace of the whole bundle the manifest lists (its file
    /// name): the commands open it instead of each window's own file.
    pub stitched: Option<String>,
    /// Said before the commands, e.g. that an archive must be extracted first.
    pub note: Option<String>,
    /// Problems found verifying the bundle's files, shown at the top.
    pub problems: Vec<String>,
}

impl Options {
    /// For the bundle directory `dir`: the stitched trace its manifest lists.
    pub fn for_dir(dir: &Path, manifest: &Manifest) -> Options {
        Options {
            bundle: dir.display().to_string(),
            stitched: stitched_listed(manifest),
            note: None,
            problems: Vec::new(),
        }
    }
}

/// The stitched trace the manifest's derived files list, if any: only a
/// listed file counts, never one merely present in the directory.
pub fn stitched_listed(manifest: &Manifest) -> Option<String> {
    manifest
        .derived
        .as_ref()?
        .files
        .iter()
        .find(|f| f.file == STITCHED_TRACE)
        .map(|f| f.file.clone())
}

/// The whole page for `manifest`.
pub fn render(manifest: &Manifest, options: &Options) -> String {
    page::render(manifest, &Model::of(manifest), options)
}

/// Writes `report.html` into the bundle directory `dir` and returns its
/// path. The page is written beside the bundle (a dot file in its parent),
/// fsynced, then renamed in and the directory fsynced: whoever lists or
/// archives the bundle meanwhile sees the whole page or none, never a
/// temporary file that vanishes under them.
pub fn write(dir: &Path, manifest: &Manifest) -> io::Result<PathBuf> {
    let path = dir.join(REPORT_HTML);
    let html = render(manifest, &Options::for_dir(dir, manifest));
    let tmp = match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            parent.join(format!(".{}.{REPORT_HTML}.tmp", name.to_string_lossy()))
        }
        _ => dir.join(format!(".{REPORT_HTML}.tmp")),
    };
    write_via(&tmp, &path, &html)?;
    Ok(path)
}

/// Writes `html` to `path` the same way, through a temporary file beside it.
pub fn write_file(path: &Path, html: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| REPORT_HTML.to_string());
    write_via(&path.with_file_name(format!(".{name}.tmp")), path, html)
}

fn write_via(tmp: &Path, path: &Path, html: &str) -> io::Result<()> {
    let result = (|| {
        let mut f = File::create(tmp)?;
        f.write_all(html.as_bytes())?;
        f.sync_all()?;
        fs::rename(tmp, path)?;
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
            _ => sync_dir(Path::new(".")),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests;
