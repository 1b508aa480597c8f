//! One poll of an Alertmanager: `GET /api/v2/alerts` for the active, unsilenced, uninhibited alerts, read within bounds and held to the API's schema.
//!
//! The schema is Alertmanager's own (`api/v2/openapi.yaml`, `gettableAlert`):
//! `labels`, `annotations`, `fingerprint`, `startsAt`, `endsAt`,
//! `updatedAt`, `generatorURL`, `receivers` and `status` (`state`,
//! `silencedBy`, `inhibitedBy`). An answer is read whole, at most
//! `max_bytes` and within `timeout`, or not at all.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use url::Url;

use crate::config::{redact_url, AlertmanagerConfig, Secret};
use crate::trigger::latency::source_chain;
use crate::trigger::webhook::{Alert, Labels, Status};
use crate::units::{Bytes, Secs};

/// Why a poll gave no alerts. Messages name no secret.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot read {key} {path}: {why}")]
    Credentials {
        key: &'static str,
        path: String,
        why: String,
    },
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no whole answer within {} (alertmanager.timeout)", Secs(*.0))]
    Timeout(Duration),
    #[error("answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the answer is larger than {} (alertmanager.max_bytes); narrow it with alertmanager.filter, or raise max_bytes", Bytes(*.0))]
    TooLarge(u64),
    #[error("the answer is not JSON (Content-Type {content_type:?}, starting {start:?}); is this Alertmanager's base URL?")]
    NotJson { content_type: String, start: String },
    #[error("the answer is not the alerts of Alertmanager's API v2: {0}")]
    Schema(String),
    #[error("the answer was cut short: {0}")]
    Body(String),
    #[error("the request failed: {0}")]
    Request(String),
}

impl PollError {
    /// The `reason` label of `flightrec_alertmanager_poll_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            PollError::Credentials { .. } => "credentials",
            PollError::Connect(_) => "connect",
            PollError::Timeout(_) => "timeout",
            PollError::Status { .. } => "status",
            PollError::TooLarge(_) => "too_large",
            PollError::NotJson { .. } => "not_json",
            PollError::Schema(_) => "schema",
            PollError::Body(_) => "body",
            PollError::Request(_) => "request",
        }
    }
}

/// A secret given in the config, or a file read at every poll (so a
/// rotated token is picked up).
#[derive(Debug, Clone)]
enum SecretFrom {
    Value(Secret),
    File { key: &'static str, path: PathBuf },
}

impl SecretFrom {
    fn pick(key: &'static str, file: &Option<PathBuf>, value: &Option<Secret>) -> Option<SecretFrom> {
        match (file, value) {
            (Some(path), _) => Some(SecretFrom::File {
                key,
                path: path.clone(),
            }),
            (None, Some(v)) => Some(SecretFrom::Value(v.clone())),
            (None, None) => None,
        }
    }

