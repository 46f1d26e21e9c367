//! The headers of one request besides the client's base headers: the modern era's (mirroring
//! the body), a legacy session's, and the `Mcp-Param-*` the client's arguments asked for.

use super::Route;
use super::session::Session;
use crate::jsonrpc;
use crate::protocol;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// The protocol's header names, parsed once (a `&str` name is parsed on every insert).
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static(protocol::HEADER_PROTOCOL_VERSION);
const METHOD: HeaderName = HeaderName::from_static(protocol::HEADER_METHOD);
const NAME: HeaderName = HeaderName::from_static(protocol::HEADER_NAME);
const SESSION_ID: HeaderName = HeaderName::from_static(protocol::HEADER_SESSION_ID);

/// The headers of `msg` sent over `route`; `mirrored` (`Mcp-Param-*`) only on the modern route.
pub(super) fn for_route(route: &Route, msg: &Value, mirrored: &[(String, String)]) -> HeaderMap {
    // Room for the protocol's three headers and a few `Mcp-Param-*` without growing.
    let mut headers = HeaderMap::with_capacity(8);
    match route {
        Route::Modern => {
            add_modern_headers(&mut headers, msg);
            add_mirrored_headers(&mut headers, mirrored);
        }
        Route::Legacy(session) => add_session_headers(&mut headers, session),
        Route::Handshake => {}
    }
    headers
}

/// A legacy session's headers alone (its GET stream, its `DELETE`).
pub(super) fn for_session(session: &Session) -> HeaderMap {
    let mut headers = HeaderMap::new();
    add_session_headers(&mut headers, session);
    headers
}

/// A header value from text that [`protocol::encode_header_value`] made header-safe.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(&protocol::encode_header_value(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Adds `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` as the modern era requires.
fn add_modern_headers(headers: &mut HeaderMap, msg: &Value) {
    let version = jsonrpc::meta(msg)
        .and_then(|m| m.get(protocol::META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        .unwrap_or(protocol::MODERN_VERSION);
    headers.insert(PROTOCOL_VERSION, header_value(version));
    if let Some(method) = jsonrpc::method(msg) {
        headers.insert(METHOD, header_value(method));
        if let Some(name) =
            protocol::name_param(method).and_then(|key| jsonrpc::param_str(msg, key))
        {
            headers.insert(NAME, header_value(name));
        }
    }
}

/// Adds the `Mcp-Param-*` headers that are valid as they are (the others are left out).
fn add_mirrored_headers(headers: &mut HeaderMap, mirrored: &[(String, String)]) {
    for (name, value) in mirrored {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
}

fn add_session_headers(headers: &mut HeaderMap, session: &Session) {
    if let Some(id) = &session.id {
        headers.insert(SESSION_ID, header_value(id));
    }
    headers.insert(PROTOCOL_VERSION, header_value(&session.version));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_headers_mirror_the_body() {
        let msg = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "naïve", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
        let mut headers = HeaderMap::new();
        add_modern_headers(&mut headers, &msg);
        assert_eq!(headers[protocol::HEADER_PROTOCOL_VERSION], "2026-07-28");
        assert_eq!(headers[protocol::HEADER_METHOD], "tools/call");
        let name = headers[protocol::HEADER_NAME].to_str().unwrap();
        assert_eq!(
            protocol::decode_header_value(name).as_deref(),
            Some("naïve")
        );

        let list = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let mut headers = HeaderMap::new();
        add_modern_headers(&mut headers, &list);
        assert!(headers.get(protocol::HEADER_NAME).is_none());
    }
}
