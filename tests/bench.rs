//! Benchmarks: what flightrec costs and how much of the timeline it catches,
//! each figure beside a baseline measured in the same run (a shell loop of
//! `curl -o`, one kept-alive `curl`, no tracing at all, Go's in-process
//! `runtime/trace.FlightRecorder`), so the report gives ratios that hold on
//! a shared, noisy machine.
//!
//! Run through `tests/bench/run.sh [--quick] [SECTION...]`; ignored by
//! `cargo test`. Writes `target/bench/results.json` and `report.md`.
//! Sections: coverage, cost, overhead, scale, trigger, memory.
//! `BENCH_AGENT_BIN=PATH` benchmarks another build of the agent.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::delivery::*;
use common::*;
use serde_json::{json, Value};

/// One kept figure: what it is, its value, and its unit, by section.
struct Report {
    quick: bool,
    json: serde_json::Map<String, Value>,
    md: String,
    /// Broken invariants (not slow figures): the run fails on them at the
    /// end, after every figure is written.
    broken: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            println!("BROKEN: {what}");
            self.broken.push(what);
        }
    }

    fn section(&mut self, name: &str, title: &str, intro: &str) {
        println!("\n== {title}");
        let _ = write!(self.md, "\n## {title}\n\n{intro}\n\n");
        self.json.insert(name.into(), json!({}));
    }

    fn put(&mut self, section: &str, key: &str, v: Value) {
        if let Some(Value::Object(m)) = self.json.get_mut(section) {
            m.insert(key.into(), v);
        }
    }

    fn table(&mut self, head: &[&str], rows: &[Vec<String>]) {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let head: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        let mut text = line(&head);
        text += &line(&head.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
        for r in rows {
            text += &line(r);
        }
        print!("{text}");
        self.md += &text;
        self.md += "\n";
    }

    fn note(&mut self, text: &str) {
        println!("{text}");
        let _ = writeln!(self.md, "{text}\n");
    }

    /// Quick runs (CI) shorten every phase; figures are then only a smoke check.
    fn scale(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

// ---------- measuring processes ----------

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds a live process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    match (f.get(11), f.get(12)) {
        (Some(u), Some(s)) => (u + s) / clk_tck(),
        _ => 0.0,
    }
}

/// A `/proc/PID/status` figure in MB (VmRSS, VmHWM).
fn status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(key).and_then(|v| {
                    v.trim_start_matches(':')
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
            })
        })
        .map_or(0.0, |kb| kb * 1024.0 / 1e6)
}

/// What a finished process tree used, from `wait4`.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: f64,
    /// Largest resident set of the process or any of its children, MB.
    max_rss_mb: f64,
}

/// A shell loop (the baseline a person would write), its own process group,
/// killed with its children if dropped before it is waited for.
struct ShellLoop {
    pid: i32,
    dir: PathBuf,
    reaped: bool,
}

impl ShellLoop {
    /// `curl -o` one window after another into `dir` until `dir/stop`
    /// exists or `max` windows are written: a new process and connection
    /// per window.
    fn curl(url: &str, window: Duration, dir: &Path, max: usize) -> ShellLoop {
        let script = r#"i=0; while [ ! -e "$2/stop" ] && [ "$i" -lt "$3" ]; do i=$((i+1)); curl -sS -o "$2/$(printf 'w%05d.trace' "$i")" "$1" || sleep 0.2; done"#;
        Self::spawn(
            "bash",
            &[
                "-c",
                script,
                "bash",
                &trace_url(url, window),
                &dir.display().to_string(),
                &max.to_string(),
            ],
            dir,
        )
    }

    /// One `curl` fetching `n` windows over one kept-alive connection.
    fn curl_keepalive(url: &str, window: Duration, dir: &Path, n: usize) -> ShellLoop {
        let u = trace_url(url, window);
        let mut args = vec!["-sS".to_string()];
        for i in 1..=n {
            args.push(u.clone());
            args.push("-o".into());
            args.push(dir.join(format!("w{i:05}.trace")).display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn("curl", &args, dir)
    }

    // Reaped by `wait4` (for its rusage), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn spawn(program: &str, args: &[&str], dir: &Path) -> ShellLoop {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(dir).expect("loop dir");
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        ShellLoop {
            pid: child.id() as i32,
            dir: dir.to_path_buf(),
            reaped: false,
        }
    }

    /// Asks the loop to stop after the window in flight, and reaps it.
    fn stop(mut self) -> Usage {
        std::fs::write(self.dir.join("stop"), b"").expect("stop file");
        self.wait()
    }

    fn wait(&mut self) -> Usage {
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; pointers are valid for the call.
        let r = unsafe { libc::wait4(self.pid, &mut status, 0, &mut ru) };
        assert_eq!(r, self.pid, "wait4 on the baseline loop");
        self.reaped = true;
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
            max_rss_mb: ru.ru_maxrss as f64 * 1024.0 / 1e6,
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == "trace"));
        v.sort();
        v
    }
}

