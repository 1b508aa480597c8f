//! `[kubernetes]`: the annotated pods of this node as targets, fleet-wide captures (FlightSnapshots), alert routing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::table::Table;
use super::{default_target, Compression, Problem};

/// `[kubernetes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    pub enabled: bool,
    /// The node whose pods are recorded (from the downward API:
    /// `FLIGHTREC_KUBERNETES__NODE` set to `spec.nodeName`).
    pub node: String,
    /// The namespace the agent runs in (`FLIGHTREC_KUBERNETES__NAMESPACE`
    /// from the downward API): where FlightSnapshots made from alerts go.
    pub namespace: String,
    pub api_server: Url,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    /// Longest pause between attempts while the API server cannot be watched.
    pub interval: Duration,
    /// Watch FlightSnapshots and capture the matching pods of this node.
    pub flightsnapshots: bool,
    /// FlightSnapshots older than this are deleted.
    pub snapshot_ttl: Duration,
    /// Alerts posted to this agent that name a pod, or a workload through
    /// `alert_pod_labels`, become FlightSnapshots, captured on whichever
    /// node runs the pods.
    pub route_alerts: bool,
    /// Alert label -> pod label: an alert with `namespace` and one of these
    /// labels selects the pods of that namespace whose pod label has its value
    /// (e.g. `service = "app"`).
    pub alert_pod_labels: BTreeMap<String, String>,
    pub port_annotation: String,
    pub path_annotation: String,
    /// Pod labels tried in order for the target's `service` label.
    pub service_labels: Vec<String>,
    /// Settings of every discovered target.
    pub window: Duration,
    pub max_age: Duration,
    pub max_bytes: u64,
    pub compression: Compression,
    /// Whether discovered targets' windows are summarised.
    pub summaries: bool,
}

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl Default for KubernetesConfig {
    fn default() -> Self {
        let t = default_target();
        KubernetesConfig {
            enabled: false,
            node: String::new(),
            namespace: "flightrec".into(),
            api_server: Url::parse("https://kubernetes.default.svc").expect("default URL parses"),
            token_file: PathBuf::from(SA_DIR).join("token"),
            ca_file: PathBuf::from(SA_DIR).join("ca.crt"),
            interval: Duration::from_secs(15),
            flightsnapshots: true,
            snapshot_ttl: Duration::from_secs(24 * 3600),
            route_alerts: true,
            alert_pod_labels: BTreeMap::new(),
            port_annotation: "flightrec.dev/port".into(),
            path_annotation: "flightrec.dev/path".into(),
            service_labels: vec!["app.kubernetes.io/name".into(), "app".into(), "k8s-app".into()],
            window: t.window,
            max_age: t.max_age,
            max_bytes: 32 << 20,
            compression: t.compression,
            summaries: t.summaries,
        }
    }
}

/// Reads `[kubernetes]` from the root table.
pub fn read(root: &mut Table<'_>, problems: &mut Vec<Problem>) -> KubernetesConfig {
    let d = KubernetesConfig::default();
    let mut t = root.table("kubernetes", problems);
    let enabled = t.bool("enabled", false, problems);
    let node = t.string("node", problems).unwrap_or_default();
    if enabled && node.is_empty() {
        problems.push(t.problem(
            "node",
            "is required with enabled = true; set FLIGHTREC_KUBERNETES__NODE from the downward API (spec.nodeName)"
                .into(),
        ));
    }
    let api_text = t.string("api_server", problems);
    let api_server = match api_text.as_deref().map(Url::parse) {
        None => d.api_server.clone(),
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => u,
        Some(_) => {
            problems.push(t.problem(
                "api_server",
                format!("{:?} is not an http(s) URL", api_text.unwrap_or_default()),
            ));
            d.api_server.clone()
        }
    };
    let window = t.duration("window", d.window, problems);
    let max_age = t.duration("max_age", d.max_age, problems);
    if max_age < window {
        problems.push(t.problem("max_age", "must be at least the window".into()));
    }
    let compression = t.compression("compression", d.compression, problems);
    let namespace = t.string("namespace", problems).unwrap_or(d.namespace);
    if !valid_dns_label(&namespace) {
        problems.push(t.problem(
            "namespace",
            format!("{namespace:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"),
        ));
    }
    let alert_pod_labels = t.labels("alert_pod_labels", problems);
    let cfg = KubernetesConfig {
        enabled,
        node,
        namespace,
        api_server,
        token_file: t
            .string("token_file", problems)
            .map_or(d.token_file, PathBuf::from),
        ca_file: t.string("ca_file", problems).map_or(d.ca_file, PathBuf::from),
        interval: t.duration("interval", d.interval, problems),
        flightsnapshots: t.bool("flightsnapshots", d.flightsnapshots, problems),
        snapshot_ttl: t.duration("snapshot_ttl", d.snapshot_ttl, problems),
        route_alerts: t.bool("route_alerts", d.route_alerts, problems),
        alert_pod_labels,
        port_annotation: t.string("port_annotation", problems).unwrap_or(d.port_annotation),
        path_annotation: t.string("path_annotation", problems).unwrap_or(d.path_annotation),
        service_labels: t.strings("service_labels", problems).unwrap_or(d.service_labels),
        window,
        max_age,
        max_bytes: t.size("max_bytes", d.max_bytes, problems),
        compression,
        summaries: t.bool("summaries", d.summaries, problems),
    };
    if cfg.interval < Duration::from_secs(1) {
        problems.push(t.problem("interval", "must be at least 1s".into()));
    }
    t.finish(problems);
    cfg
}

/// A Kubernetes DNS label: what namespace names are.
fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
