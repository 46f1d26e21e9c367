//! What one `tools/call` is, as every layer sees it: the routed call, and the progress its
//! caller is told while it waits. The gateway makes them; the gate, approvals and tasks read
//! them; this module depends on nothing of theirs.

use crate::auth::Agent;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// A tool call that has been routed and whose arguments match the tool's `inputSchema`.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// Gateway-minted id (UUID v7), the key for everything recorded about this call.
    pub id: Uuid,
    pub agent: Agent,
    /// The upstream's configured name.
    pub upstream: Arc<str>,
    /// The tool's name at the upstream (not namespaced).
    pub tool: String,
    pub arguments: Value,
    /// The tool as the upstream described it (annotations, schemas).
    pub definition: Arc<Value>,
}

impl ToolCall {
    /// Time since the call arrived, read off its UUID v7 (so a task resumed after a restart
    /// still counts from the original request).
    pub fn age(&self) -> Duration {
        let arrived_ms = self.id.get_timestamp().map_or(0, |t| {
            let (secs, nanos) = t.to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        });
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(now_ms.saturating_sub(arrived_ms))
    }
}

/// Progress notifications to the client while a gate waits, on the client's own
/// `progressToken` (nothing is sent when the client gave none). Values count up from 1; the
/// upstream's later progress is offset past them so the client sees them increase.
#[derive(Clone)]
pub struct Progress {
    /// The client's token and where its notifications go; `None` when it asked for none.
    to: Option<(Value, mpsc::Sender<Value>)>,
    sent: Arc<AtomicU64>,
    /// Told the approval a held call waits on (a task records it).
    on_hold: Option<Arc<dyn Fn(Uuid) + Send + Sync>>,
    /// The caller can wait as long as the approval takes (a task): no hold limit applies.
    patient: bool,
}

impl Progress {
    /// A sink for the client's token, and the receiving end (none without a token).
    pub(crate) fn new(token: Option<Value>) -> (Self, Option<mpsc::Receiver<Value>>) {
        let sent = Arc::new(AtomicU64::new(0));
        match token {
            Some(token) => {
                let (tx, rx) = mpsc::channel(16);
                (
                    Progress {
                        to: Some((token, tx)),
                        sent,
                        on_hold: None,
                        patient: false,
                    },
                    Some(rx),
                )
            }
            None => (
                Progress {
                    to: None,
                    sent,
                    on_hold: None,
                    patient: false,
                },
                None,
            ),
        }
    }

    /// A sink that reports nowhere (for tests and tools that need one).
    pub fn none() -> Self {
        Progress::new(None).0
    }

    /// Whether the client asked for progress.
    pub fn is_wanted(&self) -> bool {
        self.to.is_some()
    }

    /// Sends one progress notification with a human-readable message. Never blocks: when the
    /// client reads too slowly, the notification is dropped.
    pub fn report(&self, message: impl Into<String>) {
        let Some((token, tx)) = &self.to else { return };
        let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": n, "message": message.into()}});
        let _ = tx.try_send(note);
    }

    /// For a task: no hold limit, and `on_hold` learns the approval the call waits on.
    pub(crate) fn for_task(mut self, on_hold: impl Fn(Uuid) + Send + Sync + 'static) -> Self {
        self.patient = true;
        self.on_hold = Some(Arc::new(on_hold));
        self
    }

    /// Whether the caller waits as long as the approval takes.
    pub fn is_patient(&self) -> bool {
        self.patient
    }

    /// The call now waits on `approval`.
    pub fn held(&self, approval: Uuid) {
        if let Some(on_hold) = &self.on_hold {
            on_hold(approval);
        }
    }

    /// How many notifications were reported.
    pub fn count(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// How a call ended, as the metrics, the trace and the audit log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The tool answered with a result.
    Ok,
    /// The tool answered with a result flagged `isError`.
    ToolError,
    /// The upstream answered with a JSON-RPC error.
    Error,
    /// The client went away or cancelled (or a task was cancelled before its call was sent).
    Cancelled,
    /// The gate refused the call.
    Refused,
    /// The upstream could not be reached.
    UpstreamUnavailable,
    /// The gateway stopped while the call waited for its gate.
    Shutdown,
    /// `Mcp-Param-*` headers did not match the arguments.
    HeaderMismatch,
    /// The arguments did not match the tool's `inputSchema`.
    InvalidArguments,
    /// A task could not be created for the call.
    TaskUnavailable,
}

impl Outcome {
    /// The outcome of a final response: `ok`, `tool_error` or `error`.
    pub fn of(response: &Value) -> Outcome {
        if response.get("error").is_some() {
            Outcome::Error
        } else if response.pointer("/result/isError") == Some(&Value::Bool(true)) {
            Outcome::ToolError
        } else {
            Outcome::Ok
        }
    }

    /// Whether the tool answered (`call.completed`), as opposed to no answer or an error one
    /// (`call.failed`).
    pub fn tool_answered(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::ToolError)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::Refused => "refused",
            Outcome::UpstreamUnavailable => "upstream_unavailable",
            Outcome::Shutdown => "shutdown",
            Outcome::HeaderMismatch => "header_mismatch",
            Outcome::InvalidArguments => "invalid_arguments",
            Outcome::TaskUnavailable => "task_unavailable",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
