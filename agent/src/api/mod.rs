//! The HTTP API: targets, snapshots, health and metrics, as JSON over axum.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bundle;
use crate::collect::Fleet;
use crate::config::{Config, Secret};
use crate::deliver::spool;
use crate::ring::Rings;
use crate::snapshot::{Firing, Phase, SnapshotError, Snapshots};
use crate::telemetry::Metrics;

pub struct AppState {
    pub config: Config,
    pub rings: Arc<Rings>,
    /// The targets recorded now, with their collectors' status.
    pub fleet: Arc<Fleet>,
    pub snapshots: Arc<Snapshots>,
    pub metrics: Arc<Metrics>,
    pub token: Option<Secret>,
    /// The Alertmanager and Grafana endpoints.
    pub webhooks: Arc<crate::trigger::webhook::Webhooks>,
    /// Set once listeners are bound and collectors started.
    pub ready: AtomicBool,
}

/// `/v1/*` requests handled at once. More are answered 503 at once rather
/// than queued, so a flood (or many slow request bodies) costs bounded
/// memory and the sender learns to back off. Health, readiness and metrics
/// stay outside the limit: a flood of API calls must not make a kubelet
/// restart the agent or Prometheus lose it.
pub const MAX_API_REQUESTS: usize = 64;
/// Longest one `/v1/*` request may hold its place, body included: a client
/// that sends its body a byte a minute must not keep a slot for good.
const API_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.server.max_body as usize;
    let in_flight = InFlight {
        permits: Arc::new(Semaphore::new(MAX_API_REQUESTS)),
        metrics: state.metrics.clone(),
    };
    let api = Router::new()
        .route("/v1/targets", get(targets))
        .route("/v1/snapshots", get(list_snapshots).post(create_snapshot))
        .route("/v1/snapshots/{id}", get(get_snapshot))
        .merge(crate::trigger::webhook::routes())
        .route_layer(middleware::from_fn_with_state(in_flight, limit_in_flight));
    Router::new()
        .merge(api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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

/// The places for `/v1/*` requests, and the gauge that shows them taken.
#[derive(Clone)]
struct InFlight {
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// A taken place: counted in the gauge until dropped, also when the client
/// goes away and the request future is dropped mid-way.
struct Place {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.metrics.api_in_flight.dec();
    }
}

async fn limit_in_flight(State(places): State<InFlight>, req: Request, next: Next) -> Response {
    let Ok(permit) = places.permits.try_acquire_owned() else {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("more than {MAX_API_REQUESTS} API requests in flight; retry in a moment"),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    };
    places.metrics.api_in_flight.inc();
    let place = Place {
        _permit: permit,
        metrics: places.metrics,
    };
    let response = match tokio::time::timeout(API_REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request not read and answered within {}s",
                API_REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    };
    drop(place);
    response
}

const TOO_LARGE: &str = "request body is larger than server.max_body";

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
    use crate::trigger::webhook::Source;
    match req.uri().path() {
        "/v1/webhooks/alertmanager" => state.webhooks.too_large(Source::Alertmanager),
        "/v1/webhooks/grafana" => state.webhooks.too_large(Source::Grafana),
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

/// Connections the API keeps open at once: half the process's descriptor
/// limit, at most 1024. Past it, new connections wait in the kernel's backlog
/// instead of taking the descriptors that collectors, probes, sinks and the
/// bundle writer need: with a soft limit of 1024, a thousand idle API
/// connections made every new socket and file fail with EMFILE.
pub fn max_connections() -> usize {
    crate::telemetry::max_fds().map_or(512, |n| (n / 2).clamp(16, 1024) as usize)
}

/// A listener that stops accepting while `max` of its connections are open.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max: usize) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max)),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so this only waits for a place.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (LimitedConnection { io, _permit: permit }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its place until it is dropped.
pub struct LimitedConnection {
    io: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for LimitedConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A JSON error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// Checks `Authorization: Bearer <token>` when a token is configured.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    match given {
        Some(t) if constant_time_eq(t.trim().as_bytes(), token.expose().as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bearer token does not match",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs Authorization: Bearer <token> (server.token_file)",
        )),
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body, or a JSON answer saying why it could not be read (413 past
/// `server.max_body`).
pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE)
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {}", rej.body_text()),
            )
        }
    })
}

/// Parses a JSON object body with an answer that says what is wrong with it.
/// An empty body reads as `{}`.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return serde_json::from_slice(b"{}")
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("empty body: {e}")))
        }
        // serde reads a JSON array as a struct's fields in order: `[]` would
        // be a valid request for every target.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid JSON body: expected a JSON object",
            ))
        }
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
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

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready once config is loaded, the API is bound and collectors run. Targets
/// that are not recording are listed; they fail readiness only with
/// `server.ready_requires_targets`, because in a sidecar an unready
/// flightrec takes the whole pod, service included, out of rotation.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
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

