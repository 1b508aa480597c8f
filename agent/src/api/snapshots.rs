//! `/v1/snapshots`: ask for a snapshot, list the bundles, follow one.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{authorize, parse_json, read_body, ApiError, AppState};
use crate::bundle;
use crate::deliver::spool;
use crate::snapshot::{Firing, Phase, SnapshotError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotRequest {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn create_snapshot(
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
        // When bundle.trace was made and the bundle queued for delivery;
        // null until then.
        "derived_ready_at": m.derived.as_ref().map(|d| d.ready_at.as_str()),
        "delivery": spool.deliveries(&m.id).unwrap_or_default(),
    })
}

pub(super) async fn list_snapshots(State(state): State<Arc<AppState>>) -> Json<Value> {
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

pub(super) async fn get_snapshot(
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
