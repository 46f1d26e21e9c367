//! The approver's inbox: the pending approvals this person may decide, kept live by a stream
//! of server-sent events that says when the audit log moved (a vote in chat, the CLI or
//! another browser, an expiry), whereupon the page fetches its list again.

use super::error::ConsoleError;
use super::html::{esc, page, time_ms};
use super::session::Current;
use super::{Console, html_response};
use crate::approval::{Approval, Ballot, Status, VoteSource};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a live inbox looks at the audit log's head without being woken (for what other
/// processes, the CLI or another replica, commit).
const TICK: Duration = Duration::from_secs(1);

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/inbox", get(inbox))
        .route("/console/inbox/list", get(list))
        .route("/console/events", get(events))
}

/// The approver id of the session, or 403.
pub(super) fn approver(current: &Current) -> Result<String, ConsoleError> {
    current.identity.approver.clone().ok_or_else(|| {
        ConsoleError::Forbidden(
            "you are not an approver here, so there is nothing for you to decide".into(),
        )
    })
}

/// A ballot as `who` would cast it from the console (for eligibility checks and votes).
pub(super) fn ballot(current: &Current, who: &str, approve: bool) -> Ballot {
    Ballot {
        approver: who.to_owned(),
        approve,
        reason: None,
        source: VoteSource::Console,
        evidence: serde_json::json!({
            "channel": "console",
            "authenticated": current.identity.authenticated,
        }),
        break_glass: None,
        idp: current.identity.idp.clone(),
    }
}

/// The pending approvals `who` may vote on (judged on the broker's ledger), oldest first.
async fn visible(
    console: &Console,
    current: &Current,
    who: &str,
) -> Result<Vec<Approval>, ConsoleError> {
    let pending = console.broker.list(Some(Status::Pending)).await?;
    let probe = ballot(current, who, true);
    Ok(pending
        .into_iter()
        .filter(|a| console.broker.refusal(a, &probe).is_none())
        .collect())
}

async fn inbox(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    let who = match approver(&current) {
        Ok(who) => who,
        Err(_) => {
            let body = "<p>You are not an approver here: there is nothing for you to decide.</p>";
            return Ok(html_response(
                StatusCode::OK,
                page("Inbox", Some(&current), body),
            ));
        }
    };
    let list = render_list(&console, &current, &who).await?;
    let body = format!(
        "<p class=\"hint\">Requests you may decide, updated as they change.</p>\
         <p id=\"live\" class=\"hint\" role=\"status\" aria-live=\"polite\"></p>\
         <section id=\"inbox\" data-live=\"/console/inbox/list\" aria-live=\"polite\" aria-label=\"Pending requests\">{list}</section>"
    );
    Ok(html_response(
        StatusCode::OK,
        page("Inbox", Some(&current), &body),
    ))
}

async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    let who = approver(&current)?;
    let list = render_list(&console, &current, &who).await?;
    Ok(html_response(StatusCode::OK, list))
}

async fn render_list(
    console: &Console,
    current: &Current,
    who: &str,
) -> Result<String, ConsoleError> {
    let approvals = visible(console, current, who).await?;
    if approvals.is_empty() {
        return Ok("<p class=\"empty\">Nothing waits for you.</p>".into());
    }
    let mut out = String::from("<ul class=\"cards\">");
    for approval in &approvals {
        let voters = console.broker.approvers(approval.id).await?;
        let (description, version) = super::decide::rule_of(console, approval);
        let more = format!(
            "<details><summary>Rule, policy version and arguments</summary>\
             <p>Rule <code>{}</code>: {description}</p><p>Policy version {version}</p>{}</details>",
            esc(&approval.rule),
            super::decide::arguments(approval)
        );
        out.push_str(&card(approval, &voters, who, &more));
    }
    out.push_str("</ul>");
    Ok(out)
}

