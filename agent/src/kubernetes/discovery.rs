//! Kubernetes discovery: the Go pods on this node that opt in become targets.
//!
//! A DaemonSet's flightrec lists the pods scheduled on its node
//! (`fieldSelector=spec.nodeName=<node>`) every `interval`. A running pod
//! with the annotation `flightrec.dev/port: "6060"` (its pprof port) becomes
//! the target `<namespace>.<pod>`, `http://<podIP>:<port>`, labelled with
//! its namespace, pod, node and service. The list replaces the previous one
//! as a whole, so a pod that goes away stops being recorded; when the API
//! cannot be reached, the last list stays.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

use crate::config::{default_target, valid_name, KubernetesConfig, Target};
use crate::telemetry::Metrics;

#[derive(Debug, Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Debug, Deserialize)]
struct Pod {
    metadata: Meta,
    #[serde(default)]
    status: Status,
}

#[derive(Debug, Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(rename = "deletionTimestamp", default)]
    deletion_timestamp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    phase: String,
    #[serde(rename = "podIP", default)]
    pod_ip: String,
}

/// `<namespace>.<pod>`, shortened with a hash when longer than a target
/// name may be.
fn target_name(namespace: &str, pod: &str) -> String {
    let full = format!("{namespace}.{pod}");
    if full.len() <= 64 {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    format!("{}-{hash}", &full[..55])
}

/// The targets a pod list gives, and why each skipped opted-in pod was skipped.
fn targets_of(cfg: &KubernetesConfig, list: &PodList) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for pod in &list.items {
        let m = &pod.metadata;
        let Some(port) = m.annotations.get(&cfg.port_annotation) else {
            continue;
        };
        let who = format!("{}/{}", m.namespace, m.name);
        if m.deletion_timestamp.is_some() || pod.status.phase != "Running" || pod.status.pod_ip.is_empty() {
            continue;
        }
        let Ok(port) = port.trim().parse::<u16>() else {
            skipped.push(format!("{who}: {} = {port:?} is not a port", cfg.port_annotation));
            continue;
        };
        let ip = &pod.status.pod_ip;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.clone()
        };
        let Ok(url) = Url::parse(&format!("http://{host}:{port}")) else {
            skipped.push(format!("{who}: pod IP {ip:?} does not make a URL"));
            continue;
        };
        let name = target_name(&m.namespace, &m.name);
        if !valid_name(&name) {
            skipped.push(format!("{who}: {name:?} is not a valid target name"));
            continue;
        }
        let mut t = default_target();
        t.name = name;
        t.url = url;
        if let Some(path) = m
            .annotations
            .get(&cfg.path_annotation)
            .filter(|p| p.starts_with('/'))
        {
            t.path = path.clone();
        }
        t.window = cfg.window;
        t.max_age = cfg.max_age;
        t.max_bytes = cfg.max_bytes;
        t.max_window_bytes = cfg.max_bytes;
        t.max_windows = crate::config::default_max_windows(cfg.window, cfg.max_age);
        t.read_timeout = crate::config::default_read_timeout(cfg.window);
        t.compression = cfg.compression;
        t.labels.insert("namespace".into(), m.namespace.clone());
        t.labels.insert("pod".into(), m.name.clone());
        t.labels.insert("node".into(), cfg.node.clone());
        if let Some(svc) = cfg.service_labels.iter().find_map(|l| m.labels.get(l)) {
            t.labels.insert("service".into(), svc.clone());
        }
        targets.push(t);
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    (targets, skipped)
}

#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error("cannot read the service account token {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the Kubernetes API at {url}: {why}")]
    Request { url: String, why: String },
    #[error("the Kubernetes API answered {status} listing pods: {body}; does the service account have get/list on pods (deploy/kubernetes/daemonset/rbac.yaml)?")]
    Status { status: u16, body: String },
    #[error("the pod list is not what the Kubernetes API sends: {0}")]
    Decode(String),
}

impl ListError {
    fn reason(&self) -> &'static str {
        match self {
            ListError::Token { .. } => "token",
            ListError::Request { .. } => "request",
            ListError::Status { .. } => "status",
            ListError::Decode(_) => "decode",
        }
    }
}

/// An HTTP client for the API server: its CA (the service account's, when
/// the file exists) and `tls.ca_file` on top of the system roots.
pub fn client(cfg: &KubernetesConfig, roots: &crate::tls::ExtraRoots) -> Result<reqwest::Client, String> {
    let mut b = roots
        .reqwest(reqwest::Client::builder())
        .timeout(Duration::from_secs(10));
    if cfg.api_server.scheme() == "https" {
        if let Ok(pem) = std::fs::read(&cfg.ca_file) {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("kubernetes.ca_file {}: {e}", cfg.ca_file.display()))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
    }
    b.build().map_err(|e| e.to_string())
}

