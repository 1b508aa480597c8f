//! 4. Scale: many targets under one agent and one global ring budget.

use super::*;

pub(crate) fn scale(r: &mut Report, tmp: &Path) {
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
            cfg += &target_entry(
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
