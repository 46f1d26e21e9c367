//! One approval request: everything an approver needs to decide it, and the decision itself.
//! Opening it records `approval.seen` (how: `opened`, source: `console`); a vote goes through
//! [`Broker::vote`](crate::approval::Broker::vote) with the session's verified identity, so
//! the audit log records how the approver signed in (issuer and subject, or the token).

use super::error::ConsoleError;
use super::html::{csrf_field, esc, facts, page, time_ms};
use super::inbox::{approver, ballot, banner, countdown, quorum};
use super::session::Current;
use super::{Console, html_response};
use crate::approval::{Approval, Sighting, Status, VoteResult, VoteSource};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;
use uuid::Uuid;

/// Longest reason or justification accepted, in characters.
const MAX_TEXT: usize = 2000;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/approvals/{id}", get(show))
        .route("/console/approvals/{id}/vote", post(vote))
}

fn parse_id(raw: &str) -> Result<Uuid, ConsoleError> {
    raw.parse().map_err(|_| {
        ConsoleError::BadRequest(format!(
            "`{}` is not an approval id",
            raw.chars().take(64).collect::<String>()
        ))
    })
}

/// Whether `who` may see `approval`: while pending, when the ledger would count their vote;
/// once decided, when the rule named them or a group their identity provider's groups stand
/// for (to see how it ended).
fn may_see(console: &Console, current: &Current, approval: &Approval, who: &str) -> bool {
    if approval.status == Status::Pending {
        return console
            .broker
            .refusal(approval, &ballot(current, who, true))
            .is_none();
    }
    let spec = &approval.spec;
    let named = console
        .broker
        .directory()
        .resolve(&spec.approvers, &spec.approver_groups);
    let through_group =
        (current.identity.stands_for.iter()).any(|g| spec.approver_groups.contains(g));
    (named.iter().any(|n| n == who) || through_group)
        && approval.on_behalf_of.as_deref() != Some(who)
        && approval.agent != who
}

async fn load(
    console: &Console,
    current: &Current,
    raw: &str,
) -> Result<(Approval, String), ConsoleError> {
    let who = approver(current)?;
    let approval = console.broker.get(parse_id(raw)?).await?;
    if !may_see(console, current, &approval, &who) {
        return Err(ConsoleError::Forbidden(
            "this request is not yours to decide".into(),
        ));
    }
    Ok((approval, who))
}

async fn show(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    let (approval, who) = load(&console, &current, &raw).await?;
    if approval.status == Status::Pending && console.sessions.first_sight(&current, approval.id) {
        let sighting = Sighting {
            who: who.clone(),
            source: VoteSource::Console,
            how: "opened".into(),
            evidence: serde_json::json!({"authenticated": current.identity.authenticated}),
        };
        console.broker.seen(&approval, sighting).await?;
    }
    let body = details(&console, &current, &approval, &who).await?;
    let title = format!("{} on {}", approval.tool, approval.server);
    Ok(html_response(
        StatusCode::OK,
        page(&title, Some(&current), &body),
    ))
}

/// The rule's description (from the current policy) and the policy version the request was
/// made under, escaped.
pub(super) fn rule_of(console: &Console, approval: &Approval) -> (String, String) {
    let policies = console.policies.current();
    let description = policies
        .describe(&approval.rule)
        .map(esc)
        .unwrap_or_else(|| "(no description)".into());
    let version = if policies.version() == approval.policy_version {
        esc(&approval.policy_version)
    } else {
        format!(
            "{} (the policy is now {}; the description is the current one)",
            esc(&approval.policy_version),
            esc(policies.version())
        )
    };
    (description, version)
}

async fn details(
    console: &Console,
    current: &Current,
    approval: &Approval,
    who: &str,
) -> Result<String, ConsoleError> {
    let voters = console.broker.approvers(approval.id).await?;
    let (description, version) = rule_of(console, approval);
    let status = match approval.status {
        Status::Pending => countdown(approval),
        s => decided_line(approval, s),
    };
    let mut out = banner(approval);
    out.push_str(&facts(&[
        ("Status", status),
        ("Agent", esc(&approval.agent)),
        (
            "On behalf of",
            esc(approval.on_behalf_of.as_deref().unwrap_or("nobody named")),
        ),
        (
            "Tool",
            format!("{} on {}", esc(&approval.tool), esc(&approval.server)),
        ),
        (
            "Rule",
            format!("<code>{}</code>: {description}", esc(&approval.rule)),
        ),
        ("Policy version", version),
        ("Quorum", quorum(approval, &voters)),
        ("Requested", time_ms(approval.created_at)),
        ("Request id", format!("<code>{}</code>", approval.id)),
    ]));
    out.push_str("<h2>Arguments</h2>");
    out.push_str(&arguments(approval));
    if approval.status == Status::Pending && !voters.iter().any(|v| v == who) {
        out.push_str(&forms(console, current, approval, who));
    }
    Ok(out)
}

fn decided_line(approval: &Approval, status: Status) -> String {
    let by = approval
        .decided_by
        .as_deref()
        .map(|b| format!(" by {}", esc(b)))
        .unwrap_or_default();
    let reason = approval
        .reason
        .as_deref()
        .map(|r| format!(": {}", esc(r)))
        .unwrap_or_default();
    format!("<strong>{}</strong>{by}{reason}", status.as_str())
}

