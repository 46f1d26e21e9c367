//! Matrix event contents: the card (plain body plus HTML), its edits, reactions and replies.

use crate::approval::Approval;
use crate::chat::card;
use serde_json::{Value, json};

/// Countersign's namespaced key in the card's content: which approval it asks about.
pub const APPROVAL_KEY: &str = "org.countersign.approval";
pub const APPROVE: &str = "✅";
pub const DENY: &str = "❌";

const HOW_TO_ANSWER: &str =
    "React ✅ to approve or ❌ to deny, or reply `approve` or `deny: <reason>`.";

/// The card for a pending approval, with `approvals` counted so far.
pub fn card(approval: &Approval, approvals: u32) -> Value {
    content(approval, approvals, None)
}

/// The card with its outcome on top and no instructions.
pub fn decided(approval: &Approval, approvals: u32) -> Value {
    content(approval, approvals, card::outcome(approval))
}

fn content(approval: &Approval, approvals: u32, outcome: Option<String>) -> Value {
    let facts = card::facts(approval, approvals);
    let mut body = Vec::new();
    let mut html = Vec::new();
    if let Some(outcome) = &outcome {
        body.push(outcome.clone());
        html.push(format!("<p><b>{}</b></p>", escape(outcome)));
    }
    if let Some(banner) = card::banner(approval) {
        html.push(format!("<p><b>{}</b></p>", escape(&banner)));
        body.push(banner);
    }
    body.push(card::title(approval));
    html.push(format!("<p><b>{}</b></p>", escape(&card::title(approval))));
    let mut items = String::new();
    for (label, value) in facts {
        body.push(format!("{label}: {value}"));
        items.push_str(&format!(
            "<li>{label}: <code>{}</code></li>",
            escape(&value)
        ));
    }
    html.push(format!("<ul>{items}</ul>"));
    if outcome.is_none() {
        body.push(HOW_TO_ANSWER.into());
        html.push(format!("<p>{}</p>", escape(HOW_TO_ANSWER)));
    }
    json!({
        "msgtype": "m.notice",
        "body": body.join("\n"),
        "format": "org.matrix.custom.html",
        "formatted_body": html.concat(),
        APPROVAL_KEY: {"approval_id": approval.id, "tool": approval.tool, "server": approval.server},
    })
}

/// An `m.replace` edit of the card event `card` to `new_content`.
pub fn edit(card: &str, new_content: Value) -> Value {
    let body = format!("* {}", new_content["body"].as_str().unwrap_or_default());
    json!({
        "msgtype": "m.notice",
        "body": body,
        "m.new_content": new_content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": card},
    })
}

/// A reaction (`m.annotation`) on the card.
pub fn reaction(card: &str, key: &str) -> Value {
    json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": card, "key": key}})
}

/// A reply in the card's thread (with a reply fallback for clients without threads).
pub fn thread_reply(card: &str, text: &str) -> Value {
    json!({
        "msgtype": "m.notice",
        "body": text,
        "m.relates_to": {
            "rel_type": "m.thread", "event_id": card,
            "is_falling_back": true, "m.in_reply_to": {"event_id": card},
        },
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
