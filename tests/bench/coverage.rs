//! 1. Coverage: how much of the target's timeline the windows hold, and the gaps between them, beside curl loops.

use super::*;

pub(crate) fn coverage(r: &mut Report, tmp: &Path) {
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
            target_entry(
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
