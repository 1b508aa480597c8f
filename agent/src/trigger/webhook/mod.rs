//! Alert webhooks: Alertmanager (payload version 4) and Grafana, their auth, the label rule that picks targets, dedupe.
//!
//! A request is answered as soon as it is judged: bundles are made in the
//! background by the snapshot module. Only firing alerts trigger; resolved
//! ones are counted and answered 200. An alert selects targets by its labels
//! (see [`select_targets`]); an alert that selects none is answered 200 and
//! logged, since a sender can do nothing about it and must not retry.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::events::{self, Suppressed};
use super::gate::{Gate, Outcome};
use crate::api::{constant_time_eq, ApiError, AppState};
use crate::config::WebhookConfig;
use crate::config::{Secret, Target};
use crate::snapshot::{Firing, SnapshotError, TriggerKind};
use crate::telemetry::Metrics;

/// An alert label naming the target outright, whatever the other labels say.
pub const TARGET_LABEL: &str = "flightrec_target";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/webhooks/alertmanager", post(alertmanager))
        .route("/v1/webhooks/grafana", post(grafana))
}

async fn alertmanager(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    state.webhooks.handle(Source::Alertmanager, &headers, body)
}

async fn grafana(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    state.webhooks.handle(Source::Grafana, &headers, body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Alertmanager,
    Grafana,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Grafana => "grafana",
        }
    }

    fn kind(self) -> TriggerKind {
        match self {
            Source::Alertmanager => TriggerKind::Alertmanager,
            Source::Grafana => TriggerKind::Grafana,
        }
    }
}

/// Go marshals a nil map or slice as `null`; read it as empty.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

type Labels = BTreeMap<String, String>;

/// One notification: Alertmanager's webhook payload (version 4), which
/// Grafana's webhook contact point extends with a few fields of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    #[serde(default, deserialize_with = "nullable")]
    pub version: String,
    #[serde(default, deserialize_with = "nullable")]
    pub group_key: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default, deserialize_with = "nullable")]
    pub receiver: String,
    pub alerts: Vec<Alert>,
    #[serde(default, deserialize_with = "nullable")]
    pub group_labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub common_labels: Labels,
    #[serde(default, deserialize_with = "nullable", rename = "externalURL")]
    pub external_url: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    /// Grafana only.
    #[serde(default)]
    pub org_id: Option<i64>,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: Status,
    #[serde(deserialize_with = "nullable")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub starts_at: String,
    #[serde(default, deserialize_with = "nullable", rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default, deserialize_with = "nullable")]
    pub fingerprint: String,
    /// Grafana only: the values of the rule's queries and expressions.
    #[serde(default)]
    pub values: Option<BTreeMap<String, f64>>,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map_or("(no alertname)", String::as_str)
    }

    /// The sender's fingerprint; Alertmanager before 0.19 sent none, so then
    /// one computed from the labels, which is what Alertmanager hashes too.
    pub fn fingerprint(&self) -> String {
        if !self.fingerprint.is_empty() {
            return self.fingerprint.clone();
        }
        let mut h = Sha256::new();
        for (k, v) in &self.labels {
            h.update(k.as_bytes());
            h.update([0xff]);
            h.update(v.as_bytes());
            h.update([0xff]);
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// Parses a notification, saying what is wrong with it.
pub fn parse(source: Source, body: &[u8]) -> Result<Notification, String> {
    // serde would read a JSON array as a struct's fields in order, and say
    // "invalid length" about it; the payload is an object, say that.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            return Err(format!(
                "invalid {} payload: expected a JSON object",
                source.as_str()
            ))
        }
        None => return Err(format!("invalid {} payload: the body is empty", source.as_str())),
    }
    let n: Notification = serde_json::from_slice(body).map_err(|e| {
        let hint = match source {
            Source::Grafana if e.to_string().contains("`alerts`") => {
                " (Grafana's legacy alerting payload is not supported; use a webhook contact point of Grafana Alerting)"
            }
            _ => "",
        };
        format!("invalid {} payload: {e}{hint}", source.as_str())
    })?;
    if source == Source::Alertmanager && n.version != "4" {
        return Err(format!(
            "payload version {:?} is not supported: flightrec reads Alertmanager's webhook payload version \"4\"",
            n.version
        ));
    }
    Ok(n)
}

