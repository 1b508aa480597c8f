//! 3. Overhead on the service: throughput and latency with no tracing, flightrec, a curl loop and Go's FlightRecorder.

use super::*;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Tracing {
    Off,
    Flightrec,
    CurlLoop,
    FlightRecorder,
}

impl Tracing {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Tracing::Off => "no tracing",
            Tracing::Flightrec => "flightrec (5 s windows, zstd)",
            Tracing::CurlLoop => "curl -o loop",
            Tracing::FlightRecorder => "in-process FlightRecorder",
        }
    }
}

/// One round of load on one way of tracing.
pub(crate) struct ServiceRun {
    pub(crate) rps: f64,
    pub(crate) closed_p99: f64,
    pub(crate) open_p50: f64,
    pub(crate) open_p99: f64,
    /// The service's CPU per request, µs.
    pub(crate) cpu_us: f64,
}

pub(crate) fn loadgen(url: &str, args: &[&str]) -> Value {
    let out = Command::new(fixture_bin("loadgen"))
        .args(["-url", url])
        .args(args)
        .output()
        .expect("run loadgen");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("loadgen said {:?}", String::from_utf8_lossy(&out.stdout)))
}

pub(crate) fn overhead(r: &mut Report, tmp: &Path) {
    r.section(
        "overhead",
        "Overhead on the service",
        "The fixture serves `/work` (~175 µs of CPU per request) under `loadgen` from \
         tests/go on the same machine: closed loop with 4 connections (throughput), then open \
         loop at a fixed rate of half the untraced throughput with 16 connections (latency \
         measured from when each request was due, so stalls are not hidden). The four ways \
         run in turn, in rotated order, a fresh fixture each time; the figures are medians \
         over the rounds. On 2 cores the agent, the loop or the load generator compete with \
         the service for CPU: that is part of the cost measured.",
    );
    let rounds = r.scale(3, 1) as usize;
    let secs = r.scale(10, 3);
    let d = format!("{secs}s");
    let modes = [
        Tracing::Off,
        Tracing::Flightrec,
        Tracing::CurlLoop,
        Tracing::FlightRecorder,
    ];
    let mut results: BTreeMap<usize, Vec<ServiceRun>> = BTreeMap::new();
    let mut rate = 0.0;
    for round in 0..rounds {
        for k in 0..modes.len() {
            let i = (k + round) % modes.len();
            let mode = modes[i];
            let fx = match mode {
                Tracing::FlightRecorder => GoService::start(
                    "fixture",
                    &["-flightrecorder", "60s", "-flightrecorder-maxbytes", "67108864"],
                ),
                _ => GoService::start("fixture", &[]),
            };
            let agent = (mode == Tracing::Flightrec).then(|| {
                let a = start_agent(&target_entry("svc", &fx.url, "window = \"5s\""));
                wait_for("flightrec to record", Duration::from_secs(30), || {
                    (a.target("svc")["state"] == "recording" || a.windows_kept("svc") > 0).then_some(())
                });
                a
            });
            let looped = (mode == Tracing::CurlLoop).then(|| {
                let dir = tmp.join(format!("overhead-{round}"));
                let l = ShellLoop::curl(&fx.url, Duration::from_secs(5), &dir, usize::MAX >> 1);
                wait_for("the curl loop to start", Duration::from_secs(30), || {
                    l.files()
                        .first()
                        .and_then(|f| std::fs::metadata(f).ok())
                        .filter(|m| m.len() > 0)
                        .map(|_| ())
                });
                l
            });
            let work = format!("{}/work", fx.url);
            let cpu0 = cpu_seconds(fx.proc.pid());
            let closed = loadgen(&work, &["-c", "4", "-d", &d]);
            let cpu_closed = cpu_seconds(fx.proc.pid()) - cpu0;
            if rate == 0.0 {
                // Half of what the untraced service managed in the first round.
                let rps = if mode == Tracing::Off {
                    closed["rps"].as_f64().unwrap_or(1000.0)
                } else {
                    2000.0
                };
                rate = ((rps / 2.0) / 100.0).round().max(1.0) * 100.0;
            }
            let cpu1 = cpu_seconds(fx.proc.pid());
            let open = loadgen(&work, &["-c", "16", "-d", &d, "-rps", &rate.to_string()]);
            let cpu_open = cpu_seconds(fx.proc.pid()) - cpu1;
            if let Some(l) = looped {
                l.stop();
            }
            drop(agent);
            let per_req = |cpu: f64, v: &Value| cpu * 1e6 / v["requests"].as_f64().unwrap_or(1.0).max(1.0);
            results.entry(i).or_default().push(ServiceRun {
                rps: closed["rps"].as_f64().unwrap_or(0.0),
                closed_p99: closed["p99_ms"].as_f64().unwrap_or(0.0),
                open_p50: open["p50_ms"].as_f64().unwrap_or(0.0),
                open_p99: open["p99_ms"].as_f64().unwrap_or(0.0),
                cpu_us: (per_req(cpu_closed, &closed) + per_req(cpu_open, &open)) / 2.0,
            });
            println!("round {round} {}: closed {closed} open {open}", mode.label());
        }
    }
    let med = |i: usize, pick: fn(&ServiceRun) -> f64| -> f64 {
        median(
            &results
                .get(&i)
                .map(|v| v.iter().map(pick).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    };
    let base_rps = med(0, |x| x.rps);
    let mut rows = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        let (rps, p99c, p50o, p99o, cpu) = (
            med(i, |x| x.rps),
            med(i, |x| x.closed_p99),
            med(i, |x| x.open_p50),
            med(i, |x| x.open_p99),
            med(i, |x| x.cpu_us),
        );
        r.put(
            "overhead",
            mode.label(),
            json!({"closed_rps": rps, "closed_p99_ms": p99c, "open_rps": rate, "open_p50_ms": p50o,
                   "open_p99_ms": p99o, "service_cpu_us_per_request": cpu, "rps_vs_no_tracing": rps / base_rps,
                   "rounds": results.get(&i).map_or(0, Vec::len)}),
        );
        rows.push(vec![
            mode.label().into(),
            f(rps, 0),
            format!("{:.1}%", (rps / base_rps - 1.0) * 100.0),
            f(p99c, 2),
            f(p50o, 2),
            f(p99o, 2),
            f(cpu, 0),
        ]);
    }
    r.table(
        &[
            "tracing",
            "throughput rps",
            "vs none",
            "p99 ms (closed)",
            &format!("p50 ms at {rate} rps"),
            &format!("p99 ms at {rate} rps"),
            "service CPU µs/request",
        ],
        &rows,
    );
}
