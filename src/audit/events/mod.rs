//! Every event the log records, typed: [`AuditEvent`] has one variant per kind of event, each
//! carrying its payload, and is the only way to build a [`NewEvent`]. The same types write the
//! events and read them back (the approval ledger, `audit verify`'s story check, the console),
//! so a field cannot be spelt two ways.
//!
//! Every payload of a call keeps the top-level `agent`, `server`, `tool` (and where it applies
//! `approver`, `outcome`) strings that the log indexes for its filters.

mod approval;
mod call;
mod log;

pub use approval::*;
pub use call::*;
pub use log::*;

use super::{EventKind, NewEvent};
use uuid::Uuid;

/// Declares [`AuditEvent`] with the kind each variant is recorded as.
macro_rules! audit_events {
    ($($(#[$doc:meta])* $variant:ident($payload:ty) => $kind:ident,)*) => {
        /// One event to record, with its payload.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AuditEvent {
            $($(#[$doc])* $variant($payload),)*
        }

        impl AuditEvent {
            /// The kind it is recorded as.
            pub fn kind(&self) -> EventKind {
                match self {
                    $(AuditEvent::$variant(_) => EventKind::$kind,)*
                }
            }

            fn payload(&self) -> serde_json::Value {
                let value = match self {
                    $(AuditEvent::$variant(payload) => serde_json::to_value(payload),)*
                };
                value.expect("an audit payload is plain data and serialises")
            }
        }
    };
}

audit_events! {
    CallReceived(CallReceived) => CallReceived,
    PolicyDecided(PolicyDecided) => PolicyDecided,
    ApprovalRequested(ApprovalRequested) => ApprovalRequested,
    ApprovalSeen(ApprovalSeen) => ApprovalSeen,
    ApprovalVote(ApprovalVote) => ApprovalVote,
    /// Recorded as `approval.vote` with result `rejected`.
    VoteRejected(VoteRejected) => ApprovalVote,
    ApprovalDecided(ApprovalDecided) => ApprovalDecided,
    ApprovalRefused(ApprovalRefused) => ApprovalRefused,
    ApprovalReviewed(ApprovalReviewed) => ApprovalReviewed,
    CallForwarded(CallForwarded) => CallForwarded,
    /// An answer came back (a result, or a tool error).
    CallCompleted(CallEnded) => CallCompleted,
    /// No answer came back, or an error one.
    CallFailed(CallEnded) => CallFailed,
    CallAmbiguous(CallAmbiguous) => CallAmbiguous,
    AuditRead(AuditRead) => AuditRead,
    AuditKey(AuditKeyEvent) => AuditKey,
    AuditAlert(AuditAlert) => AuditAlert,
}

impl NewEvent {
    /// An event of call `call_id` (none for events of the log itself), done by `actor`.
    pub fn new(call_id: Option<Uuid>, actor: impl Into<String>, event: AuditEvent) -> NewEvent {
        NewEvent {
            call_id,
            kind: event.kind(),
            actor: actor.into(),
            payload: event.payload(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_event_is_recorded_as_its_kind() {
        let alert = AuditAlert {
            what: "w".into(),
            approval_id: None,
            detail: "d".into(),
        };
        let event = NewEvent::new(None, "countersign", AuditEvent::AuditAlert(alert));
        assert_eq!(event.kind, EventKind::AuditAlert);
        assert_eq!(event.payload["what"], "w");
    }
}
