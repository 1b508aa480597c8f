//! `[alertmanager]`: the Alertmanager APIs this agent follows for the firing alerts about its own targets.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::table::Table;
use super::{redact_url, Problem, Secret};

/// `[alertmanager]`. No `urls`, no following.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerConfig {
    /// Base URLs, e.g. the members of an HA pair; user info in one is basic
    /// auth for that URL alone.
    pub urls: Vec<Url>,
    pub interval: Duration,
    /// Longest one poll may take, answer read whole.
    pub timeout: Duration,
    /// Longest pause between polls of a URL that keeps failing.
    pub backoff_max: Duration,
    /// Matchers passed to the API as `filter`, e.g. `severity=~"page|ticket"`.
    pub filter: Vec<String>,
    /// Larger answers are refused, read no further.
    pub max_bytes: u64,
    pub bearer_token_file: Option<PathBuf>,
    pub bearer_token: Option<Secret>,
    pub basic_auth_user: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
    pub basic_auth_password: Option<Secret>,
}

pub mod defaults {
    use std::time::Duration;

    pub const INTERVAL: Duration = Duration::from_secs(5);
    pub const TIMEOUT: Duration = Duration::from_secs(10);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
    /// About 20 000 alerts of Alertmanager's answer (0.74 KiB each with three annotations, measured).
    pub const MAX_BYTES: u64 = 16 << 20;
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            urls: Vec::new(),
            interval: defaults::INTERVAL,
            timeout: defaults::TIMEOUT,
            backoff_max: defaults::BACKOFF_MAX,
            filter: Vec::new(),
            max_bytes: defaults::MAX_BYTES,
            bearer_token_file: None,
            bearer_token: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
            basic_auth_password: None,
        }
    }
}

impl AlertmanagerConfig {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }
}

/// Reads `[alertmanager]` from the root table.
pub fn read(root: &mut Table<'_>, problems: &mut Vec<Problem>) -> AlertmanagerConfig {
    let d = AlertmanagerConfig::default();
    let mut t = root.table("alertmanager", problems);
    let urls = read_urls(&mut t, problems);
    let interval = t.duration("interval", d.interval, problems);
    if interval < Duration::from_millis(100) {
        problems.push(t.problem("interval", "must be at least 100ms".into()));
    }
    let timeout = t.duration("timeout", d.timeout, problems);
    if timeout.is_zero() {
        problems.push(t.problem("timeout", "must be longer than 0s".into()));
    }
    let backoff_max = t.duration("backoff_max", d.backoff_max, problems);
    let filter = t.strings("filter", problems).unwrap_or_default();
    for (i, m) in filter.iter().enumerate() {
        if let Err(why) = check_matcher(m) {
            problems.push(Problem {
                path: format!("{}[{i}]", t.key_path("filter")),
                message: format!("{m:?} is not a matcher: {why}"),
            });
        }
    }
    let max_bytes = t.size("max_bytes", d.max_bytes, problems);
    if max_bytes < 1024 {
        problems.push(t.problem("max_bytes", "must be at least 1KiB".into()));
    }
    let bearer_token_file = file(&mut t, "bearer_token_file", problems);
    let bearer_token = t.string("bearer_token", problems).map(Secret::new);
    let basic_auth_user = t.string("basic_auth_user", problems);
    let basic_auth_password_file = file(&mut t, "basic_auth_password_file", problems);
    let basic_auth_password = t.string("basic_auth_password", problems).map(Secret::new);
    let has_password = basic_auth_password_file.is_some() || basic_auth_password.is_some();
    if basic_auth_user.is_some() != has_password {
        problems.push(
            t.problem(
                "basic_auth_user",
                "basic auth needs both basic_auth_user and basic_auth_password_file (or basic_auth_password)"
                    .into(),
            ),
        );
    }
    let has_bearer = bearer_token_file.is_some() || bearer_token.is_some();
    if has_bearer && basic_auth_user.is_some() {
        problems.push(t.problem(
            "bearer_token_file",
            "a bearer token and basic auth cannot both be sent; keep one".into(),
        ));
    }
    t.finish(problems);
    AlertmanagerConfig {
        urls,
        interval,
        timeout,
        backoff_max,
        filter,
        max_bytes,
        bearer_token_file,
        bearer_token,
        basic_auth_user,
        basic_auth_password_file,
        basic_auth_password,
    }
}