    fn read(&self) -> Result<Secret, PollError> {
        match self {
            SecretFrom::Value(v) => Ok(v.clone()),
            SecretFrom::File { key, path } => {
                let fail = |why: String| PollError::Credentials {
                    key,
                    path: path.display().to_string(),
                    why,
                };
                let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
                // A trailing newline is how files end, not part of the secret.
                let secret = text.trim_end_matches(['\r', '\n']);
                if secret.is_empty() {
                    return Err(fail("it is empty".into()));
                }
                Ok(Secret::new(secret.to_string()))
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Credentials {
    None,
    Bearer(SecretFrom),
    Basic(String, SecretFrom),
}

/// One Alertmanager to poll, as configured.
#[derive(Debug, Clone)]
pub struct Member {
    /// `/api/v2/alerts` with the query; credentials taken out.
    alerts_url: Url,
    /// The base URL without credentials: a log field and a metric label.
    pub shown: String,
    credentials: Credentials,
}

impl Member {
    pub fn new(base: &Url, cfg: &AlertmanagerConfig) -> Member {
        let mut alerts_url = base.clone();
        let _ = alerts_url.set_username("");
        let _ = alerts_url.set_password(None);
        // Alertmanager may sit under a path prefix (--web.route-prefix).
        let path = format!("{}/api/v2/alerts", base.path().trim_end_matches('/'));
        alerts_url.set_path(&path);
        {
            let mut q = alerts_url.query_pairs_mut();
            q.append_pair("active", "true")
                .append_pair("silenced", "false")
                .append_pair("inhibited", "false");
            for m in &cfg.filter {
                q.append_pair("filter", m.trim());
            }
        }
        let credentials = if !base.username().is_empty() {
            let password = base.password().map(percent_decode);
            Credentials::Basic(
                percent_decode(base.username()),
                SecretFrom::Value(Secret::new(password.unwrap_or_default())),
            )
        } else if let Some(token) = SecretFrom::pick(
            "alertmanager.bearer_token_file",
            &cfg.bearer_token_file,
            &cfg.bearer_token,
        ) {
            Credentials::Bearer(token)
        } else {
            match (
                &cfg.basic_auth_user,
                SecretFrom::pick(
                    "alertmanager.basic_auth_password_file",
                    &cfg.basic_auth_password_file,
                    &cfg.basic_auth_password,
                ),
            ) {
                (Some(user), Some(pw)) => Credentials::Basic(user.clone(), pw),
                _ => Credentials::None,
            }
        };
        Member {
            alerts_url,
            shown: redact_url(base),
            credentials,
        }
    }

    /// Asks for the alerts and reads the whole answer, at most
    /// `cfg.max_bytes`. The client's timeout (`cfg.timeout`) bounds the whole
    /// of it, body included.
    pub async fn poll(
        &self,
        client: &reqwest::Client,
        cfg: &AlertmanagerConfig,
    ) -> Result<Vec<Alert>, PollError> {
        let max_bytes = cfg.max_bytes;
        let mut req = client
            .get(self.alerts_url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.credentials {
            Credentials::None => {}
            Credentials::Bearer(token) => req = req.bearer_auth(token.read()?.expose()),
            Credentials::Basic(user, pw) => req = req.basic_auth(user, Some(pw.read()?.expose())),
        }
        let mut resp = req.send().await.map_err(|e| {
            let e = e.without_url();
            if e.is_timeout() {
                PollError::Timeout(cfg.timeout)
            } else if e.is_connect() {
                PollError::Connect(source_chain(&e))
            } else {
                PollError::Request(source_chain(&e))
            }
        })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(PollError::TooLarge(max_bytes));
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if (body.len() + c.len()) as u64 > max_bytes {
                        // Dropping the response closes the connection: an
                        // endless answer is read no further.
                        return Err(PollError::TooLarge(max_bytes));
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(PollError::Timeout(cfg.timeout)),
                Err(e) => return Err(PollError::Body(source_chain(&e.without_url()))),
            }
        }
        if !status.is_success() {
            return Err(PollError::Status {
                status: status.as_u16(),
                body: preview(&body, 200),
            });
        }
        decode(&body, &content_type)
    }
}

/// `%40` in a URL's user info is `@` in the password.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first `n` characters of a body, printable, for a log line.
fn preview(body: &[u8], n: usize) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(n)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Go marshals a nil map or slice as `null`; read it as empty.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `gettableAlert` of the API, the fields used. Those the schema requires
/// and flightrec relies on are required here too.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableAlert {
    labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    annotations: Labels,
    fingerprint: String,
    starts_at: String,
    #[serde(default, deserialize_with = "nullable", rename = "generatorURL")]
    generator_url: String,
    status: AlertStatus,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertStatus {
    state: String,
    #[serde(default, deserialize_with = "nullable")]
    silenced_by: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    inhibited_by: Vec<String>,
}

/// Reads an answer into the alerts that may trigger: those firing and
/// neither silenced nor inhibited. The query asks for only those; an
/// Alertmanager that ignored it would still not make a silenced alert fire.
pub fn decode(body: &[u8], content_type: &str) -> Result<Vec<Alert>, PollError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {}
        Some(b'{') => {
            return Err(PollError::Schema(format!(
                "expected a JSON array of alerts, found an object starting {:?} (the v1 API answered {{\"status\": ...}})",
                preview(body, 60)
            )))
        }
        _ => {
            return Err(PollError::NotJson {
                content_type: content_type.to_string(),
                start: preview(body, 60),
            })
        }
    }
    let alerts: Vec<GettableAlert> = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            PollError::NotJson {
                content_type: content_type.to_string(),
                start: format!("{} ({e})", preview(body, 60)),
            }
        } else {
            PollError::Schema(e.to_string())
        }
    })?;
    let mut out = Vec::with_capacity(alerts.len());
    for (i, a) in alerts.into_iter().enumerate() {
        if a.fingerprint.is_empty() || a.starts_at.is_empty() {
            return Err(PollError::Schema(format!(
                "alert {i} has an empty fingerprint or startsAt"
            )));
        }
        let s = &a.status;
        if s.state != "active" || !s.silenced_by.is_empty() || !s.inhibited_by.is_empty() {
            continue;
        }
        out.push(Alert {
            status: Status::Firing,
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            generator_url: a.generator_url,
            fingerprint: a.fingerprint,
            values: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Alertmanager 0.25 answered to `GET /api/v2/alerts`.
    const ANSWER: &str = r#"[{"annotations":{"summary":"hi"},"endsAt":"2026-12-04T06:19:13.783Z","fingerprint":"9666909b7031a6ac","receivers":[{"name":"null"}],"startsAt":"2026-12-04T06:00:00.123+01:00","status":{"inhibitedBy":[],"silencedBy":[],"state":"active"},"updatedAt":"2026-12-04T06:14:13.783Z","generatorURL":"http://prom/graph","labels":{"alertname":"X","instance":"127.0.0.1:1234","severity":"page"}}]"#;

    #[test]
    fn a_real_answer_reads_as_the_webhook_s_alerts() {
        let alerts = decode(ANSWER.as_bytes(), "application/json").expect("decodes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.name(), "X");
        assert_eq!(a.fingerprint(), "9666909b7031a6ac");
        assert_eq!(a.labels["instance"], "127.0.0.1:1234");
        assert_eq!(a.annotations["summary"], "hi");
        assert_eq!(a.starts_at, "2026-12-04T06:00:00.123+01:00");
        assert_eq!(a.generator_url, "http://prom/graph");
        assert!(decode(b" [] ", "application/json").expect("empty").is_empty());
    }

    #[test]
    fn silenced_inhibited_and_suppressed_alerts_never_fire() {
        let mut v: serde_json::Value = serde_json::from_str(ANSWER).expect("json");
        let one = v[0].clone();
        let mut silenced = one.clone();
        silenced["status"]["silencedBy"] = serde_json::json!(["c0e582f0"]);
        silenced["status"]["state"] = serde_json::json!("suppressed");
        let mut inhibited = one.clone();
        inhibited["status"]["inhibitedBy"] = serde_json::json!(["1234"]);
        let mut unprocessed = one.clone();
        unprocessed["status"]["state"] = serde_json::json!("unprocessed");
        v = serde_json::json!([silenced, inhibited, unprocessed, one]);
        let alerts = decode(v.to_string().as_bytes(), "application/json").expect("decodes");
        assert_eq!(alerts.len(), 1);
    }

    #[test]
    fn what_is_not_the_api_s_answer_says_so() {
        let cases: [(&[u8], &str, &str); 9] = [
            (b"<html><body>Sign in</body></html>", "text/html", "not_json"),
            (b"\x00\xff garbage", "application/octet-stream", "not_json"),
            (b"", "application/json", "not_json"),
            (b"[{\"labels\":", "application/json", "not_json"),
            (br#"{"status":"success","data":[]}"#, "application/json", "schema"),
            (
                br#"[{"labels":{"a":1},"fingerprint":"f","startsAt":"t","status":{"state":"active"}}]"#,
                "application/json",
                "schema",
            ),
            (
                br#"[{"labels":{},"startsAt":"t","status":{"state":"active"}}]"#,
                "application/json",
                "schema",
            ),
            (
                br#"[{"labels":{},"fingerprint":"","startsAt":"t","status":{"state":"active"}}]"#,
                "application/json",
                "schema",
            ),
            (br#"[1, 2]"#, "application/json", "schema"),
        ];
        for (body, ct, reason) in cases {
            let e = decode(body, ct).expect_err("refused");
            assert_eq!(e.reason(), reason, "{:?}: {e}", String::from_utf8_lossy(body));
        }
        let e = decode(b"<html>Sign in</html>", "text/html").expect_err("html");
        assert!(
            e.to_string()
                .contains("Content-Type \"text/html\", starting \"<html>Sign in</html>\""),
            "{e}"
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            decode(deep.as_bytes(), "application/json")
                .expect_err("deep")
                .reason(),
            "schema",
            "an error, not a stack overflow"
        );
    }

    #[test]
    fn the_request_asks_for_what_may_trigger_and_keeps_credentials_out_of_the_url() {
        let cfg = AlertmanagerConfig {
            filter: vec!["severity=~\"page|ticket\"".into(), "team=db".into()],
            ..AlertmanagerConfig::default()
        };
        let m = Member::new(
            &Url::parse("http://am:p%40ss@am-0:9093/prefix/").expect("url"),
            &cfg,
        );
        assert_eq!(
            m.alerts_url.as_str(),
            "http://am-0:9093/prefix/api/v2/alerts?active=true&silenced=false&inhibited=false&filter=severity%3D%7E%22page%7Cticket%22&filter=team%3Ddb"
        );
        assert_eq!(m.shown, "http://am-0:9093/prefix/");
        match &m.credentials {
            Credentials::Basic(user, SecretFrom::Value(pw)) => {
                assert_eq!((user.as_str(), pw.expose()), ("am", "p@ss"));
            }
            other => panic!("{other:?}"),
        }
        let m = Member::new(&Url::parse("http://am-1:9093").expect("url"), &cfg);
        assert_eq!(
            m.alerts_url.path(),
            "/api/v2/alerts",
            "no prefix, no double slash"
        );
        assert!(matches!(m.credentials, Credentials::None));
    }

    #[test]
    fn a_token_file_is_read_at_every_poll_and_its_newline_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").expect("write");
        let token = SecretFrom::File {
            key: "alertmanager.bearer_token_file",
            path: path.clone(),
        };
        assert_eq!(token.read().expect("read").expose(), "one");
        std::fs::write(&path, "two").expect("write");
        assert_eq!(token.read().expect("read").expose(), "two", "rotated");
        std::fs::write(&path, "\n").expect("write");
        let e = token.read().expect_err("empty");
        assert_eq!(e.reason(), "credentials");
        assert!(e.to_string().contains("alertmanager.bearer_token_file"), "{e}");
    }
}
