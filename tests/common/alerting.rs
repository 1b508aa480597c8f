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
    bin: String,
    args: Vec<String>,
    ready: String,
}

impl Service {
    fn start(bin: &str, args: &[String], dir: tempfile::TempDir, ready: &str) -> Service {
        let log = dir.path().join(format!("{bin}.log"));
        let (proc, url) = Self::spawn(bin, args, dir.path(), &log, ready);
        Service {
            proc,
            url,
            dir,
            log,
            bin: bin.into(),
            args: args.to_vec(),
            ready: ready.into(),
        }
    }

    /// Starts `bin` in `dir` and waits until its log says it listens and `ready`.
    fn spawn(bin: &str, args: &[String], dir: &Path, log: &Path, ready: &str) -> (Proc, String) {
        let child = Command::new(bin)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
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
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(log).ok()?;
            let addr = text
                .lines()
                .filter(|l| l.contains("msg=\"Listening on\""))
                .find_map(|l| l.split("address=").nth(1))?
                .split_whitespace()
                .next()?
                .to_string();
            text.contains(ready).then(|| format!("http://{addr}"))
        });
        (proc, url)
    }

    /// Stops the process with SIGTERM (so it saves its state, as on any
    /// clean stop) and starts it again on the same address, with the same
    /// config and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// SIGTERM, and waits for the exit.
    pub fn stop(&mut self) {
        self.proc.signal("TERM");
        self.proc.wait_exit(Duration::from_secs(30));
    }

    /// Starts the stopped process again on the same address and storage.
    pub fn start_again(&mut self) {
        let listen = format!("--web.listen-address={}", self.host_port());
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a.starts_with("--web.listen-address=") {
                    listen.clone()
                } else {
                    a.clone()
                }
            })
            .collect();
        let (proc, url) = Self::spawn(&self.bin, &args, self.dir.path(), &self.log, &self.ready);
        assert_eq!(url, self.url, "restarted on the same address");
        self.proc = proc;
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

/// POSTs alerts to Alertmanager's API as a Prometheus does (`POST
/// /api/v2/alerts`, a JSON array of `{labels, annotations, startsAt, ...}`).
pub fn post_alerts(am: &str, alerts: &Value) {
    let a = post_raw(&format!("{am}/api/v2/alerts"), alerts.to_string(), &[]);
    assert_eq!(a.status, 200, "POST {am}/api/v2/alerts: {}", a.json);
}

/// Creates a silence through Alertmanager's API (`POST /api/v2/silences`)
/// for an hour from now; returns its id.
pub fn create_silence(am: &str, matchers: &[(&str, &str)], comment: &str) -> String {
    let now = SystemTime::now();
    let body = serde_json::json!({
        "matchers": matchers.iter().map(|(name, value)| serde_json::json!({
            "name": name, "value": value, "isRegex": false, "isEqual": true
        })).collect::<Vec<_>>(),
        "startsAt": humantime::format_rfc3339_millis(now).to_string(),
        "endsAt": humantime::format_rfc3339_millis(now + Duration::from_secs(3600)).to_string(),
        "createdBy": "flightrec tests",
        "comment": comment,
    });
    let a = post_raw(&format!("{am}/api/v2/silences"), body.to_string(), &[]);
    assert_eq!(a.status, 200, "POST {am}/api/v2/silences: {}", a.json);
    a.json["silenceID"].as_str().expect("silenceID").to_string()
}

/// `GET /api/v2/alerts` with `query` (e.g. `silenced=true`).
pub fn get_alerts(am: &str, query: &str) -> Vec<Value> {
    reqwest::blocking::get(format!("{am}/api/v2/alerts?{query}"))
        .and_then(|r| r.json::<Vec<Value>>())
        .unwrap_or_default()
}

/// Re-posts alerts to Alertmanagers every `every` from a thread, as
/// Prometheus does while a rule keeps firing, until dropped. A post that
/// fails (the Alertmanager is down) is made again at the next turn. The
/// pause paces the posts; nothing waits on it.
pub struct Reposter {
    posts: Arc<parking_lot::Mutex<Vec<(String, Value)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reposter {
    pub fn start(every: Duration) -> Reposter {
        let posts: Arc<parking_lot::Mutex<Vec<(String, Value)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, flag) = (posts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            while !flag.load(Ordering::Relaxed) {
                let now: Vec<(String, Value)> = p.lock().clone();
                for (am, alerts) in now {
                    let _ = client
                        .post(format!("{am}/api/v2/alerts"))
                        .header("content-type", "application/json")
                        .body(alerts.to_string())
                        .send();
                }
                let next = Instant::now() + every;
                while Instant::now() < next && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Reposter {
            posts,
            stop,
            thread: Some(thread),
        }
    }

    /// Posts `alerts` (a JSON array) to `am` now, and at every turn from now on.
    pub fn add(&self, am: &str, alerts: Value) {
        post_alerts(am, &alerts);
        self.posts.lock().push((am.to_string(), alerts));
    }
}

impl Drop for Reposter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
