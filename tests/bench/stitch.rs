//! 7. bundle.trace: stitching a ~200 MB bundle beside copying its bytes, and trigger to durable with stitching after it.

use super::*;
use crate::trigger::{rfc3339, since};

/// A child's wall time, peak RSS (MB) and whether it exited 0, from wait4 on
/// it alone (the harness's other children do not count).
#[allow(clippy::zombie_processes)] // reaped by wait4 below
fn run_measured(cmd: &mut Command) -> (f64, f64, bool) {
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for this child only.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert!(rc > 0, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (t.elapsed().as_secs_f64(), ru.ru_maxrss as f64 / 1024.0, ok)
}

/// Copies `files` into `into` and fsyncs each: the plain copy stitching is
/// compared with (the stitcher reads, writes, hashes and fsyncs as much).
fn copy_synced(files: &[PathBuf], into: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(into);
    std::fs::create_dir_all(into).expect("mkdir");
    let t = Instant::now();
    for f in files {
        let dest = into.join(f.file_name().expect("name"));
        std::fs::copy(f, &dest).expect("copy");
        std::fs::File::open(&dest)
            .and_then(|d| d.sync_all())
            .expect("fsync");
    }
    t.elapsed().as_secs_f64()
}

pub(crate) fn stitch(r: &mut Report, tmp: &Path) {
    r.section(
        "stitch",
        "bundle.trace: stitching against a plain copy",
        "One fixture at ~20 MB/s recorded in 5 s windows (the default, about 5 generations \
         each) and then 2 s ones (about 2: nearly every generation is at a seam) until the \
         ring holds the bundle's size (uncompressed), then one snapshot (no post-trigger recording). The agent makes bundle.trace once \
         the bundle is durable: trigger → durable is `created_at − fired_at`, durable → derived \
         ready is `derived.ready_at − created_at`. Then, with the fixture stopped, the same step \
         alone (`flightrec stitch --again`, which reads every window, stitches, hashes, writes and \
         fsyncs bundle.trace and rewrites the manifests) is timed three times beside copying the \
         windows' bytes (`std::fs::copy` + fsync of each file), from the page cache both; peak \
         RSS is the stitching process's own (wait4).",
    );
    let want_mb = r.scale(200, 40) as f64;
    // The agent's default window (5 s: about 5 generations each) and 2 s
    // (about 2: nearly every generation is at a seam).
    let rows: Vec<Vec<String>> = ["5s", "2s"].iter().map(|w| one(r, tmp, w, want_mb)).collect();
    r.table(
        &[
            "window",
            "bundle MB",
            "windows",
            "trigger → durable s",
            "durable → bundle.trace s",
            "copy s (median of 3)",
            "stitch s (median of 3)",
            "stitch / copy",
            "stitch peak RSS MB",
        ],
        &rows,
    );
}

fn one(r: &mut Report, tmp: &Path, window: &str, want_mb: f64) -> Vec<String> {
    let fx = GoService::start("fixture", TWENTY_MB.args);
    let agent = start_agent(&format!(
        "post_trigger = \"0s\"\n[ring]\nmax_bytes = \"1GiB\"\n{}",
        target_entry(
            "big",
            &fx.url,
            &format!(
                "window = \"{window}\"\nmax_age = \"600s\"\nmax_bytes = \"1GiB\"\ncompression = \"none\""
            )
        )
    ));
    wait_for(
        &format!("{want_mb} MB in the ring"),
        Duration::from_secs(600),
        || {
            let held = agent
                .metric("flightrec_ring_bytes", &[("target", "big")])
                .unwrap_or(0.0);
            (held >= want_mb * 1e6).then_some(())
        },
    );
    let (dir, _, files) = bundle_windows(&agent, "big");
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    let fired = rfc3339(&m["trigger"]["fired_at"]).expect("fired_at");
    let durable = rfc3339(&m["created_at"]).expect("created_at");
    let ready = rfc3339(&m["derived"]["ready_at"]).expect("derived.ready_at");
    let bytes: u64 = m["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| w["bytes"].as_u64().unwrap_or(0))
        .sum();
    let derived = &m["derived"];
    r.check(
        derived["stitch"]["error"].is_null()
            && derived["stitch"]["pieces"].as_array().map(Vec::len) == Some(1),
        format!("stitch: the bundle is not one stitched trace: {derived}"),
    );
    // The agent's directory goes with it: copy the bundle aside to time the
    // step alone, with nothing else running.
    let work = tmp.join("stitch-bundle");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("mkdir");
    for e in std::fs::read_dir(&dir).expect("bundle").flatten() {
        std::fs::copy(e.path(), work.join(e.file_name())).expect("copy bundle");
    }
    drop(agent);
    drop(fx);
    let windows: Vec<PathBuf> = files
        .iter()
        .map(|f| work.join(f.file_name().expect("name")))
        .collect();
    let (mut copies, mut stitches, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        copies.push(copy_synced(&windows, &tmp.join("stitch-copy")));
        let (secs, mb, ok) = run_measured(Command::new(agent_bin()).args(["stitch", "--again"]).arg(&work));
        r.check(ok, "stitch: flightrec stitch --again failed".into());
        stitches.push(secs);
        rss.push(mb);
    }
    let _ = std::fs::remove_dir_all(tmp.join("stitch-copy"));
    let checked = tracecheck(&[work.join("bundle.trace")]);
    r.check(
        checked.first().is_some_and(|c| c.ok),
        format!("stitch: Go's parser rejects the stitched trace: {checked:?}"),
    );
    let _ = std::fs::remove_dir_all(&work);
    let (copy, stitch) = (median(&copies), median(&stitches));
    let mb = bytes as f64 / 1e6;
    let ratio = stitch / copy;
    let peak = rss.iter().copied().fold(0.0, f64::max);
    r.put(
        "stitch",
        &format!("window_{window}"),
        json!({"bytes": bytes, "windows": files.len(), "trigger_to_durable_s": since(fired, durable),
               "durable_to_derived_s": since(durable, ready), "copy_s": copy, "stitch_s": stitch,
               "ratio": ratio, "stitch_peak_rss_mb": peak, "copies_s": copies, "stitches_s": stitches}),
    );
    vec![
        window.to_string(),
        f(mb, 0),
        files.len().to_string(),
        f(since(fired, durable), 2),
        f(since(durable, ready), 2),
        f(copy, 2),
        f(stitch, 2),
        f(ratio, 2),
        f(peak, 1),
    ]
}
