//! Sinks: where durable bundles go. One trait, one file per backend; `config::sinks` reads `[[sinks]]`.
//!
//! A sink delivers one committed bundle at a time and must be idempotent:
//! after a crash the same bundle is delivered again under the same keys, so
//! "exactly once" holds for what lands at the destination. Retries, backoff
//! and the circuit breaker live in `delivery`, not here.

use crate::tls::ExtraRoots;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::bundle::Manifest;
use crate::config::{Backend, SinkConfig};

pub mod azure;
pub mod dir;
pub mod gcs;
pub mod http;
pub mod object;
pub mod s3;

/// A committed bundle handed to a sink.
#[derive(Debug, Clone)]
pub struct BundleRef {
    pub id: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// What a successful delivery reports.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Where the bundle now is (`s3://bucket/key/`, a URL, a path); never holds secrets.
    pub location: String,
    /// Bytes sent.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The bundle on disk is missing a file or a file differs from its
    /// manifest: no retry can help, so the bundle is marked failed for the sink.
    #[error("bundle {id} is damaged on disk: {why}")]
    Damaged { id: String, why: String },
    /// The destination could not take the bundle now; delivery retries.
    #[error("{0}")]
    Remote(String),
}

impl SinkError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Damaged { .. })
    }

    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Damaged { .. } => "damaged",
            SinkError::Remote(_) => "remote",
        }
    }
}

/// One destination. Implementations stream files from disk; memory stays
/// bounded whatever the bundle size.
pub trait Sink: Send + Sync {
    /// Delivers every window, then the manifests last, so a reader that sees
    /// the manifest sees a whole bundle. Delivering the same bundle again
    /// overwrites the same keys.
    fn deliver<'a>(&'a self, bundle: &'a BundleRef) -> BoxFuture<'a, Result<Delivered, SinkError>>;

    /// Where this sink sends bundles, for logs (no secrets).
    fn describe(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up sink {sink:?}: {why}")]
pub struct BuildError {
    pub sink: String,
    pub why: String,
}

/// Builds the running sink for a config; `roots` adds `tls.ca_file` to the
/// system's trust.
pub fn build(config: &SinkConfig, roots: &ExtraRoots) -> Result<Arc<dyn Sink>, BuildError> {
    let fail = |why: String| BuildError {
        sink: config.name.clone(),
        why,
    };
    let sink: Arc<dyn Sink> = match &config.backend {
        Backend::S3(c) => Arc::new(s3::build(&config.name, c, roots).map_err(fail)?),
        Backend::Gcs(c) => Arc::new(gcs::build(&config.name, c, roots).map_err(fail)?),
        Backend::Azure(c) => Arc::new(azure::build(&config.name, c, roots).map_err(fail)?),
        Backend::Dir(c) => Arc::new(dir::DirSink::new(c.clone())),
        Backend::Http(c) => Arc::new(http::HttpSink::new(&config.name, c, roots).map_err(fail)?),
    };
    Ok(sink)
}
