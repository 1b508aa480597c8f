//! Turns TOML and `FLIGHTREC_*` environment overrides into typed, validated config.
//!
//! Loading happens once: the `config` crate merges the file and the overrides,
//! then one pass reads every key into typed structs and collects every problem
//! with its key path, so a bad file is fixed in one round. Nothing else in the
//! agent reads environment variables.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

pub mod table;

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
    pub triggers: crate::trigger::Settings,
    /// Where bundles are delivered; empty = they stay in the local spool.
    pub sinks: Vec<crate::sink::SinkConfig>,
    /// `[kubernetes]`: pods on this node that become targets.
    pub kubernetes: crate::discovery::KubernetesConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: SocketAddr,
    /// File holding the bearer token required by mutating endpoints.
    pub token_file: Option<PathBuf>,
    /// The token itself (`server.token` or `FLIGHTREC_SERVER__TOKEN`); never logged.
    pub token: Option<Secret>,
    /// Largest request body accepted.
    pub max_body: u64,
    /// When true, `/readyz` fails while any target has not given a window
    /// recently. Off by default: a recorder must never take its service out
    /// of rotation.
    pub ready_requires_targets: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tls {
    /// PEM file of extra CA certificates trusted for outbound HTTPS (targets,
    /// probes, sinks), on top of the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshots {
    pub dir: PathBuf,
    /// Keep recording this long after a trigger before writing the bundle.
    pub post_trigger: Duration,
    /// Spool quota in bytes of committed bundles.
    pub max_bytes: u64,
    /// Spool quota in committed bundles.
    pub max_bundles: usize,
}

/// Default spool quota: room for a few dozen busy-service bundles without
/// filling a node's disk.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 4 << 30;
pub const DEFAULT_SPOOL_MAX_BUNDLES: u64 = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    /// Byte budget shared by the rings of all targets.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human lines on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `flightrec=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    /// Base URL of the service (scheme, host, port, optional user info).
    pub url: Url,
    /// Path of the trace endpoint.
    pub path: String,
    pub window: Duration,
    pub max_age: Duration,
    pub max_bytes: u64,
    pub max_windows: usize,
    /// A window larger than this is cut (the connection closed) and kept
    /// truncated.
    pub max_window_bytes: u64,
    pub compression: Compression,
    pub labels: BTreeMap<String, String>,
    pub connect_timeout: Duration,
    /// Longest silence inside a response before it is abandoned.
    pub read_timeout: Duration,
    /// Longest pause between attempts while the target is down or busy.
    pub backoff_max: Duration,
}

impl Target {
    /// The trace URL for one window of `window`.
    pub fn trace_url(&self, window: Duration) -> Url {
        let mut url = self.url.clone();
        url.set_path(&self.path);
        let secs = format_seconds(window);
        url.query_pairs_mut().clear().append_pair("seconds", &secs);
        url
    }

    /// The base URL without user info, for logs and API answers.
    pub fn public_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Go's handler parses `seconds` as a float; whole seconds print without a fraction.
pub fn format_seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A URL with any password or user name removed.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// A secret string whose Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
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