impl Drop for ShellLoop {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signals our own process group.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            let _ = self.wait();
        }
    }
}

fn trace_url(base: &str, window: Duration) -> String {
    format!("{base}/debug/pprof/trace?seconds={}", window.as_secs_f64())
}

fn file_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

// ---------- statistics ----------

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn median(v: &[f64]) -> f64 {
    pct(&sorted(v.to_vec()), 0.5)
}

fn f(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.digits$}")
    }
}

/// Coverage and gaps of consecutive windows, as Go's own parser dates them.
#[derive(Debug, Clone, Default)]
struct Timeline {
    windows: usize,
    invalid: usize,
    coverage: f64,
    gaps_ms: Vec<f64>,
}

impl Timeline {
    fn of(files: &[PathBuf]) -> Timeline {
        let checks = tracecheck(files);
        let invalid = checks.iter().filter(|c| !c.ok).count() + files.len().saturating_sub(checks.len());
        let good: Vec<&Check> = checks.iter().filter(|c| c.ok && c.last_ns > c.first_ns).collect();
        let gaps_ms: Vec<f64> = good
            .windows(2)
            .map(|p| (p[1].first_ns as f64 - p[0].last_ns as f64) / 1e6)
            .collect();
        let coverage = match (good.first(), good.last()) {
            (Some(a), Some(b)) if b.last_ns > a.first_ns => {
                let covered: f64 = good.iter().map(|c| (c.last_ns - c.first_ns) as f64).sum();
                covered / (b.last_ns - a.first_ns) as f64
            }
            _ => f64::NAN,
        };
        Timeline {
            windows: files.len(),
            invalid,
            coverage,
            gaps_ms,
        }
    }

    fn json(&self) -> Value {
        let g = sorted(self.gaps_ms.clone());
        json!({
            "windows": self.windows, "rejected_by_go_parser": self.invalid,
            "coverage": self.coverage,
            "gap_ms": {"median": pct(&g, 0.5), "p99": pct(&g, 0.99), "max": pct(&g, 1.0), "n": g.len()},
        })
    }

    fn row(&self, what: &str, client: &str) -> Vec<String> {
        let g = sorted(self.gaps_ms.clone());
        vec![
            what.into(),
            client.into(),
            format!("{} ({} rejected)", self.windows, self.invalid),
            format!("{:.3}%", self.coverage * 100.0),
            f(pct(&g, 0.5), 2),
            f(pct(&g, 0.99), 2),
            f(pct(&g, 1.0), 2),
        ]
    }
}

// ---------- the agent ----------

/// A Go fixture workload: flags and what it is called in the report.
struct Load {
    name: &'static str,
    args: &'static [&'static str],
}

const IDLE: Load = Load {
    name: "idle",
    args: &[],
};
const ONE_MB: Load = Load {
    name: "~1 MB/s",
    args: &["-pairs", "4", "-rate", "7500"],
};
const FIVE_MB: Load = Load {
    name: "~5 MB/s",
    args: &["-pairs", "4", "-rate", "37500"],
};
const TWENTY_MB: Load = Load {
    name: "~20 MB/s",
    args: &["-pairs", "4", "-rate", "150000"],
};

