//! The auditor's pages: search the history, read one call's timeline, export. Every read is
//! first recorded as `audit.read` (via `console`), and refused if it cannot be.

use super::error::ConsoleError;
use super::html::{duration_ms, esc, page};
use super::session::Current;
use super::{Console, html_response};
use crate::audit::events::{AuditEvent, AuditRead};
use crate::audit::{Event, EventKind, Filter, NewEvent};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use uuid::Uuid;

pub(super) type Params = BTreeMap<String, String>;

/// Longest value of one search field.
const MAX_PARAM: usize = 200;
/// Events one search page shows.
const PAGE: u32 = 200;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/audit", get(search))
        .route("/console/audit/calls/{id}", get(timeline))
        .route("/console/audit/export", get(super::export::export))
}

/// The auditor id of the session, or 403.
pub(super) fn auditor(current: &Current) -> Result<String, ConsoleError> {
    current
        .identity
        .auditor
        .clone()
        .ok_or_else(|| ConsoleError::Forbidden("you are not an auditor here".into()))
}

/// Records the read before anything is shown (fail closed).
pub(super) async fn record_read(
    console: &Console,
    current: &Current,
    route: &str,
    params: &Params,
) -> Result<String, ConsoleError> {
    let who = auditor(current)?;
    let read = AuditRead {
        via: "console".into(),
        route: Some(route.to_owned()),
        command: None,
        query: json!(params),
        authenticated: Some(json!(current.identity.authenticated)),
        os_user: None,
    };
    let event = NewEvent::new(None, who.clone(), AuditEvent::AuditRead(read));
    console.audit.append(event).await?;
    Ok(who)
}

/// The search fields that were filled in, bounded; the limit applied by the caller.
pub(super) fn filter(params: &Params, limit: u32) -> Result<(Params, Filter), ConsoleError> {
    let mut kept = Params::new();
    for (key, value) in params {
        let value = value.trim();
        if value.is_empty() || key == "format" {
            continue;
        }
        if value.chars().count() > MAX_PARAM {
            return Err(ConsoleError::BadRequest(format!(
                "{key} is longer than {MAX_PARAM} characters"
            )));
        }
        kept.insert(key.clone(), value.to_owned());
    }
    let mut filter = crate::audit::filter_of(&kept)?;
    filter.limit = Some(filter.limit.unwrap_or(limit).min(limit));
    Ok((kept, filter))
}

async fn search(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(mut params): Query<Params>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    auditor(&current)?;
    if params.is_empty() {
        params.insert("since".into(), "24h".into());
    }
    let (kept, filter) = filter(&params, PAGE)?;
    record_read(&console, &current, "/console/audit", &kept).await?;
    let events = console.audit.list(&filter).await?;
    let query = serde_urlencoded::to_string(&kept).unwrap_or_default();
    let mut body = super::chain::status(&console, &current);
    body.push_str(&form(&kept));
    let _ = write!(
        body,
        "<p>{} event{}{}. Export: <a href=\"/console/audit/export?format=csv&amp;{q}\">CSV</a> · \
         <a href=\"/console/audit/export?format=jsonl&amp;{q}\">JSONL</a></p>",
        events.len(),
        if events.len() == 1 { "" } else { "s" },
        if events.len() as u32 == PAGE {
            " (the first page; narrow the search)"
        } else {
            ""
        },
        q = esc(&query),
    );
    body.push_str(&table(&events));
    Ok(html_response(
        StatusCode::OK,
        page("Audit", Some(&current), &body),
    ))
}

fn form(params: &Params) -> String {
    let field = |name: &str, label: &str, hint: &str| {
        let value = params.get(name).map(|v| esc(v)).unwrap_or_default();
        format!(
            "<p><label for=\"f-{name}\">{label}</label><input id=\"f-{name}\" name=\"{name}\" value=\"{value}\" \
             maxlength=\"{MAX_PARAM}\" placeholder=\"{hint}\"></p>"
        )
    };
    let mut out = String::from(
        "<form method=\"get\" action=\"/console/audit\" class=\"search\" role=\"search\">",
    );
    for (name, label, hint) in [
        ("agent", "Agent", "e.g. ci-bot"),
        ("tool", "Tool", "e.g. delete_record"),
        ("approver", "Approver", "e.g. alice"),
        ("outcome", "Outcome", "approved, denied, completed, …"),
        ("kind", "Event kind", "approval.vote, audit.read, …"),
        ("since", "Since", "24h, 7d or 2026-01-02"),
        ("until", "Until", "RFC 3339, a date or a time ago"),
    ] {
        out.push_str(&field(name, label, hint));
    }
    out.push_str("<p><button type=\"submit\">Search</button></p></form>");
    out
}

