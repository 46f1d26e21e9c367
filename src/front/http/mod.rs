//! Streamable HTTP at `/mcp`, both eras, plus `/metrics` and `/healthz`.
//!
//! A POST that opens with `initialize` starts a legacy session (gateway-minted
//! `Mcp-Session-Id`); a POST with that header continues it; a POST carrying the modern `_meta`
//! is a stateless 2026-07-28 request. GET opens a legacy session's standalone stream, DELETE
//! ends the session.
//!
//! [`guard`] checks `Host` and `Origin` on every route of the listener (DNS rebinding), before
//! any handler runs.

use super::checks::{self, OriginPolicy, Rejection};
use super::numbers;
use crate::auth::{Agent, AuthError, Authenticator};
use crate::gateway::{self, Caller, Gateway, Reply, ReplyStream, Session};
use crate::jsonrpc::{self, code};
use crate::protocol::{self, Era, HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

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
        .route("/mcp", get(open_stream).post(post).delete(end_session))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
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

async fn post(State(front): State<HttpFront>, headers: HeaderMap, body: Body) -> Response {
    match handle_post(&front, &headers, body).await {
        Ok(response) => response,
        Err(rejection) => reject(rejection),
    }
}

async fn handle_post(
    front: &HttpFront,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    let agent = authenticate(front, headers)?;
    check_content_type(headers)?;
    let (raw, message) = read_message(body, front.max_body_bytes).await?;
    if let Err(why) = jsonrpc::classify(&message) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            message.get("id").cloned(),
            code::INVALID_REQUEST,
            why,
        ));
    }
    if let Err(why) = numbers::check_call(&raw, &message) {
        // 200 like the gateway's other invalid-params answers to a call, in either era.
        return Err(Rejection::new(
            StatusCode::OK,
            message.get("id").cloned(),
            code::INVALID_PARAMS,
            why.to_string(),
        ));
    }
    let sse = accepts_sse(headers);
    if jsonrpc::method(&message) == Some("initialize")
        && !headers.contains_key(HEADER_SESSION_ID)
        && !is_modern(headers, &message)
    {
        return Ok(initialize(front, agent, message).await);
    }
    if let Some(session) = session_from(front, headers, &agent)? {
        check_legacy_version(headers, &message)?;
        session.touch();
        let caller = Caller {
            agent,
            client: session.client(),
            session: Some(session),
            param_headers: None,
        };
        return Ok(respond(
            front.gateway.handle(&caller, message).await,
            sse,
            Era::Legacy,
        )
        .await);
    }
    if is_modern(headers, &message) {
        checks::modern_request(headers, &message)?;
        let caller = Caller {
            agent,
            client: gateway::modern_client(&message),
            session: None,
            param_headers: Some(checks::param_headers(headers, &message)?),
        };
        return Ok(respond(
            front.gateway.handle(&caller, message).await,
            sse,
            Era::Modern,
        )
        .await);
    }
    Err(Rejection::new(
        StatusCode::BAD_REQUEST,
        message.get("id").cloned(),
        code::INVALID_REQUEST,
        "no session: send initialize first (legacy), or include the 2026-07-28 _meta and headers",
    ))
}

