//! `POST /v1/webhooks/alertmanager` and `/v1/webhooks/grafana`: the HTTP side of `trigger::webhook`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::{ApiError, AppState};
use crate::trigger::webhook::{Rejection, Source};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/webhooks/alertmanager", post(alertmanager))
        .route("/v1/webhooks/grafana", post(grafana))
}

async fn alertmanager(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, Source::Alertmanager, &headers, body).await
}

async fn grafana(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, Source::Grafana, &headers, body).await
}

async fn handle(
    state: &AppState,
    source: Source,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let webhooks = &state.webhooks;
    let answer = match body {
        Ok(body) => webhooks.handle(source, headers, &body).await,
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(webhooks.too_large(source)),
        Err(rej) => Err(webhooks.reject(
            source,
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("cannot read the request body: {}", rej.body_text()),
        )),
    };
    match answer {
        Ok(value) => (StatusCode::OK, Json(value)).into_response(),
        Err(r) => rejected(r),
    }
}

/// A refused webhook request as an answer, with the challenge a 401 needs.
pub(super) fn rejected(r: Rejection) -> Response {
    let mut response = ApiError::new(r.status, r.message).into_response();
    if let Some(challenge) = r.challenge {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}
