//! Streamable HTTP at `/mcp`, both eras, plus `/metrics` and `/healthz`.
//!
//! A POST that opens with `initialize` starts a legacy session (gateway-minted
//! `Mcp-Session-Id`); a POST with that header continues it; a POST carrying the modern `_meta`
//! is a stateless 2026-07-28 request. GET opens a legacy session's standalone stream, DELETE
//! ends the session.
//!
//! [`guard`] checks `Host` and `Origin` on every route of the listener (DNS rebinding), before
//! any handler runs.
//!
//! Parts: `post` routes a POST to its era; `request` authenticates and reads it; `respond`
//! turns the gateway's reply into JSON or SSE; `session` opens, streams and ends legacy
//! sessions; `ops` serves `/metrics` and `/healthz`.

mod ops;
mod post;
mod request;
mod respond;
mod session;

use super::checks::{OriginPolicy, Rejection};
use crate::auth::Authenticator;
use crate::gateway::Gateway;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use std::sync::Arc;

/// Shared state of the HTTP front end.
#[derive(Clone)]
pub struct HttpFront {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<Authenticator>,
    pub max_body_bytes: usize,
    /// SHA-256 (hex) of the token `/metrics` requires, if any.
    pub metrics_token_sha256: Option<String>,
}

/// The router, without a socket: tests can drive it with `oneshot`.
pub fn router(front: HttpFront) -> Router {
    Router::new()
        .route(
            "/mcp",
            get(session::open_stream)
                .post(post::post)
                .delete(session::end_session),
        )
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::health))
        .with_state(front)
}

/// Applies the `Host` and `Origin` rules to every route of `router` (the MCP endpoint,
/// `/metrics`, `/healthz`, the approver, auditor and chat endpoints alike).
pub fn guard(router: Router, origins: Arc<OriginPolicy>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(origins, check_origin))
}

async fn check_origin(
    State(origins): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    match origins.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(rejection) => reject(rejection),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A refused request as its response: the JSON-RPC error, with the headers its status needs.
fn reject(rejection: Rejection) -> Response {
    let mut response = json_response(rejection.status, &rejection.body);
    if let Some(challenge) = rejection.challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    if rejection.status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body is not read: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if rejection.status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}
