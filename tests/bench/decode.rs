//! 7. Window summaries: the decoder against Go's parser on real busy windows, and what summaries add to the agent's CPU, memory and coverage.

use super::*;

/// The release build of gotrace's `decode_bench` example (`run.sh` builds it).
fn decode_bench_bin() -> PathBuf {
    std::env::var_os("BENCH_DECODE_BIN").map_or_else(
        || repo_root().join("target/release/examples/decode_bench"),
        PathBuf::from,
    )
}

/// Busy fixtures whose windows the decoder is measured on.
const RECORDED: [Load; 3] = [
    Load {
        name: "~5 MB/s, GC every 200 ms",
        args: &["-pairs", "4", "-rate", "37500", "-gc-every", "200ms"],
    },
    TWENTY_MB,
    Load {
        name: "GC, pauses and bursts",
        args: &[
            "-pairs",
            "1",
            "-rate",
            "2000",
            "-gc-every",
            "100ms",
            "-stw-every",
            "20ms",
            "-burst",
            "200",
        ],
    },
];

/// Records `n` whole 2 s windows of `load` through the agent (summaries off,
/// compression none: the windows as received) and returns their files,
/// copied to `dir`.
fn record(load: &Load, n: usize, dir: &Path) -> Vec<PathBuf> {
    let fx = GoService::start("fixture", load.args);
    let agent = start_agent(&target_entry(
        "rec",
        &fx.url,
        "window = \"2s\"\nmax_bytes = \"512MiB\"\ncompression = \"none\"\nsummaries = false",
    ));
    // The first window starts while the fixture warms up: skip it.
    wait_windows(&agent, "rec", n as u64 + 1, Duration::from_secs(60));
    let (_, manifest, files) = bundle_windows(&agent, "rec");
    std::fs::create_dir_all(dir).expect("recorded dir");
    manifest["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .zip(&files)
        .skip(1)
        .filter(|(w, _)| w["complete"] == true)
        .take(n)
        .enumerate()
        .map(|(i, (_, f))| {
            let to = dir.join(format!("{}-{i}.trace", load.args.join("_").replace('-', "")));
            std::fs::copy(f, &to).expect("copy window");
            to
        })
        .collect()
}

/// Go's parser on `files`, `rounds` times each: MB per CPU second of
/// parsing, and of parsing with the summary, by file name.
fn go_parser(files: &[PathBuf], rounds: usize) -> BTreeMap<(String, String), f64> {
    let out = Command::new(fixture_bin("tracesummary"))
        .arg("-bench")
        .arg(rounds.to_string())
        .args(files)
        .output()
        .expect("run tracesummary -bench");
    assert!(
        out.status.success(),
        "tracesummary -bench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `NAME MODE N x BYTES bytes: W MB/s wall, C MB/s per CPU second, ...`
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, mode) = (words.next()?, words.next()?);
            let per_cpu = l
                .split(", ")
                .find_map(|p| p.trim().strip_suffix(" MB/s per CPU second"))?;
            Some(((name.to_string(), mode.to_string()), per_cpu.trim().parse().ok()?))
        })
        .collect()
}

