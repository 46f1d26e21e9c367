//! A `tools/call` arrives: resolve `server__tool`, validate the arguments, then run it on the
//! one path of a call ([`super::pipeline`]) or, for a client that takes tasks, as a task.

use super::catalog::{SchemaError, ToolRoute};
use super::gate::{Outcome, Progress, ToolCall};
use super::pipeline::{ReplyTo, RoutedCall, SendHooks};
use super::tasks::TaskAsk;
use super::{Caller, Gateway, Reply};
use crate::jsonrpc;
use crate::protocol::META_PROGRESS_TOKEN;
use crate::telemetry::{self, CallRecord};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A call that passed the checks, ready for its path.
pub(super) struct Accepted {
    pub routed: RoutedCall,
    /// The name the client called it by (`server__tool`).
    pub exposed: String,
    pub record: CallRecord,
    span: tracing::Span,
}

impl Gateway {
    pub(super) async fn call(&self, caller: &Caller, message: Value) -> Reply {
        let accepted = match self.accept(caller, message).await {
            Ok(accepted) => accepted,
            Err(refusal) => return refusal,
        };
        if let Some(tasks) = self.tasks.get()
            && let Some(ask) = TaskAsk::of(caller, &accepted.routed.message)
            && (matches!(ask, TaskAsk::Legacy { .. })
                || self.gate.needs_human(&accepted.routed.call))
        {
            return self.start_task(tasks, ask, accepted).await;
        }
        let token = jsonrpc::meta(&accepted.routed.message)
            .and_then(|m| m.get(META_PROGRESS_TOKEN))
            .cloned();
        let hooks = SendHooks {
            stopping: Some(self.stopping.clone()),
            ..SendHooks::default()
        };
        let reply_to = ReplyTo {
            session: caller.session.clone(),
            record: Some(accepted.record),
            span: Some(accepted.span),
        };
        let stream = accepted
            .routed
            .run(self.gate.clone(), Progress::new(token), hooks, reply_to);
        Reply::Stream(Box::new(stream))
    }

    /// Routes and checks a call: its tool, its arguments against the `inputSchema`, and the
    /// headers a modern client mirrors. A refused call gets its final answer.
    async fn accept(&self, caller: &Caller, mut message: Value) -> Result<Accepted, Reply> {
        let id = message["id"].clone();
        let Some(exposed) = jsonrpc::param_str(&message, "name").map(str::to_owned) else {
            return Err(invalid(id, "tools/call needs params.name"));
        };
        let route = self.route_or_explain(caller, &exposed, &id).await?;
        let arguments = match jsonrpc::params(&message).and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(args @ Value::Object(_)) => args.clone(),
            Some(_) => return Err(invalid(id, "params.arguments must be an object")),
        };
        let upstream = self.upstreams[route.upstream].clone();
        let span = call_span(caller, &exposed, &id);
        telemetry::continue_trace(&span, jsonrpc::meta(&message));
        let record = CallRecord::start(span.clone(), &upstream.name, &route.name);
        if let Err(refusal) = check_call(caller, &route, &exposed, &arguments) {
            return Err(refusal.answer(id, record));
        }
        let call = ToolCall {
            id: Uuid::now_v7(),
            agent: caller.agent.clone(),
            upstream: upstream.name.as_str().into(),
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
        let routed = RoutedCall {
            call,
            upstream,
            upstream_index: route.upstream,
            message,
            client,
        };
        Ok(Accepted {
            routed,
            exposed,
            record,
            span,
        })
    }

    /// The route of `exposed`, or the error that names the tools the client may have meant.
    async fn route_or_explain(
        &self,
        caller: &Caller,
        exposed: &str,
        id: &Value,
    ) -> Result<ToolRoute, Reply> {
        if let Some(route) = self.resolve_tool(caller, exposed).await {
            return Ok(route);
        }
        let meant = self.snapshot().tools_named(exposed).join(" or ");
        let hint = if meant.is_empty() {
            String::new()
        } else {
            format!("; did you mean {meant}?")
        };
        Err(invalid(
            id.clone(),
            format!("Unknown tool: {exposed}{hint}"),
        ))
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

/// Why a routed call is answered without running.
enum Refusal {
    HeaderMismatch(HeaderMismatch),
    InvalidArguments(String),
}

impl Refusal {
    fn answer(self, id: Value, record: CallRecord) -> Reply {
        match self {
            Refusal::HeaderMismatch(why) => {
                record.finish(Outcome::HeaderMismatch);
                let code = jsonrpc::code::HEADER_MISMATCH;
                Reply::Response(jsonrpc::error(Some(id), code, why.to_string()))
            }
            Refusal::InvalidArguments(text) => {
                record.finish(Outcome::InvalidArguments);
                let result = jsonrpc::tool_error_result(text);
                Reply::Response(jsonrpc::result(id, result))
            }
        }
    }
}

fn check_call(
    caller: &Caller,
    route: &ToolRoute,
    exposed: &str,
    arguments: &Value,
) -> Result<(), Refusal> {
    if let Err(why) = check_mirrored(caller, route, arguments) {
        return Err(Refusal::HeaderMismatch(why));
    }
    if let Err(why) = check_arguments(route, arguments) {
        let text = format!("Invalid arguments for tool {exposed}: {why}");
        return Err(Refusal::InvalidArguments(text));
    }
    Ok(())
}

/// A mirrored `Mcp-Param-*` header that does not say what the body says.
#[derive(Debug, thiserror::Error)]
enum HeaderMismatch {
    #[error("Mcp-Param-{header} does not match the argument {arg}")]
    Differs { header: String, arg: String },
    #[error("Mcp-Param-{header} is missing but the argument {arg} is present")]
    Missing { header: String, arg: String },
}

/// Arguments a call cannot run with.
#[derive(Debug, thiserror::Error)]
enum BadArguments<'a> {
    #[error("the tool's inputSchema cannot be used ({0}); the call is refused")]
    UnusableSchema(&'a SchemaError),
    /// Each failing location, so the model can correct itself.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
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
fn check_mirrored(
    caller: &Caller,
    route: &ToolRoute,
    arguments: &Value,
) -> Result<(), HeaderMismatch> {
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
        let (header, arg) = (header.clone(), arg.clone());
        match sent {
            Some((_, value)) if value.trim() == expected.trim() => {}
            Some(_) => return Err(HeaderMismatch::Differs { header, arg }),
            None => return Err(HeaderMismatch::Missing { header, arg }),
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
fn check_arguments<'a>(route: &'a ToolRoute, arguments: &Value) -> Result<(), BadArguments<'a>> {
    let validator = match route.validator.as_ref() {
        Ok(validator) => validator,
        Err(e) => return Err(BadArguments::UnusableSchema(e)),
    };
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
        Err(BadArguments::Invalid(problems))
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
