//! Amazon S3 and S3-compatible servers (MinIO, Ceph, s3s, R2), through `object_store`.
//!
//! Credentials come from `AmazonS3Builder::from_env()`: the standard
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`,
//! web identity (IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), the
//! ECS container endpoint, then instance metadata. This is the one
//! documented exception to "only config/ reads environment variables": the
//! provider's own credential chain reads the provider's own variables, and
//! the agent never sees or logs the secrets. Keys in the config file win
//! over `AWS_*` variables for everything else (bucket, endpoint, region).

use crate::tls::ExtraRoots;
use object_store::ClientOptions;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;

use super::object::{self, ObjectSink};
use crate::config::S3Config;

pub fn build(name: &str, c: &S3Config, roots: &ExtraRoots) -> Result<ObjectSink, String> {
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&c.bucket)
        .with_client_options(roots.object_store(ClientOptions::new().with_allow_http(c.allow_http)))
        .with_virtual_hosted_style_request(!c.path_style)
        .with_retry(object::store_retry());
    if let Some(e) = &c.endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(r) = &c.region {
        b = b.with_region(r);
    }
    let store = b.build().map_err(|e| object::error_chain(&e))?;
    Ok(ObjectSink {
        name: name.to_string(),
        store: Arc::new(store),
        root: format!("s3://{}", c.bucket),
        prefix: c.prefix.clone(),
        upload: c.upload.clone(),
        auth_hint: "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the role the agent runs as) and that it may write to the bucket",
    })
}
