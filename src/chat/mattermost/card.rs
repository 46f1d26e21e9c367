//! The approval card: the post's `message` and `props` for each state of an approval.
//!
//! While pending the card carries Approve / Deny buttons (attachment actions) whose context holds
//! single-use tokens; once decided it shows the outcome and has no actions, so the buttons are
//! gone. Click answers (`update`) and later edits (`/patch`) both send the whole card, because
//! Mattermost replaces `props` as a whole and blanks a missing `message`.
//!
//! What agents and approvers wrote (tool, agent, arguments, reasons) is shown in code spans and
//! code blocks, where Mattermost renders no link, mention, emoji or emphasis.

use super::cards::Tokens;
use crate::approval::{Approval, Status};
use crate::chat::card;
use crate::chat::escape::{markdown_block, markdown_code};
use crate::timestamp::utc_display as utc;
use serde_json::{Value, json};

/// Longest string value shown in a call's result; longer ones are cut.
const MAX_VALUE_CHARS: usize = 200;
/// Longest result block shown in the card's thread.
const MAX_RESULT_CHARS: usize = 3_000;

/// Everything a card shows besides the approval itself.
pub struct View<'a> {
    pub approval: &'a Approval,
    /// Approvers who approved so far, as shown (`@alice`).
    pub approved_by: Vec<String>,
    /// While pending: the click URL and this rendering's tokens.
    pub buttons: Option<(&'a str, &'a Tokens)>,
}

/// `{"message": …, "props": …}` for the card in its current state.
pub fn render(view: &View) -> Value {
    let a = view.approval;
    let mut message = String::new();
    if let Some(label) = &a.spec.classification {
        message.push_str(&format!("**{}**\n", label.to_uppercase()));
    }
    message.push_str(&headline(view));
    let mut fields = vec![
        field("Tool", &markdown_code(&a.tool), true),
        field("Server", &markdown_code(&a.server), true),
        field("Agent", &markdown_code(&a.agent), true),
        field(
            "On behalf of",
            a.on_behalf_of.as_deref().unwrap_or("unknown"),
            true,
        ),
        field("Rule", &markdown_code(&a.rule), true),
        field("Expires", &utc(a.expires_at), true),
        field("Approvals", &progress(a, &view.approved_by), true),
        field("Request", &a.id.to_string(), true),
    ];
    if let Some(label) = &a.spec.classification {
        fields.insert(0, field("Classification", label, true));
    }
    if let Some(outcome) = card::outcome(a) {
        fields.push(field("Decision", &shown_outcome(&outcome), false));
        fields.push(field(
            "Decided",
            &a.decided_at.map(utc).unwrap_or_default(),
            true,
        ));
    }
    let mut attachment = json!({
        "fallback": format!("Approval request {} for {}", a.id, a.tool),
        "color": color(a.status),
        "title": format!("{}__{}", a.server, a.tool),
        "text": arguments(a),
        "fields": fields,
    });
    if let (Status::Pending, Some((url, tokens))) = (a.status, view.buttons) {
        attachment["actions"] = json!([
            action("approve", "Approve", "success", url, a, &tokens.approve),
            action("deny", "Deny", "danger", url, a, &tokens.deny),
        ]);
    }
    json!({"message": message, "props": {"attachments": [attachment]}})
}

fn headline(view: &View) -> String {
    let a = view.approval;
    match card::outcome(a) {
        None => format!(
            "#### :lock: Tool call needs approval\n{} requested by agent {}",
            markdown_code(&format!("{}__{}", a.server, a.tool)),
            markdown_code(&a.agent)
        ),
        Some(outcome) => format!("#### {} {}", emoji(a.status), shown_outcome(&outcome)),
    }
}

/// `Denied by bob: `reason``: the approver's words in code.
fn shown_outcome(outcome: &card::Outcome) -> String {
    match &outcome.reason {
        Some(reason) => format!("{}: {}", outcome.head, markdown_code(reason)),
        None => outcome.head.clone(),
    }
}

/// Every argument field in a code block (see [`card::Arguments`]), and what was left out.
fn arguments(approval: &Approval) -> String {
    let arguments = card::Arguments::of(approval);
    let mut text = markdown_block(&arguments.lines());
    if let Some(notice) = arguments.notice(approval) {
        text.push_str(&format!("\n:warning: {notice}"));
    }
    text
}

/// The outcome's emoji, before the words every backend's card shares ([`card::outcome`]).
fn emoji(status: Status) -> &'static str {
    match status {
        Status::Pending => ":lock:",
        Status::Approved => ":white_check_mark:",
        Status::Denied => ":no_entry:",
        Status::Expired => ":hourglass:",
        Status::Cancelled => ":heavy_multiplication_x:",
    }
}

/// `1/2 (@bob)`: the shared progress, and who approved so far.
fn progress(approval: &Approval, who: &[String]) -> String {
    let counted = card::progress(approval, who.len() as u32);
    if who.is_empty() {
        counted
    } else {
        format!("{counted} ({})", who.join(", "))
    }
}

fn color(status: Status) -> &'static str {
    match status {
        Status::Pending => "#FFA500",
        Status::Approved => "#2E7D32",
        Status::Denied | Status::Cancelled => "#C62828",
        Status::Expired => "#757575",
    }
}

fn field(title: &str, value: &str, short: bool) -> Value {
    json!({"short": short, "title": title, "value": value})
}

fn action(id: &str, name: &str, style: &str, url: &str, a: &Approval, token: &str) -> Value {
    json!({
        "id": id, "type": "button", "name": name, "style": style,
        "integration": {"url": url, "context": {
            "v": 1, "request_id": a.id.to_string(), "decision": id, "token": token,
        }},
    })
}

/// A call's result as pretty JSON in a code block; long strings and a long block are cut, and
/// backtick runs cannot close the block.
pub fn result_block(result: &Value) -> String {
    let shown = serde_json::to_string_pretty(&cut_values(result)).unwrap_or_default();
    let mut shown = shown.replace("```", "`\u{200b}``");
    if shown.chars().count() > MAX_RESULT_CHARS {
        shown = shown.chars().take(MAX_RESULT_CHARS).collect();
        shown.push_str("\n… (cut)");
    }
    format!("```json\n{shown}\n```")
}

fn cut_values(value: &Value) -> Value {
    match value {
        Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => {
            let kept: String = s.chars().take(MAX_VALUE_CHARS).collect();
            let left = s.chars().count() - MAX_VALUE_CHARS;
            Value::String(format!("{kept}… ({left} more characters)"))
        }
        Value::Array(items) => Value::Array(items.iter().map(cut_values).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), cut_values(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_backticks_cannot_close_the_block() {
        let block = result_block(&json!({"sql": "x".repeat(500), "note": "```rm```"}));
        assert!(block.contains("(300 more characters)"), "{block}");
        assert_eq!(block.matches("```").count(), 2, "{block}");
    }
}
