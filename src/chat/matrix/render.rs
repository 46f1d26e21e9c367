//! Matrix event contents: the card (plain body plus HTML), its edits, reactions and replies.
//! What agents and approvers wrote is escaped in the HTML and kept in `<code>` (no markup, no
//! links), and kept on one line in the plain body (a reason cannot forge a line of the card).

use crate::approval::Approval;
use crate::chat::card::{self, Outcome};
use crate::chat::escape::{html, one_line};
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

fn content(approval: &Approval, approvals: u32, outcome: Option<Outcome>) -> Value {
    let mut body = Vec::new();
    let mut html_parts = Vec::new();
    if let Some(outcome) = &outcome {
        body.push(outcome.to_string());
        let reason = match &outcome.reason {
            Some(reason) => format!(": <code>{}</code>", html(&one_line(reason))),
            None => String::new(),
        };
        html_parts.push(format!("<p><b>{}</b>{reason}</p>", html(&outcome.head)));
    }
    if let Some(banner) = card::banner(approval) {
        html_parts.push(format!("<p><b>{}</b></p>", html(&banner)));
        body.push(one_line(&banner));
    }
    let title = one_line(&card::title(approval));
    html_parts.push(format!("<p><b>{}</b></p>", html(&title)));
    body.push(title);
    let mut items = String::new();
    for (label, value) in card::facts(approval, approvals) {
        let value = one_line(&value);
        items.push_str(&format!("<li>{label}: <code>{}</code></li>", html(&value)));
        body.push(format!("{label}: {value}"));
    }
    html_parts.push(format!("<ul>{items}</ul>"));
    let arguments = card::Arguments::of(approval);
    let lines = arguments.lines();
    body.push("Arguments:".into());
    body.extend(lines.iter().map(|line| format!("  {line}")));
    html_parts.push(format!(
        "<p>Arguments:</p><pre><code>{}</code></pre>",
        html(&lines.join("\n"))
    ));
    if let Some(notice) = arguments.notice(approval) {
        html_parts.push(format!("<p><b>{}</b></p>", html(&notice)));
        body.push(notice);
    }
    if outcome.is_none() {
        body.push(HOW_TO_ANSWER.into());
        html_parts.push(format!("<p>{}</p>", html(HOW_TO_ANSWER)));
    }
    json!({
        "msgtype": "m.notice",
        "body": body.join("\n"),
        "format": "org.matrix.custom.html",
        "formatted_body": html_parts.concat(),
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
