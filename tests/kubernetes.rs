//! The agent against a real Kubernetes control plane: kube-apiserver on etcd
//! with RBAC (tests/common/kube.rs). The DaemonSet's own manifests are
//! applied, the agent runs with the DaemonSet's config and a token the API
//! server issued for its ServiceAccount, and the pods it finds point at real
//! Go services on loopback addresses. The test plays kubelet: it puts pods
//! on nodes and writes their status.

mod common;

use std::time::Duration;

use common::kube::{random_hex, ControlPlane, Pod, Terminated};
use common::*;
use serde_json::Value;

const DAEMONSET: &str = "deploy/kubernetes/daemonset";

/// What the DaemonSet's kustomization asks of an operator, then the
/// manifests themselves. Returns the API token put in the flightrec-token
/// Secret.
fn install_daemonset(cp: &ControlPlane) -> String {
    cp.create_namespace("flightrec");
    let api_token = random_hex(16);
    cp.kubectl(&[
        "-n",
        "flightrec",
        "create",
        "secret",
        "generic",
        "flightrec-token",
        &format!("--from-literal=token={api_token}"),
    ]);
    let dir = repo_root().join(DAEMONSET);
    let out = cp.kubectl(&["apply", "-k", &dir.display().to_string()]);
    for created in [
        "serviceaccount/flightrec created",
        "clusterrole.rbac.authorization.k8s.io/flightrec-pod-reader created",
        "clusterrolebinding.rbac.authorization.k8s.io/flightrec-pod-reader created",
        "daemonset.apps/flightrec created",
    ] {
        assert!(out.contains(created), "kubectl apply -k {DAEMONSET} said:\n{out}");
    }
    api_token
}

/// The agent binary with the DaemonSet's flightrec.toml as it is, and
/// through `FLIGHTREC_*` what a pod of that DaemonSet on `node` would have:
/// the node name (the downward API sets it the same way), and in place of
/// the in-cluster defaults (kubernetes.default.svc, the mounted
/// ServiceAccount token and CA, the flightrec-token Secret) this API server
/// and files holding the same things. The listen address and spool
/// directory move off the pod's paths too.
fn daemonset_agent(cp: &ControlPlane, node: &str, sa_token: &str, api_token: &str) -> Agent {
    let config = std::fs::read_to_string(repo_root().join(DAEMONSET).join("flightrec.toml"))
        .expect("read the DaemonSet's flightrec.toml");
    let mounts = cp.dir().join(format!("pod-on-{node}"));
    std::fs::create_dir_all(&mounts).expect("create the pod's mount dir");
    let write = |name: &str, text: &str| -> String {
        let p = mounts.join(name);
        std::fs::write(&p, text).expect("write a mounted file");
        p.display().to_string()
    };
    let token_file = write("sa-token", sa_token);
    let api_token_file = write("api-token", api_token);
    let spool = mounts.join("spool").display().to_string();
    let ca = cp.ca_file.display().to_string();
    Agent::start_with_env(
        &config,
        &[
            ("FLIGHTREC_KUBERNETES__NODE", node),
            ("FLIGHTREC_KUBERNETES__API_SERVER", &cp.server),
            ("FLIGHTREC_KUBERNETES__TOKEN_FILE", &token_file),
            ("FLIGHTREC_KUBERNETES__CA_FILE", &ca),
            ("FLIGHTREC_SERVER__TOKEN_FILE", &api_token_file),
            ("FLIGHTREC_SERVER__LISTEN", "127.0.0.1:0"),
            ("FLIGHTREC_SNAPSHOTS__DIR", &spool),
        ],
    )
}

