//! The Alertmanager webhook: end to end with Debian's Prometheus and
//! Alertmanager scraping and alerting on a real Go service, and the recorded
//! notifications of that pipeline replayed for dedupe, resolved alerts,
//! cooldowns, auth and bad requests.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::alerting::*;
use common::*;
use serde_json::{json, Value};

fn agent_config(targets: &str, rest: &str) -> String {
    agent_toml("2s", &format!("{targets}\n{rest}"))
}

fn target(name: &str, url: &str, labels: &str) -> String {
    target_toml(name, url, "1s", "20s", &format!("labels = {{ {labels} }}"))
}

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// The instance label of the recorded payloads (the fixture's address
/// when they were recorded).
const RECORDED_INSTANCE: &str = "127.0.0.1:46611";

/// The recorded firing notification with one alert changed.
fn firing_variant(alertname: &str, labels: &[(&str, &str)], fingerprint: &str) -> String {
    let mut v = webhook_json("alertmanager-0.25-firing.json");
    let a = &mut v["alerts"][0];
    a["labels"]["alertname"] = json!(alertname);
    for (k, val) in labels {
        a["labels"][*k] = json!(val);
    }
    a["fingerprint"] = json!(fingerprint);
    a["startsAt"] = json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
    v.to_string()
}

const RULES: &str = r#"
groups:
  - name: fixture
    interval: 1s
    rules:
      - alert: FixtureSlow
        expr: histogram_quantile(0.9, sum by (le, instance, job) (rate(fixture_request_duration_seconds_bucket{handler="slow"}[5s]))) > 0.2
        labels:
          severity: page
        annotations:
          summary: "/slow p90 on {{ $labels.instance }} is {{ $value }}s"
"#;

#[test]
fn a_prometheus_alert_on_fixture_latency_reaches_flightrec_through_alertmanager_and_snapshots_only_that_target(
) {
    let begun = Instant::now();
    let slow = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let calm = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let token = "e2e-token";
    let agent = Agent::start_with_env(
        &agent_config(
            &[
                target(
                    "slow",
                    &slow.url,
                    &format!("instance = \"{}\", job = \"fixture\"", host_port(&slow.url)),
                ),
                target(
                    "calm",
                    &calm.url,
                    &format!("instance = \"{}\", job = \"fixture\"", host_port(&calm.url)),
                ),
            ]
            .concat(),
            "",
        ),
        &[("FLIGHTREC_SERVER__TOKEN", token)],
    );
    let am = Service::alertmanager(&format!(
        r#"
route:
  receiver: flightrec
  group_by: ['alertname', 'instance']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: flightrec
    webhook_configs:
      - url: {}/v1/webhooks/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {token}
"#,
        agent.api
    ));
    let prom = Service::prometheus(
        &format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['{}']
scrape_configs:
  - job_name: fixture
    static_configs:
      - targets: ['{}', '{}']
"#,
            am.host_port(),
            host_port(&slow.url),
            host_port(&calm.url)
        ),
        RULES,
    );
    wait_for("windows from both targets", Duration::from_secs(30), || {
        (agent.windows_kept("slow") >= 2 && agent.windows_kept("calm") >= 2).then_some(())
    });
    let ready = begun.elapsed();

    set_latency(&slow.url, "300ms");
    let spike = SystemTime::now();
    let load = Load::start(
        vec![format!("{}/slow", slow.url), format!("{}/slow", calm.url)],
        Duration::from_secs(120),
    );
    let (dir, _) = wait_for(
        "a bundle from Alertmanager's webhook",
        Duration::from_secs(60),
        || bundles_of(&agent, "alertmanager").into_iter().next(),
    );
    assert!(load.stop() > 0);
    let m = assert_bundle_valid(&dir);
    assert_eq!(m["target"]["name"], "slow");
    let t = &m["trigger"];
    let fired_at = parse_time(t["fired_at"].as_str().expect("fired_at"));
    let d = &t["details"];
    assert_eq!(d["labels"]["alertname"], "FixtureSlow");
    assert_eq!(d["labels"]["instance"], host_port(&slow.url));
    assert_eq!(d["labels"]["severity"], "page");
    assert_eq!(d["fingerprint"].as_str().map(str::len), Some(16), "{d}");
    assert!(
        d["group_key"].as_str().is_some_and(|g| g.contains("FixtureSlow")),
        "{d}"
    );
    assert_eq!(d["receiver"], "flightrec");
    assert!(
        t["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("alertmanager: FixtureSlow firing: /slow p90 on")),
        "{t}"
    );
    assert!(covered_by_complete_window(&m, fired_at), "{:?}", window_spans(&m));
    assert_eq!(m["post_trigger_complete"], true);

    // With the traffic gone the rule has no data: Prometheus resolves the
    // alert and Alertmanager says so. That makes no bundle.
    wait_for(
        "Alertmanager's resolved notification",
        Duration::from_secs(60),
        || {
            agent.metric(
                "flightrec_webhook_alerts_total",
                &[("source", "alertmanager"), ("status", "resolved")],
            )
        },
    );
    let all = bundles(&agent);
    assert_eq!(all.len(), 1, "one bundle, for the slow target only: {all:?}");
    assert_eq!(
        agent.metric("flightrec_triggers_fired_total", &[("kind", "alertmanager")]),
        Some(1.0)
    );
    assert_eq!(
        agent.metric("flightrec_webhook_rejected_total", &[]),
        None,
        "Alertmanager's bearer token was accepted"
    );
    let alert_lines = am.logs();
    assert!(!alert_lines.contains("level=error"), "{alert_lines}");
    drop(prom);
    eprintln!(
        "e2e timings: processes up and recording {:.1}s; latency raised -> bundle fired {:.1}s; whole test {:.1}s",
        ready.as_secs_f64(),
        fired_at.duration_since(spike).unwrap_or_default().as_secs_f64(),
        begun.elapsed().as_secs_f64()
    );
}

