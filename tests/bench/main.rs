//! Benchmarks: what flightrec costs and how much of the timeline it catches,
//! each figure beside a baseline measured in the same run (a shell loop of
//! `curl -o`, one kept-alive `curl`, no tracing at all, Go's in-process
//! `runtime/trace.FlightRecorder`), so the report gives ratios that hold on
//! a shared, noisy machine.
//!
//! Run through `tests/bench/run.sh [--quick] [SECTION...]`; ignored by
//! `cargo test`. Writes `target/bench/results.json` and `report.md`.
//! Sections: coverage, cost, overhead, scale, trigger, memory, alertmanager, decode, stitch.
//! `BENCH_AGENT_BIN=PATH` benchmarks another build of the agent.

mod alertmanager;
#[path = "../common/mod.rs"]
mod common;
mod cost;
mod coverage;
mod decode;
mod harness;
mod measure;
mod memory;
mod overhead;
mod report;
mod scale;
mod stitch;
mod trigger;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::delivery::*;
use common::*;
use serde_json::{json, Value};

use alertmanager::alertmanager;
use cost::{cost, CostRun};
use coverage::coverage;
use decode::decode;
use harness::*;
use measure::*;
use memory::memory;
use overhead::overhead;
use report::*;
use scale::scale;
use stitch::stitch;
use trigger::trigger;

fn machine() -> Value {
    let sh = |cmd: &str| -> String {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "date": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "cpus": sh("nproc"),
        "cpu_model": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-"),
        "memory": sh("grep MemTotal /proc/meminfo | awk '{printf \"%.1f GiB\", $2/1048576}'"),
        "kernel": sh("uname -r"),
        "go": sh("go version"),
        "rustc": sh("rustc --version"),
        "commit": sh(&format!("git -C {} rev-parse --short HEAD", repo_root().display())),
        "agent": agent_bin().display().to_string(),
        "agent_version": sh(&format!("{} --version", agent_bin().display())),
    })
}

#[test]
#[ignore = "benchmarks: run through tests/bench/run.sh"]
fn bench() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let only: Vec<String> = std::env::var("BENCH_SECTIONS")
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/bench"));
    std::fs::create_dir_all(&out).expect("bench output dir");
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = machine();
    let mut r = Report {
        quick,
        json: serde_json::Map::new(),
        broken: Vec::new(),
        md: format!(
            "# flightrec benchmarks\n\n{} on {} ({} CPUs, {}), kernel {}, {}, {}; commit {}, agent {}.{}\n",
            m["date"].as_str().unwrap_or(""),
            m["cpu_model"].as_str().unwrap_or(""),
            m["cpus"].as_str().unwrap_or(""),
            m["memory"].as_str().unwrap_or(""),
            m["kernel"].as_str().unwrap_or(""),
            m["go"].as_str().unwrap_or(""),
            m["rustc"].as_str().unwrap_or(""),
            m["commit"].as_str().unwrap_or(""),
            m["agent"].as_str().unwrap_or(""),
            if quick {
                "\n\n**Quick run** (`--quick`): every phase shortened; a smoke check, not figures to quote."
            } else {
                ""
            }
        ),
    };
    r.json.insert("machine".into(), m);
    r.json.insert("quick".into(), json!(quick));
    type Section = fn(&mut Report, &Path);
    let sections: [(&str, Section); 9] = [
        ("coverage", coverage),
        ("cost", cost),
        ("overhead", overhead),
        ("scale", scale),
        ("trigger", trigger),
        ("memory", memory),
        ("alertmanager", alertmanager),
        ("decode", decode),
        ("stitch", stitch),
    ];
    for (name, run) in sections {
        if only.is_empty() || only.iter().any(|o| o == name) {
            let t = Instant::now();
            run(&mut r, tmp.path());
            println!("({name}: {:.0} s)", t.elapsed().as_secs_f64());
            // Written after each section, so a long run that fails late keeps what it measured.
            std::fs::write(
                out.join("results.json"),
                serde_json::to_string_pretty(&Value::Object(r.json.clone())).expect("json"),
            )
            .expect("write results.json");
            std::fs::write(out.join("report.md"), &r.md).expect("write report.md");
        }
    }
    println!("\nbench: report in {}", out.join("report.md").display());
    assert!(r.broken.is_empty(), "broken invariants: {:#?}", r.broken);
}
