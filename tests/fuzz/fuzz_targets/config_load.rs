//! The config loader on arbitrary TOML plus arbitrary `FLIGHTREC_*`
//! environment overrides.
//!
//! Input: TOML text, optionally followed by a line `\0ENV\0` and then one
//! `KEY=VALUE` override per line (so the seeds stay readable config files).
//! Oracles: never a panic; an error lists at least one problem, each with
//! a message; a config that loads is one the agent can run with: targets
//! named uniquely, windows in range, bounded rings.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flightrec::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (toml, env_text) = text.split_once("\n\0ENV\0\n").unwrap_or((&text, ""));
    let env: BTreeMap<String, String> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match config::load_str(toml, &env) {
        Err(e) => {
            assert!(!e.problems.is_empty());
            assert!(e.problems.iter().all(|p| !p.message.is_empty()));
            let _ = e.to_string();
        }
        Ok(c) => {
            assert!(!c.targets.is_empty());
            let mut names = BTreeSet::new();
            for t in &c.targets {
                assert!(config::valid_name(&t.name), "{:?}", t.name);
                assert!(names.insert(t.name.as_str()), "duplicate {:?}", t.name);
                assert!(t.window >= Duration::from_millis(100) && t.window <= Duration::from_secs(3600));
                assert!(t.max_age >= t.window);
                assert!(t.max_windows >= 1 && t.max_windows <= 100_000);
                assert!(t.max_bytes > 0 && t.max_window_bytes >= 4096);
                assert!(t.read_timeout >= Duration::from_millis(100));
                let _ = t.trace_url(t.window);
                let _ = t.public_url();
            }
            assert!(c.ring.max_bytes > 0);
            assert!(c.snapshots.max_bundles >= 1 && c.snapshots.max_bytes >= 1 << 20);
        }
    }
});
