//! The path of one `tools/call`: resolve → validate → gate → forward.

use super::catalog::ToolRoute;
use super::reply::{Completion, Gated};
use super::seam::{CallGate, CallOutcome, Outcome, Progress, ToolCall, Verdict};
use super::tasks::TaskAsk;
use super::{Caller, Gateway, Reply, ReplyStream};
use crate::jsonrpc;
use crate::protocol::META_PROGRESS_TOKEN;
use crate::telemetry::{self, CallRecord};
use crate::upstream::{ClientContext, Exchange, Upstream};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

impl Gateway {
    pub(super) async fn call(&self, caller: &Caller, mut message: Value) -> Reply {
        let id = message["id"].clone();
        let Some(exposed) = jsonrpc::param_str(&message, "name").map(str::to_owned) else {
            return invalid(id, "tools/call needs params.name");
        };
        let Some(route) = self.resolve_tool(caller, &exposed).await else {
            let meant = self.snapshot().tools_named(&exposed).join(" or ");
            let hint = if meant.is_empty() {
                String::new()
            } else {
                format!("; did you mean {meant}?")
            };
            return invalid(id, format!("Unknown tool: {exposed}{hint}"));
        };
        let arguments = match jsonrpc::params(&message).and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(args @ Value::Object(_)) => args.clone(),
            Some(_) => return invalid(id, "params.arguments must be an object"),
        };
        let upstream_name = self.upstreams[route.upstream].name.clone();
        let span = call_span(caller, &exposed, &id);
        telemetry::continue_trace(&span, jsonrpc::meta(&message));
        let record = CallRecord::start(span.clone(), &upstream_name, &route.name);

        if let Err(why) = check_mirrored(caller, &route, &arguments) {
            record.finish(Outcome::HeaderMismatch);
            return Reply::Response(jsonrpc::error(
                Some(id),
                jsonrpc::code::HEADER_MISMATCH,
                why,
            ));
        }
        if let Err(why) = check_arguments(&route, &arguments) {
            record.finish(Outcome::InvalidArguments);
            let text = format!("Invalid arguments for tool {exposed}: {why}");
            return Reply::Response(jsonrpc::result(id, jsonrpc::tool_error_result(text)));
        }
        let call = ToolCall {
            id: Uuid::now_v7(),
            agent: caller.agent.clone(),
            upstream: upstream_name.as_str().into(),
            tool: route.name.clone(),
            arguments,
            definition: route.tool.clone(),
        };
        span.record("countersign.call_id", tracing::field::display(call.id));
        if let Some(params) = jsonrpc::params_mut(&mut message) {
            params.insert("name".into(), Value::String(route.name.clone()));
        }
        if let Some(meta) = jsonrpc::meta_mut(&mut message) {
            telemetry::inject_trace(&span, meta);
        }
        let mut client = caller.client.clone();
        client.mirrored_headers = mirror(&route, &call.arguments);
        let token = jsonrpc::meta(&message)
            .and_then(|m| m.get(META_PROGRESS_TOKEN))
            .cloned();
        if let Some(tasks) = self.tasks.get()
            && let Some(ask) = TaskAsk::of(caller, &message)
            && (matches!(ask, TaskAsk::Legacy { .. }) || self.gate.needs_human(&call))
        {
            let (index, tasks) = (route.upstream, tasks.clone());
            return self
                .start_task(&tasks, ask, call, &exposed, index, message, client, record)
                .await;
        }
        let (progress, notes) = Progress::new(token);
        let upstream = self.upstreams[route.upstream].clone();
        let waiting = gate_then_send(
            self.gate.clone(),
            call.clone(),
            progress,
            upstream.clone(),
            message,
            client,
            SendHooks {
                stopping: Some(self.stopping.clone()),
                ..SendHooks::default()
            },
        );
        let completion = Completion::new(self.gate.clone(), call);
        let gated = Gated {
            waiting: Box::pin(waiting.instrument(span)),
            notes,
            completion,
        };
        let stream = ReplyStream::gated(
            gated,
            upstream,
            route.upstream,
            caller.session.clone(),
            id,
            Some(record),
        );
        Reply::Stream(Box::new(stream))
    }

    /// Finds a tool by its exposed name, re-reading the upstreams' tool lists once on a miss
    /// (a client may call a tool it learned of elsewhere, or the list may have changed).
    async fn resolve_tool(&self, caller: &Caller, exposed: &str) -> Option<ToolRoute> {
        if let Some(route) = self.snapshot().tool(exposed) {
            return Some(route.clone());
        }
        self.refresh(super::catalog::Listing::Tools, &caller.client)
            .await;
        self.snapshot().tool(exposed).cloned()
    }
}

