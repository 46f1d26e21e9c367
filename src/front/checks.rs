//! Request checks at the HTTP edge: Origin and Host (DNS rebinding), and the 2026-07-28
//! header/body agreement rules.

use crate::jsonrpc::{self, code};
use crate::protocol::{self, HEADER_METHOD, HEADER_NAME, HEADER_PROTOCOL_VERSION};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

/// A refused request: the HTTP status and the JSON-RPC error to send.
#[derive(Debug)]
pub struct Rejection {
    pub status: StatusCode,
    pub body: Value,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<&'static str>,
}

impl Rejection {
    pub fn new(
        status: StatusCode,
        id: Option<Value>,
        code: i64,
        message: impl Into<String>,
    ) -> Self {
        Rejection {
            status,
            body: jsonrpc::error(id, code, message),
            challenge: None,
        }
    }
}

/// Which browser origins and host names may reach the gateway.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// Origins allowed besides loopback ones (exact `scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// When the listener is on loopback, only loopback host names are accepted in `Host`.
    pub loopback_only: bool,
}

impl OriginPolicy {
    /// 403 for a foreign `Origin`, 421-style 403 for a foreign `Host` on a loopback listener.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            let allowed = self.allowed_origins.iter().any(|o| o == origin)
                || (self.loopback_only && origin_is_loopback(origin));
            if !allowed {
                return Err(forbidden(format!("origin {origin} is not allowed")));
            }
        }
        if self.loopback_only
            && let Some(host) = headers.get(header::HOST)
        {
            let host = host.to_str().unwrap_or_default();
            if !is_loopback_name(strip_port(host)) {
                return Err(forbidden(format!("host {host} is not allowed")));
            }
        }
        Ok(())
    }
}

fn forbidden(message: String) -> Rejection {
    Rejection::new(StatusCode::FORBIDDEN, None, code::INVALID_REQUEST, message)
}

fn origin_is_loopback(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    is_loopback_name(strip_port(rest))
}

fn strip_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn is_loopback_name(host: &str) -> bool {
    matches!(host, "localhost" | "[::1]")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks a 2026-07-28 request: `_meta` present and supported, and `MCP-Protocol-Version`,
/// `Mcp-Method` and `Mcp-Name` agreeing with the body. The body is what policy decides on; the
/// headers only have to match it.
pub fn modern_request(headers: &HeaderMap, message: &Value) -> Result<(), Rejection> {
    let request = ModernRequest {
        headers,
        message,
        meta: jsonrpc::meta(message),
    };
    let version = request.version()?;
    request.supported(version)?;
    let method = jsonrpc::method(message).unwrap_or_default();
    request.method_header(method)?;
    request.name_header(method)?;
    request.capabilities()?;
    request.not_removed(method, version)
}

/// A 2026-07-28 request being checked, step by step.
struct ModernRequest<'a> {
    headers: &'a HeaderMap,
    message: &'a Value,
    meta: Option<&'a serde_json::Map<String, Value>>,
}

impl<'a> ModernRequest<'a> {
    fn bad(&self, code: i64, message: impl Into<String>) -> Rejection {
        let id = self.message.get("id").cloned();
        Rejection::new(StatusCode::BAD_REQUEST, id, code, message)
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        header_str(self.headers, name)
    }

