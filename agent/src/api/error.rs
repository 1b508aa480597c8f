//! Answers that say what went wrong, and the checks every mutating endpoint makes first.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

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

pub(super) const TOO_LARGE: &str = "request body is larger than server.max_body";

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
        Some(t) if token.matches(t.trim().as_bytes()) => Ok(()),
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
