//! Config: turns TOML and `FLIGHTREC_*` environment overrides into typed, validated settings.
//!
//! A leaf: every stage imports its own section from here (`targets`,
//! `sections`, `triggers`, `sinks`, `kubernetes`, `alertmanager`), and this
//! module imports no stage.
//!
//! Loading happens once: the `config` crate merges the file and the overrides,
//! then one pass reads every key into typed structs and collects every problem
//! with its key path, so a bad file is fixed in one round. Nothing else in the
//! agent reads environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

mod alertmanager;
pub mod condition;
mod crash;
mod kubernetes;
mod rules;
mod sections;
mod sinks;
pub mod table;
mod targets;
mod trigger_defaults;
mod triggers;
mod webhooks;

pub use crate::secret::Secret;
pub use alertmanager::AlertmanagerConfig;
pub use crash::CrashConfig;
pub use kubernetes::KubernetesConfig;
pub use sections::{
    Log, LogFormat, Ring, Server, Snapshots, Tls, DEFAULT_SPOOL_MAX_BUNDLES, DEFAULT_SPOOL_MAX_BYTES,
};
pub use sinks::{
    AzureConfig, Backend, DirConfig, GcsConfig, HttpConfig, RetryPolicy, S3Config, SinkConfig, Upload,
};
pub use targets::{
    default_max_windows, default_read_timeout, default_target, format_seconds, redact_url, valid_name,
    Compression, Target,
};
pub use triggers::{
    LatencyRule, Limits, MetricRule, Poll, Rule, Settings as TriggerSettings, TraceRule, TriggerConfig,
    WebhookConfig,
};

use table::Table;

/// Prefix of environment overrides: `FLIGHTREC_SERVER__LISTEN` sets
/// `server.listen`, `FLIGHTREC_TARGETS__0__URL` sets `targets[0].url`.
pub const ENV_PREFIX: &str = "FLIGHTREC_";

/// Where environment variables come from; tests pass a map instead of
/// mutating the process environment.
pub trait Env {
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: Server,
    pub snapshots: Snapshots,
    pub ring: Ring,
    pub log: Log,
    pub tls: Tls,
    pub targets: Vec<Target>,
    /// `[[triggers]]`, `[webhooks]`, `[trigger_limits]`.
    pub triggers: TriggerSettings,
    /// Where bundles are delivered; empty = they stay in the local spool.
    pub sinks: Vec<SinkConfig>,
    /// `[kubernetes]`: pods on this node that become targets.
    pub kubernetes: KubernetesConfig,
    /// `[crash]`: the crash trigger.
    pub crash: CrashConfig,
    /// `[alertmanager]`: the Alertmanager APIs followed for alerts.
    pub alertmanager: AlertmanagerConfig,
}

/// One problem in the config, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found while loading, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {n} problem{}:",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

pub const DEFAULT_TARGET_URL: &str = "http://127.0.0.1:6060";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Loads `file` (if any) with the `FLIGHTREC_*` overrides from `env` on top.
pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
    let source_name = match file {
        Some(f) => format!("config {}", f.display()),
        None => "config (built-in defaults)".to_string(),
    };
    typed(source_name, merge(file, env))
}

/// Parses TOML text with overrides; for tests and `check-config` on stdin.
pub fn load_str(toml: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    let builder =
        config::Config::builder().add_source(config::File::from_str(toml, config::FileFormat::Toml));
    typed("config".into(), finish_merge(builder, env))
}

/// Reads a merged tree into typed config, or every problem in it.
fn typed(source_name: String, tree: Result<Value, Problem>) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let config = match tree {
        Ok(tree) => Some(read(&tree, &mut problems)),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(ConfigError {
            source_name,
            problems,
        }),
    }
}

fn merge(file: Option<&Path>, env: &dyn Env) -> Result<Value, Problem> {
    let mut builder = config::Config::builder();
    if let Some(f) = file {
        if !f.is_file() {
            return Err(Problem {
                path: String::new(),
                message: format!("cannot read {}: no such file", f.display()),
            });
        }
        builder = builder.add_source(config::File::from(f).format(config::FileFormat::Toml));
    }
    finish_merge(builder, env)
}