/// The Rust decoder on `files`, about `mb` MB each: JSON lines.
fn rust_decoder(files: &[PathBuf], mb: u64) -> Vec<Value> {
    let bin = decode_bench_bin();
    let out = Command::new(&bin)
        .arg("--json")
        .arg(mb.to_string())
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("run {} (tests/bench/run.sh builds it): {e}", bin.display()));
    assert!(
        out.status.success(),
        "decode_bench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// One agent run for CPU per MB: `summaries` on or off, compression none,
/// 5 s windows, measured over `windows` whole windows.
fn summaries_cost(url: &str, summaries: bool, windows: u64) -> (CostRun, f64, f64) {
    let agent = start_agent(&target_entry(
        "cost",
        url,
        &format!("window = \"5s\"\nmax_bytes = \"256MiB\"\ncompression = \"none\"\nsummaries = {summaries}"),
    ));
    let timeout = Duration::from_secs(5 * (windows + 4) + 60);
    wait_windows(&agent, "cost", 1, timeout);
    let k0 = agent.windows_kept("cost");
    let summarised = |a: &Agent| {
        a.metric("flightrec_trace_stw_max_seconds_count", &[("target", "cost")])
            .unwrap_or(0.0)
    };
    let (c0, b0, s0, t0) = (
        cpu_seconds(agent.proc.pid()),
        received_bytes(&agent, "cost"),
        summarised(&agent),
        Instant::now(),
    );
    wait_windows_gently(&agent, "cost", k0 + windows, timeout);
    let run = CostRun {
        mode: if summaries {
            "summaries on"
        } else {
            "summaries off"
        },
        cpu: cpu_seconds(agent.proc.pid()) - c0,
        bytes: received_bytes(&agent, "cost") - b0,
        wall: t0.elapsed().as_secs_f64(),
        rss_mb: status_mb(agent.proc.pid(), "VmHWM"),
        stored: 1.0,
    };
    let not = agent
        .metric("flightrec_windows_not_summarised_total", &[("target", "cost")])
        .unwrap_or(0.0);
    (run, summarised(&agent) - s0, not)
}

pub(crate) fn decode(r: &mut Report, tmp: &Path) {
    r.section(
        "decode",
        "Window summaries: the decoder against Go's parser, and what summaries cost the agent",
        "Windows recorded by the agent (2 s, compression `none`) from busy fixtures, then decoded \
         by gotrace's `decode_bench` example (release build, 64 KiB chunks, MB per CPU second of \
         its thread) and by Go's parser (`tracesummary -bench`, golang.org/x/exp/trace, MB per \
         CPU second of the process, its garbage collector included) on the same files, each \
         alone and with the window summary. Then the agent's CPU per MB of trace with \
         `summaries = true` against `false` (the framing walker alone), compression `none`, 5 s \
         windows, on one fixture, the two settings alternating; and the coverage of one agent \
         recording two fixtures at the same rate, one target with summaries, one without.",
    );
    let n = r.scale(2, 1) as usize;
    let files: Vec<PathBuf> = RECORDED
        .iter()
        .flat_map(|load| record(load, n, &tmp.join("decode-windows")))
        .collect();
    let rust = rust_decoder(&files, r.scale(200, 20));
    let go = go_parser(&files, r.scale(10, 1) as usize);
    let mut rows = Vec::new();
    let (mut worst, mut worst_summary) = (f64::INFINITY, f64::INFINITY);
    for v in &rust {
        let path = v["file"].as_str().unwrap_or_default();
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let g = |mode: &str| {
            go.get(&(name.clone(), mode.to_string()))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let (dec, sum) = (
            v["decoder"].as_f64().unwrap_or(f64::NAN),
            v["decoder_summary"].as_f64().unwrap_or(f64::NAN),
        );
        let (go_parse, go_sum) = (g("parse"), g("parse+summary"));
        worst = worst.min(dec / go_parse);
        worst_summary = worst_summary.min(sum / go_sum);
        r.put(
            "decode",
            &format!("throughput/{name}"),
            json!({"bytes": v["bytes"], "events": v["events"], "walker_mb_s": v["walker"],
                   "decoder_mb_s": dec, "decoder_summary_mb_s": sum,
                   "go_parse_mb_s": go_parse, "go_parse_summary_mb_s": go_sum,
                   "decoder_x_go": dec / go_parse, "summary_x_go": sum / go_sum}),
        );
        rows.push(vec![
            name,
            f(v["bytes"].as_f64().unwrap_or(0.0) / 1e6, 1),
            v["events"].to_string(),
            f(dec, 1),
            f(go_parse, 1),
            f(dec / go_parse, 2),
            f(sum, 1),
            f(go_sum, 1),
            f(sum / go_sum, 2),
            f(1e3 / sum, 2),
        ]);
    }
    r.table(
        &[
            "window",
            "MB",
            "events",
            "decoder MB/s",
            "Go parser MB/s",
            "×",
            "decoder + summary MB/s",
            "Go parser + summary MB/s",
            "×",
            "decoder + summary ms/MB",
        ],
        &rows,
    );
    r.put("decode", "decoder_x_go_min", json!(worst));
    r.put("decode", "summary_x_go_min", json!(worst_summary));
    r.note(&format!(
        "Goal: the decoder at least 3× Go's parser per core. Slowest ratio here: {} (decoder alone), {} (with the summary).",
        f(worst, 2),
        f(worst_summary, 2)
    ));

    // What summaries add to the agent, alternating the two settings.
    let windows = r.scale(4, 1);
    let rounds = r.scale(2, 1);
    let loads = if r.quick {
        vec![FIVE_MB]
    } else {
        vec![ONE_MB, FIVE_MB]
    };
    let mut rows = Vec::new();
    for load in loads {
        let fx = GoService::start("fixture", load.args);
        let mut runs: BTreeMap<bool, Vec<(CostRun, f64, f64)>> = BTreeMap::new();
        for _ in 0..rounds {
            for on in [false, true] {
                runs.entry(on)
                    .or_default()
                    .push(summaries_cost(&fx.url, on, windows));
            }
        }
        let ms = |on: bool| {
            median(
                &runs[&on]
                    .iter()
                    .map(|(c, _, _)| c.ms_per_mb())
                    .collect::<Vec<_>>(),
            )
        };
        let rss = |on: bool| runs[&on].iter().map(|(c, _, _)| c.rss_mb).fold(0.0, f64::max);
        let added = ms(true) - ms(false);
        for on in [false, true] {
            let rs = &runs[&on];
            let rate = rs.iter().map(|(c, _, _)| c.bytes / c.wall / 1e6).sum::<f64>() / rs.len() as f64;
            let summarised: f64 = rs.iter().map(|(_, s, _)| s).sum();
            let not: f64 = rs.iter().map(|(_, _, n)| n).sum();
            r.put(
                "decode",
                &format!("cost/{}/summaries {}", load.name, if on { "on" } else { "off" }),
                json!({"mb_per_s": rate, "cpu_ms_per_mb": ms(on),
                       "cpu_ms_per_mb_runs": rs.iter().map(|(c, _, _)| c.ms_per_mb()).collect::<Vec<_>>(),
                       "peak_rss_mb": rss(on), "windows_summarised": summarised, "windows_not_summarised": not,
                       "added_ms_per_mb": if on { added } else { 0.0 }}),
            );
            rows.push(vec![
                load.name.into(),
                if on { "on" } else { "off" }.into(),
                f(rate, 2),
                f(ms(on), 2),
                if on { f(added, 2) } else { "-".into() },
                f(
                    rs.iter().map(|(c, _, _)| c.cpu / c.wall * 100.0).sum::<f64>() / rs.len() as f64,
                    2,
                ),
                f(rss(on), 1),
                if on {
                    format!("{summarised} ({not} not)")
                } else {
                    "-".into()
                },
            ]);
        }
    }
    r.table(
        &[
            "load",
            "summaries",
            "MB/s",
            "CPU ms per MB (median)",
            "added ms per MB",
            "CPU % of a core",
            "peak RSS MB",
            "windows summarised",
        ],
        &rows,
    );
    r.note("Goal: summaries add at most 2 ms of the agent's CPU per MB of trace.");

    // Coverage: one agent, two targets at the same rate, summaries on one.
    let n = r.scale(40, 3) as usize;
    let fx: Vec<GoService> = (0..2)
        .map(|_| GoService::start("fixture", FIVE_MB.args))
        .collect();
    let keys = |summaries: bool| {
        format!(
            "window = \"1s\"\nmax_age = \"{}s\"\nmax_bytes = \"512MiB\"\nsummaries = {summaries}",
            n + 30
        )
    };
    let agent = start_agent(&format!(
        "post_trigger = \"0s\"\n[ring]\nmax_bytes = \"1GiB\"\n{}{}",
        target_entry("on", &fx[0].url, &keys(true)),
        target_entry("off", &fx[1].url, &keys(false)),
    ));
    let limit = Duration::from_secs(2 * n as u64 + 60);
    wait_windows(&agent, "on", n as u64 + 1, limit);
    wait_windows(&agent, "off", n as u64 + 1, limit);
    let mut rows = Vec::new();
    for target in ["on", "off"] {
        let (_, _, files) = bundle_windows(&agent, target);
        let files: Vec<PathBuf> = files.iter().take(n).cloned().collect();
        let t = Timeline::of(&files);
        r.check(
            t.invalid == 0 && t.windows >= n,
            format!(
                "decode coverage {target}: {} windows, {} rejected by Go's parser",
                t.windows, t.invalid
            ),
        );
        r.put("decode", &format!("coverage/summaries {target}"), t.json());
        rows.push(t.row("1 s, ~5 MB/s", &format!("flightrec, summaries {target}")));
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
