//! What the gateway hands back for one client message.

use super::session::Session;
use crate::jsonrpc;
use crate::telemetry::CallRecord;
use crate::upstream::{Exchange, Upstream};
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The answer to one client message.
pub enum Reply {
    /// A complete response.
    Response(Value),
    /// A notification or a client response was taken; nothing to send back.
    Accepted,
    /// Related messages (progress, logs, server-to-client requests), then the response.
    Stream(Box<ReplyStream>),
}

/// The messages of a forwarded request on their way back to the client.
///
/// Server-to-client requests get a session-unique id (several upstreams may use the same ids);
/// a legacy `notifications/cancelled` from the client ends the stream, and dropping the stream
/// drops the upstream exchange, which cancels the request upstream.
pub struct ReplyStream {
    exchange: Exchange,
    upstream: Arc<Upstream>,
    upstream_index: usize,
    session: Option<Arc<Session>>,
    client_id: Value,
    cancelled: CancellationToken,
    record: Option<CallRecord>,
    /// Set for a modern client: the request's method, to complete the final result.
    modern_method: Option<String>,
    done: bool,
}

impl ReplyStream {
    pub(super) fn new(
        exchange: Exchange,
        upstream: Arc<Upstream>,
        upstream_index: usize,
        session: Option<Arc<Session>>,
        client_id: Value,
        record: Option<CallRecord>,
    ) -> Self {
        let cancelled = match &session {
            Some(s) => s.track(&client_id),
            None => CancellationToken::new(),
        };
        ReplyStream {
            exchange,
            upstream,
            upstream_index,
            session,
            client_id,
            cancelled,
            record,
            modern_method: None,
            done: false,
        }
    }

    /// Completes the final result with what 2026-07-28 requires (see
    /// [`super::complete_modern_result`]).
    pub(super) fn completing_modern_results(mut self, method: String) -> Self {
        self.modern_method = Some(method);
        self
    }

    /// The next message for the client; `None` once the response was sent or the request was
    /// cancelled.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if self.done {
                return None;
            }
            let message = tokio::select! {
                biased;
                _ = self.cancelled.cancelled() => {
                    self.finish("cancelled");
                    return None;
                }
                message = self.exchange.next() => message,
            };
            let Some(message) = message else {
                self.finish("upstream_closed");
                return Some(jsonrpc::error(
                    Some(self.client_id.clone()),
                    jsonrpc::code::SERVER_ERROR,
                    format!(
                        "upstream {} closed the request without answering",
                        self.upstream.name
                    ),
                ));
            };
            match jsonrpc::classify(&message) {
                Ok(jsonrpc::Kind::Response) => {
                    let mut message = message;
                    let outcome = outcome_of(&message);
                    self.finish(outcome);
                    if let Some(method) = &self.modern_method {
                        super::complete_modern_result(method, &mut message);
                    }
                    return Some(message);
                }
                Ok(jsonrpc::Kind::Request) => {
                    if let Some(m) = self.relay_server_request(message) {
                        return Some(m);
                    }
                }
                _ => return Some(message),
            }
        }
    }

    /// Whether the final response has been delivered (or the request ended otherwise).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Maps a server-to-client request's id into the session, or refuses it when the client
    /// has no session to answer on (modern clients get no server-to-client requests).
    fn relay_server_request(&mut self, mut message: Value) -> Option<Value> {
        let upstream_id = message.get("id").cloned().unwrap_or(Value::Null);
        match &self.session {
            Some(session) => {
                let id = session.map_server_request(self.upstream_index, upstream_id);
                jsonrpc::set_id(&mut message, id);
                Some(message)
            }
            None => {
                let refusal = jsonrpc::error(
                    Some(upstream_id),
                    jsonrpc::code::METHOD_NOT_FOUND,
                    "the client cannot take server-to-client requests in this protocol era",
                );
                let upstream = self.upstream.clone();
                tokio::spawn(async move {
                    let _ = upstream.respond(refusal).await;
                });
                None
            }
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        self.done = true;
        if let Some(session) = &self.session {
            session.untrack(&self.client_id);
        }
        if let Some(record) = self.record.take() {
            record.finish(outcome);
        }
    }

    /// For a legacy client that disconnected: a disconnect is not a cancellation, so let the
    /// request run to its end upstream and drop what it returns.
    pub fn drain_in_background(mut self) {
        if self.done {
            return;
        }
        tokio::spawn(async move { while self.next().await.is_some() {} });
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        if !self.done {
            self.finish("cancelled");
        }
    }
}

/// The outcome label of a final response: `ok`, `tool_error` or `error`.
pub fn outcome_of(response: &Value) -> &'static str {
    if response.get("error").is_some() {
        "error"
    } else if response.pointer("/result/isError") == Some(&Value::Bool(true)) {
        "tool_error"
    } else {
        "ok"
    }
}
