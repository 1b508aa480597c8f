//! Test harness: real Go services and the real `flightrec` binary, as processes.
//!
//! Every process binds 127.0.0.1 on port 0 and reports its address; each is
//! killed by PID when its handle drops. Nothing sleeps to synchronise: waits
//! poll a condition until a deadline.

// Each test binary uses a part of the harness.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod alerting;
pub mod kube;
pub mod toml;

pub use toml::{agent_toml, target_toml};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// Builds the Go fixtures once per test binary (Go's build cache makes a
/// second build cheap) and returns the directory holding them.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("target/fixtures");
        let out = Command::new("bash")
            .arg(repo_root().join("tests/go/build.sh"))
            .arg(&dir)
            .output()
            .expect("run tests/go/build.sh (needs bash and go)");
        assert!(
            out.status.success(),
            "building the Go fixtures failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

pub fn fixture_bin(name: &str) -> PathBuf {
    let p = fixtures().join(name);
    assert!(p.is_file(), "fixture binary {} missing after build", p.display());
    p
}

/// What Go's parser says of each trace file, in order: one JSON summary
/// each, from `tests/go/cmd/tracesummary` (golang.org/x/exp/trace).
pub fn tracesummary(files: &[PathBuf]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(fixture_bin("tracesummary"))
        .args(files)
        .output()
        .expect("run tracesummary");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("tracesummary prints JSON lines"))
        .collect();
    assert_eq!(
        lines.len(),
        files.len(),
        "tracesummary: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`
/// saying what was awaited.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit, killing it if it does not in time.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Go service from tests/go, started on 127.0.0.1:0 unless `-addr` is given.
pub struct GoService {
    pub proc: Proc,
    pub url: String,
}

impl GoService {
    pub fn start(bin: &str, args: &[&str]) -> GoService {
        let path = fixture_bin(bin);
        let mut cmd = Command::new(&path);
        if !args.contains(&"-addr") {
            cmd.args(["-addr", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let proc = Proc {
            child,
            name: bin.to_string(),
        };
        // The service prints exactly one line once it listens.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{bin} did not print its address"));
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{bin} printed {line:?}"))
            .to_string();
        GoService { proc, url }
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("url has a port")
    }
}

/// The real `flightrec` binary with a config written to a temp dir.
pub struct Agent {
    pub proc: Proc,
    pub api: String,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    http: reqwest::blocking::Client,
}

pub const AGENT: &str = env!("CARGO_BIN_EXE_flightrec");

/// The agent binary the harness starts: this build, or the one named by
/// `BENCH_AGENT_BIN` (the benchmarks compare an older build with it).
pub fn agent_bin() -> PathBuf {
    std::env::var_os("BENCH_AGENT_BIN").map_or_else(|| PathBuf::from(AGENT), PathBuf::from)
}

impl Agent {
    /// Starts `flightrec run` with `config` (TOML). `{dir}` in the config is
    /// replaced by the agent's temp dir; the API must listen on port 0.
    pub fn start(config: &str) -> Agent {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Agent {
        Self::start_wrapped(config, env, &[])
    }

    /// Starts the agent as the last argument of `wrapper` (e.g. `unshare
    /// ... sh -c '...; exec "$@"'`), which must exec it so the PID is the
    /// agent's.
    pub fn start_wrapped(config: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config.replace("{dir}", &dir.path().display().to_string());
        let cfg = dir.path().join("flightrec.toml");
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let bin = agent_bin();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // Debug logs unless the caller says otherwise (the benchmarks do).
        let child = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--log-format", "json"])
            .env("FLIGHTREC_LOG__LEVEL", "flightrec=debug,info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start flightrec");
        let mut proc = Proc {
            child,
            name: "flightrec".into(),
        };
        let api = wait_for("the agent to listen", Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!(
                    "flightrec exited early ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            log_lines(&log)
                .into_iter()
                .find(|l| {
                    l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("flightrec listening on"))
                })
                .and_then(|l| l["addr"].as_str().map(|a| format!("http://{a}")))
        });
        Agent {
            proc,
            api,
            dir,
            log,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn logs(&self) -> Vec<Value> {
        log_lines(&self.log)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.api))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.api))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.api))
            .send()
            .and_then(|r| r.text())
            .expect("GET /metrics")
    }

    /// The value of one sample, e.g. `metric("flightrec_windows_total", &[("target","a")])`,
    /// summed over samples whose labels include the given ones.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics(), name, labels)
    }

    pub fn target(&self, name: &str) -> Value {
        let (_, v) = self.get("/v1/targets");
        v["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no target {name} in {v}"))
    }

    pub fn windows_kept(&self, target: &str) -> u64 {
        self.target(target)["windows_kept"].as_u64().unwrap_or(0)
    }

    /// Asks for a snapshot and waits until it is durable; returns its dir.
    pub fn snapshot(&self, target: &str, reason: &str) -> PathBuf {
        let body = serde_json::json!({ "target": target, "reason": reason }).to_string();
        let (status, v) = self.post("/v1/snapshots", &body, None);
        assert_eq!(status, 202, "{v}");
        let id = v["id"].as_str().expect("id").to_string();
        self.wait_snapshot(&id, Duration::from_secs(60))
    }

    /// Waits until snapshot `id` is durable and its derived files
    /// (bundle.trace) are made, so its manifest no longer changes.
    pub fn wait_snapshot(&self, id: &str, timeout: Duration) -> PathBuf {
        wait_for(&format!("snapshot {id} and its derived files"), timeout, || {
            let (_, v) = self.get(&format!("/v1/snapshots/{id}"));
            match v["phase"].as_str() {
                Some("complete") if v["derived_ready_at"].is_string() => {
                    Some(PathBuf::from(v["path"].as_str().expect("path")))
                }
                Some("failed") => panic!("snapshot {id} failed: {v}"),
                _ => None,
            }
        })
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.signal("TERM");
        self.proc.wait_exit(Duration::from_secs(60))
    }
}

