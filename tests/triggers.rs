//! Triggers, end to end: latency probes and metric thresholds against real Go
//! services, and the Grafana webhook with its HMAC signature.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::alerting::*;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

fn agent_config(targets: &str, rest: &str) -> String {
    agent_toml("1s", &format!("{targets}\n{rest}"))
}

fn target(name: &str, url: &str, labels: &str) -> String {
    target_toml(name, url, "1s", "20s", &format!("labels = {{ {labels} }}"))
}

fn probes_done(agent: &Agent, trigger: &str) -> f64 {
    agent
        .metric(
            "flightrec_trigger_probe_duration_seconds_count",
            &[("trigger", trigger)],
        )
        .unwrap_or(0.0)
}

#[test]
fn a_latency_spike_gives_one_bundle_per_cooldown_with_the_spike_inside_a_complete_window() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "200"]);
    let cooldown = Duration::from_secs(6);
    let agent = Agent::start(&agent_config(
        &target("checkout", &svc.url, "service = \"checkout\""),
        &format!(
            r#"
[[triggers]]
kind = "latency"
target = "checkout"
url = "{}/slow"
interval = "100ms"
threshold = "150ms"
consecutive = 3
cooldown = "6s"
"#,
            svc.url
        ),
    ));
    wait_for("three windows in the ring", Duration::from_secs(30), || {
        (agent.windows_kept("checkout") >= 3).then_some(())
    });
    // Calm: fast probes fire nothing.
    wait_for("ten fast probes", Duration::from_secs(10), || {
        (probes_done(&agent, "latency-checkout") >= 10.0).then_some(())
    });
    assert!(bundles(&agent).is_empty());

    let spike_start = SystemTime::now();
    set_latency(&svc.url, "300ms");
    let (_, first) = wait_for("the first latency bundle", Duration::from_secs(30), || {
        bundles_of(&agent, "latency").into_iter().next()
    });
    // The spike goes on past the cooldown: one more bundle, a cooldown later.
    let (_, second) = wait_for(
        "the second bundle, one cooldown later",
        Duration::from_secs(30),
        || bundles_of(&agent, "latency").get(1).cloned(),
    );
    set_latency(&svc.url, "0s");
    let spike_end = SystemTime::now();

    let fired: Vec<SystemTime> = [&first, &second]
        .iter()
        .map(|m| parse_time(m["trigger"]["fired_at"].as_str().expect("fired_at")))
        .collect();
    let apart = fired[1].duration_since(fired[0]).expect("in order");
    assert!(
        apart >= cooldown && apart < cooldown + Duration::from_secs(3),
        "bundles {apart:?} apart with a {cooldown:?} cooldown"
    );

    // Calm again for longer than a cooldown: no third bundle.
    let at_end = probes_done(&agent, "latency-checkout");
    wait_for(
        "a cooldown of calm probes after the spike",
        Duration::from_secs(30),
        || {
            let calm = probes_done(&agent, "latency-checkout") - at_end >= 20.0;
            let past = SystemTime::now() >= fired[1] + cooldown + Duration::from_secs(1);
            (calm && past).then_some(())
        },
    );
    let all = bundles_of(&agent, "latency");
    assert_eq!(all.len(), 2, "exactly one bundle per cooldown");
    assert_eq!(
        agent.metric(
            "flightrec_triggers_fired_total",
            &[("kind", "latency"), ("target", "checkout")]
        ),
        Some(2.0)
    );

    for ((dir, _), fired_at) in all.iter().zip(&fired) {
        let m = assert_bundle_valid(dir);
        let t = &m["trigger"];
        assert!(
            t["reason"]
                .as_str()
                .is_some_and(|r| r.contains("3 probes in a row") && r.contains("/slow")),
            "{t}"
        );
        let d = &t["details"];
        assert_eq!(d["rule"], "consecutive");
        assert_eq!(d["threshold_ms"], 150.0);
        assert!(d["observed_ms"].as_f64().unwrap_or(0.0) >= 290.0, "{d}");
        assert_eq!(m["post_trigger_complete"], true);
        assert!(spike_start <= *fired_at && *fired_at <= spike_end);
        assert!(
            covered_by_complete_window(&m, *fired_at),
            "fired_at {} is not inside a complete window: {:?}",
            t["fired_at"],
            window_spans(&m)
        );
        // Every probe the manifest shows, and so the slow ones that made the
        // spike, was recorded in a complete window: start and answer.
        let probes = d["probes"].as_array().expect("probes");
        let slow: Vec<&Value> = probes.iter().filter(|p| p["slow"] == true).collect();
        assert!(slow.len() >= 3, "{d}");
        for p in probes {
            let at = parse_time(p["at"].as_str().expect("at"));
            let answered = at + Duration::from_secs_f64(p["latency_ms"].as_f64().unwrap_or(0.0) / 1e3);
            assert!(
                covered_by_complete_window(&m, at) && covered_by_complete_window(&m, answered),
                "probe {p} outside the bundle's complete windows {:?}",
                window_spans(&m)
            );
        }
        for p in slow {
            assert!(parse_time(p["at"].as_str().expect("at")) >= spike_start, "{p}");
            assert_eq!(p["outcome"], "ok");
        }
    }
}

