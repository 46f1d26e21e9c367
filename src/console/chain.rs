//! The chain's status for auditors: the last verify and its result, and verify run from the
//! page (one at a time; a POST with the session's CSRF token, since it reads the whole log).

use super::error::ConsoleError;
use super::history::{Params, record_read};
use super::html::{csrf_field, esc, page, time_ms};
use super::session::Current;
use super::{Console, html_response};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Form, Router};
use std::sync::Arc;

/// The last verify this process ran: when (Unix ms), whether it held, what it said.
#[derive(Debug, Clone)]
pub struct LastVerify {
    pub at_ms: i64,
    pub ok: bool,
    pub summary: String,
}

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/console/audit/verify", post(verify))
}

/// The status line and the verify button, for the audit page.
pub(super) fn status(console: &Console, current: &Current) -> String {
    let last = console
        .last_verify
        .lock()
        .expect("last verify lock")
        .clone();
    let said = match last {
        None => "not verified since the gateway started".to_owned(),
        Some(v) => format!(
            "last verified {}: <strong class=\"{}\">{}</strong> {}",
            time_ms(v.at_ms),
            if v.ok { "done" } else { "error" },
            if v.ok { "holds" } else { "FAILED" },
            esc(&v.summary)
        ),
    };
    format!(
        "<section aria-labelledby=\"chain\"><h2 id=\"chain\">The chain</h2><p>{said}</p>\
         <form method=\"post\" action=\"/console/audit/verify\">{}\
         <button type=\"submit\">Verify the chain now</button></form></section>",
        csrf_field(current)
    )
}

async fn verify(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<super::signin::CsrfForm>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    if !current.csrf_matches(&form.csrf) {
        return Err(ConsoleError::Csrf);
    }
    let Ok(_running) = console.verifying.try_lock() else {
        return Err(ConsoleError::Conflict(
            "a verify is already running; try again when it ends".into(),
        ));
    };
    record_read(&console, &current, "/console/audit/verify", &Params::new()).await?;
    let options = console.audit.verify_options()?;
    let report = crate::audit::verify(console.audit.db(), &options).await?;
    let last = LastVerify {
        at_ms: crate::approval::now_ms(),
        ok: report.ok,
        summary: report.to_string(),
    };
    *console.last_verify.lock().expect("last verify lock") = Some(last.clone());
    let body = format!(
        "<p role=\"status\" class=\"{}\">{}</p><pre>{}</pre><p>{} events read in {} ms; {} break-glass \
         approvals not reviewed yet; {} calls may still be running.</p><p><a href=\"/console/audit\">Back to the audit</a></p>",
        if report.ok { "done" } else { "error" },
        if report.ok {
            "The chain holds."
        } else {
            "The chain does NOT hold."
        },
        esc(&last.summary),
        report.events,
        report.elapsed_ms,
        report.unreviewed_break_glass.len(),
        report.in_flight,
    );
    Ok(html_response(
        StatusCode::OK,
        page("Verify", Some(&current), &body),
    ))
}
