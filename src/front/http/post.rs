//! POST `/mcp`: one JSON-RPC message, routed to a new legacy session, an existing one, or the
//! stateless 2026-07-28 era.

use super::request::{accepts_sse, authenticate, check_content_type, read_message};
use super::respond::respond;
use super::session::{initialize, session_from};
use super::{HttpFront, reject};
use crate::auth::Agent;
use crate::front::checks::{self, Rejection};
use crate::front::numbers;
use crate::gateway::{self, Caller};
use crate::jsonrpc::{self, code};
use crate::protocol::{self, Era, HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

pub(super) async fn post(
    State(front): State<HttpFront>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle_post(&front, &headers, body).await {
        Ok(response) => response,
        Err(rejection) => reject(rejection),
    }
}

/// Who sent it, what it is, where it goes, and the gateway's answer.
async fn handle_post(
    front: &HttpFront,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    let agent = authenticate(front, headers)?;
    check_content_type(headers)?;
    let (raw, message) = read_message(body, front.max_body_bytes).await?;
    check_message(&raw, &message)?;
    let sse = accepts_sse(headers);
    match route(front, headers, &message, agent)? {
        Route::Initialize(agent) => Ok(initialize(front, agent, message).await),
        Route::Call(caller, era) => {
            Ok(respond(front.gateway.handle(&caller, message).await, sse, era).await)
        }
    }
}

/// A JSON-RPC message whose call arguments can be bound exactly.
fn check_message(raw: &Bytes, message: &Value) -> Result<(), Rejection> {
    if let Err(why) = jsonrpc::classify(message) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            message.get("id").cloned(),
            code::INVALID_REQUEST,
            why,
        ));
    }
    if let Err(why) = numbers::check_call(raw, message) {
        // 200 like the gateway's other invalid-params answers to a call, in either era.
        return Err(Rejection::new(
            StatusCode::OK,
            message.get("id").cloned(),
            code::INVALID_PARAMS,
            why.to_string(),
        ));
    }
    Ok(())
}

/// Where a POST goes.
enum Route {
    /// `initialize` without a session: a new legacy session.
    Initialize(Agent),
    /// A message in a legacy session, or a stateless modern request.
    Call(Caller, Era),
}

fn route(
    front: &HttpFront,
    headers: &HeaderMap,
    message: &Value,
    agent: Agent,
) -> Result<Route, Rejection> {
    if jsonrpc::method(message) == Some("initialize")
        && !headers.contains_key(HEADER_SESSION_ID)
        && !is_modern(headers, message)
    {
        return Ok(Route::Initialize(agent));
    }
    if let Some(session) = session_from(front, headers, &agent)? {
        check_legacy_version(headers, message)?;
        session.touch();
        let caller = Caller {
            agent,
            client: session.client(),
            session: Some(session),
            param_headers: None,
        };
        return Ok(Route::Call(caller, Era::Legacy));
    }
    if is_modern(headers, message) {
        checks::modern_request(headers, message)?;
        let caller = Caller {
            agent,
            client: gateway::modern_client(message),
            session: None,
            param_headers: Some(checks::param_headers(headers, message)?),
        };
        return Ok(Route::Call(caller, Era::Modern));
    }
    Err(Rejection::new(
        StatusCode::BAD_REQUEST,
        message.get("id").cloned(),
        code::INVALID_REQUEST,
        "no session: send initialize first (legacy), or include the 2026-07-28 _meta and headers",
    ))
}

fn check_legacy_version(headers: &HeaderMap, message: &Value) -> Result<(), Rejection> {
    let Some(version) = headers.get(HEADER_PROTOCOL_VERSION) else {
        return Ok(());
    };
    let version = version.to_str().unwrap_or_default();
    if protocol::LEGACY_VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(Rejection::new(
        StatusCode::BAD_REQUEST,
        message.get("id").cloned(),
        code::INVALID_REQUEST,
        format!("unsupported MCP-Protocol-Version {version} for a session"),
    ))
}

fn is_modern(headers: &HeaderMap, message: &Value) -> bool {
    let header = headers
        .get(HEADER_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok());
    header.is_some_and(|v| !protocol::LEGACY_VERSIONS.contains(&v))
        || jsonrpc::meta(message).is_some_and(|m| m.contains_key(protocol::META_PROTOCOL_VERSION))
}
