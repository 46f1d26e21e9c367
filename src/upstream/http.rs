//! A Streamable HTTP upstream, modern (stateless POSTs) or legacy (a gateway-owned session).
//!
//! The era is found once at start (configured, or probed with `server/discover`; anything but
//! a result means legacy) and every request goes over it: a client of the other era is bridged
//! (modern `_meta` added for a modern upstream; a modern client's requests go through the
//! legacy session, whose server ignores the extra `_meta` keys). An upstream that is down at
//! start is probed again in the background until it answers.

use super::inflight::{self, Backoff, CancelFn, Exchange, Health, Rewrite, is_response};
use super::{ClientContext, UpstreamError};
use crate::config::{EraPreference, HttpUpstreamConfig, UpstreamConfig};
use crate::jsonrpc;
use crate::protocol::{self, Era};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long to wait for a TCP connection to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The protocol's header names, parsed once (a `&str` name is parsed on every insert).
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static(protocol::HEADER_PROTOCOL_VERSION);
const METHOD: HeaderName = HeaderName::from_static(protocol::HEADER_METHOD);
const NAME: HeaderName = HeaderName::from_static(protocol::HEADER_NAME);
const SESSION_ID: HeaderName = HeaderName::from_static(protocol::HEADER_SESSION_ID);

pub struct HttpTransport {
    shared: Arc<Shared>,
    /// Stops the background tasks when the transport is dropped without a shutdown.
    _stop: DropGuard,
}

/// A legacy session the gateway opened with `initialize`.
#[derive(Debug)]
struct Session {
    /// `Mcp-Session-Id`; a server may run without one.
    id: Option<String>,
    /// The negotiated protocol version, sent as `MCP-Protocol-Version`.
    version: String,
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

/// What a POST answered.
enum Body {
    /// `202 Accepted`, nothing else.
    Accepted,
    Json(Value),
    /// `text/event-stream`, not read yet.
    Stream(reqwest::Response),
}

struct Shared {
    name: String,
    /// Parsed once: reqwest would parse a `&str` URL again for every request.
    url: reqwest::Url,
    timeout: Duration,
    era_preference: EraPreference,
    /// Sends `Accept`, `Content-Type` and the configured headers on every request (its default
    /// headers), so that a request only carries its own few.
    client: reqwest::Client,
    next_id: AtomicI64,
    events: broadcast::Sender<Value>,
    health: Health,
    /// The era in use and the server's capabilities; `None` until the upstream was reached.
    server: RwLock<(Option<Era>, Value)>,
    session: Mutex<Option<Arc<Session>>>,
    /// A modern upstream refused `initialize`: legacy clients are bridged onto modern requests.
    modern_only: std::sync::atomic::AtomicBool,
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
        let unusable = |reason: String| UpstreamError::Unavailable {
            upstream: config.name.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&http.url)
            .map_err(|e| unusable(format!("invalid URL {:?}: {e}", http.url)))?;
        let client = tls
            .setup()
            .map_err(|e| unusable(e.to_string()))?
            .http()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .default_headers(base_headers(http).map_err(&unusable)?)
            .build()
            .map_err(|e| unusable(format!("cannot build an HTTP client: {e}")))?;
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
            modern_only: std::sync::atomic::AtomicBool::new(false),
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
            inflight::add_modern_meta(&mut request, client);
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
        if removed || inflight::is_gateway_owned(method) {
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
        tokio::spawn(pump(response, tx, rewrite.clone(), s.clone()));
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

/// `Accept`, `Content-Type` and the configured headers. A request's own headers of the same
/// name (the protocol's) take precedence.
fn base_headers(http: &HttpUpstreamConfig) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &http.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        let mut value = HeaderValue::from_str(secrecy::ExposeSecret::expose_secret(value))
            .map_err(|e| format!("header {name}: {e}"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
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

fn add_session_headers(headers: &mut HeaderMap, session: &Session) {
    if let Some(id) = &session.id {
        headers.insert(SESSION_ID, header_value(id));
    }
    headers.insert(PROTOCOL_VERSION, header_value(&session.version));
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

    fn current_session(&self) -> Option<Arc<Session>> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

    /// How the next message goes: in the client's era when the upstream speaks it. A modern
    /// upstream may speak legacy too (dual-era): a legacy client gets a legacy session there, so
    /// sampling, elicitation, logging and subscriptions keep working; if the upstream refuses
    /// `initialize`, legacy clients are bridged onto modern requests from then on.
    async fn route(self: &Arc<Self>, client: &ClientContext) -> Result<Route, UpstreamError> {
        use std::sync::atomic::Ordering;
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

    // === era probe ===

    /// Finds the era (as configured, or `server/discover` then `initialize`).
    async fn probe(self: &Arc<Self>) -> Result<(), UpstreamError> {
        if self.era_preference != EraPreference::Legacy {
            match self.discover().await? {
                Some(capabilities) => {
                    self.set_server(Era::Modern, capabilities);
                    self.health.set(true);
                    return Ok(());
                }
                None if self.era_preference == EraPreference::Modern => {
                    return Err(
                        self.protocol_error("server/discover was not answered with a result")
                    );
                }
                None => {
                    tracing::debug!(upstream = %self.name, "not a modern server; trying initialize")
                }
            }
        }
        self.initialize().await?;
        tokio::spawn(self.clone().listen());
        Ok(())
    }

    /// Probes with backoff until the upstream answers or the transport stops.
    async fn probe_until_up(self: Arc<Self>) {
        let mut backoff = inflight::reconnect_backoff();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.stop.cancelled() => return,
            }
            match self.probe().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(upstream = %self.name, error = %e, "upstream still not reachable")
                }
            }
        }
    }

    /// A modern `server/discover`: the result's capabilities, `None` for any other answer (the
    /// server is not modern), an error when the upstream could not be reached.
    async fn discover(&self) -> Result<Option<Value>, UpstreamError> {
        let mut request = inflight::discover_request();
        let id = self.mint();
        jsonrpc::set_id(&mut request, id.into());
        let response = self.post(&request, &Route::Modern).await?;
        let answer = self.single_response(response, id).await;
        let result = answer.as_ref().ok().and_then(|a| a.get("result"));
        Ok(result.map(|r| {
            r.get("capabilities")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()))
        }))
    }