/// Opens a legacy session and answers `initialize` with its id in `Mcp-Session-Id`.
async fn initialize(front: &HttpFront, agent: Agent, message: Value) -> Response {
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
fn session_from(
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

fn authenticate(front: &HttpFront, headers: &HeaderMap) -> Result<Agent, Rejection> {
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

fn challenge(e: AuthError) -> &'static str {
    match e {
        AuthError::Missing => "Bearer realm=\"countersign\"",
        AuthError::Invalid => "Bearer realm=\"countersign\", error=\"invalid_token\"",
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
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
async fn read_message(body: Body, limit: usize) -> Result<(Bytes, Value), Rejection> {
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if super::bounds::is_body_timeout(&e) {
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

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Turns a gateway reply into an HTTP response: JSON when the answer is complete soon (or the
/// client takes no SSE), else an SSE stream of the related messages and the response. A legacy
/// call still quiet after [`FIRST_MESSAGE_WAIT`] (held for approval) gets its SSE stream at
/// once, so keep-alive comments flow while it waits.
async fn respond(reply: Reply, sse: bool, era: Era) -> Response {
    match reply {
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Response(message) => json_response(status_of(&message, era), &message),
        Reply::Stream(stream) => {
            // Guarded from here on: if the client goes away, the era decides what that means.
            let mut guard = DrainGuard {
                stream: Some(*stream),
                era,
            };
            // A modern request waits for its first message before the response starts: until
            // then, the connection closing drops it at once, which is that era's cancellation.
            let quiet_limit = match era {
                Era::Legacy => FIRST_MESSAGE_WAIT,
                Era::Modern => Duration::MAX,
            };
            let first = tokio::time::timeout(quiet_limit, guard.next()).await;
            let first = match first {
                Ok(None) => return StatusCode::ACCEPTED.into_response(),
                Ok(Some(first)) if guard.is_done() => {
                    return json_response(status_of(&first, era), &first);
                }
                Ok(Some(first)) => Some(first),
                Err(_quiet) => None,
            };
            if !sse {
                let last = guard.last_message(first).await;
                return json_response(status_of(&last, era), &last);
            }
            sse_response(first, guard)
        }
    }
}

/// How long a reply may stay quiet before it is sent as SSE rather than one JSON body.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_millis(500);

/// The HTTP status of a single JSON answer. 2026-07-28 gives some errors their own status,
/// whoever produced them (the gateway or an upstream); legacy answers are always 200.
fn status_of(response: &Value, era: Era) -> StatusCode {
    let code = response.pointer("/error/code").and_then(Value::as_i64);
    match (era, code) {
        (Era::Modern, Some(code::METHOD_NOT_FOUND)) => StatusCode::NOT_FOUND,
        (Era::Modern, Some(code::UNSUPPORTED_PROTOCOL_VERSION..=code::HEADER_MISMATCH)) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::OK,
    }
}

fn sse_response(first: Option<Value>, guard: DrainGuard) -> Response {
    let rest = futures::stream::unfold(guard, |mut guard| async move {
        let next = guard.next().await?;
        Some((next, guard))
    });
    use futures::StreamExt;
    sse(futures::stream::iter(first).chain(rest))
}

/// An SSE response of JSON-RPC messages, with keep-alive comments and no proxy buffering.
fn sse(messages: impl Stream<Item = Value> + Send + 'static) -> Response {
    use futures::StreamExt;
    let events = messages
        .map(|m| Ok::<_, Infallible>(Event::default().event("message").data(m.to_string())));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Owns a reply stream while SSE sends it. If the client goes away first: a legacy client's
/// request runs on (disconnect is not cancellation), a modern client's is cancelled (dropped).
struct DrainGuard {
    stream: Option<ReplyStream>,
    era: Era,
}

impl DrainGuard {
    async fn next(&mut self) -> Option<Value> {
        self.stream.as_mut()?.next().await
    }

    fn is_done(&self) -> bool {
        self.stream.as_ref().is_none_or(ReplyStream::is_done)
    }

    /// For a client that cannot take SSE: drop the related messages, keep the response.
    async fn last_message(&mut self, first: Option<Value>) -> Value {
        let mut last = first.unwrap_or(Value::Null);
        while let Some(next) = self.next().await {
            last = next;
        }
        last
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take()
            && self.era == Era::Legacy
        {
            stream.drain_in_background();
        }
    }
}

/// GET: a legacy session's standalone stream of server messages (405 without a session).
async fn open_stream(State(front): State<HttpFront>, headers: HeaderMap) -> Response {
    let session = match stream_session(&front, &headers) {
        Ok(session) => session,
        Err(rejection) => return reject(rejection),
    };
    use futures::StreamExt;
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
async fn end_session(State(front): State<HttpFront>, headers: HeaderMap) -> Response {
    let result = (|| {
        let agent = authenticate(&front, &headers)?;
        if !headers.contains_key(HEADER_SESSION_ID) {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                "DELETE needs an Mcp-Session-Id",
            ));
        }
        let session = session_from(&front, &headers, &agent)?.expect("header checked");
        front.gateway.sessions.remove(&session.id);
        tracing::info!(session = %session.id, "session closed by the client");
        Ok(())
    })();
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(rejection) => reject(rejection),
    }
}

/// The Prometheus metrics; with `server.metrics_token_sha256` set, only for that token.
async fn metrics(State(front): State<HttpFront>, headers: HeaderMap) -> Response {
    if let Some(expected) = &front.metrics_token_sha256 {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let presented = crate::auth::hash_key(token.unwrap_or_default().trim());
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), expected.as_bytes()).into();
        if token.is_none() || !matches {
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
            return reject(r);
        }
    }
    let body = crate::telemetry::prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn health(State(front): State<HttpFront>) -> Response {
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

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

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
