//! One audit event as a line of a call's timeline: who asked, the rule, each vote with its
//! evidence, who saw it and how, the forward with its executor, the outcome with its digest.

use super::html::esc;
use crate::audit::{Event, EventKind};
use serde_json::Value;

/// The event's facts for people, escaped.
pub fn line(e: &Event) -> String {
    let p = &e.payload;
    let s = |k: &str| text(p, k);
    let shown = match e.kind {
        EventKind::CallReceived => asked(p),
        EventKind::PolicyDecided => format!(
            "rule {} (policy {}): {}. {}",
            s("rule"),
            s("policy_version"),
            s("outcome"),
            s("explanation")
        ),
        EventKind::ApprovalRequested => format!(
            "approval asked of {} (quorum {})",
            list(p.get("eligible")),
            p.get("quorum").and_then(Value::as_u64).unwrap_or(1)
        ),
        EventKind::ApprovalSeen => {
            format!("seen by {} via {} ({})", s("who"), s("source"), s("how"))
        }
        EventKind::ApprovalVote => vote(p),
        EventKind::ApprovalDecided => decided(p),
        EventKind::CallForwarded => format!("forwarded to {} as {}", s("server"), s("executor")),
        EventKind::CallCompleted | EventKind::CallFailed => ended(p),
        EventKind::ApprovalReviewed => format!("reviewed by {}: {}", s("reviewer"), s("note")),
        _ => format!("by {}", e.actor),
    };
    esc(&shown)
}

/// A string field of the payload, `-` when absent.
fn text(p: &Value, k: &str) -> String {
    p.get(k).and_then(Value::as_str).unwrap_or("-").to_owned()
}

/// `call_received`: who asked for which tool, and for whom.
fn asked(p: &Value) -> String {
    format!(
        "{} asked for {} on {}{}",
        text(p, "agent"),
        text(p, "tool"),
        text(p, "server"),
        p.get("on_behalf_of")
            .and_then(Value::as_str)
            .map(|h| format!(" on behalf of {h}"))
            .unwrap_or_default()
    )
}

/// `approval_decided`: the outcome, by whom, why, and whether glass was broken.
fn decided(p: &Value) -> String {
    format!(
        "{}{}{}{}",
        text(p, "outcome"),
        p.get("decided_by")
            .and_then(Value::as_str)
            .map(|b| format!(" by {b}"))
            .unwrap_or_default(),
        p.get("reason")
            .and_then(Value::as_str)
            .map(|r| format!(": {r}"))
            .unwrap_or_default(),
        if p.get("break_glass").and_then(Value::as_bool) == Some(true) {
            " (break-glass)"
        } else {
            ""
        }
    )
}

/// `call_completed` and `call_failed`: the outcome, how long the tool ran, and the result's
/// digest.
fn ended(p: &Value) -> String {
    let ms = |k: &str| p.get(k).and_then(Value::as_u64);
    // `duration_ms` is what events recorded before the split carry.
    let tool = ms("tool_ms").or_else(|| ms("duration_ms")).unwrap_or(0);
    let total = ms("total_ms").map_or(String::new(), |t| {
        format!(", {} after the request", super::html::duration_ms(t as i64))
    });
    format!(
        "{}: the tool ran {tool} ms{total}, result digest {}",
        text(p, "outcome"),
        text(p, "result_sha256")
    )
}

fn vote(p: &Value) -> String {
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    let result = p
        .pointer("/result/result")
        .and_then(Value::as_str)
        .unwrap_or("-");
    let how = authenticated(p);
    let reason = p
        .get("reason")
        .and_then(Value::as_str)
        .map(|r| format!(", reason: {r}"))
        .unwrap_or_default();
    let glass = p
        .get("justification")
        .and_then(Value::as_str)
        .map(|j| format!(", break-glass: {j}"))
        .unwrap_or_default();
    let groups = list(p.pointer("/idp/groups"));
    let through = match groups.as_str() {
        "-" => String::new(),
        groups => format!(", eligible through the identity provider's groups {groups}"),
    };
    format!(
        "{} voted {} via {} ({result}){reason}{glass}; signed in by {how}{through}",
        s("approver"),
        s("vote"),
        s("source")
    )
}

/// `openid connect, issuer …, subject …` or `approver token`.
pub fn authenticated(p: &Value) -> String {
    let a = p
        .get("authenticated")
        .filter(|a| !a.is_null())
        .or_else(|| p.pointer("/evidence/authenticated"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut parts = vec![
        a.get("method")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned(),
    ];
    for key in ["issuer", "subject"] {
        if let Some(v) = a.get(key).and_then(Value::as_str) {
            parts.push(format!("{key} {v}"));
        }
    }
    parts.join(", ")
}

fn list(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        Some(items) if !items.is_empty() => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_vote_through_a_group_says_which() {
        let p = json!({"approver": "idp:0123456789abcdef", "vote": "approve", "source": "console",
            "result": {"result": "counted"}, "authenticated": {"method": "openid connect",
            "issuer": "https://idp.example", "subject": "gina"},
            "idp": {"issuer": "https://idp.example", "subject": "gina", "groups": ["payments-team"]}});
        assert_eq!(
            super::vote(&p),
            "idp:0123456789abcdef voted approve via console (counted); signed in by openid connect, \
             issuer https://idp.example, subject gina, eligible through the identity provider's \
             groups payments-team"
        );
        let mut by_id = p.clone();
        by_id["idp"]["groups"] = json!([]);
        assert!(!super::vote(&by_id).contains("eligible through"));
    }
}
