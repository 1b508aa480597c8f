//! The trace trigger, end to end: a real Go service made, through its
//! `/control` endpoint, first to stop the world for long (heap dumps) and
//! then to flood its run queue (bursts of goroutines) makes one bundle for
//! each `kind = "trace"` trigger whose condition it meets, and nothing while
//! it only does its usual work; the window each trigger names is checked
//! against Go's own parser. And `check-config` names what is wrong with a
//! trace trigger by its key path.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::alerting::*;
use common::*;
use serde_json::Value;

/// Sets fixture workloads at runtime.
fn control(url: &str, query: &str) {
    let r = reqwest::blocking::get(format!("{url}/control?{query}")).expect("control");
    assert!(r.status().is_success(), "control?{query}: {}", r.status());
}

fn fired(agent: &Agent) -> f64 {
    agent
        .metric("flightrec_triggers_fired_total", &[("kind", "trace")])
        .unwrap_or(0.0)
}

/// Windows the agent summarised for `target` so far.
fn summarised(agent: &Agent, target: &str) -> f64 {
    agent
        .metric("flightrec_trace_stw_max_seconds_count", &[("target", target)])
        .unwrap_or(0.0)
}

/// The trace bundle of trigger `name`, once written.
fn bundle_of(agent: &Agent, name: &str) -> Option<(PathBuf, Value)> {
    bundles_of(agent, "trace")
        .into_iter()
        .find(|(_, m)| m["trigger"]["details"]["trigger"] == name)
}

