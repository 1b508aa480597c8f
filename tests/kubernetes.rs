//! The agent against a real Kubernetes control plane: kube-apiserver on etcd
//! with RBAC (tests/common/kube.rs). The DaemonSet's own manifests are
//! applied (CRD, RBAC, DaemonSet, Service), each agent runs with the
//! DaemonSet's config and a token the API server issued for its
//! ServiceAccount, as the DaemonSet's pod on one node would, and the pods it
//! finds point at real Go services on loopback addresses. The test plays
//! kubelet: it puts pods on nodes and writes their status.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::alerting::Service;
use common::kube::{random_hex, ControlPlane, Pod, Terminated};
use common::*;
use serde_json::{json, Value};

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
        "customresourcedefinition.apiextensions.k8s.io/flightsnapshots.flightrec.dev created",
        "serviceaccount/flightrec created",
        "clusterrole.rbac.authorization.k8s.io/flightrec created",
        "clusterrolebinding.rbac.authorization.k8s.io/flightrec created",
        "service/flightrec created",
        "daemonset.apps/flightrec created",
    ] {
        assert!(out.contains(created), "kubectl apply -k {DAEMONSET} said:\n{out}");
    }
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/flightsnapshots.flightrec.dev",
    ]);
    api_token
}

/// The DaemonSet's agent on one node.
struct Node {
    name: String,
    agent: Agent,
    /// The pod's mounts: token files and the spool, kept across restarts.
    mounts: PathBuf,
    env: Vec<(String, String)>,
}

impl Node {
    /// The agent binary with the DaemonSet's flightrec.toml as it is, and
    /// through `FLIGHTREC_*` what a pod of that DaemonSet on `node` would
    /// have: the node name and namespace (the downward API sets them the same
    /// way), and in place of the in-cluster defaults (kubernetes.default.svc,
    /// the mounted ServiceAccount token and CA, the flightrec-token Secret)
    /// this API server and files holding the same things. The listen address
    /// and spool move off the pod's paths; windows, post_trigger and the
    /// cooldown are shortened so the test runs in seconds.
    fn start(cp: &ControlPlane, node: &str, sa_token: &str, api_token: &str) -> Node {
        let mounts = cp.dir().join(format!("pod-on-{node}"));
        std::fs::create_dir_all(&mounts).expect("create the pod's mount dir");
        let write = |name: &str, text: &str| -> String {
            let p = mounts.join(name);
            std::fs::write(&p, text).expect("write a mounted file");
            p.display().to_string()
        };
        let env: Vec<(String, String)> = [
            ("FLIGHTREC_KUBERNETES__NODE", node.to_string()),
            ("FLIGHTREC_KUBERNETES__NAMESPACE", "flightrec".into()),
            ("FLIGHTREC_KUBERNETES__API_SERVER", cp.server.clone()),
            ("FLIGHTREC_KUBERNETES__TOKEN_FILE", write("sa-token", sa_token)),
            ("FLIGHTREC_KUBERNETES__CA_FILE", cp.ca_file.display().to_string()),
            ("FLIGHTREC_KUBERNETES__WINDOW", "1s".into()),
            ("FLIGHTREC_KUBERNETES__MAX_AGE", "20s".into()),
            ("FLIGHTREC_KUBERNETES__INTERVAL", "2s".into()),
            ("FLIGHTREC_KUBERNETES__ALERT_POD_LABELS__SERVICE", "app".into()),
            ("FLIGHTREC_SERVER__TOKEN_FILE", write("api-token", api_token)),
            ("FLIGHTREC_SERVER__LISTEN", "127.0.0.1:0".into()),
            (
                "FLIGHTREC_SNAPSHOTS__DIR",
                mounts.join("spool").display().to_string(),
            ),
            ("FLIGHTREC_SNAPSHOTS__POST_TRIGGER", "1s".into()),
            ("FLIGHTREC_TRIGGER_LIMITS__COOLDOWN", "1s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let agent = Self::agent(&env);
        Node {
            name: node.into(),
            agent,
            mounts,
            env,
        }
    }

    fn agent(env: &[(String, String)]) -> Agent {
        let config = std::fs::read_to_string(repo_root().join(DAEMONSET).join("flightrec.toml"))
            .expect("read the DaemonSet's flightrec.toml");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Agent::start_with_env(&config, &env)
    }

    /// The pod restarted: SIGKILL when `kill`, else SIGTERM; same spool.
    fn restart(&mut self, kill: bool) {
        if kill {
            self.agent.proc.kill();
        } else {
            let status = self.agent.stop();
            assert!(status.success(), "{} exited {status}", self.name);
        }
        self.agent = Self::agent(&self.env);
    }

    fn spool(&self) -> PathBuf {
        self.mounts.join("spool")
    }

    /// Every committed bundle's manifest, by id.
    fn bundles(&self) -> BTreeMap<String, Value> {
        bundles_in(&self.spool())
    }

    fn targets(&self) -> Vec<String> {
        let (_, v) = self.agent.get("/v1/targets");
        v["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .filter_map(|t| t["name"].as_str().map(String::from))
            .collect()
    }

    fn wait_recording(&self, target: &str) {
        wait_for(
            &format!("{} to record {target}", self.name),
            Duration::from_secs(30),
            || {
                (self.targets().iter().any(|t| t == target) && self.agent.windows_kept(target) >= 1)
                    .then_some(())
            },
        );
    }
}

fn bundles_in(spool: &Path) -> BTreeMap<String, Value> {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let m = std::fs::read(e.path().join("manifest.json")).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                serde_json::from_slice(&m).ok()?,
            ))
        })
        .collect()
}

