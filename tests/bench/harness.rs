//! The agent and the Go workloads under test: configs, starting, waiting for windows, taking bundles.

use super::*;

/// A Go fixture workload: flags and what it is called in the report.
pub(crate) struct Load {
    pub(crate) name: &'static str,
    pub(crate) args: &'static [&'static str],
}

pub(crate) const IDLE: Load = Load {
    name: "idle",
    args: &[],
};

pub(crate) const ONE_MB: Load = Load {
    name: "~1 MB/s",
    args: &["-pairs", "4", "-rate", "7500"],
};

pub(crate) const FIVE_MB: Load = Load {
    name: "~5 MB/s",
    args: &["-pairs", "4", "-rate", "37500"],
};

pub(crate) const TWENTY_MB: Load = Load {
    name: "~20 MB/s",
    args: &["-pairs", "4", "-rate", "150000"],
};

pub(crate) fn target_entry(name: &str, url: &str, extra: &str) -> String {
    format!("[[targets]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

pub(crate) fn start_agent(config: &str) -> Agent {
    start_agent_env(config, &[])
}

pub(crate) fn start_agent_env(config: &str, env: &[(&str, &str)]) -> Agent {
    let mut all = vec![("FLIGHTREC_LOG__LEVEL", "info")];
    all.extend_from_slice(env);
    Agent::start_with_env(
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n[snapshots]\ndir = \"{{dir}}/spool\"\n{config}"),
        &all,
    )
}

pub(crate) fn received_bytes(agent: &Agent, target: &str) -> f64 {
    agent
        .metric("flightrec_received_bytes_total", &[("target", target)])
        .unwrap_or(0.0)
}

pub(crate) fn wait_windows(agent: &Agent, target: &str, n: u64, timeout: Duration) {
    wait_for(&format!("{n} windows of {target}"), timeout, || {
        (agent.windows_kept(target) >= n).then_some(())
    });
}

/// Like [`wait_windows`], but asks only 4 times a second: while the agent's
/// CPU is being measured, 20 API requests a second would show in it.
pub(crate) fn wait_windows_gently(agent: &Agent, target: &str, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while agent.windows_kept(target) < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} windows of {target}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Takes a snapshot of `target` and returns its bundle's window files in order.
pub(crate) fn bundle_windows(agent: &Agent, target: &str) -> (PathBuf, Value, Vec<PathBuf>) {
    let dir = agent.snapshot(target, "bench");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    let files = manifest["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| dir.join(w["file"].as_str().expect("file")))
        .collect();
    (dir, manifest, files)
}
