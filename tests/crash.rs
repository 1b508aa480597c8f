//! The minute before a crash: real Go services made to die on purpose leave a crash bundle that ends at the death; a graceful stop leaves none.
//!
//! Four deaths: SIGKILL (the OOM killer's), an unrecovered panic, a fatal
//! runtime error (concurrent map writes) and `os.Exit(3)`, each on a busy
//! (>= 1 MB/s of trace) and an idle target. Each prints the blind spot: from
//! the last event Go's parser reads in the bundle to the death, both in the
//! target's monotonic clock (the clock of trace timestamps on Linux). Set
//! CRASH_TEST_RUNS=N to repeat each case N times and CRASH_TEST_AT=0.3-0.7
//! for when in a window the deaths come (the README's figures). Not
//! FLIGHTREC_*: the agents inherit the environment and would read those as
//! config keys.
//! Also: a departed target can still be snapshotted, and a crash-looping
//! service makes one bundle per cooldown.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::delivery::{sha256_file, Collector, S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};
use common::*;
use serde_json::Value;

/// Trace window of the recorded services: long enough that a death lands
/// well inside one.
const WINDOW: &str = "2s";
const WINDOW_SECS: f64 = 2.0;

/// Busy: about 1.5 MB/s of trace from four goroutine pairs; idle: a few KB/s.
const BUSY: &[&str] = &["-pairs", "4", "-rate", "12000"];
const IDLE: &[&str] = &[];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Death {
    Kill,
    Panic,
    Fatal,
    Exit,
}

impl Death {
    fn name(self) -> &'static str {
        match self {
            Death::Kill => "sigkill",
            Death::Panic => "panic",
            Death::Fatal => "fatal",
            Death::Exit => "exit",
        }
    }
}

/// CLOCK_MONOTONIC in ns: Go's `nanotime`, which its trace timestamps are
/// on Linux, so this compares with what Go's parser says of a trace.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Makes `svc` die as asked; returns the moment of death in its clock.
fn die(svc: &mut GoService, how: Death) -> u64 {
    if how == Death::Kill {
        let at = monotonic_ns();
        svc.proc.kill();
        return at;
    }
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/crash?how={}", svc.url, how.name()))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("POST /crash?how={}: {e}", how.name()));
    let at = answer
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("/crash answered {answer:?}"));
    let status = svc.proc.wait_exit(Duration::from_secs(10));
    let want = if how == Death::Exit { 3 } else { 2 };
    assert_eq!(status.code(), Some(want), "{} exits {want}", how.name());
    at
}

/// How long ago the target's last window ended, i.e. how far into the
/// window now being recorded the agent is.
fn into_window(agent: &Agent, target: &str) -> Option<Duration> {
    let t = agent.target(target);
    let at = humantime::parse_rfc3339(t["last_window_at"].as_str()?).ok()?;
    SystemTime::now().duration_since(at).ok()
}

/// Waits until the agent is between `from` and `to` into a window.
fn wait_into_window(agent: &Agent, target: &str, from: f64, to: f64) {
    wait_for(
        &format!("{from}-{to} s into a window of {target}"),
        Duration::from_secs(30),
        || into_window(agent, target).filter(|d| (from..to).contains(&d.as_secs_f64())),
    );
}

