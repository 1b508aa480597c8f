//! Delivery, end to end: the real agent, real Go services, and real S3 (s3s-fs), Azure (Azurite) and HTTP servers.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::delivery::*;
use common::*;
use serde_json::Value;

const BUCKET: &str = "traces";

fn agent_config(spool: &Path, targets: &str, snapshots: &str, sinks: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[snapshots]
dir = "{}"
post_trigger = "0s"
{snapshots}
{targets}
{sinks}
"#,
        spool.display()
    )
}

fn target(url: &str, window: &str, max_age: &str) -> String {
    format!(
        r#"
[[targets]]
name = "checkout"
url = "{url}"
window = "{window}"
max_age = "{max_age}"
"#
    )
}

/// Fast retries so a test sees several attempts in a few seconds.
const FAST_RETRY: &str = r#"retry_initial = "100ms"
retry_max = "500ms"
breaker_failures = 3
breaker_cooldown = "1s""#;

fn s3_sink(endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[[sinks]]
kind = "s3"
bucket = "{BUCKET}"
prefix = "flightrec/test"
endpoint = "{endpoint}"
region = "us-east-1"
allow_http = true
{FAST_RETRY}
{extra}
"#
    )
}

fn s3_env(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ]
}

fn start_agent(config: &str, env: &[(&'static str, String)]) -> Agent {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Agent::start_with_env(config, &env)
}

fn snapshot_view(agent: &Agent, id: &str) -> Value {
    agent.get(&format!("/v1/snapshots/{id}")).1
}

fn delivery(agent: &Agent, id: &str, sink: &str) -> Value {
    snapshot_view(agent, id)["delivery"][sink].clone()
}

fn wait_delivered(agent: &Agent, id: &str, sink: &str, timeout: Duration) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let d = delivery(agent, id, sink);
        match d["state"].as_str() {
            Some("delivered") => return d,
            Some("failed") => panic!("delivery to {sink} failed for good: {d}"),
            _ if std::time::Instant::now() > deadline => {
                panic!("{id} not delivered to {sink} within {timeout:?}; last state: {d}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Posts a snapshot and waits until it is durable; returns (id, dir).
fn take_snapshot(agent: &Agent, reason: &str) -> (String, PathBuf) {
    let (status, v) = agent.post(
        "/v1/snapshots",
        &serde_json::json!({ "target": "checkout", "reason": reason }).to_string(),
        None,
    );
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let dir = agent.wait_snapshot(&id, Duration::from_secs(60));
    (id, dir)
}

/// Every file of the local bundle has the same sha256 in `remote_dir`.
fn assert_same_files(local: &Path, remote_dir: &Path) {
    let mut n = 0;
    for e in std::fs::read_dir(local).expect("bundle dir").flatten() {
        let name = e.file_name();
        let remote = remote_dir.join(&name);
        assert!(remote.is_file(), "{} missing at the sink", remote.display());
        assert_eq!(sha256_file(&e.path()), sha256_file(&remote), "{name:?} differs");
        n += 1;
    }
    let remote_count = std::fs::read_dir(remote_dir).expect("remote dir").count();
    assert_eq!(n, remote_count, "the sink holds exactly the bundle's files");
}

/// `{prefix}/{target}/{YYYY-MM-DD}/{id}` for an id made by the agent.
fn bundle_key(id: &str) -> String {
    format!(
        "flightrec/test/checkout/{}-{}-{}/{id}",
        &id[..4],
        &id[4..6],
        &id[6..8]
    )
}

fn wait_windows(agent: &Agent, n: u64) {
    wait_for(
        &format!("{n} windows in the ring"),
        Duration::from_secs(30),
        || (agent.windows_kept("checkout") >= n).then_some(()),
    );
}

#[test]
fn a_bundle_reaches_s3_and_a_directory_byte_identical_with_its_manifest_last() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s3 = S3Server::start(&tmp.path().join("s3"), 0, BUCKET);
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "2000"]);
    let copies = tmp.path().join("copies");
    let sinks = format!(
        "{}\n[[sinks]]\nkind = \"dir\"\nname = \"nfs\"\npath = \"{}\"\nprefix = \"flightrec/test\"\n",
        s3_sink(&s3.endpoint, ""),
        copies.display()
    );
    let config = agent_config(
        &tmp.path().join("spool"),
        &target(&svc.url, "1s", "10s"),
        "",
        &sinks,
    );
    let agent = start_agent(&config, &s3_env(S3_SECRET_KEY));
    wait_windows(&agent, 2);
    let (id, dir) = take_snapshot(&agent, "deliver me");
    assert_bundle_valid(&dir);

    let d = wait_delivered(&agent, &id, "s3", Duration::from_secs(60));
    assert_eq!(d["attempts"], 1, "{d}");
    let key = bundle_key(&id);
    assert_eq!(d["location"], format!("s3://{BUCKET}/{key}/"));
    let in_s3 = s3.object(BUCKET, &key);
    assert_same_files(&dir, &in_s3);
    // s3s-fs stores each object as a file: the S3 copy is itself a bundle
    // that `flightrec inspect` and Go's parser accept.
    assert_bundle_valid(&in_s3);
    let mtime = |f: &str| {
        std::fs::metadata(in_s3.join(f))
            .and_then(|m| m.modified())
            .expect("mtime")
    };
    let manifest_at = mtime("manifest.json");
    for e in std::fs::read_dir(&in_s3).expect("dir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        assert!(
            mtime(&name) <= manifest_at,
            "{name} was written after manifest.json"
        );
    }

    wait_delivered(&agent, &id, "nfs", Duration::from_secs(30));
    assert_same_files(&dir, &copies.join(&key));

    let m = agent.metrics();
    assert_eq!(
        metric_value(
            &m,
            "flightrec_deliveries_total",
            &[("sink", "s3"), ("result", "delivered")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "flightrec_delivery_pending_bundles", &[("sink", "s3")]),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "flightrec_delivery_oldest_pending_age_seconds",
            &[("sink", "nfs")]
        ),
        Some(0.0)
    );
    assert!(metric_value(&m, "flightrec_spool_bytes", &[]).unwrap_or(0.0) > 0.0);
    assert_eq!(metric_value(&m, "flightrec_spool_bundles", &[]), Some(1.0));
    // The ledger sits beside the bundle, never inside it.
    assert!(tmp
        .path()
        .join("spool/.ledger")
        .join(format!("{id}.json"))
        .is_file());
    assert!(!std::fs::read_to_string(&agent.log)
        .unwrap_or_default()
        .contains(S3_SECRET_KEY));
}

#[test]
fn wrong_s3_keys_give_a_clear_error_naming_the_sink_and_the_bucket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s3 = S3Server::start(&tmp.path().join("s3"), 0, BUCKET);
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let config = agent_config(
        &tmp.path().join("spool"),
        &target(&svc.url, "1s", "5s"),
        "",
        &s3_sink(&s3.endpoint, ""),
    );
    let agent = start_agent(&config, &s3_env("not-the-secret-at-all"));
    wait_windows(&agent, 1);
    let (id, _) = take_snapshot(&agent, "wrong keys");
    let d = wait_for("a failed attempt", Duration::from_secs(30), || {
        let d = delivery(&agent, &id, "s3");
        (d["attempts"].as_u64().unwrap_or(0) >= 1).then_some(d)
    });
    assert_eq!(
        d["state"], "pending",
        "wrong keys are retried, never dropped: {d}"
    );
    let err = d["last_error"].as_str().unwrap_or_default();
    for want in [
        "sink \"s3\"",
        "s3://traces",
        "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        "SignatureDoesNotMatch",
    ] {
        assert!(err.contains(want), "{want:?} missing from {err:?}");
    }
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(log.contains("check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"));
    assert!(
        !log.contains("not-the-secret-at-all"),
        "the secret is never logged"
    );
    assert!(
        agent
            .metric(
                "flightrec_deliveries_total",
                &[("sink", "s3"), ("result", "failed")]
            )
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn a_bundle_made_while_s3_is_down_is_delivered_when_it_returns_and_the_quota_refuses_rather_than_drops() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "1000"]);
    let config = agent_config(
        &tmp.path().join("spool"),
        &target(&svc.url, "1s", "5s"),
        "max_bundles = 1",
        &s3_sink(&endpoint, ""),
    );
    let agent = start_agent(&config, &s3_env(S3_SECRET_KEY));
    wait_windows(&agent, 2);
    let (id, dir) = take_snapshot(&agent, "while the sink is down");

    // Retrying, then the breaker opens after 3 consecutive failures.
    wait_for("the circuit to open", Duration::from_secs(30), || {
        (agent.metric("flightrec_sink_circuit_opened_total", &[("sink", "s3")])? >= 1.0).then_some(())
    });
    let d = delivery(&agent, &id, "s3");
    assert_eq!(d["state"], "pending", "{d}");
    assert!(d["attempts"].as_u64().unwrap_or(0) >= 3, "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("sink \"s3\"")),
        "{d}"
    );
    let m = agent.metrics();
    assert_eq!(
        metric_value(&m, "flightrec_delivery_retrying_bundles", &[("sink", "s3")]),
        Some(1.0)
    );
    assert!(metric_value(&m, "flightrec_delivery_retries_total", &[("sink", "s3")]).unwrap_or(0.0) >= 2.0);
    assert!(
        metric_value(
            &m,
            "flightrec_delivery_oldest_pending_age_seconds",
            &[("sink", "s3")]
        )
        .unwrap_or(0.0)
            > 0.0
    );

    // max_bundles = 1 and the only bundle is undelivered: refuse, never drop it.
    let (status, v) = agent.post("/v1/snapshots", r#"{"target":"checkout"}"#, None);
    assert_eq!(status, 507, "{v}");
    let why = v["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("max_bundles") && why.contains("waits for delivery"),
        "{why}"
    );
    assert_eq!(
        agent.metric(
            "flightrec_snapshots_refused_total",
            &[("kind", "manual"), ("reason", "max_bundles")]
        ),
        Some(1.0)
    );

    // The sink comes back on the same address.
    let s3 = S3Server::start(&tmp.path().join("s3"), port, BUCKET);
    let d = wait_delivered(&agent, &id, "s3", Duration::from_secs(30));
    assert!(d["attempts"].as_u64().unwrap_or(0) >= 4, "{d}");
    let in_s3 = s3.object(BUCKET, &bundle_key(&id));
    assert_same_files(&dir, &in_s3);
    assert_bundle_valid(&in_s3);
    wait_for("the circuit to close", Duration::from_secs(10), || {
        (agent.metric("flightrec_sink_circuit_open", &[("sink", "s3")])? == 0.0).then_some(())
    });

    // Delivered bundles make room: the next snapshot evicts the first.
    let (id2, _) = take_snapshot(&agent, "after recovery");
    assert_ne!(id, id2);
    let (_, list) = agent.get("/v1/snapshots");
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, [id2.as_str()], "{list}");
    assert_eq!(
        agent.metric(
            "flightrec_spool_evictions_total",
            &[("state", "delivered"), ("reason", "max_bundles")]
        ),
        Some(1.0)
    );
    wait_delivered(&agent, &id2, "s3", Duration::from_secs(30));
}

