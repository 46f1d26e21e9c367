//! Per-client state that outlives one request: a legacy HTTP session, or a stdio client.

use crate::auth::Agent;
use crate::upstream::ClientContext;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// A client session. Mutexes guard short, non-async critical sections only.
pub struct Session {
    /// Gateway-minted id (the `Mcp-Session-Id` for HTTP), independent of upstream sessions.
    pub id: String,
    /// The agent that opened the session; only it may use the session.
    pub agent: Agent,
    client: RwLock<ClientContext>,
    /// Messages for the client outside any request (the GET stream, or stdout).
    outbox: broadcast::Sender<Value>,
    /// Requests in flight, by the client's id, so `notifications/cancelled` can stop them.
    inflight: Mutex<HashMap<String, CancellationToken>>,
    /// Server-to-client requests awaiting the client's answer: gateway id → (upstream, upstream id).
    server_requests: Mutex<HashMap<String, (usize, Value)>>,
    next_server_request: AtomicU64,
    last_seen: Mutex<Instant>,
}

impl Session {
    pub fn new(id: String, agent: Agent, client: ClientContext) -> Arc<Self> {
        Arc::new(Session {
            id,
            agent,
            client: RwLock::new(client),
            outbox: broadcast::channel(256).0,
            inflight: Mutex::default(),
            server_requests: Mutex::default(),
            next_server_request: AtomicU64::new(1),
            last_seen: Mutex::new(Instant::now()),
        })
    }

    pub fn client(&self) -> ClientContext {
        self.client.read().expect("session lock").clone()
    }

    pub fn set_client(&self, client: ClientContext) {
        *self.client.write().expect("session lock") = client;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.outbox.subscribe()
    }

    /// Queues a message for the client's standalone stream; dropped if nobody listens.
    pub fn send(&self, message: Value) {
        let _ = self.outbox.send(message);
    }

    pub fn touch(&self) {
        *self.last_seen.lock().expect("session lock") = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        self.last_seen.lock().expect("session lock").elapsed()
    }

    /// Registers a request in flight; the token is cancelled by `cancel`.
    pub fn track(&self, client_id: &Value) -> CancellationToken {
        let token = CancellationToken::new();
        self.inflight
            .lock()
            .expect("session lock")
            .insert(client_id.to_string(), token.clone());
        token
    }

    pub fn untrack(&self, client_id: &Value) {
        self.inflight
            .lock()
            .expect("session lock")
            .remove(&client_id.to_string());
    }

    /// Cancels a request in flight; false if it is unknown or already done.
    pub fn cancel(&self, client_id: &Value) -> bool {
        let token = self
            .inflight
            .lock()
            .expect("session lock")
            .remove(&client_id.to_string());
        token.inspect(CancellationToken::cancel).is_some()
    }

    /// Gives a server-to-client request an id unique in this session and remembers the way back.
    pub fn map_server_request(&self, upstream: usize, upstream_id: Value) -> Value {
        let n = self.next_server_request.fetch_add(1, Ordering::Relaxed);
        let id = format!("cs-{n}");
        self.server_requests
            .lock()
            .expect("session lock")
            .insert(id.clone(), (upstream, upstream_id));
        Value::String(id)
    }

    /// The upstream and its id for the client's answer to a server-to-client request.
    pub fn take_server_request(&self, id: &Value) -> Option<(usize, Value)> {
        let key = id.as_str()?;
        self.server_requests
            .lock()
            .expect("session lock")
            .remove(key)
    }
}

/// All live sessions.
#[derive(Default)]
pub struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    pub fn insert(&self, session: Arc<Session>) {
        self.map
            .write()
            .expect("sessions lock")
            .insert(session.id.clone(), session);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.read().expect("sessions lock").get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map.write().expect("sessions lock").remove(id)
    }

    /// Sends a message to every session's standalone stream.
    pub fn broadcast(&self, message: &Value) {
        for session in self.map.read().expect("sessions lock").values() {
            session.send(message.clone());
        }
    }

    /// Drops sessions idle longer than `max_idle`; returns how many went.
    pub fn expire(&self, max_idle: Duration) -> usize {
        let mut map = self.map.write().expect("sessions lock");
        let before = map.len();
        map.retain(|_, s| s.idle_for() < max_idle);
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A new unguessable session id (122 random bits).
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
