//! What every backend's approval card says, as plain text: what is asked, by whom, for whom,
//! under which rule, until when, how far the vote is, the call's arguments, and the outcome.
//! Backends lay these out in their own markup and escape what people and agents wrote
//! ([`super::escape`]); the argument fields are rendered here once for all of them.

use super::CallSummary;
use super::escape;
use crate::approval::{Approval, Status};
use serde_json::Value;

/// Longest result text a thread reply shows; the rest is cut (the full call is in the audit log).
pub const MAX_RESULT: usize = 600;
/// Longest value a card shows for one argument field; each value is cut on its own.
pub const MAX_VALUE_CHARS: usize = 200;
/// Longest field name a card shows.
const MAX_NAME_CHARS: usize = 64;
/// Most argument fields one card lists; past that it says plainly how many it left out.
pub const MAX_FIELDS: usize = 50;

/// The card's headline.
pub fn title(approval: &Approval) -> String {
    format!("Approval needed: {} on {}", approval.tool, approval.server)
}

/// The classification banner, when the policy sets one: shown above everything else.
pub fn banner(approval: &Approval) -> Option<String> {
    let label = approval.spec.classification.as_deref()?;
    Some(format!("[{}]", label.to_uppercase()))
}

/// The card's facts, in display order: (label, value). The arguments are [`Arguments`].
pub fn facts(approval: &Approval, approvals: u32) -> Vec<(&'static str, String)> {
    vec![
        ("Tool", approval.tool.clone()),
        ("Server", approval.server.clone()),
        ("Agent", approval.agent.clone()),
        (
            "On behalf of",
            approval.on_behalf_of.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Rule", approval.rule.clone()),
        (
            "Expires",
            crate::timestamp::utc_display(approval.expires_at),
        ),
        ("Approvals", progress(approval, approvals)),
        ("Request", approval.id.to_string()),
    ]
}

/// One top-level argument as a card shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name, as a JSON string when it is not a plain identifier, cut to 64 characters.
    pub name: String,
    /// The value as compact JSON with hidden characters written out, cut to
    /// [`MAX_VALUE_CHARS`].
    pub value: String,
    /// The tool's `inputSchema` lists it as `required`.
    pub required: bool,
    /// Characters of the value left out.
    pub cut: usize,
}

impl Field {
    /// `to (required): "mallory-offshore"`, with what was cut said at the end.
    pub fn line(&self) -> String {
        let required = if self.required { " (required)" } else { "" };
        let cut = match self.cut {
            0 => String::new(),
            n => format!("  [cut: {n} more characters]"),
        };
        format!("{}{required}: {}{cut}", self.name, self.value)
    }
}

/// The call's arguments (already redacted by the policy) as every card shows them: every
/// top-level field on its own line, the tool's required fields first (in the schema's order),
/// then the others in the agent's order. No field can push another off the card: each value
/// is cut on its own, and past [`MAX_FIELDS`] the card says how many fields it left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arguments {
    pub fields: Vec<Field>,
    /// Fields not listed (beyond [`MAX_FIELDS`]).
    pub unlisted: usize,
}

impl Arguments {
    pub fn of(approval: &Approval) -> Arguments {
        let required = super::tools::required(&approval.server, &approval.tool);
        Arguments::from_value(&approval.arguments, &required)
    }

    fn from_value(arguments: &Value, required: &[String]) -> Arguments {
        let Some(map) = arguments.as_object() else {
            // Not an object (the schema check lets only objects through; be safe anyway).
            let field = field("(arguments)", arguments, false);
            return Arguments {
                fields: vec![field],
                unlisted: 0,
            };
        };
        let firsts = required
            .iter()
            .filter_map(|name| map.get_key_value(name.as_str()));
        let rest = map.iter().filter(|(name, _)| !required.contains(*name));
        let mut fields: Vec<Field> = firsts
            .map(|(name, value)| field(name, value, true))
            .chain(rest.map(|(name, value)| field(name, value, false)))
            .collect();
        let unlisted = fields.len().saturating_sub(MAX_FIELDS);
        fields.truncate(MAX_FIELDS);
        Arguments { fields, unlisted }
    }

    /// One line per field ([`Field::line`]); `(no arguments)` when there are none.
    pub fn lines(&self) -> Vec<String> {
        if self.fields.is_empty() {
            return vec!["(no arguments)".into()];
        }
        self.fields.iter().map(Field::line).collect()
    }