fn target_toml(name: &str, url: &str, extra: &str) -> String {
    format!("[[targets]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

fn start_agent(config: &str) -> Agent {
    start_agent_env(config, &[])
}

fn start_agent_env(config: &str, env: &[(&str, &str)]) -> Agent {
    let mut all = vec![("FLIGHTREC_LOG__LEVEL", "info")];
    all.extend_from_slice(env);
    Agent::start_with_env(
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n[snapshots]\ndir = \"{{dir}}/spool\"\n{config}"),
        &all,
    )
}

fn received_bytes(agent: &Agent, target: &str) -> f64 {
    agent
        .metric("flightrec_received_bytes_total", &[("target", target)])
        .unwrap_or(0.0)
}

fn wait_windows(agent: &Agent, target: &str, n: u64, timeout: Duration) {
    wait_for(&format!("{n} windows of {target}"), timeout, || {
        (agent.windows_kept(target) >= n).then_some(())
    });
}

/// Like [`wait_windows`], but asks only 4 times a second: while the agent's
/// CPU is being measured, 20 API requests a second would show in it.
fn wait_windows_gently(agent: &Agent, target: &str, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while agent.windows_kept(target) < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} windows of {target}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Takes a snapshot of `target` and returns its bundle's window files in order.
fn bundle_windows(agent: &Agent, target: &str) -> (PathBuf, Value, Vec<PathBuf>) {
    let dir = agent.snapshot(target, "bench");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    let files = manifest["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| dir.join(w["file"].as_str().expect("file")))
        .collect();
    (dir, manifest, files)
}

// ---------- 1. coverage ----------

fn coverage(r: &mut Report, tmp: &Path) {
    r.section(
        "coverage",
        "Coverage: how much of the timeline the windows hold",
        "Fixture at ~1 MB/s of trace (`-pairs 4 -rate 7500`). Three clients at the same \
         time, each on its own fixture process: flightrec, a shell loop of `curl -o` (a new \
         process and connection per window) and one `curl` fetching every window over one \
         kept-alive connection. Every window is parsed by Go's own parser \
         (`golang.org/x/exp/trace`, tests/go/cmd/tracecheck); coverage is the sum of the \
         windows' spans (first to last event) over the time from the first event to the \
         last, and a gap is the time between one window's last event and the next one's first.",
    );
    let mut rows = Vec::new();
    for (secs, full_n, quick_n) in [(1u64, 60u64, 3u64), (5, 24, 2), (10, 12, 2)] {
        let n = r.scale(full_n, quick_n) as usize;
        let window = Duration::from_secs(secs);
        let fx: Vec<GoService> = (0..3).map(|_| GoService::start("fixture", ONE_MB.args)).collect();
        let agent = start_agent(&format!(
            "post_trigger = \"0s\"\n[ring]\nmax_bytes = \"1GiB\"\n{}",
            target_toml(
                "cov",
                &fx[0].url,
                &format!(
                    "window = \"{secs}s\"\nmax_age = \"{}s\"\nmax_bytes = \"512MiB\"",
                    (n as u64 + 4) * secs + 30
                )
            )
        ));
        let dir = tmp.join(format!("coverage-{secs}s"));
        let mut looped = ShellLoop::curl(&fx[1].url, window, &dir.join("loop"), n);
        let mut kept = ShellLoop::curl_keepalive(&fx[2].url, window, &dir.join("keepalive"), n);
        let limit = window * (n as u32 + 3) * 2 + Duration::from_secs(60);
        wait_windows(&agent, "cov", n as u64 + 1, limit);
        looped.wait();
        kept.wait();
        let (_, _, files) = bundle_windows(&agent, "cov");
        // The agent's bundle also holds the window in flight: compare as many.
        let files: Vec<PathBuf> = files.iter().take(n).cloned().collect();
        let results = [
            ("flightrec", Timeline::of(&files)),
            ("curl -o loop", Timeline::of(&looped.files())),
            ("curl keep-alive", Timeline::of(&kept.files())),
        ];
        for (client, t) in &results {
            r.check(
                t.invalid == 0 && t.windows >= n,
                format!(
                    "coverage {secs}s {client}: {} windows, {} rejected by Go's parser",
                    t.windows, t.invalid
                ),
            );
            r.put("coverage", &format!("{secs}s/{client}"), t.json());
            rows.push(t.row(&format!("{secs} s"), client));
        }
    }
    r.table(
        &[
            "window",
            "client",
            "windows",
            "coverage",
            "gap median ms",
            "gap p99 ms",
            "gap max ms",
        ],
        &rows,
    );
}

// ---------- 2. agent cost ----------

struct CostRun {
    mode: &'static str,
    cpu: f64,
    bytes: f64,
    wall: f64,
    rss_mb: f64,
    stored: f64,
}

impl CostRun {
    fn ms_per_mb(&self) -> f64 {
        if self.bytes > 0.0 {
            self.cpu * 1e3 / (self.bytes / 1e6)
        } else {
            f64::NAN
        }
    }
}

fn agent_cost(url: &str, compression: &str, windows: u64) -> CostRun {
    let agent = start_agent(&target_toml(
        "cost",
        url,
        // Room for whole 5 s windows at 20 MB/s: none is cut by max_window_bytes.
        &format!("window = \"5s\"\nmax_bytes = \"256MiB\"\ncompression = \"{compression}\""),
    ));
    let timeout = Duration::from_secs(5 * (windows + 4) + 60);
    wait_windows(&agent, "cost", 1, timeout);
    // Measure over whole windows: from one window kept to `windows` later.
    let k0 = agent.windows_kept("cost");
    let (c0, b0, s0, t0) = (
        cpu_seconds(agent.proc.pid()),
        received_bytes(&agent, "cost"),
        agent
            .metric("flightrec_stored_bytes_total", &[("target", "cost")])
            .unwrap_or(0.0),
        Instant::now(),
    );
    wait_windows_gently(&agent, "cost", k0 + windows, timeout);
    CostRun {
        mode: if compression == "none" {
            "flightrec, compression none"
        } else {
            "flightrec, zstd"
        },
        cpu: cpu_seconds(agent.proc.pid()) - c0,
        bytes: received_bytes(&agent, "cost") - b0,
        wall: t0.elapsed().as_secs_f64(),
        rss_mb: status_mb(agent.proc.pid(), "VmHWM"),
        stored: agent
            .metric("flightrec_stored_bytes_total", &[("target", "cost")])
            .unwrap_or(0.0)
            - s0,
    }
}

fn curl_cost(url: &str, dir: &Path, windows: u64) -> CostRun {
    let t0 = Instant::now();
    let mut l = ShellLoop::curl(url, Duration::from_secs(5), dir, windows as usize);
    let u = l.wait();
    let files = l.files();
    let bytes = file_bytes(&files) as f64;
    CostRun {
        mode: "curl -o loop",
        cpu: u.cpu,
        bytes,
        wall: t0.elapsed().as_secs_f64(),
        rss_mb: u.max_rss_mb,
        stored: bytes,
    }
}

fn cost(r: &mut Report, tmp: &Path) {
    r.section(
        "cost",
        "Agent cost per MB of trace",
        "One fixture per load, 5 s windows, recorded in turn by flightrec (compression \
         `none`, then `zstd`) and by a shell loop of `curl -o` writing files. CPU is user + \
         system seconds of the agent (from `/proc/PID/stat`, measured over whole windows \
         after the first) or of the loop with every `curl` it ran (`wait4`); MB are \
         10^6 bytes of trace received. Peak RSS is the agent's `VmHWM` (its ring holds up \
         to 60 s of windows, the default `max_age`, within `max_bytes` 256 MiB) or the \
         largest `curl` process. The agent is asked for its window count 4 times a second.",
    );
    let windows = r.scale(4, 1);
    let mut rows = Vec::new();
    let loads = if r.quick {
        vec![IDLE, FIVE_MB]
    } else {
        vec![IDLE, ONE_MB, FIVE_MB, TWENTY_MB]
    };
    for load in loads {
        let fx = GoService::start("fixture", load.args);
        let runs = [
            agent_cost(&fx.url, "none", windows),
            agent_cost(&fx.url, "zstd", windows),
            curl_cost(
                &fx.url,
                &tmp.join(format!("cost-{}", load.args.join("_"))),
                windows,
            ),
        ];
        let curl = runs[2].ms_per_mb();
        for run in &runs {
            let rate = run.bytes / run.wall / 1e6;
            r.put(
                "cost",
                &format!("{}/{}", load.name, run.mode),
                json!({
                    "mb_per_s": rate, "cpu_seconds": run.cpu, "mb": run.bytes / 1e6, "wall_seconds": run.wall,
                    "cpu_ms_per_mb": run.ms_per_mb(), "cpu_percent_of_a_core": run.cpu / run.wall * 100.0,
                    "peak_rss_mb": run.rss_mb, "compression_ratio": run.bytes / run.stored.max(1.0),
                    "ratio_to_curl": run.ms_per_mb() / curl,
                }),
            );
            rows.push(vec![
                load.name.into(),
                run.mode.into(),
                f(rate, 3),
                f(run.cpu / run.wall * 100.0, 2),
                f(run.ms_per_mb(), 2),
                if run.mode.starts_with("curl") {
                    "1".into()
                } else {
                    f(run.ms_per_mb() / curl, 2)
                },
                f(run.rss_mb, 1),
                f(run.bytes / run.stored.max(1.0), 1),
            ]);
        }
    }
    r.table(
        &[
            "load",
            "client",
            "MB/s",
            "CPU % of a core",
            "CPU ms per MB",
            "× curl",
            "peak RSS MB",
            "compression",
        ],
        &rows,
    );
}

// ---------- 3. overhead on the service ----------

#[derive(Clone, Copy, PartialEq)]
enum Tracing {
    Off,
    Flightrec,
    CurlLoop,
    FlightRecorder,
}

impl Tracing {
    fn label(self) -> &'static str {
        match self {
            Tracing::Off => "no tracing",
            Tracing::Flightrec => "flightrec (5 s windows, zstd)",
            Tracing::CurlLoop => "curl -o loop",
            Tracing::FlightRecorder => "in-process FlightRecorder",
        }
    }
}

/// One round of load on one way of tracing.
struct ServiceRun {
    rps: f64,
    closed_p99: f64,
    open_p50: f64,
    open_p99: f64,
    /// The service's CPU per request, µs.
    cpu_us: f64,
}

fn loadgen(url: &str, args: &[&str]) -> Value {
    let out = Command::new(fixture_bin("loadgen"))
        .args(["-url", url])
        .args(args)
        .output()
        .expect("run loadgen");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("loadgen said {:?}", String::from_utf8_lossy(&out.stdout)))
}

