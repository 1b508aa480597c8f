//! Record and snapshot, end to end: the real agent against real Go services.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;

fn config(targets: &str, post_trigger: &str) -> String {
    agent_toml(post_trigger, targets)
}

fn target(name: &str, url: &str, window: &str) -> String {
    target_toml(
        name,
        url,
        window,
        "30s",
        &format!("labels = {{ service = \"{name}\" }}"),
    )
}

fn parse_time(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

#[test]
fn busy_service_is_recorded_and_snapshotted_into_a_bundle_go_parses() {
    let svc = GoService::start("fixture", &["-pairs", "2", "-rate", "3000"]);
    let agent = Agent::start(&config(&target("checkout", &svc.url, "2s"), "1s"));
    wait_for("three windows in the ring", Duration::from_secs(30), || {
        (agent.windows_kept("checkout") >= 3).then_some(())
    });

    let before = SystemTime::now();
    let dir = agent.snapshot("checkout", "latency spike in checkout");
    let m = assert_bundle_valid(&dir);

    assert_eq!(m["target"]["name"], "checkout");
    assert_eq!(m["target"]["labels"]["service"], "checkout");
    assert_eq!(m["trigger"]["kind"], "manual");
    assert_eq!(m["trigger"]["reason"], "latency spike in checkout");
    assert_eq!(m["post_trigger_complete"], true);
    let windows = m["windows"].as_array().expect("windows");
    assert!(
        windows.len() >= 4,
        "3 frozen + the one in flight: {}",
        windows.len()
    );
    assert!(windows
        .iter()
        .all(|w| w["complete"] == true && w["go_version"] == "1.26"));
    assert!(windows.iter().all(|w| w["clock"] == "target"));

    // The trigger lies inside a complete window, and post_trigger after it
    // is recorded too.
    let fired = parse_time(m["trigger"]["fired_at"].as_str().expect("fired_at"));
    assert!(fired >= before);
    let last_end = parse_time(windows.last().expect("last")["end"].as_str().expect("end"));
    assert!(
        last_end >= fired + Duration::from_secs(1),
        "post_trigger recorded"
    );
    assert!(
        windows.iter().any(|w| {
            let (s, e) = (
                parse_time(w["start"].as_str().unwrap_or("")),
                parse_time(w["end"].as_str().unwrap_or("")),
            );
            s <= fired && fired <= e
        }) || windows.windows(2).any(|p| {
            // ...or in the few milliseconds between two windows.
            parse_time(p[0]["end"].as_str().unwrap_or("")) <= fired
                && fired <= parse_time(p[1]["start"].as_str().unwrap_or(""))
        }),
        "the trigger moment is covered"
    );

    // Windows are back to back: the target's own clock shows the gaps.
    let cov = &m["coverage"];
    assert_eq!(cov["clock"], "target");
    let ratio = cov["ratio"].as_f64().expect("ratio");
    assert!(
        ratio >= 0.99,
        "coverage {ratio} (max gap {}s)",
        cov["max_gap_seconds"]
    );
    for w in &windows[1..] {
        let gap = w["gap_before_seconds"]
            .as_f64()
            .expect("gap known in one process");
        assert!(gap < 0.1, "gap {gap}s between windows");
    }

    // The API lists it and describes the target.
    let (_, list) = agent.get("/v1/snapshots");
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(ids.contains(&m["id"].as_str().expect("id")));
    let t = agent.target("checkout");
    assert_eq!(t["state"], "recording");
    assert_eq!(t["go_version"], "1.26");
    assert!(t["ring"]["windows"].as_u64().unwrap_or(0) >= 3);
    assert!(t["ring"]["coverage"].as_f64().unwrap_or(0.0) > 0.95);

    // Metrics count what happened.
    assert!(
        agent
            .metric(
                "flightrec_windows_total",
                &[("target", "checkout"), ("result", "complete")]
            )
            .unwrap_or(0.0)
            >= 4.0
    );
    assert!(
        agent
            .metric("flightrec_received_bytes_total", &[("target", "checkout")])
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        agent.metric(
            "flightrec_snapshots_total",
            &[("kind", "manual"), ("result", "written")]
        ),
        Some(1.0)
    );

    // The command line does the same and prints where the bundle is.
    let out = std::process::Command::new(AGENT)
        .args([
            "snapshot",
            "--server",
            &agent.api,
            "--target",
            "checkout",
            "--reason",
            "from the CLI",
        ])
        .output()
        .expect("flightrec snapshot");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("open with: go tool trace "), "{text}");
    let path = text
        .lines()
        .find_map(|l| l.split_once(" written: ").map(|(_, p)| p.trim().to_string()))
        .expect("path printed");
    let m2 = assert_bundle_valid(std::path::Path::new(&path));
    assert_eq!(m2["trigger"]["reason"], "from the CLI");

    // `inspect` reads a bundle archived as a person would ship it.
    let bundle = std::path::Path::new(&path);
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("bundle.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(bundle.parent().expect("spool"))
        .arg(bundle.file_name().expect("id"))
        .status()
        .expect("tar");
    assert!(tar.success());
    let out = std::process::Command::new(AGENT)
        .arg("inspect")
        .arg(&archive)
        .output()
        .expect("inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("every sha256 matches"), "{text}");
    // A window altered after the fact is caught.
    let copy = work.path().join("copy");
    std::fs::create_dir(&copy).expect("mkdir");
    for e in std::fs::read_dir(bundle).expect("bundle").flatten() {
        std::fs::copy(e.path(), copy.join(e.file_name())).expect("copy");
    }
    let first = copy.join(m2["windows"][0]["file"].as_str().expect("file"));
    let mut bytes = std::fs::read(&first).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&first, bytes).expect("write");
    let tar = std::process::Command::new("tar")
        .arg("cf")
        .arg(work.path().join("bad.tar"))
        .arg("-C")
        .arg(&copy)
        .arg(".")
        .status()
        .expect("tar");
    assert!(tar.success());
    let out = std::process::Command::new(AGENT)
        .arg("inspect")
        .arg(work.path().join("bad.tar"))
        .output()
        .expect("inspect");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sha256 is"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_second_client_holding_the_trace_slot_is_backed_off_from_not_hammered() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    // Someone else (a person with curl) takes the slot for 5 seconds. It
    // retries until it holds the slot: probing for it with short traces
    // could itself take the slot at the moment the holder asks, and the
    // holder would get the 500 instead.
    let url = format!("{}/debug/pprof/trace?seconds=5", svc.url);
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        for _ in 0..50 {
            let r = http.get(&url).send().expect("holder's request");
            if r.status().as_u16() == 200 {
                let _ = held_tx.send(());
                return r.bytes().expect("holder's trace").len();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the holder never got the trace slot");
    });
    held_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the slot to be held");

    let agent = Agent::start(&config(&target("busy", &svc.url, "1s"), "1s"));
    wait_for("a slot_busy error", Duration::from_secs(10), || {
        agent.metric(
            "flightrec_window_errors_total",
            &[("target", "busy"), ("reason", "slot_busy")],
        )
    });
    assert_eq!(agent.target("busy")["state"], "slot_busy");
    assert!(
        holder.join().expect("holder") > 16,
        "the other client got its trace"
    );

    wait_for("recording once the slot is free", Duration::from_secs(30), || {
        (agent.windows_kept("busy") >= 2).then_some(())
    });
    let busy = agent
        .metric(
            "flightrec_window_errors_total",
            &[("target", "busy"), ("reason", "slot_busy")],
        )
        .unwrap_or(0.0);
    // Backoff starts at ~1 s and doubles: a 5 s hold costs a handful of tries.
    assert!(
        (1.0..=6.0).contains(&busy),
        "{busy} attempts while the slot was held"
    );
    let t = agent.target("busy");
    assert!(
        t["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("already enabled"),
        "{t}"
    );
    assert_eq!(t["state"], "recording");
}

#[test]
fn targets_answering_html_json_garbage_or_404_are_rejected_and_counted_while_a_healthy_one_records() {
    let html = GoService::start("fixture", &["-trace-mode", "html"]);
    let json = GoService::start("fixture", &["-trace-mode", "json"]);
    let garbage = GoService::start("fixture", &["-trace-mode", "garbage"]);
    let missing = GoService::start("fixture", &["-trace-mode", "404"]);
    let healthy = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let targets = [
        target("html", &html.url, "1s"),
        target("json", &json.url, "1s"),
        target("garbage", &garbage.url, "1s"),
        target("missing", &missing.url, "1s"),
        target("healthy", &healthy.url, "1s"),
    ]
    .concat();
    let agent = Agent::start(&config(&targets, "0s"));
    for (name, reason) in [
        ("html", "not_a_trace"),
        ("json", "not_a_trace"),
        ("garbage", "not_a_trace"),
        ("missing", "http_status"),
    ] {
        wait_for(
            &format!("{name} rejected as {reason}"),
            Duration::from_secs(15),
            || {
                agent.metric(
                    "flightrec_window_errors_total",
                    &[("target", name), ("reason", reason)],
                )
            },
        );
        let t = agent.target(name);
        assert_eq!(t["windows_kept"], 0, "{name}: {t}");
        assert_eq!(t["state"], "backing_off", "{name}: {t}");
    }
    let msg = |n: &str| {
        agent.target(n)["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        msg("html").contains("not a Go execution trace") && msg("html").contains("<"),
        "{}",
        msg("html")
    );
    assert!(msg("html").contains("text/html"), "{}", msg("html"));
    assert!(
        msg("json").contains("error") && msg("json").contains("application/json"),
        "{}",
        msg("json")
    );
    assert!(msg("garbage").contains("bytes "), "{}", msg("garbage"));
    assert!(msg("missing").contains("HTTP 404"), "{}", msg("missing"));

    wait_for("the healthy target to record", Duration::from_secs(20), || {
        (agent.windows_kept("healthy") >= 3).then_some(())
    });
    let (status, _) = agent.get("/healthz");
    assert_eq!(status, 200);
    let dir = agent.snapshot("healthy", "healthy beside broken ones");
    assert_bundle_valid(&dir);
}

#[test]
fn a_target_killed_mid_window_keeps_its_whole_generations_and_is_recorded_again_after_restart() {
    let mut svc = GoService::start("fixture", &["-pairs", "1", "-rate", "2000"]);
    let port = svc.port();
    let agent = Agent::start(&config(&target("flaky", &svc.url, "4s"), "0s"));
    wait_for("a first window", Duration::from_secs(20), || {
        (agent.windows_kept("flaky") >= 1).then_some(())
    });

    // Go ends a trace generation about every second: 2.5 s into the next
    // window, whole generations are in flight.
    let last = humantime::parse_rfc3339(agent.target("flaky")["last_window_at"].as_str().expect("time"))
        .expect("rfc3339");
    wait_for("2.5 s into the next window", Duration::from_secs(10), || {
        (SystemTime::now() >= last + Duration::from_millis(2500)).then_some(())
    });
    svc.proc.kill();
    wait_for(
        "the cut window to be kept as truncated",
        Duration::from_secs(15),
        || {
            agent.metric(
                "flightrec_windows_total",
                &[("target", "flaky"), ("result", "truncated")],
            )
        },
    );
    wait_for(
        "connection errors while the target is down",
        Duration::from_secs(15),
        || {
            agent.metric(
                "flightrec_window_errors_total",
                &[("target", "flaky"), ("reason", "connect")],
            )
        },
    );
    assert_eq!(agent.target("flaky")["state"], "backing_off");

    let port_arg = format!("127.0.0.1:{port}");
    let _restarted = GoService::start("fixture", &["-addr", &port_arg, "-pairs", "1", "-rate", "2000"]);
    let kept = agent.windows_kept("flaky");
    wait_for("recording after the restart", Duration::from_secs(30), || {
        (agent.windows_kept("flaky") > kept).then_some(())
    });

    let dir = agent.snapshot("flaky", "after a restart");
    let m = assert_bundle_valid(&dir);
    let windows = m["windows"].as_array().expect("windows");
    let cut: Vec<&Value> = windows.iter().filter(|w| w["complete"] == false).collect();
    assert_eq!(cut.len(), 1, "{m}");
    assert_eq!(cut[0]["truncation"], "disconnected");
    assert!(cut[0]["trimmed_bytes"].as_u64().is_some());
    assert!(windows.iter().any(|w| w["complete"] == true));
}

#[test]
fn a_go_1_22_write_timeout_refusal_shortens_the_window_and_says_so() {
    // A real Go 1.22 server: its pprof handler answers 400 when the window
    // is not shorter than the server's WriteTimeout.
    let svc = GoService::start(
        "legacy-go1.22",
        &["-write-timeout", "2s", "-pairs", "1", "-rate", "500"],
    );
    let agent = Agent::start(&config(&target("old", &svc.url, "5s"), "0s"));
    wait_for(
        "a window from the Go 1.22 target",
        Duration::from_secs(30),
        || (agent.windows_kept("old") >= 1).then_some(()),
    );
    // 5 s → 2 s (still refused: not shorter than 2 s) → 1 s.
    assert_eq!(
        agent.metric("flightrec_window_length_seconds", &[("target", "old")]),
        Some(1.0)
    );
    assert_eq!(
        agent.metric(
            "flightrec_window_errors_total",
            &[("target", "old"), ("reason", "write_timeout")]
        ),
        Some(2.0)
    );
    let t = agent.target("old");
    assert_eq!(t["window_seconds"], 1.0);
    assert_eq!(t["configured_window_seconds"], 5.0);
    assert_eq!(t["go_version"], "1.22");
    let warned = agent.logs().iter().any(|l| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("WriteTimeout is shorter than the window"))
    });
    assert!(warned, "a warning explains the shorter window");
    let dir = agent.snapshot("old", "old Go");
    let m = assert_bundle_valid(&dir);
    assert!(m["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .all(|w| w["go_version"] == "1.22"));
}

#[test]
fn check_config_reports_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\n[[targets]]\nname = \"a b\"\nwindow = \"5x\"\ncompression = \"lz4\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(AGENT)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "server.listen",
        "targets[0].name",
        "targets[0].window: \"5x\" is not a duration",
        "targets[0].compression",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[targets]]\nname = \"a\"\nurl = \"http://127.0.0.1:6060\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(AGENT)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_api_answers_bad_requests_with_a_status_and_a_reason() {
    let svc = GoService::start("fixture", &[]);
    let agent = Agent::start(&config(&target("t", &svc.url, "1s"), "0s"));
    let (s, v) = agent.post("/v1/snapshots", "{not json", None);
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap_or("").contains("invalid JSON"), "{v}");
    let (s, v) = agent.post("/v1/snapshots", r#"{"target": 7}"#, None);
    assert_eq!(s, 400, "{v}");
    let (s, v) = agent.post("/v1/snapshots", r#"{"target": "nope"}"#, None);
    assert_eq!(s, 404);
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("unknown target \"nope\""),
        "{v}"
    );
    let (s, v) = agent.post("/v1/snapshots", r#"{"tgt": "t"}"#, None);
    assert_eq!(s, 400, "unknown fields are typos: {v}");
    let (s, _) = agent.get("/v1/snapshots/..%2F..%2Fetc");
    assert_eq!(s, 400);
    let (s, _) = agent.get("/v1/snapshots/20990101T000000.000Z-t-0000");
    assert_eq!(s, 404);
    let (s, _) = agent.get("/v1/nothing");
    assert_eq!(s, 404);
    let (s, v) = agent.get("/readyz");
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")));
}

#[test]
fn a_configured_token_guards_snapshot_requests() {
    let svc = GoService::start("fixture", &[]);
    let tokdir = tempfile::tempdir().expect("tempdir");
    let token_file = tokdir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("write");
    let cfg = config(&target("t", &svc.url, "1s"), "0s").replace(
        "[server]\n",
        &format!("[server]\ntoken_file = \"{}\"\n", token_file.display()),
    );
    let agent = Agent::start(&cfg);
    let (s, v) = agent.post("/v1/snapshots", "{}", None);
    assert_eq!(s, 401, "{v}");
    let (s, _) = agent.post("/v1/snapshots", "{}", Some("wrong"));
    assert_eq!(s, 401);
    wait_for("a window", Duration::from_secs(20), || {
        (agent.windows_kept("t") >= 1).then_some(())
    });
    let (s, v) = agent.post("/v1/snapshots", "{}", Some("s3cret-token"));
    assert_eq!(s, 202, "{v}");
    // Reading needs no token; the token never appears in answers or logs.
    let (s, targets) = agent.get("/v1/targets");
    assert_eq!(s, 200);
    assert!(!targets.to_string().contains("s3cret"));
    assert!(!std::fs::read_to_string(&agent.log)
        .unwrap_or_default()
        .contains("s3cret"));
}

#[test]
fn sigterm_during_post_trigger_capture_still_leaves_a_whole_bundle() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "1000"]);
    let mut agent = Agent::start(&config(&target("t", &svc.url, "1s"), "3s"));
    wait_for("a window", Duration::from_secs(20), || {
        (agent.windows_kept("t") >= 2).then_some(())
    });
    let (s, v) = agent.post("/v1/snapshots", r#"{"target":"t","reason":"then SIGTERM"}"#, None);
    assert_eq!(s, 202, "{v}");
    let status = agent.stop();
    assert!(status.success(), "exit status {status}");
    let data = agent.path().join("data");
    let bundles: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(bundles.len(), 1);
    let m = assert_bundle_valid(&bundles[0].path());
    assert_eq!(m["trigger"]["reason"], "then SIGTERM");
    assert_eq!(
        m["post_trigger_complete"], true,
        "shutdown waited for post_trigger"
    );
    assert!(
        std::fs::read_dir(data.join(".partial")).map_or(0, |d| d.count()) == 0,
        "nothing half-written left behind"
    );
}

