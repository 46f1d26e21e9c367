//! Reading a request at `/mcp`: the agent's credentials, the content type, and the one JSON
//! message of the body.

use super::HttpFront;
use crate::auth::{Agent, AuthError};
use crate::front::checks::Rejection;
use crate::jsonrpc::code;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

pub(super) fn authenticate(front: &HttpFront, headers: &HeaderMap) -> Result<Agent, Rejection> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    front.auth.authenticate(authorization).map_err(|e| {
        crate::telemetry::refused_credential("agent key", "/mcp");
        let mut r = Rejection::new(
            StatusCode::UNAUTHORIZED,
            None,
            code::INVALID_REQUEST,
            e.to_string(),
        );
        r.challenge = Some(challenge(e));
        r
    })
}

/// The `WWW-Authenticate` challenge of a 401.
pub(super) fn challenge(e: AuthError) -> &'static str {
    match e {
        AuthError::Missing => "Bearer realm=\"countersign\"",
        AuthError::Invalid => "Bearer realm=\"countersign\", error=\"invalid_token\"",
    }
}

pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    {
        return Ok(());
    }
    Err(Rejection::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        None,
        code::INVALID_REQUEST,
        "Content-Type must be application/json",
    ))
}

/// The body, and the message parsed from it.
pub(super) async fn read_message(body: Body, limit: usize) -> Result<(Bytes, Value), Rejection> {
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if crate::front::bounds::is_body_timeout(&e) {
            return Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                None,
                code::INVALID_REQUEST,
                e.to_string(),
            );
        }
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            code::INVALID_REQUEST,
            format!("request body exceeds {limit} bytes"),
        )
    })?;
    let message: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            None,
            code::PARSE_ERROR,
            format!("malformed JSON: {e}"),
        )
    })?;
    if message.is_array() {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            None,
            code::INVALID_REQUEST,
            "JSON-RPC batches are not supported",
        ));
    }
    Ok((bytes, message))
}

pub(super) fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}
