//! What the gateway hands back for one client message.

use super::gate::{CallGate, CallOutcome, Outcome, Progress, ToolCall};
use super::session::Session;
use crate::jsonrpc;
use crate::telemetry::CallRecord;
use crate::upstream::{Exchange, Upstream};
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
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

/// The messages of a request on their way back to the client.
///
/// A `tools/call` may first wait on its gate (a human approval), sending the gate's progress;
/// then its upstream exchange follows. Server-to-client requests get a session-unique id
/// (several upstreams may use the same ids); a legacy `notifications/cancelled` from the client
/// ends the stream, and dropping the stream drops the gate's wait or the upstream exchange,
/// which cancels the request upstream.
pub struct ReplyStream {
    phase: Phase,
    /// The gate's progress while the call waits.
    waiting_notes: Option<mpsc::Receiver<Value>>,
    /// Notifications reported while waiting; upstream progress is offset past them.
    progress_offset: u64,
    /// Who to tell how a forwarded call ended.
    completion: Option<Completion>,
    /// The outcome when the call never went out (refused, upstream unavailable).
    forced_outcome: Option<Outcome>,
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
        let phase = Phase::Forwarded(Box::new(exchange));
        let mut stream = Self::start(
            phase,
            None,
            upstream,
            upstream_index,
            session,
            (client_id, record),
        );
        stream.forwarded();
        stream
    }

    /// A call that first waits on its gate (see [`Gated`]).
    pub(super) fn gated(
        gated: Gated,
        upstream: Arc<Upstream>,
        upstream_index: usize,
        session: Option<Arc<Session>>,
        client_id: Value,
        record: Option<CallRecord>,
    ) -> Self {
        let Gated {
            waiting,
            notes,
            completion,
        } = gated;
        let mut stream = Self::start(
            Phase::Waiting(waiting),
            Some(completion),
            upstream,
            upstream_index,
            session,
            (client_id, record),
        );
        stream.waiting_notes = notes;
        stream
    }

    fn start(
        phase: Phase,
        completion: Option<Completion>,
        upstream: Arc<Upstream>,
        upstream_index: usize,
        session: Option<Arc<Session>>,
        (client_id, record): (Value, Option<CallRecord>),
    ) -> Self {
        let cancelled = match &session {
            Some(s) => s.track(&client_id),
            None => CancellationToken::new(),
        };
        ReplyStream {
            phase,
            waiting_notes: None,
            progress_offset: 0,
            completion,
            forced_outcome: None,
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
            let message = match &mut self.phase {
                Phase::Waiting(waiting) => {
                    let notes = self.waiting_notes.as_mut();
                    tokio::select! {
                        biased;
                        _ = self.cancelled.cancelled() => None,
                        Some(note) = async { notes?.recv().await } => return Some(note),
                        waited = waiting => {
                            self.waiting_notes = None;
                            match waited {
                                Ok((exchange, progress)) => {
                                    self.progress_offset = progress.count();
                                    self.forwarded();
                                    self.phase = Phase::Forwarded(Box::new(exchange));
                                    continue;
                                }
                                Err((response, outcome)) => {
                                    self.forced_outcome = Some(outcome);
                                    Some(response)
                                }
                            }
                        }
                    }
                }
                Phase::Forwarded(exchange) => tokio::select! {
                    biased;
                    _ = self.cancelled.cancelled() => None,
                    message = exchange.next() => Some(message.unwrap_or(Value::Null)),
                },
            };
            let message = message.map(|m| if m.is_null() { self.closed_error() } else { m });
            let Some(message) = message else {
                self.finish(Outcome::Cancelled, None);
                return None;
            };
            match jsonrpc::classify(&message) {
                Ok(jsonrpc::Kind::Response) => return Some(self.final_response(message)),
                Ok(jsonrpc::Kind::Request) => {
                    if let Some(m) = self.relay_server_request(message) {
                        return Some(m);
                    }
                }
                _ => return Some(self.offset_progress(message)),
            }
        }
    }

    fn closed_error(&self) -> Value {
        jsonrpc::error(
            Some(self.client_id.clone()),
            jsonrpc::code::SERVER_ERROR,
            format!(
                "upstream {} closed the request without answering",
                self.upstream.name
            ),
        )
    }

    fn final_response(&mut self, mut message: Value) -> Value {
        let outcome = self.forced_outcome.unwrap_or_else(|| Outcome::of(&message));
        self.finish(outcome, Some(&message));
        if let Some(method) = &self.modern_method {
            super::complete_modern_result(method, &mut message);
        }
        message
    }

    /// Keeps the client's progress increasing after the gate's own notifications.
    fn offset_progress(&self, mut message: Value) -> Value {
        if self.progress_offset > 0 && jsonrpc::method(&message) == Some("notifications/progress") {
            let offset = self.progress_offset as f64;
            for key in ["progress", "total"] {
                if let Some(v) = message.pointer_mut(&format!("/params/{key}"))
                    && let Some(n) = v.as_f64()
                {
                    *v = serde_json::json!(n + offset);
                }
            }
        }
        message
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

    /// The call went upstream: the tool's own time starts now.
    fn forwarded(&mut self) {
        if let Some(record) = &mut self.record {
            record.forwarded();
        }
        if let Some(completion) = &mut self.completion {
            completion.forwarded = Some(Instant::now());
        }
    }

    fn finish(&mut self, outcome: Outcome, response: Option<&Value>) {
        self.done = true;
        if let Some(session) = &self.session {
            session.untrack(&self.client_id);
        }
        if let Some(record) = self.record.take() {
            record.finish(outcome);
        }
        let forwarded = matches!(self.phase, Phase::Forwarded(_));
        match self.completion.take() {
            Some(completion) if forwarded => completion.report(outcome, response.cloned()),
            Some(completion) if outcome == Outcome::Cancelled => completion.withdraw(),
            _ => {}
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
            self.finish(Outcome::Cancelled, None);
        }
    }
}

