//! The protocol core: answers what the gateway owns, routes everything else to an upstream.
//!
//! The front ends (HTTP, stdio) authenticate the caller and decide the client's era; then every
//! message comes through [`Gateway::handle`]. `tools/call` takes the path in [`call`]: resolve
//! the upstream, validate the arguments, pass the [`CallGate`], forward.

mod admission;
mod call;
pub mod catalog;
pub mod gate;
mod listing;
mod pipeline;
mod reply;
mod route;
pub mod session;
mod tasks;

pub use gate::{CallGate, Clearance, ForwardAll, ToolCall};
pub use gate::{CallOutcome, Progress};
pub use reply::{Reply, ReplyStream};
pub use session::{Session, Sessions};

use crate::auth::Agent;
use crate::jsonrpc::{self, Kind};
use crate::protocol::{self, Era};
use crate::upstream::{ClientContext, Upstream};
use catalog::{Namespaces, Snapshot, UpstreamItems};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Who sent a message and over what.
#[derive(Clone)]
pub struct Caller {
    pub agent: Agent,
    pub client: ClientContext,
    /// The legacy session (HTTP) or the stdio client; `None` for modern stateless HTTP.
    pub session: Option<Arc<Session>>,
    /// The request's `Mcp-Param-*` headers (lowercased name after the prefix, decoded value),
    /// checked against the arguments; `None` where the transport has no headers (stdio).
    pub param_headers: Option<Vec<(String, String)>>,
}

/// The gateway's shared core. Cheap to share behind an `Arc`.
pub struct Gateway {
    upstreams: Vec<Arc<Upstream>>,
    namespaces: Namespaces,
    /// Each upstream's last listings; guarded by a std mutex (never held across `.await`).
    items: Mutex<Vec<UpstreamItems>>,
    /// The merged view built from `items`, swapped whole.
    snapshot: RwLock<Arc<Snapshot>>,
    gate: Arc<dyn CallGate>,
    page_size: usize,
    pub sessions: Sessions,
    /// Task handles, when the gateway has a database (see [`Gateway::enable_tasks`]).
    tasks: OnceLock<Arc<crate::tasks::Tasks>>,
    /// Where requests that pass without a policy are recorded (see [`Gateway::record_with`]).
    audit: OnceLock<crate::audit::AuditLog>,
    /// Cancelled when the gateway begins to stop (see [`Gateway::stop_holding`]).
    stopping: tokio_util::sync::CancellationToken,
}

