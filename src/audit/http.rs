//! The auditor HTTP API.
//!
//! ```text
//! GET /audit/events?agent=&server=&tool=&approver=&outcome=&kind=&call_id=&since=&until=&limit=&after_seq=&format=json|jsonl|csv|table
//! GET /audit/calls/{call_id}?format=…
//! GET /audit/verify?checkpoint=SEQ:HASH
//! ```
//!
//! Every request needs `Authorization: Bearer <token>` of a configured auditor (the config
//! holds the token's SHA-256; compared in constant time). Every authenticated request is first
//! recorded as an `audit.read` event (actor = the auditor's id, payload = the route and its
//! raw query); if that cannot be recorded the API answers 503 and reveals nothing.

use super::events::{AuditEvent, AuditRead};
use super::{AuditError, AuditLog, Filter, Format, NewEvent, render};
use crate::config::AuditorConfig;
use crate::http_error::HttpError;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use uuid::Uuid;

type Params = BTreeMap<String, String>;

struct Api {
    log: AuditLog,
    /// (SHA-256 of the token, auditor id)
    auditors: Vec<([u8; 32], String)>,
}

/// The auditor API's routes, for the lead to nest into the HTTP listener.
pub fn auditor_router(log: AuditLog, auditors: &[AuditorConfig]) -> Router {
    let auditors = auditors
        .iter()
        .filter_map(|a| {
            let mut hash = [0u8; 32];
            match hex::decode_to_slice(a.token_sha256.trim(), &mut hash) {
                Ok(()) => Some((hash, a.id.clone())),
                Err(e) => {
                    tracing::warn!(auditor = %a.id, error = %e, "auditors[].token_sha256 is not 64 hex digits; this auditor cannot log in");
                    None
                }
            }
        })
        .collect();
    let api = Arc::new(Api { log, auditors });
    Router::new()
        .route("/audit/events", get(events))
        .route("/audit/calls/{call_id}", get(call))
        .route("/audit/verify", get(verify))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            auditor_first,
        ))
        .with_state(api)
}

/// Refuses a caller without an auditor token from the headers alone, before anything else.
async fn auditor_first(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    match api.authenticate(request.headers()) {
        Ok(_) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

impl Api {
    /// The auditor presenting this bearer token, checking every configured hash.
    fn authenticate(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token else {
            crate::telemetry::refused_credential("auditor token", "/audit");
            return Err(Refusal::Unauthorized {
                token_presented: false,
            });
        };
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, id) in &self.auditors {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(id);
            }
        }
        found.cloned().ok_or_else(|| {
            crate::telemetry::refused_credential("auditor token", "/audit");
            Refusal::Unauthorized {
                token_presented: true,
            }
        })
    }

    /// Authenticates, then records the query; an `Err` is the response to send instead.
    async fn admit(
        &self,
        headers: &HeaderMap,
        route: &str,
        params: &Params,
    ) -> Result<String, Refusal> {
        let auditor = self.authenticate(headers)?;
        let read = AuditRead {
            via: "http".into(),
            route: Some(route.to_owned()),
            command: None,
            query: json!(params),
            authenticated: None,
            os_user: None,
        };
        let event = NewEvent::new(None, auditor.clone(), AuditEvent::AuditRead(read));
        match self.log.append(event).await {
            Ok(_) => Ok(auditor),
            Err(e) => {
                tracing::error!(error = %e, auditor, route, "cannot record an audit read; refusing it");
                Err(Refusal::Unrecorded)
            }
        }
    }
}

/// Why a request is not answered.
enum Refusal {
    Unauthorized {
        token_presented: bool,
    },
    /// The `audit.read` event could not be recorded (fail closed).
    Unrecorded,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized { token_presented } => HttpError::unauthorized(
                "countersign-audit",
                token_presented,
                "an auditor token is required (Authorization: Bearer <token>)",
            ),
            Refusal::Unrecorded => HttpError::unavailable(
                "the audit log cannot record this query, so it is not answered",
            ),
        }
        .into_response()
    }
}

fn failure(e: AuditError) -> Response {
    match e {
        AuditError::InvalidQuery(message) => HttpError::new(StatusCode::BAD_REQUEST, message),
        other => {
            tracing::error!(error = %other, "audit query failed");
            HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "the audit query failed")
        }
    }
    .into_response()
}