#[test]
fn recorded_notifications_snapshot_once_while_resends_resolved_and_unmatched_alerts_make_none() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let agent = Agent::start_with_env(
        &agent_config(
            &target(
                "checkout",
                &svc.url,
                &format!("instance = \"{RECORDED_INSTANCE}\", job = \"fixture\""),
            ),
            "[trigger_limits]\ncooldown = \"1h\"\n",
        ),
        &[("FLIGHTREC_SERVER__TOKEN", "tok")],
    );
    wait_for("windows in the ring", Duration::from_secs(30), || {
        (agent.windows_kept("checkout") >= 2).then_some(())
    });
    let url = format!("{}/v1/webhooks/alertmanager", agent.api);
    let auth = [("authorization", "Bearer tok")];
    let firing = webhook_payload("alertmanager-0.25-firing.json");

    let first = post_raw(&url, firing.clone(), &auth);
    assert_eq!(first.status, 200, "{}", first.json);
    let snaps = first.json["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 1, "{}", first.json);
    assert_eq!(snaps[0]["target"], "checkout");
    let id = snaps[0]["id"].as_str().expect("id").to_string();
    // Answered before the bundle exists: it is still recording post_trigger.
    assert!(first.elapsed < Duration::from_secs(1), "{:?}", first.elapsed);
    assert_eq!(agent.get(&format!("/v1/snapshots/{id}")).1["phase"], "recording");

    // The second Alertmanager of an HA pair, or a resend: nothing new.
    let again = post_raw(&url, firing, &auth);
    assert_eq!(again.status, 200);
    assert_eq!(again.json["duplicates"], 1, "{}", again.json);
    assert_eq!(again.json["snapshots"], json!([]));

    let resolved = post_raw(&url, webhook_payload("alertmanager-0.25-resolved.json"), &auth);
    assert_eq!(resolved.status, 200);
    assert_eq!(resolved.json["resolved"], 1);
    assert_eq!(resolved.json["firing"], 0);
    assert_eq!(resolved.json["snapshots"], json!([]));

    // Another alert on the same target inside its cooldown.
    let other = post_raw(
        &url,
        firing_variant("FixtureErrors", &[], "0123456789abcdef"),
        &auth,
    );
    assert_eq!(other.status, 200);
    assert_eq!(
        other.json["suppressed"],
        json!([{"target": "checkout", "reason": "cooldown"}])
    );

    // An alert whose labels select no target: answered, logged, counted.
    let stray = post_raw(
        &url,
        firing_variant(
            "FixtureSlow",
            &[("instance", "10.1.2.3:8080")],
            "fedcba9876543210",
        ),
        &auth,
    );
    assert_eq!(stray.status, 200);
    assert_eq!(stray.json["unmatched"], 1);
    assert!(agent.logs().iter().any(|l| l["message"]
        .as_str()
        .is_some_and(|m| m.contains("selects no target"))
        && l["alert"] == "FixtureSlow"));

    let dir = agent.wait_snapshot(&id, Duration::from_secs(30));
    let m = assert_bundle_valid(&dir);
    let t = &m["trigger"];
    assert_eq!(t["kind"], "alertmanager");
    assert_eq!(t["details"]["fingerprint"], "a86b9db496aef75e");
    assert_eq!(t["details"]["labels"]["instance"], RECORDED_INSTANCE);
    assert_eq!(
        t["details"]["group_key"],
        "{}:{alertname=\"FixtureSlow\", instance=\"127.0.0.1:46611\"}"
    );
    assert_eq!(t["details"]["alerts"][0]["starts_at"], "2026-11-29T04:17:01.662Z");
    let fired_at = parse_time(t["fired_at"].as_str().expect("fired_at"));
    assert!(covered_by_complete_window(&m, fired_at), "{:?}", window_spans(&m));
    assert_eq!(bundles(&agent).len(), 1);

    let count = |name: &str, labels: &[(&str, &str)]| agent.metric(name, labels).unwrap_or(0.0);
    let suppressed = "flightrec_triggers_suppressed_total";
    assert_eq!(
        count(suppressed, &[("reason", "duplicate"), ("target", "checkout")]),
        1.0
    );
    assert_eq!(
        count(suppressed, &[("reason", "cooldown"), ("target", "checkout")]),
        1.0
    );
    assert_eq!(
        count(
            "flightrec_webhook_unmatched_alerts_total",
            &[("source", "alertmanager")]
        ),
        1.0
    );
    assert_eq!(
        count("flightrec_webhook_alerts_total", &[("status", "firing")]),
        4.0
    );
    assert_eq!(
        count("flightrec_webhook_alerts_total", &[("status", "resolved")]),
        1.0
    );
}