impl Gateway {
    pub fn new(
        upstreams: Vec<Arc<Upstream>>,
        namespaces: Namespaces,
        gate: Arc<dyn CallGate>,
        page_size: usize,
    ) -> Arc<Self> {
        let items = vec![UpstreamItems::default(); upstreams.len()];
        Arc::new(Gateway {
            upstreams,
            namespaces,
            items: Mutex::new(items),
            snapshot: RwLock::default(),
            gate,
            page_size,
            sessions: Sessions::default(),
            tasks: OnceLock::new(),
            audit: OnceLock::new(),
            stopping: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Serves task handles from `tasks`: held calls of clients that take tasks become tasks,
    /// and tasks left by a gateway that stopped are taken over (now, and whenever a lease
    /// lapses) until `shutdown`.
    pub async fn enable_tasks(
        self: &Arc<Self>,
        tasks: Arc<crate::tasks::Tasks>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), sqlx::Error> {
        if self.tasks.set(tasks.clone()).is_err() {
            return Ok(());
        }
        let orphans = tasks.claim_orphans(true).await?;
        self.resume_tasks(&tasks, orphans).await;
        let gateway = Arc::downgrade(self);
        let keeper = tasks.clone();
        tasks.spawn_keeper(shutdown, move |orphans| {
            let (Some(gateway), tasks) = (gateway.upgrade(), keeper.clone()) else {
                return;
            };
            tokio::spawn(async move { gateway.resume_tasks(&tasks, orphans).await });
        });
        Ok(())
    }

    /// Once no request is left: resolves when the gate has recorded how the last calls ended.
    pub async fn drain(&self) {
        self.gate.drain().await;
    }

    /// The gateway begins to stop: calls still waiting for their gate (a human) are answered
    /// now, calls already forwarded run on.
    pub fn stop_holding(&self) {
        self.stopping.cancel();
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Handles one message from a client.
    pub async fn handle(&self, caller: &Caller, message: Value) -> Reply {
        match jsonrpc::classify(&message) {
            Ok(Kind::Request) => self.request(caller, message).await,
            Ok(Kind::Notification) => {
                self.notification(caller, message).await;
                Reply::Accepted
            }
            Ok(Kind::Response) => {
                self.client_response(caller, message).await;
                Reply::Accepted
            }
            Err(why) => Reply::Response(jsonrpc::error(
                message.get("id").cloned(),
                jsonrpc::code::INVALID_REQUEST,
                why,
            )),
        }
    }

    async fn request(&self, caller: &Caller, message: Value) -> Reply {
        let method = jsonrpc::method(&message).unwrap_or_default().to_owned();
        let reply = self.answer(caller, message).await;
        if caller.client.era != Era::Modern {
            return reply;
        }
        match reply {
            Reply::Response(mut response) => {
                complete_modern_result(&method, &mut response);
                Reply::Response(response)
            }
            Reply::Stream(stream) => {
                Reply::Stream(Box::new(stream.completing_modern_results(method)))
            }
            Reply::Accepted => Reply::Accepted,
        }
    }

    async fn answer(&self, caller: &Caller, message: Value) -> Reply {
        let id = message["id"].clone();
        let method = jsonrpc::method(&message).unwrap_or_default();
        match method {
            "ping" => Reply::Response(jsonrpc::result(id, json!({}))),
            "server/discover" => Reply::Response(jsonrpc::result(id, self.discover_result())),
            "initialize" => Reply::Response(jsonrpc::result(id, self.initialize_result(caller))),
            "tools/call" => self.call(caller, message).await,
            "tasks/get" | "tasks/cancel" | "tasks/result" | "tasks/list" | "tasks/update"
                if self.tasks.get().is_some() =>
            {
                let tasks = self.tasks.get().expect("checked").clone();
                self.task_method(&tasks, caller, message).await
            }
            m => match catalog::Listing::from_method(m) {
                Some(listing) => Reply::Response(self.list(caller, listing, &message).await),
                None => self.route(caller, message).await,
            },
        }
    }

    /// The `initialize` result for a legacy client: the client's version when we speak it.
    pub fn initialize_result(&self, caller: &Caller) -> Value {
        json!({
            "protocolVersion": caller.client.protocol_version,
            "capabilities": self.capabilities(Era::Legacy),
            "serverInfo": server_info(),
            "instructions": "Countersign gateway: tools of several MCP servers, named server__tool; calls pass a policy and may wait for human approval.",
        })
    }

    /// The `server/discover` result for modern clients.
    fn discover_result(&self) -> Value {
        json!({
            "supportedVersions": protocol::MODERN_VERSIONS,
            "capabilities": self.capabilities(Era::Modern),
            "serverInfo": server_info(),
            "instructions": "Countersign gateway: tools of several MCP servers, named server__tool; calls pass a policy and may wait for human approval.",
            "ttlMs": 0,
            "cacheScope": "private",
            "resultType": "complete",
            "_meta": {protocol::META_SERVER_INFO: server_info()},
        })
    }

    /// What the gateway serves: tools always, tasks when it has a database; the rest when some
    /// upstream offers it.
    fn capabilities(&self, era: Era) -> Value {
        let mut caps = json!({"tools": {"listChanged": true}});
        if self.tasks.get().is_some() {
            match era {
                Era::Modern => caps["extensions"] = json!({tasks::EXTENSION: {}}),
                Era::Legacy => {
                    caps["tasks"] =
                        json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}})
                }
            }
        }
        let offered = |key: &str| {
            self.upstreams
                .iter()
                .any(|u| u.capabilities().get(key).is_some())
        };
        if offered("resources") {
            let subscribe = self.upstreams.iter().any(|u| {
                u.capabilities().pointer("/resources/subscribe") == Some(&Value::Bool(true))
            });
            caps["resources"] = json!({"subscribe": subscribe, "listChanged": true});
        }
        if offered("prompts") {
            caps["prompts"] = json!({"listChanged": true});
        }
        if offered("logging") {
            caps["logging"] = json!({});
        }
        if offered("completions") {
            caps["completions"] = json!({});
        }
        caps
    }

    async fn notification(&self, caller: &Caller, message: Value) {
        if self.drop_request_notification(caller, &message).await {
            return;
        }
        match jsonrpc::method(&message).unwrap_or_default() {
            "notifications/initialized" => {}
            "notifications/cancelled" => {
                let request_id = jsonrpc::params(&message).and_then(|p| p.get("requestId"));
                if let (Some(session), Some(request_id)) = (&caller.session, request_id) {
                    let found = session.cancel(request_id);
                    tracing::debug!(session = %session.id, %request_id, found, "client cancelled a request");
                }
            }
            _ => {
                for upstream in &self.upstreams {
                    if let Err(e) = upstream.notify(message.clone(), &caller.client).await {
                        tracing::warn!(upstream = %upstream.name, error = %e, "could not forward a notification");
                    }
                }
            }
        }
    }

    /// A client's answer to a server-to-client request goes back to the upstream that asked.
    async fn client_response(&self, caller: &Caller, mut message: Value) {
        let route = caller.session.as_ref().zip(message.get("id").cloned());
        let Some((upstream, upstream_id)) = route.and_then(|(s, id)| s.take_server_request(&id))
        else {
            tracing::warn!("a client response matches no pending server-to-client request");
            return;
        };
        jsonrpc::set_id(&mut message, upstream_id);
        if let Err(e) = self.upstreams[upstream].respond(message).await {
            tracing::warn!(error = %e, "could not deliver a client response upstream");
        }
    }

    /// Forwards upstream notifications (list changes, resource updates) to every session, and
    /// keeps the catalog fresh. Runs until the upstreams' event channels close.
    pub fn spawn_event_relay(self: &Arc<Self>) {
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let mut events = upstream.events();
            let gateway = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    let event = match events.recv().await {
                        Ok(event) => event,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    };
                    let Some(gateway) = gateway.upgrade() else {
                        break;
                    };
                    gateway.on_upstream_event(index, event).await;
                }
            });
        }
    }

    async fn on_upstream_event(&self, upstream: usize, event: Value) {
        let method = jsonrpc::method(&event).unwrap_or_default();
        if jsonrpc::classify(&event) == Ok(Kind::Request) {
            let refusal = jsonrpc::error(
                event.get("id").cloned(),
                jsonrpc::code::METHOD_NOT_FOUND,
                "no client to ask outside a request",
            );
            let _ = self.upstreams[upstream].respond(refusal).await;
            return;
        }
        let changed = match method {
            "notifications/tools/list_changed" => Some(catalog::Listing::Tools),
            "notifications/prompts/list_changed" => Some(catalog::Listing::Prompts),
            "notifications/resources/list_changed" => Some(catalog::Listing::Resources),
            _ => None,
        };
        if let Some(listing) = changed {
            self.refresh_one(upstream, listing).await;
        }
        self.sessions.broadcast(&event);
    }
}

