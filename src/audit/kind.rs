//! What happened: [`EventKind`], one per kind of event, with the names it is stored and shown
//! as.

use super::AuditError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What happened. The string forms are stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "call.received")]
    CallReceived,
    #[serde(rename = "policy.decided")]
    PolicyDecided,
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    #[serde(rename = "approval.seen")]
    ApprovalSeen,
    #[serde(rename = "approval.vote")]
    ApprovalVote,
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    #[serde(rename = "call.forwarded")]
    CallForwarded,
    #[serde(rename = "call.completed")]
    CallCompleted,
    #[serde(rename = "call.failed")]
    CallFailed,
    #[serde(rename = "call.ambiguous")]
    CallAmbiguous,
    #[serde(rename = "audit.read")]
    AuditRead,
    #[serde(rename = "approval.reviewed")]
    ApprovalReviewed,
    #[serde(rename = "approval.refused")]
    ApprovalRefused,
    #[serde(rename = "audit.key")]
    AuditKey,
    #[serde(rename = "audit.alert")]
    AuditAlert,
}

impl EventKind {
    pub const ALL: [EventKind; 15] = [
        EventKind::CallReceived,
        EventKind::PolicyDecided,
        EventKind::ApprovalRequested,
        EventKind::ApprovalSeen,
        EventKind::ApprovalVote,
        EventKind::ApprovalDecided,
        EventKind::CallForwarded,
        EventKind::CallCompleted,
        EventKind::CallFailed,
        EventKind::CallAmbiguous,
        EventKind::AuditRead,
        EventKind::ApprovalReviewed,
        EventKind::ApprovalRefused,
        EventKind::AuditKey,
        EventKind::AuditAlert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CallReceived => "call.received",
            EventKind::PolicyDecided => "policy.decided",
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::ApprovalSeen => "approval.seen",
            EventKind::ApprovalVote => "approval.vote",
            EventKind::ApprovalDecided => "approval.decided",
            EventKind::CallForwarded => "call.forwarded",
            EventKind::CallCompleted => "call.completed",
            EventKind::CallFailed => "call.failed",
            EventKind::CallAmbiguous => "call.ambiguous",
            EventKind::AuditRead => "audit.read",
            EventKind::ApprovalReviewed => "approval.reviewed",
            EventKind::ApprovalRefused => "approval.refused",
            EventKind::AuditKey => "audit.key",
            EventKind::AuditAlert => "audit.alert",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                AuditError::InvalidQuery(format!(
                    "unknown event kind `{s}`; known kinds: {}",
                    EventKind::ALL.map(EventKind::as_str).join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        assert!("call.exploded".parse::<EventKind>().is_err());
    }
}
