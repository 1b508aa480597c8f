//! Google Cloud Storage, through `object_store`.
//!
//! Credentials come from `GoogleCloudStorageBuilder::from_env()`:
//! `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_APPLICATION_CREDENTIALS` (a service
//! account or application-default credentials file), else the metadata
//! server (GKE workload identity, GCE); `GOOGLE_BEARER_TOKEN` for a token
//! minted elsewhere. As for S3, the provider's credential
//! chain reading its own variables is the documented exception to "only
//! config/ reads environment variables".

use crate::tls::ExtraRoots;
use std::sync::Arc;

use object_store::gcp::GoogleCloudStorageBuilder;

use super::object::{self, ObjectSink};
use crate::config::GcsConfig;

pub fn build(name: &str, c: &GcsConfig, roots: &ExtraRoots) -> Result<ObjectSink, String> {
    let mut b = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(&c.bucket)
        .with_client_options(
            roots.object_store(object_store::ClientOptions::new().with_allow_http(c.allow_http)),
        )
        .with_retry(object::store_retry());
    if let Some(f) = &c.service_account_file {
        b = b.with_service_account_path(f);
    }
    if let Some(e) = &c.endpoint {
        b = b.with_base_url(e);
    }
    let store = b.build().map_err(|e| object::error_chain(&e))?;
    Ok(ObjectSink {
        name: name.to_string(),
        store: Arc::new(store),
        root: format!("gs://{}", c.bucket),
        prefix: c.prefix.clone(),
        upload: c.upload.clone(),
        auth_hint: "check GOOGLE_APPLICATION_CREDENTIALS (or service_account_file, or the workload identity) and that it may create objects in the bucket",
    })
}
