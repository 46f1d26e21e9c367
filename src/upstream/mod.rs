//! Connections to the MCP servers behind the gateway.
//!
//! An [`Upstream`] hides the transport (Streamable HTTP of either era, or a stdio child) and the
//! era it speaks. The gateway hands it a request exactly as the client sent it; the upstream
//! rewrites the JSON-RPC id and any `progressToken` into its own space (several clients share
//! one upstream connection), and maps them back on everything that returns.
//!
//! Era bridging: a request is sent over a connection of the client's era when the upstream
//! speaks it; otherwise the upstream adds the modern `_meta` a modern server requires (from
//! [`ClientContext`]) or sends the request inside its own legacy session.
//!
//! # Layout
//!
//! ```text
//! mod.rs       Upstream: the transport-independent handle, and its errors
//! http/        a Streamable HTTP upstream (either era)
//! stdio.rs     a child process speaking JSON-RPC lines on stdin/stdout
//! inflight/    many client requests over one connection: ids, routing, Exchange
//! messages.rs  the messages the gateway writes itself, and method classes
//! health.rs    whether an upstream is up, and the backoff between attempts
//! ```

mod health;
mod http;
mod inflight;
mod messages;
mod stdio;

pub use http::{HeaderError, HttpSetupError};
pub use inflight::Exchange;

use crate::config::UpstreamConfig;
use crate::protocol::Era;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What the upstream needs to know about the client a request comes from.
#[derive(Debug, Clone)]
pub struct ClientContext {
    /// The era the client speaks.
    pub era: Era,
    /// The protocol version the client uses (negotiated in `initialize`, or from `_meta`).
    pub protocol_version: String,
    /// The client's capabilities (`initialize` params or `_meta`), sent on when bridging to a
    /// modern upstream.
    pub capabilities: Value,
    /// `Mcp-Param-*` headers for this request (arguments whose schema property carries
    /// `x-mcp-header`), name and encoded value; sent to modern HTTP upstreams.
    pub mirrored_headers: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream cannot take the message now (not reached yet, HTTP 5xx, no process running).
    #[error("upstream {upstream} is unavailable: {reason}")]
    Unavailable { upstream: String, reason: String },
    /// A request could not be sent (refused connection, TLS, reset); the text names every cause,
    /// so that a refused certificate says why.
    #[error("upstream {upstream} is unavailable: {}", crate::tls::explain(.source))]
    Unreachable {
        upstream: String,
        source: reqwest::Error,
    },
    /// An answer broke off while its body was read.
    #[error("upstream {upstream} is unavailable: {source}")]
    BodyRead {
        upstream: String,
        source: reqwest::Error,
    },
    /// A configuration that can never work (an HTTP upstream's URL, headers or TLS setup).
    #[error("upstream {upstream} is unavailable: {source}")]
    Unusable {
        upstream: String,
        source: HttpSetupError,
    },
    /// No answer within the upstream's `timeout_secs`.
    #[error("upstream {upstream} did not answer within {secs} s")]
    Timeout { upstream: String, secs: u64 },
    /// The upstream answered, but not as MCP requires.
    #[error("upstream {upstream} answered with something that is not MCP: {reason}")]
    Protocol { upstream: String, reason: String },
}

/// One MCP server behind the gateway.
pub struct Upstream {
    /// Configured name (unique), used in logs, metrics and routing.
    pub name: String,
    /// Methods outside MCP that clients may send here (`upstreams[].pass_methods`).
    pub pass_methods: Vec<String>,
    transport: Transport,
}

enum Transport {
    Http(http::HttpTransport),
    Stdio(stdio::StdioTransport),
}

impl Upstream {
    /// Connects (HTTP: probes the era; stdio: spawns the child and handshakes). Returns an
    /// error only for a configuration that can never work; an upstream that is down is
    /// returned unhealthy and retried in the background until `shutdown`.
    pub async fn start(
        config: &UpstreamConfig,
        tls: &crate::tls::TlsConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        use crate::config::UpstreamTransport as T;
        let transport = match config.transport() {
            T::Http(http) => {
                Transport::Http(http::HttpTransport::start(config, http, tls, shutdown).await?)
            }
            T::Stdio(stdio) => {
                Transport::Stdio(stdio::StdioTransport::start(config, stdio, shutdown).await?)
            }
        };
        Ok(Upstream {
            name: config.name.clone(),
            pass_methods: config.pass_methods.clone(),
            transport,
        })
    }

    /// Sends a request. The returned exchange yields the messages related to it (progress and
    /// log notifications, server-to-client requests) and ends with its response, whose `id` is
    /// the one in `request`. Dropping the exchange before the response cancels the request
    /// upstream in the way the upstream's era expects.
    pub async fn request(
        &self,
        request: Value,
        client: &ClientContext,
    ) -> Result<Exchange, UpstreamError> {
        match &self.transport {
            Transport::Http(t) => t.request(request, client).await,
            Transport::Stdio(t) => t.request(request, client).await,
        }
    }

    /// Sends a client notification (e.g. `notifications/roots/list_changed`).
    pub async fn notify(
        &self,
        notification: Value,
        client: &ClientContext,
    ) -> Result<(), UpstreamError> {
        match &self.transport {
            Transport::Http(t) => t.notify(notification, client).await,
            Transport::Stdio(t) => t.notify(notification, client).await,
        }
    }

    /// Answers a server-to-client request (sampling, elicitation, roots); `response.id` is the
    /// id the upstream used.
    pub async fn respond(&self, response: Value) -> Result<(), UpstreamError> {
        match &self.transport {
            Transport::Http(t) => t.respond(response).await,
            Transport::Stdio(t) => t.respond(response).await,
        }
    }

    /// Messages the upstream sent outside any request: list-changed and resource-updated
    /// notifications, log messages, server-to-client requests not tied to a request.
    pub fn events(&self) -> broadcast::Receiver<Value> {
        match &self.transport {
            Transport::Http(t) => t.events(),
            Transport::Stdio(t) => t.events(),
        }
    }

    /// The server capabilities from `initialize` or `server/discover` (`{}` before the first
    /// successful handshake).
    pub fn capabilities(&self) -> Value {
        match &self.transport {
            Transport::Http(t) => t.capabilities(),
            Transport::Stdio(t) => t.capabilities(),
        }
    }

    /// Whether the last attempt to reach the upstream succeeded.
    pub fn is_healthy(&self) -> bool {
        match &self.transport {
            Transport::Http(t) => t.is_healthy(),
            Transport::Stdio(t) => t.is_healthy(),
        }
    }
}
