//! Legacy sessions over HTTP: `initialize` opens one, `Mcp-Session-Id` names it, GET streams
//! its server messages, DELETE ends it.

use super::request::authenticate;
use super::respond::{respond, sse};
use super::{HttpFront, reject};
use crate::auth::Agent;
use crate::front::checks::Rejection;
use crate::gateway::{self, Caller, Session};
use crate::jsonrpc::code;
use crate::protocol::{Era, HEADER_SESSION_ID};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::Value;
use std::sync::Arc;

/// Opens a legacy session and answers `initialize` with its id in `Mcp-Session-Id`.
pub(super) async fn initialize(front: &HttpFront, agent: Agent, message: Value) -> Response {
    let client = gateway::legacy_client(&message);
    let session = Session::new(
        gateway::session::new_session_id(),
        agent.clone(),
        client.clone(),
    );
    front.gateway.sessions.insert(session.clone());
    tracing::info!(session = %session.id, agent = %agent.id, version = %client.protocol_version, "session opened");
    let caller = Caller {
        agent,
        client,
        session: Some(session.clone()),
        param_headers: None,
    };
    let reply = front.gateway.handle(&caller, message).await;
    let mut response = respond(reply, false, Era::Legacy).await;
    if let Ok(value) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(HEADER_SESSION_ID, value);
    }
    response
}

/// The legacy session named by `Mcp-Session-Id`, if the header is present. An unknown session,
/// or one opened by another agent, is 404 so the client re-initializes.
pub(super) fn session_from(
    front: &HttpFront,
    headers: &HeaderMap,
    agent: &Agent,
) -> Result<Option<Arc<Session>>, Rejection> {
    let Some(raw) = headers.get(HEADER_SESSION_ID) else {
        return Ok(None);
    };
    let id = raw.to_str().unwrap_or_default();
    match front.gateway.sessions.get(id) {
        Some(session) if session.agent.id == agent.id => Ok(Some(session)),
        _ => Err(Rejection::new(
            StatusCode::NOT_FOUND,
            None,
            code::SESSION_NOT_FOUND,
            "session not found; initialize a new session",
        )),
    }
}

/// GET: a legacy session's standalone stream of server messages (405 without a session).
pub(super) async fn open_stream(State(front): State<HttpFront>, headers: HeaderMap) -> Response {
    let session = match stream_session(&front, &headers) {
        Ok(session) => session,
        Err(rejection) => return reject(rejection),
    };
    let messages = tokio_stream::wrappers::BroadcastStream::new(session.subscribe())
        .filter_map(|m| async move { m.ok() });
    sse(messages)
}

fn stream_session(front: &HttpFront, headers: &HeaderMap) -> Result<Arc<Session>, Rejection> {
    let agent = authenticate(front, headers)?;
    if !headers.contains_key(HEADER_SESSION_ID) {
        return Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            code::INVALID_REQUEST,
            "GET needs an Mcp-Session-Id (legacy sessions only)",
        ));
    }
    let session = session_from(front, headers, &agent)?.expect("header checked");
    session.touch();
    Ok(session)
}

/// DELETE: ends a legacy session.
pub(super) async fn end_session(State(front): State<HttpFront>, headers: HeaderMap) -> Response {
    match close_session(&front, &headers) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(rejection) => reject(rejection),
    }
}

fn close_session(front: &HttpFront, headers: &HeaderMap) -> Result<(), Rejection> {
    let agent = authenticate(front, headers)?;
    if !headers.contains_key(HEADER_SESSION_ID) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            None,
            code::INVALID_REQUEST,
            "DELETE needs an Mcp-Session-Id",
        ));
    }
    let session = session_from(front, headers, &agent)?.expect("header checked");
    front.gateway.sessions.remove(&session.id);
    tracing::info!(session = %session.id, "session closed by the client");
    Ok(())
}
