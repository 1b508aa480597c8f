//! The endpoints for operators and their tools: `/healthz`, `/readyz` and `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready once config is loaded, the API is bound and collectors run. Targets
/// that are not recording are listed; they fail readiness only with
/// `server.ready_requires_targets`, because in a sidecar an unready
/// flightrec takes the whole pod, service included, out of rotation.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting or shutting down").into_response();
    }
    let now = std::time::SystemTime::now();
    let stale: Vec<String> = state
        .fleet
        .list()
        .into_iter()
        .filter(|(_, status)| {
            let fresh_within = status.window * 3 + std::time::Duration::from_secs(10);
            !status
                .last_window_at
                .is_some_and(|at| now.duration_since(at).is_ok_and(|age| age <= fresh_within))
        })
        .map(|(t, _)| t.name)
        .collect();
    let body = json!({ "status": "ready", "targets_not_recording": stale });
    if state.config.server.ready_requires_targets && !stale.is_empty() {
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return r;
    }
    Json(body).into_response()
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic
/// text format otherwise.
pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    state.snapshots.spool().refresh_gauges();
    let wants_om = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_om {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.render_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            state.metrics.render_text(),
        )
            .into_response()
    }
}