pub fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Sums the samples of `name` whose labels include `labels`, in Prometheus text.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if all {
            if let Ok(v) = value.parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

/// What Go's own parser (golang.org/x/exp/trace, via tests/go tracecheck)
/// says of one file.
#[derive(Debug, Clone)]
pub struct Check {
    pub file: String,
    pub ok: bool,
    pub error: String,
    pub events: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

pub fn tracecheck(files: &[PathBuf]) -> Vec<Check> {
    if files.is_empty() {
        return Vec::new();
    }
    let out = Command::new(fixture_bin("tracecheck"))
        .args(files)
        .output()
        .expect("run tracecheck");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| Check {
            file: v["file"].as_str().unwrap_or_default().to_string(),
            ok: v["ok"].as_bool().unwrap_or(false),
            error: v["error"].as_str().unwrap_or_default().to_string(),
            events: v["events"].as_u64().unwrap_or(0),
            first_ns: v["first_ns"].as_u64().unwrap_or(0),
            last_ns: v["last_ns"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// Reads a bundle, checks it is whole (manifest, every file, sha256 through
/// `flightrec inspect`, window tails included), and checks every window with
/// Go's parser. Returns the manifest.
pub fn assert_bundle_valid(dir: &Path) -> Value {
    assert!(dir.join("manifest.pb").is_file(), "manifest.pb missing");
    // A running agent may be replacing the manifests with ones that list
    // bundle.trace (manifest.pb, then manifest.json): inspect again until
    // it reads a pair from one moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inspect = Command::new(AGENT)
            .arg("inspect")
            .arg(dir)
            .output()
            .expect("run flightrec inspect");
        if inspect.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flightrec inspect found problems:\n{}",
            String::from_utf8_lossy(&inspect.stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest is JSON");
    // Stitched traces, when made, are accepted by Go's parser too.
    let pieces: Vec<PathBuf> = manifest["derived"]["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["file"].as_str())
        .filter(|f| f.ends_with(".trace"))
        .map(|f| dir.join(f))
        .collect();
    for c in tracecheck(&pieces) {
        assert!(c.ok, "Go's parser rejects the stitched {}: {}", c.file, c.error);
    }
    let windows = manifest["windows"].as_array().expect("windows");
    assert!(!windows.is_empty(), "bundle has no windows");
    let mut names: Vec<&str> = windows.iter().filter_map(|w| w["file"].as_str()).collect();
    let listed = names.clone();
    names.sort();
    assert_eq!(names, listed, "file name order is time order");
    for w in windows
        .iter()
        .filter(|w| w["go_version"].as_str().is_some_and(|v| v >= "1.22"))
    {
        let path = dir.join(w["file"].as_str().expect("file"));
        let check = tracecheck(std::slice::from_ref(&path));
        assert_eq!(check.len(), 1, "tracecheck said nothing of {}", path.display());
        assert!(
            check[0].ok,
            "Go's parser rejects {} (complete={}): {}",
            path.display(),
            w["complete"],
            check[0].error
        );
        // A window cut before its first whole generation holds the bare
        // header (its bytes are all in its tail), which Go's parser reads
        // as a trace of nothing but its closing sync event.
        if w["generations"].as_u64() == Some(0) {
            assert!(
                w["tail"]["file"].is_string(),
                "a window of no generation has a tail: {w}"
            );
            continue;
        }
        assert!(check[0].events > 0);
        // The agent's framing walk reads the same span as Go's parser.
        let (start, end) = (
            w["trace_start_ns"].as_u64().unwrap_or(0),
            w["trace_end_ns"].as_u64().unwrap_or(0),
        );
        assert!(
            start.abs_diff(check[0].first_ns) <= 1_000,
            "start {start} vs Go {}",
            check[0].first_ns
        );
        assert!(
            end.abs_diff(check[0].last_ns) <= 1_000,
            "end {end} vs Go {}",
            check[0].last_ns
        );
    }
    manifest
}
pub mod delivery;
