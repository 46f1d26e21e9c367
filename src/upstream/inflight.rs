//! Multiplexing many client requests over one upstream connection.
//!
//! Every request sent upstream gets a connection-unique integer id (and, when it asked for
//! progress, a progress token equal to that id). [`Rewrite`] remembers what the client used so
//! that the response and `notifications/progress` can be mapped back. [`InFlight`] is the
//! registry a transport without per-request streams (stdio) routes incoming messages through;
//! [`Exchange`] is what the caller holds while the request runs.

use super::ClientContext;
pub(super) use crate::backoff::Backoff;
use crate::jsonrpc::{self, Kind};
use crate::protocol::{self, META_CLIENT_CAPABILITIES, META_PROGRESS_TOKEN, META_PROTOCOL_VERSION};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

/// Called when an [`Exchange`] ends without its response (dropped or timed out), with a reason.
pub(super) type CancelFn = Box<dyn FnOnce(&str) + Send + Sync>;

/// The messages related to one upstream request, ending with its response.
///
/// Dropping the exchange before the response arrived cancels the request upstream in the way
/// the upstream's era expects (`notifications/cancelled`, or closing the response stream).
pub struct Exchange {
    messages: Messages,
    /// The id the client used; error responses made up here carry it.
    client_id: Value,
    upstream: String,
    deadline: Instant,
    timeout: Duration,
    /// Set once the response has been handed out (or made up).
    done: bool,
    on_cancel: Option<CancelFn>,
}

/// Where an [`Exchange`]'s messages come from.
enum Messages {
    /// The response arrived with the request's answer (a plain JSON reply): no channel, no
    /// timer. `None` once handed out.
    Ready(Option<Value>),
    /// Fed by a task reading the upstream (an SSE stream, or a stdio connection).
    Channel(mpsc::UnboundedReceiver<Value>),
}

impl Exchange {
    pub(super) fn new(
        rx: mpsc::UnboundedReceiver<Value>,
        client_id: Value,
        upstream: &str,
        timeout: Duration,
        on_cancel: Option<CancelFn>,
    ) -> Self {
        Exchange {
            messages: Messages::Channel(rx),
            client_id,
            upstream: upstream.to_owned(),
            deadline: Instant::now() + timeout,
            timeout,
            done: false,
            on_cancel,
        }
    }

    /// An exchange whose only message, the response, is already known.
    pub(super) fn ready(response: Value, upstream: &str) -> Self {
        let client_id = response.get("id").cloned().unwrap_or(Value::Null);
        let timeout = Duration::from_secs(3600);
        Exchange {
            messages: Messages::Ready(Some(response)),
            client_id,
            upstream: upstream.to_owned(),
            deadline: Instant::now() + timeout,
            timeout,
            done: false,
            on_cancel: None,
        }
    }

    /// The next message: a notification or server-to-client request related to the request,
    /// or the response, after which this returns `None`.
    ///
    /// Never ends without a response: when the upstream goes away or the per-request timeout
    /// passes, a JSON-RPC error response (code -32000) with the client's id is returned instead
    /// (and, on timeout, the request is cancelled upstream).
    pub async fn next(&mut self) -> Option<Value> {
        if self.done {
            return None;
        }
        let received = match &mut self.messages {
            // Already there: no timer to arm.
            Messages::Ready(msg) => Ok(msg.take()),
            Messages::Channel(rx) => tokio::time::timeout_at(self.deadline, rx.recv()).await,
        };
        match received {
            Ok(Some(msg)) => {
                if is_response(&msg) {
                    self.finish();
                }
                Some(msg)
            }
            Ok(None) => {
                self.finish();
                Some(self.error(format!(
                    "upstream {} closed the request without answering it",
                    self.upstream
                )))
            }
            Err(_) => {
                let message = format!(
                    "upstream {} did not answer within {} s",
                    self.upstream,
                    self.timeout.as_secs()
                );
                self.cancel(&message);
                self.done = true;
                Some(self.error(message))
            }
        }
    }

    /// Skips everything but the response. Only for requests that cannot lead to server-to-client
    /// requests (e.g. list calls): those would go unanswered until the timeout.
    pub async fn response(mut self) -> Value {
        loop {
            if let Some(msg) = self.next().await
                && is_response(&msg)
            {
                return msg;
            }
        }
    }

    /// Whether the response has been handed out.
    pub fn is_finished(&self) -> bool {
        self.done
    }

    fn finish(&mut self) {
        self.done = true;
        self.on_cancel = None;
    }

    fn cancel(&mut self, reason: &str) {
        if let Some(cancel) = self.on_cancel.take() {
            cancel(reason);
        }
    }

