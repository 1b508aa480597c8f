//! Fault injection with real processes on the target side: targets that are
//! down, busy, endless, dripping, unresolvable or answer like an old Go. None
//! of it may disturb the recording of a healthy target. (Faults of the disk
//! and the sinks are in `durability.rs`.)
//!
//! "Minutes" are compressed: the config's backoff and breaker times are
//! scaled down by the same factor as the outage, so the agent goes through
//! the same number of backoff doublings, capped retries and breaker probes as
//! it would over minutes at the defaults; each test says its factor.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::delivery::*;
use common::*;
use parking_lot::Mutex;

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

fn errors(agent: &Agent, target: &str, reason: &str) -> f64 {
    agent
        .metric(
            "flightrec_window_errors_total",
            &[("target", target), ("reason", reason)],
        )
        .unwrap_or(0.0)
}

fn last_error(agent: &Agent, target: &str) -> String {
    agent.target(target)["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The most attempts a backoff from `base` doubling to `cap`, with equal
/// jitter (each pause at least half its nominal length), can make in
/// `elapsed`: what "never hammers" means in numbers.
fn max_attempts(elapsed: Duration, base: Duration, cap: Duration) -> u32 {
    let mut spent = Duration::ZERO;
    let mut attempts = 1;
    loop {
        let nominal = base.saturating_mul(1 << (attempts - 1).min(16)).min(cap);
        spent += nominal / 2;
        if spent > elapsed {
            return attempts;
        }
        attempts += 1;
    }
}

#[test]
fn a_target_down_at_start_is_retried_with_backoff_and_recorded_once_it_comes_up() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // The clock starts before the agent does: its first attempts may come
    // before it answers on the API, and the bound must count them.
    let started = Instant::now();
    let agent = Agent::start(&config(&target("late", &url, "backoff_max = \"2s\""), ""));
    wait_for("connect errors", Duration::from_secs(15), || {
        (errors(&agent, "late", "connect") >= 3.0).then_some(())
    });
    assert_eq!(agent.target("late")["state"], "backing_off");
    assert_eq!(agent.windows_kept("late"), 0);
    assert!(
        last_error(&agent, "late").contains("Connection refused"),
        "{}",
        last_error(&agent, "late")
    );
    assert_eq!(
        agent.get("/readyz").0,
        200,
        "a target down never makes the agent unready"
    );
    let tries = errors(&agent, "late", "connect") as u32;
    let bound = max_attempts(
        started.elapsed(),
        Duration::from_millis(200),
        Duration::from_secs(2),
    );
    assert!(
        tries <= bound,
        "{tries} attempts in {:?} (bound {bound})",
        started.elapsed()
    );

    let addr = format!("127.0.0.1:{port}");
    let _svc = GoService::start("fixture", &["-addr", &addr, "-pairs", "1", "-rate", "500"]);
    let up = Instant::now();
    wait_for("windows once the target is up", Duration::from_secs(20), || {
        (agent.windows_kept("late") >= 2).then_some(())
    });
    // backoff_max (2 s) + two 1 s windows + slack for a busy machine.
    assert!(up.elapsed() < Duration::from_secs(10), "{:?}", up.elapsed());
    assert_eq!(agent.target("late")["state"], "recording");
    let dir = agent.snapshot("late", "after a late start");
    assert_bundle_valid(&dir);
}

#[test]
fn a_trace_slot_held_for_minutes_compressed_is_backed_off_within_bounds_then_recorded() {
    // Compressed "minutes": 16 s of busy slot against backoff_max = 2s is
    // eight times the cap, as 4 minutes is against the default 30 s: the
    // agent reaches its longest pause and stays there, as it would.
    const HOLD: u64 = 16;
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "300"]);
    // Someone else takes the one trace slot: a real client asking for a
    // real 16 s trace (retrying until it is the one holding it).
    let url = format!("{}/debug/pprof/trace?seconds={HOLD}", svc.url);
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || -> Result<Vec<u8>, String> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        for _ in 0..50 {
            let r = http.get(&url).send().map_err(|e| e.to_string())?;
            if r.status().as_u16() == 200 {
                let _ = held_tx.send(());
                return r.bytes().map(|b| b.to_vec()).map_err(|e| e.to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("never got the trace slot".into())
    });
    held_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the other client holds the slot");
    let held_since = Instant::now();
    let agent = Agent::start(&config(&target("busy", &svc.url, "backoff_max = \"2s\""), ""));
    wait_for("slot_busy", Duration::from_secs(10), || {
        (errors(&agent, "busy", "slot_busy") >= 1.0).then_some(())
    });
    // Sample while the slot is held: always slot_busy, never a window.
    let mut samples = 0;
    while held_since.elapsed() < Duration::from_secs(HOLD - 2) {
        let t = agent.target("busy");
        assert_eq!(t["state"], "slot_busy", "{t}");
        assert_eq!(t["windows_kept"], 0, "{t}");
        samples += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(samples > 10);
    let tries = errors(&agent, "busy", "slot_busy") as u32;
    let bound = max_attempts(
        held_since.elapsed(),
        Duration::from_secs(1),
        Duration::from_secs(2),
    );
    // It kept asking (about one try per capped pause) but never hammered.
    assert!(
        tries >= 4 && tries <= bound,
        "{tries} tries over {:?} (bound {bound})",
        held_since.elapsed()
    );

    let theirs = holder.join().expect("holder").expect("the holder's trace");
    let freed = Instant::now();
    wait_for("recording once the slot is free", Duration::from_secs(15), || {
        (agent.windows_kept("busy") >= 2).then_some(())
    });
    assert!(freed.elapsed() < Duration::from_secs(8), "{:?}", freed.elapsed());
    // The other client was never disturbed: its trace is whole.
    let dir = tempfile::tempdir().expect("tempdir");
    let theirs_path = dir.path().join("holder.trace");
    std::fs::write(&theirs_path, &theirs).expect("write");
    let check = tracecheck(std::slice::from_ref(&theirs_path));
    assert!(check[0].ok, "the holder's trace: {}", check[0].error);
    let span = (check[0].last_ns - check[0].first_ns) as f64 / 1e9;
    assert!(span > (HOLD - 1) as f64, "holder's trace spans {span}s");
    assert_bundle_valid(&agent.snapshot("busy", "after the slot was freed"));
}

#[test]
fn endless_and_dripping_bodies_are_cut_by_the_byte_cap_the_window_cap_and_read_timeout() {
    let capped = GoService::start(
        "fixture",
        &["-trace-mode", "endless-trace", "-pairs", "1", "-rate", "2000"],
    );
    let overrun = GoService::start(
        "fixture",
        &["-trace-mode", "endless-trace", "-pairs", "1", "-rate", "500"],
    );
    let drip_silent = GoService::start("fixture", &["-trace-mode", "slow"]);
    let drip_overrun = GoService::start("fixture", &["-trace-mode", "slow"]);
    let noise = GoService::start("fixture", &["-trace-mode", "endless"]);
    let targets = [
        // ~100 KB/s: the cap is reached after two or three whole generations.
        target("capped", &capped.url, "max_window_bytes = \"256KiB\""),
        target("overrun", &overrun.url, "read_timeout = \"2s\""),
        // One byte a second: a 500 ms silence limit cuts it...
        target("drip-silent", &drip_silent.url, "read_timeout = \"500ms\""),
        // ...a 2 s one never does, so only the window cap (1 s + 2 s) can.
        target(
            "drip-overrun",
            &drip_overrun.url,
            "read_timeout = \"2s\"\nbackoff_max = \"1s\"",
        ),
        target("noise", &noise.url, ""),
    ]
    .concat();
    let agent = Agent::start(&config(&targets, ""));
    let truncated = |t: &str| {
        agent
            .metric(
                "flightrec_windows_total",
                &[("target", t), ("result", "truncated")],
            )
            .unwrap_or(0.0)
    };
    wait_for("endless traces cut and kept", Duration::from_secs(20), || {
        (truncated("capped") >= 2.0 && truncated("overrun") >= 2.0).then_some(())
    });
    wait_for(
        "dripping bodies cut, again and again",
        Duration::from_secs(20),
        || {
            (errors(&agent, "drip-silent", "truncated_empty") >= 2.0
                && errors(&agent, "drip-overrun", "truncated_empty") >= 2.0)
                .then_some(())
        },
    );
    assert!(
        last_error(&agent, "drip-silent").contains("read_timeout"),
        "{}",
        last_error(&agent, "drip-silent")
    );
    assert!(
        last_error(&agent, "drip-overrun").contains("overrun"),
        "{}",
        last_error(&agent, "drip-overrun")
    );
    assert!(errors(&agent, "noise", "not_a_trace") >= 1.0);
    assert!(last_error(&agent, "noise").contains("not a Go execution trace"));

    // What was kept of an endless trace is whole generations Go parses.
    for (name, why) in [("capped", "byte_cap"), ("overrun", "overrun")] {
        let m = assert_bundle_valid(&agent.snapshot(name, "endless"));
        let windows = m["windows"].as_array().expect("windows");
        assert!(
            windows
                .iter()
                .all(|w| w["complete"] == false && w["truncation"] == why),
            "{name}: {m}"
        );
        if name == "capped" {
            assert!(windows
                .iter()
                .all(|w| w["bytes"].as_u64().unwrap_or(u64::MAX) <= 256 << 10));
        }
    }
    // Cut after window + read_timeout (3 s), not left running.
    let kept = agent.windows_kept("overrun") as f64;
    assert!(kept >= 2.0, "{kept}");
}

#[test]
fn misbehaving_targets_never_disturb_the_recording_of_a_healthy_one() {
    let healthy = GoService::start("fixture", &["-pairs", "1", "-rate", "1000"]);
    let flapper = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let slow = GoService::start("fixture", &["-trace-mode", "slow"]);
    let endless = GoService::start(
        "fixture",
        &["-trace-mode", "endless-trace", "-pairs", "1", "-rate", "2000"],
    );
    let garbage = GoService::start("fixture", &["-trace-mode", "endless"]);
    let down = format!("http://127.0.0.1:{}", free_port());
    // 2 s windows, as in production (5 s by default): the few milliseconds
    // between two windows weigh less than with 1 s ones.
    let healthy_target = target("healthy", &healthy.url, "").replace("window = \"1s\"", "window = \"2s\"");
    let targets = [
        healthy_target,
        target("flapper", &flapper.url, "read_timeout = \"1s\""),
        target("slow", &slow.url, "read_timeout = \"2s\""),
        target("endless", &endless.url, "read_timeout = \"1s\""),
        target("garbage", &garbage.url, ""),
        target("down", &down, ""),
    ]
    .concat();
    let agent = Agent::start(&config(&targets, ""));
    wait_for("the healthy target to record", Duration::from_secs(20), || {
        (agent.windows_kept("healthy") >= 1).then_some(())
    });

    // The flapper changes what it answers every 700 ms, through every mode.
    let stop = Arc::new(AtomicBool::new(false));
    let flapping = {
        let (stop, url) = (stop.clone(), flapper.url.clone());
        std::thread::spawn(move || {
            let modes = [
                "slow",
                "normal",
                "endless",
                "html",
                "already",
                "endless-trace",
                "404",
                "garbage",
                "json",
                "normal",
            ];
            let http = reqwest::blocking::Client::new();
            let mut flips = 0;
            for mode in modes.iter().cycle().take(40) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = http.get(format!("{url}/control?trace_mode={mode}")).send();
                flips += 1;
                std::thread::sleep(Duration::from_millis(700));
            }
            flips
        })
    };
    let from = agent.windows_kept("healthy");
    let since = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    let got = agent.windows_kept("healthy") - from;
    let elapsed = since.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let flips = flapping.join().expect("flapper");
    assert!(flips >= 10, "{flips}");

    // A window every 2 s, back to back, whole.
    assert!(
        got as f64 >= (elapsed / 2.0).floor() - 1.0,
        "{got} windows in {elapsed:.1}s"
    );
    let m = assert_bundle_valid(&agent.snapshot("healthy", "beside broken neighbours"));
    let cov = &m["coverage"];
    let ratio = cov["ratio"].as_f64().expect("ratio");
    let max_gap = cov["max_gap_seconds"].as_f64().expect("max gap");
    println!("healthy target: {got} windows in {elapsed:.1}s, coverage {ratio:.4}, max gap {max_gap:.3}s");
    assert!(ratio >= 0.98, "coverage {ratio}");
    assert!(max_gap < 0.2, "max gap {max_gap}s");
    assert!(m["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .all(|w| w["complete"] == true));
    assert_eq!(agent.target("healthy")["state"], "recording");
    assert_eq!(agent.target("healthy")["consecutive_failures"], 0);
    // The neighbours did misbehave, and each was counted.
    assert!(errors(&agent, "slow", "truncated_empty") >= 1.0);
    assert!(errors(&agent, "garbage", "not_a_trace") >= 1.0);
    assert!(errors(&agent, "down", "connect") >= 1.0);
    let flapper_errors: f64 = ["slot_busy", "not_a_trace", "http_status", "truncated_empty"]
        .iter()
        .map(|r| errors(&agent, "flapper", r))
        .sum();
    assert!(flapper_errors >= 3.0, "{flapper_errors}");
}

#[test]
fn the_go_1_22_answers_from_a_newer_go_server_are_understood() {
    // The machine's Go (>= 1.26) made to answer as Go <= 1.22 does: 400 when
    // the window reaches the server's WriteTimeout, and the Go <= 1.24 text
    // for a busy slot. (record.rs runs a real Go 1.22 server too.)
    let wt = GoService::start(
        "fixture",
        &[
            "-trace-mode",
            "writetimeout",
            "-write-timeout",
            "2s",
            "-pairs",
            "1",
            "-rate",
            "500",
        ],
    );
    let old_busy = GoService::start("fixture", &["-trace-mode", "already-old"]);
    let targets = [
        target("wt", &wt.url, "").replace("window = \"1s\"", "window = \"5s\""),
        target("old-busy", &old_busy.url, ""),
    ]
    .concat();
    let agent = Agent::start(&config(&targets, ""));
    wait_for("a window after shortening", Duration::from_secs(30), || {
        (agent.windows_kept("wt") >= 1).then_some(())
    });
    assert_eq!(errors(&agent, "wt", "write_timeout"), 2.0, "5 s -> 2 s -> 1 s");
    assert_eq!(agent.target("wt")["window_seconds"], 1.0);
    assert_bundle_valid(&agent.snapshot("wt", "shortened window"));
    wait_for("slot_busy from the old text", Duration::from_secs(10), || {
        (errors(&agent, "old-busy", "slot_busy") >= 1.0).then_some(())
    });
    assert_eq!(agent.target("old-busy")["state"], "slot_busy");
    assert!(last_error(&agent, "old-busy").contains("tracing is already enabled"));
}

/// A DNS server on a loopback address that answers every query NXDOMAIN and
/// remembers the names asked.
struct NxDomain {
    addr: String,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl NxDomain {
    fn start() -> NxDomain {
        // Port 53 is fixed by resolv.conf; a random 127/8 address keeps
        // parallel runs apart.
        let pid = std::process::id();
        let socket = (0..50u32)
            .find_map(|i| {
                let n = pid.wrapping_add(i * 7919);
                let addr = format!(
                    "127.{}.{}.{}",
                    53 + n % 150,
                    (n >> 8) % 250 + 1,
                    (n >> 16) % 250 + 1
                );
                UdpSocket::bind((addr.as_str(), 53)).ok().map(|s| (s, addr))
            })
            .expect("bind a loopback DNS server on port 53 (needs root)");
        let (socket, addr) = socket;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let q = &buf[..n];
                // The question name, label by label.
                let mut name = Vec::new();
                let mut i = 12;
                while i < n && q[i] != 0 {
                    let len = q[i] as usize;
                    name.push(String::from_utf8_lossy(&q[i + 1..(i + 1 + len).min(n)]).to_string());
                    i += 1 + len;
                }
                a.lock().push(name.join("."));
                let end = (i + 5).min(n);
                let mut answer = q[..end].to_vec();
                answer[2] = 0x80 | (q[2] & 0x01); // QR, keep RD
                answer[3] = 0x80 | 0x03; // RA, NXDOMAIN
                answer[6..12].fill(0); // no answers, authority or extra records
                let _ = socket.send_to(&answer, from);
            }
        });
        NxDomain { addr, asked, stop }
    }
}

