//! `[webhooks]`: which labels select a target, and how webhook callers prove who they are.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::table::Table;
use crate::config::trigger_defaults as defaults;
use crate::config::{Problem, Secret};

/// `[webhooks]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Label names compared between an alert and a target's labels.
    pub match_labels: Vec<String>,
    pub dedupe_ttl: Duration,
    pub basic_auth_user: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
    pub basic_auth_password: Option<Secret>,
    pub grafana_hmac_secret_file: Option<PathBuf>,
    pub grafana_hmac_secret: Option<Secret>,
    pub grafana_hmac_header: String,
    pub grafana_hmac_timestamp_header: Option<String>,
    pub grafana_hmac_max_skew: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            match_labels: defaults::MATCH_LABELS.iter().map(|s| s.to_string()).collect(),
            dedupe_ttl: defaults::DEDUPE_TTL,
            basic_auth_user: None,
            basic_auth_password_file: None,
            basic_auth_password: None,
            grafana_hmac_secret_file: None,
            grafana_hmac_secret: None,
            grafana_hmac_header: defaults::HMAC_HEADER.into(),
            grafana_hmac_timestamp_header: None,
            grafana_hmac_max_skew: defaults::HMAC_MAX_SKEW,
        }
    }
}

pub(super) fn read(mut t: Table<'_>, problems: &mut Vec<Problem>) -> WebhookConfig {
    let d = WebhookConfig::default();
    let match_labels = t.strings("match_labels", problems).unwrap_or(d.match_labels);
    let basic_auth_user = t.string("basic_auth_user", problems);
    let basic_auth_password_file = t.string("basic_auth_password_file", problems).map(PathBuf::from);
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
    let hmac_header = t
        .string("grafana_hmac_header", problems)
        .unwrap_or(d.grafana_hmac_header);
    let hmac_ts = t.string("grafana_hmac_timestamp_header", problems);
    for (key, name) in [
        ("grafana_hmac_header", Some(&hmac_header)),
        ("grafana_hmac_timestamp_header", hmac_ts.as_ref()),
    ] {
        if let Some(name) = name {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(t.problem(key, format!("{name:?} is not a valid HTTP header name")));
            }
        }
    }
    let cfg = WebhookConfig {
        match_labels,
        dedupe_ttl: t.duration("dedupe_ttl", d.dedupe_ttl, problems),
        basic_auth_user,
        basic_auth_password_file,
        basic_auth_password,
        grafana_hmac_secret_file: t.string("grafana_hmac_secret_file", problems).map(PathBuf::from),
        grafana_hmac_secret: t.string("grafana_hmac_secret", problems).map(Secret::new),
        grafana_hmac_header: hmac_header,
        grafana_hmac_timestamp_header: hmac_ts,
        grafana_hmac_max_skew: t.duration("grafana_hmac_max_skew", d.grafana_hmac_max_skew, problems),
    };
    t.finish(problems);
    cfg
}
