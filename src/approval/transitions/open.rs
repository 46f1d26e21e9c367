//! `Open`: a call's approval request, or joining the open one for the same exact call.

use super::{Shared, event};
use crate::approval::Approval;
use crate::approval::ledger::Binding;
use crate::approval::table;
use crate::audit::events::{ApprovalRequested, AuditEvent};
use crate::audit::{NewEvent, Transition};
use futures::future::BoxFuture;
use uuid::Uuid;

/// Opens an approval, or joins the open one for the same exact call.
pub(in crate::approval) struct Open {
    pub ledger: Shared,
    pub approval: Approval,
    pub requested: ApprovalRequested,
    /// Set by `decide`: the approval joined, when one was open.
    pub joined: Option<Uuid>,
}

impl Transition for Open {
    fn decide(&mut self) -> Vec<NewEvent> {
        let binding = Binding {
            agent: self.requested.agent.clone(),
            server: self.requested.server.clone(),
            tool: self.requested.tool.clone(),
            args_sha256: self.requested.args_sha256.clone(),
            policy_version: self.requested.policy_version.clone(),
        };
        let ledger = self.ledger.lock().expect("ledger lock");
        if let Some(open) = ledger.joinable(&binding, self.approval.created_at) {
            self.joined = Some(open.id());
            return Vec::new();
        }
        vec![event(
            self.approval.call_id,
            "countersign",
            AuditEvent::ApprovalRequested(self.requested.clone()),
        )]
    }

    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if self.joined.is_none() {
                table::insert(conn, &self.approval).await?;
            }
            Ok(())
        })
    }

    /// Opens for different exact calls decide on different approvals: they share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        let r = &self.requested;
        let binding = [
            &r.agent,
            &r.server,
            &r.tool,
            &r.args_sha256,
            &r.policy_version,
        ];
        Some(("open", binding.map(String::as_str).join("\u{1f}")))
    }
}