    let mut server_t = root.table("server", problems);
    let listen_text = server_t
        .string("listen", problems)
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.push(server_t.problem(
                "listen",
                format!("{listen_text:?} is not an address like \"127.0.0.1:7070\""),
            ));
            DEFAULT_LISTEN.parse().expect("default listen address parses")
        }
    };
    let server = Server {
        listen,
        token_file: server_t.string("token_file", problems).map(PathBuf::from),
        token: server_t.string("token", problems).map(Secret),
        max_body: server_t.size("max_body", 1 << 20, problems),
        ready_requires_targets: server_t.bool("ready_requires_targets", false, problems),
    };
    server_t.finish(problems);

    let mut tls_t = root.table("tls", problems);
    let tls = Tls {
        ca_file: tls_t.string("ca_file", problems).map(PathBuf::from),
    };
    if let Some(f) = &tls.ca_file {
        if !f.is_file() {
            problems.push(tls_t.problem("ca_file", format!("{} is not a readable file", f.display())));
        }
    }
    tls_t.finish(problems);

    let mut snap_t = root.table("snapshots", problems);
    let snapshots = Snapshots {
        dir: PathBuf::from(
            snap_t
                .string("dir", problems)
                .unwrap_or_else(|| "./flightrec-data".into()),
        ),
        post_trigger: snap_t.duration("post_trigger", Duration::from_secs(2), problems),
        max_bytes: snap_t.size("max_bytes", DEFAULT_SPOOL_MAX_BYTES, problems),
        max_bundles: snap_t.uint("max_bundles", DEFAULT_SPOOL_MAX_BUNDLES, problems) as usize,
    };
    if snapshots.max_bytes < 1 << 20 {
        problems.push(snap_t.problem("max_bytes", "must be at least 1MiB".into()));
    }
    if snapshots.max_bundles == 0 {
        problems.push(snap_t.problem("max_bundles", "must be at least 1".into()));
    }
    snap_t.finish(problems);

    let mut ring_t = root.table("ring", problems);
    let ring = Ring {
        max_bytes: ring_t.size("max_bytes", 512 << 20, problems),
    };
    ring_t.finish(problems);

    let mut log_t = root.table("log", problems);
    let format = match log_t.string("format", problems).as_deref() {
        None | Some("auto") => LogFormat::Auto,
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            problems.push(log_t.problem(
                "format",
                format!("{other:?} is not one of \"auto\", \"text\", \"json\""),
            ));
            LogFormat::Auto
        }
    };
    let log = Log {
        format,
        level: log_t.string("level", problems).unwrap_or_else(|| "info".into()),
    };
    log_t.finish(problems);

    let kubernetes = crate::discovery::read(&mut root, problems);
    let targets = match root.tables("targets", problems) {
        // With discovery, the pods are the targets.
        None if kubernetes.enabled => Vec::new(),
        None => vec![default_target()],
        Some(tables) => {
            if tables.is_empty() && !kubernetes.enabled {
                problems.push(Problem {
                    path: "targets".into(),
                    message: "is empty; add at least one [[targets]] entry, or remove the key to record http://127.0.0.1:6060".into(),
                });
            }
            tables.into_iter().map(|t| read_target(t, problems)).collect()
        }
    };
    let triggers = crate::trigger::config::read(&mut root, &targets, problems);
    let sinks = crate::sink::read_all(root.tables("sinks", problems), problems);
    root.finish(problems);

    check_targets(&targets, &ring, problems);
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