/// A target as the label rule sees it.
#[derive(Debug, Clone)]
pub struct TargetLabels {
    pub name: String,
    pub labels: Labels,
}

/// The targets an alert selects:
/// - an alert with the label `flightrec_target` selects the target of that
///   name, and only it (none if there is no such target);
/// - otherwise a target is selected when the alert and the target's labels
///   share at least one label of `match_labels`, and every label of
///   `match_labels` that both carry has equal values.
pub fn select_targets(alert: &Labels, targets: &[TargetLabels], match_labels: &[String]) -> Vec<String> {
    if let Some(name) = alert.get(TARGET_LABEL) {
        return targets
            .iter()
            .filter(|t| &t.name == name)
            .map(|t| t.name.clone())
            .collect();
    }
    targets
        .iter()
        .filter(|t| {
            let mut shared = match_labels
                .iter()
                .filter_map(|k| Some((alert.get(k)?, t.labels.get(k)?)))
                .peekable();
            shared.peek().is_some() && shared.all(|(a, b)| a == b)
        })
        .map(|t| t.name.clone())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} file {path} is empty")]
    Empty { what: &'static str, path: String },
    #[error("webhooks.{key}: {name:?} is not a valid HTTP header name")]
    Header { key: &'static str, name: String },
}

/// Why a request was refused; the text goes to the log and the answer, so
/// it never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs {0}")]
    Missing(String),
    #[error("bearer token does not match")]
    BearerMismatch,
    #[error("bearer tokens are not accepted here (no server.token_file); use basic auth")]
    BearerNotConfigured,
    #[error("basic auth user or password does not match")]
    BasicMismatch,
    #[error("basic auth is not configured here (webhooks.basic_auth_user); use the bearer token")]
    BasicNotConfigured,
    #[error("Authorization: Basic is not base64 of user:password")]
    BasicMalformed,
    #[error("missing {0} header: Grafana signs its requests when the contact point's HMAC secret is set")]
    SignatureMissing(String),
    #[error("{0} is not a hex HMAC-SHA256")]
    SignatureMalformed(String),
    #[error("HMAC signature does not match the body (is the contact point's secret webhooks.grafana_hmac_secret_file?)")]
    SignatureMismatch,
    #[error("missing {0} header (webhooks.grafana_hmac_timestamp_header is set: set the same Timestamp Header in the contact point)")]
    TimestampMissing(String),
    #[error("{0} is not Unix seconds")]
    TimestampMalformed(String),
    #[error("signature timestamp is {0}s away from now, more than webhooks.grafana_hmac_max_skew")]
    TimestampSkew(u64),
}

struct HmacAuth {
    secret: Secret,
    header: HeaderName,
    timestamp_header: Option<HeaderName>,
    max_skew: Duration,
}

/// The credentials webhooks accept.
pub struct Auth {
    bearer: Option<Secret>,
    basic: Option<(String, Secret)>,
    hmac: Option<HmacAuth>,
}

