//! Kubernetes discovery: pods on the node that opt in are recorded, and stop
//! being recorded when they go away.
//!
//! No cluster runs here. The API server is played by a small server in this
//! test answering `GET /api/v1/pods` with pod lists in the API's own format
//! (the same shape as tests/data/kubernetes/pods.json); the pods it lists
//! point at real Go services, which the agent really records.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};

type Shared<T> = Arc<parking_lot::Mutex<T>>;

#[derive(Clone)]
struct Api {
    /// Pods by node.
    pods: Shared<Vec<(String, Value)>>,
    /// Set to answer every request with this status instead.
    fail: Shared<Option<u16>>,
    token: String,
}

fn pod(ns: &str, name: &str, port: u16, app: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                     "annotations": {"flightrec.dev/port": port.to_string()}},
        "spec": {"containers": [{"name": app, "image": "registry.example.com/x:1"}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1"}
    })
}

async fn list_pods(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    if let Some(code) = *api.fail.lock() {
        let status = StatusCode::from_u16(code).expect("status");
        return (
            status,
            Json(json!({"kind": "Status", "status": "Failure", "code": code})),
        )
            .into_response();
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {}", api.token)) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    let Some(node) = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this test API server wants a node field selector",
        )
            .into_response();
    };
    let items: Vec<Value> = api
        .pods
        .lock()
        .iter()
        .filter(|(n, _)| n == node)
        .map(|(n, p)| {
            let mut p = p.clone();
            p["spec"]["nodeName"] = json!(n);
            p
        })
        .collect();
    Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}))
        .into_response()
}

/// Starts the stand-in API server on 127.0.0.1:0; it lives as long as the test.
fn start_api(api: Api) -> (String, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send addr");
            let app = Router::new()
                .route("/api/v1/pods", get(list_pods))
                .with_state(api);
            let _ = axum::serve(listener, app).await;
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("API server address");
    (format!("http://{addr}"), handle)
}

/// Windows kept for `name`, 0 while it is not a target (yet).
fn kept(agent: &Agent, name: &str) -> u64 {
    let (_, v) = agent.get("/v1/targets");
    v["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .and_then(|t| t["windows_kept"].as_u64())
        .unwrap_or(0)
}

/// The targets being recorded (a dropped pod stays listed, departed, for
/// its max_age: tests/crash.rs).
fn names(agent: &Agent) -> Vec<String> {
    let (_, v) = agent.get("/v1/targets");
    v["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["state"] != "departed")
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn pods_on_this_node_that_opt_in_are_recorded_and_dropped_when_they_go() {
    let checkout = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let payments = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let elsewhere = GoService::start("fixture", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "sa-token-123\n").expect("token");
    let api = Api {
        pods: Arc::new(parking_lot::Mutex::new(vec![
            (
                "node-1".into(),
                pod("shop", "checkout-1", checkout.port(), "checkout"),
            ),
            (
                "node-2".into(),
                pod("shop", "other-node", elsewhere.port(), "other"),
            ),
        ])),
        fail: Arc::new(parking_lot::Mutex::new(None)),
        token: "sa-token-123".into(),
    };
    let (api_url, _server) = start_api(api.clone());

    // No [[targets]]: with discovery on, the pods are the targets.
    let agent = Agent::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[snapshots]
dir = "{{dir}}/data"
post_trigger = "0s"
[kubernetes]
enabled = true
node = "node-1"
api_server = "{api_url}"
token_file = "{}"
interval = "1s"
window = "1s"
max_age = "30s"
"#,
        token_file.display()
    ));
    wait_for("the checkout pod to be recorded", Duration::from_secs(20), || {
        (names(&agent) == ["shop.checkout-1"] && kept(&agent, "shop.checkout-1") >= 1).then_some(())
    });
    let t = agent.target("shop.checkout-1");
    assert_eq!(t["labels"]["service"], "checkout");
    assert_eq!(t["labels"]["namespace"], "shop");
    assert_eq!(t["labels"]["node"], "node-1");

    // A new pod shows up; the one on another node never does.
    api.pods.lock().push((
        "node-1".into(),
        pod("shop", "payments-1", payments.port(), "payments"),
    ));
    wait_for("the payments pod to be recorded", Duration::from_secs(20), || {
        (kept(&agent, "shop.payments-1") >= 1).then_some(())
    });
    assert_eq!(names(&agent), vec!["shop.checkout-1", "shop.payments-1"]);
    let bundle = agent.snapshot("shop.payments-1", "a discovered pod");
    let m = assert_bundle_valid(&bundle);
    assert_eq!(m["target"]["labels"]["pod"], "payments-1");

    // The checkout pod is being deleted: it stops being recorded.
    api.pods.lock()[0].1["metadata"]["deletionTimestamp"] = json!("2026-11-29T05:00:00Z");
    wait_for("the deleted pod to be dropped", Duration::from_secs(20), || {
        (names(&agent) == ["shop.payments-1"]).then_some(())
    });
    assert_eq!(agent.target("shop.checkout-1")["state"], "departed");

    // The API refuses (RBAC gone wrong): counted, logged, and the last list stays.
    *api.fail.lock() = Some(403);
    wait_for("a discovery error", Duration::from_secs(20), || {
        agent.metric("flightrec_discovery_errors_total", &[("reason", "status")])
    });
    assert_eq!(names(&agent), vec!["shop.payments-1"]);
    let kept = agent.windows_kept("shop.payments-1");
    wait_for("recording to go on", Duration::from_secs(20), || {
        (agent.windows_kept("shop.payments-1") > kept).then_some(())
    });
    assert!(agent.logs().iter().any(|l| l["message"]
        .as_str()
        .is_some_and(|m| m.contains("listing pods failed"))
        && l["error"]
            .as_str()
            .is_some_and(|e| e.contains("403") && e.contains("rbac.yaml"))));
    assert_eq!(agent.metric("flightrec_discovery_targets", &[]), Some(1.0));
}