/// Checks that a trace bundle names the window that met its condition, with
/// the value seen, and that Go's parser sees that value in that window's
/// file; returns the value.
fn check_fired(dir: &std::path::Path, m: &Value, field: &str) -> u64 {
    assert_bundle_valid(dir);
    let d = &m["trigger"]["details"];
    assert_eq!(d["field"], field, "{d}");
    let seq = d["window"]["seq"].as_u64().expect("the window's seq");
    let w = m["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .find(|w| w["seq"] == seq)
        .unwrap_or_else(|| panic!("the bundle holds no window {seq}: {m}"));
    let observed = d["observed"].as_f64().expect("observed") as u64;
    assert_eq!(w["summary"][field], observed, "{d}");
    let file = dir.join(w["file"].as_str().expect("file"));
    let out = Command::new(fixture_bin("tracesummary"))
        .arg(&file)
        .output()
        .expect("run tracesummary");
    let go: Value = serde_json::from_slice(&out.stdout).expect("tracesummary prints JSON");
    assert_eq!(go[field], observed, "Go's parser on {}: {go}", file.display());
    // The bundle goes on past the trigger: post_trigger was recorded.
    assert_eq!(m["post_trigger_complete"], true);
    let last = m["windows"]
        .as_array()
        .and_then(|ws| ws.last())
        .expect("a window");
    assert!(
        last["seq"].as_u64() > Some(seq),
        "windows after the one that fired"
    );
    observed
}

#[test]
fn a_trace_trigger_fires_on_a_long_pause_and_a_run_queue_flood_made_on_purpose_and_on_nothing_else() {
    // Its usual work: short pauses (ReadMemStats, ~0.1 ms) and small bursts.
    let svc = GoService::start(
        "fixture",
        &[
            "-pairs",
            "1",
            "-rate",
            "100",
            "-stw-every",
            "100ms",
            "-burst",
            "20",
        ],
    );
    let cooldown = Duration::from_secs(10);
    let agent = Agent::start(&agent_toml(
        "1s",
        &format!(
            r#"{}
[[triggers]]
kind = "trace"
name = "pause"
target = "svc"
when = "stw_max > 100ms"
cooldown = "10s"

[[triggers]]
kind = "trace"
name = "flood"
target = "svc"
when = "runnable_max > 500"
cooldown = "10s"
"#,
            target_toml("svc", &svc.url, "1s", "30s", "")
        ),
    ));
    // Several windows of usual work, each judged by both triggers: nothing.
    wait_for("six summarised windows", Duration::from_secs(30), || {
        (summarised(&agent, "svc") >= 6.0).then_some(())
    });
    assert!(bundles(&agent).is_empty(), "usual work fired a trigger");
    assert_eq!(fired(&agent), 0.0);
    for trigger in ["pause", "flood"] {
        let seen = agent.metric("flightrec_trigger_observed_value", &[("trigger", trigger)]);
        assert!(seen.is_some(), "{trigger} judged no window");
    }

    // Long pauses: heap dumps of a 64 MiB heap stop the world ~200 ms.
    control(&svc.url, "heap_dump_every=500ms");
    let (dir, m) = wait_for("the pause trigger's bundle", Duration::from_secs(30), || {
        bundle_of(&agent, "pause")
    });
    control(&svc.url, "heap_dump_every=0");
    let fired_at = Instant::now();
    let pause = check_fired(&dir, &m, "stw_max_ns");
    assert!(pause > 100_000_000, "{pause}");
    let w = &m["trigger"]["details"]["summary"];
    assert_eq!(w["stw_max_reason"], "write heap dump", "{w}");
    assert!(
        m["trigger"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("longest pause: write heap dump")),
        "{}",
        m["trigger"]
    );

    // The target's cooldown is the gate's, whichever trigger asks: let it end.
    wait_for("the cooldown to end", cooldown + Duration::from_secs(5), || {
        (fired_at.elapsed() >= cooldown).then_some(())
    });
    assert!(bundle_of(&agent, "flood").is_none());

    // A run-queue flood: 1000 goroutines made runnable at once.
    control(&svc.url, "burst=1000");
    let (dir, m) = wait_for("the flood trigger's bundle", Duration::from_secs(30), || {
        bundle_of(&agent, "flood")
    });
    control(&svc.url, "burst=20");
    let flood = check_fired(&dir, &m, "runnable_max");
    assert!(flood > 500, "{flood}");

    // Back to usual work: one bundle per spike, nothing more.
    let judged = summarised(&agent, "svc");
    wait_for("five more windows", Duration::from_secs(30), || {
        (summarised(&agent, "svc") >= judged + 5.0).then_some(())
    });
    let all = bundles(&agent);
    assert_eq!(
        all.len(),
        2,
        "{:?}",
        all.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert_eq!(fired(&agent), 2.0);
    // The inspect line of the window that fired.
    let out = Command::new(AGENT)
        .arg("inspect")
        .arg(&dir)
        .output()
        .expect("inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("<- met the trace trigger's condition"), "{text}");
}

#[test]
fn check_config_names_a_trace_trigger_s_unknown_field_bad_operator_and_bad_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        r#"
[[targets]]
name = "checkout"
[[triggers]]
kind = "trace"
target = "checkout"
when = "stw_maximum > 10ms"
[[triggers]]
kind = "trace"
target = "checkout"
name = "b"
when = "runnable_max => 500"
[[triggers]]
kind = "trace"
target = "checkout"
name = "c"
when = "sched_latency_p99 > 5"
"#,
    )
    .expect("write");
    let out = Command::new(AGENT)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    for want in [
        r#"triggers[0].when: "stw_maximum > 10ms": "stw_maximum" is not a window summary field"#,
        r#"triggers[1].when: "runnable_max => 500": "=>" is not an operator"#,
        r#"triggers[2].when: "sched_latency_p99 > 5": sched_latency_p99 is a duration: give "5" a unit"#,
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The same, corrected through the environment, passes.
    let out = Command::new(AGENT)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env("FLIGHTREC_TRIGGERS__0__WHEN", "stw_max > 10ms")
        .env("FLIGHTREC_TRIGGERS__1__WHEN", "runnable_max >= 500")
        .env("FLIGHTREC_TRIGGERS__2__WHEN", "sched_latency_p99 > 5ms")
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
