//! Reading a bundle back: its manifest, and every file it lists checked against its size and sha256 (and a window's header).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use flightrec_proto::v1 as pb;
use flightrec_proto::Message;
use sha2::{Digest, Sha256};

use super::{BundleError, FileRole, Listed, Manifest, MANIFEST_JSON, MANIFEST_PB};

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

/// One file's verification result.
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

/// Re-hashes every file the manifest lists in `dir` (windows, tails, a log,
/// the derived `bundle.trace`)
/// and checks it against the manifest, that each window is a Go trace, and
/// that `manifest.pb` says the same as the JSON.
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
        .files()
        .into_iter()
        .map(|l| WindowCheck {
            file: l.file.to_string(),
            problem: file(l.file).and_then(|f| check_file(&l, &f)).err(),
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

fn check_file(l: &Listed<'_>, f: &FileFacts) -> Result<(), String> {
    if f.bytes != l.bytes {
        return Err(format!("size is {} bytes, manifest says {}", f.bytes, l.bytes));
    }
    if f.sha256 != l.sha256 {
        return Err(format!("sha256 is {}, manifest says {}", f.sha256, l.sha256));
    }
    // A tail starts mid-trace and a log is text: only a window and a
    // stitched trace have a header.
    let trace = match l.role {
        FileRole::Window => true,
        FileRole::Derived => l.file.ends_with(".trace"),
        FileRole::Tail | FileRole::Log => false,
    };
    if trace {
        gotrace::check_header(&f.head).map_err(|e| e.to_string())?;
    }
    Ok(())
}
