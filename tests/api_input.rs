//! Bad input on every HTTP endpoint of the real agent: each answer is a 4xx
//! with a JSON reason (or a bounded 503), counted, and the agent keeps
//! recording afterwards.
//!
//! Requests go over raw TCP so paths reach the server exactly as written
//! (an HTTP client would normalise `..` and re-encode `%2e`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "api-input-token";

fn config(url: &str, token_file: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
token_file = "{}"
[snapshots]
dir = "{{dir}}/data"
post_trigger = "0s"
[[targets]]
name = "app"
url = "{url}"
window = "1s"
max_age = "10s"
labels = {{ service = "app" }}
"#,
        token_file.display()
    )
}

/// One answer as it came off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn reason(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_string()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn host(api: &str) -> &str {
    api.strip_prefix("http://").unwrap_or(api)
}

/// Sends `request` as is and reads the answer until the server closes.
/// The body is written from another thread: a server that answers 413
/// before reading a big body must still be heard.
fn raw(api: &str, request: Vec<u8>) -> Answer {
    let mut s = TcpStream::connect(host(api)).unwrap_or_else(|e| panic!("connect {api}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&request);
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset after the answer was read is the server closing on
            // an unread body; before it, the test fails below.
            Err(_) => break,
        }
    }
    let _ = writer.join();
    parse_answer(&got)
}

