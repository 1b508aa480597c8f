//! Alerts that name a pod or a workload become FlightSnapshots, so that the node running the pods captures them.
//!
//! Alertmanager posts a webhook to ONE URL; behind a Service that is one
//! agent of many, and the pod the alert is about usually runs on another
//! node. The receiving agent writes the capture into the API server instead,
//! where every node's agent sees it. An alert with `namespace` and `pod`
//! labels (as Prometheus's Kubernetes discovery and kube-state-metrics name
//! them) selects that pod; one with `namespace` and a label of
//! `kubernetes.alert_pod_labels` selects the pods whose mapped label has its
//! value, on every node. The FlightSnapshot's name comes from the alert's
//! fingerprint and start: the same alert sent twice, to two agents, or by
//! both members of an Alertmanager pair, is one FlightSnapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::health::describe;
use super::resource::{AlertOrigin, FlightSnapshot, FlightSnapshotSpec};
use crate::config::KubernetesConfig;
use crate::telemetry::{Metrics, ResultLabels};
use crate::trigger::webhook::{Alert, AlertRouter, Labels, Source, TARGET_LABEL};

pub struct AlertRouting {
    api: Api<FlightSnapshot>,
    namespace: String,
    alert_pod_labels: BTreeMap<String, String>,
    metrics: Arc<Metrics>,
}

impl AlertRouting {
    pub fn new(cfg: &KubernetesConfig, client: kube::Client, metrics: Arc<Metrics>) -> Self {
        AlertRouting {
            api: Api::namespaced(client, &cfg.namespace),
            namespace: cfg.namespace.clone(),
            alert_pod_labels: cfg.alert_pod_labels.clone(),
            metrics,
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .alerts_routed
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }
}

/// The pods an alert's labels name, as a FlightSnapshot would select them;
/// `None` when they name no pod or workload, or name a target outright with
/// `flightrec_target`.
fn spec_for(labels: &Labels, alert_pod_labels: &BTreeMap<String, String>) -> Option<FlightSnapshotSpec> {
    if labels.contains_key(TARGET_LABEL) {
        return None;
    }
    let namespace = labels.get("namespace")?;
    if let Some(pod) = labels.get("pod") {
        return Some(FlightSnapshotSpec {
            namespaces: vec![namespace.clone()],
            pods: vec![pod.clone()],
            ..FlightSnapshotSpec::default()
        });
    }
    let (pod_label, value) = alert_pod_labels
        .iter()
        .find_map(|(alert_label, pod_label)| Some((pod_label, labels.get(alert_label)?)))?;
    Some(FlightSnapshotSpec {
        namespaces: vec![namespace.clone()],
        selector: Some(LabelSelector {
            match_labels: Some([(pod_label.clone(), value.clone())].into_iter().collect()),
            ..LabelSelector::default()
        }),
        ..FlightSnapshotSpec::default()
    })
}

/// `alert-<hash>`: the same for every copy of one alert firing once.
fn name_for(source: Source, alert: &Alert) -> String {
    let mut h = Sha256::new();
    h.update(source.as_str());
    h.update([0]);
    h.update(alert.fingerprint());
    h.update([0]);
    h.update(&alert.starts_at);
    format!("alert-{}", &hex::encode(h.finalize())[..16])
}

impl AlertRouter for AlertRouting {
    fn takes(&self, labels: &Labels) -> bool {
        spec_for(labels, &self.alert_pod_labels).is_some()
    }

    fn route<'a>(
        &'a self,
        source: Source,
        alert: &'a Alert,
        reason: String,
        details: Value,
    ) -> BoxFuture<'a, Value> {
        async move {
            let Some(mut spec) = spec_for(&alert.labels, &self.alert_pod_labels) else {
                return json!({"result": "not_routed"});
            };
            spec.reason = reason;
            spec.alert = Some(AlertOrigin {
                kind: source.as_str().into(),
                details,
            });
            let name = name_for(source, alert);
            let mut fs = FlightSnapshot::new(&name, spec);
            fs.metadata.labels = Some(
                [("app.kubernetes.io/managed-by".to_string(), "flightrec".to_string())]
                    .into_iter()
                    .collect(),
            );
            let at = json!({"namespace": self.namespace, "name": name});
            match self.api.create(&PostParams::default(), &fs).await {
                Ok(_) => {
                    self.count("created");
                    info!(flightsnapshot = %format!("{}/{name}", self.namespace), alert = alert.name(), "alert routed: FlightSnapshot created for the node running its pods");
                    json!({"flightsnapshot": at, "result": "created"})
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.count("exists");
                    json!({"flightsnapshot": at, "result": "exists"})
                }
                Err(e) => {
                    self.count("failed");
                    let (_, message) = describe("creating a FlightSnapshot for an alert", &e);
                    warn!(alert = alert.name(), "{message}");
                    json!({"flightsnapshot": at, "result": "failed", "error": message})
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_alert_names_a_pod_or_a_workload_or_nothing_to_route() {
        let map = labels(&[("service", "app")]);
        let pod = spec_for(&labels(&[("namespace", "shop"), ("pod", "checkout-1")]), &map).expect("a pod");
        assert_eq!(pod.pods, vec!["checkout-1"]);
        assert_eq!(pod.namespaces, vec!["shop"]);
        let svc =
            spec_for(&labels(&[("namespace", "shop"), ("service", "checkout")]), &map).expect("a workload");
        assert_eq!(
            svc.selector.and_then(|s| s.match_labels),
            Some(labels(&[("app", "checkout")]))
        );
        assert!(
            spec_for(&labels(&[("pod", "checkout-1")]), &map).is_none(),
            "no namespace"
        );
        assert!(spec_for(
            &labels(&[("namespace", "shop"), ("service", "x")]),
            &BTreeMap::new()
        )
        .is_none());
        assert!(spec_for(
            &labels(&[("namespace", "shop"), ("pod", "x"), (TARGET_LABEL, "t")]),
            &map
        )
        .is_none());
    }
}
