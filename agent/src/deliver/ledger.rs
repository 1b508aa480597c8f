//! The delivery ledger: one small file per bundle, `.ledger/<id>.json`, saying what each sink has of it.
//!
//! Written aside, fsynced and renamed, so after a crash an entry is the old
//! one or the new one, never a mix.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::bundle;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not yet at the sink; `attempts` > 0 means it is being retried.
    Pending,
    Delivered,
    /// Damaged on disk: can never be delivered to this sink.
    Failed,
}

/// One bundle's delivery to one sink, as persisted and shown by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkState {
    pub state: DeliveryState,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Memory only: when it was last tried, to rotate among failing bundles.
    #[serde(skip)]
    pub(super) tried: Option<Instant>,
}

impl SinkState {
    pub(super) fn pending() -> Self {
        SinkState {
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: None,
            last_attempt_at: None,
            delivered_at: None,
            location: None,
            tried: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LedgerFile {
    pub(super) id: String,
    pub(super) sinks: BTreeMap<String, SinkState>,
}

pub(super) fn read_ledger(path: &Path) -> Option<BTreeMap<String, SinkState>> {
    let text = fs::read(path).ok()?;
    match serde_json::from_slice::<LedgerFile>(&text) {
        Ok(f) => Some(f.sinks),
        Err(e) => {
            // Written aside and renamed, so this is damage from outside:
            // deliver again rather than trust it.
            warn!(path = %path.display(), error = %e, "unreadable ledger entry; the bundle counts as pending for every sink");
            None
        }
    }
}

/// Write aside, fsync, rename, fsync the directory: the entry is the old
/// one or the new one after a crash, never a mix.
pub(super) fn write_ledger(dir: &Path, entry: &LedgerFile) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{}.json.tmp", entry.id));
    let mut f = File::create(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(format!("{}.json", entry.id)))?;
    bundle::sync_dir(dir)
}