/// A Go service listening on `ip`, as a pod with that pod IP would.
fn service_on(ip: &str) -> GoService {
    GoService::start(
        "fixture",
        &["-addr", &format!("{ip}:0"), "-pairs", "1", "-rate", "500"],
    )
}

/// An annotated pod on `node` whose pprof is a real Go service on `ip`.
fn recorded_pod(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    node: &str,
    app: &str,
    ip: &str,
) -> (Pod, GoService) {
    let svc = service_on(ip);
    let pod = Pod::new(ns, name, node)
        .label("app", app)
        .annotation("flightrec.dev/port", &svc.port().to_string());
    cp.create_pod(&pod);
    cp.pod_running(&pod, ip);
    (pod, svc)
}

fn flightsnapshot(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    cp.get_json(&["-n", ns, "flightsnapshot", name])
}

/// Waits until the FlightSnapshot has a final phase; returns it.
fn wait_final(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    wait_for(
        &format!("FlightSnapshot {ns}/{name} to finish"),
        Duration::from_secs(60),
        || {
            let fs = flightsnapshot(cp, ns, name);
            matches!(fs["status"]["phase"].as_str(), Some("Complete") | Some("Failed")).then_some(fs)
        },
    )
}

/// The bundles one FlightSnapshot made in a spool.
fn bundles_of(node: &Node, fs_name: &str) -> Vec<(String, Value)> {
    node.bundles()
        .into_iter()
        .filter(|(_, m)| m["trigger"]["details"]["flightsnapshot"]["name"] == fs_name)
        .collect()
}

#[test]
fn the_manifests_install_the_crd_and_rbac_grants_exactly_what_the_agent_uses() {
    let cp = ControlPlane::start();
    eprintln!("control plane ready in {:?}", cp.started_in);
    let version: Value = serde_json::from_str(&cp.kubectl(&["version", "-o", "json"])).expect("JSON");
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.35.4", "{version}");
    install_daemonset(&cp);
    let ds = cp.get_json(&["-n", "flightrec", "daemonset", "flightrec"]);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "flightrec");
    let env = pod["containers"][0]["env"].to_string();
    for downward in [
        "FLIGHTREC_KUBERNETES__NODE",
        "spec.nodeName",
        "FLIGHTREC_KUBERNETES__NAMESPACE",
        "metadata.namespace",
    ] {
        assert!(env.contains(downward), "{downward} not in {env}");
    }
    let svc = cp.get_json(&["-n", "flightrec", "service", "flightrec"]);
    assert_eq!(svc["spec"]["selector"]["app.kubernetes.io/name"], "flightrec");

    // RBAC is enforced on the ServiceAccount's real token: what the agent
    // does, and nothing else.
    let sa = cp.kubeconfig_for("flightrec", "flightrec", &cp.token("flightrec", "flightrec"));
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        // `can-i` prints "no" and exits 1 when the answer is no.
        cp.kubectl_as(&sa, &full, None)
            .is_ok_and(|out| out.trim() == "yes")
    };
    for granted in [
        &["watch", "pods", "--all-namespaces"][..],
        &["list", "pods", "--all-namespaces"],
        &["get", "pods", "--subresource=log", "-n", "shop"],
        &["watch", "flightsnapshots.flightrec.dev", "--all-namespaces"],
        &["create", "flightsnapshots.flightrec.dev", "-n", "flightrec"],
        &["delete", "flightsnapshots.flightrec.dev", "-n", "shop"],
        &[
            "update",
            "flightsnapshots.flightrec.dev",
            "--subresource=status",
            "-n",
            "shop",
        ],
    ] {
        assert!(can(granted), "the ServiceAccount may not {granted:?}");
    }
    for refused in [
        &["create", "pods", "-n", "flightrec"][..],
        &["delete", "pods", "-n", "shop"],
        &["list", "secrets", "-n", "flightrec"],
        &["update", "flightsnapshots.flightrec.dev", "-n", "shop"],
        &[
            "patch",
            "flightsnapshots.flightrec.dev",
            "--subresource=status",
            "-n",
            "shop",
        ],
    ] {
        assert!(
            !can(refused),
            "the ServiceAccount may {refused:?}, which it never needs"
        );
    }
}

