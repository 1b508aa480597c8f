//! Sinks: where durable bundles go. One trait, one file per backend, and the reading of `[[sinks]]`.
//!
//! A sink delivers one committed bundle at a time and must be idempotent:
//! after a crash the same bundle is delivered again under the same keys, so
//! "exactly once" holds for what lands at the destination. Retries, backoff
//! and the circuit breaker live in `delivery`, not here.

use crate::tls::ExtraRoots;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::bundle::Manifest;
use crate::config::table::Table;
use crate::config::Problem;

pub mod azure;
pub mod dir;
pub mod gcs;
pub mod http;
pub mod object;
pub mod s3;

/// A committed bundle handed to a sink.
#[derive(Debug, Clone)]
pub struct BundleRef {
    pub id: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// What a successful delivery reports.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Where the bundle now is (`s3://bucket/key/`, a URL, a path); never holds secrets.
    pub location: String,
    /// Bytes sent.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The bundle on disk is missing a file or a file differs from its
    /// manifest: no retry can help, so the bundle is marked failed for the sink.
    #[error("bundle {id} is damaged on disk: {why}")]
    Damaged { id: String, why: String },
    /// The destination could not take the bundle now; delivery retries.
    #[error("{0}")]
    Remote(String),
}

impl SinkError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Damaged { .. })
    }

    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Damaged { .. } => "damaged",
            SinkError::Remote(_) => "remote",
        }
    }
}

/// One destination. Implementations stream files from disk; memory stays
/// bounded whatever the bundle size.
pub trait Sink: Send + Sync {
    /// Delivers every window, then the manifests last, so a reader that sees
    /// the manifest sees a whole bundle. Delivering the same bundle again
    /// overwrites the same keys.
    fn deliver<'a>(&'a self, bundle: &'a BundleRef) -> BoxFuture<'a, Result<Delivered, SinkError>>;

    /// Where this sink sends bundles, for logs (no secrets).
    fn describe(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up sink {sink:?}: {why}")]
pub struct BuildError {
    pub sink: String,
    pub why: String,
}

/// Retry, backoff and circuit breaker settings of one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// First pause after a failed attempt; doubles on each failure.
    pub initial: Duration,
    /// Longest pause between attempts.
    pub max: Duration,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit stays open before one probe.
    pub breaker_cooldown: Duration,
    /// Longest one delivery of one bundle may take before it is abandoned and retried.
    pub attempt_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Names the sink in the ledger, metrics, logs and API; must stay stable
    /// across restarts or bundles are delivered again.
    pub name: String,
    pub retry: RetryPolicy,
    pub backend: Backend,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    S3(s3::S3Config),
    Gcs(gcs::GcsConfig),
    Azure(azure::AzureConfig),
    Dir(dir::DirConfig),
    Http(http::HttpConfig),
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::S3(_) => "s3",
            Backend::Gcs(_) => "gcs",
            Backend::Azure(_) => "azure",
            Backend::Dir(_) => "dir",
            Backend::Http(_) => "http",
        }
    }
}

/// Builds the running sink for a config; `roots` adds `tls.ca_file` to the
/// system's trust.
pub fn build(config: &SinkConfig, roots: &ExtraRoots) -> Result<Arc<dyn Sink>, BuildError> {
    let fail = |why: String| BuildError {
        sink: config.name.clone(),
        why,
    };
    let sink: Arc<dyn Sink> = match &config.backend {
        Backend::S3(c) => Arc::new(s3::build(&config.name, c, roots).map_err(fail)?),
        Backend::Gcs(c) => Arc::new(gcs::build(&config.name, c, roots).map_err(fail)?),
        Backend::Azure(c) => Arc::new(azure::build(&config.name, c, roots).map_err(fail)?),
        Backend::Dir(c) => Arc::new(dir::DirSink::new(c.clone())),
        Backend::Http(c) => Arc::new(http::HttpSink::new(&config.name, c, roots).map_err(fail)?),
    };
    Ok(sink)
}

/// Reads every `[[sinks]]` table; `None` (no key) means no sinks.
pub fn read_all(tables: Option<Vec<Table<'_>>>, problems: &mut Vec<Problem>) -> Vec<SinkConfig> {
    let Some(tables) = tables else {
        return Vec::new();
    };
    let mut out: Vec<SinkConfig> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, t) in tables.into_iter().enumerate() {
        let Some(sink) = read_one(t, problems) else {
            continue;
        };
        if !seen.insert(sink.name.clone()) {
            problems.push(Problem {
                path: format!("sinks[{i}].name"),
                message: format!(
                    "{:?} is used by an earlier sink; give each sink of the same kind its own `name`",
                    sink.name
                ),
            });
        }
        out.push(sink);
    }
    out
}

