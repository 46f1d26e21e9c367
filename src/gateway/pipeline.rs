//! The one path of a validated `tools/call`, whether its client waits on the answer or a task
//! runs it: wait for the gate (the policy, perhaps humans), then send the call upstream and
//! stream its messages back, telling the gate how it ended.
//!
//! The path is lazy: [`RoutedCall::run`] returns a [`ReplyStream`] whose first poll starts
//! the wait, so a client that goes away before reading withdraws the call (dropping the
//! stream withdraws the approval request, or cancels the call upstream).

use super::ReplyStream;
use super::gate::{CallGate, CallOutcome, Clearance, Outcome, Progress, ToolCall};
use super::reply::{Completion, Gated};
use super::session::Session;
use crate::jsonrpc;
use crate::telemetry::CallRecord;
use crate::upstream::{ClientContext, Exchange, Upstream};
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// A call routed to its upstream, with arguments that match the tool's `inputSchema`: what
/// the path needs to run it (and what a task stores to run it again after a restart).
pub(super) struct RoutedCall {
    pub call: ToolCall,
    pub upstream: Arc<Upstream>,
    /// The upstream's place in the gateway's list (for relayed server-to-client requests).
    pub upstream_index: usize,
    /// The request as it goes upstream (the tool's own name, trace context injected).
    pub message: Value,
    pub client: ClientContext,
}

/// What a task adds to the path of its call.
#[derive(Default)]
pub(super) struct SendHooks {
    /// Resume the wait on this approval instead of asking the gate afresh (after a restart).
    pub resume: Option<Uuid>,
    /// Runs once the gate lets the call through and before it is sent; `false` stops it.
    pub before_send: Option<Box<dyn FnOnce() -> BoxFuture<'static, bool> + Send>>,
    /// Cancelled when the gateway stops: a call still waiting for its gate is then answered
    /// at once (a pending approval stays pending for a retry after the restart). Tasks have
    /// none: a restarted gateway resumes them.
    pub stopping: Option<CancellationToken>,
}

/// Who hears the call's messages, and what records its end.
#[derive(Default)]
pub(super) struct ReplyTo {
    /// The client's session, which tracks its open requests (none for a task).
    pub session: Option<Arc<Session>>,
    /// The call's metrics and trace record.
    pub record: Option<CallRecord>,
    /// The call's span: the wait for the gate runs inside it.
    pub span: Option<tracing::Span>,
}

/// What a call still waiting for its gate (a human) is told when the gateway stops.
const STOPPING: &str = "Countersign is shutting down; the call was not run. An approval it waited for stays pending: retry the same call (same arguments) once the gateway is back to join it.";

impl RoutedCall {
    /// The call's path: `progress` reports the gate's wait to `notes`, the returned stream
    /// carries every message back, and the gate hears how a forwarded call ended.
    pub(super) fn run(
        self,
        gate: Arc<dyn CallGate>,
        (progress, notes): (Progress, Option<mpsc::Receiver<Value>>),
        hooks: SendHooks,
        reply_to: ReplyTo,
    ) -> ReplyStream {
        let RoutedCall {
            call,
            upstream,
            upstream_index,
            message,
            client,
        } = self;
        let request_id = message["id"].clone();
        let completion = Completion::new(gate.clone(), call.clone());
        let waiting = gate_then_send(
            gate,
            call,
            progress,
            upstream.clone(),
            message,
            client,
            hooks,
        );
        let waiting = match reply_to.span {
            Some(span) => Box::pin(waiting.instrument(span)) as super::reply::Waiting,
            None => Box::pin(waiting),
        };
        let gated = Gated {
            waiting,
            notes,
            completion,
        };
        ReplyStream::gated(
            gated,
            upstream,
            upstream_index,
            reply_to.session,
            request_id,
            reply_to.record,
        )
    }
}

/// Waits for the gate, then sends the call upstream. Resolves to the upstream exchange, or to
/// the final response (with its outcome) when the call does not go out.
async fn gate_then_send(
    gate: Arc<dyn CallGate>,
    call: ToolCall,
    progress: Progress,
    upstream: Arc<Upstream>,
    message: Value,
    client: ClientContext,
    hooks: SendHooks,
) -> Result<(Exchange, Progress), (Value, Outcome)> {
    let id = message["id"].clone();
    let refuse = |reason: &str, outcome| {
        let result = jsonrpc::tool_error_result(reason);
        Err((jsonrpc::result(id.clone(), result), outcome))
    };
    let decision = async {
        match hooks.resume {
            Some(approval) => gate.resume(&call, approval, &progress).await,
            None => gate.check(&call, &progress).await,
        }
    };
    let verdict = match &hooks.stopping {
        Some(stopping) => tokio::select! {
            biased;
            verdict = decision => verdict,
            _ = stopping.cancelled() => {
                tracing::info!(call = %call.id, "gateway stopping: a call waiting for its gate is answered");
                return refuse(STOPPING, Outcome::Shutdown);
            }
        },
        None => decision.await,
    };
    if let Clearance::Refuse(reason) = verdict {
        return refuse(&reason, Outcome::Refused);
    }
    if let Some(before_send) = hooks.before_send
        && !before_send().await
    {
        return refuse(
            "The call was cancelled before it was sent.",
            Outcome::Cancelled,
        );
    }
    let started = Instant::now();
    match upstream.request(message, &client).await {
        Ok(exchange) => Ok((exchange, progress)),
        Err(e) => {
            let outcome = CallOutcome {
                response: None,
                outcome: Outcome::UpstreamUnavailable,
                tool_time: started.elapsed(),
                total_time: call.age(),
            };
            gate.finished(&call, outcome).await;
            let error = jsonrpc::error(Some(id), jsonrpc::code::SERVER_ERROR, e.to_string());
            Err((error, Outcome::UpstreamUnavailable))
        }
    }
}