/// Every argument in full, as the rule's redaction left it: a redacted value is shown only as
/// "redacted", never its digest or anything else.
pub(super) fn arguments(approval: &Approval) -> String {
    let mut out = String::new();
    let Some(map) = approval.arguments.as_object() else {
        let _ = write!(out, "<pre>{}</pre>", esc(&shown(&approval.arguments)));
        return out;
    };
    if map.is_empty() {
        out.push_str("<p>(no arguments)</p>");
        return out;
    }
    out.push_str("<table class=\"args\"><thead><tr><th scope=\"col\">Field</th><th scope=\"col\">Value</th></tr></thead><tbody>");
    for (name, value) in map {
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><code>{}</code></th><td><pre>{}</pre></td></tr>",
            esc(name),
            esc(&shown(value))
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A value as JSON, with every redacted part replaced by `[redacted]` alone.
fn shown(value: &serde_json::Value) -> String {
    fn strip(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) if s.starts_with(crate::policy::REDACTED) => {
                serde_json::Value::String(crate::policy::REDACTED.into())
            }
            serde_json::Value::Array(items) => items.iter().map(strip).collect(),
            serde_json::Value::Object(map) => {
                map.iter().map(|(k, v)| (k.clone(), strip(v))).collect()
            }
            other => other.clone(),
        }
    }
    match strip(value) {
        serde_json::Value::String(s) => s,
        other => serde_json::to_string_pretty(&other).unwrap_or_default(),
    }
}

fn forms(console: &Console, current: &Current, approval: &Approval, who: &str) -> String {
    let action = format!("/console/approvals/{}/vote", approval.id);
    let csrf = csrf_field(current);
    let mut out = format!(
        "<h2>Your decision</h2><div class=\"decide\">\
         <form method=\"post\" action=\"{action}\">{csrf}<input type=\"hidden\" name=\"decision\" value=\"approve\">\
         <button type=\"submit\" class=\"approve\">Approve</button></form>\
         <form method=\"post\" action=\"{action}\">{csrf}<input type=\"hidden\" name=\"decision\" value=\"deny\">\
         <label for=\"reason\">Reason for denying (required)</label>\
         <textarea id=\"reason\" name=\"reason\" required maxlength=\"{MAX_TEXT}\" rows=\"2\"></textarea>\
         <button type=\"submit\" class=\"deny\">Deny</button></form>"
    );
    if let Some(rule) = &approval.spec.break_glass {
        let allowed = console
            .broker
            .directory()
            .resolve(&rule.approvers, &rule.approver_groups);
        if allowed.iter().any(|a| a == who) {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"{action}\">{csrf}<input type=\"hidden\" name=\"decision\" value=\"break_glass\">\
                 <label for=\"justification\">Break-glass justification (at least {n} characters; approves alone, flagged for review)</label>\
                 <textarea id=\"justification\" name=\"justification\" required minlength=\"{n}\" maxlength=\"{MAX_TEXT}\" rows=\"2\"></textarea>\
                 <button type=\"submit\" class=\"breakglass\">Break glass and approve</button></form>",
                n = rule.min_justification
            );
        }
    }
    out.push_str("</div>");
    out
}

#[derive(Deserialize)]
struct VoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    justification: String,
}

async fn vote(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Form(form): Form<VoteForm>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    if !current.csrf_matches(&form.csrf) {
        return Err(ConsoleError::Csrf);
    }
    let (approval, who) = load(&console, &current, &raw).await?;
    let mut ballot = ballot(&current, &who, form.decision != "deny");
    match form.decision.as_str() {
        "approve" => {}
        "deny" => ballot.reason = Some(bounded(&form.reason, "reason")?),
        "break_glass" => ballot.break_glass = Some(bounded(&form.justification, "justification")?),
        _ => {
            return Err(ConsoleError::BadRequest(
                "decide with approve, deny or break_glass".into(),
            ));
        }
    }
    let result = console.broker.vote(approval.id, ballot).await?;
    answer(&current, &approval, result)
}

/// The text, trimmed, required and at most [`MAX_TEXT`] characters.
fn bounded(text: &str, what: &str) -> Result<String, ConsoleError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ConsoleError::BadRequest(format!("a {what} is required")));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(ConsoleError::BadRequest(format!(
            "the {what} is longer than {MAX_TEXT} characters"
        )));
    }
    Ok(text.to_owned())
}

fn answer(
    current: &Current,
    approval: &Approval,
    result: VoteResult,
) -> Result<Response, ConsoleError> {
    let said = match result {
        VoteResult::Counted { approvals, quorum } => {
            format!("Your approval is counted: {approvals} of {quorum}.")
        }
        VoteResult::Decided { status } => {
            format!("Your vote decided the request: {}.", status.as_str())
        }
        VoteResult::NotAuthorized { why } => return Err(ConsoleError::Forbidden(why)),
        VoteResult::AlreadyDecided { status, by } => {
            let by = by.map(|b| format!(" by {b}")).unwrap_or_default();
            return Err(ConsoleError::Conflict(format!(
                "Someone else already decided: this request was {}{by} before your vote.",
                status.as_str()
            )));
        }
        VoteResult::AlreadyVoted => {
            return Err(ConsoleError::Conflict(
                "You already voted on this request.".into(),
            ));
        }
    };
    let body = format!(
        "<p role=\"status\" class=\"done\">{}</p><p><a href=\"/console/approvals/{}\">Back to the request</a> · \
         <a href=\"/console/inbox\">Inbox</a></p>",
        esc(&said),
        approval.id
    );
    Ok(html_response(
        StatusCode::OK,
        page("Vote recorded", Some(current), &body),
    ))
}