impl Drop for NxDomain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn an_unresolvable_target_is_a_connect_error_backed_off_and_dns_never_leaves_loopback() {
    // The agent runs in its own mount namespace whose /etc/resolv.conf
    // names only the loopback server above: the lookup of a `.invalid`
    // name is real (glibc, NXDOMAIN) but no packet leaves the machine.
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!(
            "\n!!!!!!!! SKIPPED: unshare --mount is not permitted here; the DNS test needs root !!!!!!!!\n"
        );
        return;
    }
    let dns = NxDomain::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {}\noptions timeout:1 attempts:1\n", dns.addr),
    )
    .expect("resolv.conf");
    let resolv_arg = resolv.display().to_string();
    let healthy = GoService::start("fixture", &["-pairs", "1", "-rate", "500"]);
    let name = "flightrec-test-target.invalid";
    let targets = [
        target("nowhere", &format!("http://{name}:6060"), "backoff_max = \"2s\""),
        target("healthy", &healthy.url, ""),
    ]
    .concat();
    // Before the agent starts: its first lookups may come before it answers
    // on the API, and the bound must count them.
    let started = Instant::now();
    let agent = Agent::start_wrapped(
        &config(&targets, ""),
        &[],
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
            &resolv_arg,
        ],
    );
    wait_for("DNS failures", Duration::from_secs(15), || {
        (errors(&agent, "nowhere", "connect") >= 3.0).then_some(())
    });
    let err = last_error(&agent, "nowhere");
    println!("the unresolvable target's error: {err}");
    assert!(err.contains("dns error"), "{err}");
    assert_eq!(agent.target("nowhere")["state"], "backing_off");
    let tries = errors(&agent, "nowhere", "connect") as u32;
    let bound = max_attempts(
        started.elapsed(),
        Duration::from_millis(200),
        Duration::from_secs(2),
    );
    assert!(
        tries <= bound,
        "{tries} lookups in {:?} (bound {bound})",
        started.elapsed()
    );
    let asked = dns.asked.lock().clone();
    assert!(!asked.is_empty() && asked.iter().all(|n| n == name), "{asked:?}");
    wait_for("the healthy target to record", Duration::from_secs(15), || {
        (agent.windows_kept("healthy") >= 2).then_some(())
    });
    assert_bundle_valid(&agent.snapshot("healthy", "beside an unresolvable target"));
}
