//! 6. The memory bound: peak RSS against the ring budget while traces stream in.

use super::*;

pub(crate) fn memory(r: &mut Report, _tmp: &Path) {
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
            target_entry(
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