fn finish_merge(
    mut builder: config::ConfigBuilder<config::builder::DefaultState>,
    env: &dyn Env,
) -> Result<Value, Problem> {
    let mut overrides: Vec<(String, String, String)> = env
        .vars()
        .into_iter()
        .filter_map(|(k, v)| Some((env_key_path(k.strip_prefix(ENV_PREFIX)?)?, k, v)))
        .collect();
    overrides.sort();
    for (path, key, value) in overrides {
        // The config crate grows an array up to the index it is given: a
        // typo like TARGETS__66666666666666 would allocate until the process
        // aborts (found by fuzzing).
        let too_large = array_indices(&path).find(|i| *i > MAX_ENV_INDEX);
        if let Some(i) = too_large {
            return Err(Problem {
                path,
                message: format!("{key}: array index {i} is too large (at most {MAX_ENV_INDEX})"),
            });
        }
        builder = builder.set_override(path.clone(), value).map_err(|e| Problem {
            path,
            message: format!("bad environment override: {e}"),
        })?;
    }
    let merged = builder.build().map_err(|e| Problem {
        path: String::new(),
        message: e.to_string(),
    })?;
    merged.try_deserialize::<Value>().map_err(|e| Problem {
        path: String::new(),
        message: e.to_string(),
    })
}

/// The largest array index an environment override may name.
pub const MAX_ENV_INDEX: u64 = 9999;

/// The `[n]` indices of a key path, as numbers (`u64::MAX` when larger).
fn array_indices(path: &str) -> impl Iterator<Item = u64> + '_ {
    path.split('[')
        .skip(1)
        .filter_map(|p| p.split_once(']'))
        .map(|(n, _)| n.parse().unwrap_or(u64::MAX))
}

/// `SERVER__LISTEN` → `server.listen`; `TARGETS__0__URL` → `targets[0].url`.
fn env_key_path(rest: &str) -> Option<String> {
    let mut path = String::new();
    for part in rest.split("__") {
        if part.is_empty() {
            return None;
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            if path.is_empty() {
                return None;
            }
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&part.to_ascii_lowercase());
        }
    }
    (!path.is_empty()).then_some(path)
}

fn read(tree: &Value, problems: &mut Vec<Problem>) -> Config {
    let empty = Map::new();
    let root_map = match tree {
        Value::Object(m) => m,
        _ => &empty,
    };
    let mut root = Table::new(String::new(), root_map);
    let server = sections::read_server(&mut root, problems);
    let tls = sections::read_tls(&mut root, problems);
    let snapshots = sections::read_snapshots(&mut root, problems);
    let ring = sections::read_ring(&mut root, problems);
    let log = sections::read_log(&mut root, problems);
    let kubernetes = kubernetes::read(&mut root, problems);
    let targets = match root.tables("targets", problems) {
        // With discovery, the pods are the targets.
        None if kubernetes.enabled => Vec::new(),
        None => vec![targets::default_target()],
        Some(tables) => {
            if tables.is_empty() && !kubernetes.enabled {
                problems.push(Problem {
                    path: "targets".into(),
                    message: "is empty; add at least one [[targets]] entry, or remove the key to record http://127.0.0.1:6060".into(),
                });
            }
            tables
                .into_iter()
                .map(|t| targets::read_target(t, problems))
                .collect()
        }
    };
    let triggers = triggers::read(&mut root, &targets, problems);
    let sinks = sinks::read_all(root.tables("sinks", problems), problems);
    let crash = crash::read(&mut root, problems);
    let alertmanager = alertmanager::read(&mut root, problems);
    root.finish(problems);

    targets::check_targets(&targets, &ring, problems);
    Config {
        server,
        snapshots,
        ring,
        log,
        tls,
        targets,
        triggers,
        sinks,
        kubernetes,
        crash,
        alertmanager,
    }
}