/// The crash bundles the agent has made, as listed by the API.
fn crash_bundles(agent: &Agent) -> Vec<Value> {
    let (_, v) = agent.get("/v1/snapshots");
    v["snapshots"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|s| s["trigger"]["kind"] == "crash" || s["trigger_kind"] == "crash")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn wait_crash_bundle(agent: &Agent) -> PathBuf {
    wait_for("a crash bundle", Duration::from_secs(30), || {
        crash_bundles(agent)
            .into_iter()
            .find(|s| s["phase"] == "complete")
            .and_then(|s| s["path"].as_str().map(PathBuf::from))
    })
}

/// Does `seen` end with the target's port closed (refused, or reset while
/// the dying process closed it)?
fn port_closed(seen: &str) -> bool {
    seen.ends_with("then connection refused")
        || seen.ends_with("reset while connecting (its port was closing)")
}

fn windows(m: &Value) -> &Vec<Value> {
    m["windows"].as_array().expect("windows")
}

/// What a bundle says of the minute before the death, measured with Go's
/// parser against the moment of death.
struct Measured {
    /// Death minus the last event Go's parser reads in the bundle.
    blind: f64,
    /// Death minus the last event of the tails (read by the agent's walk of
    /// the batch framing; Go's parser cannot read an unfinished generation).
    tail_blind: Option<f64>,
    /// Trace bytes per second of the target while it lived.
    rate: f64,
}

fn measure(dir: &Path, m: &Value, death_ns: u64) -> Measured {
    let files: Vec<PathBuf> = windows(m)
        .iter()
        .map(|w| dir.join(w["file"].as_str().expect("file")))
        .collect();
    let last_ns = tracecheck(&files)
        .iter()
        .filter(|c| c.ok && c.events > 0)
        .map(|c| c.last_ns)
        .max()
        .expect("an event in the bundle");
    let tail_end = windows(m)
        .iter()
        .filter_map(|w| w["tail"]["trace_end_ns"].as_u64())
        .max();
    let secs = |ns: u64| (death_ns as f64 - ns as f64) / 1e9;
    let whole: Vec<&Value> = windows(m).iter().filter(|w| w["complete"] == true).collect();
    let bytes: u64 = whole.iter().filter_map(|w| w["bytes"].as_u64()).sum();
    let span: u64 = whole
        .iter()
        .map(|w| w["trace_end_ns"].as_u64().unwrap_or(0) - w["trace_start_ns"].as_u64().unwrap_or(0))
        .sum();
    Measured {
        blind: secs(last_ns),
        tail_blind: tail_end.map(secs),
        rate: bytes as f64 / (span.max(1) as f64 / 1e9),
    }
}

fn runs() -> usize {
    std::env::var("CRASH_TEST_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// How far into a window (s) the service dies: `CRASH_TEST_AT=0.3-0.7`,
/// else 1.2-1.6, past the window's first generation (~1 s in).
fn death_offset() -> (f64, f64) {
    std::env::var("CRASH_TEST_AT")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((1.2, 1.6))
}

/// One death of one service, recorded by its own agent; returns the bundle.
fn death_case(how: Death, load: &[&str], sinks: &str, env: &[(&str, &str)]) -> (Agent, PathBuf, Value) {
    let busy = load == BUSY;
    let mut svc = GoService::start("fixture", load);
    // post_trigger is set, and a crash bundle must not wait for it.
    let agent = Agent::start_with_env(
        &agent_toml(
            "3s",
            &format!(
                "[crash]\ncooldown = \"1h\"\n{sinks}\n{}",
                target_toml("svc", &svc.url, WINDOW, "60s", "")
            ),
        ),
        env,
    );
    wait_for("two windows in the ring", Duration::from_secs(30), || {
        (agent.windows_kept("svc") >= 2).then_some(())
    });
    let (from, to) = death_offset();
    wait_into_window(&agent, "svc", from, to);
    let death_ns = die(&mut svc, how);
    let dir = wait_crash_bundle(&agent);
    let m = assert_bundle_valid(&dir);

    assert_eq!(m["trigger"]["kind"], "crash", "{m}");
    let ending = &m["ending"];
    assert_eq!(ending["how"], "crash", "{m}");
    let seen = ending["seen"].as_str().expect("seen");
    assert!(port_closed(seen), "{}: {seen}", how.name());
    assert_eq!(m["post_trigger_seconds"], 0.0, "written at once: {m}");
    assert_eq!(m["trigger"]["details"]["then"], "refused");
    let last = windows(&m).last().expect("a window");
    // Unless the target died before sending any byte of its last window
    // (an idle one flushes its first bytes about 1 s in), that window was
    // cut and is the bundle's last.
    if !seen.contains("before any trace byte") {
        assert_eq!(last["complete"], false, "the last window was cut: {last}");
        assert_eq!(last["truncation"], "disconnected");
    }
    // Nothing after the death: every window was received before it was seen.
    let at = ending["at"].as_str().expect("at");
    assert!(windows(&m).iter().all(|w| w["received_at"].as_str() <= Some(at)));
    if busy && how == Death::Kill {
        assert!(
            last["tail"]["bytes"].as_u64() > Some(0),
            "a busy target killed mid-window leaves a tail: {last}"
        );
    }

    let got = measure(&dir, &m, death_ns);
    println!(
        "BLIND-SPOT death={:<7} load={:<4} rate={:>7.1} KB/s  blind_spot={:.3}s  with_tail={}  manifest_estimate={}s  windows={}  seen={seen:?}",
        how.name(),
        if busy { "busy" } else { "idle" },
        got.rate / 1e3,
        got.blind,
        got.tail_blind.map_or("-".into(), |t| format!("{t:.3}s")),
        ending["blind_spot_seconds"],
        windows(&m).len(),
    );
    if busy {
        assert!(
            got.rate >= 1e6,
            "busy means >= 1 MB/s of trace, got {:.0} B/s",
            got.rate
        );
    } else {
        assert!(got.rate < 100e3, "idle means a few KB/s, got {:.0} B/s", got.rate);
    }
    // Never more than the window in flight plus the gap before it.
    assert!(
        got.blind > 0.0 && got.blind < WINDOW_SECS + 0.5,
        "blind spot {:.3}s",
        got.blind
    );
    if let Some(t) = got.tail_blind {
        assert!(
            t <= got.blind && t > -0.01,
            "the tail reaches nearer: {t} vs {}",
            got.blind
        );
    }
    // The agent's own estimate (its clock, the trace's spans) runs to when
    // it saw the cut: at or after the death, later by however long the
    // process took to end (a panic's runtime first flushes the trace).
    let estimate = ending["blind_spot_seconds"].as_f64().expect("estimate");
    assert!(
        estimate > got.blind - 0.1 && estimate < got.blind + 1.0,
        "manifest says {estimate}, Go's parser {:.3}",
        got.blind
    );
    (agent, dir, m)
}

fn deaths(how: Death) {
    for _ in 0..runs() {
        death_case(how, BUSY, "", &[]);
        death_case(how, IDLE, "", &[]);
    }
}

#[test]
fn an_unrecovered_panic_leaves_a_crash_bundle_ending_at_the_death() {
    deaths(Death::Panic);
}

#[test]
fn a_fatal_runtime_error_leaves_a_crash_bundle_ending_at_the_death() {
    deaths(Death::Fatal);
}

#[test]
fn os_exit_leaves_a_crash_bundle_ending_at_the_death() {
    deaths(Death::Exit);
}

#[test]
fn sigkill_leaves_a_crash_bundle_ending_at_the_death_which_every_sink_delivers_with_its_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s3 = S3Server::start(&tmp.path().join("s3"), 0, "traces");
    let collector = Collector::start("collector-token", 0);
    let token = tmp.path().join("collector.token");
    std::fs::write(&token, "collector-token").expect("token");
    let copies = tmp.path().join("copies");
    let sinks = format!(
        "[[sinks]]\nkind = \"dir\"\nname = \"copy\"\npath = \"{}\"\n\
         [[sinks]]\nkind = \"s3\"\nname = \"s3\"\nbucket = \"traces\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n\
         [[sinks]]\nkind = \"http\"\nname = \"collector\"\nurl = \"{}\"\ntoken_file = \"{}\"\n",
        copies.display(),
        s3.endpoint,
        collector.url,
        token.display()
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ];
    let (agent, dir, m) = death_case(Death::Kill, BUSY, &sinks, &env);
    let id = m["id"].as_str().expect("id").to_string();
    let delivered = |sink: &str| {
        let (_, v) = agent.get(&format!("/v1/snapshots/{id}"));
        (v["delivery"][sink]["state"] == "delivered").then_some(())
    };
    for sink in ["copy", "s3", "collector"] {
        wait_for(&format!("delivery to {sink}"), Duration::from_secs(60), || {
            delivered(sink)
        });
    }
    let tail = windows(&m)
        .last()
        .and_then(|w| w["tail"]["file"].as_str())
        .expect("a tail")
        .to_string();
    // Every file the manifest lists, the tail included, byte for byte.
    let find = |root: &Path| {
        walk(root)
            .into_iter()
            .find(|p| p.ends_with(format!("{id}/manifest.json")))
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| panic!("{id} not under {}", root.display()))
    };
    for remote in [find(&copies), find(&s3.root)] {
        for e in std::fs::read_dir(&dir).expect("bundle").flatten() {
            let there = remote.join(e.file_name());
            assert_eq!(sha256_file(&e.path()), sha256_file(&there), "{}", there.display());
        }
        assert_bundle_valid(&remote);
    }
    let got = collector.bundles();
    let received = got.iter().find(|b| b.id == id).expect("the collector has it");
    assert_eq!(
        received.windows.get(&tail).map(|b| b.len() as u64),
        std::fs::metadata(dir.join(&tail)).ok().map(|m| m.len()),
        "the collector received the tail"
    );
    assert!(collector.errors().is_empty(), "{:?}", collector.errors());
    for _ in 1..runs() {
        death_case(Death::Kill, BUSY, "", &[]);
    }
    for _ in 0..runs() {
        death_case(Death::Kill, IDLE, "", &[]);
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn target_metric(agent: &Agent, name: &str, labels: &[(&str, &str)]) -> f64 {
    agent.metric(name, labels).unwrap_or(0.0)
}

#[test]
fn a_graceful_stop_leaves_no_crash_bundle_and_a_grace_shorter_than_the_window_does() {
    for (grace, crash) in [("5s", false), ("200ms", true)] {
        let mut svc = GoService::start(
            "fixture",
            &["-pairs", "1", "-rate", "500", "-shutdown-grace", grace],
        );
        let agent = Agent::start(&agent_toml(
            "0s",
            &format!(
                "[crash]\ncooldown = \"1h\"\n{}",
                target_toml("svc", &svc.url, WINDOW, "60s", "")
            ),
        ));
        wait_for("two windows", Duration::from_secs(30), || {
            (agent.windows_kept("svc") >= 2).then_some(())
        });
        let complete = |a: &Agent| {
            target_metric(
                a,
                "flightrec_windows_total",
                &[("target", "svc"), ("result", "complete")],
            )
        };
        let before = complete(&agent);
        wait_into_window(&agent, "svc", 0.4, 0.8);
        svc.proc.signal("TERM");
        let status = svc.proc.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{status}");
        // The agent has since found the port closed, more than once.
        wait_for("refused connections", Duration::from_secs(20), || {
            (target_metric(
                &agent,
                "flightrec_window_errors_total",
                &[("target", "svc"), ("reason", "connect")],
            ) >= 2.0)
                .then_some(())
        });
        if crash {
            // The documented false alarm: the service cut the window in
            // flight on its way out, which looks exactly like a death.
            let dir = wait_crash_bundle(&agent);
            let m = assert_bundle_valid(&dir);
            assert!(m["ending"]["seen"].as_str().is_some_and(port_closed));
            println!(
                "grace {grace} < window {WINDOW}: crash bundle, as the README warns: {}",
                m["ending"]["seen"]
            );
        } else {
            assert!(
                complete(&agent) > before,
                "the window in flight was allowed to finish"
            );
            assert!(crash_bundles(&agent).is_empty(), "{:?}", crash_bundles(&agent));
            assert_eq!(
                target_metric(&agent, "flightrec_crashes_total", &[("target", "svc")]),
                0.0
            );
            assert_eq!(
                target_metric(&agent, "flightrec_stream_cuts_total", &[("target", "svc")]),
                0.0
            );
        }
    }
}

#[test]
fn a_crash_looping_service_makes_one_bundle_per_cooldown() {
    let port = common::delivery::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut svc = GoService::start("fixture", &["-addr", &addr, "-pairs", "1", "-rate", "100"]);
    let agent = Agent::start(&agent_toml(
        "0s",
        &format!(
            "[crash]\ncooldown = \"1h\"\n{}",
            target_toml("loop", &svc.url, "1s", "30s", "")
        ),
    ));
    let crashes = |a: &Agent| target_metric(a, "flightrec_crashes_total", &[("target", "loop")]);
    const DEATHS: usize = 4;
    for i in 0..DEATHS {
        let kept = agent.windows_kept("loop");
        wait_for("two windows from this process", Duration::from_secs(30), || {
            (agent.windows_kept("loop") >= kept + 2).then_some(())
        });
        // Before the first bytes of an idle window (~1 s): the connection
        // is lost before any byte.
        wait_into_window(&agent, "loop", 0.3, 0.7);
        svc.proc.kill();
        // Restarted at once, as a supervisor would: the agent may find it
        // already there (a new process) or the port closed.
        svc = GoService::start("fixture", &["-addr", &addr, "-pairs", "1", "-rate", "100"]);
        wait_for(&format!("death {} seen", i + 1), Duration::from_secs(30), || {
            (crashes(&agent) >= (i + 1) as f64).then_some(())
        });
    }
    assert_eq!(crashes(&agent), DEATHS as f64);
    let bundles = wait_for("the one crash bundle", Duration::from_secs(30), || {
        let b = crash_bundles(&agent);
        b.iter().all(|s| s["phase"] == "complete").then_some(b)
    });
    assert_eq!(bundles.len(), 1, "one bundle per cooldown: {bundles:?}");
    assert_eq!(
        target_metric(
            &agent,
            "flightrec_triggers_suppressed_total",
            &[("kind", "crash"), ("target", "loop"), ("reason", "cooldown")]
        ),
        (DEATHS - 1) as f64
    );
    let split = |then: &str| {
        target_metric(
            &agent,
            "flightrec_crashes_total",
            &[("target", "loop"), ("then", then)],
        )
    };
    println!(
        "crash loop: {DEATHS} deaths, then refused {}, then new process {}",
        split("refused"),
        split("new_process")
    );
    let dir = bundles[0]["path"].as_str().map(PathBuf::from).expect("path");
    let m = assert_bundle_valid(&dir);
    // One of the deaths of this 1 s-window service, whichever came first.
    let seen = m["ending"]["seen"].as_str().expect("seen");
    assert!(seen.contains("into a 1 s window"), "{seen}");
}

#[test]
fn a_departed_target_keeps_its_ring_can_still_be_snapshotted_and_comes_back() {
    let a = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let b = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let both = format!(
        "{}{}",
        target_toml("a", &a.url, "1s", "60s", "labels = { service = \"a\" }"),
        target_toml("b", &b.url, "1s", "8s", "labels = { service = \"b\" }")
    );
    let only_a = target_toml("a", &a.url, "1s", "60s", "labels = { service = \"a\" }");
    let agent = Agent::start(&agent_toml("2s", &both));
    let reload = |targets: &str| {
        let text = agent_toml("2s", targets).replace("{dir}", &agent.path().display().to_string());
        std::fs::write(agent.path().join("flightrec.toml"), text).expect("rewrite config");
        agent.proc.signal("HUP");
    };
    let applied = |n: f64| {
        wait_for("the reload", Duration::from_secs(10), || {
            (target_metric(&agent, "flightrec_config_reloads_total", &[("result", "applied")]) >= n)
                .then_some(())
        })
    };
    wait_for("windows of b", Duration::from_secs(20), || {
        (agent.windows_kept("b") >= 2).then_some(())
    });

    reload(&only_a);
    applied(1.0);
    let t = agent.target("b");
    assert_eq!(t["state"], "departed", "{t}");
    assert!(t["departed_at"].is_string(), "{t}");
    assert!(t["ring"]["windows"].as_u64() >= Some(2), "{t}");
    let oldest = t["ring"]["oldest"].clone();
    assert_eq!(
        target_metric(&agent, "flightrec_target_departed", &[("target", "b")]),
        1.0
    );

    // The API: written at once, no post_trigger wait (nothing will come).
    let dir = agent.snapshot("b", "b left; what did it do before?");
    // By now b's collector has filed the window it was recording.
    let kept = agent.windows_kept("b");
    let m = assert_bundle_valid(&dir);
    assert_eq!(m["target"]["name"], "b");
    assert_eq!(m["post_trigger_seconds"], 0.0);
    assert!(windows(&m).len() >= 2);
    // The CLI.
    let out = std::process::Command::new(AGENT)
        .args([
            "snapshot",
            "--target",
            "b",
            "--reason",
            "from the CLI",
            "--server",
            &agent.api,
        ])
        .output()
        .expect("run flightrec snapshot");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A webhook: an alert about b still selects it.
    let alert = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "flightrec", "groupKey": "{}:{alertname=\"BLeft\"}",
        "groupLabels": {"alertname": "BLeft"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "BLeft", "service": "b"},
                    "annotations": {}, "startsAt": "2026-12-04T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": "b1"}]
    });
    let (status, v) = agent.post("/v1/webhooks/alertmanager", &alert.to_string(), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["snapshots"][0]["target"], "b", "{v}");
    assert_eq!(agent.windows_kept("b"), kept, "a departed target records nothing");

    // Back under the same name: the same ring, recording again.
    reload(&both);
    applied(2.0);
    wait_for("b recording again", Duration::from_secs(20), || {
        let t = agent.target("b");
        (t["state"] == "recording" && agent.windows_kept("b") > kept).then_some(())
    });
    assert_eq!(
        agent.target("b")["ring"]["oldest"],
        oldest,
        "its old windows are still there"
    );
    assert!(agent
        .metric("flightrec_target_departed", &[("target", "b")])
        .is_none());

    // Gone for longer than its max_age (8s): forgotten, its ring freed.
    reload(&only_a);
    applied(3.0);
    wait_for("b to expire", Duration::from_secs(30), || {
        let (_, v) = agent.get("/v1/targets");
        let names: Vec<&str> = v["targets"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        (!names.contains(&"b")).then_some(())
    });
    let (status, _) = agent.post("/v1/snapshots", r#"{"target":"b"}"#, None);
    assert_eq!(status, 404, "an expired target is unknown");
    let (_, v) = agent.get("/v1/targets");
    assert!(v["ring"]["bytes"].as_u64() <= v["ring"]["max_bytes"].as_u64());
}