fn target_names(agent: &Agent) -> Vec<String> {
    let (_, v) = agent.get("/v1/targets");
    v["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect()
}

/// A Go service listening on `ip`, as a pod with that pod IP would.
fn service_on(ip: &str) -> GoService {
    GoService::start(
        "fixture",
        &["-addr", &format!("{ip}:0"), "-pairs", "1", "-rate", "500"],
    )
}

#[test]
fn the_control_plane_is_real_and_takes_the_daemonset_manifests() {
    let cp = ControlPlane::start();
    eprintln!("control plane ready in {:?}", cp.started_in);
    let version: Value = serde_json::from_str(&cp.kubectl(&["version", "-o", "json"])).expect("JSON");
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.35.4", "{version}");

    install_daemonset(&cp);
    let ds = cp.get_json(&["-n", "flightrec", "daemonset", "flightrec"]);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "flightrec");
    // The generated ConfigMap holds the DaemonSet's config as it is in the repo.
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "flightrec-config")
        .expect("config volume");
    let cm_name = volume["configMap"]["name"].as_str().expect("ConfigMap name");
    assert!(
        cm_name.starts_with("flightrec-config-"),
        "kustomize hashes the name: {cm_name}"
    );
    let cm = cp.get_json(&["-n", "flightrec", "configmap", cm_name]);
    let repo_config =
        std::fs::read_to_string(repo_root().join(DAEMONSET).join("flightrec.toml")).expect("read");
    assert_eq!(cm["data"]["flightrec.toml"], repo_config.as_str());

    // RBAC is enforced on the ServiceAccount's real token: the ClusterRole
    // lets it read pods anywhere, and nothing else.
    let sa = cp.kubeconfig_for("flightrec", "flightrec", &cp.token("flightrec", "flightrec"));
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        // `can-i` prints "no" and exits 1 when the answer is no.
        cp.kubectl_as(&sa, &full, None)
            .is_ok_and(|out| out.trim() == "yes")
    };
    assert!(can(&["list", "pods", "--all-namespaces"]));
    assert!(can(&["get", "pods", "-n", "kube-system"]));
    assert!(!can(&["create", "pods", "-n", "flightrec"]));
    assert!(!can(&["list", "secrets", "-n", "flightrec"]));
    let whoami = cp
        .kubectl_as(
            &sa,
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
            None,
        )
        .expect("auth whoami");
    assert_eq!(whoami, "system:serviceaccount:flightrec:flightrec");
}

#[test]
fn the_daemonsets_token_finds_the_annotated_pod_on_its_node_and_records_it() {
    let cp = ControlPlane::start();
    eprintln!("control plane ready in {:?}", cp.started_in);
    let api_token = install_daemonset(&cp);
    cp.create_namespace("shop");

    let checkout = service_on("127.0.0.21");
    let elsewhere = service_on("127.0.0.22");
    let on_node = Pod::new("shop", "checkout-1", "node-1")
        .label("app", "checkout")
        .annotation("flightrec.dev/port", &checkout.port().to_string());
    let other_node = Pod::new("shop", "checkout-2", "node-2")
        .label("app", "checkout")
        .annotation("flightrec.dev/port", &elsewhere.port().to_string());
    let not_annotated = Pod::new("shop", "db-1", "node-1").label("app", "db");
    for (pod, ip) in [
        (&on_node, "127.0.0.21"),
        (&other_node, "127.0.0.22"),
        (&not_annotated, "127.0.0.23"),
    ] {
        cp.create_pod(pod);
        cp.pod_running(pod, ip);
    }
    assert_eq!(
        cp.get_json(&["-n", "shop", "pod", "checkout-1"])["status"]["podIP"],
        "127.0.0.21"
    );

    let agent = daemonset_agent(&cp, "node-1", &cp.token("flightrec", "flightrec"), &api_token);
    // The DaemonSet's 5 s windows: the first is kept about 5 s after the start.
    wait_for(
        "the pod on node-1 to be recorded",
        Duration::from_secs(60),
        || {
            (target_names(&agent) == ["shop.checkout-1"] && agent.windows_kept("shop.checkout-1") >= 1)
                .then_some(())
        },
    );
    let t = agent.target("shop.checkout-1");
    assert_eq!(t["url"], format!("http://127.0.0.21:{}/", checkout.port()));
    assert_eq!(t["labels"]["node"], "node-1");
    assert_eq!(t["labels"]["namespace"], "shop");
    assert_eq!(t["labels"]["pod"], "checkout-1");
    assert_eq!(t["labels"]["service"], "checkout");
    assert_eq!(agent.metric("flightrec_discovery_targets", &[]), Some(1.0));
    assert_eq!(
        agent
            .metric("flightrec_discovery_errors_total", &[])
            .unwrap_or(0.0),
        0.0
    );
    // The pod on node-2 came in no list: one list is one answer of the API
    // server, and it held node-1's pods only.
    assert_eq!(target_names(&agent), ["shop.checkout-1"]);
}

