//! The snapshot bundle on disk: its manifest, the atomic writer, and the reader that verifies.
//!
//! A bundle is the artifact every later stage handles: [`crate::snapshot`]
//! writes it, then its [`report`] (the page a person opens first) once it
//! is durable; [`crate::deliver`] keeps and ships it, the API, `flightrec
//! inspect` and `flightrec report` read it. It is written into a hidden directory beside its final
//! place, every file and the directory fsynced, then renamed into place and
//! the parent fsynced: it appears whole or not at all. Once durable,
//! [`finish`] adds the files derived from its windows (`bundle.trace`, the
//! windows stitched into one trace) and rewrites the manifest to list them.

pub mod finish;
mod manifest;
pub mod report;
mod summary;
mod verify;
mod write;

pub use manifest::{
    CoverageInfo, Derived, Ending, FileEntry, FileRole, Listed, Manifest, StitchInfo, StitchPiece,
    StitchSeam, StitchSkip, TailEntry, TargetInfo, Trigger, WindowEntry,
};
pub use summary::SummaryEntry;
pub use verify::{facts, read_manifest, verify, verify_with, FileFacts, WindowCheck};
pub use write::{sync_dir, BundleMeta, BundleWriter, Death, HashingWriter};

use std::io;
use std::path::PathBuf;

pub const MANIFEST_JSON: &str = "manifest.json";
pub const MANIFEST_PB: &str = "manifest.pb";
/// The stitched trace of a bundle (its first piece), a derived file.
pub const BUNDLE_TRACE: &str = "bundle.trace";

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
