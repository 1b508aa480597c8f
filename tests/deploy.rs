//! Deployment artifacts: the systemd unit, the Kubernetes manifests, the Dockerfile.
//!
//! No cluster or container engine runs here, so these check what can be
//! checked without one: systemd's own verifier and security analyzer, every
//! manifest parses and carries the fields that matter, every embedded config
//! passes `flightrec check-config`, and the Dockerfile builds with the same
//! script tests/run.sh runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{repo_root, AGENT};
use serde_yaml::Value;

fn read(rel: &str) -> String {
    let p = repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn check_config_text(toml: &str, what: &str) {
    check_config_env(toml, what, &[]);
}

fn check_config_env(toml: &str, what: &str, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("flightrec.toml");
    std::fs::write(&f, toml).expect("write");
    let out = Command::new(AGENT)
        .args(["check-config", "--config"])
        .arg(&f)
        .envs(env.iter().copied())
        .output()
        .expect("run check-config");
    assert!(
        out.status.success(),
        "{what} fails check-config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `Key=value` lines of a unit file (later lines win, as systemd does for
/// most keys; list-valued keys are joined).
fn unit_directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('[') && l.contains('='))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

#[test]
fn systemd_unit_is_hardened_notify_and_verifies() {
    let text = read("deploy/systemd/flightrec.service");
    let d = unit_directives(&text);
    let get = |k: &str| d.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    for (key, want) in [
        ("Type", "notify"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "flightrec"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectHome", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(get(key), Some(want), "{key}");
    }
    assert!(
        get("WatchdogSec").is_some(),
        "the watchdog is pinged, so it should be armed"
    );
    let exec = get("ExecStart").expect("ExecStart");
    assert!(
        exec.contains("flightrec run --config /etc/flightrec/flightrec.toml"),
        "{exec}"
    );
    check_config_text(
        &read("deploy/systemd/flightrec.toml"),
        "deploy/systemd/flightrec.toml",
    );
    assert!(
        read("deploy/systemd/flightrec.toml").contains("dir = \"/var/lib/flightrec\""),
        "the example config writes into the unit's StateDirectory"
    );

    if !have("systemd-analyze") {
        eprintln!("SKIPPED PART: systemd-analyze is not installed; only the static checks above ran");
        return;
    }
    // verify needs ExecStart to exist: point it at the binary under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("flightrec.service");
    std::fs::write(&unit, text.replace("/usr/local/bin/flightrec", AGENT)).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("verify");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("security");
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for flightrec.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{report}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        score <= 2.0,
        "exposure {score} (lower is better; 'OK' is below 2.0):\n{report}"
    );
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn manifests() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut stack = vec![repo_root().join("deploy/kubernetes")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                for doc in yaml_docs(&p) {
                    out.push((p.clone(), doc));
                }
            }
        }
    }
    out
}

/// "160Mi" → bytes.
fn quantity(q: &str) -> u64 {
    let (num, mult) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1));
    num.parse::<u64>().expect("quantity number") * mult
}