/// Results that 2026-07-28 makes cacheable: they must carry `ttlMs` and `cacheScope`.
const CACHEABLE: &[&str] = &[
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// Adds what 2026-07-28 requires of a result when whoever produced it left it out (a legacy
/// upstream answering a modern client, or the gateway's own tool errors): `resultType`, and
/// cache hints on cacheable results (`private`: results may differ per agent).
pub fn complete_modern_result(method: &str, response: &mut Value) {
    let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    result
        .entry("resultType")
        .or_insert_with(|| json!("complete"));
    if CACHEABLE.contains(&method) {
        result.entry("ttlMs").or_insert_with(|| json!(0));
        result
            .entry("cacheScope")
            .or_insert_with(|| json!("private"));
    }
}

fn server_info() -> Value {
    json!({"name": "countersign", "version": env!("CARGO_PKG_VERSION")})
}

/// The client context of a modern request, read from its `_meta`.
pub fn modern_client(message: &Value) -> ClientContext {
    let meta = jsonrpc::meta(message);
    ClientContext {
        era: Era::Modern,
        protocol_version: meta
            .and_then(|m| m.get(protocol::META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
            .unwrap_or(protocol::MODERN_VERSION)
            .to_owned(),
        capabilities: meta
            .and_then(|m| m.get(protocol::META_CLIENT_CAPABILITIES))
            .cloned()
            .unwrap_or_else(|| json!({})),
        mirrored_headers: Vec::new(),
    }
}

/// The client context of a legacy `initialize` request: the version it asked for when the
/// gateway speaks it, else the newest legacy version.
pub fn legacy_client(initialize: &Value) -> ClientContext {
    let params = jsonrpc::params(initialize);
    let asked = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    let version = asked
        .filter(|v| protocol::LEGACY_VERSIONS.contains(v))
        .unwrap_or(protocol::LATEST_LEGACY_VERSION);
    ClientContext {
        era: Era::Legacy,
        protocol_version: version.to_owned(),
        capabilities: params
            .and_then(|p| p.get("capabilities"))
            .cloned()
            .unwrap_or_else(|| json!({})),
        mirrored_headers: Vec::new(),
    }
}