fn read_one(mut t: Table<'_>, problems: &mut Vec<Problem>) -> Option<SinkConfig> {
    let kind = t.string("kind", problems);
    let backend = match kind.as_deref() {
        Some("s3") => Backend::S3(s3::read(&mut t, problems)),
        Some("gcs") => Backend::Gcs(gcs::read(&mut t, problems)),
        Some("azure") => Backend::Azure(azure::read(&mut t, problems)),
        Some("dir") => Backend::Dir(dir::read(&mut t, problems)),
        Some("http") => Backend::Http(http::read(&mut t, problems)),
        Some(other) => {
            problems.push(t.problem(
                "kind",
                format!("{other:?} is not one of \"s3\", \"gcs\", \"azure\", \"http\", \"dir\""),
            ));
            return None;
        }
        None => {
            problems.push(t.problem(
                "kind",
                "is required: \"s3\", \"gcs\", \"azure\", \"http\" or \"dir\"".into(),
            ));
            return None;
        }
    };
    let name = t
        .string("name", problems)
        .unwrap_or_else(|| backend.kind().to_string());
    if !crate::config::valid_name(&name) {
        problems.push(t.problem(
            "name",
            format!("{name:?} may hold only letters, digits, '.', '_' and '-' (at most 64)"),
        ));
    }
    let initial = t.duration("retry_initial", Duration::from_secs(1), problems);
    let max = t.duration("retry_max", Duration::from_secs(300), problems);
    if initial < Duration::from_millis(10) || max < initial {
        problems.push(t.problem(
            "retry_max",
            "retry_initial must be at least 10ms and retry_max at least retry_initial".into(),
        ));
    }
    let breaker_failures = t.uint("breaker_failures", 5, problems);
    if breaker_failures == 0 {
        problems.push(t.problem("breaker_failures", "must be at least 1".into()));
    }
    let retry = RetryPolicy {
        initial,
        max,
        breaker_failures: breaker_failures.min(u32::MAX as u64) as u32,
        breaker_cooldown: t.duration("breaker_cooldown", Duration::from_secs(30), problems),
        attempt_timeout: t.duration("attempt_timeout", Duration::from_secs(30 * 60), problems),
    };
    t.finish(problems);
    Some(SinkConfig { name, retry, backend })
}

/// Reads `prefix`: object key segments joined by '/', without empty,
/// `.` or `..` segments.
pub fn read_prefix(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> String {
    let prefix = t.string("prefix", problems).unwrap_or_default();
    let trimmed = prefix.trim_matches('/').to_string();
    if trimmed
        .split('/')
        .any(|s| s == "." || s == ".." || (s.is_empty() && !trimmed.is_empty()))
    {
        problems.push(t.problem(
            "prefix",
            format!("{prefix:?} must be key segments separated by '/', without '.', '..' or '//'"),
        ));
    }
    trimmed
}

/// Reads a required string key.
pub fn required(t: &mut Table<'_>, key: &str, what: &str, problems: &mut Vec<Problem>) -> String {
    match t.string(key, problems) {
        Some(s) if !s.is_empty() => s,
        _ => {
            problems.push(t.problem(key, format!("is required: {what}")));
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::load_str;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn every_backend_reads_its_keys_and_reports_typos_with_the_key_path() {
        let c = load_str(
            r#"
            [[sinks]]
            kind = "s3"
            bucket = "traces"
            prefix = "/flightrec/prod/"
            endpoint = "http://127.0.0.1:9000"
            region = "eu-west-1"
            allow_http = true
            [[sinks]]
            kind = "http"
            url = "https://collector.example/v1/bundles"
            retry_initial = "200ms"
            breaker_failures = 2
            [[sinks]]
            kind = "dir"
            path = "/mnt/traces"
            "#,
            &env(),
        )
        .expect("valid");
        assert_eq!(c.sinks.len(), 3);
        assert_eq!(c.sinks[0].name, "s3");
        match &c.sinks[0].backend {
            super::Backend::S3(s) => {
                assert_eq!(s.prefix, "flightrec/prod");
                assert!(s.path_style, "an endpoint defaults to path-style");
                assert_eq!(s.region.as_deref(), Some("eu-west-1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.sinks[1].retry.breaker_failures, 2);

        let err = load_str(
            r#"
            [[sinks]]
            kind = "s3"
            buckt = "x"
            [[sinks]]
            kind = "ftp"
            [[sinks]]
            kind = "dir"
            path = "/a"
            [[sinks]]
            kind = "dir"
            path = "/b"
            prefix = "../x"
            "#,
            &env(),
        )
        .unwrap_err()
        .to_string();
        for want in [
            "sinks[0].bucket: is required",
            "sinks[0].buckt: unknown key",
            "sinks[1].kind: \"ftp\" is not one of",
            "sinks[3].name: \"dir\" is used by an earlier sink",
            "sinks[3].prefix",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }
}