#[test]
fn probe_errors_count_as_slow_for_the_quantile_rule_and_are_logged_once_not_per_probe() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let dead = closed_port();
    let agent = Agent::start(&agent_config(
        &target("api", &svc.url, "service = \"api\""),
        &format!(
            r#"
[[triggers]]
kind = "latency"
target = "api"
url = "http://127.0.0.1:{dead}/healthz"
interval = "50ms"
threshold = "100ms"
quantile = "p50"
samples = 5
cooldown = "1h"
"#
        ),
    ));
    let (dir, _) = wait_for("a bundle from failed probes", Duration::from_secs(30), || {
        bundles_of(&agent, "latency").into_iter().next()
    });
    let m = assert_bundle_valid(&dir);
    let d = &m["trigger"]["details"];
    assert_eq!(d["rule"], "quantile");
    assert_eq!(d["quantile"], 0.5);
    assert_eq!(d["observed_ms"], Value::Null, "no latency: errors");
    assert!(
        m["trigger"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("p50 of the last 5 probes") && r.contains("timeouts or errors")),
        "{}",
        m["trigger"]["reason"]
    );
    let probes = d["probes"].as_array().expect("probes");
    assert_eq!(probes.len(), 5);
    assert!(probes
        .iter()
        .all(|p| p["outcome"] == "error" && p["error"].as_str().is_some_and(|e| e.contains("connect"))));

    // Every failure counts; the log says it once (the repeat line comes a
    // minute later), not twenty times a second.
    wait_for("40 failed probes", Duration::from_secs(20), || {
        agent
            .metric(
                "flightrec_trigger_errors_total",
                &[("trigger", "latency-api"), ("reason", "connect")],
            )
            .filter(|n| *n >= 40.0)
    });
    let failure_lines = agent
        .logs()
        .iter()
        .filter(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("probe of http://127.0.0.1"))
        })
        .count();
    assert_eq!(failure_lines, 1);
    // The cooldown holds the trigger quiet, whatever the probes keep saying.
    assert_eq!(bundles_of(&agent, "latency").len(), 1);
}

#[test]
fn a_metric_threshold_on_a_real_go_histogram_fires_with_the_quantile_it_computed() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "200", "-latency", "300ms"]);
    let agent = Agent::start(&agent_config(
        &target("shop", &svc.url, "service = \"shop\""),
        r#"
[[triggers]]
kind = "metric"
target = "shop"
metric = "fixture_request_duration_seconds"
matchers = { handler = "slow" }
quantile = "p90"
threshold = "200ms"
interval = "1s"
min_count = 3
cooldown = "1h"
"#,
    ));
    wait_for("two windows in the ring", Duration::from_secs(30), || {
        (agent.windows_kept("shop") >= 2).then_some(())
    });
    // Busy but fast /work requests are another series: nothing fires.
    let work = Load::start(vec![format!("{}/work", svc.url)], Duration::from_secs(60));
    let before = SystemTime::now();
    let slow = [0, 1].map(|_| Load::start(vec![format!("{}/slow", svc.url)], Duration::from_secs(60)));
    let (dir, _) = wait_for("a metric bundle", Duration::from_secs(30), || {
        bundles_of(&agent, "metric").into_iter().next()
    });
    let slow_requests: u64 = slow.into_iter().map(Load::stop).sum();
    assert!(work.stop() > 0 && slow_requests > 0);

    let m = assert_bundle_valid(&dir);
    let t = &m["trigger"];
    let d = &t["details"];
    assert_eq!(d["metric"], "fixture_request_duration_seconds");
    assert_eq!(d["matchers"]["handler"], "slow");
    assert_eq!(d["quantile"], 0.9);
    assert_eq!(d["threshold"], 0.2);
    // Every /slow request takes 300ms: in the (0.25, 0.5] bucket, so p90
    // interpolates to 0.25 + 0.25 * 0.9 = 0.475 (a request slowed past
    // 500ms by a busy machine moves it up a bucket, never below 0.25).
    let observed = d["observed"].as_f64().expect("observed");
    assert!(observed > 0.25 && observed <= 1.0, "{d}");
    assert!(d["count"].as_f64().unwrap_or(0.0) >= 3.0, "{d}");
    assert!(
        d["buckets"]
            .as_array()
            .is_some_and(|b| b.iter().any(|x| x["le"] == "+Inf")),
        "{d}"
    );
    assert!(
        t["reason"].as_str().is_some_and(|r| r
            .contains("p90 of fixture_request_duration_seconds{handler=\"slow\"}")
            && r.contains(&format!("{observed:.4}"))),
        "{t}"
    );
    let fired_at = parse_time(t["fired_at"].as_str().expect("fired_at"));
    assert!(fired_at >= before);
    assert!(covered_by_complete_window(&m, fired_at), "{:?}", window_spans(&m));
    assert_eq!(
        agent.metric("flightrec_trigger_observed_value", &[("trigger", "metric-shop")]),
        Some(observed)
    );
}

