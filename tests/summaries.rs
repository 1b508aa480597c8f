//! Window summaries as a person uses them: the agent records real Go
//! services made to collect garbage, stop the world and burst runnable
//! goroutines (the machine's Go 1.26 fixture and the legacy service built
//! with Go 1.22), plus a Go 1.21 one, a bundle is taken through the API, and
//! every `windows[i].summary` of its manifest must equal what Go's own
//! parser (the oracle `tracesummary`, golang.org/x/exp/trace) computes from
//! the same `.trace` file. The Go 1.21 windows must say "not summarised".

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Every field of agent/gotrace/docs/summary.md.
const FIELDS: [&str; 19] = [
    "events",
    "first_ns",
    "last_ns",
    "gc_cycles",
    "stw_count",
    "stw_total_ns",
    "stw_max_ns",
    "stw_max_reason",
    "gc_assist_ns",
    "goroutines_max",
    "runnable_max",
    "sched_latency_samples",
    "sched_latency_p50_ns",
    "sched_latency_p99_ns",
    "sched_latency_max_ns",
    "syscall_ns",
    "heap_max_bytes",
    "heap_goal_max_bytes",
    "gomaxprocs",
];

fn n(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

/// Checks every window of one bundle against the oracle; returns the
/// summaries it compared and the number of windows.
fn check_bundle(dir: &Path, target: &str) -> (Vec<Value>, usize) {
    let manifest = assert_bundle_valid(dir);
    let windows = manifest["windows"].as_array().expect("windows");
    let files: Vec<PathBuf> = windows
        .iter()
        .map(|w| dir.join(w["file"].as_str().expect("file")))
        .collect();
    let go = tracesummary(&files);
    let mut compared = Vec::new();
    for (w, go) in windows.iter().zip(&go) {
        let file = w["file"].as_str().unwrap_or_default();
        let s = &w["summary"];
        if target == "go121" {
            assert_eq!(go["ok"], false, "{file}: {go}");
            assert_eq!(go["error"], "not summarised: v1 trace (Go 1.21 or older)");
            assert_eq!(s["summarised"], false, "{file}: {s}");
            assert_eq!(s["reason"], "old_go", "{file}: {s}");
            assert!(
                s["why"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("not supported: v1 trace (Go 1.21 or older)")),
                "{file}: {s}"
            );
            continue;
        }
        assert_eq!(go["ok"], true, "{file}: Go rejects the window: {}", go["error"]);
        assert_eq!(s["summarised"], true, "{file}: {s}");
        // Counts equal; durations too, to the nanosecond (the issue asks
        // for the microsecond: the decoder is exact).
        for f in FIELDS {
            assert_eq!(
                s[f], go[f],
                "{target} {file}: {f}: agent {} vs Go {}",
                s[f], go[f]
            );
        }
        compared.push(s.clone());
    }
    (compared, windows.len())
}

#[test]
fn every_window_summary_in_a_bundle_equals_go_s_parser_on_the_same_file() {
    let busy = [
        "-gc-every",
        "100ms",
        "-stw-every",
        "20ms",
        "-burst",
        "200",
        "-burst-every",
        "100ms",
        "-pairs",
        "1",
        "-rate",
        "100",
    ];
    let go126 = GoService::start("fixture", &busy);
    let go122 = GoService::start("legacy-go1.22", &busy);
    let go121 = GoService::start("legacy-go1.21", &["-gc-every", "100ms"]);
    let services = [("go126", &go126), ("go122", &go122), ("go121", &go121)];
    let targets: String = services
        .iter()
        .map(|(name, svc)| target_toml(name, &svc.url, "1s", "30s", ""))
        .collect();
    let agent = Agent::start(&agent_toml("1s", &targets));
    for (name, _) in services {
        wait_for(
            &format!("three windows of {name}"),
            Duration::from_secs(30),
            || (agent.windows_kept(name) >= 3).then_some(()),
        );
    }
    // The newest window's summary is in the API too.
    let newest = agent.target("go126")["summary"].clone();
    assert_eq!(newest["summarised"], true, "{newest}");
    assert!(newest["window"]["seq"].as_u64() > Some(0), "{newest}");
    assert_eq!(agent.target("go121")["summary"]["reason"], "old_go");

    // One snapshot of every target, through the API.
    let (status, v) = agent.post("/v1/snapshots", r#"{"reason": "summaries"}"#, None);
    assert_eq!(status, 202, "{v}");
    let ids: Vec<String> = v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|i| i.as_str().map(String::from))
        .collect();
    assert_eq!(ids.len(), 3, "{v}");
    let mut seen = json!({});
    for id in ids {
        let dir = agent.wait_snapshot(&id, Duration::from_secs(60));
        let target = services
            .iter()
            .map(|(name, _)| *name)
            .find(|name| id.contains(&format!("-{name}-")))
            .unwrap_or_else(|| panic!("bundle {id} of no target"));
        let (compared, windows) = check_bundle(&dir, target);
        if target == "go121" {
            assert!(windows >= 3, "{target}: only {windows} windows");
            println!(
                "EXACT {target}: {windows} windows, each \"not summarised\" (old_go), as the oracle says too"
            );
        } else {
            assert!(compared.len() >= 3, "{target}: only {} windows", compared.len());
            // The workloads show in the numbers, so the comparison is not
            // of empty windows.
            let most = |f: &str| compared.iter().map(|s| n(s, f)).max().unwrap_or(0);
            assert!(most("gc_cycles") >= 3, "{target}: {compared:?}");
            assert!(most("stw_count") >= 10, "{target}: {compared:?}");
            assert!(most("runnable_max") >= 100, "{target}: {compared:?}");
            assert!(most("sched_latency_samples") > 0, "{target}: {compared:?}");
            println!(
                "EXACT {target}: {windows} windows, every summary field equal to Go's parser's (most GC cycles {}, longest pause {} ns, most runnable {})",
                most("gc_cycles"),
                most("stw_max_ns"),
                most("runnable_max")
            );
        }
        seen[target] = json!(windows);
    }
    assert_eq!(seen.as_object().map(|o| o.len()), Some(3), "{seen}");
}
