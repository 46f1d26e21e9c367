//! `Review`: a second approver's review of a break-glass approval.

use super::{Shared, event};
use crate::approval::ledger::Entry;
use crate::approval::table;
use crate::audit::events::{ApprovalReviewed, AuditEvent};
use crate::audit::{NewEvent, Transition};
use futures::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

/// A second approver's review of a break-glass approval.
pub(in crate::approval) struct Review {
    pub ledger: Shared,
    pub id: Uuid,
    pub reviewer: String,
    pub note: String,
    pub authenticated: Value,
    /// Set by `decide`: why the review is not accepted, if it is not.
    pub refused: Option<ReviewRefusal>,
}

/// Why a review is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewRefusal {
    #[error("approval {0} is not a break-glass approval awaiting review")]
    NotAwaitingReview(Uuid),
    #[error("a break-glass approval is reviewed by another approver")]
    OwnApproval,
    #[error("{0} is not an approver for this call")]
    NotAnApprover(String),
    #[error("a review needs a note")]
    NoNote,
}

impl Review {
    /// The entry under review, if this reviewer may review it with this note.
    fn check<'e>(&self, entry: Option<&'e Entry>) -> Result<&'e Entry, ReviewRefusal> {
        let entry = entry
            .filter(|e| e.break_glass && !e.reviewed)
            .ok_or(ReviewRefusal::NotAwaitingReview(self.id))?;
        if entry.decided_by.as_deref() == Some(self.reviewer.as_str()) {
            return Err(ReviewRefusal::OwnApproval);
        }
        if !entry.requested.eligible.contains(&self.reviewer) {
            return Err(ReviewRefusal::NotAnApprover(self.reviewer.clone()));
        }
        if self.note.trim().is_empty() {
            return Err(ReviewRefusal::NoNote);
        }
        Ok(entry)
    }

    fn reviewed_event(&self, entry: &Entry) -> NewEvent {
        let r = &entry.requested;
        let review = ApprovalReviewed {
            approval_id: self.id,
            reviewer: self.reviewer.clone(),
            note: self.note.clone(),
            authenticated: self.authenticated.clone(),
            agent: r.agent.clone(),
            server: r.server.clone(),
            tool: r.tool.clone(),
        };
        event(
            entry.call_id,
            &self.reviewer,
            AuditEvent::ApprovalReviewed(review),
        )
    }
}

impl Transition for Review {
    /// Changes to different approvals share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        Some(("approval", self.id.to_string()))
    }

    fn decide(&mut self) -> Vec<NewEvent> {
        let ledger = self.ledger.lock().expect("ledger lock");
        match self.check(ledger.get(self.id)) {
            Ok(entry) => vec![self.reviewed_event(entry)],
            Err(why) => {
                self.refused = Some(why);
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
                table::reviewed(conn, self.id, &self.reviewer).await?;
            }
            Ok(())
        })
    }
}
