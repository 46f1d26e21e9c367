//! The JSON-RPC messages the gateway writes to its upstreams on its own (handshakes,
//! cancellations, the modern `_meta` added when bridging a legacy client), and the classes of
//! method that decide where a message goes.

use super::ClientContext;
use crate::jsonrpc;
use crate::protocol::{self, META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION};
use serde_json::{Value, json};

/// A response: no `method`, an `id`.
pub(super) fn is_response(msg: &Value) -> bool {
    msg.get("method").is_none() && msg.get("id").is_some()
}

/// Notifications about the upstream as a whole, never about one request.
pub(super) fn is_session_event(method: &str) -> bool {
    method.ends_with("/list_changed") || method == "notifications/resources/updated"
}

/// Client notifications the gateway answers for itself and never forwards: the gateway owns
/// its upstream session (`initialized`), and cancels by dropping the [`super::Exchange`].
pub(super) fn is_gateway_owned(method: &str) -> bool {
    matches!(
        method,
        "notifications/initialized" | "notifications/cancelled"
    )
}

/// Adds the `_meta` a modern server requires (protocol version, client capabilities) when the
/// request lacks it, e.g. because it comes from a legacy client.
pub(super) fn add_modern_meta(request: &mut Value, client: &ClientContext) {
    let Some(meta) = jsonrpc::meta_mut(request) else {
        return;
    };
    meta.entry(META_PROTOCOL_VERSION)
        .or_insert_with(|| protocol::MODERN_VERSION.into());
    meta.entry(META_CLIENT_CAPABILITIES)
        .or_insert_with(|| client.capabilities.clone());
}

/// The gateway's own `clientInfo`.
fn client_info() -> Value {
    json!({"name": "countersign", "version": env!("CARGO_PKG_VERSION")})
}

/// A modern `server/discover` request with the gateway's own `_meta`.
pub(super) fn discover_request() -> Value {
    let meta = json!({
        META_PROTOCOL_VERSION: protocol::MODERN_VERSION,
        META_CLIENT_CAPABILITIES: {},
        protocol::META_CLIENT_INFO: client_info(),
    });
    jsonrpc::request(0.into(), "server/discover", json!({"_meta": meta}))
}

/// A legacy `initialize` request declaring what the gateway can relay to its clients.
pub(super) fn initialize_request() -> Value {
    let params = json!({
        "protocolVersion": protocol::LATEST_LEGACY_VERSION,
        "capabilities": {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": true}},
        "clientInfo": client_info(),
    });
    jsonrpc::request(0.into(), "initialize", params)
}

/// A `notifications/cancelled` for the request the upstream knows as `upstream_id`.
pub(super) fn cancelled_notification(upstream_id: i64, reason: &str) -> Value {
    jsonrpc::notification(
        "notifications/cancelled",
        json!({"requestId": upstream_id, "reason": reason}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_meta_is_added_only_when_missing() {
        let client = ClientContext {
            era: protocol::Era::Legacy,
            protocol_version: "2025-11-25".into(),
            capabilities: json!({"sampling": {}}),
            mirrored_headers: Vec::new(),
        };
        let mut req = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
        add_modern_meta(&mut req, &client);
        assert_eq!(req["params"]["_meta"][META_PROTOCOL_VERSION], "2026-07-28");
        assert_eq!(
            req["params"]["_meta"][META_CLIENT_CAPABILITIES],
            json!({"sampling": {}})
        );

        let mut own = json!({"jsonrpc":"2.0","id":1,"method":"tools/list",
                             "params":{"_meta":{META_CLIENT_CAPABILITIES: {"roots": {}}}}});
        add_modern_meta(&mut own, &client);
        assert_eq!(
            own["params"]["_meta"][META_CLIENT_CAPABILITIES],
            json!({"roots": {}})
        );
    }
}
