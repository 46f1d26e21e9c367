//! [`Exchange`]: what the caller holds while one upstream request runs.
//!
//! It yields the messages related to the request and always ends with a response: the
//! upstream's, or an error made up here when the upstream goes away or the request times out.

use crate::jsonrpc;
use crate::upstream::messages::is_response;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Called when an [`Exchange`] ends without its response (dropped or timed out), with a reason.
pub(in crate::upstream) type CancelFn = Box<dyn FnOnce(&str) + Send + Sync>;

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
    pub(in crate::upstream) fn new(
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
    pub(in crate::upstream) fn ready(response: Value, upstream: &str) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

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
}