    // === legacy session ===

    /// The current session, opening one if there is none.
    async fn session(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        if let Some(session) = self.current_session() {
            return Ok(session);
        }
        let _init = self.session_init.lock().await;
        match self.current_session() {
            Some(session) => Ok(session),
            None => self.initialize_locked().await,
        }
    }

    /// Replaces a session the server no longer knows (404), unless another request already did.
    async fn renew_session(
        self: &Arc<Self>,
        stale: &Arc<Session>,
    ) -> Result<Arc<Session>, UpstreamError> {
        let _init = self.session_init.lock().await;
        match self.current_session() {
            Some(current) if !Arc::ptr_eq(&current, stale) => Ok(current),
            _ => {
                tracing::info!(target: "countersign::upstream", upstream = %self.name, "legacy session expired; initializing again");
                self.initialize_locked().await
            }
        }
    }

    async fn initialize(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        let _init = self.session_init.lock().await;
        self.initialize_locked().await
    }

    /// `initialize` + `notifications/initialized`; stores the session and the capabilities.
    /// The caller holds `session_init`.
    async fn initialize_locked(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        let mut request = inflight::initialize_request();
        let id = self.mint();
        jsonrpc::set_id(&mut request, id.into());
        let response = self.post(&request, &Route::Handshake).await?;
        let session_id = response
            .headers()
            .get(protocol::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = self.single_response(response, id).await?;
        let Some(result) = answer.get("result") else {
            return Err(self.protocol_error(format!("initialize answered {answer}")));
        };
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(protocol::LATEST_LEGACY_VERSION);
        let session = Arc::new(Session {
            id: session_id,
            version: version.to_owned(),
        });
        let capabilities = result
            .get("capabilities")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        if self.read_server().0 != Some(Era::Modern) {
            self.set_server(Era::Legacy, capabilities);
        }
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());

        let initialized = jsonrpc::notification(
            "notifications/initialized",
            Value::Object(Default::default()),
        );
        let response = self
            .post(&initialized, &Route::Legacy(session.clone()))
            .await?;
        self.expect_accepted(response).await?;
        self.health.set(true);
        Ok(session)
    }

    /// Cancels a legacy request with `notifications/cancelled` (in the background: this runs
    /// when an exchange is dropped).
    fn cancel_legacy(self: &Arc<Self>, upstream_id: i64, reason: &str) {
        let (Ok(runtime), Some(session)) = (
            tokio::runtime::Handle::try_current(),
            self.current_session(),
        ) else {
            return;
        };
        let shared = self.clone();
        let notification = inflight::cancelled_notification(upstream_id, reason);
        runtime.spawn(async move {
            let sent = shared.post(&notification, &Route::Legacy(session)).await;
            if let Err(e) = async { shared.expect_accepted(sent?).await }.await {
                tracing::debug!(upstream = %shared.name, error = %e, "could not cancel a request");
            }
        });
    }

    // === the standalone GET stream (legacy) ===

