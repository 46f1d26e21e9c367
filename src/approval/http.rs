//! The approver HTTP API: list, show, approve and deny, with each approver's own token.
//!
//! ```text
//! GET  /approvals?status=pending      Authorization: Bearer <approver token>
//! GET  /approvals/{id}
//! POST /approvals/{id}/approve        {"reason"?: "...", "break_glass"?: "written justification"}
//! POST /approvals/{id}/deny           {"reason": "..."}
//! POST /approvals/{id}/review         {"note": "..."}   (a break-glass approval, by another approver)
//! ```

use super::{Ballot, Broker, BrokerError, Status, VoteSource};
use crate::http_error::HttpError;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}", get(show))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
        .route("/approvals/{id}/review", post(review))
        .route_layer(axum::middleware::from_fn_with_state(
            broker.clone(),
            approver_first,
        ))
        .with_state(broker)
}

/// Refuses a caller without an approver token from the headers alone, before any body is read.
async fn approver_first(
    State(broker): State<Arc<Broker>>,
    request: Request,
    next: Next,
) -> Response {
    match approver(&broker, request.headers()) {
        Ok(_) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// An API failure, mapped to a status and a JSON error body in one place.
enum ApiError {
    Unauthorized,
    BadRequest(String),
    NotFound(Uuid),
    Internal(BrokerError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => HttpError::unauthorized(
                "countersign-approvers",
                false,
                "an approver token is required (Authorization: Bearer <token>)",
            ),
            ApiError::BadRequest(m) => HttpError::new(StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(id) => {
                HttpError::new(StatusCode::NOT_FOUND, format!("no approval {id}"))
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "approver API failed");
                HttpError::unavailable(
                    "the approval could not be read or recorded (the database is unavailable?); try again",
                )
            }
        }
        .into_response()
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::NotFound(id) => ApiError::NotFound(id),
            BrokerError::Invalid(m) => ApiError::BadRequest(m),
            e => ApiError::Internal(e),
        }
    }
}

fn approver(broker: &Broker, headers: &HeaderMap) -> Result<String, ApiError> {
    let found = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| broker.directory().by_token(token.trim()))
        .map(|p| p.id.clone());
    found.ok_or_else(|| {
        crate::telemetry::refused_credential("approver token", "/approvals");
        ApiError::Unauthorized
    })
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadRequest(format!("`{raw}` is not an approval id")))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    approver(&broker, &headers)?;
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(
            Status::parse(s)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown status `{s}`")))?,
        ),
    };
    Ok(Json(broker.list(status).await?).into_response())
}

async fn show(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    approver(&broker, &headers)?;
    Ok(Json(broker.get(parse_id(&id)?).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    reason: Option<String>,
    break_glass: Option<String>,
}

async fn approve(
    state: State<Arc<Broker>>,
    headers: HeaderMap,
    id: Path<String>,
    body: Option<Json<VoteBody>>,
) -> Result<Response, ApiError> {
    cast(
        state,
        headers,
        id,
        body.map(|b| b.0).unwrap_or_default(),
        true,
    )
    .await
}

async fn deny(
    state: State<Arc<Broker>>,
    headers: HeaderMap,
    id: Path<String>,
    body: Option<Json<VoteBody>>,
) -> Result<Response, ApiError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    if body.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(ApiError::BadRequest("a deny needs a reason".into()));
    }
    cast(state, headers, id, body, false).await
}

async fn cast(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: VoteBody,
    approve: bool,
) -> Result<Response, ApiError> {
    let who = approver(&broker, &headers)?;
    let ballot = Ballot {
        approver: who,
        approve,
        reason: body.reason,
        source: VoteSource::Http,
        evidence: json!({
            "channel": "approver-api",
            "authenticated": {"method": "approver token", "via": "http"},
        }),
        break_glass: body.break_glass,
        // Never from a request: only the console's sign-in carries groups.
        idp: None,
    };
    let result = broker.vote(parse_id(&id)?, ballot).await?;
    Ok(Json(result).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    note: String,
}

async fn review(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Response, ApiError> {
    let who = approver(&broker, &headers)?;
    let Some(Json(body)) = body else {
        return Err(ApiError::BadRequest(
            "a review needs {\"note\": \"...\"}".into(),
        ));
    };
    let authenticated = json!({"method": "approver token", "via": "http"});
    match broker
        .review(parse_id(&id)?, &who, &body.note, authenticated)
        .await?
    {
        Ok(()) => Ok(Json(json!({"result": "reviewed", "by": who})).into_response()),
        Err(why) => Err(ApiError::BadRequest(why.to_string())),
    }
}