fn read_secret(what: &'static str, path: &Path) -> Result<Secret, WebhookError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebhookError::Read {
        what,
        path: path.display().to_string(),
        source,
    })?;
    // A trailing newline from `echo secret > file` is not part of the secret.
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(WebhookError::Empty {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(Secret::new(text.to_string()))
}

impl Auth {
    /// Reads the secret files named by the config. `bearer` is the server's API token.
    pub fn load(cfg: &WebhookConfig, bearer: Option<Secret>) -> Result<Auth, WebhookError> {
        let password = match (&cfg.basic_auth_password_file, &cfg.basic_auth_password) {
            (Some(path), _) => Some(read_secret("the basic auth password", path)?),
            (None, p) => p.clone(),
        };
        let basic = cfg.basic_auth_user.clone().zip(password);
        let hmac_secret = match (&cfg.grafana_hmac_secret_file, &cfg.grafana_hmac_secret) {
            (Some(path), _) => Some(read_secret("the Grafana HMAC secret", path)?),
            (None, s) => s.clone(),
        };
        // The config check refuses bad header names already; this one must
        // not turn the signature check off if one ever got through.
        let header = |key: &'static str, name: &str| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| WebhookError::Header {
                key,
                name: name.to_string(),
            })
        };
        let hmac = match hmac_secret {
            None => None,
            Some(secret) => Some(HmacAuth {
                secret,
                header: header("grafana_hmac_header", &cfg.grafana_hmac_header)?,
                timestamp_header: match &cfg.grafana_hmac_timestamp_header {
                    Some(h) => Some(header("grafana_hmac_timestamp_header", h)?),
                    None => None,
                },
                max_skew: cfg.grafana_hmac_max_skew,
            }),
        };
        Ok(Auth { bearer, basic, hmac })
    }

    fn challenge(&self) -> &'static str {
        if self.basic.is_some() {
            "Basic realm=\"flightrec\""
        } else {
            "Bearer"
        }
    }

    /// Bearer token or basic auth, when either is configured.
    pub fn check_credentials(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if self.bearer.is_none() && self.basic.is_none() {
            return Ok(());
        }
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let (scheme, value) = given.and_then(|g| g.trim().split_once(' ')).unwrap_or_default();
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = self.bearer.as_ref().ok_or(AuthError::BearerNotConfigured)?;
            return if constant_time_eq(value.trim().as_bytes(), token.expose().as_bytes()) {
                Ok(())
            } else {
                Err(AuthError::BearerMismatch)
            };
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = self.basic.as_ref().ok_or(AuthError::BasicNotConfigured)?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| AuthError::BasicMalformed)?;
            let text = String::from_utf8(decoded).map_err(|_| AuthError::BasicMalformed)?;
            let (u, p) = text.split_once(':').ok_or(AuthError::BasicMalformed)?;
            // Both compared whatever the first gives, so timing tells nothing.
            let user_ok = constant_time_eq(u.as_bytes(), user.as_bytes());
            let password_ok = constant_time_eq(p.as_bytes(), password.expose().as_bytes());
            return if user_ok && password_ok {
                Ok(())
            } else {
                Err(AuthError::BasicMismatch)
            };
        }
        let wanted = match (&self.bearer, &self.basic) {
            (Some(_), Some(_)) => {
                "Authorization: Bearer <token> (server.token_file) or basic auth (webhooks.basic_auth_user)"
            }
            (Some(_), None) => "Authorization: Bearer <token> (server.token_file)",
            _ => "basic auth (webhooks.basic_auth_user)",
        };
        Err(AuthError::Missing(wanted.into()))
    }

    /// Grafana's signature: hex HMAC-SHA256 of the body, or of
    /// `<timestamp>:<body>` when a timestamp header is configured.
    fn check_hmac(h: &HmacAuth, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<(), AuthError> {
        let sig_text = headers
            .get(&h.header)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| AuthError::SignatureMissing(h.header.to_string()))?;
        let sig =
            hex::decode(sig_text.trim()).map_err(|_| AuthError::SignatureMalformed(h.header.to_string()))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(h.secret.expose().as_bytes())
            .map_err(|_| AuthError::SignatureMismatch)?;
        if let Some(th) = &h.timestamp_header {
            let ts_text = headers
                .get(th)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| AuthError::TimestampMissing(th.to_string()))?;
            let ts: i64 = ts_text
                .trim()
                .parse()
                .map_err(|_| AuthError::TimestampMalformed(th.to_string()))?;
            let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
            let skew = now_s.abs_diff(ts);
            if skew > h.max_skew.as_secs() {
                return Err(AuthError::TimestampSkew(skew));
            }
            mac.update(ts_text.trim().as_bytes());
            mac.update(b":");
        }
        mac.update(body);
        mac.verify_slice(&sig).map_err(|_| AuthError::SignatureMismatch)
    }

    /// Alertmanager: the credentials. Grafana: its signature when an HMAC
    /// secret is configured (it proves the sender knows the secret, so it
    /// is enough on its own), else the credentials.
    pub fn check(
        &self,
        source: Source,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), AuthError> {
        match (source, &self.hmac) {
            (Source::Grafana, Some(h)) => Self::check_hmac(h, headers, body, now),
            _ => self.check_credentials(headers),
        }
    }
}

fn target_labels(targets: &[Target]) -> Vec<TargetLabels> {
    targets
        .iter()
        .map(|t| TargetLabels {
            name: t.name.clone(),
            labels: t.labels.clone(),
        })
        .collect()
}

/// The webhook endpoints' state.
pub struct Webhooks {
    auth: Auth,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    /// The targets' labels; replaced when a reload changes the targets.
    targets: parking_lot::RwLock<Vec<TargetLabels>>,
    match_labels: Vec<String>,
    cooldown: Duration,
}