    /// Keeps the session's GET stream open, feeding it to `events`, until the server says it
    /// has none (405) or the transport stops; at shutdown, ends the session.
    async fn listen(self: Arc<Self>) {
        let mut backoff = inflight::reconnect_backoff();
        loop {
            let open = tokio::select! {
                open = self.listen_once(&mut backoff) => open,
                _ = self.stop.cancelled() => break,
            };
            if !open {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.stop.cancelled() => break,
            }
        }
        self.stop.cancelled().await;
        self.end_session().await;
    }

    /// Opens the GET stream once and reads it to its end; false when the server has none.
    async fn listen_once(self: &Arc<Self>, backoff: &mut Backoff) -> bool {
        let Ok(session) = self.session().await else {
            return true;
        };
        let mut headers = HeaderMap::new();
        add_session_headers(&mut headers, &session);
        let response = match self
            .client
            .get(self.url.clone())
            .headers(headers)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(upstream = %self.name, error = %e, "GET stream failed");
                return true;
            }
        };
        match response.status() {
            StatusCode::METHOD_NOT_ALLOWED => return false,
            StatusCode::NOT_FOUND => {
                let _ = self.renew_session(&session).await;
                return true;
            }
            status if !status.is_success() => return true,
            _ => backoff.reset(),
        }
        let mut messages = std::pin::pin!(sse_messages(response, self.name.clone()));
        while let Some(msg) = messages.next().await {
            if !is_response(&msg) {
                let _ = self.events.send(msg);
            }
        }
        true
    }

    /// `DELETE` the session at shutdown (best effort).
    async fn end_session(&self) {
        let Some(session) = self.current_session() else {
            return;
        };
        let mut headers = HeaderMap::new();
        add_session_headers(&mut headers, &session);
        let delete = self.client.delete(self.url.clone()).headers(headers).send();
        let _ = tokio::time::timeout(Duration::from_secs(1), delete).await;
    }

    // === POST ===

    /// POSTs one message; a connection failure marks the upstream unhealthy.
    async fn post(&self, msg: &Value, route: &Route) -> Result<reqwest::Response, UpstreamError> {
        self.post_mirrored(msg, route, &[]).await
    }

    /// POSTs one message with `Mcp-Param-*` headers (modern route only).
    async fn post_mirrored(
        &self,
        msg: &Value,
        route: &Route,
        mirrored: &[(String, String)],
    ) -> Result<reqwest::Response, UpstreamError> {
        // Room for the protocol's three headers and a few `Mcp-Param-*` without growing.
        let mut headers = HeaderMap::with_capacity(8);
        match route {
            Route::Modern => {
                add_modern_headers(&mut headers, msg);
                for (name, value) in mirrored {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::try_from(name.as_str()),
                        HeaderValue::from_str(value),
                    ) {
                        headers.insert(name, value);
                    }
                }
            }
            Route::Legacy(session) => add_session_headers(&mut headers, session),
            Route::Handshake => {}
        }
        let body = serde_json::to_vec(msg).expect("a JSON value always serialises");
        let send = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send();
        match tokio::time::timeout(self.timeout, send).await {
            Err(_) => Err(UpstreamError::Timeout {
                upstream: self.name.clone(),
                secs: self.timeout.as_secs(),
            }),
            Ok(Err(e)) => {
                self.health.set(false);
                Err(self.unavailable(crate::tls::explain(&e)))
            }
            Ok(Ok(response)) => {
                self.health.set(!response.status().is_server_error());
                Ok(response)
            }
        }
    }

    /// POSTs in the session, initializing again once if the server forgot it (404).
    async fn post_with_renewal(
        self: &Arc<Self>,
        msg: &Value,
        route: Route,
        mirrored: &[(String, String)],
    ) -> Result<(reqwest::Response, Route), UpstreamError> {
        let response = self.post_mirrored(msg, &route, mirrored).await?;
        match &route {
            Route::Legacy(stale) if response.status() == StatusCode::NOT_FOUND => {
                let route = Route::Legacy(self.renew_session(stale).await?);
                Ok((self.post(msg, &route).await?, route))
            }
            _ => Ok((response, route)),
        }
    }

    /// POSTs a notification or response, which the server accepts with 202.
    async fn post_accepted(
        self: &Arc<Self>,
        msg: &Value,
        route: Route,
    ) -> Result<(), UpstreamError> {
        let (response, _) = self.post_with_renewal(msg, route, &[]).await?;
        self.expect_accepted(response).await
    }

    async fn expect_accepted(&self, response: reqwest::Response) -> Result<(), UpstreamError> {
        match self.body(response).await? {
            Body::Accepted => Ok(()),
            Body::Json(answer) => {
                Err(self.protocol_error(format!("expected 202 Accepted, got {answer}")))
            }
            Body::Stream(_) => {
                Err(self.protocol_error("expected 202 Accepted, got an event stream"))
            }
        }
    }

    /// Reads what a POST answered: nothing, one JSON message, or the start of an SSE stream.
    async fn body(&self, response: reqwest::Response) -> Result<Body, UpstreamError> {
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            return Ok(Body::Accepted);
        }
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_stream && status.is_success() {
            return Ok(Body::Stream(response));
        }
        let bytes = match tokio::time::timeout(self.timeout, response.bytes()).await {
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    upstream: self.name.clone(),
                    secs: self.timeout.as_secs(),
                });
            }
            Ok(Err(e)) => return Err(self.unavailable(e.to_string())),
            Ok(Ok(bytes)) => bytes,
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(msg) if jsonrpc::classify(&msg).is_ok() || is_error_without_id(&msg) => {
                Ok(Body::Json(msg))
            }
            _ if status.is_server_error() => Err(self.unavailable(format!("HTTP {status}"))),
            _ if status.is_success() => {
                Err(self.protocol_error("the body is not a JSON-RPC message"))
            }
            _ => Err(self.protocol_error(format!("HTTP {status}"))),
        }
    }

    /// The response with `id` from a JSON or SSE answer; other messages on the stream are
    /// dropped (only handshakes use this).
    async fn single_response(
        &self,
        response: reqwest::Response,
        id: i64,
    ) -> Result<Value, UpstreamError> {
        let stream = match self.body(response).await? {
            Body::Json(msg) => return Ok(msg),
            Body::Accepted => return Err(self.protocol_error("a request was answered with 202")),
            Body::Stream(stream) => stream,
        };
        let mut messages = std::pin::pin!(sse_messages(stream, self.name.clone()));
        let find = async {
            while let Some(msg) = messages.next().await {
                if is_response(&msg) && msg.get("id").and_then(Value::as_i64) == Some(id) {
                    return Ok(msg);
                }
            }
            Err(self.protocol_error("the event stream ended without a response"))
        };
        match tokio::time::timeout(self.timeout, find).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout {
                upstream: self.name.clone(),
                secs: self.timeout.as_secs(),
            }),
        }
    }
}