/// What a task adds to the path of its call.
#[derive(Default)]
pub(super) struct SendHooks {
    /// Resume the wait on this approval instead of asking the gate afresh (after a restart).
    pub resume: Option<Uuid>,
    /// Runs once the gate lets the call through and before it is sent; `false` stops it.
    pub before_send: Option<Box<dyn FnOnce() -> futures::future::BoxFuture<'static, bool> + Send>>,
    /// Cancelled when the gateway stops: a call still waiting for its gate is then answered
    /// at once (a pending approval stays pending for a retry after the restart). Tasks have
    /// none: a restarted gateway resumes them.
    pub stopping: Option<tokio_util::sync::CancellationToken>,
}

/// What a call still waiting for its gate (a human) is told when the gateway stops.
const STOPPING: &str = "Countersign is shutting down; the call was not run. An approval it waited for stays pending: retry the same call (same arguments) once the gateway is back to join it.";

/// Waits for the gate, then sends the call upstream. Resolves to the upstream exchange, or to
/// the final response (with its outcome) when the call does not go out.
pub(super) async fn gate_then_send(
    gate: Arc<dyn CallGate>,
    call: ToolCall,
    progress: Progress,
    upstream: Arc<Upstream>,
    message: Value,
    client: ClientContext,
    hooks: SendHooks,
) -> Result<(Exchange, Progress), (Value, Outcome)> {
    let id = message["id"].clone();
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
                return Err((jsonrpc::result(id, jsonrpc::tool_error_result(STOPPING)), Outcome::Shutdown));
            }
        },
        None => decision.await,
    };
    if let Verdict::Refuse(reason) = verdict {
        return Err((
            jsonrpc::result(id, jsonrpc::tool_error_result(reason)),
            Outcome::Refused,
        ));
    }
    if let Some(before_send) = hooks.before_send
        && !before_send().await
    {
        let reason = "The call was cancelled before it was sent.";
        return Err((
            jsonrpc::result(id, jsonrpc::tool_error_result(reason)),
            Outcome::Cancelled,
        ));
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

/// The header form of an argument: strings as they are, other values as JSON text.
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A modern HTTP client must mirror `x-mcp-header` arguments in `Mcp-Param-*` headers whose
/// values match the body (the body is what the gateway decides on).
fn check_mirrored(caller: &Caller, route: &ToolRoute, arguments: &Value) -> Result<(), String> {
    let Some(headers) = &caller.param_headers else {
        return Ok(());
    };
    for (header, arg) in route.mirrored.iter() {
        let Some(expected) = arguments.get(arg).and_then(header_text) else {
            continue;
        };
        let sent = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(header));
        match sent {
            Some((_, value)) if value.trim() == expected.trim() => {}
            Some(_) => {
                return Err(format!(
                    "Mcp-Param-{header} does not match the argument {arg}"
                ));
            }
            None => {
                return Err(format!(
                    "Mcp-Param-{header} is missing but the argument {arg} is present"
                ));
            }
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers the upstream expects for these arguments.
fn mirror(route: &ToolRoute, arguments: &Value) -> Vec<(String, String)> {
    route
        .mirrored
        .iter()
        .filter_map(|(header, arg)| {
            let text = arguments.get(arg).and_then(header_text)?;
            Some((
                format!("Mcp-Param-{header}"),
                crate::protocol::encode_header_value(&text),
            ))
        })
        .collect()
}

/// Checks arguments against the tool's compiled `inputSchema`; the error names each failing
/// location so the model can correct itself.
fn check_arguments(route: &ToolRoute, arguments: &Value) -> Result<(), String> {
    let validator =
        route.validator.as_ref().as_ref().map_err(|e| {
            format!("the tool's inputSchema cannot be used ({e}); the call is refused")
        })?;
    let problems: Vec<String> = validator
        .iter_errors(arguments)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn invalid(id: Value, why: impl Into<String>) -> Reply {
    Reply::Response(jsonrpc::error(Some(id), jsonrpc::code::INVALID_PARAMS, why))
}

/// The span of one call, with the MCP semantic-convention attributes. Debug level: exported
/// over OTLP when configured, logged only at debug, and free when neither wants it.
fn call_span(caller: &Caller, tool: &str, id: &Value) -> tracing::Span {
    tracing::debug_span!(
        "tools/call",
        otel.name = %format!("tools/call {tool}"),
        otel.kind = "server",
        "mcp.method.name" = "tools/call",
        "gen_ai.operation.name" = "execute_tool",
        "gen_ai.tool.name" = tool,
        "jsonrpc.request.id" = %id,
        "mcp.session.id" = caller.session.as_ref().map(|s| s.id.as_str()),
        "mcp.protocol.version" = %caller.client.protocol_version,
        "countersign.agent" = %caller.agent.id,
        "countersign.call_id" = tracing::field::Empty,
        "countersign.outcome" = tracing::field::Empty,
    )
}
