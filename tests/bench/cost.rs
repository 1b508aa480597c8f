//! 2. The agent's cost: CPU per MB of trace, with and without compression, beside a `curl -o` loop.

use super::*;

pub(crate) struct CostRun {
    pub(crate) mode: &'static str,
    pub(crate) cpu: f64,
    pub(crate) bytes: f64,
    pub(crate) wall: f64,
    pub(crate) rss_mb: f64,
    pub(crate) stored: f64,
}

impl CostRun {
    pub(crate) fn ms_per_mb(&self) -> f64 {
        if self.bytes > 0.0 {
            self.cpu * 1e3 / (self.bytes / 1e6)
        } else {
            f64::NAN
        }
    }
}

pub(crate) fn agent_cost(url: &str, compression: &str, windows: u64) -> CostRun {
    let agent = start_agent(&target_entry(
        "cost",
        url,
        // Room for whole 5 s windows at 20 MB/s: none is cut by
        // max_window_bytes. The recording path alone: what summaries add is
        // the decode section's.
        &format!(
            "window = \"5s\"\nmax_bytes = \"256MiB\"\ncompression = \"{compression}\"\nsummaries = false"
        ),
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

pub(crate) fn curl_cost(url: &str, dir: &Path, windows: u64) -> CostRun {
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

pub(crate) fn cost(r: &mut Report, tmp: &Path) {
    r.section(
        "cost",
        "Agent cost per MB of trace",
        "One fixture per load, 5 s windows, recorded in turn by flightrec (compression \
         `none`, then `zstd`; summaries off: what they add is measured in the decode \
         section) and by a shell loop of `curl -o` writing files. CPU is user + \
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