    /// What the card left out, and where to read the arguments whole; `None` when it shows
    /// them all in full. Holds no agent text, so backends need not escape it.
    pub fn notice(&self, approval: &Approval) -> Option<String> {
        let cut = self.fields.iter().filter(|f| f.cut > 0).count();
        let mut said = Vec::new();
        if self.unlisted > 0 {
            said.push(format!(
                "WARNING: {} more argument fields are not listed on this card",
                self.unlisted
            ));
        }
        if cut > 0 {
            let values = if cut == 1 { "value was" } else { "values were" };
            said.push(format!("{cut} {values} cut (marked [cut])"));
        }
        if said.is_empty() {
            return None;
        }
        Some(format!(
            "{}. Read the arguments in full: countersign approvals show {id}, or GET /approvals/{id}",
            said.join("; "),
            id = approval.id
        ))
    }
}

fn field(name: &str, value: &Value, required: bool) -> Field {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let name = if plain {
        name.to_owned()
    } else {
        escape::visible(&Value::String(name.to_owned()).to_string())
    };
    let json = escape::visible(&value.to_string());
    let total = json.chars().count();
    let cut = total.saturating_sub(MAX_VALUE_CHARS);
    let value = if cut > 0 {
        let kept: String = json.chars().take(MAX_VALUE_CHARS).collect();
        format!("{kept}…")
    } else {
        json
    };
    Field {
        name: cut_chars(&name, MAX_NAME_CHARS),
        value,
        required,
        cut,
    }
}

/// `1/2`: counted approvals against the quorum.
pub fn progress(approval: &Approval, approvals: u32) -> String {
    format!("{approvals}/{}", approval.spec.quorum)
}

/// How an approval ended: `Approved by alice`, `Denied by bob` with the reason `not on prod`,
/// `Expired: nobody decided in time`. Backends show the head as it is and the reason (an
/// approver's words) escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub head: String,
    pub reason: Option<String>,
}

impl std::fmt::Display for Outcome {
    /// Plain text on one line: `Denied by bob: not on prod`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            Some(reason) => write!(f, "{}: {}", self.head, escape::one_line(reason)),
            None => f.write_str(&self.head),
        }
    }
}

/// How the approval ended; `None` while pending.
pub fn outcome(approval: &Approval) -> Option<Outcome> {
    let by = approval.decided_by.as_deref().unwrap_or("countersign");
    let reason = approval.reason.clone().filter(|r| !r.trim().is_empty());
    let (head, reason) = match approval.status {
        Status::Pending => return None,
        Status::Approved if approval.break_glass => {
            (format!("Approved (break glass) by {by}"), None)
        }
        Status::Approved => (format!("Approved by {by}"), None),
        Status::Denied => (format!("Denied by {by}"), reason),
        Status::Expired => ("Expired: nobody decided in time".into(), None),
        Status::Cancelled => (format!("Cancelled by {by}"), reason),
    };
    Some(Outcome { head, reason })
}

/// The thread reply after an approved call ran.
pub fn finished(call: &CallSummary, post_results: bool) -> String {
    let mut text = format!("Call finished: {}; {}", call.outcome, call.timing());
    if let Some(response) = call.response.as_ref().filter(|_| post_results) {
        text.push_str("\nResult: ");
        text.push_str(&cut(&response.to_string(), MAX_RESULT));
    }
    text
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    cut_chars(text, max)
}

fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_listed_required_first_and_cut_on_its_own() {
        let arguments = serde_json::json!({
            "note": "n".repeat(5_000), "memo\nx": "\u{202e}gpj", "to": "mallory-offshore",
            "amount": 10,
        });
        let shown = Arguments::from_value(&arguments, &["amount".into(), "absent".into()]);
        let lines = shown.lines();
        assert_eq!(lines[0], "amount (required): 10");
        assert!(
            lines[1].starts_with("note: \"nnn")
                && lines[1].ends_with("…  [cut: 4802 more characters]"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], r#""memo\nx": "\u{202e}gpj""#);
        assert_eq!(lines[3], r#"to: "mallory-offshore""#);
        assert_eq!(shown.unlisted, 0);
    }

    #[test]
    fn past_the_limit_the_card_says_how_many_fields_it_left_out() {
        let many: serde_json::Map<String, Value> = (0..MAX_FIELDS + 7)
            .map(|i| (format!("f{i}"), Value::from(i)))
            .collect();
        let shown = Arguments::from_value(&Value::Object(many), &[]);
        assert_eq!((shown.fields.len(), shown.unlisted), (MAX_FIELDS, 7));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("héllo", 5), "héllo");
    }
}