async fn list(cfg: &KubernetesConfig, http: &reqwest::Client) -> Result<PodList, ListError> {
    // Read each time: projected service account tokens are rotated.
    let token = std::fs::read_to_string(&cfg.token_file).map_err(|source| ListError::Token {
        path: cfg.token_file.display().to_string(),
        source,
    })?;
    let mut url = cfg.api_server.clone();
    url.set_path("/api/v1/pods");
    url.query_pairs_mut()
        .append_pair("fieldSelector", &format!("spec.nodeName={}", cfg.node));
    let fail = |why: String| ListError::Request {
        url: cfg.api_server.to_string(),
        why,
    };
    let resp = http
        .get(url)
        .bearer_auth(token.trim())
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        return Err(ListError::Status {
            status: status.as_u16(),
            body: text,
        });
    }
    serde_json::from_slice(&body).map_err(|e| ListError::Decode(e.to_string()))
}

/// Lists the node's pods every `interval` and publishes the targets they
/// give whenever that set changes. Errors keep the last set.
pub async fn run(
    cfg: KubernetesConfig,
    http: reqwest::Client,
    out: watch::Sender<Vec<Target>>,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    info!(node = %cfg.node, api = %cfg.api_server, "discovering pods annotated {} on this node", cfg.port_annotation);
    let mut failing_since: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    let mut reported_skips = std::collections::BTreeSet::new();
    loop {
        match list(&cfg, &http).await {
            Ok(pods) => {
                if let Some(since) = failing_since.take() {
                    info!(after = %crate::units::Secs(since.elapsed()), "Kubernetes API reachable again");
                }
                let (targets, skipped) = targets_of(&cfg, &pods);
                for s in skipped {
                    if reported_skips.insert(s.clone()) {
                        warn!("pod skipped: {s}");
                    }
                }
                metrics.discovery_targets.set(targets.len() as i64);
                metrics
                    .discovery_last_success
                    .set(crate::units::unix_seconds(SystemTime::now()));
                out.send_if_modified(|current| {
                    let changed = *current != targets;
                    if changed {
                        *current = targets;
                    }
                    changed
                });
            }
            Err(e) => {
                metrics
                    .discovery_errors
                    .get_or_create(&crate::telemetry::ReasonLabels {
                        reason: e.reason().into(),
                    })
                    .inc();
                failing_since.get_or_insert_with(Instant::now);
                // Once, then at most once a minute: the count is in the metric.
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    warn!(error = %e, "listing pods failed; keeping the targets found before");
                    last_error_log = Some(Instant::now());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KubernetesConfig {
        KubernetesConfig {
            enabled: true,
            node: "node-1".into(),
            ..KubernetesConfig::default()
        }
    }

    #[test]
    fn opted_in_running_pods_become_targets_with_their_labels() {
        let list: PodList = serde_json::from_str(include_str!("../../../tests/data/kubernetes/pods.json"))
            .expect("a pod list as the API sends it");
        let (targets, skipped) = targets_of(&cfg(), &list);
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["shop.checkout-7d9f8-x2k4q", "shop.payments-5c6b7-9hz2m"]
        );
        let checkout = &targets[0];
        assert_eq!(checkout.url.as_str(), "http://10.244.1.17:6060/");
        assert_eq!(checkout.path, "/debug/pprof/trace");
        assert_eq!(
            checkout.labels.get("service").map(String::as_str),
            Some("checkout")
        );
        assert_eq!(checkout.labels.get("namespace").map(String::as_str), Some("shop"));
        assert_eq!(checkout.labels.get("node").map(String::as_str), Some("node-1"));
        assert_eq!(targets[1].path, "/internal/pprof/trace", "the path annotation");
        assert_eq!(targets[1].url.as_str(), "http://[fd00::12]:7070/");
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains("\"http\" is not a port"), "{skipped:?}");
    }

    #[test]
    fn long_names_are_shortened_but_stay_unique_and_valid() {
        let ns = "a".repeat(40);
        let a = target_name(&ns, &"b".repeat(40));
        let b = target_name(&ns, &format!("{}c", "b".repeat(39)));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(valid_name(&a) && valid_name(&b));
        assert_eq!(target_name("shop", "checkout-1"), "shop.checkout-1");
    }
}
