//! Routing of everything but `tools/call` and the listings: by prompt name, by resource URI,
//! or to the first (default) upstream.

use super::{Caller, Gateway, Reply, ReplyStream};
use crate::jsonrpc;
use serde_json::Value;

impl Gateway {
    /// Forwards a request to the upstream that owns what it names, with namespaced names
    /// rewritten to the upstream's own.
    pub(super) async fn route(&self, caller: &Caller, mut message: Value) -> Reply {
        let method = jsonrpc::method(&message).unwrap_or_default().to_owned();
        let target = match method.as_str() {
            "prompts/get" => self.route_prompt(&mut message, "/params/name"),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.route_resource(jsonrpc::param_str(&message, "uri"))
            }
            "completion/complete" => self.route_completion(&mut message),
            "logging/setLevel" => return self.set_level(caller, message).await,
            _ => Ok(0),
        };
        match target {
            Ok(upstream) => self.forward(caller, upstream, message, None).await,
            Err(why) => Reply::Response(jsonrpc::error(
                message.get("id").cloned(),
                jsonrpc::code::INVALID_PARAMS,
                why,
            )),
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
                    record.finish("upstream_unavailable");
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
    fn route_prompt(&self, message: &mut Value, pointer: &str) -> Result<usize, String> {
        let exposed = message
            .pointer(pointer)
            .and_then(Value::as_str)
            .ok_or("missing prompt name")?;
        let snapshot = self.snapshot();
        let (upstream, name) = snapshot
            .prompt(exposed)
            .cloned()
            .ok_or_else(|| format!("unknown prompt: {exposed}"))?;
        *message.pointer_mut(pointer).expect("checked above") = Value::String(name);
        Ok(upstream)
    }

    fn route_resource(&self, uri: Option<&str>) -> Result<usize, String> {
        let uri = uri.ok_or("missing resource uri")?;
        Ok(self
            .snapshot()
            .resource(uri)
            .unwrap_or_else(|| self.first_offering("resources")))
    }

    fn route_completion(&self, message: &mut Value) -> Result<usize, String> {
        match message.pointer("/params/ref/type").and_then(Value::as_str) {
            Some("ref/prompt") => self.route_prompt(message, "/params/ref/name"),
            Some("ref/resource") => {
                self.route_resource(message.pointer("/params/ref/uri").and_then(Value::as_str))
            }
            _ => Err("completion needs a ref of type ref/prompt or ref/resource".into()),
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