#[test]
fn pods_are_found_by_watch_at_once_dropped_when_they_go_and_found_again_after_an_api_server_restart() {
    let mut cp = ControlPlane::start();
    let api_token = install_daemonset(&cp);
    cp.create_namespace("shop");
    let node = Node::start(&cp, "node-a", &cp.token("flightrec", "flightrec"), &api_token);
    wait_for("the pod watch to start", Duration::from_secs(30), || {
        let (_, v) = node.agent.get("/v1/targets");
        (v["kubernetes"]["watches"]["pods"]["state"] == "watching").then_some(())
    });

    // A pod that starts: its event reaches the agent at once.
    let (_checkout, _svc) = recorded_pod(&cp, "shop", "checkout-1", "node-a", "checkout", "127.0.0.21");
    let started = Instant::now();
    wait_for("the new pod to become a target", Duration::from_secs(10), || {
        node.targets()
            .contains(&"shop.checkout-1".to_string())
            .then_some(())
    });
    let found_in = started.elapsed();
    eprintln!("a pod that started was a target {found_in:?} later");
    assert!(
        found_in < Duration::from_secs(2),
        "{found_in:?}: discovery must not poll"
    );
    node.wait_recording("shop.checkout-1");

    // A running pod that gets the annotation later.
    let late = service_on("127.0.0.22");
    let plain = Pod::new("shop", "payments-1", "node-a").label("app", "payments");
    cp.create_pod(&plain);
    cp.pod_running(&plain, "127.0.0.22");
    assert!(!node.targets().contains(&"shop.payments-1".to_string()));
    cp.kubectl(&[
        "-n",
        "shop",
        "annotate",
        "pod",
        "payments-1",
        &format!("flightrec.dev/port={}", late.port()),
    ]);
    let started = Instant::now();
    node.wait_recording("shop.payments-1");
    eprintln!("an annotated pod was recorded {:?} later", started.elapsed());

    // A pod that goes is no longer recorded.
    cp.delete_pod("shop", "payments-1");
    cp.remove_pod("shop", "payments-1");
    wait_for(
        "the deleted pod to stop being recorded",
        Duration::from_secs(10),
        || {
            let (_, v) = node.agent.get("/v1/targets");
            let t = v["targets"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["name"] == "shop.payments-1").cloned());
            t.is_none_or(|t| t["state"] != "recording").then_some(())
        },
    );

    // The API server restarts; etcd keeps everything; the watch resumes and
    // sees what changed meanwhile.
    cp.restart_apiserver();
    eprintln!("kube-apiserver restarted in {:?}", cp.started_in);
    let (_cart, _cart_svc) = recorded_pod(&cp, "shop", "cart-1", "node-a", "cart", "127.0.0.23");
    let started = Instant::now();
    node.wait_recording("shop.cart-1");
    eprintln!(
        "after the restart, a new pod was recorded {:?} later",
        started.elapsed()
    );
    let (_, v) = node.agent.get("/v1/targets");
    assert_eq!(v["kubernetes"]["watches"]["pods"]["state"], "watching", "{v}");
    assert!(node.targets().contains(&"shop.checkout-1".to_string()));
}

