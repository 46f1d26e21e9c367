//! The broker's port to the people it asks: what a chat backend (or any notifier) is told about
//! an approval's life. Approval owns this interface; the chat adapters implement it, so nothing
//! here depends on chat.

use super::Approval;
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;

/// Why a notifier (a chat backend) could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The chat server could not be reached or answered with an error (after retries).
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// The chat server refused the request (bad token, no access to the channel, …).
    #[error("{backend} refused: {detail}")]
    Refused {
        backend: &'static str,
        detail: String,
    },
    #[error("chat store: {0}")]
    Store(#[from] sqlx::Error),
}

/// How an approved call ended, for the card's thread.
#[derive(Debug, Clone)]
pub struct CallSummary {
    /// `ok`, `tool_error`, `upstream_error`, `timeout`, `cancelled`, …
    pub outcome: String,
    /// The tool's own time, from sending the call upstream to its answer.
    pub tool_time: Duration,
    /// From the call's arrival to its answer, including the wait for approval.
    pub total_time: Duration,
    /// The upstream's JSON-RPC response; posted only when the policy's `post_results` says so.
    pub response: Option<Value>,
}

impl CallSummary {
    /// "the tool ran 2 ms, 35.7 s after the request": the tool's own time apart from the wait.
    pub fn timing(&self) -> String {
        format!(
            "the tool ran {} ms, {:.1} s after the request",
            self.tool_time.as_millis(),
            self.total_time.as_secs_f64()
        )
    }
}

/// Told about every approval's life. Notifications other than [`Notifier::requested`] are
/// best effort: they are logged when they fail, and never change a decision.
pub trait Notifier: Send + Sync + 'static {
    /// The backend's name in configuration, audit events and `Ballot::source`: `mattermost`,
    /// `matrix`, `slack`, `webhook`.
    fn name(&self) -> &'static str;

    /// Posts the card for a new approval into `approval.spec.channel` (or the backend's default
    /// channel), retrying with backoff until the approval expires. An error means nobody could
    /// be asked: the broker cancels the approval and the call is refused (fail closed).
    fn requested<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, Result<(), NotifyError>>;

    /// A vote counted without deciding: show the quorum progress.
    fn progressed<'a>(&'a self, approval: &'a Approval, approvals: u32) -> BoxFuture<'a, ()>;

    /// The approval ended (approved, denied, expired or cancelled): show the outcome, by whom
    /// and when, and remove the buttons.
    fn decided<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, ()>;

    /// The approved call ran: reply in the card's thread with its status and duration (and its
    /// result when `approval.spec.post_results`).
    fn finished<'a>(&'a self, approval: &'a Approval, call: &'a CallSummary) -> BoxFuture<'a, ()>;
}