fn table(events: &[Event]) -> String {
    let mut out = String::from(
        "<table class=\"events\"><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Event</th>\
         <th scope=\"col\">Actor</th><th scope=\"col\">Summary</th><th scope=\"col\">Call</th></tr></thead><tbody>",
    );
    for e in events {
        let call = e
            .call_id
            .map(|c| format!("<a href=\"/console/audit/calls/{c}\" aria-label=\"Timeline of call {c}\">timeline</a>"))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td><time>{}</time></td><td>{}</td><td>{}</td><td>{}</td><td>{call}</td></tr>",
            esc(&e.at),
            e.kind.as_str(),
            esc(&e.actor),
            esc(&summary(&e.payload)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// `agent=… tool=… outcome=…` from a payload.
fn summary(payload: &Value) -> String {
    [
        "agent", "tool", "approver", "outcome", "who", "how", "via", "route",
    ]
    .iter()
    .filter_map(|k| {
        payload
            .get(*k)
            .and_then(Value::as_str)
            .map(|v| format!("{k}={v}"))
    })
    .collect::<Vec<_>>()
    .join(" ")
}

async fn timeline(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    auditor(&current)?;
    let call: Uuid = raw
        .parse()
        .map_err(|_| ConsoleError::BadRequest("that is not a call id".into()))?;
    let params = Params::from([("call_id".to_owned(), call.to_string())]);
    record_read(&console, &current, "/console/audit/calls", &params).await?;
    let events = console.audit.show(call).await?;
    if events.is_empty() {
        return Err(ConsoleError::NotFound(format!("no events for call {call}")));
    }
    let mut body = timings(&events);
    body.push_str("<ol class=\"timeline\">");
    for e in &events {
        let _ = write!(
            body,
            "<li><time>{}</time> <strong>{}</strong> {}</li>",
            esc(&e.at),
            e.kind.as_str(),
            super::story::line(e)
        );
    }
    body.push_str("</ol>");
    let title = format!("Call {call}");
    Ok(html_response(
        StatusCode::OK,
        page(&title, Some(&current), &body),
    ))
}

/// Time spent waiting for humans (request to decision), apart from the tool's own time
/// (forward to its end).
fn timings(events: &[Event]) -> String {
    let at = |kinds: &[EventKind]| {
        events
            .iter()
            .find(|e| kinds.contains(&e.kind))
            .and_then(|e| crate::audit::timestamp_micros(&e.at))
    };
    let between = |from: &[EventKind], to: &[EventKind]| match (at(from), at(to)) {
        (Some(a), Some(b)) => Some(duration_ms((b - a) / 1000)),
        _ => None,
    };
    let waiting = between(
        &[EventKind::ApprovalRequested],
        &[EventKind::ApprovalDecided],
    )
    .unwrap_or_else(|| match at(&[EventKind::ApprovalRequested]) {
        Some(_) => "still waiting".into(),
        None => "no approval needed".into(),
    });
    let ends = [
        EventKind::CallCompleted,
        EventKind::CallFailed,
        EventKind::CallAmbiguous,
    ];
    // The tool's own time as the gateway measured it, else forward to end as the log tells.
    let measured = events
        .iter()
        .filter(|e| ends.contains(&e.kind))
        .find_map(|e| e.payload.get("tool_ms")?.as_i64())
        .map(duration_ms);
    let tool = measured
        .or_else(|| between(&[EventKind::CallForwarded], &ends))
        .unwrap_or_else(|| "did not run".into());
    super::html::facts(&[("Waiting for humans", waiting), ("The tool itself", tool)])
}
