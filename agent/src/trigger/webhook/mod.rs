//! Alert webhooks: Alertmanager (payload version 4) and Grafana, their auth, the label rule that picks targets, dedupe.
//!
//! A request is judged at once: bundles are made in the background by the
//! snapshot module. Only firing alerts trigger; resolved ones are counted and
//! answered 200. An alert selects targets by its labels (see
//! [`select::select_targets`]); an alert that selects none is answered 200
//! and logged, since a sender can do nothing about it and must not retry.
//! The HTTP side (routes, reading the body) is `api::webhooks`; this module
//! takes headers and bytes and answers with a JSON value or a [`Rejection`].

mod auth;
mod payload;
mod select;

pub use auth::{Auth, AuthError, WebhookError};
pub use payload::{parse, Alert, Labels, Notification, Source, Status};
pub use select::{select_targets, AlertTargets, TargetLabels, TARGET_LABEL};

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::events::{self, Suppressed};
use super::gate::{Gate, Outcome};
use crate::config::{Secret, Target, WebhookConfig};
use crate::snapshot::{Firing, SnapshotError};
use crate::telemetry::Metrics;

/// Why a webhook request was refused: the status and the message of the
/// answer, and for a 401 the `WWW-Authenticate` challenge to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
    pub challenge: Option<&'static str>,
}

/// Where alerts go that this agent cannot capture alone: on Kubernetes the
/// pod an alert names may run on another node (`kubernetes::alerts` writes
/// a FlightSnapshot that the node running it acts on).
pub trait AlertRouter: Send + Sync {
    /// Whether the alert's labels name something this router reaches.
    fn takes(&self, labels: &Labels) -> bool;
    /// Hands the alert on; the value says what was done, for the answer.
    fn route<'a>(
        &'a self,
        source: Source,
        alert: &'a Alert,
        reason: String,
        details: Value,
    ) -> BoxFuture<'a, Value>;
}

/// The webhook endpoints' state.
pub struct Webhooks {
    auth: Auth,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    /// What alerts select; replaced when a reload changes the targets.
    targets: Arc<AlertTargets>,
    cooldown: Duration,
    router: OnceLock<Arc<dyn AlertRouter>>,
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
            targets: Arc::new(AlertTargets::new(targets, &cfg.match_labels)),
            cooldown,
            router: OnceLock::new(),
        })
    }

    /// Alerts the router takes go to it instead of selecting among this
    /// agent's targets.
    pub fn set_router(&self, router: Arc<dyn AlertRouter>) {
        let _ = self.router.set(router);
    }

    /// Alerts select among these targets from now on, wherever they come from.
    pub fn set_targets(&self, targets: &[Target]) {
        self.targets.set(targets);
    }

    /// What alerts select, for the other ways alerts arrive.
    pub fn targets(&self) -> &Arc<AlertTargets> {
        &self.targets
    }

    /// Counts and logs a refused request; the answer says why.
    pub fn reject(&self, source: Source, status: StatusCode, reason: &str, message: String) -> Rejection {
        events::webhook_rejected(&self.metrics, source.as_str(), reason, &message);
        Rejection {
            status,
            message,
            challenge: (status == StatusCode::UNAUTHORIZED).then(|| self.auth.challenge()),
        }
    }

    /// The answer to a body over `server.max_body`, also given before the
    /// body is read when its declared length is already too large.
    pub fn too_large(&self, source: Source) -> Rejection {
        self.reject(
            source,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body is larger than server.max_body; raise it, or cap the alerts per notification (Alertmanager's webhook_config max_alerts)".into(),
        )
    }

    /// Judges one request: its credentials, then its payload, then the alerts.
    pub async fn handle(&self, source: Source, headers: &HeaderMap, body: &[u8]) -> Result<Value, Rejection> {
        if let Err(e) = self.auth.check(source, headers, body, SystemTime::now()) {
            return Err(self.reject(source, StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()));
        }
        let n = parse(source, body)
            .map_err(|why| self.reject(source, StatusCode::BAD_REQUEST, "malformed", why))?;
        // 503: the sender retries, and reaches a running agent.
        self.process(source, &n).await.map_err(|e| Rejection {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
            challenge: None,
        })
    }

    /// Dedupes, matches and fires; returns the answer's body.
    pub async fn process(&self, source: Source, n: &Notification) -> Result<Value, SnapshotError> {
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
        let mut routed: Vec<&Alert> = Vec::new();
        let (mut unmatched, mut duplicates) = (0, 0);
        let router = self.router.get();
        for alert in firing.iter().copied() {
            let routable = router.is_some_and(|r| r.takes(&alert.labels));
            let targets = if routable {
                Vec::new()
            } else {
                self.targets.select(&alert.labels)
            };
            if targets.is_empty() && !routable {
                unmatched += 1;
                events::alert_unmatched(&self.metrics, source.as_str(), alert.name(), &alert.labels);
                continue;
            }
            // The same alert firing since the same moment: a resend, the
            // second of an HA pair, the same alert in another group, or one
            // read from Alertmanager's API.
            if !self.gate.first_delivery(&alert.dedupe_key(source)) {
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
            if routable {
                routed.push(alert);
            }
            for t in targets {
                per_target.entry(t).or_default().push(alert);
            }
        }
        let mut flightsnapshots = Vec::new();
        if let Some(router) = router {
            for alert in routed {
                let one = [alert];
                let done = router
                    .route(source, alert, reason(source, &one), details(n, &one))
                    .await;
                flightsnapshots.push(done);
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
                post_trigger: None,
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
            "flightsnapshots": flightsnapshots,
        }))
    }
}

/// The trigger's reason: the first alert's name and summary.
pub fn reason(source: Source, alerts: &[&Alert]) -> String {
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

/// `trigger.details` of a webhook's bundle: the alerts, and what the
/// notification said of their group.
fn details(n: &Notification, alerts: &[&Alert]) -> Value {
    let mut d = alert_details(alerts);
    d["source"] = json!("webhook");
    d["group_key"] = json!(n.group_key);
    d["group_labels"] = json!(n.group_labels);
    d["receiver"] = json!(n.receiver);
    d["external_url"] = json!(n.external_url);
    if let Some(org) = n.org_id {
        d["org_id"] = json!(org);
    }
    if let Some(title) = &n.title {
        d["title"] = json!(title);
    }
    d
}

/// The alerts of a bundle as its `trigger.details` holds them, however they
/// arrived: the first one's fingerprint and labels, and every alert.
pub fn alert_details(alerts: &[&Alert]) -> Value {
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
    json!({
        "fingerprint": alerts.first().map(|a| a.fingerprint()),
        "labels": alerts.first().map(|a| &a.labels),
        "alerts": list,
    })
}
