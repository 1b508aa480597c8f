//! `GET /v1/targets`: every target, its collector's state, its ring and its newest window's summary; departed targets too, while their rings are kept.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::bundle::SummaryEntry;
use crate::ring::window::Window;

/// The newest window's summary, with the window it describes.
fn newest_summary(w: &Window) -> Value {
    let (start, end, _) = w.wall_span();
    let mut v = serde_json::to_value(SummaryEntry::of(&w.summary)).unwrap_or_default();
    v["window"] = json!({
        "seq": w.seq,
        "start": crate::units::rfc3339(start),
        "end": crate::units::rfc3339(end),
        "complete": w.is_complete(),
    });
    v
}

pub(super) async fn targets(State(state): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = state
        .fleet
        .list()
        .into_iter()
        .map(|(t, status)| {
            let st = Some(status);
            let ring = state.rings.status(&t.name).unwrap_or_default();
            let newest = state.rings.newest(&t.name);
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
                "last_window_at": st.as_ref().and_then(|s| s.last_window_at).map(crate::units::rfc3339),
                "departed_at": st.as_ref().and_then(|s| s.departed_at).map(crate::units::rfc3339),
                "crash_trigger": t.crash && state.config.crash.enabled,
                "last_error": st.as_ref().and_then(|s| s.last_error.as_ref()).map(|(at, e)| json!({
                    "at": crate::units::rfc3339(*at), "message": e,
                })),
                "summary": newest.as_deref().map(newest_summary),
                "ring": {
                    "windows": ring.windows,
                    "bytes": ring.stored_bytes,
                    "raw_bytes": ring.raw_bytes,
                    "oldest": ring.oldest.map(crate::units::rfc3339),
                    "newest": ring.newest.map(crate::units::rfc3339),
                    "coverage": ring.coverage,
                    "max_age_seconds": t.max_age.as_secs_f64(),
                    "max_bytes": t.max_bytes,
                    "max_windows": t.max_windows,
                },
            })
        })
        .collect();
    let mut answer = json!({
        "targets": list,
        "ring": {
            "bytes": state.rings.total_bytes(),
            "max_bytes": state.rings.global_max_bytes(),
        },
    });
    if let Some(k) = &state.kubernetes {
        answer["kubernetes"] = k.to_json();
    }
    Json(answer)
}
