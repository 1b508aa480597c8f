//! Production operations: metrics, logs, readiness, systemd notify, TLS, body limits.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn config(extra: &str, targets: &[(&str, &str)]) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[snapshots]\ndir = \"{{dir}}/data\"\npost_trigger = \"0s\"\n"
    );
    for (name, url) in targets {
        s.push_str(&format!(
            "[[targets]]\nname = \"{name}\"\nurl = \"{url}\"\nwindow = \"1s\"\nmax_age = \"20s\"\n"
        ));
    }
    s
}

fn has_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(text, name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
}

#[test]
fn metrics_expose_every_family_with_real_values_and_pass_promtool() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "2000"]);
    let html = GoService::start("fixture", &["-trace-mode", "html"]);
    let agent = Agent::start(&config("", &[("app", &svc.url), ("broken", &html.url)]));
    wait_for("windows", Duration::from_secs(20), || {
        (agent.windows_kept("app") >= 3).then_some(())
    });
    agent.snapshot("app", "metrics test");
    let text = agent.metrics();

    let app = [("target", "app")];
    assert!(
        has_sample(
            &text,
            "flightrec_windows_total",
            &[("target", "app"), ("result", "complete")]
        ) >= 3.0
    );
    assert!(has_sample(&text, "flightrec_received_bytes_total", &app) > 10_000.0);
    assert!(has_sample(&text, "flightrec_stored_bytes_total", &app) > 1_000.0);
    let stored = has_sample(&text, "flightrec_stored_bytes_total", &app);
    let received = has_sample(&text, "flightrec_received_bytes_total", &app);
    assert!(stored < received, "zstd shrinks traces: {stored} vs {received}");
    assert!(has_sample(&text, "flightrec_ring_bytes", &app) > 0.0);
    assert!(has_sample(&text, "flightrec_ring_windows", &app) >= 3.0);
    let cov = has_sample(&text, "flightrec_ring_coverage_ratio", &app);
    assert!(cov > 0.9 && cov <= 1.0, "{cov}");
    assert!(has_sample(&text, "flightrec_seconds_since_last_window", &app) < 5.0);
    assert!(
        has_sample(
            &text,
            "flightrec_seconds_since_last_window",
            &[("target", "broken")]
        ) >= 0.0
    );
    assert_eq!(has_sample(&text, "flightrec_window_length_seconds", &app), 1.0);
    assert!(has_sample(&text, "flightrec_window_gap_seconds_count", &app) >= 2.0);
    assert!(has_sample(&text, "flightrec_last_window_timestamp_seconds", &app) > 1.7e9);
    assert!(
        has_sample(
            &text,
            "flightrec_window_errors_total",
            &[("target", "broken"), ("reason", "not_a_trace")]
        ) >= 1.0
    );
    assert_eq!(
        has_sample(
            &text,
            "flightrec_snapshots_total",
            &[("kind", "manual"), ("result", "written")]
        ),
        1.0
    );
    assert!(has_sample(&text, "flightrec_snapshot_write_seconds_count", &[]) >= 1.0);
    assert!(has_sample(&text, "flightrec_ring_global_bytes", &[]) > 0.0);
    assert_eq!(
        has_sample(&text, "flightrec_ring_global_budget_bytes", &[]),
        512.0 * 1024.0 * 1024.0
    );
    assert!(has_sample(&text, "flightrec_process_cpu_seconds_total", &[]) > 0.0);
    assert!(has_sample(&text, "flightrec_process_resident_memory_bytes", &[]) > 1e6);
    assert!(has_sample(&text, "flightrec_process_open_fds", &[]) > 3.0);
    assert!(has_sample(&text, "flightrec_process_start_time_seconds", &[]) > 1.7e9);
    assert_eq!(has_sample(&text, "flightrec_build_info", &[]), 1.0);

    // Prometheus' own linter accepts the exposition (names, units, types).
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write metrics");
            let out = child.wait_with_output().expect("promtool");
            assert!(
                out.status.success(),
                "promtool check metrics:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => panic!("promtool (Debian package prometheus, installed by tests/setup.sh) is missing: {e}"),
    }
}

#[test]
fn json_logs_name_the_target_on_every_line_about_one() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let html = GoService::start("fixture", &["-trace-mode", "html"]);
    let agent = Agent::start(&config("", &[("good", &svc.url), ("bad", &html.url)]));
    wait_for("windows and errors", Duration::from_secs(20), || {
        let errs = agent.metric("flightrec_window_errors_total", &[("target", "bad")])?;
        (agent.windows_kept("good") >= 2 && errs >= 1.0).then_some(())
    });
    agent.snapshot("good", "log test");
    let lines = agent.logs();
    assert!(lines.len() > 5);
    let raw = std::fs::read_to_string(&agent.log).expect("log");
    assert_eq!(
        raw.lines().count(),
        lines.len(),
        "every log line is one JSON object"
    );
    let mut about_targets = 0;
    for l in &lines {
        let msg = l["message"].as_str().unwrap_or_default();
        let in_collector = l["span"]["name"] == "collector";
        let mentions = ["window", "snapshot", "trace", "recording", "backing off"]
            .iter()
            .any(|w| msg.contains(w));
        if in_collector || (mentions && l["level"] != "DEBUG" && !msg.starts_with("flightrec listening")) {
            let t = l["target"].as_str().or(l["span"]["target"].as_str());
            assert!(
                matches!(t, Some("good") | Some("bad")),
                "line about a target without its name: {l}"
            );
            about_targets += 1;
        }
    }
    assert!(about_targets >= 3, "{about_targets}");
    let rejected: Vec<&Value> = lines.iter().filter(|l| l["reason"] == "not_a_trace").collect();
    assert!(!rejected.is_empty());
    assert!(rejected
        .iter()
        .all(|l| l["target"] == "bad" && l["level"] == "WARN"));
}

