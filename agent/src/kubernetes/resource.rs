//! The `FlightSnapshot` custom resource: a capture of the matching pods of every node, asked for once in the API server.
//!
//! A person (`kubectl apply`, `flightrec snapshot --selector`) or an agent
//! that received an alert creates one; every node's agent watches them,
//! captures its own matching pods once, and writes their entries into the
//! status. The CRD installed by `deploy/kubernetes/daemonset` is generated
//! from these types (a test keeps the two equal).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec: which pods, and why.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flightrec.dev",
    version = "v1alpha1",
    kind = "FlightSnapshot",
    plural = "flightsnapshots",
    shortname = "fsnap",
    namespaced,
    status = "FlightSnapshotStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A flight-recorder capture of the matching pods on every node: each node's flightrec agent snapshots its own matching pods once and writes their bundles into the status.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FlightSnapshotSpec {
    /// The pods to capture, by their labels. Empty selects every pod that
    /// opted in (annotation `flightrec.dev/port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Namespaces of the pods; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Pod names; empty means any. An alert that names one pod sets it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// Why; recorded in every bundle's manifest.
    #[serde(default)]
    pub reason: String,
    /// How long to keep recording after the capture starts, e.g. "5s"; the
    /// agents' `snapshots.post_trigger` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_trigger: Option<String>,
    /// Set when an alert made this capture: it then goes through each
    /// agent's trigger gate (cooldown, rate limit) as the alert would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertOrigin>,
}

/// The alert a FlightSnapshot was made from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertOrigin {
    /// `alertmanager` or `grafana`.
    pub kind: String,
    /// The alert as the webhook puts it in a manifest's trigger details.
    #[schemars(schema_with = "any_object")]
    #[serde(default)]
    pub details: serde_json::Value,
}

/// What the agents did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlightSnapshotStatus {
    /// Pending, Running, Complete (every matched pod has a durable bundle or
    /// a failure), or Failed (none could be taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// One entry per captured pod, written by the agent of its node.
    #[serde(default)]
    pub pods: Vec<PodCapture>,
}

/// One pod's capture.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCapture {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// The bundle id in that node's spool and sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Running (recording), Complete (durable) or Failed.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";

/// Reads a label selector as `kubectl -l` takes it: `app=checkout`,
/// `tier!=db`, `env in (prod,staging)`, `env notin (dev)`, `canary`,
/// `!canary`, joined by commas.
pub fn parse_selector(text: &str) -> Result<LabelSelector, String> {
    let mut match_labels = std::collections::BTreeMap::new();
    let mut expressions = Vec::new();
    let requirement = |key: &str, operator: &str, values: Option<Vec<String>>| {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values,
        }
    };
    for part in split_top_level(text) {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("{text:?}: an empty requirement"));
        }
        let bad_key = |k: &str| k.is_empty() || k.contains(char::is_whitespace);
        if let Some((key, rest)) = part.split_once(" notin ").or_else(|| part.split_once(" in ")) {
            let op = if part.contains(" notin ") { "NotIn" } else { "In" };
            let list = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{part:?}: the values of in/notin go in parentheses"))?;
            let values: Vec<String> = list.split(',').map(|v| v.trim().to_string()).collect();
            if bad_key(key.trim()) || values.iter().any(String::is_empty) {
                return Err(format!("{part:?} is not a requirement"));
            }
            expressions.push(requirement(key.trim(), op, Some(values)));
        } else if let Some((key, value)) = part.split_once("!=") {
            if bad_key(key.trim()) {
                return Err(format!("{part:?} is not a requirement"));
            }
            expressions.push(requirement(
                key.trim(),
                "NotIn",
                Some(vec![value.trim().to_string()]),
            ));
        } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            if bad_key(key.trim()) {
                return Err(format!("{part:?} is not a requirement"));
            }
            match_labels.insert(key.trim().to_string(), value.trim().to_string());
        } else if let Some(key) = part.strip_prefix('!') {
            if bad_key(key.trim()) {
                return Err(format!("{part:?} is not a requirement"));
            }
            expressions.push(requirement(key.trim(), "DoesNotExist", None));
        } else if bad_key(part) {
            return Err(format!("{part:?} is not a requirement"));
        } else {
            expressions.push(requirement(part, "Exists", None));
        }
    }
    Ok(LabelSelector {
        match_labels: (!match_labels.is_empty()).then_some(match_labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

/// Splits on the commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Any JSON object, kept as it is by the API server.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn selectors_read_as_kubectl_reads_them() {
        let s = parse_selector("app=checkout, tier!=db,env in (prod, staging),canary,!debug").expect("valid");
        assert_eq!(
            s.match_labels,
            Some(
                [("app".to_string(), "checkout".to_string())]
                    .into_iter()
                    .collect()
            )
        );
        let ops: Vec<(String, String, Option<Vec<String>>)> = s
            .match_expressions
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.key, r.operator, r.values))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("tier".into(), "NotIn".into(), Some(vec!["db".into()])),
                (
                    "env".into(),
                    "In".into(),
                    Some(vec!["prod".into(), "staging".into()])
                ),
                ("canary".into(), "Exists".into(), None),
                ("debug".into(), "DoesNotExist".into(), None),
            ]
        );
        for bad in ["", "app=x,,b=y", "env in prod", "a b=c", "env in (a,)"] {
            assert!(parse_selector(bad).is_err(), "{bad:?} should be refused");
        }
    }

    /// The CRD `kubectl apply -k deploy/kubernetes/daemonset` installs is
    /// exactly the one these types describe.
    #[test]
    fn the_deployed_crd_is_the_generated_one() {
        let generated = format!(
            "# Generated from agent/src/kubernetes/resource.rs; a unit test keeps it equal.\n{}",
            serde_yaml::to_string(&FlightSnapshot::crd()).expect("yaml")
        );
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/kubernetes/daemonset/crd.yaml"
        );
        let deployed = std::fs::read_to_string(path).unwrap_or_default();
        if deployed != generated {
            let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/flightsnapshot-crd.yaml");
            std::fs::write(out, &generated).expect("write the generated CRD");
            panic!("{path} differs from the CRD the types generate; if the change is meant, cp {out} {path}");
        }
    }
}