fn parse_answer(got: &[u8]) -> Answer {
    // Status 0: the connection closed without an answer.
    let Some(split) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Answer {
            status: 0,
            head: String::from_utf8_lossy(got).to_string(),
            body: Vec::new(),
        };
    };
    let head = String::from_utf8_lossy(&got[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let mut body = got[split + 4..].to_vec();
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    if chunked {
        body = dechunk(&body);
    }
    Answer { status, head, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// A request with `Connection: close`, a Content-Length when there is a body.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: flightrec\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

const BEARER: (&str, &str) = ("Authorization", "Bearer api-input-token");
const JSON: (&str, &str) = ("Content-Type", "application/json");

/// What a case must get: a status and, for errors the agent writes itself,
/// a JSON reason containing a phrase.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// `None`: the answer comes from the HTTP layer (hyper) before the
    /// agent's code, which has no JSON to give.
    reason: Option<&'static str>,
}

fn case(name: &'static str, request: Vec<u8>, status: u16, reason: Option<&'static str>) -> Case {
    Case {
        name,
        request,
        status,
        reason,
    }
}

fn post(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    request("POST", path, headers, body)
}

fn get(path: &str) -> Vec<u8> {
    request("GET", path, &[], b"")
}

fn cases() -> Vec<Case> {
    let snap = "/v1/snapshots";
    let am = "/v1/webhooks/alertmanager";
    let gf = "/v1/webhooks/grafana";
    let auth_json = [BEARER, JSON];
    let big = vec![b' '; 2 << 20];
    let deep = format!("{{\"target\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    let am_deep = format!(
        "{{\"version\":\"4\",\"alerts\":[],\"x\":{}{}}}",
        "[".repeat(400_000),
        "]".repeat(400_000)
    );
    let long_reason = format!("{{\"reason\":\"{}\"}}", "r".repeat(2000));
    let long_id = format!("{snap}/{}", "a".repeat(161));
    let am_firing = std::fs::read(repo_root().join("tests/data/webhooks/alertmanager-0.25-firing.json"))
        .expect("recorded Alertmanager payload");
    let mut chunked_big = format!(
        "POST {snap} HTTP/1.1\r\nHost: flightrec\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..40 {
        chunked_big.extend_from_slice(format!("{:x}\r\n", 64 << 10).as_bytes());
        chunked_big.extend_from_slice(&vec![b' '; 64 << 10]);
        chunked_big.extend_from_slice(b"\r\n");
    }
    chunked_big.extend_from_slice(b"0\r\n\r\n");
    let mut many_headers =
        String::from("GET /v1/targets HTTP/1.1\r\nHost: flightrec\r\nConnection: close\r\n");
    for i in 0..200 {
        many_headers.push_str(&format!("X-Junk-{i}: {i}\r\n"));
    }
    many_headers.push_str("\r\n");
    let huge_header = format!(
        "GET /v1/targets HTTP/1.1\r\nHost: flightrec\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "h".repeat(1 << 20)
    );

    vec![
        // Unknown endpoints and methods.
        case("unknown path", get("/v1/nothing"), 404, Some("no such endpoint")),
        case("extra path segments", get("/v1/snapshots/a/b"), 404, Some("no such endpoint")),
        case("wrong method on /v1/targets", post("/v1/targets", &auth_json, b"{}"), 405, Some("method not allowed")),
        case("wrong method on /v1/snapshots", request("DELETE", snap, &[BEARER], b""), 405, Some("method not allowed")),
        case("wrong method on /v1/snapshots/{id}", post(&format!("{snap}/x"), &auth_json, b"{}"), 405, Some("method not allowed")),
        case("wrong method on a webhook", get(am), 405, Some("method not allowed")),
        case("wrong method on /metrics", post("/metrics", &[], b""), 405, Some("method not allowed")),
        case("wrong method on /healthz", post("/healthz", &[], b""), 405, Some("method not allowed")),
        case("wrong method on /readyz", request("PUT", "/readyz", &[], b"x"), 405, Some("method not allowed")),
        // Auth on POST /v1/snapshots.
        case("snapshot without a token", post(snap, &[JSON], b"{}"), 401, Some("needs Authorization: Bearer")),
        case("snapshot with a wrong token", post(snap, &[("Authorization", "Bearer nope"), JSON], b"{}"), 401, Some("does not match")),
        case("snapshot with basic auth", post(snap, &[("Authorization", "Basic YTpi"), JSON], b"{}"), 401, Some("needs Authorization: Bearer")),
        case("snapshot with an empty bearer", post(snap, &[("Authorization", "Bearer "), JSON], b"{}"), 401, Some("needs Authorization: Bearer")),
        // Malformed bodies.
        case("malformed JSON", post(snap, &auth_json, b"{\"target\":"), 400, Some("invalid JSON body")),
        case("not JSON at all", post(snap, &auth_json, b"hello"), 400, Some("invalid JSON body")),
        case("a JSON array", post(snap, &auth_json, b"[]"), 400, Some("expected a JSON object")),
        case("a JSON array of fields", post(snap, &auth_json, b"[\"app\",\"why\"]"), 400, Some("expected a JSON object")),
        case("JSON null", post(snap, &auth_json, b"null"), 400, Some("invalid JSON body")),
        case("target of the wrong type", post(snap, &auth_json, b"{\"target\":7}"), 400, Some("invalid type: integer")),
        case("reason of the wrong type", post(snap, &auth_json, b"{\"reason\":[]}"), 400, Some("invalid type: sequence")),
        case("unknown field", post(snap, &auth_json, b"{\"tgt\":\"app\"}"), 400, Some("unknown field `tgt`")),
        case("5000-deep nesting", post(snap, &auth_json, deep.as_bytes()), 400, Some("invalid type: sequence")),
        case("invalid UTF-8", post(snap, &auth_json, b"{\"reason\":\"\xff\xfe\"}"), 400, Some("invalid JSON body")),
        case("reason over 1 KiB", post(snap, &auth_json, long_reason.as_bytes()), 400, Some("longer than 1024")),
        case("unknown target", post(snap, &auth_json, b"{\"target\":\"nope\"}"), 404, Some("unknown target \"nope\"")),
        case("target that is a path", post(snap, &auth_json, b"{\"target\":\"../../etc/passwd\"}"), 404, Some("unknown target")),
        // Huge bodies (server.max_body = 1 MiB).
        case("2 MiB body", post(snap, &auth_json, &big), 413, Some("server.max_body")),
        case("Content-Length of 10 GiB, body never sent", {
            let mut r = format!("POST {snap} HTTP/1.1\r\nHost: flightrec\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 10737418240\r\n\r\n").into_bytes();
            r.extend_from_slice(b"{}");
            r
        }, 413, Some("server.max_body")),
        case("2.5 MiB chunked body", chunked_big, 413, Some("server.max_body")),
        // Snapshot ids and path traversal, plain and percent-encoded.
        case("id ..", get(&format!("{snap}/..")), 400, Some("invalid snapshot id")),
        case("plain traversal ../../etc/passwd", get(&format!("{snap}/../../etc/passwd")), 404, Some("no such endpoint")),
        case("traversal at the root /../../etc/passwd", get("/../../etc/passwd"), 404, Some("no such endpoint")),
        case("id %2e%2e", get(&format!("{snap}/%2e%2e")), 400, Some("invalid snapshot id")),
        case("id %2e%2e%2f%2e%2e%2fetc%2fpasswd", get(&format!("{snap}/%2e%2e%2f%2e%2e%2fetc%2fpasswd")), 400, Some("invalid snapshot id")),
        case("id ..%2F..%2Fetc", get(&format!("{snap}/..%2F..%2Fetc")), 400, Some("invalid snapshot id")),
        case("id %2E%2E%5C (backslash)", get(&format!("{snap}/%2E%2E%5C")), 400, Some("invalid snapshot id")),
        case("double-encoded %252e%252e", get(&format!("{snap}/%252e%252e")), 400, Some("invalid snapshot id")),
        case("id .partial", get(&format!("{snap}/.partial")), 400, Some("invalid snapshot id")),
        case("id .ledger", get(&format!("{snap}/.ledger")), 400, Some("invalid snapshot id")),
        case("id with NUL %00", get(&format!("{snap}/a%00b")), 400, Some("invalid snapshot id")),
        case("id not UTF-8 %ff", get(&format!("{snap}/%ff%fe")), 400, Some("invalid snapshot id")),
        case("id of 161 bytes", get(&long_id), 400, Some("invalid snapshot id")),
        case("well-formed unknown id", get(&format!("{snap}/20990101T000000.000Z-app-0000")), 404, Some("no snapshot")),
        case("traversal in the query (ignored)", get("/v1/snapshots?id=../../etc/passwd"), 200, None),
        // Webhooks.
        case("Alertmanager without a token", post(am, &[JSON], &am_firing), 401, Some("needs Authorization: Bearer")),
        case("Alertmanager with a wrong token", post(am, &[("Authorization", "Bearer x"), JSON], &am_firing), 401, Some("does not match")),
        case("Alertmanager with basic auth not configured", post(am, &[("Authorization", "Basic YTpi"), JSON], &am_firing), 401, Some("basic auth is not configured")),
        case("Alertmanager malformed JSON", post(am, &auth_json, b"{\"version\":\"4\",\"alerts\":["), 400, Some("invalid alertmanager payload")),
        case("Alertmanager version 3", post(am, &auth_json, b"{\"version\":\"3\",\"alerts\":[]}"), 400, Some("version \"3\" is not supported")),
        case("Alertmanager alerts of the wrong type", post(am, &auth_json, b"{\"version\":\"4\",\"alerts\":\"x\"}"), 400, Some("invalid type")),
        case("Alertmanager label of the wrong type", post(am, &auth_json, b"{\"version\":\"4\",\"alerts\":[{\"status\":\"firing\",\"labels\":{\"a\":1}}]}"), 400, Some("invalid type: integer")),
        case("Alertmanager unknown status", post(am, &auth_json, b"{\"version\":\"4\",\"alerts\":[{\"status\":\"pending\",\"labels\":{}}]}"), 400, Some("unknown variant `pending`")),
        case("Alertmanager 400000-deep nesting in an unknown field (skipped without recursion)", post(am, &auth_json, am_deep.as_bytes()), 200, None),
        case("Alertmanager JSON array", post(am, &auth_json, b"[1,2]"), 400, Some("expected a JSON object")),
        case("Alertmanager empty body", post(am, &auth_json, b""), 400, Some("the body is empty")),
        case("Alertmanager 2 MiB body", post(am, &auth_json, &big), 413, Some("server.max_body")),
        case("Alertmanager Content-Length of 10 GiB, body never sent", {
            let mut r = format!("POST {am} HTTP/1.1\r\nHost: flightrec\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 10737418240\r\n\r\n").into_bytes();
            r.extend_from_slice(b"{}");
            r
        }, 413, Some("max_alerts")),
        case("Alertmanager alert for an unknown target", post(am, &auth_json, b"{\"version\":\"4\",\"alerts\":[{\"status\":\"firing\",\"labels\":{\"flightrec_target\":\"nope\"}}]}"), 200, None),
        case("Grafana without a token", post(gf, &[JSON], b"{\"alerts\":[]}"), 401, Some("needs Authorization: Bearer")),
        case("Grafana legacy payload", post(gf, &auth_json, b"{\"ruleName\":\"x\",\"evalMatches\":[]}"), 400, Some("legacy")),
        case("Grafana not JSON", post(gf, &auth_json, b"\x00\x01\x02"), 400, Some("expected a JSON object")),
        case("Grafana 2 MiB body", post(gf, &auth_json, &big), 413, Some("server.max_body")),
        // Read-only endpoints with odd requests.
        case("/metrics with a junk Accept", request("GET", "/metrics", &[("Accept", "junk/*;q=x, \u{fffd}")], b""), 200, None),
        case("/healthz with a body", request("GET", "/healthz", &[], b"ignored"), 200, None),
        // What the HTTP layer refuses before any handler runs.
        case("garbage request line", b"HELLO\r\n\r\n".to_vec(), 400, None),
        case("a control byte in a header", request("GET", "/metrics", &[("Accept", "\u{1}")], b""), 400, None),
        case("200 headers", many_headers.into_bytes(), 431, None),
        case("a 1 MiB header", huge_header.into_bytes(), 431, None),
    ]
}

#[test]
fn every_endpoint_answers_bad_input_with_a_status_and_a_reason_and_keeps_recording() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let tokdir = tempfile::tempdir().expect("tempdir");
    let token_file = tokdir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let agent = Agent::start(&config(&svc.url, &token_file));
    wait_for("a first window", Duration::from_secs(20), || {
        (agent.windows_kept("app") >= 1).then_some(())
    });
    let kept_before = agent.windows_kept("app");

    let mut failures = Vec::new();
    let mut table = Vec::new();
    let mut agent_errors = 0;
    for c in cases() {
        let a = raw(&agent.api, c.request);
        let reason = a.reason();
        table.push(format!(
            "| {} | {} {} |",
            c.name,
            a.status,
            if reason.is_empty() {
                String::new()
            } else {
                format!("`{}`", reason.chars().take(70).collect::<String>())
            }
        ));
        if a.status != c.status {
            failures.push(format!(
                "{}: status {} (want {}): {:?}",
                c.name, a.status, c.status, reason
            ));
            continue;
        }
        match c.reason {
            Some(want) if !reason.contains(want) => failures.push(format!(
                "{}: reason {reason:?} lacks {want:?} (body {:?})",
                c.name,
                String::from_utf8_lossy(&a.body)
            )),
            Some(_) => agent_errors += 1,
            None => {}
        }
        if a.status == 401 && a.header("WWW-Authenticate").is_none() {
            failures.push(format!("{}: 401 without WWW-Authenticate", c.name));
        }
        if a.status == 405 && a.header("Allow").is_none() {
            failures.push(format!("{}: 405 without Allow", c.name));
        }
    }
    println!("cases tried (status and reason):\n{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Every refusal the agent wrote is counted, by route and status.
    let m = agent.metrics();
    let counted = metric_value(&m, "flightrec_api_errors_total", &[]).unwrap_or(0.0);
    assert!(
        counted >= agent_errors as f64,
        "{counted} counted for {agent_errors} refusals"
    );
    assert!(
        metric_value(
            &m,
            "flightrec_api_errors_total",
            &[("endpoint", "/v1/snapshots/{id}"), ("status", "400")]
        )
        .unwrap_or(0.0)
            >= 10.0
    );
    assert!(
        metric_value(
            &m,
            "flightrec_webhook_rejected_total",
            &[("source", "alertmanager"), ("reason", "malformed")]
        )
        .unwrap_or(0.0)
            >= 6.0
    );

    // Still alive, still recording, and a good request still works.
    assert_eq!(agent.get("/healthz").0, 200);
    wait_for("more windows after the abuse", Duration::from_secs(20), || {
        (agent.windows_kept("app") >= kept_before + 2).then_some(())
    });
    let (s, v) = agent.post(
        "/v1/snapshots",
        r#"{"target":"app","reason":"after bad input"}"#,
        Some(TOKEN),
    );
    assert_eq!(s, 202, "{v}");
    let dir = agent.wait_snapshot(v["id"].as_str().expect("id"), Duration::from_secs(30));
    assert_bundle_valid(&dir);
    let logs = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(!logs.contains("panicked"), "a handler panicked:\n{logs}");
}

#[test]
fn a_flood_of_concurrent_requests_gets_answers_or_a_bounded_503_and_recording_goes_on() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let tokdir = tempfile::tempdir().expect("tempdir");
    let token_file = tokdir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let agent = Agent::start(&config(&svc.url, &token_file));
    wait_for("a first window", Duration::from_secs(20), || {
        (agent.windows_kept("app") >= 1).then_some(())
    });
    let kept_before = agent.windows_kept("app");

    // 96 clients at once, 15 requests each, a mix of good and bad ones.
    let requests: Vec<(Vec<u8>, &[u16])> = vec![
        (get("/v1/targets"), &[200, 503]),
        (get("/v1/snapshots"), &[200, 503]),
        (get("/metrics"), &[200]),
        (get("/healthz"), &[200]),
        (get("/v1/snapshots/%2e%2e%2fetc"), &[400, 503]),
        (
            post("/v1/snapshots", &[BEARER, JSON], b"{\"target\":"),
            &[400, 503],
        ),
        (post("/v1/snapshots", &[JSON], b"{}"), &[401, 503]),
        (
            post(
                "/v1/webhooks/alertmanager",
                &[BEARER, JSON],
                b"{\"version\":\"4\",\"alerts\":[]}",
            ),
            &[200, 503],
        ),
        (post("/v1/webhooks/grafana", &[BEARER, JSON], b"[]"), &[400, 503]),
    ];
    let requests = std::sync::Arc::new(requests);
    let started = Instant::now();
    let clients: Vec<_> = (0..96)
        .map(|i| {
            let (api, requests) = (agent.api.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for j in 0..15 {
                    let (req, allowed) = &requests[(i * 7 + j) % requests.len()];
                    let a = raw(&api, req.clone());
                    let ok = allowed.contains(&a.status) && (a.status < 400 || !a.reason().is_empty());
                    seen.push((
                        a.status,
                        ok,
                        String::from_utf8_lossy(&req[..30.min(req.len())]).to_string(),
                    ));
                }
                seen
            })
        })
        .collect();
    let mut by_status = std::collections::BTreeMap::new();
    for c in clients {
        for (status, ok, what) in c.join().expect("client thread") {
            assert!(ok, "{what:?} got {status}");
            *by_status.entry(status).or_insert(0) += 1;
        }
    }
    println!(
        "1440 requests from 96 clients in {:?}: {by_status:?}",
        started.elapsed()
    );

    // Saturate the limit deterministically: requests whose bodies never
    // finish each hold a place. The next /v1 request is refused at once,
    // with a reason and Retry-After; health and metrics stay outside it.
    let holders: Vec<TcpStream> = (0..flightrec::api::MAX_API_REQUESTS)
        .map(|_| {
            let mut s = TcpStream::connect(host(&agent.api)).expect("connect");
            let head = format!(
                "POST /v1/snapshots HTTP/1.1\r\nHost: flightrec\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
            );
            s.write_all(head.as_bytes()).expect("write head");
            s
        })
        .collect();
    // Probe only once the agent has taken every place: a probe racing the
    // last holders would take a place itself and leave one holder refused.
    let full = flightrec::api::MAX_API_REQUESTS as f64;
    wait_for("every place held", Duration::from_secs(20), || {
        (agent.metric("flightrec_api_requests_in_flight", &[]) == Some(full)).then_some(())
    });
    let refused = raw(&agent.api, get("/v1/targets"));
    assert_eq!(refused.status, 503, "{}", refused.reason());
    assert!(
        refused.reason().contains("API requests in flight"),
        "{}",
        refused.reason()
    );
    assert_eq!(refused.header("Retry-After").as_deref(), Some("1"));
    assert_eq!(raw(&agent.api, get("/healthz")).status, 200);
    assert_eq!(raw(&agent.api, get("/readyz")).status, 200);
    assert_eq!(raw(&agent.api, get("/metrics")).status, 200);
    drop(holders);
    wait_for("every place given back", Duration::from_secs(20), || {
        (agent.metric("flightrec_api_requests_in_flight", &[]) == Some(0.0)).then_some(())
    });
    assert_eq!(raw(&agent.api, get("/v1/targets")).status, 200);
    assert!(
        agent
            .metric(
                "flightrec_api_errors_total",
                &[("endpoint", "/v1/targets"), ("status", "503")]
            )
            .unwrap_or(0.0)
            >= 1.0
    );

    wait_for("recording through the flood", Duration::from_secs(20), || {
        (agent.windows_kept("app") >= kept_before + 2).then_some(())
    });
    let t = agent.target("app");
    assert_eq!(t["state"], "recording", "{t}");
    let logs = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(!logs.contains("panicked"), "a handler panicked");
}