fn overhead(r: &mut Report, tmp: &Path) {
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
                let a = start_agent(&target_toml("svc", &fx.url, "window = \"5s\""));
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

// ---------- 4. scale ----------

fn scale(r: &mut Report, tmp: &Path) {
    let n = r.scale(100, 10) as usize;
    r.section(
        "scale",
        &format!("Scale: one agent, {n} targets"),
        &format!(
            "{n} fixture processes, each `-pairs 1 -rate 100` (~13 KB/s of trace), 5 s windows, \
             zstd, `max_age` 60 s, and a global ring budget (`ring.max_bytes`) of 4 MiB, less \
             than the targets' minute of trace, so the budget must evict. Baselines in the same \
             run: the same agent with 1 target (its fixed cost), and {n} shell loops of \
             `curl -o`. The budget is checked every second against \
             `flightrec_ring_global_bytes`."
        ),
    );
    let fx: Vec<GoService> = (0..n)
        .map(|_| GoService::start("fixture", &["-pairs", "1", "-rate", "100"]))
        .collect();
    let secs = r.scale(30, 5);
    let run = |count: usize| -> (f64, f64, f64, f64, f64, Agent) {
        let mut cfg = String::from("[ring]\nmax_bytes = \"4MiB\"\n");
        for (i, s) in fx.iter().take(count).enumerate() {
            cfg += &target_toml(
                &format!("t{i:03}"),
                &s.url,
                "window = \"5s\"\nmax_bytes = \"4MiB\"",
            );
        }
        let agent = start_agent(&cfg);
        wait_for("every target to keep a window", Duration::from_secs(120), || {
            let (_, v) = agent.get("/v1/targets");
            v["targets"]
                .as_array()
                .filter(|ts| {
                    ts.len() == count && ts.iter().all(|t| t["windows_kept"].as_u64().unwrap_or(0) >= 1)
                })
                .map(|_| ())
        });
        let pid = agent.proc.pid();
        let (c0, t0) = (cpu_seconds(pid), Instant::now());
        let mut max_ring = 0.0f64;
        let mut max_rss = 0.0f64;
        while t0.elapsed() < Duration::from_secs(secs) {
            let m = agent.metrics();
            max_ring = max_ring.max(metric_value(&m, "flightrec_ring_global_bytes", &[]).unwrap_or(0.0));
            max_rss = max_rss.max(status_mb(pid, "VmRSS"));
            std::thread::sleep(Duration::from_secs(1));
        }
        let cpu = cpu_seconds(pid) - c0;
        let wall = t0.elapsed().as_secs_f64();
        let evicted = agent
            .metric("flightrec_ring_evictions_total", &[("reason", "global_budget")])
            .unwrap_or(0.0);
        (cpu / wall * 100.0, max_rss, max_ring, evicted, wall, agent)
    };
    let (cpu1, rss1, _, _, _, one) = run(1);
    drop(one);
    let (cpu_n, rss_n, ring_n, evicted_n, _, agent) = run(n);
    // Every target snapshotted at once: a bundle each, every window parsed by Go.
    let t = Instant::now();
    let (status, v) = agent.post("/v1/snapshots", "{\"reason\":\"bench: all targets\"}", None);
    assert_eq!(status, 202, "{v}");
    let ids: Vec<String> = v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|i| i.as_str().map(String::from))
        .collect();
    let mut files = Vec::new();
    for id in &ids {
        let dir = agent.wait_snapshot(id, Duration::from_secs(120));
        let m: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
        files.extend(
            m["windows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w["file"].as_str().map(|f| dir.join(f))),
        );
    }
    let all_secs = t.elapsed().as_secs_f64();
    let checks = tracecheck(&files);
    let rejected = checks.iter().filter(|c| !c.ok).count() + files.len() - checks.len();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.proc.pid())).map_or(0, |d| d.count());
    drop(agent);

    // Baseline: a curl loop per target, all at once.
    let loops: Vec<ShellLoop> = fx
        .iter()
        .enumerate()
        .map(|(i, s)| {
            ShellLoop::curl(
                &s.url,
                Duration::from_secs(5),
                &tmp.join(format!("scale/{i:03}")),
                1 << 20,
            )
        })
        .collect();
    let t0 = Instant::now();
    let wait = Duration::from_secs(secs);
    while t0.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(200));
    }
    let usages: Vec<Usage> = loops.into_iter().map(ShellLoop::stop).collect();
    let curl_wall = t0.elapsed().as_secs_f64();
    let curl_cpu: f64 = usages.iter().map(|u| u.cpu).sum();
    let per_target_cpu = (cpu_n - cpu1) / (n - 1) as f64;
    let per_target_rss = (rss_n - rss1) / (n - 1) as f64;
    r.put(
        "scale",
        "result",
        json!({"targets": n, "agent_1_target_cpu_percent": cpu1, "agent_1_target_rss_mb": rss1,
               "agent_cpu_percent": cpu_n, "agent_rss_mb": rss_n, "cpu_percent_per_target": per_target_cpu,
               "rss_mb_per_target": per_target_rss, "ring_budget_bytes": 4u64 << 20, "ring_max_seen_bytes": ring_n,
               "global_budget_evictions": evicted_n, "snapshot_all_seconds": all_secs, "bundles": ids.len(),
               "windows_checked": files.len(), "windows_rejected_by_go_parser": rejected, "open_fds": fds,
               "curl_loops_cpu_percent": curl_cpu / curl_wall * 100.0}),
    );
    r.table(
        &["", "CPU % of a core", "RSS MB"],
        &[
            vec!["flightrec, 1 target".into(), f(cpu1, 2), f(rss1, 1)],
            vec![format!("flightrec, {n} targets"), f(cpu_n, 2), f(rss_n, 1)],
            vec![
                "per extra target".into(),
                f(per_target_cpu, 3),
                f(per_target_rss, 2),
            ],
            vec![
                format!("{n} curl -o loops"),
                f(curl_cpu / curl_wall * 100.0, 2),
                "-".into(),
            ],
        ],
    );
    r.check(
        ring_n <= (4u64 << 20) as f64,
        format!("scale: the rings held {ring_n} bytes, over the 4 MiB budget"),
    );
    r.check(
        ids.len() == n && rejected == 0,
        format!(
            "scale: {} bundles for {n} targets, {rejected} windows rejected by Go's parser",
            ids.len()
        ),
    );
    r.note(&format!(
        "Global budget 4 MiB: the most the rings held at any sample was {:.2} MiB ({} evictions by \
         `global_budget`). One `POST /v1/snapshots` for all {n} targets: {} bundles durable in \
         {:.2} s, {} windows, {} rejected by Go's parser. Open descriptors: {fds}.",
        ring_n / (1u64 << 20) as f64,
        evicted_n,
        ids.len(),
        all_secs,
        files.len(),
        rejected
    ));
}