#[test]
fn a_token_without_the_rbac_gets_403_which_the_agent_logs_and_counts() {
    let cp = ControlPlane::start();
    eprintln!("control plane ready in {:?}", cp.started_in);
    let api_token = install_daemonset(&cp);
    cp.create_namespace("shop");
    let pod = Pod::new("shop", "checkout-1", "node-1").annotation("flightrec.dev/port", "6060");
    cp.create_pod(&pod);
    cp.pod_running(&pod, "127.0.0.31");

    // The namespace's `default` ServiceAccount: a valid token, no binding.
    let agent = daemonset_agent(&cp, "node-1", &cp.token("flightrec", "default"), &api_token);
    let error = wait_for(
        "the agent to log the refused list",
        Duration::from_secs(30),
        || {
            agent.logs().iter().find_map(|l| {
                (l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("listing pods failed")))
                .then(|| l["error"].as_str().unwrap_or_default().to_string())
            })
        },
    );
    eprintln!("the agent logged: {error}");
    // The API server's own words reach the log: who was refused what, and
    // where the RBAC the agent needs is.
    for said in [
        "answered 403",
        "pods is forbidden",
        "system:serviceaccount:flightrec:default",
        "cannot list resource",
        "rbac.yaml",
    ] {
        assert!(error.contains(said), "{said:?} not in {error:?}");
    }
    assert!(agent
        .metric("flightrec_discovery_errors_total", &[("reason", "status")])
        .is_some_and(|n| n >= 1.0));
    assert_eq!(agent.metric("flightrec_discovery_targets", &[]), Some(0.0));

    // The HTTP API says nothing of it today: /v1/targets is an empty list
    // and /readyz is ready, exactly as for a node with no annotated pods.
    // Only the log and the metric tell a refused token from an empty node.
    let (status, v) = agent.get("/v1/targets");
    assert_eq!(status, 200);
    assert_eq!(v["targets"], serde_json::json!([]), "{v}");
    let (status, ready) = agent.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    // The pod is there for a token that may see it.
    assert_eq!(
        cp.get_json(&["-n", "shop", "pods"])["items"][0]["metadata"]["name"],
        "checkout-1"
    );
}

#[test]
fn the_api_server_restarts_with_etcds_data_and_takes_pod_status_as_from_a_kubelet() {
    let mut cp = ControlPlane::start();
    eprintln!("control plane ready in {:?}", cp.started_in);
    install_daemonset(&cp);
    cp.create_namespace("shop");
    let pod = Pod::new("shop", "checkout-1", "node-1").annotation("flightrec.dev/port", "6060");
    cp.create_pod(&pod);
    cp.pod_running(&pod, "127.0.0.41");
    let sa = cp.kubeconfig_for("flightrec", "flightrec", &cp.token("flightrec", "flightrec"));
    let server = cp.server.clone();

    cp.restart_apiserver();
    eprintln!("kube-apiserver restarted in {:?}", cp.started_in);
    assert_eq!(cp.server, server);
    // Objects came back from etcd, and a token issued before the restart is
    // still good: the signing key and the certificate are the same.
    let pods = cp
        .kubectl_as(&sa, &["get", "pods", "-n", "shop", "-o", "json"], None)
        .expect("the old token lists pods");
    let pods: Value = serde_json::from_str(&pods).expect("JSON");
    assert_eq!(pods["items"][0]["status"]["podIP"], "127.0.0.41");

    // What the kubelet does after a container is OOM-killed, then the pod's
    // deletion as the kubelet finishes it.
    let died = std::time::SystemTime::now();
    cp.pod_restarted(
        &pod,
        1,
        &Terminated {
            reason: "OOMKilled".into(),
            exit_code: 137,
            started_at: died - Duration::from_secs(60),
            finished_at: died,
        },
    );
    let pod_status = cp.get_json(&["-n", "shop", "pod", "checkout-1"])["status"].clone();
    assert_eq!(pod_status["podIP"], "127.0.0.41");
    assert_eq!(pod_status["phase"], "Running");
    let status = &pod_status["containerStatuses"][0];
    assert_eq!(status["restartCount"], 1);
    assert_eq!(status["lastState"]["terminated"]["reason"], "OOMKilled");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 137);
    assert_eq!(
        status["lastState"]["terminated"]["finishedAt"],
        humantime::format_rfc3339_seconds(died).to_string()
    );
    cp.delete_pod("shop", "checkout-1");
    let terminating = cp.get_json(&["-n", "shop", "pod", "checkout-1"]);
    assert!(
        terminating["metadata"]["deletionTimestamp"].is_string(),
        "a pod on a node stays Terminating until its kubelet removes it"
    );
    cp.remove_pod("shop", "checkout-1");
    let left = cp.get_json(&["-n", "shop", "pods"]);
    assert_eq!(left["items"], serde_json::json!([]));
}
