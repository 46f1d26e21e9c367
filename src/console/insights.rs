//! Insights for auditors, from the audit log over a time range: approval rate, median and p90
//! time to decide, expired and cancelled counts, by tool, agent and rule; and votes per
//! approver (one who approves everything, fast, is a rubber-stamp signal).

use super::error::ConsoleError;
use super::history::{Params, auditor, record_read};
use super::html::{duration_ms, esc, page};
use super::{Console, html_response};
use crate::audit::events::{ApprovalDecided, ApprovalRequested, Choice};
use crate::audit::{Event, EventKind, Filter, MAX_LIMIT};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/console/insights", get(insights))
}

/// The figures of one group of decided approvals.
#[derive(Default)]
struct Figures {
    outcomes: BTreeMap<String, u32>,
    /// Milliseconds from request to a human decision.
    waits: Vec<i64>,
}

impl Figures {
    fn add(&mut self, outcome: &str, wait: Option<i64>) {
        *self.outcomes.entry(outcome.to_owned()).or_default() += 1;
        if let (Some(w), "approved" | "denied") = (wait, outcome) {
            self.waits.push(w);
        }
    }

    fn count(&self, outcome: &str) -> u32 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }

    fn cells(&mut self) -> String {
        let total: u32 = self.outcomes.values().sum();
        let rate = match total {
            0 => "-".into(),
            n => format!("{}%", self.count("approved") * 100 / n),
        };
        self.waits.sort_unstable();
        let at = |q: usize| match self.waits.len() {
            0 => "-".to_owned(),
            n => duration_ms(self.waits[((n - 1) * q) / 100]),
        };
        format!(
            "<td>{total}</td><td>{rate}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            self.count("denied"),
            self.count("expired"),
            self.count("cancelled"),
            at(50),
            at(90)
        )
    }
}

/// Votes one approver cast, and how long after the request.
#[derive(Default)]
struct Voter {
    approve: u32,
    deny: u32,
    waits: Vec<i64>,
}

async fn insights(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    auditor(&current)?;
    let since = params
        .get("since")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or("7d");
    if since.len() > 64 {
        return Err(ConsoleError::BadRequest("since is too long".into()));
    }
    let kept = Params::from([("since".to_owned(), since.to_owned())]);
    record_read(&console, &current, "/console/insights", &kept).await?;
    let list = |kind| Filter {
        kind: Some(kind),
        since: Some(since.to_owned()),
        limit: Some(MAX_LIMIT),
        ..Filter::default()
    };
    let requested = console
        .audit
        .list(&list(EventKind::ApprovalRequested))
        .await?;
    let decided = console
        .audit
        .list(&list(EventKind::ApprovalDecided))
        .await?;
    let body = render(since, &requested, &decided);
    Ok(html_response(
        StatusCode::OK,
        page("Insights", Some(&current), &body),
    ))
}

fn render(since: &str, requested: &[Event], decided: &[Event]) -> String {
    let asked: HashMap<_, _> = requested
        .iter()
        .filter_map(|e| {
            let r: ApprovalRequested = serde_json::from_value(e.payload.clone()).ok()?;
            Some((
                r.approval_id,
                (r, crate::audit::timestamp_micros(&e.at)? / 1000),
            ))
        })
        .collect();
    let mut groups: BTreeMap<(&str, String), Figures> = BTreeMap::new();
    let mut voters: BTreeMap<String, Voter> = BTreeMap::new();
    for e in decided {
        let Ok(d) = serde_json::from_value::<ApprovalDecided>(e.payload.clone()) else {
            continue;
        };
        let Some((r, at)) = asked.get(&d.approval_id) else {
            continue;
        };
        let wait = crate::audit::timestamp_micros(&e.at).map(|end| end / 1000 - at);
        for key in [
            ("all", String::new()),
            ("tool", format!("{}/{}", r.server, r.tool)),
            ("agent", r.agent.clone()),
            ("rule", r.rule.clone()),
        ] {
            groups.entry(key).or_default().add(&d.outcome, wait);
        }
        for v in &d.approvers {
            let voter = voters.entry(v.approver.clone()).or_default();
            match v.vote {
                Choice::Approve => voter.approve += 1,
                Choice::Deny => voter.deny += 1,
            }
            voter.waits.push(v.at_ms - at);
        }
    }
    let mut out = format!(
        "<form method=\"get\" action=\"/console/insights\" class=\"search\"><p><label for=\"since\">Since</label>\
         <input id=\"since\" name=\"since\" value=\"{}\" maxlength=\"64\"></p><p><button type=\"submit\">Show</button></p></form>",
        esc(since)
    );
    out.push_str(&groups_table(&mut groups));
    out.push_str(&voters_table(&mut voters));
    out
}

fn groups_table(groups: &mut BTreeMap<(&str, String), Figures>) -> String {
    let mut out = String::from(
        "<h2>Decisions</h2><table class=\"insights\"><thead><tr><th scope=\"col\">By</th><th scope=\"col\">Which</th>\
         <th scope=\"col\">Decided</th><th scope=\"col\">Approval rate</th><th scope=\"col\">Denied</th>\
         <th scope=\"col\">Expired</th><th scope=\"col\">Cancelled</th><th scope=\"col\">Median time to decide</th>\
         <th scope=\"col\">p90</th></tr></thead><tbody>",
    );
    for ((by, which), figures) in groups.iter_mut() {
        let _ = write!(
            out,
            "<tr><td>{by}</td><td>{}</td>{}</tr>",
            esc(which),
            figures.cells()
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn voters_table(voters: &mut BTreeMap<String, Voter>) -> String {
    let mut out = String::from(
        "<h2>Votes per approver</h2><table class=\"insights\"><thead><tr><th scope=\"col\">Approver</th>\
         <th scope=\"col\">Approved</th><th scope=\"col\">Denied</th><th scope=\"col\">Approves</th>\
         <th scope=\"col\">Median time to vote</th></tr></thead><tbody>",
    );
    for (who, v) in voters.iter_mut() {
        v.waits.sort_unstable();
        let median = v
            .waits
            .get(v.waits.len().saturating_sub(1) / 2)
            .map(|w| duration_ms(*w))
            .unwrap_or_else(|| "-".into());
        let total = v.approve + v.deny;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}%</td><td>{median}</td></tr>",
            esc(who),
            v.approve,
            v.deny,
            (v.approve * 100).checked_div(total).unwrap_or(0)
        );
    }
    out.push_str("</tbody></table>");
    out
}
