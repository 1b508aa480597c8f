//! `[[sinks]]`: where durable bundles go, one typed section per backend.
//!
//! Each backend's keys are read here; the running sinks are built from these
//! in `deliver::sink`. A sink's `name` keys its delivery state in the spool
//! ledger, so it must stay stable across restarts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::table::Table;
use super::{redact_url, valid_name, Problem, Secret};

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
    S3(S3Config),
    Gcs(GcsConfig),
    Azure(AzureConfig),
    Dir(DirConfig),
    Http(HttpConfig),
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

/// Multipart settings shared by the object-store backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// Files at least this big go up in parts of this size.
    pub part_size: usize,
    /// Parts in flight per file.
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    /// For S3-compatible servers; AWS itself needs none.
    pub endpoint: Option<String>,
    /// Falls back to `AWS_REGION` / `AWS_DEFAULT_REGION`, then `us-east-1`.
    pub region: Option<String>,
    pub allow_http: bool,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub path_style: bool,
    pub upload: Upload,
}

fn read_s3(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> S3Config {
    let bucket = required(t, "bucket", "the bucket to write bundles into", problems);
    let prefix = read_prefix(t, problems);
    let endpoint = t.string("endpoint", problems);
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            problems.push(t.problem("endpoint", format!("{e:?} must be an http:// or https:// URL")));
        }
    }
    let region = t.string("region", problems);
    let allow_http = t.bool("allow_http", false, problems);
    if endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) && !allow_http {
        problems.push(t.problem(
            "allow_http",
            "the endpoint is plain http://; set allow_http = true to send bundles unencrypted".into(),
        ));
    }
    // S3-compatible servers rarely have wildcard DNS for virtual-hosted
    // buckets; AWS itself prefers virtual-hosted style.
    let path_style = t.bool("path_style", endpoint.is_some(), problems);
    let upload = read_upload(t, problems);
    S3Config {
        bucket,
        prefix,
        endpoint,
        region,
        allow_http,
        path_style,
        upload,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GcsConfig {
    pub bucket: String,
    pub prefix: String,
    /// A service account key file; overrides the environment.
    pub service_account_file: Option<String>,
    /// Another API base URL (an emulator, a private endpoint).
    pub endpoint: Option<String>,
    pub allow_http: bool,
    pub upload: Upload,
}

fn read_gcs(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> GcsConfig {
    GcsConfig {
        bucket: required(t, "bucket", "the bucket to write bundles into", problems),
        prefix: read_prefix(t, problems),
        service_account_file: t.string("service_account_file", problems),
        endpoint: t.string("endpoint", problems),
        allow_http: t.bool("allow_http", false, problems),
        upload: read_upload(t, problems),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AzureConfig {
    pub account: String,
    /// The container (called `bucket` like the other object stores).
    pub bucket: String,
    pub prefix: String,
    /// Account URL for Azurite or sovereign clouds, e.g.
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    pub allow_http: bool,
    pub upload: Upload,
}

fn read_azure(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> AzureConfig {
    let account = required(t, "account", "the storage account name", problems);
    let bucket = required(t, "bucket", "the blob container to write bundles into", problems);
    let prefix = read_prefix(t, problems);
    let endpoint = t.string("endpoint", problems);
    let allow_http = t.bool("allow_http", false, problems);
    if endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) && !allow_http {
        problems.push(t.problem(
            "allow_http",
            "the endpoint is plain http://; set allow_http = true to send bundles unencrypted".into(),
        ));
    }
    AzureConfig {
        account,
        bucket,
        prefix,
        endpoint,
        allow_http,
        upload: read_upload(t, problems),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirConfig {
    pub path: PathBuf,
    pub prefix: String,
}

fn read_dir(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> DirConfig {
    let path = required(t, "path", "the directory to copy bundles into", problems);
    DirConfig {
        path: PathBuf::from(path),
        prefix: read_prefix(t, problems),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub url: Url,
    /// File holding the bearer token; read once at startup.
    pub token_file: Option<PathBuf>,
    /// The token itself (`FLIGHTREC_SINKS__N__TOKEN`); never logged.
    pub token: Option<Secret>,
    /// Extra PEM roots trusted besides the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
}

fn read_http(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> HttpConfig {
    let text = required(t, "url", "the collector URL bundles are POSTed to", problems);
    let url = match Url::parse(&text) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => u,
        Ok(u) => {
            if !text.is_empty() {
                problems.push(t.problem(
                    "url",
                    format!("{:?} must be an http:// or https:// URL", redact_url(&u)),
                ));
            }
            Url::parse("http://invalid.invalid/").expect("literal URL parses")
        }
        Err(e) => {
            if !text.is_empty() {
                problems.push(t.problem("url", format!("is not a URL: {e}")));
            }
            Url::parse("http://invalid.invalid/").expect("literal URL parses")
        }
    };
    let token_file = t.string("token_file", problems).map(PathBuf::from);
    let token = t.string("token", problems).map(Secret::new);
    if token_file.is_some() && token.is_some() {
        problems.push(t.problem("token", "set token or token_file, not both".into()));
    }
    HttpConfig {
        url,
        token_file,
        token,
        ca_file: t.string("ca_file", problems).map(PathBuf::from),
        connect_timeout: t.duration("connect_timeout", Duration::from_secs(10), problems),
    }
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
        Some("s3") => Backend::S3(read_s3(&mut t, problems)),
        Some("gcs") => Backend::Gcs(read_gcs(&mut t, problems)),
        Some("azure") => Backend::Azure(read_azure(&mut t, problems)),
        Some("dir") => Backend::Dir(read_dir(&mut t, problems)),
        Some("http") => Backend::Http(read_http(&mut t, problems)),
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
    if !valid_name(&name) {
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
fn read_prefix(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> String {
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
fn required(t: &mut Table<'_>, key: &str, what: &str, problems: &mut Vec<Problem>) -> String {
    match t.string(key, problems) {
        Some(s) if !s.is_empty() => s,
        _ => {
            problems.push(t.problem(key, format!("is required: {what}")));
            String::new()
        }
    }
}

/// Reads `part_size` and `upload_concurrency`.
fn read_upload(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> Upload {
    let part_size = t.size("part_size", 8 << 20, problems);
    // S3 refuses parts under 5 MiB (except the last); GCS and Azure accept them.
    if !(5 << 20..=1 << 30).contains(&part_size) {
        problems.push(t.problem("part_size", "must be between 5MiB and 1GiB".into()));
    }
    let concurrency = t.uint("upload_concurrency", 2, problems);
    if !(1..=64).contains(&concurrency) {
        problems.push(t.problem("upload_concurrency", "must be between 1 and 64".into()));
    }
    Upload {
        part_size: part_size.clamp(5 << 20, 1 << 30) as usize,
        concurrency: concurrency.clamp(1, 64) as usize,
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