#[test]
fn webhook_requests_without_the_right_credentials_are_401_with_a_reason_and_no_secret() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw_file = secret_file(secrets.path(), "am-password", "am-pa55word\n");
    let agent = Agent::start_with_env(
        &agent_config(
            &target(
                "checkout",
                &svc.url,
                &format!("instance = \"{RECORDED_INSTANCE}\""),
            ),
            &format!(
                "[webhooks]\nbasic_auth_user = \"alertmanager\"\nbasic_auth_password_file = \"{}\"\n",
                pw_file.display()
            ),
        ),
        &[("FLIGHTREC_SERVER__TOKEN", "bearer-s3cret")],
    );
    wait_for("windows in the ring", Duration::from_secs(30), || {
        (agent.windows_kept("checkout") >= 1).then_some(())
    });
    let url = format!("{}/v1/webhooks/alertmanager", agent.api);
    let body = webhook_payload("alertmanager-0.25-firing.json");
    let basic = |user: &str, pw: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    let refused: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![],
            "needs Authorization: Bearer <token> (server.token_file) or basic auth",
        ),
        (
            vec![("authorization", "Bearer guess".into())],
            "bearer token does not match",
        ),
        (
            vec![("authorization", basic("alertmanager", "guess"))],
            "basic auth user or password does not match",
        ),
        (
            vec![("authorization", basic("someone", "am-pa55word"))],
            "basic auth user or password does not match",
        ),
        (
            vec![("authorization", "Basic %%%".into())],
            "is not base64 of user:password",
        ),
    ];
    for (headers, reason) in &refused {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = post_raw(&url, body.clone(), &h);
        assert_eq!(a.status, 401, "{headers:?}: {}", a.json);
        let error = a.json["error"].as_str().unwrap_or("");
        assert!(error.contains(reason), "{headers:?}: {error}");
        assert_eq!(
            a.headers.get("www-authenticate").and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"flightrec\"")
        );
    }
    assert_eq!(bundles(&agent).len(), 0);
    let by_bearer = post_raw(&url, body.clone(), &[("authorization", "Bearer bearer-s3cret")]);
    assert_eq!(by_bearer.status, 200, "{}", by_bearer.json);
    let pw = basic("alertmanager", "am-pa55word");
    let by_basic = post_raw(
        &url,
        firing_variant("Other", &[], "00000000000000aa"),
        &[("authorization", pw.as_str())],
    );
    assert_eq!(by_basic.status, 200, "{}", by_basic.json);
    assert_eq!(
        agent.metric(
            "flightrec_webhook_rejected_total",
            &[("source", "alertmanager"), ("reason", "unauthorized")]
        ),
        Some(refused.len() as f64)
    );
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(
        !log.contains("bearer-s3cret") && !log.contains("am-pa55word"),
        "secrets never reach the log"
    );
}