// ---------- 5. trigger to bundle ----------

fn rfc3339(v: &Value) -> Option<SystemTime> {
    v.as_str().and_then(|s| humantime::parse_rfc3339(s).ok())
}

fn since(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map_or(f64::NAN, |d| d.as_secs_f64())
}

fn trigger(r: &mut Report, tmp: &Path) {
    // 1 s windows of ~5 MB: a 10 MiB ring holds two of them.
    let load = &FIVE_MB;
    let rings: &[u64] = if r.quick { &[10, 40] } else { &[10, 200] };
    r.section(
        "trigger",
        "Trigger to bundle",
        &format!(
            "A fixture at {} of trace, 1 s windows, compression `none` (so the ring's bytes \
             are the bundle's), `post_trigger` 2 s, an S3 sink (s3s-fs on loopback). For each \
             ring size the ring is filled, then snapshots are taken one after another. \
             *write* is from the end of recording (the last window needed arrived) to the \
             bundle durable (every file and directory fsynced, renamed): \
             `flightrec_snapshot_write_seconds`. *fired → durable* is from the trigger to the \
             manifest written, post-trigger recording included; *durable → S3* until the \
             sink holds it (the manifest is uploaded last).",
            load.name
        ),
    );
    let fx = GoService::start("fixture", load.args);
    let s3 = S3Server::start(&tmp.join("s3"), 0, "bench");
    let env = [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ];
    let shots = r.scale(3, 1) as usize;
    let mut rows = Vec::new();
    for &mib in rings {
        let agent = start_agent_env(
            &format!(
                "post_trigger = \"2s\"\nmax_bytes = \"16GiB\"\n[ring]\nmax_bytes = \"{}MiB\"\n{}\n[[sinks]]\nkind = \"s3\"\nbucket = \"bench\"\nprefix = \"bench\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n",
                mib + 8,
                target_toml(
                    "trig",
                    &fx.url,
                    &format!("window = \"1s\"\nmax_age = \"600s\"\nmax_bytes = \"{mib}MiB\"\ncompression = \"none\"")
                ),
                s3.endpoint
            ),
            &env,
        );
        // Full: the ring has begun to evict to stay within its bytes.
        wait_for(
            &format!("a full {mib} MiB ring"),
            Duration::from_secs(300),
            || {
                let evicted = agent.metric(
                    "flightrec_ring_evictions_total",
                    &[("target", "trig"), ("reason", "max_bytes")],
                );
                (evicted.unwrap_or(0.0) > 0.0).then_some(())
            },
        );
        let mut writes = Vec::new();
        let mut totals = Vec::new();
        let mut uploads = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..shots {
            let w0 = agent
                .metric("flightrec_snapshot_write_seconds_sum", &[])
                .unwrap_or(0.0);
            let (status, v) = agent.post(
                "/v1/snapshots",
                "{\"target\":\"trig\",\"reason\":\"bench\"}",
                None,
            );
            assert_eq!(status, 202, "{v}");
            let id = v["id"].as_str().expect("id").to_string();
            let dir = agent.wait_snapshot(&id, Duration::from_secs(300));
            writes.push(
                agent
                    .metric("flightrec_snapshot_write_seconds_sum", &[])
                    .unwrap_or(0.0)
                    - w0,
            );
            let m: Value =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
                    .expect("json");
            sizes.push(m["windows"].as_array().map_or(0, |w| {
                w.iter().map(|w| w["bytes"].as_u64().unwrap_or(0)).sum::<u64>()
            }));
            let durable = rfc3339(&m["created_at"]).expect("created_at");
            totals.push(since(
                rfc3339(&m["trigger"]["fired_at"]).expect("fired_at"),
                durable,
            ));
            let delivered = wait_for("delivery to S3", Duration::from_secs(300), || {
                let (_, v) = agent.get(&format!("/v1/snapshots/{id}"));
                let d = &v["delivery"]["s3"];
                (d["state"] == "delivered")
                    .then(|| rfc3339(&d["delivered_at"]))
                    .flatten()
            });
            uploads.push(since(durable, delivered));
        }
        let bytes = median(&sizes.iter().map(|b| *b as f64).collect::<Vec<_>>());
        r.put(
            "trigger",
            &format!("{mib}MiB"),
            json!({"ring_mib": mib, "bundle_mb": bytes / 1e6, "write_seconds": writes, "fired_to_durable_seconds": totals,
                   "durable_to_s3_seconds": uploads}),
        );
        rows.push(vec![
            format!("{mib} MiB"),
            f(bytes / 1e6, 0),
            format!(
                "{} ({}–{})",
                f(median(&writes) * 1e3, 1),
                f(pct(&sorted(writes.clone()), 0.0) * 1e3, 1),
                f(pct(&sorted(writes.clone()), 1.0) * 1e3, 1)
            ),
            f(median(&totals), 2),
            f(median(&uploads), 2),
        ]);
    }
    r.table(
        &[
            "ring",
            "bundle MB",
            "write ms (median, range)",
            "fired → durable s",
            "durable → S3 s",
        ],
        &rows,
    );
}