    /// The body's protocol version, which the `MCP-Protocol-Version` header must repeat.
    fn version(&self) -> Result<&'a str, Rejection> {
        let Some(version) = self
            .meta
            .and_then(|m| m.get(protocol::META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
        else {
            return Err(self.bad(
                code::INVALID_PARAMS,
                format!(
                    "params._meta is missing \"{}\"",
                    protocol::META_PROTOCOL_VERSION
                ),
            ));
        };
        match self.header(HEADER_PROTOCOL_VERSION) {
            Some(h) if h == version => Ok(version),
            Some(h) => Err(self.bad(
                code::HEADER_MISMATCH,
                format!("MCP-Protocol-Version header {h} does not match the body's {version}"),
            )),
            None => Err(self.bad(
                code::HEADER_MISMATCH,
                "the MCP-Protocol-Version header is required",
            )),
        }
    }

    /// A version this gateway speaks; the error lists the ones it does.
    fn supported(&self, version: &str) -> Result<(), Rejection> {
        if protocol::MODERN_VERSIONS.contains(&version) {
            return Ok(());
        }
        let mut r = self.bad(
            code::UNSUPPORTED_PROTOCOL_VERSION,
            format!("protocol version {version} is not supported"),
        );
        r.body["error"]["data"] =
            json!({"supported": protocol::MODERN_VERSIONS, "requested": version});
        Err(r)
    }

    /// `Mcp-Method` repeats the body's method.
    fn method_header(&self, method: &str) -> Result<(), Rejection> {
        match self.header(HEADER_METHOD) {
            Some(h) if h == method => Ok(()),
            Some(h) => Err(self.bad(
                code::HEADER_MISMATCH,
                format!("Mcp-Method header {h} does not match the body's method {method}"),
            )),
            None => Err(self.bad(code::HEADER_MISMATCH, "the Mcp-Method header is required")),
        }
    }

    /// For a method that names a tool, prompt or resource, `Mcp-Name` repeats the name.
    fn name_header(&self, method: &str) -> Result<(), Rejection> {
        let Some(field) = protocol::name_param(method) else {
            return Ok(());
        };
        let body = jsonrpc::param_str(self.message, field).unwrap_or_default();
        let header = self
            .header(HEADER_NAME)
            .and_then(protocol::decode_header_value);
        match header {
            Some(h) if h == body => Ok(()),
            Some(_) => Err(self.bad(
                code::HEADER_MISMATCH,
                format!("Mcp-Name header does not match the body's {field}"),
            )),
            None => Err(self.bad(
                code::HEADER_MISMATCH,
                format!("the Mcp-Name header is required for {method}"),
            )),
        }
    }

    /// A request (not a notification) says what the client can do.
    fn capabilities(&self) -> Result<(), Rejection> {
        let missing = self
            .meta
            .and_then(|m| m.get(protocol::META_CLIENT_CAPABILITIES))
            .is_none();
        if self.message.get("id").is_some() && missing {
            return Err(self.bad(
                code::INVALID_PARAMS,
                format!(
                    "params._meta is missing \"{}\"",
                    protocol::META_CLIENT_CAPABILITIES
                ),
            ));
        }
        Ok(())
    }

    /// Not a method the modern era dropped.
    fn not_removed(&self, method: &str, version: &str) -> Result<(), Rejection> {
        if protocol::REMOVED_IN_MODERN.contains(&method) {
            return Err(Rejection::new(
                StatusCode::NOT_FOUND,
                self.message.get("id").cloned(),
                code::METHOD_NOT_FOUND,
                format!("{method} is not part of protocol {version}"),
            ));
        }
        Ok(())
    }
}

/// The request's `Mcp-Param-*` headers: lowercased name after the prefix, decoded value. A
/// value that is not valid text or valid base64 is refused (400, `-32020`).
pub fn param_headers(
    headers: &HeaderMap,
    message: &Value,
) -> Result<Vec<(String, String)>, Rejection> {
    let mut params = Vec::new();
    for (name, value) in headers {
        let Some(param) = name.as_str().strip_prefix("mcp-param-") else {
            continue;
        };
        let decoded = value.to_str().ok().and_then(protocol::decode_header_value);
        let Some(decoded) = decoded else {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                message.get("id").cloned(),
                code::HEADER_MISMATCH,
                format!("Mcp-Param-{param} is not valid text or base64"),
            ));
        };
        params.push((param.to_owned(), decoded));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn call(name: &str) -> Value {
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":{},
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}})
    }

    const GOOD: &[(&str, &str)] = &[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "add"),
    ];

    #[test]
    fn matching_headers_pass() {
        assert!(modern_request(&headers(GOOD), &call("add")).is_ok());
    }

    #[test]
    fn a_name_mismatch_is_400_header_mismatch() {
        let e = modern_request(&headers(GOOD), &call("other")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body["error"]["code"], code::HEADER_MISMATCH);
    }

    #[test]
    fn a_missing_method_header_is_refused() {
        let e = modern_request(&headers(&GOOD[..1]), &call("add")).unwrap_err();
        assert_eq!(e.body["error"]["code"], code::HEADER_MISMATCH);
    }

    #[test]
    fn an_unknown_version_lists_the_supported_ones() {
        let mut m = call("add");
        m["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
        let e = modern_request(&headers(GOOD), &m).unwrap_err();
        assert_eq!(
            e.body["error"]["code"],
            code::HEADER_MISMATCH,
            "header and body disagree first"
        );
        let h = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "add"),
        ]);
        let e = modern_request(&h, &m).unwrap_err();
        assert_eq!(e.body["error"]["code"], code::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(e.body["error"]["data"]["supported"], json!(["2026-07-28"]));
    }

    #[test]
    fn base64_sentinel_names_are_decoded() {
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?bmHDr3Zl?="),
        ]);
        assert!(modern_request(&h, &call("naïve")).is_ok());
    }

    #[test]
    fn removed_methods_are_404() {
        let m = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}});
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "ping"),
        ]);
        assert_eq!(
            modern_request(&h, &m).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn foreign_origins_and_hosts_are_forbidden_on_loopback() {
        let policy = OriginPolicy {
            allowed_origins: vec!["https://app.example".into()],
            loopback_only: true,
        };
        assert!(
            policy
                .check(&headers(&[
                    ("origin", "http://localhost:3000"),
                    ("host", "127.0.0.1:8931")
                ]))
                .is_ok()
        );
        assert!(
            policy
                .check(&headers(&[("origin", "https://app.example")]))
                .is_ok()
        );
        assert!(
            policy
                .check(&headers(&[("origin", "https://evil.example")]))
                .is_err()
        );
        assert!(
            policy
                .check(&headers(&[("host", "evil.example:8931")]))
                .is_err()
        );
        assert!(policy.check(&headers(&[("host", "[::1]:8931")])).is_ok());
    }
}