#[test]
fn an_agent_killed_mid_upload_delivers_the_bundle_once_after_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s3 = S3Server::start(&tmp.path().join("s3"), 0, BUCKET);
    let s3_port: u16 = s3
        .endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let proxy = Proxy::start(s3_port);
    // Nothing reaches S3 until the bundle is whole on disk.
    proxy.stall_after(0);
    let svc = GoService::start("fixture", &["-pairs", "1"]);
    let sink = s3_sink(
        &format!("http://127.0.0.1:{}", proxy.port),
        "part_size = \"5MiB\"\nupload_concurrency = 1",
    );
    let config = agent_config(
        &tmp.path().join("spool"),
        &target(&svc.url, "1s", "2s"),
        "",
        &sink,
    );
    let mut agent = start_agent(&config, &s3_env(S3_SECRET_KEY));
    wait_windows(&agent, 2);
    let (id, dir) = take_snapshot(&agent, "kill me mid-upload");
    drop(svc);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    let first = manifest["windows"][0]["bytes"].as_u64().unwrap_or(0);
    assert!(
        first > 6 << 20,
        "the fixture made a {first}-byte window; the test needs one above 6 MiB to be multipart"
    );

    // Let one 5 MiB part through, stall inside the second, kill -9 there.
    proxy.stall_after(5 << 20 | 512 << 10);
    wait_for("a multipart upload in progress", Duration::from_secs(60), || {
        (proxy.stalled() && s3.multipart_in_progress()).then_some(())
    });
    agent.proc.kill();
    let key = bundle_key(&id);
    assert!(
        !s3.object(BUCKET, &format!("{key}/manifest.json")).exists(),
        "no manifest at the sink: the bundle is visibly incomplete there"
    );

    proxy.release();
    let agent = start_agent(&config, &s3_env(S3_SECRET_KEY));
    let resumed = agent.logs().iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("still to deliver"))
    });
    assert!(resumed, "the restarted agent says what it resumes");
    let d = wait_delivered(&agent, &id, "s3", Duration::from_secs(120));
    assert_eq!(d["attempts"], 1, "one finished attempt, after the restart: {d}");
    let in_s3 = s3.object(BUCKET, &key);
    assert_same_files(&dir, &in_s3);
    assert_bundle_valid(&in_s3);
    let day = in_s3.parent().expect("day dir");
    assert_eq!(
        std::fs::read_dir(day).expect("day").count(),
        1,
        "exactly one copy of the bundle at the sink"
    );
}

