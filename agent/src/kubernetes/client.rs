//! A client of the API server: in the cluster, the service account's token and CA; for the CLI, a kubeconfig.

use std::path::Path;
use std::time::Duration;

use crate::config::KubernetesConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubernetes.api_server {url:?} is not a URL the client can use: {why}")]
    Url { url: String, why: String },
    #[error("cannot set up the Kubernetes client: {0}")]
    Build(String),
    #[error("cannot read the kubeconfig{}: {why}", path.as_deref().map(|p| format!(" {p}")).unwrap_or_default())]
    Kubeconfig { path: Option<String>, why: String },
}

/// The agent's client: `kubernetes.api_server`, the bearer token in
/// `token_file` (re-read as the kubelet rotates it) and the CA in `ca_file`
/// (re-read too), over rustls.
pub fn in_cluster(cfg: &KubernetesConfig) -> Result<kube::Client, ClientError> {
    let url = cfg
        .api_server
        .as_str()
        .parse::<http::Uri>()
        .map_err(|e| ClientError::Url {
            url: cfg.api_server.to_string(),
            why: e.to_string(),
        })?;
    let mut c = kube::Config::new(url);
    c.default_namespace = cfg.namespace.clone();
    c.auth_info.token_file = Some(cfg.token_file.display().to_string());
    if cfg.api_server.scheme() == "https" && cfg.ca_file.is_file() {
        c.root_cert_file = Some(cfg.ca_file.clone());
    }
    c.connect_timeout = Some(Duration::from_secs(10));
    // Watches hold a response open for minutes: no read timeout here; the
    // watcher notices a silent connection itself.
    c.write_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(c).map_err(|e| ClientError::Build(e.to_string()))
}

/// The CLI's client: the kubeconfig named, or the usual one (`KUBECONFIG`,
/// `~/.kube/config`), or the in-cluster service account when neither exists.
pub async fn from_kubeconfig(path: Option<&Path>) -> Result<kube::Client, ClientError> {
    let config = match path {
        Some(p) => {
            let fail = |why: String| ClientError::Kubeconfig {
                path: Some(p.display().to_string()),
                why,
            };
            let file = kube::config::Kubeconfig::read_from(p).map_err(|e| fail(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| fail(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| ClientError::Kubeconfig {
            path: None,
            why: e.to_string(),
        })?,
    };
    kube::Client::try_from(config).map_err(|e| ClientError::Build(e.to_string()))
}
