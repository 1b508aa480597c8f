//! Durability under faults, with real processes: kill -9 while bundles are
//! written and uploaded, SIGTERM under load, a sink down for a long time.
//! Nothing acknowledged may be lost, and only whole bundles may appear.
//!
//! "Minutes" are compressed: the config's backoff and breaker times are
//! scaled down by the same factor as the outage, so the agent goes through
//! the same number of backoff doublings, capped retries and breaker probes as
//! it would over minutes at the defaults; each test says its factor.
//!
//! Random kill points come from a seeded generator whose seed is printed;
//! `FLIGHTREC_FAULT_SEED=N cargo test --test durability kill_9` replays a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::delivery::*;
use common::*;
use parking_lot::Mutex;
use serde_json::Value;

const BUCKET: &str = "traces";

fn config(targets: &str, extra: &str) -> String {
    agent_toml("0s", &format!("{extra}\n{targets}"))
}

fn target(name: &str, url: &str, extra: &str) -> String {
    target_toml(
        name,
        url,
        "1s",
        "20s",
        &format!("labels = {{ service = \"{name}\" }}\n{extra}"),
    )
}

/// xorshift64*: random kill points that replay from a printed seed.
struct Rng(u64);

impl Rng {
    fn from_env(what: &str) -> Rng {
        let seed = std::env::var("FLIGHTREC_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{what}: seed {seed} (replay with FLIGHTREC_FAULT_SEED={seed})");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn inspect_ok(dir: &Path) -> bool {
    Command::new(AGENT)
        .arg("inspect")
        .arg(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Committed bundles in a spool (directories without a leading dot).
fn committed(spool: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(spool)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn partial_ids(spool: &Path) -> Vec<String> {
    std::fs::read_dir(spool.join(".partial"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn s3_sink(endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[[sinks]]
kind = "s3"
bucket = "{BUCKET}"
prefix = "faults"
endpoint = "{endpoint}"
region = "us-east-1"
allow_http = true
{extra}
"#
    )
}

fn s3_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// Where the S3 sink puts a bundle: `{prefix}/{target}/{YYYY-MM-DD}/{id}`.
fn remote_dir(s3: &S3Server, target: &str, id: &str) -> PathBuf {
    s3.object(
        BUCKET,
        &format!("faults/{target}/{}-{}-{}/{id}", &id[..4], &id[4..6], &id[6..8]),
    )
}

fn delivery_state(agent: &Agent, id: &str) -> String {
    agent.get(&format!("/v1/snapshots/{id}")).1["delivery"]["s3"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every file of `local` is at `remote` with the same sha256, and nothing else.
fn same_files(local: &Path, remote: &Path) {
    let names = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(names(local), names(remote), "{}", remote.display());
    for n in names(local) {
        assert_eq!(
            sha256_file(&local.join(&n)),
            sha256_file(&remote.join(&n)),
            "{n} differs at the sink"
        );
    }
}

#[test]
fn kill_9_at_random_points_while_writing_and_uploading_loses_nothing_acknowledged() {
    const ROUNDS: usize = 6;
    let mut rng = Rng::from_env("kill -9 points");
    let tmp = tempfile::tempdir().expect("tempdir");
    let s3 = S3Server::start(&tmp.path().join("s3"), 0, BUCKET);
    let spool = tmp.path().join("spool");
    // ~1.4 MB/s of trace: bundles of several MB take tens of milliseconds to
    // write and upload, wide enough for random kills to land inside.
    let svc = GoService::start("fixture", &["-pairs", "2", "-rate", "20000"]);
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[snapshots]
dir = "{}"
post_trigger = "0s"
[[targets]]
name = "checkout"
url = "{}"
window = "1s"
max_age = "3s"
{}
"#,
        spool.display(),
        svc.url,
        s3_sink(
            &s3.endpoint,
            "retry_initial = \"100ms\"\nretry_max = \"500ms\"\npart_size = \"5MiB\""
        )
    );
    let env = s3_env();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut leftovers: BTreeSet<String> = BTreeSet::new();
    let mut log = Vec::new();
    for round in 0..ROUNDS {
        let mut agent = Agent::start_with_env(&cfg, &env);
        wait_for("two windows", Duration::from_secs(20), || {
            (agent.windows_kept("checkout") >= 2).then_some(())
        });
        // Two snapshots: one through the API, one through the CLI, which
        // returns only once its bundle is durable.
        let (s, v) = agent.post(
            "/v1/snapshots",
            r#"{"target":"checkout","reason":"kill -9 round"}"#,
            None,
        );
        assert_eq!(s, 202, "{v}");
        let id = v["id"].as_str().expect("id").to_string();
        let cli = {
            let api = agent.api.clone();
            std::thread::spawn(move || {
                Command::new(AGENT)
                    .args([
                        "snapshot", "--server", &api, "--target", "checkout", "--reason", "cli",
                    ])
                    .output()
            })
        };
        let kind = rng.below(3);
        let delay = Duration::from_millis(match kind {
            0 => rng.below(1500),
            1 => rng.below(40),
            _ => rng.below(400),
        });
        let phase = |want: &str| {
            wait_for(&format!("phase {want}"), Duration::from_secs(20), || {
                let p = agent.get(&format!("/v1/snapshots/{id}")).1["phase"]
                    .as_str()
                    .map(String::from);
                (p.as_deref() == Some(want) || p.as_deref() == Some("complete")).then_some(())
            })
        };
        match kind {
            1 => phase("writing"),
            2 => phase("complete"),
            _ => {}
        }
        // Watch the API until the kill: "complete" seen = acknowledged.
        let until = Instant::now() + delay;
        loop {
            let (_, v) = agent.get(&format!("/v1/snapshots/{id}"));
            if v["phase"] == "complete" {
                acked.insert(id.clone());
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(5).min(until - Instant::now()));
        }
        agent.proc.kill();
        let out = cli.join().expect("cli thread").expect("run flightrec snapshot");
        let printed = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            let path = printed
                .lines()
                .find_map(|l| l.split_once(" written: ").map(|(_, p)| p.trim().to_string()))
                .expect("the CLI prints the bundle path");
            let cli_id = Path::new(&path)
                .file_name()
                .expect("id")
                .to_string_lossy()
                .to_string();
            acked.insert(cli_id);
        }
        let state = if acked.contains(&id) {
            "acknowledged"
        } else {
            "not acknowledged"
        };
        log.push(format!(
            "round {round}: kill {} after {delay:?}; API snapshot {state}; CLI {}",
            ["after the POST", "once writing", "once complete (uploading)"][kind as usize],
            if out.status.success() {
                "returned"
            } else {
                "cut off"
            }
        ));
        // Right after the kill: every acknowledged bundle is whole on disk,
        // and every directory that is visible at all is whole.
        for dir in committed(&spool) {
            assert!(
                inspect_ok(&dir),
                "round {round}: half-written bundle visible: {}",
                dir.display()
            );
        }
        for a in &acked {
            assert!(
                inspect_ok(&spool.join(a)),
                "round {round}: acknowledged {a} not whole on disk"
            );
        }
        leftovers.extend(partial_ids(&spool));
    }
    println!("{}", log.join("\n"));

    // A last start: leftovers are cleared, only whole bundles are listed,
    // and every one of them reaches S3 byte for byte.
    let agent = Agent::start_with_env(&cfg, &env);
    assert!(
        partial_ids(&spool).is_empty(),
        "half-written bundles removed at start"
    );
    let (_, list) = agent.get("/v1/snapshots");
    let listed: BTreeSet<String> = list["snapshots"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|s| s["phase"] == "complete")
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect();
    assert!(
        acked.is_subset(&listed),
        "acknowledged {acked:?}, listed {listed:?}"
    );
    assert!(listed.is_disjoint(&leftovers.difference(&listed).cloned().collect()));
    for id in &listed {
        let dir = spool.join(id);
        assert_bundle_valid(&dir);
    }
    for id in &listed {
        wait_for(&format!("{id} delivered"), Duration::from_secs(60), || {
            (delivery_state(&agent, id) == "delivered").then_some(())
        });
        same_files(&spool.join(id), &remote_dir(&s3, "checkout", id));
    }
    // Nothing reached the sink that was not a whole, committed bundle.
    let day_dirs: Vec<PathBuf> = std::fs::read_dir(s3.object(BUCKET, "faults/checkout"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let remote: BTreeSet<String> = day_dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.path().join("manifest.json").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(remote, listed, "the sink holds exactly the committed bundles");
    println!(
        "{} acknowledged, {} committed in all, {} half-written ones discarded, all delivered",
        acked.len(),
        listed.len(),
        leftovers.difference(&listed).count()
    );
}

#[test]
fn sigterm_under_load_finishes_what_was_accepted_and_leaves_only_whole_bundles() {
    let svcs: Vec<GoService> = (0..3)
        .map(|_| GoService::start("fixture", &["-pairs", "1", "-rate", "3000", "-latency", "80ms"]))
        .collect();
    let names = ["a", "b", "c"];
    let targets: String = names
        .iter()
        .zip(&svcs)
        .map(|(n, s)| target(n, &s.url, ""))
        .collect();
    let trigger = format!(
        r#"
[trigger_limits]
cooldown = "1s"
max_fires = 1000
[[triggers]]
kind = "latency"
target = "a"
url = "{}/slow"
interval = "100ms"
threshold = "50ms"
consecutive = 2
cooldown = "1s"
"#,
        svcs[0].url
    );
    let mut agent = Agent::start(
        &config(&targets, &format!("post_trigger = \"1s\"\n{trigger}"))
            .replace("post_trigger = \"0s\"\n", ""),
    );
    wait_for("every target recording", Duration::from_secs(20), || {
        names.iter().all(|n| agent.windows_kept(n) >= 2).then_some(())
    });
    // Snapshots of every target, back to back, while the latency trigger fires.
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let after_term = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let termed = Arc::new(AtomicBool::new(false));
    let firing = {
        let (api, accepted, after_term, stop, termed) = (
            agent.api.clone(),
            accepted.clone(),
            after_term.clone(),
            stop.clone(),
            termed.clone(),
        );
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            for i in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = format!("{{\"target\":\"{}\",\"reason\":\"load {i}\"}}", names[i % 3]);
                let was_termed = termed.load(Ordering::SeqCst);
                let r = http.post(format!("{api}/v1/snapshots")).body(body).send();
                match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let v: Value = r.json().unwrap_or(Value::Null);
                        if was_termed {
                            *after_term.lock().entry(status).or_default() += 1;
                        } else if status == 202 {
                            accepted
                                .lock()
                                .push(v["id"].as_str().unwrap_or_default().to_string());
                        }
                    }
                    Err(_) if was_termed => *after_term.lock().entry(0).or_default() += 1,
                    Err(e) => panic!("before SIGTERM: {e}"),
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    wait_for("the latency trigger to fire", Duration::from_secs(20), || {
        (agent
            .metric("flightrec_triggers_fired_total", &[("kind", "latency")])
            .unwrap_or(0.0)
            >= 2.0
            && accepted.lock().len() >= 10)
            .then_some(())
    });
    termed.store(true, Ordering::SeqCst);
    let term_at = Instant::now();
    let status = agent.stop();
    let took = term_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    firing.join().expect("firing thread");
    assert!(status.success(), "exit status {status}");
    // post_trigger (1 s) + a window + writing, far below the 30 s grace.
    assert!(took < Duration::from_secs(15), "took {took:?} to stop");

    let spool = agent.path().join("data");
    assert!(partial_ids(&spool).is_empty(), "nothing half-written left behind");
    let on_disk: BTreeSet<String> = committed(&spool)
        .iter()
        .map(|d| d.file_name().expect("name").to_string_lossy().to_string())
        .collect();
    let accepted = accepted.lock().clone();
    for id in &accepted {
        assert!(
            on_disk.contains(id),
            "accepted before SIGTERM but not written: {id}"
        );
    }
    for dir in committed(&spool) {
        assert_bundle_valid(&dir);
    }
    let latency_bundles = committed(&spool)
        .iter()
        .filter(|d| {
            std::fs::read(d.join("manifest.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|m| m["trigger"]["kind"] == "latency")
        })
        .count();
    assert!(latency_bundles >= 1);
    let after = after_term.lock().clone();
    assert!(
        after.keys().all(|s| *s == 503 || *s == 0),
        "requests after SIGTERM: {after:?} (503 shutting down, or refused)"
    );
    println!(
        "{} accepted before SIGTERM, {} bundles written ({latency_bundles} by the latency trigger), stopped in {took:?}, after SIGTERM: {after:?}",
        accepted.len(),
        on_disk.len()
    );
    assert!(agent
        .logs()
        .iter()
        .any(|l| l["message"].as_str() == Some("stopped")));
}

#[test]
fn a_sink_down_for_minutes_compressed_gets_every_bundle_once_back_without_being_hammered() {
    // Compressed "minutes": the sink is down 20 s with breaker_cooldown = 1s,
    // i.e. 20 breaker periods, as 10 minutes is at the default 30 s cooldown
    // (scale 1/30; retry_max 5m -> 1s the same way).
    const DOWN: Duration = Duration::from_secs(20);
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "1000"]);
    let sink = s3_sink(
        &format!("http://127.0.0.1:{port}"),
        "retry_initial = \"100ms\"\nretry_max = \"1s\"\nbreaker_failures = 3\nbreaker_cooldown = \"1s\"",
    );
    let agent = Agent::start_with_env(&config(&target("checkout", &svc.url, ""), &sink), &s3_env());
    wait_for("windows", Duration::from_secs(20), || {
        (agent.windows_kept("checkout") >= 2).then_some(())
    });
    let down_since = Instant::now();
    let mut ids = Vec::new();
    let mut kept = Vec::new();
    while down_since.elapsed() < DOWN {
        if ids.len() < 4 && down_since.elapsed() >= DOWN / 5 * ids.len() as u32 {
            let dir = agent.snapshot("checkout", "while the sink is down");
            ids.push(dir.file_name().expect("id").to_string_lossy().to_string());
        }
        kept.push(agent.windows_kept("checkout"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ids.len(), 4);
    for id in &ids {
        assert_eq!(delivery_state(&agent, id), "pending", "{id}");
    }
    // Recording went on through the outage.
    let recorded = kept.last().copied().unwrap_or(0) - kept.first().copied().unwrap_or(0);
    assert!(
        recorded >= 15,
        "{recorded} windows in {DOWN:?} while the sink was down"
    );
    let failed = agent
        .metric(
            "flightrec_deliveries_total",
            &[("sink", "s3"), ("result", "failed")],
        )
        .unwrap_or(0.0);
    // At most one attempt per breaker cooldown once open (+ the 3 that
    // opened it, + slack); and it kept probing.
    let elapsed = down_since.elapsed().as_secs_f64();
    assert!(
        failed >= 8.0 && failed <= 3.0 + elapsed + 4.0,
        "{failed} failed attempts in {elapsed:.0}s"
    );
    assert!(
        agent
            .metric("flightrec_sink_circuit_opened_total", &[("sink", "s3")])
            .unwrap_or(0.0)
            >= 1.0
    );

    let s3 = S3Server::start(&tmp.path().join("s3"), port, BUCKET);
    let back = Instant::now();
    for id in &ids {
        wait_for(&format!("{id} delivered"), Duration::from_secs(30), || {
            (delivery_state(&agent, id) == "delivered").then_some(())
        });
        let local = agent.path().join("data").join(id);
        let remote = remote_dir(&s3, "checkout", id);
        same_files(&local, &remote);
        assert_bundle_valid(&remote);
    }
    println!(
        "{} bundles made during a {DOWN:?} outage, {failed} failed attempts, all delivered {:?} after the sink returned",
        ids.len(),
        back.elapsed()
    );
    assert_eq!(
        agent.metric("flightrec_delivery_pending_bundles", &[("sink", "s3")]),
        Some(0.0)
    );
}
