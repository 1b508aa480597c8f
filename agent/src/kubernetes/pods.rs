//! Pods as flightrec sees them: which ones opted in, the target each becomes, and which a FlightSnapshot selects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::core::{Selector, SelectorExt};
use sha2::{Digest, Sha256};
use url::Url;

use crate::config::{
    default_max_windows, default_read_timeout, default_target, valid_name, KubernetesConfig, Target,
};

/// `<namespace>.<pod>`, shortened with a hash when longer than a target
/// name may be.
pub fn target_name(namespace: &str, pod: &str) -> String {
    let full = format!("{namespace}.{pod}");
    if full.len() <= 64 {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    format!("{}-{hash}", &full[..55])
}

pub fn namespace(p: &Pod) -> &str {
    p.metadata.namespace.as_deref().unwrap_or_default()
}

pub fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

pub fn node(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn labels(p: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    p.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Running, not being deleted, with an IP: a pod whose pprof can be asked.
fn live(p: &Pod) -> bool {
    let status = p.status.as_ref();
    p.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.pod_ip.as_deref())
            .is_some_and(|ip| !ip.is_empty())
}

/// Whether the pod asked to be recorded (`kubernetes.port_annotation`).
pub fn opted_in(cfg: &KubernetesConfig, p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(&cfg.port_annotation))
}

/// The target a pod becomes: `None` when it did not opt in or is not
/// running; `Err` says why an opted-in pod cannot be recorded.
pub fn target_of(cfg: &KubernetesConfig, p: &Pod) -> Result<Option<Target>, String> {
    let Some(port) = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&cfg.port_annotation))
    else {
        return Ok(None);
    };
    if !live(p) {
        return Ok(None);
    }
    let (ns, pod) = (namespace(p), name(p));
    let who = format!("{ns}/{pod}");
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| format!("{who}: {} = {port:?} is not a port", cfg.port_annotation))?;
    let ip = p
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or_default();
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let url = Url::parse(&format!("http://{host}:{port}"))
        .map_err(|_| format!("{who}: pod IP {ip:?} does not make a URL"))?;
    let target_name = target_name(ns, pod);
    if !valid_name(&target_name) {
        return Err(format!("{who}: {target_name:?} is not a valid target name"));
    }
    let mut t = default_target();
    t.name = target_name;
    t.url = url;
    if let Some(path) = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&cfg.path_annotation))
        .filter(|p| p.starts_with('/'))
    {
        t.path = path.clone();
    }
    t.window = cfg.window;
    t.max_age = cfg.max_age;
    t.max_bytes = cfg.max_bytes;
    t.max_window_bytes = cfg.max_bytes;
    t.max_windows = default_max_windows(cfg.window, cfg.max_age);
    t.read_timeout = default_read_timeout(cfg.window);
    t.compression = cfg.compression;
    t.summaries = cfg.summaries;
    t.labels.insert("namespace".into(), ns.to_string());
    t.labels.insert("pod".into(), pod.to_string());
    t.labels.insert("node".into(), cfg.node.clone());
    if let Some(svc) = cfg.service_labels.iter().find_map(|l| labels(p).get(l)) {
        t.labels.insert("service".into(), svc.clone());
    }
    Ok(Some(t))
}

/// The targets of a set of pods, in name order, and why each opted-in pod
/// that could not be recorded was skipped.
pub fn targets_of<'a>(
    cfg: &KubernetesConfig,
    pods: impl Iterator<Item = &'a Pod>,
) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for p in pods {
        match target_of(cfg, p) {
            Ok(Some(t)) => targets.push(t),
            Ok(None) => {}
            Err(why) => skipped.push(why),
        }
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    (targets, skipped)
}

/// What a FlightSnapshot selects: a label selector, namespaces (none: all)
/// and pod names (none: any).
#[derive(Debug, Clone)]
pub struct Selection {
    pub selector: Selector,
    pub namespaces: Vec<String>,
    pub names: Vec<String>,
}

impl Selection {
    pub fn matches(&self, p: &Pod) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace(p)))
            && (self.names.is_empty() || self.names.iter().any(|n| n == name(p)))
            && self.selector.matches(labels(p))
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

    fn pods() -> Vec<Pod> {
        let list: k8s_openapi::List<Pod> =
            serde_json::from_str(include_str!("../../../tests/data/kubernetes/pods.json"))
                .expect("a pod list as the API sends it");
        list.items
    }

    #[test]
    fn opted_in_running_pods_become_targets_with_their_labels() {
        let (targets, skipped) = targets_of(&cfg(), pods().iter());
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

    #[test]
    fn a_selection_takes_labels_namespaces_and_names_together() {
        let all = pods();
        let pick = |sel: Selection| -> Vec<String> {
            all.iter()
                .filter(|p| sel.matches(p))
                .map(|p| name(p).to_string())
                .collect()
        };
        let app_checkout: Selector = [("app.kubernetes.io/name", "checkout")].into_iter().collect();
        let checkout = pick(Selection {
            selector: app_checkout.clone(),
            namespaces: vec![],
            names: vec![],
        });
        assert_eq!(checkout, vec!["checkout-7d9f8-x2k4q"]);
        let elsewhere = pick(Selection {
            selector: app_checkout,
            namespaces: vec!["other".into()],
            names: vec![],
        });
        assert!(elsewhere.is_empty());
        let by_name = pick(Selection {
            selector: Selector::default(),
            namespaces: vec!["shop".into()],
            names: vec!["payments-5c6b7-9hz2m".into()],
        });
        assert_eq!(by_name, vec!["payments-5c6b7-9hz2m"]);
    }
}