fn grafana_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}:{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn a_signed_grafana_notification_snapshots_the_target_its_firing_alert_selects() {
    let a = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let b = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret = "grafana-s3cret";
    let secret_path = secret_file(secrets.path(), "hmac", &format!("{secret}\n"));
    let agent = Agent::start_with_env(
        &agent_config(
            &[
                target(
                    "checkout-a",
                    &a.url,
                    "service = \"checkout\", pod = \"checkout-7d9f8-x2k4q\"",
                ),
                target(
                    "checkout-b",
                    &b.url,
                    "service = \"checkout\", pod = \"checkout-7d9f8-p8m2n\"",
                ),
            ]
            .concat(),
            &format!(
                r#"
[webhooks]
grafana_hmac_secret_file = "{}"
grafana_hmac_timestamp_header = "X-Grafana-Alerting-Timestamp"
"#,
                secret_path.display()
            ),
        ),
        &[("FLIGHTREC_SERVER__TOKEN", "api-token")],
    );
    wait_for("windows from both targets", Duration::from_secs(30), || {
        (agent.windows_kept("checkout-a") >= 2 && agent.windows_kept("checkout-b") >= 2).then_some(())
    });
    let url = format!("{}/v1/webhooks/grafana", agent.api);
    // The recorded payload has one firing alert (pod x2k4q) and one resolved (pod p8m2n).
    let body = webhook_payload("grafana-firing.json");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();

    let unsigned = post_raw(&url, body.clone(), &[("authorization", "Bearer api-token")]);
    assert_eq!(unsigned.status, 401, "the signature is required once configured");
    assert!(
        unsigned.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("x-grafana-alerting-signature")),
        "{}",
        unsigned.json
    );
    let forged = post_raw(
        &url,
        body.clone(),
        &[
            (
                "X-Grafana-Alerting-Signature",
                &grafana_signature("guess", &now, &body),
            ),
            ("X-Grafana-Alerting-Timestamp", &now),
        ],
    );
    assert_eq!(forged.status, 401);
    assert!(forged.json["error"]
        .as_str()
        .is_some_and(|e| e.contains("does not match")));
    let old = (now.parse::<u64>().expect("secs") - 3600).to_string();
    let replayed = post_raw(
        &url,
        body.clone(),
        &[
            (
                "X-Grafana-Alerting-Signature",
                &grafana_signature(secret, &old, &body),
            ),
            ("X-Grafana-Alerting-Timestamp", &old),
        ],
    );
    assert_eq!(replayed.status, 401);
    assert!(replayed.json["error"]
        .as_str()
        .is_some_and(|e| e.contains("away from now")));

    let ok = post_raw(
        &url,
        body.clone(),
        &[
            (
                "X-Grafana-Alerting-Signature",
                &grafana_signature(secret, &now, &body),
            ),
            ("X-Grafana-Alerting-Timestamp", &now),
        ],
    );
    assert_eq!(ok.status, 200, "{}", ok.json);
    assert_eq!(ok.json["firing"], 1);
    assert_eq!(ok.json["resolved"], 1);
    let snaps = ok.json["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 1, "{}", ok.json);
    assert_eq!(snaps[0]["target"], "checkout-a");
    let dir = agent.wait_snapshot(snaps[0]["id"].as_str().expect("id"), Duration::from_secs(30));
    let m = assert_bundle_valid(&dir);
    assert_eq!(m["target"]["name"], "checkout-a");
    let t = &m["trigger"];
    assert_eq!(t["kind"], "grafana");
    assert!(
        t["reason"].as_str().is_some_and(|r| r.contains("CheckoutSlow")),
        "{t}"
    );
    assert_eq!(t["details"]["fingerprint"], "5e3a0c1b9f7d2e64");
    assert_eq!(t["details"]["labels"]["pod"], "checkout-7d9f8-x2k4q");
    assert_eq!(t["details"]["org_id"], 1);
    assert_eq!(t["details"]["alerts"][0]["values"]["A"], 0.734);
    let fired_at = parse_time(t["fired_at"].as_str().expect("fired_at"));
    assert!(covered_by_complete_window(&m, fired_at), "{:?}", window_spans(&m));
    assert!(
        bundles(&agent)
            .iter()
            .all(|(_, m)| m["target"]["name"] == "checkout-a"),
        "the resolved alert's pod got no bundle"
    );
    assert_eq!(
        agent.metric(
            "flightrec_webhook_rejected_total",
            &[("source", "grafana"), ("reason", "unauthorized")]
        ),
        Some(3.0)
    );
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(!log.contains(secret), "the HMAC secret never reaches the log");
}
