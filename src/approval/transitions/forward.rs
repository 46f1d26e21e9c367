//! `Forward`: a held call uses its approval's grant, checked on the ledger, and the forward is
//! recorded in the same commit.

use super::{Shared, event};
use crate::approval::Status;
use crate::approval::ledger::{Binding, GrantRefusal};
use crate::approval::table;
use crate::audit::events::{AuditAlert, AuditEvent, CallForwarded};
use crate::audit::{NewEvent, Transition};
use futures::future::BoxFuture;
use uuid::Uuid;

/// Uses an approval's grant for one call and records the forward, together: the check is on
/// the ledger, so a row forged in the `approvals` table runs nothing.
pub(in crate::approval) struct Forward {
    pub ledger: Shared,
    pub id: Uuid,
    pub call_id: Uuid,
    pub binding: Binding,
    pub forwarded: CallForwarded,
    /// What the working table said (an approved row the ledger disagrees with is an alert).
    pub row_status: Status,
    pub now: i64,
    /// Set by `decide`: why the grant may not be used, if it may not.
    pub refused: Option<GrantRefusal>,
}

impl Transition for Forward {
    /// Changes to different approvals share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        Some(("approval", self.id.to_string()))
    }

    fn decide(&mut self) -> Vec<NewEvent> {
        let ledger = self.ledger.lock().expect("ledger lock");
        match ledger.grant(self.id, &self.binding, self.now) {
            Ok(_) => vec![event(
                self.call_id,
                "countersign",
                AuditEvent::CallForwarded(self.forwarded.clone()),
            )],
            Err(why) => {
                let forged = self.row_status == Status::Approved
                    && ledger
                        .get(self.id)
                        .is_some_and(|e| e.status != Status::Approved);
                self.refused = Some(why.clone());
                if forged {
                    tracing::error!(alert = "approval-row-forged", approval = %self.id, "the approvals table says approved, the audit log does not: the call is refused");
                    let alert = AuditAlert {
                        what: "approval row forged".into(),
                        approval_id: Some(self.id),
                        detail: format!(
                            "the approvals table says approved, but {why}; the call was not run"
                        ),
                    };
                    return vec![event(
                        self.call_id,
                        "countersign",
                        AuditEvent::AuditAlert(alert),
                    )];
                }
                Vec::new()
            }
        }
    }

    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if self.refused.is_none() {
                table::consume(conn, self.id, self.call_id).await?;
            }
            Ok(())
        })
    }
}
