//! `Close`: an approval ends without a vote (expiry or cancellation).

use super::{Decision, Shared, decided_event, write_decision};
use crate::approval::Status;
use crate::audit::{NewEvent, Transition};
use futures::future::BoxFuture;
use uuid::Uuid;

/// Ends a pending approval without a vote: expiry (only once it is due) or cancellation.
pub(in crate::approval) struct Close {
    pub ledger: Shared,
    pub id: Uuid,
    pub decision: Decision,
    /// Set by `decide`: whether this closed it.
    pub closed: bool,
}

impl Transition for Close {
    /// Changes to different approvals share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        Some(("approval", self.id.to_string()))
    }

    fn decide(&mut self) -> Vec<NewEvent> {
        let ledger = self.ledger.lock().expect("ledger lock");
        let Some(entry) = ledger.get(self.id) else {
            return Vec::new();
        };
        let due = self.decision.status != Status::Expired
            || entry.requested.expires_at_ms <= self.decision.at;
        if entry.status != Status::Pending || !due {
            return Vec::new();
        }
        self.closed = true;
        vec![decided_event(entry, &self.decision)]
    }

    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        if self.closed {
            write_decision(conn, self.id, &self.decision)
        } else {
            Box::pin(std::future::ready(Ok(())))
        }
    }
}
