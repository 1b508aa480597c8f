//! 7. The Alertmanager follower: what one poll of `GET /api/v2/alerts` costs Alertmanager and the agent, with 10 and with 1000 active alerts.

use super::*;

use common::alerting::{post_alerts, Service};

/// `n` alerts as a fleet's Prometheus would post them: 20 rules over hosts
/// none of which is the agent's (an agent of a fleet sees mostly alerts
/// about other hosts), with annotations of a usual length.
fn fleet_alerts(n: usize) -> Value {
    let now = SystemTime::now();
    let at = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    Value::Array(
        (0..n)
            .map(|i| {
                let instance = format!("10.0.{}.{}:8080", i / 250, i % 250);
                json!({
                    "labels": {"alertname": format!("BenchRule{:02}", i % 20), "instance": instance,
                               "job": "api", "severity": "page", "team": "payments"},
                    "annotations": {
                        "summary": format!("p99 latency of {instance} is above 500ms"),
                        "description": "The 99th percentile of request latency has been above the SLO for 5 minutes; see the runbook.",
                        "runbook_url": "https://runbooks.example.com/api/latency"
                    },
                    "startsAt": at(now),
                    "endsAt": at(now + Duration::from_secs(3600)),
                    "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=histogram_quantile%280.99%2C+rate%28http_request_duration_seconds_bucket%5B5m%5D%29%29+%3E+0.5",
                })
            })
            .collect(),
    )
}

pub(crate) fn alertmanager(r: &mut Report, _tmp: &Path) {
    let secs = r.scale(30, 5);
    let interval_ms = 250;
    r.section(
        "alertmanager",
        "Alertmanager follower: cost of a poll",
        &format!(
            "Debian's Alertmanager 0.25 on loopback holding N active alerts (20 rules over N \
             hosts, none of them the agent's; three annotations each). *answer* is \
             `GET /api/v2/alerts?active=true&silenced=false&inhibited=false` as the agent asks \
             it, timed by the benchmark's own client over 100 requests after 5 to warm up. \
             Then an agent recording one idle fixture follows that Alertmanager every \
             {interval_ms} ms for {secs} s: *agent CPU per poll* is its CPU over the run, less \
             what the same agent used not following anything (measured first, same run), \
             divided by the polls it made (`flightrec_alertmanager_poll_duration_seconds_count`); \
             *Alertmanager CPU per poll* is Alertmanager's CPU over the same run divided by \
             the same polls; *poll* is the agent's mean poll time, request to answer decoded. \
             The last row asks for one rule's alerts only (`filter`), 50 of the 1000."
        ),
    );
    let fx = GoService::start("fixture", IDLE.args);
    let target = target_entry("app", &fx.url, "window = \"5s\"");
    // The agent alone: its cost without following.
    let base = start_agent(&target);
    wait_windows_gently(&base, "app", 1, Duration::from_secs(60));
    let pid = base.proc.pid();
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let base_rate = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    drop(base);

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut rows = Vec::new();
    let one_rule = "alertname=\"BenchRule00\"";
    for (n, filter, returned) in [
        (10usize, None, 10usize),
        (1000, None, 1000),
        (1000, Some(one_rule), 50),
    ] {
        let am = Service::alertmanager("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n");
        post_alerts(&am.url, &fleet_alerts(n));
        let mut query = format!(
            "{}/api/v2/alerts?active=true&silenced=false&inhibited=false",
            am.url
        );
        if let Some(m) = filter {
            query += &format!("&filter={}", m.replace('=', "%3D").replace('"', "%22"));
        }
        let mut times = Vec::new();
        let mut bytes = 0;
        for i in 0..105 {
            let t = Instant::now();
            let body = client
                .get(&query)
                .send()
                .and_then(|r| r.bytes())
                .expect("GET /api/v2/alerts");
            if i >= 5 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let got: Vec<Value> = serde_json::from_slice(&body).expect("alerts");
            assert_eq!(got.len(), returned, "Alertmanager answers every alert asked for");
            bytes = body.len();
        }
        let times = sorted(times);

        let agent = start_agent(&format!(
            "{target}\n[alertmanager]\nurls = [\"{}\"]\ninterval = \"{interval_ms}ms\"\n{}",
            am.url,
            filter.map_or(String::new(), |m| format!("filter = ['{m}']\n"))
        ));
        let url = format!("{}/", am.url);
        let polls = |a: &Agent| {
            let m = a.metrics();
            (
                metric_value(
                    &m,
                    "flightrec_alertmanager_poll_duration_seconds_count",
                    &[("url", &url)],
                )
                .unwrap_or(0.0),
                metric_value(
                    &m,
                    "flightrec_alertmanager_poll_duration_seconds_sum",
                    &[("url", &url)],
                )
                .unwrap_or(0.0),
            )
        };
        wait_for("a poll of every alert", Duration::from_secs(60), || {
            (agent.metric("flightrec_alertmanager_alerts", &[("url", &url)]) == Some(returned as f64))
                .then_some(())
        });
        let (apid, ampid) = (agent.proc.pid(), am.proc.pid());
        let (p0, s0) = polls(&agent);
        let (c0, m0, t0) = (cpu_seconds(apid), cpu_seconds(ampid), Instant::now());
        // Few requests to the agent while it is measured: they would show in its CPU.
        while t0.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_millis(250));
        }
        let (c1, m1, wall) = (cpu_seconds(apid), cpu_seconds(ampid), t0.elapsed().as_secs_f64());
        let (p1, s1) = polls(&agent);
        let made = p1 - p0;
        let agent_ms = ((c1 - c0) - base_rate * wall) / made * 1000.0;
        let am_ms = (m1 - m0) / made * 1000.0;
        let poll_ms = (s1 - s0) / made * 1000.0;
        let errors = agent
            .metric("flightrec_alertmanager_poll_errors_total", &[])
            .unwrap_or(0.0);
        r.check(
            errors == 0.0 && made > 0.0,
            format!("alertmanager: {n} alerts, {returned} asked for: {made} polls, {errors} poll errors"),
        );
        r.put(
            "alertmanager",
            &format!("alerts_{n}_returned_{returned}"),
            json!({"alerts": n, "returned": returned, "filter": filter, "answer_bytes": bytes, "answer_ms_median": pct(&times, 0.5),
                   "answer_ms_p90": pct(&times, 0.9), "polls": made, "poll_ms_mean": poll_ms,
                   "agent_cpu_ms_per_poll": agent_ms, "alertmanager_cpu_ms_per_poll": am_ms,
                   "agent_base_cpu_percent": base_rate * 100.0}),
        );
        rows.push(vec![
            n.to_string(),
            match filter {
                Some(m) => format!("{returned} (`{m}`)"),
                None => returned.to_string(),
            },
            format!("{:.1}", bytes as f64 / 1024.0),
            format!("{} / {}", f(pct(&times, 0.5), 2), f(pct(&times, 0.9), 2)),
            f(poll_ms, 2),
            f(agent_ms, 3),
            f(am_ms, 2),
            format!("{made:.0}"),
        ]);
    }
    r.table(
        &[
            "active alerts",
            "answered",
            "answer KiB",
            "answer ms, median / p90",
            "poll ms (agent)",
            "agent CPU ms per poll",
            "Alertmanager CPU ms per poll",
            "polls",
        ],
        &rows,
    );
    r.note(&format!(
        "The agent alone (one idle target, not following) used {:.2}% of a core.",
        base_rate * 100.0
    ));
}
