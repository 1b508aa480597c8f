//! Delivers a bundle to any `object_store` backend: windows (and their tails) first, manifests last, big files as multipart streams.
//!
//! Layout: `{prefix}/{target}/{YYYY-MM-DD}/{id}/{file}`, the date being the
//! trigger's UTC day (from the id, so a retry uses the same keys). Windows
//! are uploaded in name order, then `manifest.pb`, then `manifest.json`: a
//! reader that finds `manifest.json` finds a whole bundle. A file larger
//! than `part_size` goes up as a multipart upload with at most
//! `upload_concurrency` parts in flight, so memory stays near
//! `part_size * (upload_concurrency + 1)` whatever the window size.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BundleRef, Delivered, Sink, SinkError};
use crate::bundle::{MANIFEST_JSON, MANIFEST_PB};
use crate::config::Upload;

/// Read size when streaming a window from disk.
const READ_CHUNK: usize = 1 << 20;

pub struct ObjectSink {
    pub name: String,
    pub store: Arc<dyn ObjectStore>,
    /// `s3://bucket`, `gs://bucket`, `az://account/container`: for locations in logs and the API.
    pub root: String,
    pub prefix: String,
    pub upload: Upload,
    /// What to check when the store refuses the credentials.
    pub auth_hint: &'static str,
}

/// `{prefix}/{target}/{YYYY-MM-DD}/{id}`, without a leading '/'.
pub fn bundle_key(prefix: &str, bundle: &BundleRef) -> String {
    let day = day_of_id(&bundle.id).unwrap_or_else(|| "unknown-day".into());
    let target = &bundle.manifest.target.name;
    if prefix.is_empty() {
        format!("{target}/{day}/{}", bundle.id)
    } else {
        format!("{prefix}/{target}/{day}/{}", bundle.id)
    }
}

/// Ids start with the trigger's compact UTC time, `20261129T041039.240Z`.
fn day_of_id(id: &str) -> Option<String> {
    let d = id.get(..8)?;
    d.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]))
}

impl ObjectSink {
    fn remote(&self, what: &str, key: &ObjectPath, e: &object_store::Error) -> SinkError {
        let text = error_chain(e);
        let refused = matches!(
            e,
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
        ) || [
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
            "AuthenticationFailed",
            "AuthorizationFailure",
            "InvalidAuthenticationInfo",
        ]
        .iter()
        .any(|needle| text.contains(needle));
        if refused {
            SinkError::Remote(format!(
                "sink {:?}: {} refused the credentials while writing {key}: {text}; {}",
                self.name, self.root, self.auth_hint
            ))
        } else {
            SinkError::Remote(format!(
                "sink {:?}: cannot {what} {}/{key}: {text}",
                self.name, self.root
            ))
        }
    }

    /// Streams one window file into `key`, hashing it on the way; aborts the
    /// upload (nothing is left under `key`) when the bytes differ from the manifest.
    async fn put_window(
        &self,
        bundle: &BundleRef,
        file: &str,
        want_sha: &str,
        want_bytes: u64,
        key: ObjectPath,
    ) -> Result<u64, SinkError> {
        let damaged = |why: String| SinkError::Damaged {
            id: bundle.id.clone(),
            why: format!("{file}: {why}"),
        };
        let mut f = tokio::fs::File::open(bundle.dir.join(file))
            .await
            .map_err(|e| damaged(format!("cannot open: {e}")))?;
        let mut out = BufWriter::with_capacity(self.store.clone(), key.clone(), self.upload.part_size)
            .with_max_concurrency(self.upload.concurrency);
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            let n = match f.read_buf(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = out.abort().await;
                    return Err(damaged(format!("read failed: {e}")));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf);
            total += n as u64;
            if let Err(e) = out.put(buf.freeze()).await {
                let _ = out.abort().await;
                return Err(self.remote("upload", &key, &e));
            }
        }
        let sha = hex::encode(hasher.finalize());
        if sha != want_sha || total != want_bytes {
            let _ = out.abort().await;
            return Err(damaged(format!(
                "on disk {total} bytes with sha256 {sha}, manifest says {want_bytes} bytes with sha256 {want_sha}"
            )));
        }
        out.shutdown().await.map_err(|e| {
            let e = object_store::Error::Generic {
                store: "upload",
                source: Box::new(e),
            };
            self.remote("finish upload of", &key, &e)
        })?;
        Ok(total)
    }

    async fn put_small(&self, bundle: &BundleRef, file: &str, key: ObjectPath) -> Result<u64, SinkError> {
        let bytes = tokio::fs::read(bundle.dir.join(file))
            .await
            .map_err(|e| SinkError::Damaged {
                id: bundle.id.clone(),
                why: format!("{file}: cannot read: {e}"),
            })?;
        let n = bytes.len() as u64;
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| self.remote("upload", &key, &e))?;
        Ok(n)
    }

    async fn deliver_bundle(&self, bundle: &BundleRef) -> Result<Delivered, SinkError> {
        let base = bundle_key(&self.prefix, bundle);
        let key = |file: &str| ObjectPath::from(format!("{base}/{file}"));
        let mut sent = 0u64;
        for f in bundle.manifest.files() {
            if f.file.contains('/') || f.file.starts_with('.') {
                return Err(SinkError::Damaged {
                    id: bundle.id.clone(),
                    why: format!("{} file name {:?} leaves the bundle", f.role.as_str(), f.file),
                });
            }
            sent += self
                .put_window(bundle, f.file, f.sha256, f.bytes, key(f.file))
                .await?;
        }
        // Last: their presence means every file above is in place.
        sent += self.put_small(bundle, MANIFEST_PB, key(MANIFEST_PB)).await?;
        sent += self.put_small(bundle, MANIFEST_JSON, key(MANIFEST_JSON)).await?;
        Ok(Delivered {
            location: format!("{}/{base}/", self.root),
            bytes: sent,
        })
    }
}

impl Sink for ObjectSink {
    fn deliver<'a>(&'a self, bundle: &'a BundleRef) -> BoxFuture<'a, Result<Delivered, SinkError>> {
        Box::pin(self.deliver_bundle(bundle))
    }

    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("{}/", self.root)
        } else {
            format!("{}/{}/", self.root, self.prefix)
        }
    }
}

/// An error and its causes in one line; object_store's top-level message
/// alone often hides the server's answer.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Request retries inside object_store stay short: the delivery loop owns
/// backoff, and a stuck request must surface so the breaker can see it.
pub fn store_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let manifest: crate::bundle::Manifest = serde_json::from_value(serde_json::json!({
            "id": "20261129T041039.240Z-checkout-e960", "agent_version": "0", "created_at": "x",
            "target": {"name": "checkout"},
            "trigger": {"kind": "manual", "reason": "", "fired_at": "2026-11-29T04:10:39Z"},
            "windows": []
        }))
        .expect("manifest");
        let b = BundleRef {
            id: manifest.id.clone(),
            dir: "/x".into(),
            manifest,
        };
        assert_eq!(
            bundle_key("flightrec/prod", &b),
            "flightrec/prod/checkout/2026-11-29/20261129T041039.240Z-checkout-e960"
        );
        assert_eq!(
            bundle_key("", &b),
            "checkout/2026-11-29/20261129T041039.240Z-checkout-e960"
        );
    }
}
