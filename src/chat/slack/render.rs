//! Block Kit for Slack: the card with Approve and Deny buttons, the decided card, and the
//! modal that asks for a deny reason.

use crate::approval::Approval;
use crate::chat::card;
use serde_json::{Value, json};

pub const APPROVE_ACTION: &str = "countersign_approve";
pub const DENY_ACTION: &str = "countersign_deny";
/// The deny-reason modal's `callback_id`, and its input's block and action ids.
pub const DENY_MODAL: &str = "countersign_deny_reason";
pub const REASON_BLOCK: &str = "reason";
pub const REASON_INPUT: &str = "reason";

/// `text` (the notification fallback) and `blocks` for a pending approval.
pub fn card(approval: &Approval, approvals: u32) -> Value {
    let mut blocks = facts(approval, approvals, None);
    let id = approval.id.to_string();
    blocks.push(json!({
        "type": "actions", "block_id": format!("countersign_{id}"),
        "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": id,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": DENY_ACTION, "style": "danger", "value": id,
             "text": {"type": "plain_text", "text": "Deny"}},
        ],
    }));
    json!({"text": card::title(approval), "blocks": blocks})
}

/// The card with its outcome and without buttons.
pub fn decided(approval: &Approval, approvals: u32) -> Value {
    let outcome = card::outcome(approval).unwrap_or_default();
    json!({"text": outcome, "blocks": facts(approval, approvals, Some(&outcome))})
}

fn facts(approval: &Approval, approvals: u32, outcome: Option<&str>) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(outcome) = outcome {
        blocks.push(section(&format!("*{}*", escape(outcome))));
    }
    if let Some(banner) = card::banner(approval) {
        blocks.push(section(&format!("*{}*", escape(&banner))));
    }
    let mut text = format!("*{}*", escape(&card::title(approval)));
    for (label, value) in card::facts(approval, approvals) {
        text.push_str(&format!("\n{label}: `{}`", escape(&value)));
    }
    blocks.push(section(&text));
    blocks
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": card::cut(text, 2900)}})
}

/// The modal that asks a denying approver why; `private_metadata` carries the approval id.
pub fn deny_modal(approval_id: &str) -> Value {
    json!({
        "type": "modal", "callback_id": DENY_MODAL, "private_metadata": approval_id,
        "title": {"type": "plain_text", "text": "Deny the call"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": REASON_BLOCK,
            "label": {"type": "plain_text", "text": "Why? (the agent is told)"},
            "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": true},
        }],
    })
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
