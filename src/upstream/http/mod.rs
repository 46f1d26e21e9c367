//! A Streamable HTTP upstream, modern (stateless POSTs) or legacy (a gateway-owned session).
//!
//! The era is found once at start (configured, or probed with `server/discover`; anything but
//! a result means legacy) and every request goes over it: a client of the other era is bridged
//! (modern `_meta` added for a modern upstream; a modern client's requests go through the
//! legacy session, whose server ignores the extra `_meta` keys). An upstream that is down at
//! start is probed again in the background until it answers.
//!
//! # Layout
//!
//! ```text
//! mod.rs      HttpTransport (the upstream's operations) and the state its parts share
//! client.rs   the reqwest client: URL, TLS, the configured (secret) headers
//! headers.rs  each request's own headers: modern, session, `Mcp-Param-*`
//! probe.rs    finding the era at start, and again in the background while down
//! session.rs  the legacy session: initialize, renew, cancel in it, end it
//! post.rs     POSTing a message and reading the answer (202, JSON or an event stream)
//! streams.rs  the event streams: a POST's SSE answer, the session's GET stream
//! ```

mod client;
mod headers;
mod post;
mod probe;
mod session;
mod streams;

pub use client::{HeaderError, HttpSetupError};

use super::health::Health;
use super::inflight::{CancelFn, Exchange, Rewrite};
use super::messages::{self, is_response};
use super::{ClientContext, UpstreamError};
use crate::config::{EraPreference, HttpUpstreamConfig, UpstreamConfig};
use crate::jsonrpc;
use crate::protocol::{self, Era};
use post::Body;
use serde_json::Value;
use session::Session;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

pub struct HttpTransport {
    shared: Arc<Shared>,
    /// Stops the background tasks when the transport is dropped without a shutdown.
    _stop: DropGuard,
}

/// How one POST is sent.
#[derive(Debug, Clone)]
enum Route {
    /// Stateless, with the modern headers.
    Modern,
    /// Inside the gateway's legacy session.
    Legacy(Arc<Session>),
    /// `initialize`: no session yet.
    Handshake,
}

struct Shared {
    name: String,
    url: reqwest::Url,
    timeout: Duration,
    era_preference: EraPreference,
    /// Sends `Accept`, `Content-Type` and the configured headers on every request.
    client: reqwest::Client,
    next_id: AtomicI64,
    events: broadcast::Sender<Value>,
    health: Health,
    /// The era in use and the server's capabilities; `None` until the upstream was reached.
    server: RwLock<(Option<Era>, Value)>,
    session: Mutex<Option<Arc<Session>>>,
    /// A modern upstream refused `initialize`: legacy clients are bridged onto modern requests.
    modern_only: AtomicBool,
    /// Held while (re-)initializing, so that concurrent requests share one new session.
    session_init: tokio::sync::Mutex<()>,
    stop: CancellationToken,
}

