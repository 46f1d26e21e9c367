//! Every change of an approval's state, as an audit [`Transition`](crate::audit::Transition): it decides on the ledger
//! (the state the verified log tells) inside the audit writer's transaction, and its events
//! and its working-state row commit together. No state row can exist without its event, and
//! a forged row changes nothing the ledger says.
//!
//! One file per transition: `open` (a request, or joining the open one for the same call),
//! `cast` (a vote), `close` (expiry or cancellation), `forward` (using a grant) and `review`
//! (of a break-glass approval). This file holds what they share: the decision they record and
//! its event.

mod cast;
mod close;
mod forward;
mod open;
mod review;

pub(super) use cast::Cast;
pub(super) use close::Close;
pub(super) use forward::Forward;
pub(super) use open::Open;
pub(super) use review::Review;
pub use review::ReviewRefusal;

use super::Status;
use super::ledger::{Entry, Ledger};
use super::table;
use crate::audit::NewEvent;
use crate::audit::events::{ApprovalDecided, AuditEvent};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

type Shared = Arc<Mutex<Ledger>>;

fn event(call_id: Uuid, actor: &str, event: AuditEvent) -> NewEvent {
    NewEvent::new(Some(call_id), actor, event)
}

/// A decision to record: the approval's new status, with who and why.
#[derive(Debug, Clone)]
pub(super) struct Decision {
    pub status: Status,
    pub by: Option<String>,
    pub reason: Option<String>,
    pub break_glass: bool,
    pub at: i64,
}

fn decided_event(entry: &Entry, decision: &Decision) -> NewEvent {
    let r = &entry.requested;
    let payload = ApprovalDecided {
        approval_id: r.approval_id,
        outcome: decision.status.as_str().into(),
        decided_by: decision.by.clone(),
        reason: decision.reason.clone(),
        break_glass: decision.break_glass,
        agent: r.agent.clone(),
        server: r.server.clone(),
        tool: r.tool.clone(),
        approvers: entry.votes.clone(),
    };
    let actor = decision.by.as_deref().unwrap_or("countersign");
    event(entry.call_id, actor, AuditEvent::ApprovalDecided(payload))
}

fn write_decision<'c>(
    conn: &'c mut sqlx::AnyConnection,
    id: Uuid,
    decision: &'c Decision,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { table::decide(conn, id, decision).await })
}
