//! A gateway reply as an HTTP response: one JSON body, or an SSE stream of the related
//! messages and the response; and what happens to the reply when the client goes away.

use super::json_response;
use crate::gateway::{Reply, ReplyStream};
use crate::jsonrpc::code;
use crate::protocol::Era;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use serde_json::Value;
use std::convert::Infallible;
use std::time::Duration;

/// How long a reply may stay quiet before it is sent as SSE rather than one JSON body.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_millis(500);

/// Turns a gateway reply into an HTTP response: JSON when the answer is complete soon (or the
/// client takes no SSE), else an SSE stream of the related messages and the response. A legacy
/// call still quiet after [`FIRST_MESSAGE_WAIT`] (held for approval) gets its SSE stream at
/// once, so keep-alive comments flow while it waits.
pub(super) async fn respond(reply: Reply, sse: bool, era: Era) -> Response {
    match reply {
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Response(message) => json_response(status_of(&message, era), &message),
        Reply::Stream(stream) => {
            // Guarded from here on: if the client goes away, the era decides what that means.
            let guard = DrainGuard {
                stream: Some(*stream),
                era,
            };
            respond_streamed(guard, sse).await
        }
    }
}

async fn respond_streamed(mut guard: DrainGuard, sse: bool) -> Response {
    let era = guard.era;
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
    sse(futures::stream::iter(first).chain(rest))
}

/// An SSE response of JSON-RPC messages, with keep-alive comments and no proxy buffering.
pub(super) fn sse(messages: impl Stream<Item = Value> + Send + 'static) -> Response {
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