    fn error(&self, message: String) -> Value {
        jsonrpc::error(
            Some(self.client_id.clone()),
            jsonrpc::code::SERVER_ERROR,
            message,
        )
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.done {
            self.cancel("the client cancelled the request");
        }
    }
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("client_id", &self.client_id)
            .field("upstream", &self.upstream)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// A response: no `method`, an `id`.
pub(super) fn is_response(msg: &Value) -> bool {
    msg.get("method").is_none() && msg.get("id").is_some()
}

/// What was changed in a request on its way upstream, to undo it on what comes back.
#[derive(Debug, Clone)]
pub(super) struct Rewrite {
    pub upstream_id: i64,
    pub client_id: Value,
    /// The client's `progressToken`; the upstream sees `upstream_id` instead.
    client_token: Option<Value>,
}

impl Rewrite {
    /// Gives `request` the id `upstream_id` and, if it carries a progress token, the token
    /// `upstream_id` too.
    pub fn apply(request: &mut Value, upstream_id: i64) -> Rewrite {
        let client_id = request.get("id").cloned().unwrap_or(Value::Null);
        jsonrpc::set_id(request, upstream_id.into());
        let client_token = request
            .pointer_mut("/params/_meta")
            .and_then(Value::as_object_mut)
            .and_then(|meta| meta.get_mut(META_PROGRESS_TOKEN))
            .map(|token| std::mem::replace(token, upstream_id.into()));
        Rewrite {
            upstream_id,
            client_id,
            client_token,
        }
    }

    /// The upstream's progress token for this request, if the client asked for progress.
    fn upstream_token(&self) -> Option<Value> {
        self.client_token.as_ref().map(|_| self.upstream_id.into())
    }