/// `urls`: a list, or one string listing URLs separated by commas (what an
/// environment variable can hold).
fn read_urls(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> Vec<Url> {
    let texts: Vec<String> = t
        .strings("urls", problems)
        .unwrap_or_default()
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut urls: Vec<Url> = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let path = format!("{}[{i}]", t.key_path("urls"));
        match Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
                if u.query().is_some() || u.fragment().is_some() {
                    problems.push(Problem {
                        path,
                        message: format!(
                            "{:?} must be Alertmanager's base URL, without a query or fragment",
                            redact_url(&u)
                        ),
                    });
                } else if urls.iter().any(|seen| same_place(seen, &u)) {
                    problems.push(Problem {
                        path,
                        message: format!("{:?} is listed twice", redact_url(&u)),
                    });
                } else {
                    urls.push(u);
                }
            }
            parsed => {
                // As written, unless it carries credentials.
                let shown = match parsed {
                    Ok(u) if !u.username().is_empty() || u.password().is_some() => redact_url(&u),
                    Err(_) if text.contains('@') => "(a URL with credentials)".into(),
                    _ => text.clone(),
                };
                problems.push(Problem {
                    path,
                    message: format!("{shown:?} must be an http:// or https:// URL"),
                });
            }
        }
    }
    urls
}

fn same_place(a: &Url, b: &Url) -> bool {
    redact_url(a).trim_end_matches('/') == redact_url(b).trim_end_matches('/')
}

fn file(t: &mut Table<'_>, key: &str, problems: &mut Vec<Problem>) -> Option<PathBuf> {
    let path = PathBuf::from(t.string(key, problems)?);
    if !path.is_file() {
        problems.push(t.problem(key, format!("{} is not a readable file", path.display())));
    }
    Some(path)
}

