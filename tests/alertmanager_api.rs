//! The Alertmanager follower: agents on several hosts read Debian's real
//! Alertmanager 0.25 through its API (`GET /api/v2/alerts`) and each
//! captures the alerts about its own targets, once, through an HA pair both
//! holding the alert, silences, a webhook delivering the same alert, a
//! restart of Alertmanager, and an HA partner that is down or answers
//! garbage.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::alerting::*;
use common::*;
use serde_json::{json, Value};

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// The `url` label of an Alertmanager's metrics: its base URL as the agent
/// shows it.
fn label(url: &str) -> String {
    format!("{url}/")
}

/// An agent recording `fixture` as target `name`, labelled with its
/// `instance` as a Prometheus scraping it would label its alerts, and
/// following the Alertmanagers `urls`.
fn agent_config(name: &str, fixture: &str, urls: &[String], listen: &str, more: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    agent_toml(
        "1s",
        &format!(
            "{}\n[trigger_limits]\ncooldown = \"1s\"\n[alertmanager]\nurls = [{}]\ninterval = \"500ms\"\n{more}\n",
            target_toml(
                name,
                fixture,
                "1s",
                "20s",
                &format!(
                    "labels = {{ instance = \"{}\", job = \"fixture\" }}",
                    host_port(fixture)
                )
            ),
            urls.join(", ")
        ),
    )
    .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{listen}\""))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One alert as Prometheus posts it to Alertmanager.
fn alert(name: &str, instance: &str, severity: &str, starts_at: &str) -> Value {
    json!({
        "labels": {"alertname": name, "instance": instance, "job": "fixture", "severity": severity},
        "annotations": {"summary": format!("{name} on {instance}")},
        "startsAt": starts_at,
        "generatorURL": "http://prometheus.test/graph?g0.expr=up",
    })
}

fn metric(agent: &Agent, name: &str, url: &str) -> f64 {
    agent.metric(name, &[("url", &label(url))]).unwrap_or(0.0)
}

/// Log lines of the agent whose message starts with `prefix`, about `url`.
fn log_count(agent: &Agent, prefix: &str, url: &str) -> usize {
    agent
        .logs()
        .iter()
        .filter(|l| {
            l["message"].as_str().is_some_and(|m| m.starts_with(prefix))
                && l["alertmanager"].as_str() == Some(label(url).as_str())
        })
        .count()
}

fn api_bundles(agent: &Agent) -> Vec<(PathBuf, Value)> {
    bundles_of(agent, "alertmanager")
}

/// Every alert goes to host B's webhook too, so one alert reaches B both
/// ways; resent every 5 s, so the webhook keeps delivering it.
fn am_config(b_webhook: &str) -> String {
    format!(
        r#"
route:
  receiver: host-b
  group_by: ['alertname', 'instance']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 5s
receivers:
  - name: host-b
    webhook_configs:
      - url: {b_webhook}
        send_resolved: true
"#
    )
}