#[test]
fn azure_blob_storage_on_azurite_receives_the_bundle_byte_identical() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let azurite = Azurite::start(&tmp.path().join("azurite"), BUCKET);
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "1000"]);
    let sink = format!(
        r#"
[[sinks]]
kind = "azure"
account = "{AZURITE_ACCOUNT}"
bucket = "{BUCKET}"
prefix = "flightrec/test"
endpoint = "{}"
allow_http = true
{FAST_RETRY}
"#,
        azurite.endpoint
    );
    let config = agent_config(
        &tmp.path().join("spool"),
        &target(&svc.url, "1s", "5s"),
        "",
        &sink,
    );
    let agent = start_agent(&config, &[("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY.to_string())]);
    wait_windows(&agent, 2);
    let (id, dir) = take_snapshot(&agent, "to azure");
    let d = wait_delivered(&agent, &id, "azure", Duration::from_secs(60));
    let key = bundle_key(&id);
    assert_eq!(d["location"], format!("az://{AZURITE_ACCOUNT}/{BUCKET}/{key}/"));

    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(AZURITE_ACCOUNT)
        .with_access_key(AZURITE_KEY)
        .with_container_name(BUCKET)
        .with_endpoint(azurite.endpoint.clone())
        .with_allow_http(true)
        .build()
        .expect("azure client");
    let back = tmp.path().join("from-azure");
    read_back(&store, &dir, &key, &back);
    assert_same_files(&dir, &back);
    assert_bundle_valid(&back);
}

/// Reads every file of `key` back through `store` (GET, not the agent's PUT
/// path) into `into`.
fn read_back(store: &dyn object_store::ObjectStore, local: &Path, key: &str, into: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    std::fs::create_dir_all(into).expect("mkdir");
    for e in std::fs::read_dir(local).expect("bundle").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let path = object_store::path::Path::from(format!("{key}/{name}"));
        let bytes = rt
            .block_on(async {
                use object_store::ObjectStoreExt;
                store.get(&path).await?.bytes().await
            })
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        std::fs::write(into.join(&name), &bytes).expect("write");
    }
}

#[test]
fn the_http_collector_gets_the_documented_multipart_post_and_retries_survive_503s() {
    let collector = Collector::start("collector-token", 2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "collector-token\n").expect("write");
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "1000"]);
    let sink = format!(
        r#"
[[sinks]]
kind = "http"
name = "collector"
url = "{}"
token_file = "{}"
{FAST_RETRY}
"#,
        collector.url,
        token_file.display()
    );
    let config = agent_config(
        &tmp.path().join("spool"),
        &target(&svc.url, "1s", "5s"),
        "",
        &sink,
    );
    let agent = start_agent(&config, &[]);
    wait_windows(&agent, 2);
    let (id, dir) = take_snapshot(&agent, "to the collector");
    let d = wait_delivered(&agent, &id, "collector", Duration::from_secs(30));
    assert_eq!(d["attempts"], 3, "two 503s, then stored: {d}");
    assert_eq!(d["location"], format!("collector://{id}"), "from the Receipt");
    assert!(collector.errors().is_empty(), "{:?}", collector.errors());
    assert_eq!(collector.requests(), 3);
    let got = collector.bundles();
    assert_eq!(got.len(), 1);
    let b = &got[0];
    assert_eq!(b.id, id);
    assert_eq!(b.idempotency_key, id);
    assert_eq!(b.manifest.id, id);
    assert_eq!(
        std::fs::read(dir.join("manifest.pb")).expect("pb"),
        flightrec_proto::Message::encode_to_vec(&b.manifest),
        "the manifest part is the bundle's manifest.pb"
    );
    for (file, bytes) in &b.windows {
        assert_eq!(&std::fs::read(dir.join(file)).expect("window"), bytes, "{file}");
    }
    assert!(!std::fs::read_to_string(&agent.log)
        .unwrap_or_default()
        .contains("collector-token"));
}