// ---------- 6. memory bound ----------

fn memory(r: &mut Report, _tmp: &Path) {
    r.section(
        "memory",
        "Memory bound: RSS against the ring budget",
        "One fixture at ~20 MB/s (more than any budget here can hold for `max_age` 10 \
         minutes), 2 s windows, the target's `max_bytes` and the global `ring.max_bytes` both \
         the budget B. RSS is sampled every 250 ms; peak is `VmHWM`. Then one snapshot is \
         taken: while it is written the windows it froze stay in memory even if the ring \
         evicts them, so that peak is reported apart.",
    );
    let secs = r.scale(60, 8);
    let fx = GoService::start("fixture", TWENTY_MB.args);
    let mut rows = Vec::new();
    for (compression, mib) in [("none", 64u64), ("none", 256), ("zstd", 64)] {
        let agent = start_agent(&format!(
            "post_trigger = \"0s\"\n[ring]\nmax_bytes = \"{mib}MiB\"\n{}",
            target_toml(
                "mem",
                &fx.url,
                &format!("window = \"2s\"\nmax_age = \"600s\"\nmax_bytes = \"{mib}MiB\"\ncompression = \"{compression}\"")
            )
        ));
        let pid = agent.proc.pid();
        let t0 = Instant::now();
        let mut max_rss = 0.0f64;
        let mut max_ring = 0.0f64;
        while t0.elapsed() < Duration::from_secs(secs) {
            max_rss = max_rss.max(status_mb(pid, "VmRSS"));
            max_ring = max_ring.max(agent.metric("flightrec_ring_global_bytes", &[]).unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(250));
        }
        let hwm = status_mb(pid, "VmHWM");
        let received = received_bytes(&agent, "mem");
        let evicted = agent
            .metric("flightrec_ring_evictions_total", &[("target", "mem")])
            .unwrap_or(0.0);
        agent.snapshot("mem", "bench: memory");
        let hwm_snap = status_mb(pid, "VmHWM");
        let budget = (mib << 20) as f64 / 1e6;
        r.check(
            max_ring <= (mib << 20) as f64,
            format!("memory {compression}/{mib}MiB: the ring held {max_ring} bytes, over its budget"),
        );
        r.put(
            "memory",
            &format!("{compression}/{mib}MiB"),
            json!({"budget_mb": budget, "peak_rss_mb": hwm, "over_budget_mb": hwm - budget, "max_ring_bytes": max_ring,
                   "received_mb": received / 1e6, "evictions": evicted, "peak_rss_with_snapshot_mb": hwm_snap}),
        );
        rows.push(vec![
            format!("{mib} MiB ({:.0} MB)", budget),
            compression.into(),
            f(received / 1e6, 0),
            f(max_ring / 1e6, 1),
            f(hwm, 1),
            f(hwm - budget, 1),
            f(hwm_snap, 1),
        ]);
    }
    r.table(
        &[
            "budget B",
            "compression",
            "MB received",
            "ring max MB",
            "peak RSS MB",
            "peak − B MB",
            "peak with a snapshot MB",
        ],
        &rows,
    );
}

