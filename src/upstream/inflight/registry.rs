//! [`InFlight`]: the requests in flight on a connection without per-request streams (stdio),
//! and where each message the upstream sends is delivered.

use super::Rewrite;
use crate::jsonrpc::{self, Kind};
use crate::upstream::messages::is_session_event;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::{broadcast, mpsc};

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
pub(in crate::upstream) struct InFlight {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events() -> broadcast::Sender<Value> {
        broadcast::channel(8).0
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
}
