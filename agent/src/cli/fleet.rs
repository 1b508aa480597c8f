//! `flightrec snapshot --selector`: one FlightSnapshot in the API server captures every matching pod, on every node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::CliError;
use crate::kubernetes::resource::{parse_selector, COMPLETE, FAILED};
use crate::kubernetes::{client, FlightSnapshot, FlightSnapshotSpec};
use crate::units::{parse_duration, Secs};

pub struct FleetArgs {
    /// A label selector as `kubectl -l` takes it.
    pub selector: String,
    /// The pods' namespace, where the FlightSnapshot is created too; the
    /// kubeconfig's namespace for the FlightSnapshot and every namespace for
    /// the pods when absent.
    pub namespace: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub reason: Option<String>,
    pub post_trigger: Option<String>,
    pub wait: bool,
    pub timeout: Duration,
}

/// Creates the FlightSnapshot and, unless told not to, follows its status
/// until every matched pod has a bundle or a failure, printing each pod's
/// line as it comes. Fails when the capture as a whole failed.
pub async fn fleet_snapshot(args: FleetArgs) -> Result<(), CliError> {
    let selector =
        parse_selector(&args.selector).map_err(|e| CliError::Kubernetes(format!("--selector {e}")))?;
    if let Some(p) = &args.post_trigger {
        parse_duration(p).map_err(|e| CliError::Kubernetes(format!("--post-trigger {e}")))?;
    }
    let client = client::from_kubeconfig(args.kubeconfig.as_deref())
        .await
        .map_err(|e| CliError::Kubernetes(e.to_string()))?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<FlightSnapshot> = Api::namespaced(client, &ns);
    let spec = FlightSnapshotSpec {
        selector: Some(selector),
        namespaces: args.namespace.iter().cloned().collect(),
        reason: args
            .reason
            .clone()
            .unwrap_or_else(|| format!("flightrec snapshot --selector {}", args.selector)),
        post_trigger: args.post_trigger.clone(),
        ..FlightSnapshotSpec::default()
    };
    let mut fs = FlightSnapshot::new("", spec);
    fs.metadata.name = None;
    fs.metadata.generate_name = Some("cli-".into());
    let created = api.create(&PostParams::default(), &fs).await.map_err(|e| {
        CliError::Kubernetes(format!(
            "cannot create the FlightSnapshot in namespace {ns}: {e} (is the CRD installed, and may you create flightsnapshots.flightrec.dev there?)"
        ))
    })?;
    let name = created.name_any();
    println!("FlightSnapshot {ns}/{name} created");
    if !args.wait {
        return Ok(());
    }
    let started = Instant::now();
    let mut printed: BTreeMap<(String, String), String> = BTreeMap::new();
    loop {
        let fs = api
            .get(&name)
            .await
            .map_err(|e| CliError::Kubernetes(format!("reading FlightSnapshot {ns}/{name}: {e}")))?;
        let status = fs.status.unwrap_or_default();
        for p in &status.pods {
            let line = format!(
                "{}/{} on {}: {}{}{}",
                p.namespace,
                p.name,
                p.node,
                p.phase,
                p.bundle
                    .as_deref()
                    .map(|b| format!(", bundle {b}"))
                    .unwrap_or_default(),
                p.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
            let key = (p.namespace.clone(), p.name.clone());
            if printed.get(&key) != Some(&line) {
                println!("{line}");
                printed.insert(key, line);
            }
        }
        match status.phase.as_deref() {
            Some(COMPLETE) => {
                println!("FlightSnapshot {ns}/{name}: Complete");
                return Ok(());
            }
            Some(FAILED) => {
                return Err(CliError::Kubernetes(format!(
                    "FlightSnapshot {ns}/{name} failed: {}",
                    status.message.unwrap_or_else(|| "see its status.pods".into())
                )))
            }
            _ => {}
        }
        if started.elapsed() > args.timeout {
            return Err(CliError::Kubernetes(format!(
                "FlightSnapshot {ns}/{name} not complete after {}; kubectl -n {ns} get flightsnapshot {name} -o yaml shows each node's progress",
                Secs(args.timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