/// An error answer whose id is `null` (the request could not be read), as some servers send
/// with HTTP 400.
fn is_error_without_id(msg: &Value) -> bool {
    msg.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        && msg.get("error").is_some_and(Value::is_object)
        && msg.get("id").is_none_or(Value::is_null)
}

/// The JSON-RPC messages in an SSE response; priming events (no data) and comments are skipped.
fn sse_messages(response: reqwest::Response, upstream: String) -> impl Stream<Item = Value> {
    response
        .bytes_stream()
        .eventsource()
        .filter_map(move |event| {
            let msg = match event {
                Ok(event) if event.data.trim().is_empty() => None,
                Ok(event) => serde_json::from_str::<Value>(&event.data)
                    .inspect_err(
                        |e| tracing::warn!(%upstream, error = %e, "SSE event that is not JSON"),
                    )
                    .ok(),
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "SSE stream broke");
                    None
                }
            };
            std::future::ready(msg)
        })
}

/// Feeds one request's SSE stream into its exchange until the response (or until the exchange
/// is dropped, which closes the stream).
async fn pump(
    response: reqwest::Response,
    tx: mpsc::UnboundedSender<Value>,
    rewrite: Rewrite,
    shared: Arc<Shared>,
) {
    let mut messages = std::pin::pin!(sse_messages(response, shared.name.clone()));
    loop {
        let msg = tokio::select! {
            msg = messages.next() => msg,
            _ = tx.closed() => return,
        };
        let Some(mut msg) = msg else { return };
        if jsonrpc::method(&msg).is_some_and(inflight::is_session_event) {
            let _ = shared.events.send(msg);
            continue;
        }
        let is_ours = msg.get("id").and_then(Value::as_i64) == Some(rewrite.upstream_id);
        let final_response = is_response(&msg);
        if final_response && !is_ours {
            tracing::debug!(upstream = %shared.name, ?msg, "response for another request on a stream");
            continue;
        }
        rewrite.restore(&mut msg);
        if tx.send(msg).is_err() || final_response {
            return;
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

    #[test]
    fn configured_headers_are_validated() {
        let bad = HttpUpstreamConfig {
            url: "http://127.0.0.1:1/mcp".into(),
            headers: [("bad header".to_owned(), "v".into())].into(),
        };
        assert!(base_headers(&bad).is_err());
    }
}