#[test]
fn readiness_is_independent_of_targets_unless_configured() {
    let svc = GoService::start("fixture", &[]);
    // A port nothing listens on: bind, learn the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);

    let lenient = Agent::start(&config("", &[("up", &svc.url), ("down", &dead_url)]));
    wait_for("a window", Duration::from_secs(20), || {
        (lenient.windows_kept("up") >= 1).then_some(())
    });
    let (s, v) = lenient.get("/readyz");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["targets_not_recording"], serde_json::json!(["down"]));

    // One trace slot per Go process: the next agents get services of their own.
    drop(lenient);
    let strict = Agent::start(&config("ready_requires_targets = true", &[("down", &dead_url)]));
    let (s, v) = strict.get("/readyz");
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["targets_not_recording"], serde_json::json!(["down"]));
    let strict_up = Agent::start(&config("ready_requires_targets = true", &[("up", &svc.url)]));
    wait_for("strict readiness once recording", Duration::from_secs(20), || {
        (strict_up.get("/readyz").0 == 200).then_some(())
    });
    assert_eq!(strict.get("/healthz").0, 200, "alive even when not ready");
}

#[test]
fn systemd_is_told_ready_watchdog_and_stopping() {
    let svc = GoService::start("fixture", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut agent = Agent::start_with_env(
        &config("", &[("t", &svc.url)]),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.iter().filter(|m: &&String| m.contains("WATCHDOG=1")).count() < 3 {
        let n = sock.recv(&mut buf).expect("a notification within 10s");
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(
        got[0].starts_with("READY=1\nSTATUS=recording 1 targets"),
        "{got:?}"
    );
    let status = agent.stop();
    assert!(status.success());
    let mut rest = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).to_string());
        if rest.last().is_some_and(|m| m.starts_with("STOPPING=1")) {
            break;
        }
    }
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1")), "{rest:?}");
}

#[test]
fn an_https_target_with_an_untrusted_certificate_fails_clearly_until_its_ca_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("fixture.pem");
    let cert_arg = cert.display().to_string();
    let svc = GoService::start(
        "fixture",
        &["-tls-selfsigned", &cert_arg, "-pairs", "1", "-rate", "500"],
    );
    assert!(svc.url.starts_with("https://"));

    // A latency trigger probing the same HTTPS service takes the same trust.
    let probe = format!(
        "[[triggers]]\nkind = \"latency\"\ntarget = \"tls\"\nurl = \"{}/healthz\"\ninterval = \"200ms\"\nthreshold = \"10s\"\n",
        svc.url
    );
    let untrusting = Agent::start(&format!("{}{probe}", config("", &[("tls", &svc.url)])));
    let err = wait_for("a certificate error", Duration::from_secs(15), || {
        untrusting.target("tls")["last_error"]["message"]
            .as_str()
            .map(String::from)
    });
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(err.contains("tls.ca_file"), "the error says what to do: {err}");
    assert_eq!(untrusting.windows_kept("tls"), 0);
    wait_for("probe errors too", Duration::from_secs(15), || {
        untrusting.metric("flightrec_trigger_errors_total", &[("target", "tls")])
    });
    drop(untrusting);

    let trusting = Agent::start(&format!(
        "{}{probe}\n[tls]\nca_file = \"{}\"\n",
        config("", &[("tls", &svc.url)]),
        cert.display()
    ));
    wait_for("windows over HTTPS", Duration::from_secs(20), || {
        (trusting.windows_kept("tls") >= 2).then_some(())
    });
    let probes = trusting
        .metric(
            "flightrec_trigger_probe_duration_seconds_count",
            &[("target", "tls")],
        )
        .unwrap_or(0.0);
    assert!(probes >= 2.0, "probes over HTTPS: {probes}");
    assert_eq!(
        trusting.metric("flightrec_trigger_errors_total", &[("target", "tls")]),
        None
    );
    let dir = trusting.snapshot("tls", "over https");
    assert_bundle_valid(&dir);
}

#[test]
fn oversized_and_malformed_bodies_get_a_json_reason() {
    let svc = GoService::start("fixture", &[]);
    let agent = Agent::start(&config("max_body = \"1KiB\"", &[("t", &svc.url)]));
    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(4096));
    let (s, v) = agent.post("/v1/snapshots", &big, None);
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("server.max_body"),
        "{v}"
    );
    let (s, v) = agent.post("/v1/snapshots", "[1,2", None);
    assert_eq!(s, 400);
    assert!(v["error"].as_str().is_some(), "{v}");
}
