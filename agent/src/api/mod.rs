//! The HTTP API: the one place that speaks HTTP to callers (people, the CLI, alert senders, scrapers).
//!
//! Takes in: requests. Hands on: snapshot requests to [`crate::snapshot`],
//! alerts to [`crate::trigger::webhook`]. Reads the state of every stage to
//! answer (targets, rings, the spool). Owns: routing, authentication of
//! mutating endpoints, body limits and the bounds on requests and
//! connections, and the JSON error answers.

mod error;
mod limits;
mod ops;
mod snapshots;
mod targets;
mod webhooks;

pub use error::{authorize, parse_json, read_body, ApiError};
pub use limits::{max_connections, LimitedConnection, LimitedListener, MAX_API_REQUESTS};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;

use crate::collect::Fleet;
use crate::config::{Config, Secret};
use crate::ring::Rings;
use crate::snapshot::Snapshots;
use crate::telemetry::Metrics;
use crate::trigger::webhook::{Source, Webhooks};
use error::TOO_LARGE;
use limits::{limit_in_flight, InFlight};

pub struct AppState {
    pub config: Config,
    pub rings: Arc<Rings>,
    /// The targets recorded now, with their collectors' status.
    pub fleet: Arc<Fleet>,
    pub snapshots: Arc<Snapshots>,
    pub metrics: Arc<Metrics>,
    pub token: Option<Secret>,
    /// The Alertmanager and Grafana endpoints.
    pub webhooks: Arc<Webhooks>,
    /// How the watches of the API server are doing, on Kubernetes.
    pub kubernetes: Option<Arc<crate::kubernetes::Health>>,
    /// Set once listeners are bound and collectors started.
    pub ready: AtomicBool,
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.server.max_body as usize;
    let in_flight = InFlight {
        permits: Arc::new(Semaphore::new(MAX_API_REQUESTS)),
        metrics: state.metrics.clone(),
    };
    let api = Router::new()
        .route("/v1/targets", get(targets::targets))
        .route(
            "/v1/snapshots",
            get(snapshots::list_snapshots).post(snapshots::create_snapshot),
        )
        .route("/v1/snapshots/{id}", get(snapshots::get_snapshot))
        .merge(webhooks::routes())
        .route_layer(middleware::from_fn_with_state(in_flight, limit_in_flight));
    Router::new()
        .merge(api)
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            count_errors,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A body declared larger than `server.max_body` is refused before it is
/// read: the sender learns at once, and a client that declares gigabytes and
/// sends nothing does not hold a place until the request timeout.
async fn refuse_declared_oversize(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_none_or(|n| n <= state.config.server.max_body) {
        return next.run(req).await;
    }
    match req.uri().path() {
        "/v1/webhooks/alertmanager" => webhooks::rejected(state.webhooks.too_large(Source::Alertmanager)),
        "/v1/webhooks/grafana" => webhooks::rejected(state.webhooks.too_large(Source::Grafana)),
        _ => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE).into_response(),
    }
}

/// Counts every refused or failed request by route and status, so bad
/// input and floods show on a dashboard, not only in logs.
async fn count_errors(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let response = next.run(req).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        metrics.api_errors(&endpoint, status.as_u16());
    }
    response
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint; see the README for the API",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see the README for the API",
    )
}
