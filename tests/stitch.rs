//! bundle.trace, end to end: real Go services of every Go version the suite
//! builds (busy, idle, GC-heavy, goroutine bursts, user regions across the
//! seams), recorded by the real agent, snapshotted through the API; each
//! bundle's windows stitched into one trace that Go's own parser accepts
//! (`go tool trace -d=parsed` and x/exp/trace through tracecheck) holding
//! every event of every window: its event count is the windows' sum, less
//! the closing Sync of each window but the last, plus the events the seams
//! added (the manifest's `events_added`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Checks the derived section and bundle.trace (and any further piece) of a
/// bundle with Go's parser; returns the derived section.
fn assert_stitched(dir: &Path, expect_pieces: usize) -> Value {
    let m = assert_bundle_valid(dir);
    let d = &m["derived"];
    assert!(d["ready_at"].is_string(), "derived section: {m}");
    assert!(d["stitch"]["error"].is_null(), "stitch failed: {d}");
    let pieces = d["stitch"]["pieces"].as_array().expect("pieces");
    assert_eq!(pieces.len(), expect_pieces, "pieces: {d}");
    let windows = m["windows"].as_array().expect("windows");
    let files = d["files"].as_array().expect("files");
    assert_eq!(
        files.len(),
        pieces.len() + 1,
        "every piece is listed, then report.html: {d}"
    );
    assert_eq!(
        files.last().map(|f| &f["file"]),
        Some(&Value::from("report.html")),
        "{d}"
    );
    let mut covered = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let file = p["file"].as_str().expect("file");
        let want = if i == 0 {
            "bundle.trace".to_string()
        } else {
            format!("bundle-{}.trace", i + 1)
        };
        assert_eq!(file, want);
        assert!(files.iter().any(|f| f["file"] == file && f["sha256"].is_string()));
        let path = dir.join(file);
        let parsed = Command::new("go")
            .args(["tool", "trace", "-d=parsed"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run go tool trace");
        assert!(
            parsed.status.success(),
            "go tool trace -d=parsed rejects {}: {}",
            path.display(),
            String::from_utf8_lossy(&parsed.stderr)
        );
        let members: Vec<usize> = p["windows"]
            .as_array()
            .expect("windows")
            .iter()
            .map(|w| w.as_u64().expect("index") as usize)
            .collect();
        assert!(!members.is_empty());
        let mut all: Vec<PathBuf> = vec![path.clone()];
        all.extend(
            members
                .iter()
                .map(|&w| dir.join(windows[w]["file"].as_str().expect("file"))),
        );
        let checks = tracecheck(&all);
        assert_eq!(checks.len(), all.len());
        assert!(checks.iter().all(|c| c.ok), "Go's parser: {checks:?}");
        let sum: u64 = checks[1..].iter().map(|c| c.events).sum();
        let added = p["events_added"].as_u64().expect("events_added");
        assert_eq!(
            checks[0].events,
            sum - (members.len() as u64 - 1) + added,
            "{file}: every event of windows {members:?} and the seams' {added}"
        );
        // The stitched trace spans its windows, in time order.
        assert_eq!(checks[0].first_ns, checks[1].first_ns);
        assert_eq!(checks[0].last_ns, checks.last().expect("last").last_ns);
        covered.extend(members);
    }
    // Windows in no piece are listed with the reason.
    let skipped = d["stitch"]["skipped"].as_array().cloned().unwrap_or_default();
    for (i, w) in windows.iter().enumerate() {
        let left_out = skipped.iter().any(|s| s["window"].as_u64() == Some(i as u64));
        assert!(
            covered.contains(&i) || left_out,
            "window {i} ({}) is neither stitched nor said to be left out: {d}",
            w["file"]
        );
    }
    // Every seam between two pieces says why.
    let seams = d["stitch"]["seams"].as_array().expect("seams");
    let splits = seams
        .iter()
        .filter(|s| s["outcome"].as_str().is_some_and(|o| o.starts_with("split: ")))
        .count();
    assert_eq!(splits + 1, pieces.len().max(1), "seams: {seams:?}");
    d.clone()
}

fn targets(services: &[(&str, &GoService)]) -> String {
    services
        .iter()
        .map(|(name, s)| target_toml(name, &s.url, "1s", "30s", ""))
        .collect()
}

fn wait_windows(agent: &Agent, names: &[&str], n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !names.iter().all(|t| agent.windows_kept(t) >= n) {
        if std::time::Instant::now() > deadline {
            let states: Vec<String> = names.iter().map(|t| agent.target(t).to_string()).collect();
            panic!("timed out waiting for {n} windows of each of {names:?}: {states:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_workload_of_the_machines_go_stitches_into_one_trace_go_accepts() {
    let busy = GoService::start("fixture", &["-pairs", "2", "-rate", "3000"]);
    let idle = GoService::start("fixture", &[]);
    let gc = GoService::start(
        "fixture",
        &[
            "-alloc-rate",
            "20000000",
            "-gc-every",
            "300ms",
            "-stw-every",
            "250ms",
        ],
    );
    let burst = GoService::start("fixture", &["-burst", "300", "-burst-every", "50ms"]);
    let regions = GoService::start("fixture", &["-regions", "400ms", "-pairs", "1", "-rate", "200"]);
    let all = [
        ("busy", &busy),
        ("idle", &idle),
        ("gc", &gc),
        ("burst", &burst),
        ("regions", &regions),
    ];
    let agent = Agent::start(&agent_toml("1s", &targets(&all)));
    let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
    wait_windows(&agent, &names, 3);
    for name in names {
        let dir = agent.snapshot(name, "stitch test");
        let d = assert_stitched(&dir, 1);
        let seams = d["stitch"]["seams"].as_array().expect("seams");
        assert!(seams.len() >= 3, "{name}: 4 windows or more, 3 seams: {d}");
        assert!(
            seams
                .iter()
                .all(|s| s["outcome"] == "stitched" && s["gap_ns"].as_u64().is_some()),
            "{name}: {d}"
        );
    }
    let stitched = agent.metric("flightrec_bundle_stitch_total", &[("result", "stitched")]);
    assert_eq!(stitched, Some(5.0));
}

#[test]
fn go_1_22_stitches_and_go_1_21_is_left_out_with_the_reason() {
    let new = GoService::start("legacy-go1.22", &["-pairs", "1", "-rate", "300"]);
    let old = GoService::start("legacy-go1.21", &["-pairs", "1", "-rate", "300"]);
    let agent = Agent::start(&agent_toml("1s", &targets(&[("go122", &new), ("go121", &old)])));
    wait_windows(&agent, &["go122", "go121"], 3);

    let dir = agent.snapshot("go122", "stitch test");
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    assert!(m["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .all(|w| w["go_version"] == "1.22"));
    assert_stitched(&dir, 1);

    // The old format has no generations: no bundle.trace, every window
    // said to be left out, and the bundle whole all the same.
    let dir = agent.snapshot("go121", "stitch test");
    let m = assert_bundle_valid(&dir);
    let d = &m["derived"];
    let files: Vec<&str> = d["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["file"].as_str())
        .collect();
    assert_eq!(files, ["report.html"], "the page alone: {d}");
    assert!(!dir.join("bundle.trace").exists());
    let skipped = d["stitch"]["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), m["windows"].as_array().expect("windows").len());
    assert!(
        skipped
            .iter()
            .all(|s| s["reason"].as_str().is_some_and(|r| r.contains("v1"))),
        "{d}"
    );
    assert_eq!(
        agent.metric("flightrec_bundle_stitch_total", &[("result", "none")]),
        Some(1.0)
    );
}

#[test]
fn a_restarted_target_splits_the_bundle_into_pieces_that_say_why() {
    // The same address, another process: its generations start over.
    let first = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let addr = first.url.trim_start_matches("http://").to_string();
    let agent = Agent::start(&agent_toml("1s", &targets(&[("svc", &first)])));
    wait_windows(&agent, &["svc"], 3);
    let mut first = first;
    first.proc.kill();
    let _second = GoService::start("fixture", &["-addr", &addr, "-pairs", "1", "-rate", "500"]);
    let seen = agent.windows_kept("svc");
    wait_for("windows of the new process", Duration::from_secs(30), || {
        (agent.windows_kept("svc") >= seen + 2).then_some(())
    });
    let dir = agent.snapshot("svc", "stitch test");
    let d = assert_stitched_any(&dir);
    let seams = d["stitch"]["seams"].as_array().expect("seams");
    assert!(
        seams
            .iter()
            .any(|s| s["outcome"].as_str().is_some_and(|o| o.starts_with("split: "))),
        "the restart splits: {d}"
    );
}

/// [`assert_stitched`] for a bundle of as many pieces as its manifest says.
fn assert_stitched_any(dir: &Path) -> Value {
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    let n = m["derived"]["stitch"]["pieces"].as_array().map_or(0, Vec::len);
    assert!(n >= 2, "a restart makes two pieces at least: {}", m["derived"]);
    assert_stitched(dir, n)
}

#[test]
fn a_bundle_left_unfinished_by_a_stop_is_finished_at_the_next_start() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let mut agent = Agent::start(&agent_toml("1s", &targets(&[("svc", &svc)])));
    wait_windows(&agent, &["svc"], 2);
    let dir = agent.snapshot("svc", "stitch test");
    agent.stop();
    // As if the agent had died after the bundle was durable and before its
    // derived files: manifest.json as committed (manifest.pb is rewritten
    // with it), no bundle.trace, a piece half written.
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    let want = m["derived"]["files"][0]["sha256"].clone();
    m.as_object_mut().expect("object").remove("derived");
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&m).expect("json"),
    )
    .expect("write");
    std::fs::remove_file(dir.join("bundle.trace")).expect("remove bundle.trace");
    std::fs::write(dir.join(".derived-bundle.trace"), b"half written").expect("leftover");

    let spool = dir.parent().expect("spool").to_path_buf();
    let config =
        agent_toml("1s", &targets(&[("svc", &svc)])).replace("{dir}/data", &spool.display().to_string());
    let again = Agent::start(&config);
    wait_for("the bundle finished again", Duration::from_secs(60), || {
        let m: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()?;
        m["derived"]["ready_at"].is_string().then_some(())
    });
    assert!(
        !dir.join(".derived-bundle.trace").exists(),
        "the leftover is removed"
    );
    let d = assert_stitched(&dir, 1);
    assert_eq!(d["files"][0]["sha256"], want, "the same bytes as the first time");
    drop(again);
}
