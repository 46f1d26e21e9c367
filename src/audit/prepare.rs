//! An event made ready for the writer on the caller's task: its payload canonical, and the
//! payload fields that the log indexes copied out.

use super::chain;
use super::{AuditError, EventKind, NewEvent};

/// An event with its payload already canonical (done on the caller's task, not the writer's).
pub(super) struct Prepared {
    pub(super) call_id: Option<String>,
    pub(super) kind: EventKind,
    pub(super) actor: String,
    pub(super) payload: String,
    pub(super) indexed: Indexed,
}

/// The payload fields copied into indexed columns.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Indexed {
    pub agent: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub approver: Option<String>,
    pub outcome: Option<String>,
}

impl Indexed {
    fn of(payload: &serde_json::Value) -> Indexed {
        let field = |name: &str| {
            payload
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Indexed {
            agent: field("agent"),
            server: field("server"),
            tool: field("tool"),
            approver: field("approver"),
            outcome: field("outcome"),
        }
    }
}

/// Checks that the payload is a JSON object and makes it canonical.
pub(super) fn prepare(event: NewEvent) -> Result<Prepared, AuditError> {
    if !event.payload.is_object() {
        return Err(AuditError::InvalidEvent(
            "the payload must be a JSON object".into(),
        ));
    }
    let payload = chain::canonical_payload(&event.payload);
    Ok(Prepared {
        call_id: event.call_id.map(|id| id.to_string()),
        kind: event.kind,
        actor: event.actor,
        indexed: Indexed::of(&event.payload),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn indexed_fields_are_top_level_strings() {
        let indexed = Indexed::of(
            &json!({"agent": "ci", "tool": 3, "server": {"x": 1}, "outcome": "denied"}),
        );
        assert_eq!(
            indexed,
            Indexed {
                agent: Some("ci".into()),
                outcome: Some("denied".into()),
                ..Indexed::default()
            }
        );
    }
}