// ---------- the run ----------

fn machine() -> Value {
    let sh = |cmd: &str| -> String {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "date": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "cpus": sh("nproc"),
        "cpu_model": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-"),
        "memory": sh("grep MemTotal /proc/meminfo | awk '{printf \"%.1f GiB\", $2/1048576}'"),
        "kernel": sh("uname -r"),
        "go": sh("go version"),
        "rustc": sh("rustc --version"),
        "commit": sh(&format!("git -C {} rev-parse --short HEAD", repo_root().display())),
        "agent": agent_bin().display().to_string(),
        "agent_version": sh(&format!("{} --version", agent_bin().display())),
    })
}

#[test]
#[ignore = "benchmarks: run through tests/bench/run.sh"]
fn bench() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let only: Vec<String> = std::env::var("BENCH_SECTIONS")
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/bench"));
    std::fs::create_dir_all(&out).expect("bench output dir");
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = machine();
    let mut r = Report {
        quick,
        json: serde_json::Map::new(),
        broken: Vec::new(),
        md: format!(
            "# flightrec benchmarks\n\n{} on {} ({} CPUs, {}), kernel {}, {}, {}; commit {}, agent {}.{}\n",
            m["date"].as_str().unwrap_or(""),
            m["cpu_model"].as_str().unwrap_or(""),
            m["cpus"].as_str().unwrap_or(""),
            m["memory"].as_str().unwrap_or(""),
            m["kernel"].as_str().unwrap_or(""),
            m["go"].as_str().unwrap_or(""),
            m["rustc"].as_str().unwrap_or(""),
            m["commit"].as_str().unwrap_or(""),
            m["agent"].as_str().unwrap_or(""),
            if quick {
                "\n\n**Quick run** (`--quick`): every phase shortened; a smoke check, not figures to quote."
            } else {
                ""
            }
        ),
    };
    r.json.insert("machine".into(), m);
    r.json.insert("quick".into(), json!(quick));
    type Section = fn(&mut Report, &Path);
    let sections: [(&str, Section); 6] = [
        ("coverage", coverage),
        ("cost", cost),
        ("overhead", overhead),
        ("scale", scale),
        ("trigger", trigger),
        ("memory", memory),
    ];
    for (name, run) in sections {
        if only.is_empty() || only.iter().any(|o| o == name) {
            let t = Instant::now();
            run(&mut r, tmp.path());
            println!("({name}: {:.0} s)", t.elapsed().as_secs_f64());
            // Written after each section, so a long run that fails late keeps what it measured.
            std::fs::write(
                out.join("results.json"),
                serde_json::to_string_pretty(&Value::Object(r.json.clone())).expect("json"),
            )
            .expect("write results.json");
            std::fs::write(out.join("report.md"), &r.md).expect("write report.md");
        }
    }
    println!("\nbench: report in {}", out.join("report.md").display());
    assert!(r.broken.is_empty(), "broken invariants: {:#?}", r.broken);
}