#[test]
fn one_flightsnapshot_captures_every_matching_pod_on_every_node_once() {
    let cp = ControlPlane::start();
    let api_token = install_daemonset(&cp);
    cp.create_namespace("shop");
    let sa = cp.token("flightrec", "flightrec");
    let node_a = Node::start(&cp, "node-a", &sa, &api_token);
    let mut node_b = Node::start(&cp, "node-b", &sa, &api_token);
    let _pods = [
        recorded_pod(&cp, "shop", "checkout-1", "node-a", "checkout", "127.0.0.31"),
        recorded_pod(&cp, "shop", "checkout-2", "node-b", "checkout", "127.0.0.32"),
        recorded_pod(&cp, "shop", "payments-1", "node-b", "payments", "127.0.0.33"),
    ];
    node_a.wait_recording("shop.checkout-1");
    node_b.wait_recording("shop.checkout-2");
    node_b.wait_recording("shop.payments-1");

    // The CLI creates the FlightSnapshot and follows it to the end.
    let out = Command::new(AGENT)
        .args([
            "snapshot",
            "--selector",
            "app=checkout",
            "--namespace",
            "shop",
            "--reason",
            "checkout p99 > 1s",
        ])
        .arg("--kubeconfig")
        .arg(&cp.admin_kubeconfig)
        .args(["--timeout", "60s"])
        .output()
        .expect("run flightrec snapshot --selector");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "flightrec snapshot --selector printed:\n{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "exit {}", out.status);
    let fs_name = printed
        .lines()
        .find_map(|l| l.strip_prefix("FlightSnapshot shop/")?.strip_suffix(" created"))
        .expect("the CLI names the FlightSnapshot")
        .to_string();
    assert!(
        printed.contains("shop/checkout-1 on node-a: Complete, bundle "),
        "{printed}"
    );
    assert!(
        printed.contains("shop/checkout-2 on node-b: Complete, bundle "),
        "{printed}"
    );
    assert!(!printed.contains("payments"), "{printed}");

    let fs = flightsnapshot(&cp, "shop", &fs_name);
    assert_eq!(fs["status"]["phase"], "Complete", "{fs}");
    let entries = fs["status"]["pods"].as_array().expect("status.pods");
    assert_eq!(entries.len(), 2, "{fs}");
    for (node, pod) in [(&node_a, "checkout-1"), (&node_b, "checkout-2")] {
        let entry = entries.iter().find(|e| e["name"] == pod).expect("entry");
        assert_eq!(entry["node"], node.name.as_str());
        let id = entry["bundle"].as_str().expect("bundle id");
        let made = bundles_of(node, &fs_name);
        assert_eq!(made.len(), 1, "{} has {made:?}", node.name);
        assert_eq!(made[0].0, id, "the status names the bundle in that node's spool");
        let manifest = assert_bundle_valid(&node.spool().join(id));
        assert_eq!(manifest["target"]["name"], format!("shop.{pod}"));
        assert_eq!(manifest["trigger"]["kind"], "manual");
        assert_eq!(manifest["trigger"]["reason"], "checkout p99 > 1s");
        assert_eq!(
            manifest["trigger"]["details"]["flightsnapshot"]["namespace"],
            "shop"
        );
    }
    assert!(bundles_of(&node_b, &fs_name)
        .iter()
        .all(|(_, m)| m["target"]["name"] != "shop.payments-1"));

    // A restart relists every FlightSnapshot: nothing is taken twice.
    node_b.restart(false);
    node_b.wait_recording("shop.checkout-2");
    wait_for(
        "node-b to watch FlightSnapshots again",
        Duration::from_secs(30),
        || {
            let (_, v) = node_b.agent.get("/v1/targets");
            (v["kubernetes"]["watches"]["flightsnapshots"]["state"] == "watching").then_some(())
        },
    );
    assert_eq!(bundles_of(&node_b, &fs_name).len(), 1);

    // Killed in the middle of a capture (post-trigger of 6 s): after the
    // restart the pod's entry says what happened and no second bundle is
    // taken for it.
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "flightrec.dev/v1alpha1", "kind": "FlightSnapshot",
            "metadata": {"name": "mid-capture", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "checkout"}}, "namespaces": ["shop"],
                     "reason": "killed in the middle", "postTrigger": "6s"}}"#,
    );
    wait_for("node-b to start capturing", Duration::from_secs(20), || {
        let fs = flightsnapshot(&cp, "shop", "mid-capture");
        fs["status"]["pods"]
            .as_array()?
            .iter()
            .any(|e| e["node"] == "node-b" && e["phase"] == "Running")
            .then_some(())
    });
    node_b.restart(true);
    let fs = wait_final(&cp, "shop", "mid-capture");
    eprintln!("after kill -9: {}", fs["status"]);
    let b = fs["status"]["pods"]
        .as_array()
        .and_then(|ps| ps.iter().find(|e| e["node"] == "node-b").cloned())
        .expect("node-b's entry");
    assert_eq!(b["phase"], "Failed", "{b}");
    assert!(
        b["message"].as_str().is_some_and(|m| m.contains("restarted")),
        "{b}"
    );
    assert_eq!(
        fs["status"]["phase"], "Complete",
        "node-a's capture completed: {fs}"
    );
    assert_eq!(bundles_of(&node_a, "mid-capture").len(), 1);
    // Nothing was acknowledged on node-b, and nothing is taken again.
    node_b.wait_recording("shop.checkout-2");
    assert!(bundles_of(&node_b, "mid-capture").is_empty());
}

