//! POSTing one message and reading what the server answered: nothing (202), one JSON message,
//! or the start of an event stream. A legacy session the server forgot (404) is renewed once.

use super::streams::sse_messages;
use super::{Route, Shared, headers};
use crate::jsonrpc;
use crate::upstream::UpstreamError;
use crate::upstream::messages::is_response;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use std::sync::Arc;

/// What a POST answered.
pub(super) enum Body {
    /// `202 Accepted`, nothing else.
    Accepted,
    Json(Value),
    /// `text/event-stream`, not read yet.
    Stream(reqwest::Response),
}

impl Shared {
    /// POSTs one message; a connection failure marks the upstream unhealthy.
    pub(super) async fn post(
        &self,
        msg: &Value,
        route: &Route,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.post_mirrored(msg, route, &[]).await
    }

    /// POSTs one message with `Mcp-Param-*` headers (modern route only).
    async fn post_mirrored(
        &self,
        msg: &Value,
        route: &Route,
        mirrored: &[(String, String)],
    ) -> Result<reqwest::Response, UpstreamError> {
        let body = serde_json::to_vec(msg).expect("a JSON value always serialises");
        let send = self
            .client
            .post(self.url.clone())
            .headers(headers::for_route(route, msg, mirrored))
            .body(body)
            .send();
        match tokio::time::timeout(self.timeout, send).await {
            Err(_) => Err(self.timed_out()),
            Ok(Err(e)) => {
                self.health.set(false);
                Err(UpstreamError::Unreachable {
                    upstream: self.name.clone(),
                    source: e,
                })
            }
            Ok(Ok(response)) => {
                self.health.set(!response.status().is_server_error());
                Ok(response)
            }
        }
    }

    /// POSTs in the session, initializing again once if the server forgot it (404).
    pub(super) async fn post_with_renewal(
        self: &Arc<Self>,
        msg: &Value,
        route: Route,
        mirrored: &[(String, String)],
    ) -> Result<(reqwest::Response, Route), UpstreamError> {
        let response = self.post_mirrored(msg, &route, mirrored).await?;
        match &route {
            Route::Legacy(stale) if response.status() == StatusCode::NOT_FOUND => {
                let route = Route::Legacy(self.renew_session(stale).await?);
                Ok((self.post(msg, &route).await?, route))
            }
            _ => Ok((response, route)),
        }
    }

    /// POSTs a notification or response, which the server accepts with 202.
    pub(super) async fn post_accepted(
        self: &Arc<Self>,
        msg: &Value,
        route: Route,
    ) -> Result<(), UpstreamError> {
        let (response, _) = self.post_with_renewal(msg, route, &[]).await?;
        self.expect_accepted(response).await
    }

    pub(super) async fn expect_accepted(
        &self,
        response: reqwest::Response,
    ) -> Result<(), UpstreamError> {
        match self.body(response).await? {
            Body::Accepted => Ok(()),
            Body::Json(answer) => {
                Err(self.protocol_error(format!("expected 202 Accepted, got {answer}")))
            }
            Body::Stream(_) => {
                Err(self.protocol_error("expected 202 Accepted, got an event stream"))
            }
        }
    }

    /// Reads what a POST answered: nothing, one JSON message, or the start of an SSE stream.
    pub(super) async fn body(&self, response: reqwest::Response) -> Result<Body, UpstreamError> {
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            return Ok(Body::Accepted);
        }
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_stream && status.is_success() {
            return Ok(Body::Stream(response));
        }
        let bytes = match tokio::time::timeout(self.timeout, response.bytes()).await {
            Err(_) => return Err(self.timed_out()),
            Ok(Err(source)) => {
                return Err(UpstreamError::BodyRead {
                    upstream: self.name.clone(),
                    source,
                });
            }
            Ok(Ok(bytes)) => bytes,
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(msg) if jsonrpc::classify(&msg).is_ok() || is_error_without_id(&msg) => {
                Ok(Body::Json(msg))
            }
            _ if status.is_server_error() => Err(self.unavailable(format!("HTTP {status}"))),
            _ if status.is_success() => {
                Err(self.protocol_error("the body is not a JSON-RPC message"))
            }
            _ => Err(self.protocol_error(format!("HTTP {status}"))),
        }
    }

    /// The response with `id` from a JSON or SSE answer; other messages on the stream are
    /// dropped (only handshakes use this).
    pub(super) async fn single_response(
        &self,
        response: reqwest::Response,
        id: i64,
    ) -> Result<Value, UpstreamError> {
        let stream = match self.body(response).await? {
            Body::Json(msg) => return Ok(msg),
            Body::Accepted => return Err(self.protocol_error("a request was answered with 202")),
            Body::Stream(stream) => stream,
        };
        let mut messages = std::pin::pin!(sse_messages(stream, self.name.clone()));
        let find = async {
            while let Some(msg) = messages.next().await {
                if is_response(&msg) && msg.get("id").and_then(Value::as_i64) == Some(id) {
                    return Ok(msg);
                }
            }
            Err(self.protocol_error("the event stream ended without a response"))
        };
        match tokio::time::timeout(self.timeout, find).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out()),
        }
    }
}

/// An error answer whose id is `null` (the request could not be read), as some servers send
/// with HTTP 400.
fn is_error_without_id(msg: &Value) -> bool {
    msg.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        && msg.get("error").is_some_and(Value::is_object)
        && msg.get("id").is_none_or(Value::is_null)
}
