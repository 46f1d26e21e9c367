//! Reading the upstream's event streams: the SSE answer to one POST (fed into its exchange) and
//! the legacy session's standalone GET stream (fed into the upstream's events).

use super::{Shared, headers};
use crate::jsonrpc;
use crate::upstream::health::{self, Backoff};
use crate::upstream::inflight::Rewrite;
use crate::upstream::messages::{is_response, is_session_event};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The JSON-RPC messages in an SSE response; priming events (no data) and comments are skipped.
pub(super) fn sse_messages(
    response: reqwest::Response,
    upstream: String,
) -> impl Stream<Item = Value> {
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
pub(super) async fn pump(
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
        if jsonrpc::method(&msg).is_some_and(is_session_event) {
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

impl Shared {
    /// Keeps the session's GET stream open, feeding it to `events`, until the server says it
    /// has none (405) or the transport stops; at shutdown, ends the session.
    pub(super) async fn listen(self: Arc<Self>) {
        let mut backoff = health::reconnect_backoff();
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
        let response = match self
            .client
            .get(self.url.clone())
            .headers(headers::for_session(&session))
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
}
