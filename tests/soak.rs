//! Soak: the release agent for SOAK_MINUTES (default 30) against several real
//! Go targets (two busy, one idle, one flapping between normal and every
//! kind of misbehaviour, one down), periodic API snapshots and a latency
//! trigger, and an S3 sink (s3s-fs) that is killed and restarted again and
//! again. Samples RSS, open fds, ring and spool every 5 s; at the end checks
//! memory and fds are flat and every bundle reached S3 byte for byte, and
//! writes target/soak/report.md and target/soak/samples.csv.
//!
//! Run through `tests/soak/run.sh [MINUTES]`; ignored by `cargo test`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::delivery::*;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const BUCKET: &str = "soak";
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// The sink is down this long...
const SINK_DOWN: Duration = Duration::from_secs(60);
/// ...once every this long.
const SINK_CYCLE: Duration = Duration::from_secs(180);
const FLAP_EVERY: Duration = Duration::from_secs(20);
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);
const SLOW_EVERY: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Default)]
struct Sample {
    t: f64,
    rss_mb: f64,
    fds: u64,
    ring_mb: f64,
    spool_bundles: f64,
    pending: f64,
    windows: f64,
    window_errors: f64,
    sink_up: bool,
}

fn proc_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn proc_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if var == 0.0 {
        return 0.0;
    }
    points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / var
}

fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(text, name, labels).unwrap_or(0.0)
}

fn sha256(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| hex::encode(Sha256::digest(&b)))
}

/// A delivered bundle at the sink: its manifest is there (written last),
/// and every window matches the sha256 the manifest gives.
fn verify_remote(remote: &Path) -> Result<usize, String> {
    let m: Value = serde_json::from_slice(
        &std::fs::read(remote.join("manifest.json")).map_err(|e| format!("manifest.json: {e}"))?,
    )
    .map_err(|e| e.to_string())?;
    let windows = m["windows"].as_array().ok_or("no windows")?;
    for w in windows {
        let file = w["file"].as_str().ok_or("window without file")?;
        let got = sha256(&remote.join(file)).ok_or(format!("{file} missing"))?;
        if Some(got.as_str()) != w["sha256"].as_str() {
            return Err(format!("{file}: sha256 differs from the manifest"));
        }
    }
    if !remote.join("manifest.pb").is_file() {
        return Err("manifest.pb missing".into());
    }
    Ok(windows.len())
}

