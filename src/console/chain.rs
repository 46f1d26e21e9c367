//! The chain's status for auditors: the last verify and its result, and verify run from the
//! page (one at a time; a POST with the session's CSRF token, since it reads the whole log).
//! The verify runs in the background: its page shows how far it got, loading itself again
//! every second, and the result once it ends.

use super::error::ConsoleError;
use super::history::{Params, record_read};
use super::html::{csrf_field, esc, page, refreshing_page, time_ms};
use super::session::Current;
use super::{Console, html_response};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The last verify this process ran: when (Unix ms), whether it held, what it said.
#[derive(Debug, Clone)]
pub struct LastVerify {
    pub at_ms: i64,
    pub ok: bool,
    pub summary: String,
    /// The result's details, as HTML, for the verify page.
    pub details: String,
}

/// The verify running now, if one is.
#[derive(Debug, Clone)]
pub struct Running {
    pub started_ms: i64,
    /// The log's length when it started.
    pub total: u64,
    pub checked: Arc<AtomicU64>,
}

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/console/audit/verify", get(progress).post(verify))
}

/// The status line and the verify button, for the audit page.
pub(super) fn status(console: &Console, current: &Current) -> String {
    let last = console
        .last_verify
        .lock()
        .expect("last verify lock")
        .clone();
    let running = console.verifying.lock().expect("verify lock").is_some();
    let said = match last {
        _ if running => {
            "a verify is running: <a href=\"/console/audit/verify\">see its progress</a>".to_owned()
        }
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

/// Starts a verify in the background (one at a time), then shows its page.
async fn verify(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<super::signin::CsrfForm>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    if !current.csrf_matches(&form.csrf) {
        return Err(ConsoleError::Csrf);
    }
    if console.verifying.lock().expect("verify lock").is_some() {
        return Err(ConsoleError::Conflict(
            "a verify is already running; its progress is at /console/audit/verify".into(),
        ));
    }
    record_read(&console, &current, "/console/audit/verify", &Params::new()).await?;
    let options = console.audit.verify_options()?;
    let running = Running {
        started_ms: crate::timestamp::now_ms(),
        total: super::inbox::head(&console).await.unwrap_or(0).max(0) as u64,
        checked: Arc::default(),
    };
    {
        let mut slot = console.verifying.lock().expect("verify lock");
        if slot.is_some() {
            return Err(ConsoleError::Conflict("a verify is already running".into()));
        }
        *slot = Some(running.clone());
    }
    tokio::spawn(run(console.clone(), options, running.checked));
    Ok(Redirect::to("/console/audit/verify").into_response())
}

/// Runs one verify to its end and keeps its result as the last verify.
async fn run(console: Arc<Console>, options: crate::audit::VerifyOptions, checked: Arc<AtomicU64>) {
    let result = crate::audit::verify_counting(console.audit.db(), &options, &checked).await;
    let last = match result {
        Ok(report) => LastVerify {
            at_ms: crate::timestamp::now_ms(),
            ok: report.ok,
            summary: report.to_string(),
            details: format!(
                "<p>{} events read in {} ms; {} break-glass approvals not reviewed yet; {} calls \
                 may still be running.</p>",
                report.events,
                report.elapsed_ms,
                report.unreviewed_break_glass.len(),
                report.in_flight,
            ),
        },
        Err(e) => LastVerify {
            at_ms: crate::timestamp::now_ms(),
            ok: false,
            summary: format!("the verify could not run: {e}"),
            details: String::new(),
        },
    };
    *console.last_verify.lock().expect("last verify lock") = Some(last);
    *console.verifying.lock().expect("verify lock") = None;
}

/// The running verify's progress (the page loads itself again every second), else the last
/// result.
async fn progress(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    super::history::auditor(&current)?;
    let running = console.verifying.lock().expect("verify lock").clone();
    if let Some(running) = running {
        let checked = running.checked.load(Ordering::Relaxed);
        let total = running.total.max(checked).max(1);
        let body = format!(
            "<p role=\"status\">Verifying the chain, started {}: {checked} of about {total} \
             events checked.</p><progress max=\"{total}\" value=\"{checked}\" \
             aria-label=\"Events checked\">{}%</progress>",
            time_ms(running.started_ms),
            checked * 100 / total,
        );
        return Ok(html_response(
            StatusCode::OK,
            refreshing_page("Verify", Some(&current), &body, 1),
        ));
    }
    let last = console
        .last_verify
        .lock()
        .expect("last verify lock")
        .clone();
    let body = match last {
        None => "<p>No verify has run since the gateway started.</p>".to_owned(),
        Some(last) => format!(
            "<p role=\"status\" class=\"{}\">{}</p><pre>{}</pre>{}",
            if last.ok { "done" } else { "error" },
            if last.ok {
                "The chain holds."
            } else {
                "The chain does NOT hold."
            },
            esc(&last.summary),
            last.details,
        ),
    };
    let body = format!("{body}<p><a href=\"/console/audit\">Back to the audit</a></p>");
    Ok(html_response(
        StatusCode::OK,
        page("Verify", Some(&current), &body),
    ))
}