fn format_of(params: &Params) -> Result<Format, AuditError> {
    params
        .get("format")
        .map(|f| f.parse())
        .unwrap_or(Ok(Format::Json))
}

/// Builds a [`Filter`] from query parameters; unknown parameters are refused.
pub(crate) fn filter_of(params: &Params) -> Result<Filter, AuditError> {
    let mut filter = Filter::default();
    for (key, value) in params {
        let bad = |what: &str| AuditError::InvalidQuery(format!("{key}=`{value}`: {what}"));
        match key.as_str() {
            "agent" => filter.agent = Some(value.clone()),
            "server" => filter.server = Some(value.clone()),
            "tool" => filter.tool = Some(value.clone()),
            "approver" => filter.approver = Some(value.clone()),
            "outcome" => filter.outcome = Some(value.clone()),
            "kind" => filter.kind = Some(value.parse()?),
            "call_id" => filter.call_id = Some(value.parse().map_err(|_| bad("not a UUID"))?),
            "since" => filter.since = Some(value.clone()),
            "until" => filter.until = Some(value.clone()),
            "limit" => {
                filter.limit = Some(value.parse().map_err(|_| bad("not a positive number"))?)
            }
            "after_seq" => filter.after_seq = Some(value.parse().map_err(|_| bad("not a number"))?),
            "format" => {}
            _ => {
                return Err(AuditError::InvalidQuery(format!(
                    "unknown parameter `{key}`; known: agent, server, tool, approver, outcome, \
                     kind, call_id, since, until, limit, after_seq, format"
                )));
            }
        }
    }
    Ok(filter)
}

fn rendered(events: &[super::Event], format: Format) -> Response {
    (
        [(header::CONTENT_TYPE, format.content_type())],
        render(events, format),
    )
        .into_response()
}

async fn events(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if let Err(refusal) = api.admit(&headers, "/audit/events", &params).await {
        return refusal.into_response();
    }
    let (filter, format) = match filter_of(&params).and_then(|f| Ok((f, format_of(&params)?))) {
        Ok(parsed) => parsed,
        Err(e) => return failure(e),
    };
    match api.log.list(&filter).await {
        Ok(events) => {
            let mut response = rendered(&events, format);
            let full = events.len() as u32 == filter.effective_limit();
            if let (true, Some(last)) = (full, events.last()) {
                // Where the next page starts.
                response.headers_mut().insert(
                    "x-next-after-seq",
                    HeaderValue::from_str(&last.seq.to_string()).expect("digits"),
                );
            }
            response
        }
        Err(e) => failure(e),
    }
}

async fn call(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let mut recorded = params.clone();
    recorded.insert("call_id".into(), call_id.clone());
    if let Err(refusal) = api.admit(&headers, "/audit/calls", &recorded).await {
        return refusal.into_response();
    }
    let call_id: Uuid = match call_id.parse() {
        Ok(id) => id,
        Err(_) => {
            return failure(AuditError::InvalidQuery(format!(
                "`{call_id}` is not a call id (a UUID)"
            )));
        }
    };
    let format = match format_of(&params) {
        Ok(format) => format,
        Err(e) => return failure(e),
    };
    match api.log.show(call_id).await {
        Ok(events) if events.is_empty() => (
            StatusCode::NOT_FOUND,
            format!("no events for call {call_id}\n"),
        )
            .into_response(),
        Ok(events) => rendered(&events, format),
        Err(e) => failure(e),
    }
}

async fn verify(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if let Err(refusal) = api.admit(&headers, "/audit/verify", &params).await {
        return refusal.into_response();
    }
    let checkpoint = match params
        .get("checkpoint")
        .map(|c| c.parse::<super::Checkpoint>())
    {
        None => None,
        Some(Ok(cp)) => Some(cp),
        Some(Err(bad)) => return failure(AuditError::InvalidQuery(bad.to_string())),
    };
    let options = match api.log.verify_options() {
        Ok(options) => super::VerifyOptions {
            checkpoint,
            ..options
        },
        Err(e) => return failure(e),
    };
    match super::verify(api.log.db(), &options).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => failure(e),
    }
}