    /// Maps the response's id, or a progress notification's token, back to the client's.
    pub fn restore(&self, msg: &mut Value) {
        if is_response(msg) {
            jsonrpc::set_id(msg, self.client_id.clone());
        } else if jsonrpc::method(msg) == Some("notifications/progress")
            && let (Some(token), Some(client)) =
                (msg.pointer_mut("/params/progressToken"), &self.client_token)
        {
            *token = client.clone();
        }
    }
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
pub(super) fn client_info() -> Value {
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

/// Notifications about the upstream as a whole, never about one request.
pub(super) fn is_session_event(method: &str) -> bool {
    method.ends_with("/list_changed") || method == "notifications/resources/updated"
}

/// Client notifications the gateway answers for itself and never forwards: the gateway owns
/// its upstream session (`initialized`), and cancels by dropping the [`Exchange`].
pub(super) fn is_gateway_owned(method: &str) -> bool {
    matches!(
        method,
        "notifications/initialized" | "notifications/cancelled"
    )
}

/// Requests during which a server may log or ask the user something.
fn is_call_like(method: &str) -> bool {
    matches!(
        method,
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
    ) || method.starts_with("tasks/")
}

struct Pending {
    tx: mpsc::UnboundedSender<Value>,
    rewrite: Rewrite,
    call_like: bool,
}

/// Requests in flight on one connection, keyed by upstream id.
pub(super) struct InFlight {
    next_id: AtomicI64,
    pending: Mutex<HashMap<i64, Pending>>,
}

impl InFlight {
    pub fn new() -> Self {
        InFlight {
            next_id: AtomicI64::new(1),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh connection-unique id.
    pub fn mint(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Rewrites `request` into the upstream's id space and registers it; messages for it will
    /// arrive on the returned receiver.
    pub fn register(&self, request: &mut Value) -> (Rewrite, mpsc::UnboundedReceiver<Value>) {
        let rewrite = Rewrite::apply(request, self.mint());
        let call_like = jsonrpc::method(request).is_some_and(is_call_like);
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Pending {
            tx,
            rewrite: rewrite.clone(),
            call_like,
        };
        self.lock().insert(rewrite.upstream_id, pending);
        (rewrite, rx)
    }

    /// Forgets a request; false if it was not in flight (already answered or removed).
    pub fn remove(&self, upstream_id: i64) -> bool {
        self.lock().remove(&upstream_id).is_some()
    }

    /// Routes a message read from the connection: responses and progress to their request,
    /// log messages and server-to-client requests to the single call in flight (if there is
    /// exactly one), everything else to `events`.
    pub fn route(&self, msg: Value, events: &broadcast::Sender<Value>) {
        match jsonrpc::classify(&msg) {
            Ok(Kind::Response) => self.deliver_response(msg),
            Ok(Kind::Notification) => match jsonrpc::method(&msg).unwrap_or_default() {
                "notifications/progress" => self.deliver_progress(msg),
                "notifications/cancelled" => tracing::debug!(?msg, "upstream cancelled a request"),
                m if is_session_event(m) => send_event(events, msg),
                _ => self.deliver_to_sole_call(msg, events),
            },
            Ok(Kind::Request) => self.deliver_to_sole_call(msg, events),
            Err(reason) => tracing::warn!(reason, "upstream sent an invalid JSON-RPC message"),
        }
    }

    /// Ends every request in flight with an error response carrying `message`.
    pub fn fail_all(&self, message: &str) {
        let drained: Vec<Pending> = self.lock().drain().map(|(_, p)| p).collect();
        for p in drained {
            let error = jsonrpc::error(
                Some(p.rewrite.client_id.clone()),
                jsonrpc::code::SERVER_ERROR,
                message,
            );
            let _ = p.tx.send(error);
        }
    }

    fn deliver_response(&self, mut msg: Value) {
        let Some(upstream_id) = msg.get("id").and_then(Value::as_i64) else {
            tracing::debug!(?msg, "response with an id the gateway never sent");
            return;
        };
        let Some(p) = self.lock().remove(&upstream_id) else {
            tracing::debug!(upstream_id, "response for a request no longer in flight");
            return;
        };
        p.rewrite.restore(&mut msg);
        let _ = p.tx.send(msg);
    }

    fn deliver_progress(&self, mut msg: Value) {
        let token = msg.pointer("/params/progressToken").and_then(Value::as_i64);
        let pending = self.lock();
        let Some(p) = token
            .and_then(|t| pending.get(&t))
            .filter(|p| p.rewrite.upstream_token().is_some())
        else {
            tracing::debug!(?msg, "progress for a request no longer in flight");
            return;
        };
        p.rewrite.restore(&mut msg);
        let _ = p.tx.send(msg);
    }

    fn deliver_to_sole_call(&self, msg: Value, events: &broadcast::Sender<Value>) {
        let sole = {
            let pending = self.lock();
            let mut calls = pending.values().filter(|p| p.call_like);
            match (calls.next(), calls.next()) {
                (Some(p), None) => Some(p.tx.clone()),
                _ => None,
            }
        };
        match sole {
            Some(tx) => {
                if let Err(mpsc::error::SendError(msg)) = tx.send(msg) {
                    send_event(events, msg);
                }
            }
            None => send_event(events, msg),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Pending>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn send_event(events: &broadcast::Sender<Value>, msg: Value) {
    // No subscriber is fine: nobody is interested right now.
    let _ = events.send(msg);
}

/// Whether an upstream is reachable, mirrored in the `countersign_upstream_up` gauge.
pub(super) struct Health {
    upstream: String,
    up: AtomicBool,
}

impl Health {
    pub fn new(upstream: &str) -> Self {
        crate::telemetry::upstream_up(upstream, false);
        Health {
            upstream: upstream.to_owned(),
            up: AtomicBool::new(false),
        }
    }

    pub fn get(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            crate::telemetry::upstream_up(&self.upstream, up);
            tracing::info!(target: "countersign::upstream", upstream = %self.upstream, up, "upstream health changed");
        }
    }
}

/// Between reconnection attempts: 0.2 s doubling to 30 s.
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
}

/// A connection that stayed up this long resets the backoff.
pub(super) const STABLE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> broadcast::Sender<Value> {
        broadcast::channel(8).0
    }

    #[test]
    fn rewrite_replaces_id_and_token_and_restores_them() {
        let mut req = json!({"jsonrpc":"2.0","id":"c-1","method":"tools/call",
                             "params":{"name":"x","_meta":{"progressToken":"tok"}}});
        let rw = Rewrite::apply(&mut req, 42);
        assert_eq!(req["id"], 42);
        assert_eq!(req["params"]["_meta"]["progressToken"], 42);

        let mut resp = json!({"jsonrpc":"2.0","id":42,"result":{}});
        rw.restore(&mut resp);
        assert_eq!(resp["id"], "c-1");
        let mut progress = json!({"jsonrpc":"2.0","method":"notifications/progress",
                                  "params":{"progressToken":42,"progress":1}});
        rw.restore(&mut progress);
        assert_eq!(progress["params"]["progressToken"], "tok");
    }

    #[test]
    fn rewrite_without_token_adds_none() {
        let mut req = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
        let rw = Rewrite::apply(&mut req, 7);
        assert!(req.get("params").is_none());
        assert!(rw.upstream_token().is_none());
    }

    #[tokio::test]
    async fn routes_responses_by_id_and_progress_by_token() {
        let inflight = InFlight::new();
        let mut a = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"p"}}});
        let mut b = json!({"jsonrpc":"2.0","id":1,"method":"tools/call"});
        let (ra, mut rx_a) = inflight.register(&mut a);
        let (rb, mut rx_b) = inflight.register(&mut b);
        assert_ne!(ra.upstream_id, rb.upstream_id);

        let ev = events();
        inflight.route(
            json!({"jsonrpc":"2.0","id":rb.upstream_id,"result":{"who":"b"}}),
            &ev,
        );
        inflight.route(
            json!({"jsonrpc":"2.0","method":"notifications/progress",
                              "params":{"progressToken":ra.upstream_id,"progress":1}}),
            &ev,
        );
        inflight.route(
            json!({"jsonrpc":"2.0","id":ra.upstream_id,"result":{"who":"a"}}),
            &ev,
        );

        assert_eq!(
            rx_b.recv().await.unwrap(),
            json!({"jsonrpc":"2.0","id":1,"result":{"who":"b"}})
        );
        assert_eq!(rx_a.recv().await.unwrap()["params"]["progressToken"], "p");
        assert_eq!(rx_a.recv().await.unwrap()["result"]["who"], "a");
        assert!(
            !inflight.remove(ra.upstream_id),
            "answered requests leave the registry"
        );
    }

    #[tokio::test]
    async fn server_requests_go_to_the_sole_call_else_to_events() {
        let inflight = InFlight::new();
        let ev = events();
        let mut ev_rx = ev.subscribe();
        let sampling =
            json!({"jsonrpc":"2.0","id":5,"method":"sampling/createMessage","params":{}});

        inflight.route(sampling.clone(), &ev);
        assert_eq!(
            ev_rx.try_recv().unwrap(),
            sampling,
            "nothing in flight: an event"
        );

        let mut call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call"});
        let (_, mut call_rx) = inflight.register(&mut call);
        let mut list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});
        let _list = inflight.register(&mut list);
        inflight.route(sampling.clone(), &ev);
        assert_eq!(
            call_rx.try_recv().unwrap(),
            sampling,
            "keeps the upstream's id"
        );

