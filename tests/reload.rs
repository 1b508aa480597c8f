//! Config reload on SIGHUP: targets come and go without disturbing the others.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn config(targets: &[(&str, &str, &str, &str)], extra: &str) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[snapshots]\ndir = \"{{dir}}/data\"\npost_trigger = \"0s\"\n{extra}\n"
    );
    for (name, url, window, service) in targets {
        s.push_str(&format!(
            "[[targets]]\nname = \"{name}\"\nurl = \"{url}\"\nwindow = \"{window}\"\nmax_age = \"60s\"\nlabels = {{ service = \"{service}\" }}\n"
        ));
    }
    s
}

fn reload(agent: &Agent, config: &str) {
    let text = config.replace("{dir}", &agent.path().display().to_string());
    std::fs::write(agent.path().join("flightrec.toml"), text).expect("rewrite config");
    agent.proc.signal("HUP");
}

fn reloads(agent: &Agent, result: &str) -> f64 {
    agent
        .metric("flightrec_config_reloads_total", &[("result", result)])
        .unwrap_or(0.0)
}

/// The targets being recorded (a removed one stays listed, departed, for
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

fn last_reload_log(agent: &Agent) -> Value {
    agent
        .logs()
        .into_iter()
        .rfind(|l| l["message"] == "config reloaded")
        .expect("a 'config reloaded' line")
}

#[test]
fn sighup_adds_removes_and_updates_targets_without_disturbing_the_rest() {
    let svc_a = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let svc_b = GoService::start("fixture", &[]);
    let svc_c = GoService::start("fixture", &[]);
    let agent = Agent::start(&config(
        &[("a", &svc_a.url, "1s", "shop"), ("b", &svc_b.url, "1s", "b")],
        "",
    ));
    wait_for("windows from a and b", Duration::from_secs(20), || {
        (agent.windows_kept("a") >= 2 && agent.windows_kept("b") >= 1).then_some(())
    });
    let a_oldest = agent.target("a")["ring"]["oldest"].clone();

    // a: new labels only (its ring keeps its windows, its collector runs on);
    // b: removed; c: added; [snapshots] changed (needs a restart).
    reload(
        &agent,
        &config(
            &[("a", &svc_a.url, "1s", "checkout"), ("c", &svc_c.url, "1s", "c")],
            "max_bytes = \"2GiB\"",
        ),
    );
    wait_for("the reload to apply", Duration::from_secs(10), || {
        (reloads(&agent, "applied") >= 1.0).then_some(())
    });
    assert_eq!(names(&agent), vec!["a", "c"]);
    let log = last_reload_log(&agent);
    assert_eq!(log["added"], "[\"c\"]", "{log}");
    assert_eq!(log["removed"], "[\"b\"]", "{log}");
    assert_eq!(log["updated"], "[\"a\"]", "{log}");
    assert_eq!(log["restarted"], "[]", "{log}");
    assert!(
        agent
            .logs()
            .iter()
            .any(|l| l["section"] == "snapshots" && l["level"] == "WARN"),
        "a changed [snapshots] is said to need a restart"
    );
    assert_eq!(agent.target("a")["labels"]["service"], "checkout");
    assert_eq!(
        agent.target("a")["ring"]["oldest"],
        a_oldest,
        "a's ring was not touched"
    );
    let kept = agent.windows_kept("a");
    wait_for(
        "c recording and a still recording",
        Duration::from_secs(20),
        || (agent.windows_kept("c") >= 1 && agent.windows_kept("a") > kept).then_some(()),
    );
    assert_eq!(agent.target("b")["state"], "departed");

    // A bundle of a after the reload carries its new labels.
    // (Read after a's and c's windows above: by then b's collector has
    // filed the window it was recording when told to stop.)
    let kept = agent.windows_kept("b");
    let dir = agent.snapshot("a", "after reload");
    let m = assert_bundle_valid(&dir);
    assert_eq!(m["target"]["labels"]["service"], "checkout");
    // b records nothing more, but its ring is still there to snapshot.
    assert_eq!(agent.windows_kept("b"), kept);
    assert_bundle_valid(&agent.snapshot("b", "after it left"));

    // A bad config is refused; the running one stays.
    reload(&agent, "[[targets]]\nname = \"a\"\nwindow = \"soon\"\n");
    wait_for("the reload to be rejected", Duration::from_secs(10), || {
        (reloads(&agent, "rejected") >= 1.0).then_some(())
    });
    assert_eq!(names(&agent), vec!["a", "c"]);
    assert!(agent.logs().iter().any(|l| l["message"]
        .as_str()
        .is_some_and(|m| m.contains("targets[0].window: \"soon\" is not a duration"))));
}

#[test]
fn a_target_whose_window_changes_is_restarted_and_its_windows_keep_counting_up() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let agent = Agent::start(&config(&[("a", &svc.url, "1s", "a")], ""));
    wait_for("two windows", Duration::from_secs(20), || {
        (agent.windows_kept("a") >= 2).then_some(())
    });
    reload(&agent, &config(&[("a", &svc.url, "2s", "a")], ""));
    wait_for("the reload to apply", Duration::from_secs(10), || {
        (reloads(&agent, "applied") >= 1.0).then_some(())
    });
    assert_eq!(last_reload_log(&agent)["restarted"], "[\"a\"]");
    assert_eq!(agent.target("a")["window_seconds"], 2.0);
    let kept = agent.windows_kept("a");
    wait_for("windows after the restart", Duration::from_secs(20), || {
        (agent.windows_kept("a") >= kept + 2).then_some(())
    });
    let dir = agent.snapshot("a", "across a restart");
    let m = assert_bundle_valid(&dir);
    let seqs: Vec<u64> = m["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| w["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|p| p[1] > p[0]),
        "sequence numbers keep rising: {seqs:?}"
    );
    assert!(seqs.len() >= 3, "{seqs:?}");
}
