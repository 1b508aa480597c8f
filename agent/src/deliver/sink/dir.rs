//! A plain directory (a local disk, an NFS or SMB mount): the same layout as the object stores, fsynced.
//!
//! Each file is copied to a hidden temporary name, fsynced and renamed, the
//! manifests last, then the directory is fsynced: a reader that finds
//! `manifest.json` finds a whole bundle, even after a power cut.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::{BundleRef, Delivered, Sink, SinkError};
use crate::bundle::{sync_dir, MANIFEST_JSON, MANIFEST_PB};
use crate::config::DirConfig;

pub struct DirSink {
    config: DirConfig,
}

impl DirSink {
    pub fn new(config: DirConfig) -> Self {
        DirSink { config }
    }
}

/// Copies `from` to `to` through a hidden temporary file; returns the bytes and sha256.
fn copy_synced(from: &Path, to: &Path) -> Result<(u64, String), (bool, io::Error)> {
    let mut src = File::open(from).map_err(|e| (true, e))?;
    let tmp = to.with_file_name(format!(
        ".{}.tmp",
        to.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut dst = File::create(&tmp).map_err(|e| (false, e))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(|e| (true, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(|e| (false, e))?;
        total += n as u64;
    }
    dst.sync_all().map_err(|e| (false, e))?;
    fs::rename(&tmp, to).map_err(|e| (false, e))?;
    Ok((total, hex::encode(hasher.finalize())))
}

fn deliver_blocking(config: &DirConfig, bundle: &BundleRef) -> Result<Delivered, SinkError> {
    let key = super::object::bundle_key(&config.prefix, bundle);
    let dest = config.path.join(&key);
    let remote =
        |what: &str, e: io::Error| SinkError::Remote(format!("cannot {what} in {}: {e}", dest.display()));
    let damaged = |file: &str, why: String| SinkError::Damaged {
        id: bundle.id.clone(),
        why: format!("{file}: {why}"),
    };
    fs::create_dir_all(&dest).map_err(|e| remote("create the bundle directory", e))?;
    let mut sent = 0u64;
    let copy = |file: &str| {
        copy_synced(&bundle.dir.join(file), &dest.join(file)).map_err(|(local, e)| {
            if local {
                damaged(file, format!("cannot read: {e}"))
            } else {
                remote(&format!("write {file}"), e)
            }
        })
    };
    for f in bundle.manifest.files() {
        if f.file.contains('/') || f.file.starts_with('.') {
            return Err(damaged(f.file, "file name leaves the bundle".into()));
        }
        let (bytes, sha) = copy(f.file)?;
        if sha != f.sha256 || bytes != f.bytes {
            let _ = fs::remove_file(dest.join(f.file));
            return Err(damaged(
                f.file,
                format!("on disk sha256 {sha}, manifest says {}", f.sha256),
            ));
        }
        sent += bytes;
    }
    sync_dir(&dest).map_err(|e| remote("fsync", e))?;
    // Last, so their presence means every window is in place.
    sent += copy(MANIFEST_PB)?.0;
    sent += copy(MANIFEST_JSON)?.0;
    sync_dir(&dest).map_err(|e| remote("fsync", e))?;
    Ok(Delivered {
        location: dest.display().to_string(),
        bytes: sent,
    })
}

impl Sink for DirSink {
    fn deliver<'a>(&'a self, bundle: &'a BundleRef) -> BoxFuture<'a, Result<Delivered, SinkError>> {
        let config = self.config.clone();
        let bundle = bundle.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || deliver_blocking(&config, &bundle))
                .await
                .unwrap_or_else(|e| Err(SinkError::Remote(format!("copy task failed: {e}"))))
        })
    }

    fn describe(&self) -> String {
        self.config.path.join(&self.config.prefix).display().to_string()
    }
}
