//! Block Kit for Slack: the card with Approve and Deny buttons, the decided card, and the
//! modal that asks for a deny reason. What agents and approvers wrote is shown in code spans
//! and blocks with `&`, `<` and `>` escaped: no link, mention or emphasis renders.

use crate::approval::Approval;
use crate::chat::card;
use crate::chat::escape::{mrkdwn, mrkdwn_block, mrkdwn_code, one_line};
use serde_json::{Value, json};

/// Longest text of one section block (Slack allows 3000).
const MAX_SECTION_CHARS: usize = 2_900;

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
    json!({"text": mrkdwn(&one_line(&card::title(approval))), "blocks": blocks})
}

/// The card with its outcome and without buttons.
pub fn decided(approval: &Approval, approvals: u32) -> Value {
    let outcome = card::outcome(approval);
    let text = outcome
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    json!({"text": mrkdwn(&text), "blocks": facts(approval, approvals, outcome.as_ref())})
}

fn facts(approval: &Approval, approvals: u32, outcome: Option<&card::Outcome>) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(outcome) = outcome {
        let reason = match &outcome.reason {
            Some(reason) => format!(": {}", mrkdwn_code(reason)),
            None => String::new(),
        };
        blocks.push(section(&format!("*{}*{reason}", mrkdwn(&outcome.head))));
    }
    if let Some(banner) = card::banner(approval) {
        blocks.push(section(&format!("*{}*", mrkdwn(&banner))));
    }
    let mut text = format!("*{}*", mrkdwn(&one_line(&card::title(approval))));
    for (label, value) in card::facts(approval, approvals) {
        text.push_str(&format!("\n{label}: {}", mrkdwn_code(&value)));
    }
    blocks.push(section(&text));
    let arguments = card::Arguments::of(approval);
    let mut chunk: Vec<String> = Vec::new();
    let mut first = true;
    for line in arguments.lines() {
        let mut next = chunk.clone();
        next.push(line.clone());
        if !chunk.is_empty() && mrkdwn_block(&next).chars().count() > MAX_SECTION_CHARS - 20 {
            blocks.push(arguments_section(&chunk, first));
            first = false;
            chunk = vec![line];
        } else {
            chunk = next;
        }
    }
    blocks.push(arguments_section(&chunk, first));
    if let Some(notice) = arguments.notice(approval) {
        blocks.push(section(&format!(":warning: *{}*", mrkdwn(&notice))));
    }
    blocks
}

/// Some of the argument lines in a code block (the first one titled).
fn arguments_section(lines: &[String], first: bool) -> Value {
    let title = if first { "Arguments:\n" } else { "" };
    section(&format!("{title}{}", mrkdwn_block(lines)))
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": card::cut(text, MAX_SECTION_CHARS)}})
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