/// What systemd tells a `Type=notify` service through its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Systemd {
    /// `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    pub notify_socket: String,
    /// `WATCHDOG_USEC`, when the unit sets `WatchdogSec=` for this process.
    pub watchdog: Option<Duration>,
}

/// Reads systemd's notify variables; `None` when not started by systemd.
pub fn systemd(env: &dyn Env) -> Option<Systemd> {
    let vars: BTreeMap<String, String> = env.vars().into_iter().collect();
    let notify_socket = vars.get("NOTIFY_SOCKET").filter(|s| !s.is_empty())?.clone();
    let for_us = vars
        .get("WATCHDOG_PID")
        .is_none_or(|pid| pid.parse::<u32>().ok() == Some(std::process::id()));
    let watchdog = vars
        .get("WATCHDOG_USEC")
        .and_then(|u| u.parse::<u64>().ok())
        .filter(|u| *u > 0 && for_us)
        .map(Duration::from_micros);
    Some(Systemd {
        notify_socket,
        watchdog,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_config_at_all_gives_working_defaults() {
        let c = load(None, &env(&[])).expect("defaults load");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.snapshots.dir, PathBuf::from("./flightrec-data"));
        assert_eq!(c.targets.len(), 1);
        let t = &c.targets[0];
        assert_eq!(t.url.as_str(), "http://127.0.0.1:6060/");
        assert_eq!(
            t.trace_url(t.window).as_str(),
            "http://127.0.0.1:6060/debug/pprof/trace?seconds=5"
        );
        assert_eq!(t.compression, Compression::Zstd);
    }

    #[test]
    fn full_example_parses_to_typed_values() {
        let c = load_str(
            r#"
            [server]
            listen = "127.0.0.1:0"
            [snapshots]
            dir = "/var/lib/flightrec"
            post_trigger = "3s"
            [ring]
            max_bytes = "1GiB"
            [[targets]]
            name = "checkout"
            url = "http://127.0.0.1:6060"
            window = "2500ms"
            max_age = "60s"
            max_bytes = "64MiB"
            compression = "none"
            labels = { service = "checkout", pod = "c-1" }
            "#,
            &env(&[]),
        )
        .expect("valid");
        let t = &c.targets[0];
        assert_eq!(t.window, Duration::from_millis(2500));
        assert_eq!(t.max_bytes, 64 << 20);
        assert_eq!(t.compression, Compression::None);
        assert_eq!(t.labels.get("service").map(String::as_str), Some("checkout"));
        assert_eq!(t.trace_url(t.window).query(), Some("seconds=2.5"));
        assert_eq!(c.ring.max_bytes, 1 << 30);
        assert_eq!(c.snapshots.post_trigger, Duration::from_secs(3));
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let err = load_str(
            r#"
            [server]
            listen = "nowhere"
            [[targets]]
            name = "a"
            url = "http://127.0.0.1:1"
            [[targets]]
            name = "b"
            url = "ftp://x"
            window = "5x"
            max_bytes = "lots"
            windw = "5s"
            [[targets]]
            name = "a"
            "#,
            &env(&[]),
        )
        .unwrap_err();
        let text = err.to_string();
        for want in [
            "server.listen: \"nowhere\" is not an address",
            "targets[1].window: \"5x\" is not a duration",
            "targets[1].url: \"ftp://x\" must be an http:// or https:// URL",
            "targets[1].max_bytes: \"lots\" is not a size",
            "targets[1].windw: unknown key",
            "targets[2].name: \"a\" is used by an earlier target",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(err.problems.len(), 6, "{text}");
    }

    #[test]
    fn env_overrides_reach_sections_and_array_entries() {
        let c = load_str(
            r#"
            [[targets]]
            name = "checkout"
            url = "http://127.0.0.1:6060"
            "#,
            &env(&[
                ("FLIGHTREC_SERVER__LISTEN", "127.0.0.1:9999"),
                ("FLIGHTREC_TARGETS__0__WINDOW", "10s"),
                ("FLIGHTREC_TARGETS__0__MAX_WINDOWS", "7"),
                ("FLIGHTREC_SNAPSHOTS__POST_TRIGGER", "1s"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.targets[0].window, Duration::from_secs(10));
        assert_eq!(c.targets[0].max_windows, 7);
        assert_eq!(c.snapshots.post_trigger, Duration::from_secs(1));
    }

    #[test]
    fn env_overrides_reach_labels_of_an_array_entry() {
        // The Kubernetes sidecar example sets labels from the downward API.
        let c = load_str(
            "[[targets]]\nname = \"app\"\nlabels = { service = \"x\" }\n",
            &env(&[
                ("FLIGHTREC_TARGETS__0__LABELS__POD", "checkout-7d9f"),
                ("FLIGHTREC_TARGETS__0__LABELS__SERVICE", "checkout"),
            ]),
        )
        .expect("valid");
        let labels = &c.targets[0].labels;
        assert_eq!(labels.get("pod").map(String::as_str), Some("checkout-7d9f"));
        assert_eq!(labels.get("service").map(String::as_str), Some("checkout"));
    }

    #[test]
    fn a_huge_array_index_in_an_env_override_is_a_problem_not_an_abort() {
        // Minimised from a crash found by tests/fuzz (config_load): the
        // config crate resized the targets array to 66 trillion entries.
        let err = load_str(
            "",
            &env(&[
                ("FLIGHTREC_TARGETS__66666666666666", "x"),
                ("FLIGHTREC_TARGETS__0__URL", "y"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("FLIGHTREC_TARGETS__66666666666666: array index 66666666666666 is too large"),
            "{text}"
        );
        let err = load_str(
            "",
            &env(&[
                ("FLIGHTREC_SINKS__0__TOKEN", "t"),
                ("FLIGHTREC_SINKS__99999999999999999999999__KIND", "s3"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("is too large"), "{err}");
        // The largest index allowed still loads (as missing entries).
        let err = load_str("", &env(&[("FLIGHTREC_TARGETS__9999__NAME", "x")])).unwrap_err();
        assert!(!err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn a_huge_duration_is_a_problem_not_a_panic() {
        // `window + 10s` (the default read_timeout) and a latency trigger's
        // `threshold * 2` overflowed Duration and panicked.
        let err = load_str(
            "[[targets]]\nname = \"a\"\nwindow = \"18446744073709551615s\"\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("targets[0].window: \"18446744073709551615s\" is longer than a year"),
            "{err}"
        );
        let err = load_str(
            "[[targets]]\nname = \"a\"\n[[triggers]]\nkind = \"latency\"\ntarget = \"a\"\nurl = \"http://127.0.0.1:1/\"\nthreshold = \"18446744073709551615s\"\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("longer than a year"), "{err}");
        let err = load(
            None,
            &env(&[("FLIGHTREC_SNAPSHOTS__POST_TRIGGER", "584942417355y")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("snapshots.post_trigger"), "{err}");
    }

    #[test]
    fn env_override_errors_name_the_key() {
        let err = load(None, &env(&[("FLIGHTREC_SNAPSHOTS__POST_TRIGGER", "soon")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("snapshots.post_trigger: \"soon\" is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let c = load(None, &env(&[("FLIGHTREC_SERVER__TOKEN", "hunter2")])).expect("valid");
        assert_eq!(c.server.token.as_ref().map(Secret::expose), Some("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = load_str(
            "[[targets]]\nname = \"x\"\nurl = \"http://user:pw@127.0.0.1:6060\"\n",
            &env(&[]),
        )
        .expect("valid");
        assert!(!t.targets[0].public_url().contains("pw"));
    }

    #[test]
    fn empty_targets_is_an_error_not_a_silent_default() {
        let err = load_str("targets = []\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("targets: is empty"), "{err}");
    }
}