#[test]
fn malformed_and_oversized_bodies_are_refused_with_a_clear_status_and_reason() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let agent = Agent::start(
        &agent_config(&target("checkout", &svc.url, "job = \"fixture\""), "").replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_body = \"16KiB\"",
        ),
    );
    let am = format!("{}/v1/webhooks/alertmanager", agent.api);
    let grafana = format!("{}/v1/webhooks/grafana", agent.api);
    let pending = json!({"version": "4", "alerts": [{"status": "pending", "labels": {}}]}).to_string();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            &am,
            "{".into(),
            400,
            "invalid alertmanager payload: EOF while parsing",
        ),
        (
            &am,
            "[]".into(),
            400,
            "invalid alertmanager payload: expected a JSON object",
        ),
        (&am, "".into(), 400, "the body is empty"),
        (
            &am,
            "{\"version\":\"3\",\"alerts\":[]}".into(),
            400,
            "version \"3\" is not supported",
        ),
        (&am, "{\"version\":\"4\"}".into(), 400, "missing field `alerts`"),
        (
            &am,
            pending,
            400,
            "unknown variant `pending`, expected `firing` or `resolved`",
        ),
        (
            &grafana,
            "not json".into(),
            400,
            "invalid grafana payload: expected a JSON object",
        ),
        (
            &grafana,
            "{not json".into(),
            400,
            "invalid grafana payload: key must be a string at line 1 column 2",
        ),
        (&am, " ".repeat(32 << 10), 413, "larger than server.max_body"),
        (&grafana, "x".repeat(17 << 10), 413, "larger than server.max_body"),
    ];
    for (url, body, status, reason) in &cases {
        let a = post_raw(url, body.clone(), &[]);
        assert_eq!(a.status, *status, "{url} {:.40}: {}", body, a.json);
        let error = a.json["error"].as_str().unwrap_or("");
        assert!(error.contains(reason), "{url} {:.40}: {error}", body);
    }
    // The API's own endpoint answers an oversized body in JSON too.
    let big = format!("{{\"reason\":\"{}\"}}", "x".repeat(32 << 10));
    let a = post_raw(&format!("{}/v1/snapshots", agent.api), big, &[]);
    assert_eq!(a.status, 413);
    assert!(a.json["error"]
        .as_str()
        .is_some_and(|e| e.contains("server.max_body")));

    let rejected = |reason: &str| {
        agent
            .metric("flightrec_webhook_rejected_total", &[("reason", reason)])
            .unwrap_or(0.0)
    };
    assert_eq!(rejected("malformed"), 8.0);
    assert_eq!(rejected("too_large"), 2.0);
    assert_eq!(bundles(&agent).len(), 0);
}

#[test]
fn the_global_rate_limit_caps_automatic_bundles_across_targets_but_not_a_persons() {
    let a = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let b = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let agent = Agent::start(&agent_config(
        &[
            target("a", &a.url, "job = \"a\""),
            target("b", &b.url, "job = \"b\""),
        ]
        .concat(),
        "[trigger_limits]\nmax_fires = 1\nper = \"1h\"\ncooldown = \"1s\"\n",
    ));
    wait_for("windows from both targets", Duration::from_secs(30), || {
        (agent.windows_kept("a") >= 1 && agent.windows_kept("b") >= 1).then_some(())
    });
    let url = format!("{}/v1/webhooks/alertmanager", agent.api);
    let to_a = post_raw(
        &url,
        firing_variant("A", &[("flightrec_target", "a")], "000000000000000a"),
        &[],
    );
    assert_eq!(to_a.json["snapshots"][0]["target"], "a", "{}", to_a.json);
    let to_b = post_raw(
        &url,
        firing_variant("B", &[("flightrec_target", "b")], "000000000000000b"),
        &[],
    );
    assert_eq!(
        to_b.json["suppressed"],
        json!([{"target": "b", "reason": "rate_limit"}]),
        "{}",
        to_b.json
    );
    // A person asking is never rate limited.
    let (status, manual) = agent.post(
        "/v1/snapshots",
        "{\"target\":\"b\",\"reason\":\"looking myself\"}",
        None,
    );
    assert_eq!(status, 202, "{manual}");
    for v in [&to_a.json["snapshots"][0]["id"], &manual["id"]] {
        let id = v.as_str().expect("id");
        assert_bundle_valid(&agent.wait_snapshot(id, Duration::from_secs(30)));
    }
    let kinds: Vec<(Value, Value)> = bundles(&agent)
        .into_iter()
        .map(|(_, m)| (m["target"]["name"].clone(), m["trigger"]["kind"].clone()))
        .collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&(json!("a"), json!("alertmanager"))));
    assert!(kinds.contains(&(json!("b"), json!("manual"))));
    assert_eq!(
        agent.metric(
            "flightrec_triggers_suppressed_total",
            &[("reason", "rate_limit"), ("target", "b")]
        ),
        Some(1.0)
    );
}
