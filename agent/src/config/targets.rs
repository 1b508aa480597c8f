//! `[[targets]]`: the Go services to record, how each is polled and how much of it the ring keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use url::Url;

use super::table::Table;
use super::{Problem, Ring, DEFAULT_TARGET_URL};

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
    /// Whether the target's death makes a bundle (with `[crash] enabled`).
    pub crash: bool,
    /// Whether each window is decoded as it streams in and summarised (GC,
    /// pauses, scheduling latency), for manifests, metrics and trace triggers.
    pub summaries: bool,
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

pub fn default_target() -> Target {
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
        crash: true,
        summaries: true,
    }
}

/// Enough slots for `max_age` of windows plus the one being recorded and one
/// cut short.
pub fn default_max_windows(window: Duration, max_age: Duration) -> usize {
    let per = window.as_secs_f64().max(0.1);
    (max_age.as_secs_f64() / per).ceil() as usize + 2
}

/// A quiet service may flush nothing until its window ends, so silence is
/// only suspicious well after that.
pub fn default_read_timeout(window: Duration) -> Duration {
    window + Duration::from_secs(10)
}

pub(super) fn read_target(mut t: Table<'_>, problems: &mut Vec<Problem>) -> Target {
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
    let crash = t.bool("crash", d.crash, problems);
    let summaries = t.bool("summaries", d.summaries, problems);
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
        crash,
        summaries,
    }
}

pub(super) fn check_targets(targets: &[Target], ring: &Ring, problems: &mut Vec<Problem>) {
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
