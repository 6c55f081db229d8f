//! `POST /internal/reload`, shared by the traffic and postback services: who may call it, and its answers.

use std::future::Future;
use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;
use traffoflex_core::store::StoreError;

/// Whether the caller may reload: the bearer token when one is configured, else only loopback callers.
pub fn allowed(token: Option<&str>, peer: SocketAddr, headers: &HeaderMap) -> bool {
    match token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            bool::from(given.as_bytes().ct_eq(token.as_bytes()))
        }
        None => peer.ip().is_loopback(),
    }
}

/// Checks the caller, runs `reload` (which returns the revision now loaded) and answers with JSON: `200
/// {"status":"reloaded","revision"}`, `403` for a caller without the token, `503` when the store is away.
pub async fn respond<F, Fut>(token: Option<&str>, peer: SocketAddr, headers: &HeaderMap, reload: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<String, StoreError>>,
{
    if !allowed(token, peer, headers) {
        let body = json!({"error": {"code": "forbidden", "message": "a valid reload token is required"}});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    match reload().await {
        Ok(revision) => {
            (StatusCode::OK, axum::Json(json!({"status": "reloaded", "revision": revision}))).into_response()
        }
        Err(e) => {
            let body = json!({"error": {"code": "storeUnavailable", "message": e.to_string()}});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}
