//! Azure Blob Storage (and Azurite), through `object_store`.
//!
//! Credentials come from `MicrosoftAzureBuilder::from_env()`:
//! `AZURE_STORAGE_ACCOUNT_KEY`, a SAS token, a service principal
//! (`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/`AZURE_TENANT_ID`), workload
//! identity or managed identity. As for S3, the provider's credential chain
//! reading its own variables is the documented exception to "only config/
//! reads environment variables".

use crate::tls::ExtraRoots;
use object_store::ClientOptions;
use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;

use super::object::{self, ObjectSink};
use crate::config::AzureConfig;

pub fn build(name: &str, c: &AzureConfig, roots: &ExtraRoots) -> Result<ObjectSink, String> {
    let mut b = MicrosoftAzureBuilder::from_env()
        .with_account(&c.account)
        .with_container_name(&c.bucket)
        .with_client_options(roots.object_store(ClientOptions::new().with_allow_http(c.allow_http)))
        .with_retry(object::store_retry());
    if let Some(e) = &c.endpoint {
        b = b.with_endpoint(e.clone());
    }
    let store = b.build().map_err(|e| object::error_chain(&e))?;
    Ok(ObjectSink {
        name: name.to_string(),
        store: Arc::new(store),
        root: format!("az://{}/{}", c.account, c.bucket),
        prefix: c.prefix.clone(),
        upload: c.upload.clone(),
        auth_hint: "check AZURE_STORAGE_ACCOUNT_KEY (or the SAS token, service principal or managed identity) and that it may write blobs in the container",
    })
}