impl Webhooks {
    pub fn new(
        cfg: &WebhookConfig,
        cooldown: Duration,
        bearer: Option<Secret>,
        targets: &[Target],
        gate: Arc<Gate>,
    ) -> Result<Self, WebhookError> {
        Ok(Webhooks {
            auth: Auth::load(cfg, bearer)?,
            metrics: gate.metrics().clone(),
            gate,
            targets: parking_lot::RwLock::new(target_labels(targets)),
            match_labels: cfg.match_labels.clone(),
            cooldown,
        })
    }

    /// Alerts select among these targets from now on.
    pub fn set_targets(&self, targets: &[Target]) {
        *self.targets.write() = target_labels(targets);
    }

    fn reject(&self, source: Source, status: StatusCode, reason: &str, message: String) -> Response {
        events::webhook_rejected(&self.metrics, source.as_str(), reason, &message);
        let mut r = ApiError::new(status, message).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(self.auth.challenge()),
            );
        }
        r
    }

    /// The answer to a body over `server.max_body`, also given before the
    /// body is read when its declared length is already too large.
    pub fn too_large(&self, source: Source) -> Response {
        self.reject(
            source,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body is larger than server.max_body; raise it, or cap the alerts per notification (Alertmanager's webhook_config max_alerts)".into(),
        )
    }

    pub fn handle(
        &self,
        source: Source,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let body = match body {
            Ok(b) => b,
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => return self.too_large(source),
            Err(rej) => {
                return self.reject(
                    source,
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    format!("cannot read the request body: {}", rej.body_text()),
                )
            }
        };
        if let Err(e) = self.auth.check(source, headers, &body, SystemTime::now()) {
            return self.reject(source, StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
        }
        let n = match parse(source, &body) {
            Ok(n) => n,
            Err(why) => return self.reject(source, StatusCode::BAD_REQUEST, "malformed", why),
        };
        match self.process(source, &n) {
            Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
            // 503: the sender retries, and reaches a running agent.
            Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        }
    }

    /// Dedupes, matches and fires; returns the answer's body.
    pub fn process(&self, source: Source, n: &Notification) -> Result<Value, SnapshotError> {
        let kind = source.kind().as_str();
        let firing: Vec<&Alert> = n.alerts.iter().filter(|a| a.status == Status::Firing).collect();
        let resolved = n.alerts.len() - firing.len();
        events::webhook_alerts(
            &self.metrics,
            source.as_str(),
            firing.len() as u64,
            resolved as u64,
        );
        if n.truncated_alerts > 0 {
            tracing::info!(
                source = source.as_str(), truncated = n.truncated_alerts,
                "the sender left {} alerts out of this notification (max_alerts); only those sent can select targets",
                n.truncated_alerts
            );
        }
        let mut per_target: BTreeMap<String, Vec<&Alert>> = BTreeMap::new();
        let (mut unmatched, mut duplicates) = (0, 0);
        for alert in firing.iter().copied() {
            let targets = select_targets(&alert.labels, &self.targets.read(), &self.match_labels);
            if targets.is_empty() {
                unmatched += 1;
                events::alert_unmatched(&self.metrics, source.as_str(), alert.name(), &alert.labels);
                continue;
            }
            // The same alert of the same group, firing since the same moment:
            // a resend, or the second of an HA pair.
            let key = format!(
                "{}\u{0}{}\u{0}{}\u{0}{}",
                source.as_str(),
                n.group_key,
                alert.fingerprint(),
                alert.starts_at
            );
            if !self.gate.first_delivery(&key) {
                duplicates += 1;
                for t in &targets {
                    events::suppressed(
                        &self.metrics,
                        kind,
                        t,
                        Suppressed::Duplicate,
                        &format!("{} ({})", alert.name(), alert.fingerprint()),
                    );
                }
                continue;
            }
            for t in targets {
                per_target.entry(t).or_default().push(alert);
            }
        }
        let mut snapshots = Vec::new();
        let mut suppressed = Vec::new();
        for (target, alerts) in per_target {
            let firing = Firing {
                kind: source.kind(),
                reason: reason(source, &alerts),
                fired_at: SystemTime::now(),
                details: details(n, &alerts),
            };
            match self.gate.fire(&target, self.cooldown, firing)? {
                Outcome::Started(ids) => {
                    snapshots.extend(ids.into_iter().map(|id| json!({"target": target, "id": id})))
                }
                Outcome::Suppressed(why) => suppressed.push(json!({"target": target, "reason": why.label()})),
            }
        }
        Ok(json!({
            "status": "ok",
            "firing": firing.len(),
            "resolved": resolved,
            "unmatched": unmatched,
            "duplicates": duplicates,
            "snapshots": snapshots,
            "suppressed": suppressed,
        }))
    }
}

fn reason(source: Source, alerts: &[&Alert]) -> String {
    let first = alerts.first().map_or("", |a| a.name());
    let summary = alerts
        .first()
        .and_then(|a| a.annotations.get("summary"))
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    let more = match alerts.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more alerts)", n - 1),
    };
    format!("{}: {first} firing{summary}{more}", source.as_str())
}