#[test]
fn two_hosts_each_capture_only_their_own_alert_once_through_an_ha_pair_silences_a_webhook_and_a_restart() {
    let begun = Instant::now();
    let fx_a = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let fx_b = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let inst_b = host_port(&fx_b.url).to_string();
    // B's API port is chosen first, so Alertmanager can name its webhook.
    let b_listen = format!("127.0.0.1:{}", closed_port());
    // An HA pair as Prometheus sees one: both members get every alert and
    // notify the same receiver (gossip is off here, so silences stay on the
    // member they are made on).
    let b_webhook = format!("http://{b_listen}/v1/webhooks/alertmanager");
    let mut am = Service::alertmanager(&am_config(&b_webhook));
    let am2 = Service::alertmanager(&am_config(&b_webhook));
    let pair = [am.url.clone(), am2.url.clone()];
    let filter = "filter = ['severity=~\"page|ticket\"']";
    let a = Agent::start(&agent_config("host-a", &fx_a.url, &pair, "127.0.0.1:0", filter));
    let b = Agent::start(&agent_config("host-b", &fx_b.url, &pair, &b_listen, filter));
    for (agent, target) in [(&a, "host-a"), (&b, "host-b")] {
        wait_for(
            "windows and a first poll of each",
            Duration::from_secs(30),
            || {
                (agent.windows_kept(target) >= 2
                    && pair
                        .iter()
                        .all(|u| metric(agent, "flightrec_alertmanager_up", u) == 1.0))
                .then_some(())
            },
        );
    }

    // An alert about host B, kept firing as Prometheus keeps a rule firing;
    // one about B below the filter's severities.
    let reposter = Reposter::start(Duration::from_secs(1));
    let starts_at = rfc3339(SystemTime::now());
    for url in &pair {
        reposter.add(
            url,
            json!([
                alert("HostBSlow", &inst_b, "page", &starts_at),
                alert("HostBChatty", &inst_b, "info", &starts_at)
            ]),
        );
    }
    let (dir, _) = wait_for("host B's capture", Duration::from_secs(20), || {
        api_bundles(&b).into_iter().next()
    });
    let captured = Instant::now();
    let m = assert_bundle_valid(&dir);
    assert_eq!(m["target"]["name"], "host-b");
    let t = &m["trigger"];
    assert!(
        t["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("alertmanager: HostBSlow firing: HostBSlow on")),
        "{t}"
    );
    let d = &t["details"];
    assert_eq!(d["labels"]["instance"], inst_b.as_str(), "{d}");
    assert_eq!(d["fingerprint"].as_str().map(str::len), Some(16), "{d}");
    assert_eq!(d["alerts"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(
        d["alerts"][0]["annotations"]["summary"],
        format!("HostBSlow on {inst_b}")
    );
    // Whichever way came first, the details are the webhook's with where
    // the alert came from.
    match d["source"].as_str() {
        Some("api") => assert!(pair.iter().any(|u| d["alertmanager"] == label(u)), "{d}"),
        Some("webhook") => assert_eq!(d["receiver"], "host-b"),
        other => panic!("source {other:?}: {d}"),
    }
    let fired_at = parse_time(t["fired_at"].as_str().expect("fired_at"));
    assert!(covered_by_complete_window(&m, fired_at), "{:?}", window_spans(&m));

    // A second alert about B, silenced through Alertmanager's API.
    create_silence(&am.url, &[("alertname", "HostBSilenced")], "maintenance");
    reposter.add(
        &am.url,
        json!([alert(
            "HostBSilenced",
            &inst_b,
            "page",
            &rfc3339(SystemTime::now())
        )]),
    );
    wait_for(
        "Alertmanager to hold the silenced alert",
        Duration::from_secs(10),
        || {
            get_alerts(&am.url, "silenced=true")
                .iter()
                .any(|x| {
                    x["labels"]["alertname"] == "HostBSilenced"
                        && x["status"]["silencedBy"]
                            .as_array()
                            .is_some_and(|s| !s.is_empty())
                })
                .then_some(())
        },
    );

    // Firing for 30 s, returned by both members of the pair, resent by both
    // to the webhook every 5 s, polled by both agents twice a second: B has
    // its one capture, A none.
    let only_one = |when: &str| {
        let (got_a, got_b) = (api_bundles(&a), api_bundles(&b));
        assert!(got_a.is_empty(), "{when}: host A captured {got_a:?}");
        assert_eq!(got_b.len(), 1, "{when}: host B's captures {got_b:?}");
    };
    wait_for("30 s of firing", Duration::from_secs(60), || {
        only_one("while firing");
        (captured.elapsed() >= Duration::from_secs(30)).then_some(())
    });
    for agent in [&a, &b] {
        let polled = metric(
            agent,
            "flightrec_alertmanager_last_success_timestamp_seconds",
            &am.url,
        );
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        assert!(now - polled < 5.0, "polled {:.1}s ago", now - polled);
        // Through the filter and the silence: HostBSlow alone, from each.
        for u in &pair {
            assert_eq!(metric(agent, "flightrec_alertmanager_alerts", u), 1.0, "{u}");
        }
    }
    for u in &pair {
        assert_eq!(metric(&a, "flightrec_alertmanager_matching_alerts", u), 0.0);
        assert_eq!(metric(&b, "flightrec_alertmanager_matching_alerts", u), 1.0);
    }
    assert!(
        b.metric(
            "flightrec_webhook_alerts_total",
            &[("source", "alertmanager"), ("status", "firing")]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "the webhook delivered the alert too, and resent it"
    );

    // One member stops (its silences saved) and comes back on the same
    // port: the agents notice, then resume, and the alert, posted again
    // with the same startsAt, is not captured again. The other member
    // returned it all along.
    am.stop();
    for agent in [&a, &b] {
        wait_for(
            "the agents to see Alertmanager down",
            Duration::from_secs(10),
            || (metric(agent, "flightrec_alertmanager_up", &am.url) == 0.0).then_some(()),
        );
    }
    am.start_again();
    let back = wait_for("the alert posted again", Duration::from_secs(10), || {
        get_alerts(&am.url, "")
            .iter()
            .any(|x| x["labels"]["alertname"] == "HostBSlow")
            .then(SystemTime::now)
    });
    let seen_after = |agent: &Agent| {
        let at = metric(
            agent,
            "flightrec_alertmanager_last_success_timestamp_seconds",
            &am.url,
        );
        let back = back
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        // Two polls after the alert was back: it was in an answer.
        at > back + 1.0
    };
    wait_for("polls after the restart", Duration::from_secs(15), || {
        only_one("after the restart");
        (seen_after(&a) && seen_after(&b)).then_some(())
    });
    only_one("after the restart");
    assert_eq!(
        get_alerts(&am.url, "silenced=true")
            .iter()
            .filter(|x| x["labels"]["alertname"] == "HostBSilenced")
            .count(),
        1,
        "the silence outlived the restart"
    );
    for agent in [&a, &b] {
        assert_eq!(metric(agent, "flightrec_alertmanager_up", &am.url), 1.0);
        assert_eq!(
            agent.metric(
                "flightrec_alertmanager_poll_errors_total",
                &[("url", &label(&am.url)), ("reason", "connect")]
            ),
            Some(1.0),
            "counted once however many polls failed"
        );
        assert_eq!(log_count(agent, "polling Alertmanager failed", &am.url), 1);
        assert_eq!(log_count(agent, "Alertmanager answers again", &am.url), 1);
    }

    // It resolves, and fires again: a new startsAt, a new capture.
    drop(reposter);
    let mut resolved = alert("HostBSlow", &inst_b, "page", &starts_at);
    resolved["endsAt"] = json!(rfc3339(SystemTime::now()));
    for u in &pair {
        post_alerts(u, &json!([resolved]));
    }
    wait_for("the pair to resolve it", Duration::from_secs(10), || {
        (!pair.iter().any(|u| {
            get_alerts(u, "")
                .iter()
                .any(|x| x["labels"]["alertname"] == "HostBSlow")
        }))
        .then_some(())
    });
    let again = rfc3339(SystemTime::now());
    for u in &pair {
        post_alerts(u, &json!([alert("HostBSlow", &inst_b, "page", &again)]));
    }
    let second = wait_for(
        "the capture of the second firing",
        Duration::from_secs(20),
        || {
            let got = api_bundles(&b);
            (got.len() == 2).then(|| got[1].1.clone())
        },
    );
    // The webhook writes Go's nanoseconds, the API milliseconds: one instant.
    let second_start = second["trigger"]["details"]["alerts"][0]["starts_at"]
        .as_str()
        .expect("starts_at");
    assert_eq!(parse_time(second_start), parse_time(&again));
    assert!(api_bundles(&a).is_empty());
    assert_eq!(
        b.metric("flightrec_triggers_fired_total", &[("kind", "alertmanager")]),
        Some(2.0)
    );
    eprintln!("whole test {:.1}s", begun.elapsed().as_secs_f64());
}

/// What the broken Alertmanager answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    /// A login page.
    Html,
    /// Bytes that are nothing.
    Garbage,
    /// JSON, but not the alerts of the v2 API (the v1 API's envelope).
    NotTheSchema,
    /// HTTP 503.
    Unavailable,
    /// A JSON array that never ends.
    Endless,
    /// Takes the request and never answers.
    Hang,
    /// An empty list of alerts, as a healthy Alertmanager with none.
    Healthy,
}

/// A tiny HTTP server in the test playing a broken Alertmanager (a real one
/// cannot be made to answer garbage): it answers as `mode` says, counts the
/// requests of each mode and keeps their `Authorization` headers.
struct Broken {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    served: Arc<Mutex<HashMap<Mode, usize>>>,
    auth: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Broken {
    fn start(mode: Mode) -> Broken {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let b = Broken {
            port,
            mode: Arc::new(Mutex::new(mode)),
            served: Arc::default(),
            auth: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, served, auth, stop) = (b.mode.clone(), b.served.clone(), b.auth.clone(), b.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (mode, served, auth) = (mode.clone(), served.clone(), auth.clone());
                std::thread::spawn(move || answer(conn, &mode, &served, &auth));
            }
        });
        b
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    fn served(&self, mode: Mode) -> usize {
        self.served.lock().get(&mode).copied().unwrap_or(0)
    }
}

impl Drop for Broken {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(
    mut conn: TcpStream,
    mode: &Mutex<Mode>,
    served: &Mutex<HashMap<Mode, usize>>,
    auth: &Mutex<Vec<String>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    if let Some(v) = text.lines().find_map(|l| {
        l.strip_prefix("authorization: ")
            .or_else(|| l.strip_prefix("Authorization: "))
    }) {
        auth.lock().push(v.trim().to_string());
    }
    let m = *mode.lock();
    *served.lock().entry(m).or_default() += 1;
    let reply = |conn: &mut TcpStream, status: &str, ct: &str, body: &[u8]| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(body);
    };
    match m {
        Mode::Html => reply(
            &mut conn,
            "200 OK",
            "text/html",
            b"<!doctype html><html><body>Sign in to continue</body></html>",
        ),
        Mode::Garbage => reply(
            &mut conn,
            "200 OK",
            "application/octet-stream",
            b"\x00\x9f\xfe garbage \x01",
        ),
        Mode::NotTheSchema => reply(
            &mut conn,
            "200 OK",
            "application/json",
            br#"{"status":"success","data":[{"labels":{"alertname":"X"}}]}"#,
        ),
        Mode::Unavailable => reply(&mut conn, "503 Service Unavailable", "text/plain", b"overloaded"),
        Mode::Healthy => reply(&mut conn, "200 OK", "application/json", b"[]"),
        Mode::Endless => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let chunk = format!("4000\r\n[{}\r\n", " ".repeat(0x4000 - 1));
            // Until the agent hangs up.
            while conn.write_all(chunk.as_bytes()).is_ok() {}
        }
        Mode::Hang => {
            // Until the agent gives up and hangs up.
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

#[test]
fn an_ha_partner_down_or_broken_changes_nothing_and_each_change_is_counted_once() {
    let fx = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let inst = host_port(&fx.url).to_string();
    let am = Service::alertmanager("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n");
    let broken = Broken::start(Mode::Html);
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let secrets = tempfile::tempdir().expect("tempdir");
    let token = secret_file(secrets.path(), "am-token", "tok-s3cret\n");
    // The broken member's credentials are in its URL: basic auth for it alone.
    let broken_with_credentials = format!("http://flightrec:pw-s3cret@127.0.0.1:{}", broken.port);
    let agent = Agent::start(&agent_config(
        "app",
        &fx.url,
        &[am.url.clone(), broken_with_credentials, closed.clone()],
        "127.0.0.1:0",
        &format!(
            "timeout = \"1s\"\nbackoff_max = \"1s\"\nmax_bytes = \"64KiB\"\nbearer_token_file = \"{}\"\n",
            token.display()
        ),
    ));
    wait_for("windows and a first poll", Duration::from_secs(30), || {
        (agent.windows_kept("app") >= 2 && metric(&agent, "flightrec_alertmanager_up", &am.url) == 1.0)
            .then_some(())
    });
    let windows_before = agent.windows_kept("app");
    let reposter = Reposter::start(Duration::from_secs(1));
    reposter.add(
        &am.url,
        json!([alert("AppSlow", &inst, "page", &rfc3339(SystemTime::now()))]),
    );
    let (dir, _) = wait_for("the capture", Duration::from_secs(20), || {
        api_bundles(&agent).into_iter().next()
    });
    assert_bundle_valid(&dir);

    let errors = |url: &str, reason: &str| {
        agent
            .metric(
                "flightrec_alertmanager_poll_errors_total",
                &[("url", &label(url)), ("reason", reason)],
            )
            .unwrap_or(0.0)
    };
    // Each mode for at least three polls: counted once when it begins, and
    // an HTML page then garbage are the same failure (not_json): once.
    let modes = [
        (Mode::Html, "not_json", 1.0),
        (Mode::Garbage, "not_json", 1.0),
        (Mode::NotTheSchema, "schema", 1.0),
        (Mode::Unavailable, "status", 1.0),
        (Mode::Endless, "too_large", 1.0),
        (Mode::Hang, "timeout", 1.0),
    ];
    for (mode, reason, count) in modes {
        broken.set(mode);
        let before = broken.served(mode);
        wait_for(
            &format!("3 polls answered {mode:?}"),
            Duration::from_secs(30),
            || (broken.served(mode) >= before + 3).then_some(()),
        );
        assert_eq!(errors(&broken.url(), reason), count, "{mode:?}");
        assert_eq!(metric(&agent, "flightrec_alertmanager_up", &broken.url()), 0.0);
        // The real Alertmanager of the pair is followed all along.
        assert_eq!(
            metric(&agent, "flightrec_alertmanager_up", &am.url),
            1.0,
            "{mode:?}"
        );
    }
    broken.set(Mode::Healthy);
    wait_for("the broken member to recover", Duration::from_secs(10), || {
        (metric(&agent, "flightrec_alertmanager_up", &broken.url()) == 1.0).then_some(())
    });

    assert_eq!(errors(&closed, "connect"), 1.0, "down all along: once");
    assert_eq!(metric(&agent, "flightrec_alertmanager_up", &closed), 0.0);
    assert_eq!(log_count(&agent, "polling Alertmanager failed", &closed), 1);
    assert_eq!(
        log_count(&agent, "polling Alertmanager failed", &broken.url()),
        5,
        "not_json, schema, status, too_large, timeout"
    );
    assert_eq!(log_count(&agent, "Alertmanager answers again", &broken.url()), 1);
    // Each line says what was wrong, and what to do about it.
    let said = |text: &str| {
        agent
            .logs()
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.contains(text)))
    };
    for text in [
        "the answer is not JSON (Content-Type \"text/html\", starting \"<!doctype html>",
        "the answer is not the alerts of Alertmanager's API v2: expected a JSON array of alerts",
        "answered HTTP 503: overloaded",
        "the answer is larger than 64.0 KiB (alertmanager.max_bytes)",
        "no whole answer within 1s (alertmanager.timeout)",
        "cannot connect: ",
    ] {
        assert!(said(text), "no log line says {text:?}");
    }
    for reason in ["connect", "credentials", "body", "request"] {
        assert_eq!(errors(&broken.url(), reason), 0.0, "{reason}");
    }
    assert_eq!(errors(&am.url, "connect") + errors(&am.url, "timeout"), 0.0);

    // Recording and triggers went on: one capture, windows kept, ready.
    assert_eq!(api_bundles(&agent).len(), 1);
    assert!(agent.windows_kept("app") > windows_before + 5);
    assert_eq!(agent.get("/readyz").0, 200);
    let (status, v) = agent.post(
        "/v1/snapshots",
        "{\"target\":\"app\",\"reason\":\"still works\"}",
        None,
    );
    assert_eq!(status, 202, "{v}");
    assert_bundle_valid(&agent.wait_snapshot(v["id"].as_str().expect("id"), Duration::from_secs(30)));

    // The URL's credentials went to its member as basic auth; no secret is
    // in the log or the metrics.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("flightrec:pw-s3cret")
    );
    let seen = broken.auth.lock().clone();
    assert!(!seen.is_empty() && seen.iter().all(|a| *a == basic), "{seen:?}");
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    let metrics = agent.metrics();
    for secret in ["pw-s3cret", "tok-s3cret"] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!metrics.contains(secret), "{secret} in /metrics");
    }
}