#[test]
#[ignore = "long: run through tests/soak/run.sh"]
fn soak() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30.0);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let out = repo_root().join("target/soak");
    std::fs::create_dir_all(&out).expect("target/soak");
    let tmp = tempfile::tempdir().expect("tempdir");

    let busy1 = GoService::start("fixture", &["-pairs", "2", "-rate", "10000"]);
    let busy2 = GoService::start("fixture", &["-pairs", "1", "-rate", "5000"]);
    let idle = GoService::start("fixture", &[]);
    let flapper = GoService::start("fixture", &["-pairs", "1", "-rate", "1000"]);
    let down = format!("http://127.0.0.1:{}", free_port());
    let s3_port = free_port();
    let mut s3 = Some(S3Server::start(&tmp.path().join("s3"), s3_port, BUCKET));
    let spool = tmp.path().join("spool");
    let target = |name: &str, url: &str| {
        format!(
            "[[targets]]\nname = \"{name}\"\nurl = \"{url}\"\nwindow = \"2s\"\nmax_age = \"30s\"\nmax_bytes = \"32MiB\"\nlabels = {{ service = \"{name}\" }}\nbackoff_max = \"10s\"\n"
        )
    };
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[snapshots]
dir = "{}"
post_trigger = "1s"
max_bundles = 40
[ring]
max_bytes = "96MiB"
[trigger_limits]
cooldown = "60s"
max_fires = 100
per = "1h"
[[triggers]]
kind = "latency"
target = "busy2"
url = "{}/slow"
interval = "500ms"
threshold = "100ms"
consecutive = 3
cooldown = "60s"
[[sinks]]
kind = "s3"
bucket = "{BUCKET}"
prefix = "soak"
endpoint = "http://127.0.0.1:{s3_port}"
region = "us-east-1"
allow_http = true
retry_initial = "500ms"
retry_max = "10s"
breaker_failures = 3
breaker_cooldown = "5s"
{}{}{}{}{}"#,
        spool.display(),
        busy2.url,
        target("busy1", &busy1.url),
        target("busy2", &busy2.url),
        target("idle", &idle.url),
        target("flapper", &flapper.url),
        target("down", &down),
    );
    let mut agent = Agent::start_with_env(
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let pid = agent.proc.pid();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    println!("soak: {minutes} min, agent pid {pid}, API {}", agent.api);

    let modes = [
        "normal",
        "slow",
        "normal",
        "endless-trace",
        "normal",
        "garbage",
        "already",
        "normal",
        "html",
        "404",
        "endless",
    ];
    let snap_targets = ["busy1", "busy2", "idle"];
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut bundles: BTreeMap<String, String> = BTreeMap::new(); // id -> target
    let (mut next_sample, mut next_flap, mut next_snap, mut next_slow) =
        (Duration::ZERO, FLAP_EVERY, SNAPSHOT_EVERY, SLOW_EVERY);
    let mut slow_until: Option<Duration> = None;
    let (mut flips, mut api_snapshots, mut refused, mut outages) = (0usize, 0usize, 0usize, 0usize);
    let mut csv =
        String::from("t_s,rss_mb,fds,ring_mb,spool_bundles,delivery_pending,windows,window_errors,sink_up\n");

    while started.elapsed() < total {
        let now = started.elapsed();
        // The sink: down SINK_DOWN out of every SINK_CYCLE (not in the last cycle).
        let in_cycle = Duration::from_secs(now.as_secs() % SINK_CYCLE.as_secs());
        let want_down = in_cycle >= SINK_CYCLE - SINK_DOWN && now + SINK_CYCLE < total;
        if want_down && s3.is_some() {
            if let Some(mut s) = s3.take() {
                s.proc.kill();
            }
            outages += 1;
        } else if !want_down && s3.is_none() {
            s3 = Some(S3Server::start(&tmp.path().join("s3"), s3_port, BUCKET));
        }
        if now >= next_flap {
            let mode = modes[flips % modes.len()];
            let _ = http
                .get(format!("{}/control?trace_mode={mode}", flapper.url))
                .send();
            flips += 1;
            next_flap += FLAP_EVERY;
        }
        if now >= next_slow {
            let _ = http.get(format!("{}/control?latency=300ms", busy2.url)).send();
            slow_until = Some(now + Duration::from_secs(5));
            next_slow += SLOW_EVERY;
        }
        if slow_until.is_some_and(|u| now >= u) {
            let _ = http.get(format!("{}/control?latency=0s", busy2.url)).send();
            slow_until = None;
        }
        if now >= next_snap {
            let t = snap_targets[api_snapshots % snap_targets.len()];
            let (s, v) = agent.post(
                "/v1/snapshots",
                &format!("{{\"target\":\"{t}\",\"reason\":\"soak\"}}"),
                None,
            );
            match s {
                202 => {}
                507 => refused += 1,
                _ => panic!("snapshot request: {s} {v}"),
            }
            api_snapshots += 1;
            next_snap += SNAPSHOT_EVERY;
        }
        if now >= next_sample {
            let m = agent.metrics();
            let (_, list) = agent.get("/v1/snapshots");
            for s in list["snapshots"].as_array().into_iter().flatten() {
                if s["phase"] == "complete" {
                    if let (Some(id), Some(t)) = (s["id"].as_str(), s["target"].as_str()) {
                        bundles.insert(id.to_string(), t.to_string());
                    }
                }
            }
            let sample = Sample {
                t: now.as_secs_f64(),
                rss_mb: proc_rss_mb(pid),
                fds: proc_fds(pid),
                ring_mb: sum_metric(&m, "flightrec_ring_global_bytes", &[]) / 1048576.0,
                spool_bundles: sum_metric(&m, "flightrec_spool_bundles", &[]),
                pending: sum_metric(&m, "flightrec_delivery_pending_bundles", &[]),
                windows: sum_metric(&m, "flightrec_windows_total", &[]),
                window_errors: sum_metric(&m, "flightrec_window_errors_total", &[]),
                sink_up: s3.is_some(),
            };
            let _ = writeln!(
                csv,
                "{:.0},{:.1},{},{:.1},{},{},{},{},{}",
                sample.t,
                sample.rss_mb,
                sample.fds,
                sample.ring_mb,
                sample.spool_bundles,
                sample.pending,
                sample.windows,
                sample.window_errors,
                sample.sink_up as u8
            );
            if samples.len() % 12 == 0 {
                println!(
                    "soak {:>5.0}s: rss {:.1} MB, fds {}, ring {:.1} MB, spool {}, pending {}, windows {}, bundles seen {}, sink {}",
                    sample.t,
                    sample.rss_mb,
                    sample.fds,
                    sample.ring_mb,
                    sample.spool_bundles,
                    sample.pending,
                    sample.windows,
                    bundles.len(),
                    if sample.sink_up { "up" } else { "DOWN" }
                );
                let _ = std::fs::write(out.join("samples.csv"), &csv);
            }
            samples.push(sample);
            next_sample += SAMPLE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = http
        .get(format!("{}/control?trace_mode=normal", flapper.url))
        .send();
    let s3 = s3.unwrap_or_else(|| S3Server::start(&tmp.path().join("s3"), s3_port, BUCKET));

    // Drain: everything pending reaches the sink, then an orderly stop.
    let drained = wait_for("every bundle delivered", Duration::from_secs(300), || {
        let m = agent.metrics();
        (sum_metric(&m, "flightrec_delivery_pending_bundles", &[]) == 0.0).then_some(m)
    });
    let (_, list) = agent.get("/v1/snapshots");
    for s in list["snapshots"].as_array().into_iter().flatten() {
        if let (Some(id), Some(t), "complete") = (
            s["id"].as_str(),
            s["target"].as_str(),
            s["phase"].as_str().unwrap_or(""),
        ) {
            bundles.insert(id.to_string(), t.to_string());
        }
    }
    let status = agent.stop();
    let _ = std::fs::copy(&agent.log, out.join("agent.log"));

    // Every bundle ever seen complete is at the sink, whole.
    let mut bad = Vec::new();
    let mut windows_verified = 0;
    let mut compared_local = 0;
    for (id, t) in &bundles {
        let remote = s3.object(
            BUCKET,
            &format!("soak/{t}/{}-{}-{}/{id}", &id[..4], &id[4..6], &id[6..8]),
        );
        match verify_remote(&remote) {
            Ok(n) => windows_verified += n,
            Err(e) => bad.push(format!("{id}: {e}")),
        }
        let local = spool.join(id);
        if local.join("manifest.json").is_file() {
            compared_local += 1;
            for e in std::fs::read_dir(&local).into_iter().flatten().flatten() {
                if sha256(&e.path()) != sha256(&remote.join(e.file_name())) {
                    bad.push(format!("{id}: {:?} differs from the local copy", e.file_name()));
                }
            }
        }
    }

    // Memory and fds: after a warm-up (rings fill over max_age, the spool
    // over its first bundles), the last third may not sit above the first.
    let warm = samples
        .iter()
        .position(|s| {
            s.t >= (total.as_secs_f64() * 0.2)
                .max(120.0)
                .min(total.as_secs_f64() / 2.0)
        })
        .unwrap_or(0);
    let steady = &samples[warm..];
    let third = (steady.len() / 3).max(1);
    let first: Vec<&Sample> = steady.iter().take(third).collect();
    let last: Vec<&Sample> = steady.iter().rev().take(third).collect();
    let col = |v: &[&Sample], f: fn(&Sample) -> f64| v.iter().map(|s| f(s)).collect::<Vec<f64>>();
    let rss_first = mean(&col(&first, |s| s.rss_mb));
    let rss_last = mean(&col(&last, |s| s.rss_mb));
    let rss_max = max(&col(&samples.iter().collect::<Vec<_>>(), |s| s.rss_mb));
    let fds_first = max(&col(&first, |s| s.fds as f64));
    let fds_last = max(&col(&last, |s| s.fds as f64));
    let ring_max = max(&col(&samples.iter().collect::<Vec<_>>(), |s| s.ring_mb));
    let late: Vec<(f64, f64)> = samples[samples.len() / 2..]
        .iter()
        .map(|s| (s.t, s.rss_mb))
        .collect();
    let rss_slope = slope(&late) * 600.0;
    let rss_ok = rss_last <= rss_first * 1.10 + 8.0;
    let fds_ok = fds_last <= fds_first + 8.0;

    let m = &drained;
    let per_target: Vec<String> = ["busy1", "busy2", "idle", "flapper", "down"]
        .iter()
        .map(|t| {
            format!(
                "| {t} | {} | {} | {} |",
                sum_metric(
                    m,
                    "flightrec_windows_total",
                    &[("target", t), ("result", "complete")]
                ),
                sum_metric(
                    m,
                    "flightrec_windows_total",
                    &[("target", t), ("result", "truncated")]
                ),
                sum_metric(m, "flightrec_window_errors_total", &[("target", t)]),
            )
        })
        .collect();
    let reasons: Vec<String> = [
        "connect",
        "slot_busy",
        "http_status",
        "not_a_trace",
        "corrupt",
        "truncated_empty",
        "backlog",
        "request",
    ]
    .iter()
    .map(|r| {
        format!(
            "{r} {}",
            sum_metric(m, "flightrec_window_errors_total", &[("reason", r)])
        )
    })
    .collect();
    let verdict = bad.is_empty() && rss_ok && fds_ok && status.success();
    let report = format!(
        "# flightrec soak report\n\n\
         - run: {} for {minutes} min ({} samples every {}s), {} build\n\
         - targets: busy1 (2 pairs x 10000/s), busy2 (1 x 5000/s, /slow made slow for 5 s every {}s), idle, flapper (trace mode changed every {}s through {}), down (nothing listens); window 2s, max_age 30s, ring budget 96 MiB\n\
         - triggers: an API snapshot every {}s (busy1, busy2, idle in turn); latency trigger on busy2 (threshold 100ms, 3 in a row, cooldown 60s)\n\
         - sink: s3s-fs, killed for {}s out of every {}s ({outages} outages); spool max_bundles 40 (delivered bundles evicted)\n\n\
         ## Result: {}\n\n\
         | figure | value |\n|---|---|\n\
         | RSS after warm-up, first third (mean) | {rss_first:.1} MB |\n\
         | RSS, last third (mean) | {rss_last:.1} MB ({}) |\n\
         | RSS, peak | {rss_max:.1} MB |\n\
         | RSS trend over the second half (least squares) | {rss_slope:+.2} MB per 10 min |\n\
         | open fds, first third (max) / last third (max) | {fds_first:.0} / {fds_last:.0} ({}) |\n\
         | ring bytes, peak | {ring_max:.1} MB |\n\
         | windows kept | {} |\n\
         | window errors by reason | {} |\n\
         | API snapshots asked / refused (spool full) | {api_snapshots} / {refused} |\n\
         | latency triggers fired | {} |\n\
         | bundles written / failed | {} / {} |\n\
         | bundles delivered and verified at S3 (sha256 of every window against the manifest) | {} of {} ({windows_verified} windows; {compared_local} also compared with the local copy) |\n\
         | delivery attempts failed (sink down) / retries | {} / {} |\n\
         | spool evictions (delivered bundles) | {} |\n\
         | agent exit on SIGTERM | {status} |\n\n\
         | target | windows complete | windows truncated | window errors |\n|---|---|---|---|\n{}\n\n\
         Memory rule: mean RSS of the last third of the samples after warm-up at most 10% + 8 MB above the first third's; fds: max of the last third at most 8 above the first third's.\n\
         Samples: target/soak/samples.csv. Problems: {}\n",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        samples.len(),
        SAMPLE_EVERY.as_secs(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        SLOW_EVERY.as_secs(),
        FLAP_EVERY.as_secs(),
        modes.join(", "),
        SNAPSHOT_EVERY.as_secs(),
        SINK_DOWN.as_secs(),
        SINK_CYCLE.as_secs(),
        if verdict { "PASS" } else { "FAIL" },
        if rss_ok { "flat" } else { "GROWING" },
        if fds_ok { "flat" } else { "GROWING" },
        sum_metric(m, "flightrec_windows_total", &[]),
        reasons.join(", "),
        sum_metric(m, "flightrec_triggers_fired_total", &[("kind", "latency")]),
        sum_metric(m, "flightrec_snapshots_total", &[("result", "written")]),
        sum_metric(m, "flightrec_snapshots_total", &[("result", "failed")]),
        bundles.len() - bad.iter().filter(|b| !b.contains("local copy")).count(),
        bundles.len(),
        sum_metric(m, "flightrec_deliveries_total", &[("result", "failed")]),
        sum_metric(m, "flightrec_delivery_retries_total", &[]),
        sum_metric(m, "flightrec_spool_evictions_total", &[]),
        per_target.join("\n"),
        if bad.is_empty() { "none".to_string() } else { bad.join("; ") },
    );
    std::fs::write(out.join("report.md"), &report).expect("write report");
    std::fs::write(out.join("samples.csv"), &csv).expect("write samples");
    println!("{report}");
    assert!(status.success(), "agent exit {status}");
    assert!(bad.is_empty(), "bundles not delivered whole: {bad:?}");
    assert!(rss_ok, "RSS grew: {rss_first:.1} MB -> {rss_last:.1} MB");
    assert!(fds_ok, "fds grew: {fds_first} -> {fds_last}");
    assert!(
        bundles.len() as f64 >= minutes * 1.5,
        "too few bundles: {}",
        bundles.len()
    );
}
