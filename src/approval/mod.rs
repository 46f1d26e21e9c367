//! The approval broker: a persisted state machine for human consent to one exact call.
//!
//! ```text
//! pending ──▶ approved ──(grant used once)──▶ the call runs
//!    ├──────▶ denied     (one authorized deny decides at once)
//!    ├──────▶ expired    (expiry denies, never approves)
//!    └──────▶ cancelled
//! ```
//!
//! Votes come from distinct authorized approvers; the requesting agent and (unless the policy
//! allows it) the requester's own human never count. Every state change is an audit
//! transition judged on the ledger (the state the verified log tells), inside the writer's
//! transaction, so double clicks, simultaneous votes and votes after the end are answered and
//! recorded but never applied twice. A restart loses nothing: the ledger is rebuilt from the
//! log. Waiters read the ledger, woken when a decision commits here or is seen in the log (a
//! vote cast by another process: the CLI, another replica).
//!
//! The parts: `broker` (the entry points: open, close, use a grant, review, read), `voting`
//! (votes, refused attempts, sightings), `eligibility` (who may vote), `transitions` (every
//! state change, as an audit transition), `ledger` (the state the verified log tells),
//! `waiting` (waiters and the watch loop), `fanout` and `notify` (telling the chat backends),
//! `table` (the working `approvals` table), `directory` (who the approvers are), `source`
//! (where a vote came from), and the approver channels `cli` and `http`; `limits` bounds
//! how many requests an agent may have waiting, and how fast it asks.

mod broker;
pub mod cli;
mod directory;
mod eligibility;
mod fanout;
pub mod http;
pub mod ledger;
pub mod limits;
mod notify;
mod source;
mod table;
mod transitions;
mod voting;
mod waiting;

pub use directory::Directory;
pub use ledger::GrantRefusal;
pub use notify::{CallSummary, Notifier, NotifyError};
pub use source::VoteSource;
/// Approving votes counted so far (chat backends show it on decided cards).
pub use table::count_approvals;
pub use table::{Approval, Status};
pub use transitions::ReviewRefusal;

use crate::audit::AuditLog;
use crate::audit::events::IdpVoter;
use crate::store::Db;
use ledger::Ledger;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use uuid::Uuid;
use waiting::Wakers;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("approval store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("no approval {0}")]
    NotFound(Uuid),
    #[error("{0}")]
    Invalid(String),
}

/// One approver's vote.
#[derive(Debug, Clone)]
pub struct Ballot {
    pub approver: String,
    pub approve: bool,
    /// Why (required for a deny through the built-in channels).
    pub reason: Option<String>,
    /// Where the vote came from: `cli`, `http`, `console`, `mattermost`, …
    pub source: VoteSource,
    /// Proof kept in the audit log (e.g. a signed chat payload). The built-in channels put
    /// how the approver was authenticated under `authenticated`.
    pub evidence: Value,
    /// A break-glass approval: decides alone, needs a written justification, flagged in audit.
    pub break_glass: Option<String>,
    /// Who the identity provider says the voter is, with their groups: set only by the
    /// console's OpenID Connect sign-in (never from a request body), and counted only for
    /// `source: console`.
    pub idp: Option<IdpVoter>,
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum VoteResult {
    /// Counted; the approval is still pending.
    Counted { approvals: u32, quorum: u32 },
    /// This vote decided the approval.
    Decided { status: Status },
    /// Not counted: the voter may not decide this call.
    NotAuthorized { why: String },
    /// The approval had already ended (double click, late vote, or another approver first).
    AlreadyDecided { status: Status, by: Option<String> },
    /// This approver had already voted.
    AlreadyVoted,
}

/// How a held call may go on once its approval is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantUse {
    /// The grant was used by this call and `call.forwarded` is recorded: it may run.
    Forwarded,
    /// The call may not run; the agent reads why.
    Refused(GrantRefusal),
}

/// The state shared by the gate, the approver API and the CLI.
pub struct Broker {
    db: Db,
    audit: AuditLog,
    directory: Arc<Directory>,
    /// Every open approval, as the verified audit log tells it.
    ledger: Arc<Mutex<Ledger>>,
    /// Wakes local waiters when a decision is committed or seen in the log.
    wakers: Wakers,
    /// Approvals whose working row says decided while the ledger says pending (see
    /// `find_changed_rows`): their waiters read the row once.
    changed_rows: Mutex<HashSet<Uuid>>,
    /// Where approvers are asked: every configured chat backend.
    chats: Vec<Arc<dyn Notifier>>,
    /// Chat updates in flight, so a short-lived process (the CLI) can wait for them.
    updates: tokio_util::task::TaskTracker,
    /// How often a waiting call reports progress (milliseconds).
    progress_every_ms: std::sync::atomic::AtomicU64,
}

/// Who saw an approval request, and how (`approval.seen` in the audit log).
#[derive(Debug, Clone)]
pub struct Sighting {
    /// The approver id when the chat user maps to one; else the chat user as the backend names it.
    pub who: String,
    /// The channel: `console`, `mattermost`, `matrix`, …
    pub source: VoteSource,
    /// `audience` (was in the channel when the card was posted), `reaction`, `acknowledgement`,
    /// `read_receipt`, `click`, …
    pub how: String,
    /// What the chat server sent, kept as evidence.
    pub evidence: Value,
}

/// Hex SHA-256 of the canonical form of the arguments (RFC 8785 with exact 64-bit integers,
/// see [`crate::canonical`]): what a grant is bound to.
pub fn arguments_digest(arguments: &Value) -> String {
    crate::canonical::sha256_hex(arguments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_key_order_and_whitespace() {
        let a = serde_json::from_str::<Value>(r#"{"b": 1, "a": [1, 2]}"#).unwrap();
        let b = serde_json::from_str::<Value>(r#"{"a":[1,2],"b":1}"#).unwrap();
        assert_eq!(arguments_digest(&a), arguments_digest(&b));
        assert_ne!(
            arguments_digest(&a),
            arguments_digest(&serde_json::json!({"a": [2, 1], "b": 1}))
        );
    }
}