#[test]
fn an_alert_posted_to_any_agent_is_captured_on_the_node_running_its_pods() {
    let cp = ControlPlane::start();
    let api_token = install_daemonset(&cp);
    cp.create_namespace("shop");
    let sa = cp.token("flightrec", "flightrec");
    let node_a = Node::start(&cp, "node-a", &sa, &api_token);
    let node_b = Node::start(&cp, "node-b", &sa, &api_token);
    let _pods = [
        recorded_pod(&cp, "shop", "checkout-1", "node-a", "checkout", "127.0.0.41"),
        recorded_pod(&cp, "shop", "checkout-2", "node-b", "checkout", "127.0.0.42"),
    ];
    node_a.wait_recording("shop.checkout-1");
    node_b.wait_recording("shop.checkout-2");

    // A real Alertmanager whose one webhook receiver is node-a's agent, as
    // a Service in front of the DaemonSet would pick it.
    let am = Service::alertmanager(&format!(
        r#"
route:
  receiver: flightrec
  group_by: ['alertname', 'pod', 'service']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: flightrec
    webhook_configs:
      - url: {}/v1/webhooks/alertmanager
        http_config:
          authorization:
            credentials: {api_token}
"#,
        node_a.agent.api
    ));
    let post_alert = |labels: Value| {
        let body = json!([{ "labels": labels, "annotations": {"summary": "slow"} }]).to_string();
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/api/v2/alerts", am.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("post to Alertmanager");
        assert!(r.status().is_success(), "{}", r.status());
    };

    // About a pod on node-b, delivered to node-a.
    post_alert(json!({"alertname": "CheckoutSlow", "namespace": "shop", "pod": "checkout-2"}));
    let (id, manifest) = wait_for(
        "node-b to capture the pod the alert names",
        Duration::from_secs(30),
        || {
            node_b
                .bundles()
                .into_iter()
                .find(|(_, m)| m["trigger"]["kind"] == "alertmanager")
        },
    );
    assert_bundle_valid(&node_b.spool().join(&id));
    assert_eq!(manifest["target"]["name"], "shop.checkout-2");
    assert_eq!(
        manifest["trigger"]["details"]["alert"]["labels"]["pod"],
        "checkout-2"
    );
    let fs_name = manifest["trigger"]["details"]["flightsnapshot"]["name"]
        .as_str()
        .expect("the manifest names the FlightSnapshot")
        .to_string();
    assert!(fs_name.starts_with("alert-"), "{fs_name}");
    let fs = wait_final(&cp, "flightrec", &fs_name);
    assert_eq!(fs["status"]["phase"], "Complete", "{fs}");
    assert_eq!(fs["spec"]["alert"]["kind"], "alertmanager");
    assert!(
        node_a
            .bundles()
            .values()
            .all(|m| m["trigger"]["kind"] != "alertmanager"),
        "node-a runs no pod the alert names"
    );
    let logs = am.logs();
    assert!(!logs.contains("level=error"), "Alertmanager had errors:\n{logs}");

    // About a workload (service -> pod label app): every pod of it, on every node.
    post_alert(json!({"alertname": "CheckoutErrors", "namespace": "shop", "service": "checkout"}));
    let fs_name = wait_for(
        "a FlightSnapshot for the service alert",
        Duration::from_secs(30),
        || {
            let list = cp.get_json(&["-n", "flightrec", "flightsnapshots"]);
            list["items"].as_array()?.iter().find_map(|fs| {
                (fs["spec"]["alert"]["details"]["labels"]["alertname"] == "CheckoutErrors")
                    .then(|| fs["metadata"]["name"].as_str().map(String::from))
                    .flatten()
            })
        },
    );
    let fs = wait_final(&cp, "flightrec", &fs_name);
    assert_eq!(fs["status"]["phase"], "Complete", "{fs}");
    assert_eq!(bundles_of(&node_a, &fs_name).len(), 1, "checkout-1 on node-a");
    assert_eq!(bundles_of(&node_b, &fs_name).len(), 1, "checkout-2 on node-b");
    assert_eq!(
        node_a
            .agent
            .metric("flightrec_alerts_routed_total", &[("result", "created")]),
        Some(2.0)
    );
}

