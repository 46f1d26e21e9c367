//! The endpoints Mattermost calls: button clicks (`/mattermost/action`) and dialog submissions
//! (`/mattermost/dialog`). Nothing here is trusted until checked, in this order:
//!
//! 1. the context token: known, unexpired, bound to this approval and this button;
//! 2. the post and channel: the card's own;
//! 3. the `trigger_id`: signed by the server, for the body's user id, at most 30 s old (or, when
//!    the server's key is unavailable, recorded as weaker evidence);
//! 4. the user: the approver bound to that user id ([`super::people`]; the body's `user_name`
//!    is never read), then the broker decides whether the vote counts.
//!
//! A button's token is not used up by a click: every rendering of the card stays answerable by
//! every approver until the approval ends, so an answer Mattermost gave up on (the card then
//! keeps its old buttons) or approvers clicking at once never lock anyone out. Repeated votes
//! are the broker's to refuse ("already voted"), and a replayed click carries a signed
//! `trigger_id` that names its user and expires in 30 s. A click runs to its end on its own
//! task even when Mattermost closes the connection.
//!
//! Answers are always HTTP 200 with an `ephemeral_text` for the clicker; a counted click also
//! carries an `update` with the whole card (progress while pending, no buttons once decided).

use super::api::ApiError;
use super::cards::{self, TokenRow};
use super::dialog::{self, DialogState};
use super::trigger::{Proof, TriggerError};
use super::{DIALOG_PATH, HEALTH_PATH, Mattermost, NAME};
use crate::approval::{Approval, Ballot, Broker, Sighting, Status, VoteResult, VoteSource};
use crate::timestamp::now_ms;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

type Shared = (Arc<Mattermost>, Arc<Broker>);

pub fn router(mm: Arc<Mattermost>, broker: Arc<Broker>) -> Router {
    Router::new()
        .route(super::ACTION_PATH, post(action))
        .route(DIALOG_PATH, post(submission))
        .route(HEALTH_PATH, get(|| async { "countersign" }))
        .with_state((mm, broker))
}

/// Mattermost's `PostActionIntegrationRequest`, as far as it is used.
#[derive(Debug, serde::Deserialize)]
pub struct ActionRequest {
    user_id: String,
    /// Not signed by the server: kept as evidence, never used to identify anyone.
    #[serde(default)]
    user_name: String,
    channel_id: String,
    post_id: String,
    #[serde(default)]
    trigger_id: String,
    #[serde(default)]
    context: Option<ActionContext>,
}

#[derive(Debug, serde::Deserialize)]
struct ActionContext {
    v: u32,
    request_id: String,
    decision: String,
    /// The button's single-use context token: kept out of `Debug` output.
    token: SecretString,
}

/// Why the deny-reason dialog could not be opened (the deny then counts without a reason).
#[derive(Debug, thiserror::Error)]
enum DialogError {
    #[error("no callback_url for the dialog")]
    NoCallbackUrl,
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// The answer to a click.
#[derive(Debug, serde::Serialize)]
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    update: Option<Value>,
    ephemeral_text: String,
    skip_slack_parsing: bool,
}

impl Answer {
    fn say(text: impl Into<String>) -> Self {
        Answer {
            update: None,
            ephemeral_text: text.into(),
            skip_slack_parsing: true,
        }
    }
}

/// A click that passed steps 1–3.
struct Verified {
    approval: Approval,
    token: TokenRow,
    proof: Proof,
}

/// A refused click: what the clicker is told, and what the audit log records.
struct Refusal {
    approval: Option<Approval>,
    tell: &'static str,
    why: String,
}

fn refuse(approval: Option<&Approval>, tell: &'static str, why: impl Into<String>) -> Refusal {
    Refusal {
        approval: approval.cloned(),
        tell,
        why: why.into(),
    }
}

