//! MCP protocol facts the gateway relies on: revisions, eras, header and `_meta` names.

/// The stateless revision (per-request `_meta`, no `initialize`).
pub const MODERN_VERSION: &str = "2026-07-28";
/// The newest revision with an `initialize` handshake; what the gateway offers legacy clients.
pub const LATEST_LEGACY_VERSION: &str = "2025-11-25";
/// Legacy revisions the gateway accepts in `initialize`.
pub const LEGACY_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Revisions answered by `server/discover`.
pub const MODERN_VERSIONS: &[&str] = &[MODERN_VERSION];

pub const HEADER_SESSION_ID: &str = "mcp-session-id";
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const HEADER_METHOD: &str = "mcp-method";
pub const HEADER_NAME: &str = "mcp-name";

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_PROGRESS_TOKEN: &str = "progressToken";

/// Methods the 2026-07-28 revision removed; a modern request for one gets 404 / -32601.
pub const REMOVED_IN_MODERN: &[&str] = &[
    "initialize",
    "notifications/initialized",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
    "notifications/roots/list_changed",
];

/// Which protocol era a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Era {
    /// `initialize` handshake, sessions (2024-11-05 … 2025-11-25).
    Legacy,
    /// Stateless, per-request `_meta` (2026-07-28).
    Modern,
}

impl Era {
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        }
    }
}

/// Methods whose `Mcp-Name` header mirrors a body field, and that field.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        m if m.starts_with("tasks/") => Some("taskId"),
        _ => None,
    }
}

/// Decodes a header value that may use the `=?base64?…?=` sentinel for non-header-safe text.
pub fn decode_header_value(raw: &str) -> Option<String> {
    use base64::Engine;
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(raw.to_owned()),
    }
}

/// Encodes a value for an MCP header, using the base64 sentinel when it is not header-safe.
pub fn encode_header_value(value: &str) -> String {
    use base64::Engine;
    let safe = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    if safe && !value.starts_with("=?base64?") {
        value.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_round_trip_through_the_base64_sentinel() {
        for v in ["add", "naïve", " padded ", "line\nbreak"] {
            assert_eq!(
                decode_header_value(&encode_header_value(v)).as_deref(),
                Some(v)
            );
        }
        assert_eq!(encode_header_value("add"), "add");
        assert!(encode_header_value("naïve").starts_with("=?base64?"));
    }
}