/// Checks one matcher as Alertmanager's `filter` takes it: a label name,
/// `=`, `!=`, `=~` or `!~`, and a value (quoted or not). Alertmanager
/// answers 400 to anything else, on every poll; better said once, here.
pub fn check_matcher(m: &str) -> Result<(), &'static str> {
    let m = m.trim();
    let name_end = m
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(m.len());
    let name = &m[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("it must start with a label name");
    }
    let rest = m[name_end..].trim_start();
    let value = ["=~", "!~", "!=", "="]
        .iter()
        .find_map(|op| rest.strip_prefix(op))
        .ok_or("the label name must be followed by =, !=, =~ or !~")?
        .trim();
    if value.starts_with('"') && (value.len() < 2 || !value.ends_with('"')) {
        return Err("a quoted value needs its closing quote");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::load_str;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<AlertmanagerConfig, String> {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        load_str(toml, &env)
            .map(|c| c.alertmanager)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_reads_with_defaults_for_the_rest() {
        let c = load(
            r#"
            [alertmanager]
            urls = ["http://alertmanager-0:9093", "http://alertmanager-1:9093"]
            interval = "5s"
            filter = ['severity=~"page|ticket"']
            "#,
            &[],
        )
        .expect("valid");
        assert!(c.enabled());
        assert_eq!(c.urls.len(), 2);
        assert_eq!(c.urls[1].as_str(), "http://alertmanager-1:9093/");
        assert_eq!(c.filter, ["severity=~\"page|ticket\""]);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.timeout, defaults::TIMEOUT);
        assert_eq!(c.max_bytes, defaults::MAX_BYTES);
        assert!(!load("", &[]).expect("valid").enabled(), "off without urls");
    }

    #[test]
    fn every_key_has_an_env_override() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").expect("write");
        let token = token.display().to_string();
        let c = load(
            "",
            &[
                ("FLIGHTREC_ALERTMANAGER__URLS", "http://a:9093, https://b:9093/am"),
                ("FLIGHTREC_ALERTMANAGER__INTERVAL", "30s"),
                ("FLIGHTREC_ALERTMANAGER__TIMEOUT", "3s"),
                ("FLIGHTREC_ALERTMANAGER__BACKOFF_MAX", "2m"),
                ("FLIGHTREC_ALERTMANAGER__FILTER__0", "team=\"payments\""),
                ("FLIGHTREC_ALERTMANAGER__FILTER__1", "severity!=\"info\""),
                ("FLIGHTREC_ALERTMANAGER__MAX_BYTES", "1MiB"),
                ("FLIGHTREC_ALERTMANAGER__BEARER_TOKEN_FILE", &token),
            ],
        )
        .expect("valid");
        assert_eq!(
            c.urls.iter().map(Url::as_str).collect::<Vec<_>>(),
            ["http://a:9093/", "https://b:9093/am"]
        );
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.backoff_max, Duration::from_secs(120));
        assert_eq!(c.filter, ["team=\"payments\"", "severity!=\"info\""]);
        assert_eq!(c.max_bytes, 1 << 20);
        assert_eq!(c.bearer_token_file.as_deref(), Some(std::path::Path::new(&token)));
        let c = load(
            "",
            &[
                ("FLIGHTREC_ALERTMANAGER__URLS", "http://a:9093"),
                ("FLIGHTREC_ALERTMANAGER__BEARER_TOKEN", "s3cret-token"),
            ],
        )
        .expect("valid");
        assert!(!format!("{c:?}").contains("s3cret-token"));
        let c = load(
            "",
            &[
                ("FLIGHTREC_ALERTMANAGER__URLS", "http://a:9093"),
                ("FLIGHTREC_ALERTMANAGER__BASIC_AUTH_USER", "flightrec"),
                ("FLIGHTREC_ALERTMANAGER__BASIC_AUTH_PASSWORD", "pa55"),
            ],
        )
        .expect("valid");
        assert_eq!(c.basic_auth_password.as_ref().map(Secret::expose), Some("pa55"));
        let c = load(
            "",
            &[
                ("FLIGHTREC_ALERTMANAGER__URLS", "http://a:9093"),
                ("FLIGHTREC_ALERTMANAGER__BASIC_AUTH_USER", "flightrec"),
                ("FLIGHTREC_ALERTMANAGER__BASIC_AUTH_PASSWORD_FILE", &token),
            ],
        )
        .expect("valid");
        assert_eq!(
            c.basic_auth_password_file.as_deref(),
            Some(std::path::Path::new(&token))
        );
    }

    #[test]
    fn every_problem_names_its_key() {
        let err = load(
            r#"
            [alertmanager]
            urls = ["http://a:9093", "ftp://b", "http://a:9093/", "http://user:pw@c:9093/?x=1", "not a url"]
            interval = "10ms"
            timeout = "0s"
            filter = ['severity=~"page"', "=x", 'team "x"', 'a="unclosed']
            max_bytes = "12"
            bearer_token_file = "/nonexistent/token"
            basic_auth_user = "u"
            intervall = "5s"
            "#,
            &[],
        )
        .unwrap_err();
        for want in [
            "alertmanager.urls[1]: \"ftp://b\" must be an http:// or https:// URL",
            "alertmanager.urls[2]: \"http://a:9093/\" is listed twice",
            "alertmanager.urls[3]: \"http://c:9093/?x=1\" must be Alertmanager's base URL",
            "alertmanager.urls[4]: \"not a url\" must be",
            "alertmanager.interval: must be at least 100ms",
            "alertmanager.timeout: must be longer than 0s",
            "alertmanager.filter[1]: \"=x\" is not a matcher: it must start with a label name",
            "alertmanager.filter[2]: \"team \\\"x\\\"\" is not a matcher: the label name must be followed by",
            "alertmanager.filter[3]: \"a=\\\"unclosed\" is not a matcher: a quoted value needs its closing quote",
            "alertmanager.max_bytes: must be at least 1KiB",
            "alertmanager.bearer_token_file: /nonexistent/token is not a readable file",
            "alertmanager.basic_auth_user: basic auth needs both",
            "alertmanager.bearer_token_file: a bearer token and basic auth cannot both be sent",
            "alertmanager.intervall: unknown key",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        assert!(!err.contains("pw"), "credentials never shown:\n{err}");
    }

    #[test]
    fn matchers_alertmanager_takes_pass() {
        for m in [
            "severity=~\"page|ticket\"",
            "team=payments",
            "job!=\"\"",
            "instance !~ \"10\\\\..*\"",
            "a=\"\"",
        ] {
            assert_eq!(check_matcher(m), Ok(()), "{m}");
        }
    }
}
