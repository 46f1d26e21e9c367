//! Routing of everything but `tools/call` and the listings: by prompt name, by resource URI,
//! or to the first (default) upstream.

use super::admission::Admission;
use super::{Caller, Gateway, Reply, ReplyStream};
use crate::jsonrpc;
use serde_json::Value;

impl Gateway {
    /// Forwards a request to the upstream that owns what it names, with namespaced names
    /// rewritten to the upstream's own. Methods outside MCP pass only where configured, and
    /// some requests are recorded first (see [`super::admission`]).
    pub(super) async fn route(&self, caller: &Caller, mut message: Value) -> Reply {
        let method = jsonrpc::method(&message).unwrap_or_default().to_owned();
        let id = message.get("id").cloned();
        let admission = self.admit_method(&method);
        let upstream = match admission {
            Admission::Refused => {
                return Reply::Response(jsonrpc::error(
                    id,
                    jsonrpc::code::METHOD_NOT_FOUND,
                    format!(
                        "Method not found: {method} (a method outside MCP passes only to an upstream that lists it in pass_methods)"
                    ),
                ));
            }
            Admission::Passed(upstream) => upstream,
            Admission::Mcp if method == "logging/setLevel" => {
                return self.set_level(caller, message).await;
            }
            Admission::Mcp => match self.route_mcp(&method, &mut message) {
                Ok(upstream) => upstream,
                Err(why) => {
                    return Reply::Response(jsonrpc::error(
                        id,
                        jsonrpc::code::INVALID_PARAMS,
                        why.to_string(),
                    ));
                }
            },
        };
        if Gateway::is_recorded(&method, &admission)
            && let Err(why) = self.record_request(caller, upstream, &message).await
        {
            tracing::error!(%method, error = %why, "refusing a request: cannot record it");
            return Reply::Response(jsonrpc::error(
                id,
                jsonrpc::code::SERVER_ERROR,
                format!("Countersign could not record this request ({why}); it was not sent."),
            ));
        }
        self.forward(caller, upstream, message, None).await
    }

    /// The upstream an MCP request goes to, by the prompt or resource it names; the first
    /// upstream when it names none.
    fn route_mcp(&self, method: &str, message: &mut Value) -> Result<usize, Unroutable> {
        match method {
            "prompts/get" => self.route_prompt(message, "/params/name"),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.route_resource(jsonrpc::param_str(message, "uri"))
            }
            "completion/complete" => self.route_completion(message),
            _ => Ok(0),
        }
    }

    /// Sends a request to one upstream and streams back what it answers.
    pub(super) async fn forward(
        &self,
        caller: &Caller,
        upstream: usize,
        message: Value,
        record: Option<crate::telemetry::CallRecord>,
    ) -> Reply {
        let id = message["id"].clone();
        let up = self.upstreams[upstream].clone();
        match up.request(message, &caller.client).await {
            Ok(exchange) => Reply::Stream(Box::new(ReplyStream::new(
                exchange,
                up,
                upstream,
                caller.session.clone(),
                id,
                record,
            ))),
            Err(e) => {
                if let Some(record) = record {
                    record.finish(crate::call::Outcome::UpstreamUnavailable);
                }
                Reply::Response(jsonrpc::error(
                    Some(id),
                    jsonrpc::code::SERVER_ERROR,
                    e.to_string(),
                ))
            }
        }
    }

    /// Resolves the prompt named at `pointer` and rewrites it to the upstream's name.
    fn route_prompt(&self, message: &mut Value, pointer: &str) -> Result<usize, Unroutable> {
        let exposed = message
            .pointer(pointer)
            .and_then(Value::as_str)
            .ok_or(Unroutable::MissingPromptName)?;
        let snapshot = self.snapshot();
        let (upstream, name) = snapshot
            .prompt(exposed)
            .cloned()
            .ok_or_else(|| Unroutable::UnknownPrompt(exposed.to_owned()))?;
        *message.pointer_mut(pointer).expect("checked above") = Value::String(name);
        Ok(upstream)
    }

    fn route_resource(&self, uri: Option<&str>) -> Result<usize, Unroutable> {
        let uri = uri.ok_or(Unroutable::MissingResourceUri)?;
        Ok(self
            .snapshot()
            .resource(uri)
            .unwrap_or_else(|| self.first_offering("resources")))
    }

    fn route_completion(&self, message: &mut Value) -> Result<usize, Unroutable> {
        match message.pointer("/params/ref/type").and_then(Value::as_str) {
            Some("ref/prompt") => self.route_prompt(message, "/params/ref/name"),
            Some("ref/resource") => {
                self.route_resource(message.pointer("/params/ref/uri").and_then(Value::as_str))
            }
            _ => Err(Unroutable::CompletionRef),
        }
    }

    /// The first upstream whose capabilities include `key` (the first upstream if none says so).
    fn first_offering(&self, key: &str) -> usize {
        self.upstreams
            .iter()
            .position(|u| u.capabilities().get(key).is_some())
            .unwrap_or(0)
    }

    /// `logging/setLevel` applies to every upstream that logs; the first failure is reported.
    async fn set_level(&self, caller: &Caller, message: Value) -> Reply {
        let id = message["id"].clone();
        let mut failure = None;
        for up in self
            .upstreams
            .iter()
            .filter(|u| u.capabilities().get("logging").is_some())
        {
            let response = match up.request(message.clone(), &caller.client).await {
                Ok(exchange) => exchange.response().await,
                Err(e) => {
                    jsonrpc::error(Some(id.clone()), jsonrpc::code::SERVER_ERROR, e.to_string())
                }
            };
            if response.get("error").is_some() {
                failure.get_or_insert(response);
            }
        }
        Reply::Response(failure.unwrap_or_else(|| jsonrpc::result(id, serde_json::json!({}))))
    }
}

/// Why a request names nothing an upstream offers.
#[derive(Debug, thiserror::Error)]
enum Unroutable {
    #[error("missing prompt name")]
    MissingPromptName,
    #[error("unknown prompt: {0}")]
    UnknownPrompt(String),
    #[error("missing resource uri")]
    MissingResourceUri,
    #[error("completion needs a ref of type ref/prompt or ref/resource")]
    CompletionRef,
}