#[test]
fn a_flood_of_idle_connections_never_takes_the_descriptors_recording_needs() {
    // The agent runs with a soft limit of 256 descriptors (a shell's default
    // is often 1024). 400 idle API connections would take them all; the API
    // keeps at most half the limit open, so a latency trigger firing during
    // the flood can still probe, and its bundle can still be written.
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[snapshots]
dir = "{{dir}}/data"
post_trigger = "0s"
[[targets]]
name = "app"
url = "{url}"
window = "1s"
max_age = "10s"
[[triggers]]
kind = "latency"
target = "app"
url = "{url}/slow"
interval = "200ms"
threshold = "100ms"
consecutive = 2
cooldown = "1h"
"#,
        url = svc.url
    );
    let agent = Agent::start_wrapped(&cfg, &[], &["sh", "-c", "ulimit -n 256 && exec \"$@\"", "sh"]);
    wait_for("windows", Duration::from_secs(20), || {
        (agent.windows_kept("app") >= 2).then_some(())
    });
    let limit = agent.metric("flightrec_process_max_fds", &[]).unwrap_or(0.0);
    assert_eq!(limit, 256.0, "the wrapper set the limit");

    // Past the API's limit and the kernel's listen backlog, connecting
    // times out: that is the bound. Open until then, 400 at most. Without
    // the limit all are accepted and the agent's descriptors run out.
    let addr: std::net::SocketAddr = host(&agent.api).parse().expect("address");
    let mut flood = Vec::new();
    while flood.len() < 400 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    println!(
        "{} idle connections open against a limit of 256 descriptors",
        flood.len()
    );
    // Now make the target slow: the trigger probes it and writes a bundle,
    // each needing new descriptors. Watched on disk: the API is flooded.
    let http = reqwest::blocking::Client::new();
    http.get(format!("{}/control?latency=300ms", svc.url))
        .send()
        .expect("control");
    let data = agent.path().join("data");
    let bundle = wait_for(
        "a bundle written during the flood",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(&data)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        && p.join("manifest.json").is_file()
                })
        },
    );
    drop(flood);
    assert_bundle_valid(&bundle);
    let logs = std::fs::read_to_string(&agent.log).unwrap_or_default();
    let emfile: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Too many open files"))
        .collect();
    assert!(emfile.is_empty(), "descriptors ran out:\n{}", emfile.join("\n"));
    wait_for("the API to answer again", Duration::from_secs(20), || {
        (raw(&agent.api, get("/v1/targets")).status == 200).then_some(())
    });
    assert_eq!(agent.target("app")["state"], "recording");
}