#[test]
fn a_full_disk_fails_the_snapshot_clearly_and_corrupts_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(disk) = Tmpfs::mount(&tmp.path().join("small"), "2m") else {
        return;
    };
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "200"]);
    let config = agent_config(&disk.dir.join("spool"), &target(&svc.url, "1s", "3s"), "", "");
    let agent = start_agent(&config, &[]);
    wait_windows(&agent, 2);
    let (good, good_dir) = take_snapshot(&agent, "fits");
    assert_bundle_valid(&good_dir);

    // Fill what is left of the disk.
    let filler = disk.dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let (status, v) = agent.post(
        "/v1/snapshots",
        r#"{"target":"checkout","reason":"no room"}"#,
        None,
    );
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let failed = wait_for("the snapshot to fail", Duration::from_secs(30), || {
        let v = snapshot_view(&agent, &id);
        match v["phase"].as_str() {
            Some("failed") => Some(v),
            Some("complete") => panic!("a snapshot fitted on a full disk: {v}"),
            _ => None,
        }
    });
    let err = failed["error"].as_str().unwrap_or_default();
    assert!(err.contains("is full") && err.contains("No space left"), "{err}");
    let spool = disk.dir.join("spool");
    assert_eq!(
        std::fs::read_dir(spool.join(".partial")).map_or(0, |d| d.count()),
        0,
        "the half-written bundle is gone"
    );
    let (_, list) = agent.get("/v1/snapshots");
    let complete: Vec<&str> = list["snapshots"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|s| s["phase"] == "complete")
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(complete, [good.as_str()]);
    assert_bundle_valid(&good_dir);

    // Room again: snapshots work again.
    std::fs::remove_file(&filler).expect("rm filler");
    let (_, again) = take_snapshot(&agent, "room again");
    assert_bundle_valid(&again);
}