/// The classification banner, when the rule sets one.
pub(super) fn banner(approval: &Approval) -> String {
    match crate::chat::card::banner(approval) {
        Some(label) => format!("<p class=\"banner\" role=\"note\">{}</p>", esc(&label)),
        None => String::new(),
    }
}

/// `1 of 2 approvals (alice)`.
pub(super) fn quorum(approval: &Approval, voters: &[String]) -> String {
    let who = if voters.is_empty() {
        "none yet".to_owned()
    } else {
        voters.iter().map(|v| esc(v)).collect::<Vec<_>>().join(", ")
    };
    format!(
        "<span class=\"quorum\">{} of {} approvals</span> ({who})",
        voters.len(),
        approval.spec.quorum
    )
}

/// The live countdown (the script keeps it ticking).
pub(super) fn countdown(approval: &Approval) -> String {
    let left = approval.expires_at - crate::timestamp::now_ms();
    format!(
        "<span class=\"countdown\" data-expires-ms=\"{}\">expires in {}</span> ({})",
        approval.expires_at,
        super::html::duration_ms(left),
        time_ms(approval.expires_at)
    )
}

fn card(approval: &Approval, voters: &[String], who: &str, more: &str) -> String {
    let mine = if voters.iter().any(|v| v == who) {
        " <strong>You approved.</strong>"
    } else {
        ""
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<li class=\"card\" data-approval=\"{id}\">{banner}\
         <h2><a href=\"/console/approvals/{id}\">{tool} on {server}</a></h2>\
         <p>Agent <strong>{agent}</strong> on behalf of <strong>{human}</strong> · rule <code>{rule}</code></p>\
         <p>{quorum}{mine} · {countdown}</p>{more}</li>",
        id = approval.id,
        banner = banner(approval),
        tool = esc(&approval.tool),
        server = esc(&approval.server),
        agent = esc(&approval.agent),
        human = esc(approval.on_behalf_of.as_deref().unwrap_or("nobody named")),
        rule = esc(&approval.rule),
        quorum = quorum(approval, voters),
        countdown = countdown(approval),
    );
    out
}

/// Server-sent events: `changed` whenever the audit log's head moves, until the session ends.
async fn events(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    approver(&current)?;
    Ok(Sse::new(changes(console, current))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Where a live inbox stands: the head it last reported, and whether it has ended.
struct Watch {
    console: Arc<Console>,
    current: Current,
    moved: watch::Receiver<i64>,
    last: Option<i64>,
    ended: bool,
}

fn changes(
    console: Arc<Console>,
    current: Current,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let moved = console.head.subscribe();
    let start = Watch {
        console,
        current,
        moved,
        last: None,
        ended: false,
    };
    futures::stream::unfold(start, |mut w| async move {
        loop {
            if w.ended {
                return None;
            }
            if !w.console.sessions.still_live(&w.current) {
                // One last event tells the page to sign in again; then the stream ends. It
                // carries data: a browser drops an event whose data is empty, unseen.
                w.ended = true;
                let event = Event::default().event("signed-out").data("session ended");
                return Some((Ok(event), w));
            }
            // Marked seen before reading, so a commit meanwhile wakes the wait below.
            w.moved.borrow_and_update();
            let head = head(&w.console).await;
            if head.is_some() && head != w.last {
                w.last = head;
                let event = Event::default()
                    .event("changed")
                    .data(head.unwrap_or(0).to_string());
                return Some((Ok(event), w));
            }
            // Woken by this process's commits at once; other processes' are read at the tick.
            let _ = tokio::time::timeout(TICK, w.moved.changed()).await;
        }
    })
}

/// The audit log's last sequence number (`None` when it cannot be read).
pub(super) async fn head(console: &Console) -> Option<i64> {
    sqlx::query_scalar::<_, Option<i64>>("select max(seq) from audit_events")
        .fetch_one(&console.audit.db().pool)
        .await
        .ok()
        .map(|seq| seq.unwrap_or(0))
}
