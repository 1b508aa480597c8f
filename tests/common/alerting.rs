//! Helpers for the trigger and webhook tests: real Prometheus and Alertmanager
//! processes, raw webhook requests, load on the fixture, bundles on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::{repo_root, wait_for, Agent, Proc};

/// A recorded webhook payload from tests/data/webhooks.
pub fn webhook_payload(name: &str) -> String {
    let path = repo_root().join("tests/data/webhooks").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON of a recorded payload, to derive variants from.
pub fn webhook_json(name: &str) -> Value {
    serde_json::from_str(&webhook_payload(name)).expect("recorded payload is JSON")
}

/// What an HTTP answer held.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
    pub elapsed: Duration,
}

/// POSTs `body` with the given headers; the answer's body read as JSON
/// (`Null` if it is not).
pub fn post_raw(url: &str, body: impl Into<Vec<u8>>, headers: &[(&str, &str)]) -> Answer {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.into());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let started = Instant::now();
    let r = req.send().unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let elapsed = started.elapsed();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    Answer {
        status,
        headers,
        json: r.json().unwrap_or(Value::Null),
        elapsed,
    }
}

/// Bundles the agent has on disk (`{dir}/data`), with their manifests, in
/// name (= time) order.
pub fn bundles(agent: &Agent) -> Vec<(PathBuf, Value)> {
    let data = agent.path().join("data");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&data)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter_map(|p| {
            let m = std::fs::read(p.join("manifest.json")).ok()?;
            Some((p, serde_json::from_slice(&m).ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Bundles of one trigger kind.
pub fn bundles_of(agent: &Agent, kind: &str) -> Vec<(PathBuf, Value)> {
    bundles(agent)
        .into_iter()
        .filter(|(_, m)| m["trigger"]["kind"] == kind)
        .collect()
}

pub fn parse_time(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

/// `(start, end, complete)` of every window of a manifest.
pub fn window_spans(m: &Value) -> Vec<(SystemTime, SystemTime, bool)> {
    m["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| {
            (
                parse_time(w["start"].as_str().expect("start")),
                parse_time(w["end"].as_str().expect("end")),
                w["complete"] == true,
            )
        })
        .collect()
}

/// Whether `t` lies inside a complete window of the bundle, or in the few
/// milliseconds between two back-to-back windows (the trace is re-requested
/// there; nothing is lost that a window could have held).
pub fn covered_by_complete_window(m: &Value, t: SystemTime) -> bool {
    let spans = window_spans(m);
    spans
        .iter()
        .any(|(s, e, complete)| *complete && *s <= t && t <= *e)
        || spans.windows(2).any(|p| {
            p[0].2
                && p[1].2
                && p[0].1 <= t
                && t <= p[1].0
                && p[1].0.duration_since(p[0].1).unwrap_or_default() < Duration::from_millis(100)
        })
}

/// Requests `url` over and over from a thread until dropped (or `max`
/// elapsed, so a failed test never leaves load running).
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Load {
    pub fn start(urls: Vec<String>, max: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            let until = Instant::now() + max;
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                for u in &urls {
                    if client.get(u).send().and_then(|r| r.bytes()).is_ok() {
                        n += 1;
                    }
                }
            }
            n
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns how many requests succeeded.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sets the fixture's `/slow` latency.
pub fn set_latency(fixture_url: &str, latency: &str) {
    let r = reqwest::blocking::get(format!("{fixture_url}/control?latency={latency}")).expect("control");
    assert!(r.status().is_success(), "control: {}", r.status());
}

/// A Prometheus or Alertmanager process (Debian's packages), on 127.0.0.1
/// port 0, its data and config in a temp dir, killed when dropped.
pub struct Service {
    pub proc: Proc,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Service {
    fn start(bin: &str, args: &[String], dir: tempfile::TempDir, ready: &str) -> Service {
        let log = dir.path().join(format!("{bin}.log"));
        let child = Command::new(bin)
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin} (tests/setup.sh installs it): {e}"));
        let mut proc = Proc {
            child,
            name: bin.to_string(),
        };
        let url = wait_for(&format!("{bin} to listen"), Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!(
                    "{bin} exited early ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(&log).ok()?;
            let addr = text
                .lines()
                .filter(|l| l.contains("msg=\"Listening on\""))
                .find_map(|l| l.split("address=").nth(1))?
                .split_whitespace()
                .next()?
                .to_string();
            text.contains(ready).then(|| format!("http://{addr}"))
        });
        Service { proc, url, dir, log }
    }

    /// `prometheus-alertmanager` with `config` (YAML), gossip off.
    pub fn alertmanager(config: &str) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("alertmanager.yml"), config).expect("write config");
        let args = [
            "--config.file=alertmanager.yml",
            "--web.listen-address=127.0.0.1:0",
            "--cluster.listen-address=",
            "--storage.path=data",
        ]
        .map(String::from);
        Service::start("prometheus-alertmanager", &args, dir, "Listening on")
    }

    /// `prometheus` with `config` and `rules` (YAML).
    pub fn prometheus(config: &str, rules: &str) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        std::fs::write(dir.path().join("rules.yml"), rules).expect("write rules");
        let args = [
            "--config.file=prometheus.yml",
            "--web.listen-address=127.0.0.1:0",
            "--storage.tsdb.path=data",
        ]
        .map(String::from);
        Service::start(
            "prometheus",
            &args,
            dir,
            "Server is ready to receive web requests.",
        )
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn host_port(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Writes `content` to a file in `dir` and returns its path.
pub fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write secret");
    p
}
