//! JSON-RPC 2.0 messages kept as raw JSON.
//!
//! The gateway forwards what it does not understand byte-for-byte in meaning: a message is a
//! `serde_json::Value` (key order preserved) and this module only offers targeted accessors and
//! constructors. Nothing here re-serialises through typed MCP models.

use serde_json::{Map, Value, json};

/// Standard JSON-RPC and MCP error codes the gateway emits.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Legacy implementation-defined range; used for "upstream unavailable" style failures.
    pub const SERVER_ERROR: i64 = -32000;
    /// Legacy "session not found" style error (no meaning in the spec beyond the range).
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// 2026-07-28: header and body disagree or a required header is missing.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: the request needs a client capability that was not declared.
    pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    /// 2026-07-28: protocol version not supported; `data.supported` lists ours.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// What kind of JSON-RPC message a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// Classifies a message, or says why it is not valid JSON-RPC 2.0.
pub fn classify(msg: &Value) -> Result<Kind, &'static str> {
    let obj = msg
        .as_object()
        .ok_or("a JSON-RPC message must be a JSON object")?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("\"jsonrpc\" must be \"2.0\"");
    }
    let id = obj.get("id");
    if let Some(id) = id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Err("\"id\" must be a string or an integer");
    }
    match (obj.get("method"), id) {
        (Some(Value::String(_)), Some(_)) => Ok(Kind::Request),
        (Some(Value::String(_)), None) => Ok(Kind::Notification),
        (Some(_), _) => Err("\"method\" must be a string"),
        (None, Some(_)) if obj.contains_key("result") ^ obj.contains_key("error") => {
            Ok(Kind::Response)
        }
        (None, Some(_)) => Err("a response needs exactly one of \"result\" or \"error\""),
        (None, None) => Err("a message needs a \"method\" or an \"id\""),
    }
}

pub fn method(msg: &Value) -> Option<&str> {
    msg.get("method").and_then(Value::as_str)
}

pub fn id(msg: &Value) -> Option<&Value> {
    msg.get("id")
}

pub fn params(msg: &Value) -> Option<&Map<String, Value>> {
    msg.get("params").and_then(Value::as_object)
}

/// `params`, created as an empty object when absent.
pub fn params_mut(msg: &mut Value) -> Option<&mut Map<String, Value>> {
    let obj = msg.as_object_mut()?;
    let params = obj
        .entry("params")
        .or_insert_with(|| Value::Object(Map::new()));
    params.as_object_mut()
}

/// `params._meta`, if present.
pub fn meta(msg: &Value) -> Option<&Map<String, Value>> {
    params(msg)?.get("_meta").and_then(Value::as_object)
}

/// `params._meta`, created when absent.
pub fn meta_mut(msg: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = params_mut(msg)?
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    meta.as_object_mut()
}

/// `params.<key>` as a string (e.g. `name`, `uri`).
pub fn param_str<'a>(msg: &'a Value, key: &str) -> Option<&'a str> {
    params(msg)?.get(key).and_then(Value::as_str)
}

pub fn set_id(msg: &mut Value, id: Value) {
    if let Some(obj) = msg.as_object_mut() {
        obj.insert("id".into(), id);
    }
}

pub fn request(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response. `id` is `null` only when the request's id could not be read.
pub fn error(id: Option<Value>, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id.unwrap_or(Value::Null),
           "error": {"code": code, "message": message.into()}})
}

pub fn error_with_data(
    id: Option<Value>,
    code: i64,
    message: impl Into<String>,
    data: Value,
) -> Value {
    let mut e = error(id, code, message);
    e["error"]["data"] = data;
    e
}

/// A `CallToolResult` with `isError: true`: a failure the model can read and act on.
pub fn tool_error_result(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": true})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_three_kinds() {
        assert_eq!(
            classify(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            Ok(Kind::Request)
        );
        assert_eq!(
            classify(&json!({"jsonrpc":"2.0","method":"x"})),
            Ok(Kind::Notification)
        );
        assert_eq!(
            classify(&json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Ok(Kind::Response)
        );
    }

    #[test]
    fn rejects_what_is_not_json_rpc() {
        assert!(classify(&json!([1])).is_err());
        assert!(classify(&json!({"id":1,"method":"ping"})).is_err());
        assert!(classify(&json!({"jsonrpc":"2.0","id":null,"method":"ping"})).is_err());
        assert!(classify(&json!({"jsonrpc":"2.0","id":1.5,"method":"ping"})).is_err());
        assert!(classify(&json!({"jsonrpc":"2.0","id":1,"result":{},"error":{}})).is_err());
        assert!(classify(&json!({"jsonrpc":"2.0","method":7})).is_err());
    }
}