async fn targets(State(state): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = state
        .fleet
        .list()
        .into_iter()
        .map(|(t, status)| {
            let st = Some(status);
            let ring = state.rings.status(&t.name).unwrap_or_default();
            json!({
                "name": t.name,
                "url": t.public_url(),
                "labels": t.labels,
                "window_seconds": st.as_ref().map_or(t.window, |s| s.window).as_secs_f64(),
                "configured_window_seconds": t.window.as_secs_f64(),
                "state": st.as_ref().map(|s| s.state.as_str()),
                "go_version": st.as_ref().and_then(|s| s.go_version.clone()),
                "windows_kept": st.as_ref().map_or(0, |s| s.windows_kept),
                "consecutive_failures": st.as_ref().map_or(0, |s| s.consecutive_failures),
                "last_window_at": st.as_ref().and_then(|s| s.last_window_at).map(bundle::rfc3339),
                "last_error": st.as_ref().and_then(|s| s.last_error.as_ref()).map(|(at, e)| json!({
                    "at": bundle::rfc3339(*at), "message": e,
                })),
                "ring": {
                    "windows": ring.windows,
                    "bytes": ring.stored_bytes,
                    "raw_bytes": ring.raw_bytes,
                    "oldest": ring.oldest.map(bundle::rfc3339),
                    "newest": ring.newest.map(bundle::rfc3339),
                    "coverage": ring.coverage,
                    "max_age_seconds": t.max_age.as_secs_f64(),
                    "max_bytes": t.max_bytes,
                    "max_windows": t.max_windows,
                },
            })
        })
        .collect();
    Json(json!({
        "targets": list,
        "ring": {
            "bytes": state.rings.total_bytes(),
            "max_bytes": state.rings.global_max_bytes(),
        },
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotRequest {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn create_snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let req: SnapshotRequest = parse_json(&read_body(body)?)?;
    let reason = req.reason.unwrap_or_else(|| "requested through the API".into());
    if reason.len() > 1024 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reason is longer than 1024 bytes",
        ));
    }
    let ids = state
        .snapshots
        .fire(req.target.as_deref(), Firing::manual(reason))
        .map_err(|e| match e {
            SnapshotError::UnknownTarget(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            SnapshotError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            SnapshotError::SpoolFull(_) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        })?;
    let first = ids.first().cloned();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "id": first,
            "ids": ids,
            "status": "recording",
        })),
    )
        .into_response())
}

/// A committed bundle for the API, with where each sink has it.
fn summary(spool: &spool::Spool, path: &std::path::Path, m: &bundle::Manifest) -> Value {
    json!({
        "id": m.id,
        "target": m.target.name,
        "phase": Phase::Complete,
        "trigger": { "kind": m.trigger.kind, "reason": m.trigger.reason, "fired_at": m.trigger.fired_at },
        "created_at": m.created_at,
        "windows": m.windows.len(),
        "bytes": m.total_bytes(),
        "path": path,
        "delivery": spool.deliveries(&m.id).unwrap_or_default(),
    })
}

async fn list_snapshots(State(state): State<Arc<AppState>>) -> Json<Value> {
    let spool = state.snapshots.spool().clone();
    let on_disk = tokio::task::spawn_blocking(move || spool.list())
        .await
        .unwrap_or_default();
    let spool = state.snapshots.spool();
    let mut out: Vec<Value> = on_disk.iter().map(|(p, m)| summary(spool, p, m)).collect();
    for p in state.snapshots.unfinished() {
        if !on_disk.iter().any(|(_, m)| m.id == p.id) {
            out.push(serde_json::to_value(&p).unwrap_or(Value::Null));
        }
    }
    Json(json!({ "snapshots": out }))
}

async fn get_snapshot(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    // A segment that does not percent-decode to UTF-8 is no id either.
    let id = id.map(|Path(id)| id).unwrap_or_default();
    if !spool::valid_id(&id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid snapshot id: ids hold only letters, digits, '.', '_' and '-'",
        ));
    }
    let spool = state.snapshots.spool().clone();
    let id2 = id.clone();
    let found = tokio::task::spawn_blocking(move || {
        let dir = spool.bundle_dir(&id2)?;
        let m = bundle::read_manifest(&dir).ok()?;
        Some((dir, m))
    })
    .await
    .ok()
    .flatten();
    if let Some((dir, m)) = found {
        let mut v = summary(state.snapshots.spool(), &dir, &m);
        v["manifest"] = serde_json::to_value(&m).unwrap_or(Value::Null);
        return Ok(Json(v));
    }
    match state.snapshots.progress(&id) {
        Some(p) => Ok(Json(serde_json::to_value(&p).unwrap_or(Value::Null))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no snapshot {id:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_request_must_be_an_object() {
        for bad in [&b"[]"[..], b" [\"app\", \"why\"]", b"\"app\"", b"7", b"null"] {
            let e = parse_json::<SnapshotRequest>(bad).expect_err(&String::from_utf8_lossy(bad));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        let all = parse_json::<SnapshotRequest>(b" \n").expect("empty = every target");
        assert!(all.target.is_none() && all.reason.is_none());
        let one = parse_json::<SnapshotRequest>(br#"{"target":"app"}"#).expect("object");
        assert_eq!(one.target.as_deref(), Some("app"));
    }
}
