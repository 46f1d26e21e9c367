//! A child process speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! A supervisor task owns the child: it spawns it, handshakes (`server/discover` and/or
//! `initialize`, depending on the configured era), then waits for it to exit and restarts it
//! with exponential backoff until shutdown. Requests from all clients share the child; their
//! ids and progress tokens are rewritten by [`InFlight`].
//!
//! # Layout
//!
//! ```text
//! mod.rs         StdioTransport (the upstream's operations) and the state its parts share
//! supervisor.rs  the child's life: start, handshake, wait, stop, restart with backoff
//! handshake.rs   finding the child's era and capabilities
//! child.rs       one child process: spawning it with its pipes, stopping it
//! ```

mod child;
mod handshake;
mod supervisor;

use super::health::Health;
use super::inflight::{CancelFn, Exchange, InFlight};
use super::messages;
use super::{ClientContext, UpstreamError};
use crate::config::{StdioUpstreamConfig, UpstreamConfig};
use crate::jsonrpc;
use crate::protocol::{self, Era};
use child::encode_line;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use supervisor::Supervisor;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

pub struct StdioTransport {
    shared: Arc<Shared>,
    /// Stops the supervisor when the transport is dropped without a shutdown.
    _stop: DropGuard,
}

/// State shared by the transport, its supervisor and the child's reader.
struct Shared {
    name: String,
    timeout: Duration,
    inflight: InFlight,
    events: broadcast::Sender<Value>,
    health: Health,
    /// Lines for the current child's stdin; `None` while no handshaken child is running.
    writer: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    /// The era and capabilities from the last successful handshake.
    server: RwLock<(Option<Era>, Value)>,
}

impl StdioTransport {
    /// Spawns the child and waits for the first handshake attempt (successful or not).
    pub async fn start(
        config: &UpstreamConfig,
        stdio: &StdioUpstreamConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            timeout: config.timeout(),
            inflight: InFlight::new(),
            events: broadcast::channel(256).0,
            health: Health::new(&config.name),
            writer: Mutex::new(None),
            server: RwLock::new((None, json!({}))),
        });
        let stop = shutdown.child_token();
        let (first_tx, first_rx) = oneshot::channel();
        let supervisor = Supervisor {
            shared: shared.clone(),
            command: stdio.clone(),
            era: config.era,
            stop: stop.clone(),
        };
        tokio::spawn(supervisor.run(first_tx));
        let _ = first_rx.await;
        Ok(StdioTransport {
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
        if s.era() == Some(Era::Modern) {
            messages::add_modern_meta(&mut request, client);
        }
        let (rewrite, rx) = s.inflight.register(&mut request);
        let id = rewrite.upstream_id;
        // Registered before looking for the writer: a child exiting meanwhile fails it.
        if let Err(e) = s.send(&request) {
            s.inflight.remove(id);
            return Err(e);
        }
        let cancel: CancelFn = {
            let shared = self.shared.clone();
            Box::new(move |reason| shared.cancel(id, reason))
        };
        Ok(Exchange::new(
            rx,
            rewrite.client_id,
            &s.name,
            s.timeout,
            Some(cancel),
        ))
    }

    /// Sends a client notification; those the modern era removed are dropped for a modern child.
    pub async fn notify(
        &self,
        notification: Value,
        _client: &ClientContext,
    ) -> Result<(), UpstreamError> {
        let method = jsonrpc::method(&notification).unwrap_or_default();
        let removed =
            self.shared.era() == Some(Era::Modern) && protocol::REMOVED_IN_MODERN.contains(&method);
        if removed || messages::is_gateway_owned(method) {
            tracing::debug!(upstream = %self.shared.name, method, "notification not forwarded");
            return Ok(());
        }
        self.shared.send(&notification)
    }

    pub async fn respond(&self, response: Value) -> Result<(), UpstreamError> {
        self.shared.send(&response)
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
}

impl Shared {
    fn era(&self) -> Option<Era> {
        self.read_server().0
    }

    fn read_server(&self) -> std::sync::RwLockReadGuard<'_, (Option<Era>, Value)> {
        self.server.read().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Option<mpsc::UnboundedSender<Vec<u8>>>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one message to the running child.
    fn send(&self, msg: &Value) -> Result<(), UpstreamError> {
        let line = encode_line(msg);
        let sent = self.writer().as_ref().is_some_and(|w| w.send(line).is_ok());
        sent.then_some(())
            .ok_or_else(|| UpstreamError::Unavailable {
                upstream: self.name.clone(),
                reason: "the process is not running".into(),
            })
    }

    /// Cancels a request that is still in flight.
    fn cancel(&self, upstream_id: i64, reason: &str) {
        if self.inflight.remove(upstream_id) {
            let _ = self.send(&messages::cancelled_notification(upstream_id, reason));
        }
    }

    /// The child is handshaken: requests may flow.
    fn connected(&self, writer: mpsc::UnboundedSender<Vec<u8>>, era: Era, capabilities: Value) {
        *self.server.write().unwrap_or_else(|e| e.into_inner()) = (Some(era), capabilities);
        *self.writer() = Some(writer);
        self.health.set(true);
    }

    /// The child is going away: new requests are refused.
    fn refuse_requests(&self) {
        self.writer().take();
        self.health.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway awaits these inside spawned tasks.
    #[allow(dead_code)]
    fn futures_are_send(t: &StdioTransport, c: &ClientContext) {
        fn is_send<T: Send>(_: T) {}
        is_send(t.request(Value::Null, c));
        is_send(t.notify(Value::Null, c));
        is_send(t.respond(Value::Null));
    }
}
