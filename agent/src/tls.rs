//! Trust for outbound HTTPS: the system's roots plus the PEM of `tls.ca_file`.
//!
//! Every client the agent builds (collectors, trigger probes, sinks) takes
//! its trust from here, so one key covers a private CA everywhere.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("cannot use tls.ca_file {path}: {why}")]
pub struct TlsError {
    pub path: String,
    pub why: String,
}

/// Extra roots, as each HTTP stack wants them.
#[derive(Clone, Default)]
pub struct ExtraRoots {
    reqwest: Vec<reqwest::Certificate>,
    object_store: Vec<object_store::Certificate>,
}

impl ExtraRoots {
    /// Reads `ca_file`; `None` means the system roots alone.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let Some(path) = ca_file else {
            return Ok(ExtraRoots::default());
        };
        let fail = |why: String| TlsError {
            path: path.display().to_string(),
            why,
        };
        let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let reqwest = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
        if reqwest.is_empty() {
            return Err(fail("no PEM certificate in it".into()));
        }
        let object_store =
            object_store::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
        Ok(ExtraRoots {
            reqwest,
            object_store,
        })
    }

    /// A reqwest client builder that trusts the extra roots too.
    pub fn reqwest(&self, mut b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for c in &self.reqwest {
            b = b.add_root_certificate(c.clone());
        }
        b
    }

    /// object_store client options that trust the extra roots too.
    pub fn object_store(&self, mut o: object_store::ClientOptions) -> object_store::ClientOptions {
        for c in &self.object_store {
            o = o.with_root_certificate(c.clone());
        }
        o
    }
}