        let changed = json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"});
        inflight.route(changed.clone(), &ev);
        assert_eq!(ev_rx.try_recv().unwrap(), changed);

        let mut second = json!({"jsonrpc":"2.0","id":3,"method":"tools/call"});
        let _second = inflight.register(&mut second);
        inflight.route(sampling.clone(), &ev);
        assert_eq!(
            ev_rx.try_recv().unwrap(),
            sampling,
            "two calls: ambiguous, an event"
        );
    }

    #[tokio::test]
    async fn fail_all_answers_with_the_client_id() {
        let inflight = InFlight::new();
        let mut req = json!({"jsonrpc":"2.0","id":"mine","method":"tools/call"});
        let (_, mut rx) = inflight.register(&mut req);
        inflight.fail_all("upstream x exited");
        let err = rx.recv().await.unwrap();
        assert_eq!(err["id"], "mine");
        assert_eq!(err["error"]["code"], -32000);
    }

    #[tokio::test]
    async fn exchange_ends_with_the_response_and_does_not_cancel_after_it() {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancelled = std::sync::Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let on_cancel: CancelFn = Box::new(move |_| flag.store(true, Ordering::SeqCst));
        let mut ex = Exchange::new(rx, 1.into(), "u", Duration::from_secs(5), Some(on_cancel));
        tx.send(json!({"jsonrpc":"2.0","method":"notifications/message","params":{}}))
            .unwrap();
        tx.send(json!({"jsonrpc":"2.0","id":1,"result":{}}))
            .unwrap();
        assert!(ex.next().await.unwrap().get("method").is_some());
        assert!(ex.next().await.unwrap().get("result").is_some());
        assert!(ex.next().await.is_none());
        drop(ex);
        assert!(!cancelled.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn dropping_an_unfinished_exchange_cancels() {
        let (_tx, rx) = mpsc::unbounded_channel();
        let cancelled = std::sync::Arc::new(Mutex::new(None::<String>));
        let slot = cancelled.clone();
        let on_cancel: CancelFn = Box::new(move |r| *slot.lock().unwrap() = Some(r.to_owned()));
        drop(Exchange::new(
            rx,
            1.into(),
            "u",
            Duration::from_secs(5),
            Some(on_cancel),
        ));
        assert!(cancelled.lock().unwrap().is_some());
    }

    #[tokio::test]
    async fn exchange_times_out_with_an_error_and_cancels() {
        let (_tx, rx) = mpsc::unbounded_channel();
        let cancelled = std::sync::Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let on_cancel: CancelFn = Box::new(move |_| flag.store(true, Ordering::SeqCst));
        let mut ex = Exchange::new(
            rx,
            "c".into(),
            "u",
            Duration::from_millis(50),
            Some(on_cancel),
        );
        let err = tokio::time::timeout(Duration::from_secs(5), ex.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(err["id"], "c");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("did not answer")
        );
        assert!(cancelled.load(Ordering::SeqCst));
        assert!(ex.next().await.is_none());
    }

    #[tokio::test]
    async fn a_closed_channel_yields_an_error_response() {
        let (tx, rx) = mpsc::unbounded_channel::<Value>();
        drop(tx);
        let mut ex = Exchange::new(rx, 9.into(), "u", Duration::from_secs(5), None);
        assert_eq!(ex.next().await.unwrap()["error"]["code"], -32000);
    }

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