#[test]
fn the_frozen_ring_is_on_disk_before_post_trigger_recording_ends() {
    // Writing the ring while post-trigger recording goes on is what makes a
    // bundle durable soon after recording ends, whatever the ring's size.
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "1000"]);
    let agent = Agent::start(&config(&target("t", &svc.url, "1s"), "4s"));
    wait_for("3 windows", Duration::from_secs(20), || {
        (agent.windows_kept("t") >= 3).then_some(())
    });
    let (s, v) = agent.post("/v1/snapshots", r#"{"target":"t","reason":"early write"}"#, None);
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let partial = agent.path().join("data/.partial").join(&id);
    wait_for(
        "the frozen windows in .partial while recording",
        Duration::from_secs(4),
        || {
            let files = std::fs::read_dir(&partial).map_or(0, |d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".trace"))
                    .count()
            });
            let (_, p) = agent.get(&format!("/v1/snapshots/{id}"));
            assert_eq!(p["phase"], "recording", "recording ended first: {p}");
            (files >= 3).then_some(())
        },
    );
    let dir = agent.wait_snapshot(&id, Duration::from_secs(30));
    let m = assert_bundle_valid(&dir);
    assert_eq!(m["post_trigger_complete"], true);
    assert!(
        m["windows"].as_array().expect("windows").len() >= 7,
        "3 frozen + 4 s more: {m}"
    );
    assert!(!partial.exists(), "the bundle was renamed into place");
}