fn details(n: &Notification, alerts: &[&Alert]) -> Value {
    let list: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let mut v = json!({
                "fingerprint": a.fingerprint(),
                "labels": a.labels,
                "annotations": a.annotations,
                "starts_at": a.starts_at,
                "generator_url": a.generator_url,
            });
            if let Some(values) = &a.values {
                v["values"] = json!(values);
            }
            v
        })
        .collect();
    let mut d = json!({
        "fingerprint": alerts.first().map(|a| a.fingerprint()),
        "labels": alerts.first().map(|a| &a.labels),
        "group_key": n.group_key,
        "group_labels": n.group_labels,
        "receiver": n.receiver,
        "external_url": n.external_url,
        "alerts": list,
    });
    if let Some(org) = n.org_id {
        d["org_id"] = json!(org);
    }
    if let Some(title) = &n.title {
        d["title"] = json!(title);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/webhooks")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn target(name: &str, pairs: &[(&str, &str)]) -> TargetLabels {
        TargetLabels {
            name: name.into(),
            labels: labels(pairs),
        }
    }

    fn match_labels() -> Vec<String> {
        ["service", "pod", "instance", "job"].map(String::from).to_vec()
    }

    #[test]
    fn real_alertmanager_payloads_parse() {
        let n = parse(Source::Alertmanager, &data("alertmanager-0.25-firing.json")).expect("firing");
        assert_eq!(n.version, "4");
        assert_eq!(n.alerts.len(), 1);
        let a = &n.alerts[0];
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.name(), "FixtureSlow");
        assert_eq!(a.fingerprint(), "a86b9db496aef75e");
        assert_eq!(a.labels["instance"], "127.0.0.1:46611");
        assert!(n.group_key.contains("FixtureSlow"));
        let r = parse(Source::Alertmanager, &data("alertmanager-0.25-resolved.json")).expect("resolved");
        assert_eq!(r.alerts[0].status, Status::Resolved);
        assert_eq!(r.alerts[0].fingerprint, a.fingerprint, "the same alert");
    }

    #[test]
    fn grafana_payload_parses_with_its_own_fields() {
        let n = parse(Source::Grafana, &data("grafana-firing.json")).expect("grafana");
        assert_eq!(n.org_id, Some(1));
        assert_eq!(n.alerts.len(), 2);
        assert_eq!(n.alerts[0].values.as_ref().and_then(|v| v.get("A")), Some(&0.734));
        assert_eq!(n.alerts[1].values, None, "null values");
        assert_eq!(n.alerts[1].status, Status::Resolved);
    }

    #[test]
    fn malformed_payloads_say_why() {
        let e = parse(
            Source::Alertmanager,
            b"{\"version\":\"4\",\"alerts\":[{\"status\":\"pending\",\"labels\":{}}]}",
        )
        .unwrap_err();
        assert!(e.contains("unknown variant `pending`"), "{e}");
        let e = parse(Source::Alertmanager, b"{\"version\":\"3\",\"alerts\":[]}").unwrap_err();
        assert!(e.contains("version \"3\" is not supported"), "{e}");
        let e = parse(Source::Alertmanager, b"{\"alerts\":").unwrap_err();
        assert!(e.contains("EOF while parsing"), "{e}");
        let e = parse(Source::Alertmanager, b" [\"4\", \"k\"]").unwrap_err();
        assert!(e.ends_with("expected a JSON object"), "{e}");
        let e = parse(Source::Grafana, b" \n").unwrap_err();
        assert!(e.ends_with("the body is empty"), "{e}");
        let e = parse(Source::Grafana, b"{\"ruleName\":\"x\",\"evalMatches\":[]}").unwrap_err();
        assert!(
            e.contains("missing field `alerts`") && e.contains("legacy"),
            "{e}"
        );
        let e = parse(
            Source::Alertmanager,
            b"{\"version\":\"4\",\"alerts\":[{\"status\":\"firing\",\"labels\":{\"a\":1}}]}",
        )
        .unwrap_err();
        assert!(e.contains("invalid type: integer"), "{e}");
    }

    #[test]
    fn label_rule_selects_on_shared_equal_labels() {
        let targets = [
            target("a", &[("instance", "10.0.0.1:8080"), ("job", "api")]),
            target("b", &[("instance", "10.0.0.2:8080"), ("job", "api")]),
            target("c", &[("service", "checkout")]),
            target("d", &[]),
        ];
        let ml = match_labels();
        let pick = |l: &[(&str, &str)]| select_targets(&labels(l), &targets, &ml);
        assert_eq!(pick(&[("instance", "10.0.0.1:8080"), ("job", "api")]), ["a"]);
        assert_eq!(pick(&[("job", "api")]), ["a", "b"], "job alone is shared by both");
        assert_eq!(pick(&[("job", "api"), ("service", "checkout")]), ["a", "b", "c"]);
        assert_eq!(
            pick(&[("instance", "10.0.0.9:8080"), ("job", "api")]),
            Vec::<String>::new()
        );
        assert_eq!(
            pick(&[("alertname", "X"), ("severity", "page")]),
            Vec::<String>::new(),
            "nothing shared"
        );
        assert_eq!(
            pick(&[(TARGET_LABEL, "d"), ("job", "api")]),
            ["d"],
            "explicit label wins"
        );
        assert_eq!(pick(&[(TARGET_LABEL, "nope")]), Vec::<String>::new());
        // Labels outside match_labels never count.
        let t = [target("e", &[("team", "x")])];
        assert!(select_targets(&labels(&[("team", "x")]), &t, &ml).is_empty());
    }

    #[test]
    fn fingerprint_is_computed_from_labels_when_absent() {
        let mut a: Alert =
            serde_json::from_str(r#"{"status":"firing","labels":{"b":"2","a":"1"}}"#).expect("alert");
        let f = a.fingerprint();
        assert_eq!(f.len(), 16);
        a.labels.insert("c".into(), "3".into());
        assert_ne!(a.fingerprint(), f);
    }

    fn auth(bearer: Option<&str>, basic: Option<(&str, &str)>, hmac: Option<(&str, Option<&str>)>) -> Auth {
        let cfg = WebhookConfig {
            basic_auth_user: basic.map(|b| b.0.to_string()),
            basic_auth_password: basic.map(|b| Secret::new(b.1.to_string())),
            grafana_hmac_secret: hmac.map(|h| Secret::new(h.0.to_string())),
            grafana_hmac_timestamp_header: hmac.and_then(|h| h.1.map(String::from)),
            ..WebhookConfig::default()
        };
        Auth::load(&cfg, bearer.map(|b| Secret::new(b.into()))).expect("auth")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn bearer_and_basic_auth() {
        let now = SystemTime::now();
        let open = auth(None, None, None);
        assert_eq!(open.check(Source::Alertmanager, &headers(&[]), b"", now), Ok(()));

        let a = auth(Some("tok"), Some(("am", "pw:with:colons")), None);
        let check = |h: &[(&str, &str)]| a.check(Source::Alertmanager, &headers(h), b"", now);
        assert_eq!(check(&[("authorization", "Bearer tok")]), Ok(()));
        assert_eq!(check(&[("authorization", "bearer  tok ")]), Ok(()));
        assert_eq!(
            check(&[("authorization", "Bearer nope")]),
            Err(AuthError::BearerMismatch)
        );
        // base64("am:pw:with:colons")
        assert_eq!(
            check(&[("authorization", "Basic YW06cHc6d2l0aDpjb2xvbnM=")]),
            Ok(())
        );
        // base64("am:wrong")
        assert_eq!(
            check(&[("authorization", "Basic YW06d3Jvbmc=")]),
            Err(AuthError::BasicMismatch)
        );
        assert_eq!(
            check(&[("authorization", "Basic !!!")]),
            Err(AuthError::BasicMalformed)
        );
        let missing = check(&[]).unwrap_err();
        assert!(matches!(missing, AuthError::Missing(_)));
        assert!(missing.to_string().contains("Bearer") && missing.to_string().contains("basic"));

        let only_bearer = auth(Some("tok"), None, None);
        assert_eq!(
            only_bearer.check(
                Source::Alertmanager,
                &headers(&[("authorization", "Basic YW06d3Jvbmc=")]),
                b"",
                now
            ),
            Err(AuthError::BasicNotConfigured)
        );
        let only_basic = auth(None, Some(("am", "pw")), None);
        assert_eq!(
            only_basic.check(
                Source::Grafana,
                &headers(&[("authorization", "Bearer tok")]),
                b"",
                now
            ),
            Err(AuthError::BearerNotConfigured)
        );
    }

    #[test]
    fn a_bad_hmac_header_name_fails_closed() {
        let cfg = WebhookConfig {
            grafana_hmac_secret: Some(Secret::new("s".into())),
            grafana_hmac_timestamp_header: Some("bad header".into()),
            ..WebhookConfig::default()
        };
        assert!(matches!(
            Auth::load(&cfg, None),
            Err(WebhookError::Header {
                key: "grafana_hmac_timestamp_header",
                ..
            })
        ));
    }

    // Expected signatures computed independently:
    //   printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac s3cret
    //   printf '%s' '1700000000:{"a":1}' | openssl dgst -sha256 -hmac s3cret
    const SIG_BODY: &str = "5910e62016ef5034272c926c27071992a465c2335cecf41851bda071577f4f6d";
    const SIG_TS: &str = "05d9bc30f0201f409fa39328f2417ecd7da92ccf4e9bdb80fa96f8518b0dd0a3";

    #[test]
    fn grafana_hmac_signature() {
        let body = br#"{"a":1}"#;
        let a = auth(Some("tok"), None, Some(("s3cret", None)));
        let now = SystemTime::now();
        let g = |h: &[(&str, &str)]| a.check(Source::Grafana, &headers(h), body, now);
        assert_eq!(
            g(&[("x-grafana-alerting-signature", SIG_BODY)]),
            Ok(()),
            "sufficient alone"
        );
        assert_eq!(
            g(&[
                ("x-grafana-alerting-signature", SIG_BODY),
                ("authorization", "Bearer nope")
            ]),
            Ok(()),
            "the signature decides, not the bearer"
        );
        assert_eq!(
            g(&[("authorization", "Bearer tok")]),
            Err(AuthError::SignatureMissing("x-grafana-alerting-signature".into()))
        );
        let mut wrong = SIG_BODY.to_string();
        wrong.replace_range(0..1, "1");
        assert_eq!(
            g(&[("x-grafana-alerting-signature", &wrong)]),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            g(&[("x-grafana-alerting-signature", "zz")]),
            Err(AuthError::SignatureMalformed(
                "x-grafana-alerting-signature".into()
            ))
        );
        // Alertmanager is not signed: its credentials are checked.
        assert_eq!(
            a.check(
                Source::Alertmanager,
                &headers(&[("authorization", "Bearer tok")]),
                body,
                now
            ),
            Ok(())
        );

        let t = auth(None, None, Some(("s3cret", Some("X-Grafana-Alerting-Timestamp"))));
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sig = |h: &[(&str, &str)], now| t.check(Source::Grafana, &headers(h), body, now);
        let good = [
            ("x-grafana-alerting-signature", SIG_TS),
            ("x-grafana-alerting-timestamp", "1700000000"),
        ];
        assert_eq!(sig(&good, at + Duration::from_secs(30)), Ok(()));
        assert_eq!(
            sig(&good, at + Duration::from_secs(3600)),
            Err(AuthError::TimestampSkew(3600))
        );
        assert_eq!(
            sig(
                &[
                    ("x-grafana-alerting-signature", SIG_TS),
                    ("x-grafana-alerting-timestamp", "1700000001")
                ],
                at
            ),
            Err(AuthError::SignatureMismatch),
            "the timestamp is signed"
        );
        assert_eq!(
            sig(&[("x-grafana-alerting-signature", SIG_TS)], at),
            Err(AuthError::TimestampMissing("x-grafana-alerting-timestamp".into()))
        );
    }
}