#[test]
fn a_bad_alertmanager_section_is_reported_by_check_config_with_its_key_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("flightrec.toml");
    std::fs::write(
        &cfg,
        "[alertmanager]\nurls = [\"http://am:9093\", \"am-1:9093\"]\nfilter = [\"severity\"]\ninterval = \"soon\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(AGENT)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env("FLIGHTREC_ALERTMANAGER__TIMEOUT", "0s")
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(2));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "alertmanager.urls[1]: \"am-1:9093\" must be an http:// or https:// URL",
        "alertmanager.filter[0]: \"severity\" is not a matcher",
        "alertmanager.interval: \"soon\" is not a duration",
        "alertmanager.timeout: must be longer than 0s",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn a_reload_starts_restarts_and_stops_following_without_capturing_an_alert_twice() {
    let fx = GoService::start("fixture", &["-pairs", "1", "-rate", "100"]);
    let inst = host_port(&fx.url).to_string();
    let am = Service::alertmanager("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n");
    let with = |section: &str| {
        agent_config(
            "app",
            &fx.url,
            std::slice::from_ref(&am.url),
            "127.0.0.1:0",
            section,
        )
    };
    let without = with("").replace(
        &format!("[alertmanager]\nurls = [{:?}]\ninterval = \"500ms\"\n", am.url),
        "",
    );
    assert!(!without.contains("[alertmanager]"), "{without}");
    let agent = Agent::start(&without);
    wait_for("windows", Duration::from_secs(30), || {
        (agent.windows_kept("app") >= 2).then_some(())
    });
    post_alerts(
        &am.url,
        &json!([alert("AppSlow", &inst, "page", &rfc3339(SystemTime::now()))]),
    );
    let reload = |config: &str| {
        let before = agent
            .metric("flightrec_config_reloads_total", &[("result", "applied")])
            .unwrap_or(0.0);
        let text = config.replace("{dir}", &agent.path().display().to_string());
        std::fs::write(agent.path().join("flightrec.toml"), text).expect("rewrite config");
        agent.proc.signal("HUP");
        wait_for("the reload", Duration::from_secs(10), || {
            (agent
                .metric("flightrec_config_reloads_total", &[("result", "applied")])
                .unwrap_or(0.0)
                > before)
                .then_some(())
        });
        agent
            .logs()
            .iter()
            .rev()
            .find(|l| l["message"] == "config reloaded")
            .map(|l| l["alertmanager_restarted"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(reload(&without), false, "nothing to follow, nothing changed");

    assert_eq!(reload(&with("")), true);
    wait_for("the capture once following", Duration::from_secs(20), || {
        api_bundles(&agent).into_iter().next()
    });
    // Changed (a filter the alert passes): the follower starts again, and
    // the alert it sees again is still known.
    assert_eq!(reload(&with("filter = ['severity=\"page\"']")), true);
    let restarted = Instant::now();
    wait_for("polls of the restarted follower", Duration::from_secs(10), || {
        (metric(&agent, "flightrec_alertmanager_matching_alerts", &am.url) == 1.0
            && restarted.elapsed() > Duration::from_secs(2))
        .then_some(())
    });
    assert_eq!(api_bundles(&agent).len(), 1);
    assert_eq!(
        reload(&with("filter = ['severity=\"page\"']")),
        false,
        "unchanged"
    );

    assert_eq!(reload(&without), true);
    wait_for("the follower's gauges to go", Duration::from_secs(10), || {
        agent
            .metric("flightrec_alertmanager_up", &[("url", &label(&am.url))])
            .is_none()
            .then_some(())
    });
    assert_eq!(api_bundles(&agent).len(), 1);
}