#[test]
fn a_missing_rbac_verb_or_a_bad_selector_is_said_clearly_not_a_silent_nothing() {
    let cp = ControlPlane::start();
    let api_token = install_daemonset(&cp);
    cp.create_namespace("shop");
    // The ClusterRole without `watch` on FlightSnapshots.
    let role = cp.get_json(&["clusterrole", "flightrec"]);
    let mut rules = role["rules"].as_array().expect("rules").clone();
    for r in &mut rules {
        if r["resources"] == json!(["flightsnapshots"]) {
            r["verbs"] = json!(["get", "list", "create", "delete"]);
        }
    }
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "flightrec"}, "rules": rules})
        .to_string(),
    );
    let node = Node::start(&cp, "node-a", &cp.token("flightrec", "flightrec"), &api_token);
    let failing = wait_for(
        "the FlightSnapshot watch to fail",
        Duration::from_secs(30),
        || {
            let (_, v) = node.agent.get("/v1/targets");
            let w = v["kubernetes"]["watches"]["flightsnapshots"].clone();
            (w["state"] == "failing").then_some(w)
        },
    );
    let message = failing["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eprintln!("/v1/targets says: {message}");
    for said in ["HTTP 403", "flightsnapshots", "forbidden", "watch", "rbac.yaml"] {
        assert!(message.contains(said), "{said:?} not in {message:?}");
    }
    assert!(node.agent.logs().iter().any(|l| l["message"]
        .as_str()
        .is_some_and(|m| m.contains("Kubernetes watch of flightsnapshots fails"))));
    assert!(node
        .agent
        .metric(
            "flightrec_kubernetes_watch_errors_total",
            &[("watch", "flightsnapshots"), ("reason", "forbidden")]
        )
        .is_some_and(|n| n >= 1.0));
    // The pod watch, which RBAC allows, goes on.
    let (_pod, _svc) = recorded_pod(&cp, "shop", "checkout-1", "node-a", "checkout", "127.0.0.51");
    node.wait_recording("shop.checkout-1");

    // Give the verb back; the watch recovers by itself, and a FlightSnapshot
    // whose selector cannot be read gets a status that says so.
    cp.kubectl(&[
        "apply",
        "-f",
        &repo_root()
            .join(DAEMONSET)
            .join("rbac.yaml")
            .display()
            .to_string(),
    ]);
    wait_for(
        "the FlightSnapshot watch to recover",
        Duration::from_secs(30),
        || {
            let (_, v) = node.agent.get("/v1/targets");
            (v["kubernetes"]["watches"]["flightsnapshots"]["state"] == "watching").then_some(())
        },
    );
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "flightrec.dev/v1alpha1", "kind": "FlightSnapshot",
            "metadata": {"name": "bad-selector", "namespace": "shop"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Sometimes", "values": ["x"]}]}}}"#,
    );
    let fs = wait_final(&cp, "shop", "bad-selector");
    assert_eq!(fs["status"]["phase"], "Failed", "{fs}");
    let message = fs["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("spec.selector"), "{message}");
    assert!(node.bundles().is_empty());
}

/// Waits until the agent is 0.3–0.7 s into a window of `target`, so a death
/// now cuts the stream in the middle of a window.
fn wait_mid_window(node: &Node, target: &str) {
    wait_for(
        &format!("the middle of a window of {target}"),
        Duration::from_secs(30),
        || {
            let t = node.agent.target(target);
            let at = humantime::parse_rfc3339(t["last_window_at"].as_str()?).ok()?;
            let into = std::time::SystemTime::now().duration_since(at).ok()?;
            (0.3..0.7).contains(&into.as_secs_f64()).then_some(())
        },
    );
}

#[test]
fn a_crashed_container_s_status_is_in_its_crash_bundle_and_a_deleted_pod_is_no_crash() {
    let cp = ControlPlane::start();
    let api_token = install_daemonset(&cp);
    cp.create_namespace("shop");
    let node = Node::start(&cp, "node-a", &cp.token("flightrec", "flightrec"), &api_token);
    let (checkout, mut checkout_svc) =
        recorded_pod(&cp, "shop", "checkout-1", "node-a", "checkout", "127.0.0.61");
    let (_payments, mut payments_svc) =
        recorded_pod(&cp, "shop", "payments-1", "node-a", "payments", "127.0.0.62");
    node.wait_recording("shop.checkout-1");
    node.wait_recording("shop.payments-1");
    wait_for("two windows of each", Duration::from_secs(30), || {
        (node.agent.windows_kept("shop.checkout-1") >= 2 && node.agent.windows_kept("shop.payments-1") >= 2)
            .then_some(())
    });

    // The OOM killer takes the container; the kubelet restarts it and says so.
    wait_mid_window(&node, "shop.checkout-1");
    let died = std::time::SystemTime::now();
    checkout_svc.proc.kill();
    cp.pod_restarted(
        &checkout,
        1,
        &Terminated {
            reason: "OOMKilled".into(),
            exit_code: 137,
            started_at: died - Duration::from_secs(60),
            finished_at: died,
        },
    );
    let (id, manifest) = wait_for("the crash bundle", Duration::from_secs(40), || {
        node.bundles()
            .into_iter()
            .find(|(_, m)| m["trigger"]["kind"] == "crash")
    });
    assert_bundle_valid(&node.spool().join(&id));
    eprintln!("crash details: {}", manifest["trigger"]["details"]);
    assert_eq!(manifest["target"]["name"], "shop.checkout-1");
    let k = &manifest["trigger"]["details"]["kubernetes"];
    assert_eq!(k["reason"], "OOMKilled", "{k}");
    assert_eq!(k["exit_code"], 137);
    assert_eq!(k["restart_count"], 1);
    assert_eq!(k["container"], "app");
    assert_eq!(k["pod"], "checkout-1");
    assert!(k["finished_at"].as_str().is_some_and(|t| !t.is_empty()), "{k}");
    // No kubelet serves logs here: the bundle says why it holds none,
    // rather than nothing.
    let log_error = k["log_error"].as_str().unwrap_or_default();
    assert!(log_error.contains("reading the log of checkout-1"), "{k}");
    assert!(manifest["ending"]["log"].is_null(), "{}", manifest["ending"]);
    assert_eq!(manifest["ending"]["how"], "crash");

    // A pod deleted on purpose stops being recorded as soon as its
    // deletionTimestamp arrives, before the kubelet stops its containers;
    // its service dying then is no crash. (Had the stream been cut first,
    // the crash trigger would have found the pod being deleted and said
    // "no crash bundle: pod ... is being deleted".)
    let crashes = |node: &Node| {
        node.bundles()
            .values()
            .filter(|m| m["trigger"]["kind"] == "crash")
            .count()
    };
    let crashes_before = crashes(&node);
    cp.delete_pod("shop", "payments-1");
    wait_for("the pod being deleted to depart", Duration::from_secs(10), || {
        (node.agent.target("shop.payments-1")["state"] == "departed").then_some(())
    });
    payments_svc.proc.kill();
    cp.remove_pod("shop", "payments-1");

    // Its ring stays and can still be snapshotted.
    let (status, v) = node.agent.post(
        "/v1/snapshots",
        r#"{"target": "shop.payments-1", "reason": "after it went"}"#,
        Some(&api_token),
    );
    assert_eq!(status, 202, "{v}");
    let dir = node
        .agent
        .wait_snapshot(v["id"].as_str().expect("id"), Duration::from_secs(30));
    assert_eq!(crashes(&node), crashes_before, "a deleted pod's end is no crash");
    let m = assert_bundle_valid(&dir);
    assert_eq!(m["target"]["name"], "shop.payments-1");
}