impl HttpTransport {
    /// Probes the upstream once; if it is down, keeps probing in the background.
    pub async fn start(
        config: &UpstreamConfig,
        http: &HttpUpstreamConfig,
        tls: &crate::tls::TlsConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        let (url, client) = client::setup(http, tls).map_err(|source| UpstreamError::Unusable {
            upstream: config.name.clone(),
            source,
        })?;
        let stop = shutdown.child_token();
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            url,
            timeout: config.timeout(),
            era_preference: config.era,
            client,
            next_id: AtomicI64::new(1),
            events: broadcast::channel(256).0,
            health: Health::new(&config.name),
            server: RwLock::new((None, Value::Object(Default::default()))),
            session: Mutex::new(None),
            modern_only: AtomicBool::new(false),
            session_init: tokio::sync::Mutex::new(()),
            stop: stop.clone(),
        });
        if let Err(e) = shared.probe().await {
            tracing::warn!(target: "countersign::upstream", upstream = %shared.name, error = %e, "upstream not reachable; retrying in the background");
            tokio::spawn(shared.clone().probe_until_up());
        }
        Ok(HttpTransport {
            shared,
            _stop: stop.drop_guard(),
        })
    }

    pub async fn request(
        &self,
        mut request: Value,
        client: &ClientContext,
    ) -> Result<Exchange, UpstreamError> {
        let s = &self.shared;
        let route = s.route(client).await?;
        if matches!(route, Route::Modern) {
            messages::add_modern_meta(&mut request, client);
        }
        let rewrite = Rewrite::apply(&mut request, s.mint());
        let (response, route) = s
            .post_with_renewal(&request, route, &client.mirrored_headers)
            .await?;
        match s.body(response).await? {
            Body::Json(mut msg) if is_response(&msg) => {
                rewrite.restore(&mut msg);
                Ok(Exchange::ready(msg, &s.name))
            }
            Body::Stream(response) => Ok(self.stream_exchange(response, rewrite, &route)),
            Body::Json(_) | Body::Accepted => {
                Err(s.protocol_error("a request was not answered with a response"))
            }
        }
    }

    /// Sends a client notification; those the gateway owns, or the modern era removed, are
    /// dropped.
    pub async fn notify(
        &self,
        notification: Value,
        client: &ClientContext,
    ) -> Result<(), UpstreamError> {
        let s = &self.shared;
        let method = jsonrpc::method(&notification).unwrap_or_default();
        let route = s.route(client).await?;
        let removed =
            matches!(route, Route::Modern) && protocol::REMOVED_IN_MODERN.contains(&method);
        if removed || messages::is_gateway_owned(method) {
            tracing::debug!(upstream = %s.name, method, "notification not forwarded");
            return Ok(());
        }
        s.post_accepted(&notification, route).await
    }

    /// Answers a server-to-client request inside the legacy session (not retried in a new
    /// session: the request that asked died with the old one).
    pub async fn respond(&self, response: Value) -> Result<(), UpstreamError> {
        let s = &self.shared;
        match s.current_session() {
            Some(session) => {
                let route = Route::Legacy(session);
                s.expect_accepted(s.post(&response, &route).await?).await
            }
            None => Err(s.protocol_error(
                "no legacy session: a modern upstream sends no server-to-client requests",
            )),
        }
    }

    pub fn events(&self) -> broadcast::Receiver<Value> {
        self.shared.events.subscribe()
    }

    pub fn capabilities(&self) -> Value {
        self.shared.read_server().1.clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.shared.health.get()
    }

    /// Feeds an SSE response into a new exchange. Dropping the exchange closes the stream
    /// (modern cancellation) and, in a legacy session, also sends `notifications/cancelled`.
    fn stream_exchange(
        &self,
        response: reqwest::Response,
        rewrite: Rewrite,
        route: &Route,
    ) -> Exchange {
        let s = &self.shared;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(streams::pump(response, tx, rewrite.clone(), s.clone()));
        let cancel: Option<CancelFn> = match route {
            Route::Legacy(_) => {
                let shared = s.clone();
                let id = rewrite.upstream_id;
                Some(Box::new(move |reason| shared.cancel_legacy(id, reason)))
            }
            _ => None,
        };
        Exchange::new(rx, rewrite.client_id, &s.name, s.timeout, cancel)
    }
}

impl Shared {
    fn mint(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn read_server(&self) -> std::sync::RwLockReadGuard<'_, (Option<Era>, Value)> {
        self.server.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_server(&self, era: Era, capabilities: Value) {
        *self.server.write().unwrap_or_else(|e| e.into_inner()) = (Some(era), capabilities);
    }

    fn unavailable(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn protocol_error(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn timed_out(&self) -> UpstreamError {
        UpstreamError::Timeout {
            upstream: self.name.clone(),
            secs: self.timeout.as_secs(),
        }
    }

    /// How the next message goes: in the client's era when the upstream speaks it. A modern
    /// upstream may speak legacy too (dual-era): a legacy client gets a legacy session there, so
    /// sampling, elicitation, logging and subscriptions keep working; if the upstream refuses
    /// `initialize`, legacy clients are bridged onto modern requests from then on.
    async fn route(self: &Arc<Self>, client: &ClientContext) -> Result<Route, UpstreamError> {
        let era = self.read_server().0;
        match era {
            None => Err(self.unavailable("not reached yet")),
            Some(Era::Legacy) => Ok(Route::Legacy(self.session().await?)),
            Some(Era::Modern)
                if client.era == Era::Legacy && !self.modern_only.load(Ordering::Relaxed) =>
            {
                match self.session().await {
                    Ok(session) => Ok(Route::Legacy(session)),
                    Err(e) => {
                        tracing::info!(target: "countersign::upstream", upstream = %self.name, error = %e, "modern upstream speaks no legacy; bridging legacy clients");
                        self.modern_only.store(true, Ordering::Relaxed);
                        Ok(Route::Modern)
                    }
                }
            }
            Some(Era::Modern) => Ok(Route::Modern),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway awaits these inside spawned tasks.
    #[allow(dead_code)]
    fn futures_are_send(t: &HttpTransport, c: &ClientContext) {
        fn is_send<T: Send>(_: T) {}
        is_send(t.request(Value::Null, c));
        is_send(t.notify(Value::Null, c));
        is_send(t.respond(Value::Null));
    }
}