pub(crate) fn default_target() -> Target {
    let window = Duration::from_secs(5);
    let max_age = Duration::from_secs(60);
    Target {
        name: "default".into(),
        url: Url::parse(DEFAULT_TARGET_URL).expect("default URL parses"),
        path: "/debug/pprof/trace".into(),
        window,
        max_age,
        max_bytes: 64 << 20,
        max_windows: default_max_windows(window, max_age),
        max_window_bytes: 64 << 20,
        compression: Compression::Zstd,
        labels: BTreeMap::new(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: default_read_timeout(window),
        backoff_max: Duration::from_secs(30),
    }
}

/// Enough slots for `max_age` of windows plus the one being recorded and one
/// cut short.
pub(crate) fn default_max_windows(window: Duration, max_age: Duration) -> usize {
    let per = window.as_secs_f64().max(0.1);
    (max_age.as_secs_f64() / per).ceil() as usize + 2
}

/// A quiet service may flush nothing until its window ends, so silence is
/// only suspicious well after that.
pub(crate) fn default_read_timeout(window: Duration) -> Duration {
    window + Duration::from_secs(10)
}

fn read_target(mut t: Table<'_>, problems: &mut Vec<Problem>) -> Target {
    let d = default_target();
    let name = t.string("name", problems).unwrap_or_default();
    if name.is_empty() {
        problems.push(t.problem("name", "is required (letters, digits, '.', '_', '-')".into()));
    } else if !valid_name(&name) {
        problems.push(t.problem(
            "name",
            format!("{name:?} may hold only letters, digits, '.', '_' and '-' (at most 64), since it names files and objects"),
        ));
    }
    let url_text = t
        .string("url", problems)
        .unwrap_or_else(|| DEFAULT_TARGET_URL.into());
    let url = match Url::parse(&url_text) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => u,
        Ok(_) => {
            problems.push(t.problem(
                "url",
                format!(
                    "{:?} must be an http:// or https:// URL with a host",
                    redact_text(&url_text)
                ),
            ));
            d.url.clone()
        }
        Err(e) => {
            problems.push(t.problem("url", format!("{:?} is not a URL: {e}", redact_text(&url_text))));
            d.url.clone()
        }
    };
    let path = t.string("path", problems).unwrap_or(d.path);
    if !path.starts_with('/') {
        problems.push(t.problem("path", format!("{path:?} must start with '/'")));
    }
    let window = t.duration("window", d.window, problems);
    if window < Duration::from_millis(100) || window > Duration::from_secs(3600) {
        problems.push(t.problem(
            "window",
            format!(
                "{} is out of range: use 100ms to 1h (5s is a good start)",
                humantime::format_duration(window)
            ),
        ));
    }
    let max_age = t.duration("max_age", d.max_age, problems);
    if max_age < window {
        problems.push(t.problem(
            "max_age",
            format!(
                "({}) must be at least the window ({})",
                humantime::format_duration(max_age),
                humantime::format_duration(window)
            ),
        ));
    }
    let max_bytes = t.size("max_bytes", d.max_bytes, problems);
    if max_bytes == 0 {
        problems.push(t.problem("max_bytes", "must be more than 0".into()));
    }
    let max_windows = t.uint(
        "max_windows",
        default_max_windows(window, max_age) as u64,
        problems,
    ) as usize;
    if max_windows == 0 || max_windows > 100_000 {
        problems.push(t.problem("max_windows", "must be between 1 and 100000".into()));
    }
    let max_window_bytes = t.size("max_window_bytes", max_bytes, problems);
    if max_window_bytes < 4096 {
        problems.push(t.problem("max_window_bytes", "must be at least 4KiB".into()));
    }
    let compression = t.compression("compression", d.compression, problems);
    let labels = t.labels("labels", problems);
    let connect_timeout = t.duration("connect_timeout", d.connect_timeout, problems);
    let read_timeout = t.duration("read_timeout", default_read_timeout(window), problems);
    if read_timeout < Duration::from_millis(100) {
        problems.push(t.problem("read_timeout", "must be at least 100ms".into()));
    }
    let backoff_max = t.duration("backoff_max", d.backoff_max, problems);
    if backoff_max < Duration::from_millis(100) {
        problems.push(t.problem("backoff_max", "must be at least 100ms".into()));
    }
    t.finish(problems);
    Target {
        name,
        url,
        path,
        window,
        max_age,
        max_bytes,
        max_windows,
        max_window_bytes,
        compression,
        labels,
        connect_timeout,
        read_timeout,
        backoff_max,
    }
}

fn check_targets(targets: &[Target], ring: &Ring, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for (i, t) in targets.iter().enumerate() {
        if !t.name.is_empty() && !seen.insert(t.name.as_str()) {
            problems.push(Problem {
                path: format!("targets[{i}].name"),
                message: format!("{:?} is used by an earlier target; names must be unique", t.name),
            });
        }
    }
    if ring.max_bytes == 0 {
        problems.push(Problem {
            path: "ring.max_bytes".into(),
            message: "must be more than 0".into(),
        });
    }
}

/// Target names become file names, object keys and metric labels.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The URL as the user wrote it, unless it carries credentials.
fn redact_text(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => redact_url(&u),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