async fn action(
    State((mm, broker)): State<Shared>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let request: ActionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let error =
                json!({"error": {"message": format!("not a Mattermost action request: {e}")}});
            return (axum::http::StatusCode::BAD_REQUEST, Json(error)).into_response();
        }
    };
    // On its own task: Mattermost closing the connection (it gave up waiting) must not stop a
    // click halfway.
    match tokio::spawn(async move { mm.click(&broker, &request).await }).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a Mattermost click failed");
            let error = json!({"error": {"message": "Countersign could not record your click"}});
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Json(error)).into_response()
        }
    }
}

impl Mattermost {
    async fn click(&self, broker: &Broker, request: &ActionRequest) -> Answer {
        let verified = match self.verify_click(broker, request).await {
            Ok(v) => v,
            Err(refusal) => {
                self.audit_refusal(broker, request, &refusal).await;
                return Answer::say(refusal.tell);
            }
        };
        match self.count_click(broker, request, verified).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::error!(error = %e, post = %request.post_id, "could not record a Mattermost click");
                Answer::say("Countersign could not record your click; try again.")
            }
        }
    }

    /// Steps 1–3: a Countersign button whose single-use token belongs to this approval and
    /// this button, clicked on the approval's card, by the user Mattermost signed the trigger
    /// for.
    async fn verify_click(
        &self,
        broker: &Broker,
        request: &ActionRequest,
    ) -> Result<Verified, Refusal> {
        let Some(context) = request.context.as_ref().filter(|c| c.v == 1) else {
            return Err(refuse(
                None,
                "This is not a Countersign button.",
                "no v1 context",
            ));
        };
        let db = self.db().await.map_err(internal)?;
        let (approval, token) = token_of(broker, db, context).await?;
        let now = now_ms();
        if token.expires_at <= now {
            return Err(refuse(
                Some(&approval),
                "This request has expired.",
                "click after expiry",
            ));
        }
        on_its_card(db, &approval, request).await?;
        let proof = self
            .keys
            .verify(&self.api, &request.trigger_id, &request.user_id, now)
            .await
            .map_err(|e: TriggerError| {
                refuse(
                    Some(&approval),
                    "Mattermost could not confirm who clicked; click again.",
                    e.to_string(),
                )
            })?;
        Ok(Verified {
            approval,
            token,
            proof,
        })
    }

    /// A verified click: who saw, then a deny dialog or a vote, and the answer.
    async fn count_click(
        &self,
        broker: &Broker,
        request: &ActionRequest,
        click: Verified,
    ) -> Result<Answer, crate::approval::BrokerError> {
        let person = self.person(&request.user_id).await;
        let evidence = click_evidence(request, &click);
        let sighting = Sighting {
            who: person.name().to_owned(),
            source: VoteSource::Mattermost,
            how: "click".into(),
            evidence: evidence.clone(),
        };
        broker.seen(&click.approval, sighting).await?;
        let ballot = Ballot {
            approver: person.name().to_owned(),
            approve: click.token.decision == "approve",
            reason: None,
            source: VoteSource::Mattermost,
            evidence,
            break_glass: None,
            idp: None,
        };
        if !ballot.approve
            && person.is_approver()
            && matches!(click.proof, Proof::Verified { .. })
            && broker.refusal(&click.approval, &ballot).is_none()
            && click.approval.status == Status::Pending
        {
            match self
                .open_reason_dialog(request, &click, &ballot.approver)
                .await
            {
                Ok(()) => {
                    return Ok(Answer {
                        update: self.render(&click.approval).await.ok(),
                        ephemeral_text: "Give your reason in the dialog; the call stays pending until you submit it.".into(),
                        skip_slack_parsing: true,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not open the deny-reason dialog; denying without a reason")
                }
            }
        }
        let result = broker.vote(click.approval.id, ballot).await?;
        let now = broker.get(click.approval.id).await?;
        let tell = self.tell(&result, person.is_approver(), &now);
        Ok(Answer {
            update: self.render(&now).await.ok(),
            ephemeral_text: tell,
            skip_slack_parsing: true,
        })
    }

    /// What the clicker is told about their vote.
    fn tell(&self, result: &VoteResult, is_approver: bool, approval: &Approval) -> String {
        match result {
            VoteResult::Counted { approvals, quorum } => {
                format!("Recorded your approval: {approvals} of {quorum}.")
            }
            VoteResult::Decided { status } => {
                format!("Recorded your vote: the call is {}.", status.as_str())
            }
            VoteResult::NotAuthorized { .. } if !is_approver => {
                "You are not an approver for this call.".into()
            }
            VoteResult::NotAuthorized { why } => format!("Your vote does not count: {why}."),
            VoteResult::AlreadyDecided { status, by } => match by {
                Some(by) if matches!(status, Status::Approved | Status::Denied) => {
                    format!("Already {} by {}.", status.as_str(), self.shown(by))
                }
                _ => format!("This request is already {}.", approval.status.as_str()),
            },
            VoteResult::AlreadyVoted => "You have already voted on this call.".into(),
        }
    }

    async fn open_reason_dialog(
        &self,
        request: &ActionRequest,
        click: &Verified,
        approver: &str,
    ) -> Result<(), DialogError> {
        let url = self
            .callback(DIALOG_PATH)
            .ok_or(DialogError::NoCallbackUrl)?;
        let state = self.state_key.sign(&DialogState {
            approval_id: click.approval.id.to_string(),
            user_id: request.user_id.clone(),
            approver: approver.to_owned(),
            expires_at: (now_ms() + dialog::DIALOG_LIFETIME_MS).min(click.approval.expires_at),
            token_sha256: click.token.sha256.clone(),
            trigger_id: request.trigger_id.clone(),
        });
        let tool = format!("{}__{}", click.approval.server, click.approval.tool);
        let body = dialog::open_request(&request.trigger_id, &url, &tool, &state);
        self.api.open_dialog(&body).await?;
        Ok(())
    }

    /// Refused clicks that name a real approval are audited as rejected attempts.
    async fn audit_refusal(&self, broker: &Broker, request: &ActionRequest, refusal: &Refusal) {
        tracing::warn!(post = %request.post_id, user = %request.user_id, why = %refusal.why, "refused a Mattermost click");
        let Some(approval) = &refusal.approval else {
            return;
        };
        let evidence = json!({"post_id": request.post_id, "channel_id": request.channel_id,
            "user_id": request.user_id, "user_name": request.user_name, "trigger_id": request.trigger_id});
        // Nothing in a refused click is vouched for, not even its user id.
        let who = "mattermost:unverified";
        if let Err(e) = broker
            .rejected(approval, NAME, who, &refusal.why, evidence)
            .await
        {
            tracing::error!(approval = %approval.id, error = %e, "could not audit a refused click");
        }
    }
}

/// The card of `approval`. A click can arrive between Mattermost creating the post and the
/// gateway recording its id: wait for that briefly (bounded) before calling it a mismatch.
async fn recorded_card(
    db: &crate::store::Db,
    approval: Uuid,
) -> Result<Option<cards::Card>, sqlx::Error> {
    for _ in 0..CARD_WAIT_STEPS {
        if let Some(card) = cards::card(db, approval).await? {
            return Ok(Some(card));
        }
        tokio::time::sleep(CARD_WAIT_STEP).await;
    }
    cards::card(db, approval).await
}

/// A click that could not be checked (the store failed): not audited, only logged.
fn internal(e: impl std::fmt::Display) -> Refusal {
    refuse(
        None,
        "Countersign could not check this click; try again.",
        e.to_string(),
    )
}

/// The approval the click's context names, and its context token, which must belong to that
/// approval and to the button clicked.
async fn token_of(
    broker: &Broker,
    db: &crate::store::Db,
    context: &ActionContext,
) -> Result<(Approval, TokenRow), Refusal> {
    let approval = match Uuid::parse_str(&context.request_id) {
        Ok(id) => broker.get(id).await.ok(),
        Err(_) => None,
    };
    let invalid = |why: &str| refuse(approval.as_ref(), "This button is not valid.", why);
    let token = cards::find(db, context.token.expose_secret())
        .await
        .map_err(internal)?
        .ok_or_else(|| invalid("unknown context token"))?;
    let Some(approval) = approval
        .as_ref()
        .filter(|a| a.id.to_string() == token.approval_id)
    else {
        return Err(invalid("the token belongs to another approval"));
    };
    if token.decision != context.decision {
        return Err(invalid("the token belongs to the other button"));
    }
    Ok((approval.clone(), token))
}

/// The click came from the approval's card, in its channel.
async fn on_its_card(
    db: &crate::store::Db,
    approval: &Approval,
    request: &ActionRequest,
) -> Result<(), Refusal> {
    let card = recorded_card(db, approval.id).await.map_err(internal)?;
    if card.is_none_or(|c| c.post_id != request.post_id || c.channel_id != request.channel_id) {
        return Err(refuse(
            Some(approval),
            "This button does not belong to this post.",
            "post or channel does not match the card",
        ));
    }
    Ok(())
}

const CARD_WAIT_STEPS: u32 = 250;
const CARD_WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(2);

fn click_evidence(request: &ActionRequest, click: &Verified) -> Value {
    let trigger = match &click.proof {
        Proof::Verified { at_ms } => json!({"verified": true, "at_ms": at_ms}),
        Proof::Unverifiable { why } => json!({"verified": false, "why": why,
            "note": "weaker evidence: only the single-use context token vouches for this click"}),
    };
    json!({
        "post_id": request.post_id, "channel_id": request.channel_id, "user_id": request.user_id,
        "user_name": request.user_name, "trigger_id": request.trigger_id, "trigger": trigger,
        "token_sha256": click.token.sha256, "button": click.token.decision,
    })
}

/// A dialog submission (`SubmitDialogRequest`), as far as it is used.
#[derive(Debug, serde::Deserialize)]
struct Submission {
    #[serde(default)]
    state: String,
    user_id: String,
    #[serde(default)]
    channel_id: String,
    #[serde(default)]
    submission: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    cancelled: bool,
}

async fn submission(State((mm, broker)): State<Shared>, body: axum::body::Bytes) -> Json<Value> {
    let Ok(submitted) = serde_json::from_slice::<Submission>(&body) else {
        return Json(json!({"error": "not a Mattermost dialog submission"}));
    };
    match mm.deny_with_reason(&broker, &submitted).await {
        Ok(answer) => Json(answer),
        Err(e) => {
            tracing::error!(error = %e, "could not record a deny reason");
            Json(json!({"error": "Countersign could not record your answer; try again."}))
        }
    }
}

impl Mattermost {
    async fn deny_with_reason(
        &self,
        broker: &Broker,
        submitted: &Submission,
    ) -> Result<Value, crate::approval::BrokerError> {
        let state = match self
            .state_key
            .verify(&submitted.state, &submitted.user_id, now_ms())
        {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(user = %submitted.user_id, error = %e, "refused a dialog submission");
                return Ok(json!({"error": format!("Refused: {e}.")}));
            }
        };
        if submitted.cancelled {
            return Ok(json!({}));
        }
        let reason = submitted
            .submission
            .as_ref()
            .and_then(|s| s.get("reason"))
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        if reason.is_empty() {
            return Ok(json!({"errors": {"reason": "Say why you deny this call."}}));
        }
        if reason.chars().count() > dialog::MAX_REASON_CHARS {
            return Ok(json!({"errors": {"reason": "At most 1000 characters."}}));
        }
        let id = Uuid::parse_str(&state.approval_id)
            .map_err(|e| crate::approval::BrokerError::Invalid(e.to_string()))?;
        let evidence = json!({
            "dialog": {"state": submitted.state, "user_id": submitted.user_id, "channel_id": submitted.channel_id},
            "click": {"trigger_id": state.trigger_id, "token_sha256": state.token_sha256,
                      "trigger": {"verified": true}},
        });
        let ballot = Ballot {
            approver: state.approver.clone(),
            approve: false,
            reason: Some(reason.to_owned()),
            source: VoteSource::Mattermost,
            evidence,
            break_glass: None,
            idp: None,
        };
        let result = broker.vote(id, ballot).await?;
        let approval = broker.get(id).await?;
        Ok(match result {
            VoteResult::Decided { .. } => json!({}),
            other => json!({"error": self.tell(&other, true, &approval)}),
        })
    }
}