#[test]
fn kubernetes_manifests_parse_and_carry_what_matters() {
    let all = manifests();
    assert!(!all.is_empty());
    for (path, doc) in &all {
        let is_kustomization = path.file_name().is_some_and(|n| n == "kustomization.yaml");
        if !is_kustomization {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{}: {doc:?}",
                path.display()
            );
        }
    }
    // Every kustomization names files that exist.
    for (path, doc) in all.iter().filter(|(p, _)| p.ends_with("kustomization.yaml")) {
        let dir = path.parent().expect("dir");
        let mut refs: Vec<String> = doc["resources"]
            .as_sequence()
            .map(|s| s.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        for gen in doc["configMapGenerator"].as_sequence().into_iter().flatten() {
            for f in gen["files"].as_sequence().into_iter().flatten() {
                refs.push(f.as_str().expect("file").to_string());
            }
        }
        for r in refs {
            assert!(dir.join(&r).exists(), "{} names missing {r}", path.display());
        }
    }

    // The sidecar: probes, resources from measurement, a locked-down
    // container, the spool on an emptyDir where the config says.
    let config = read("deploy/kubernetes/base/flightrec.toml");
    check_config_text(&config, "deploy/kubernetes/base/flightrec.toml");
    let deployment = all
        .iter()
        .find(|(p, d)| {
            d["kind"] == "Deployment" && p.starts_with(repo_root().join("deploy/kubernetes/sidecar"))
        })
        .map(|(_, d)| d)
        .expect("a Deployment in deploy/kubernetes/sidecar");
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    assert!(containers.len() >= 2, "a service and the flightrec sidecar");
    let fr = containers
        .iter()
        .find(|c| c["name"] == "flightrec")
        .expect("flightrec container");
    assert_eq!(fr["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(fr["readinessProbe"]["httpGet"]["path"], "/readyz");
    let sc = &fr["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    let limit = quantity(
        fr["resources"]["limits"]["memory"]
            .as_str()
            .expect("memory limit"),
    );
    let request = quantity(
        fr["resources"]["requests"]["memory"]
            .as_str()
            .expect("memory request"),
    );
    assert!(fr["resources"]["requests"]["cpu"].is_string() && request <= limit);
    let ring = config
        .lines()
        .skip_while(|l| l.trim() != "[ring]")
        .find_map(|l| l.trim().strip_prefix("max_bytes = "))
        .map(|v| flightrec::units::parse_size(v.trim_matches('"')).expect("size"))
        .expect("ring.max_bytes in the sidecar config");
    assert!(
        limit >= ring + (40 << 20),
        "memory limit {limit} must exceed ring.max_bytes {ring} + 40 MiB"
    );
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30) >= 40,
        "time for post_trigger on SIGTERM"
    );
    let mounts = fr["volumeMounts"].as_sequence().expect("mounts");
    let spool = mounts
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/flightrec")
        .expect("spool mounted at snapshots.dir");
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == spool["name"])
        .expect("spool volume");
    assert!(
        volume["emptyDir"].is_mapping(),
        "spool on an emptyDir: {volume:?}"
    );
    assert!(config.contains("dir = \"/var/lib/flightrec\""));

    if have("kubectl") {
        let kustomizations = all.iter().filter(|(p, _)| p.ends_with("kustomization.yaml"));
        for (path, _) in kustomizations {
            let dir = path.parent().expect("dir");
            let out = Command::new("kubectl")
                .arg("kustomize")
                .arg(dir)
                .output()
                .expect("kubectl kustomize");
            assert!(
                out.status.success(),
                "{}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        eprintln!("SKIPPED PART: kubectl is not installed; kustomize rendering not checked");
    }
}

#[test]
fn the_daemonset_watches_its_node_s_pods_with_just_enough_rbac() {
    let all = manifests();
    let of_kind = |k: &str| -> Vec<&Value> {
        all.iter()
            .filter(|(p, d)| p.starts_with(repo_root().join("deploy/kubernetes/daemonset")) && d["kind"] == k)
            .map(|(_, d)| d)
            .collect()
    };
    let config = read("deploy/kubernetes/daemonset/flightrec.toml");
    // The node name arrives from the downward API at run time.
    check_config_env(
        &config,
        "deploy/kubernetes/daemonset/flightrec.toml",
        &[("FLIGHTREC_KUBERNETES__NODE", "node-1")],
    );
    assert!(config.contains("[kubernetes]\nenabled = true"));

    let ds = of_kind("DaemonSet");
    assert_eq!(ds.len(), 1);
    let pod = &ds[0]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "flightrec");
    let c = &pod["containers"][0];
    let node_env = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "FLIGHTREC_KUBERNETES__NODE")
        .expect("the node name from the downward API");
    assert_eq!(node_env["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let ring = config
        .lines()
        .skip_while(|l| l.trim() != "[ring]")
        .find_map(|l| l.trim().strip_prefix("max_bytes = "))
        .map(|v| flightrec::units::parse_size(v.trim_matches('"')).expect("size"))
        .expect("ring.max_bytes");
    let limit = quantity(c["resources"]["limits"]["memory"].as_str().expect("limit"));
    assert!(limit >= ring + (40 << 20), "{limit} vs ring {ring}");

    // RBAC: exactly what the agent uses (tests/kubernetes.rs checks the same
    // against a real API server with `kubectl auth can-i`).
    let roles = of_kind("ClusterRole");
    assert_eq!(roles.len(), 1);
    let rules: Vec<(String, Vec<String>)> = roles[0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .flat_map(|r| {
            let verbs: Vec<String> = r["verbs"]
                .as_sequence()
                .expect("verbs")
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            r["resources"]
                .as_sequence()
                .expect("resources")
                .iter()
                .filter_map(|res| res.as_str().map(|res| (res.to_string(), verbs.clone())))
                .collect::<Vec<_>>()
        })
        .collect();
    let want = |r: &str, v: &[&str]| (r.to_string(), v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        rules,
        vec![
            want("pods", &["get", "list", "watch"]),
            want("pods/log", &["get"]),
            want("flightsnapshots", &["get", "list", "watch", "create", "delete"]),
            want("flightsnapshots/status", &["get", "update"]),
        ]
    );
    let binding = &of_kind("ClusterRoleBinding")[0];
    assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], "flightrec");
    assert_eq!(of_kind("ServiceAccount")[0]["metadata"]["name"], "flightrec");
}

#[test]
fn dockerfile_is_multistage_locked_and_non_root() {
    let text = read("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a build stage and a small runtime stage");
    assert!(froms[1].contains("slim"), "{}", froms[1]);
    assert!(
        text.contains("RUN deploy/docker/build.sh /out"),
        "the build stage runs the tested script"
    );
    let script = read("deploy/docker/build.sh");
    assert!(script.contains("cargo build --release --locked -p flightrec"));
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("numeric uid");
    assert!(uid >= 1000, "runs as non-root: {user}");
    assert!(text.contains("FLIGHTREC_SNAPSHOTS__DIR=/var/lib/flightrec"));
    assert!(text.contains("VOLUME [\"/var/lib/flightrec\"]"));
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/flightrec\"]"));
    // Everything the build stage copies exists.
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo_root().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
}