/// Where a stream's messages come from.
enum Phase {
    /// The gate is deciding; resolves to the upstream exchange or to the final response.
    Waiting(Waiting),
    Forwarded(Box<Exchange>),
}

/// What a gated call starts with: `waiting` resolves to the upstream exchange, or to the final
/// response when the gate refused or the upstream could not be reached; `notes` carries the
/// gate's progress meanwhile; `completion` hears how a forwarded call ended.
pub struct Gated {
    pub waiting: Waiting,
    pub notes: Option<mpsc::Receiver<Value>>,
    pub completion: Completion,
}

/// A call waiting on its gate, then on the upstream to accept it.
pub type Waiting = BoxFuture<'static, Result<(Exchange, Progress), (Value, Outcome)>>;

/// Tells the gate how a forwarded call ended.
pub struct Completion {
    pub gate: Arc<dyn CallGate>,
    pub call: ToolCall,
    /// When the call went upstream, once it has.
    pub forwarded: Option<Instant>,
}

impl Completion {
    pub fn new(gate: Arc<dyn CallGate>, call: ToolCall) -> Self {
        Completion {
            gate,
            call,
            forwarded: None,
        }
    }
}

impl Completion {
    /// The client cancelled while the gate was still deciding.
    fn withdraw(self) {
        tokio::spawn(async move { self.gate.withdrawn(&self.call).await });
    }

    fn report(self, outcome: Outcome, response: Option<Value>) {
        let tool_time = self.forwarded.map(|at| at.elapsed()).unwrap_or_default();
        let total_time = self.call.age();
        tokio::spawn(async move {
            let outcome = CallOutcome {
                response: response.as_ref(),
                outcome,
                tool_time,
                total_time,
            };
            self.gate.finished(&self.call, outcome).await;
        });
    }
}
