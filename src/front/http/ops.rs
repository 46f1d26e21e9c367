//! The operators' endpoints: `/metrics` (Prometheus, optionally behind a token) and
//! `/healthz` (each upstream up or down).

use super::request::challenge;
use super::{HttpFront, json_response, reject};
use crate::auth::AuthError;
use crate::front::checks::Rejection;
use crate::jsonrpc::code;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The Prometheus metrics; with `server.metrics_token_sha256` set, only for that token.
pub(super) async fn metrics(State(front): State<HttpFront>, headers: HeaderMap) -> Response {
    if let Some(expected) = &front.metrics_token_sha256
        && let Err(rejection) = check_metrics_token(&headers, expected)
    {
        return reject(rejection);
    }
    let body = crate::telemetry::prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The bearer token's SHA-256 against `expected`, in constant time.
fn check_metrics_token(headers: &HeaderMap, expected: &str) -> Result<(), Rejection> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let presented = crate::auth::hash_key(token.unwrap_or_default().trim());
    let matches: bool =
        subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), expected.as_bytes()).into();
    if token.is_some() && matches {
        return Ok(());
    }
    let mut r = Rejection::new(
        StatusCode::UNAUTHORIZED,
        None,
        code::INVALID_REQUEST,
        "/metrics needs the metrics token (Authorization: Bearer <token>)",
    );
    r.challenge = Some(challenge(if token.is_none() {
        AuthError::Missing
    } else {
        AuthError::Invalid
    }));
    Err(r)
}

pub(super) async fn health(State(front): State<HttpFront>) -> Response {
    let upstreams: serde_json::Map<String, Value> = front
        .gateway
        .upstreams()
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                Value::from(if u.is_healthy() { "up" } else { "down" }),
            )
        })
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({"status": "ok", "upstreams": upstreams}),
    )
}
