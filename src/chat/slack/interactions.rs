//! Slack's interaction callbacks (`POST /chat/slack/interactions`): button clicks and the
//! deny-reason modal (and the routes of [`super::events`]). Every request is verified (v0 signature, 300 s window) before its body
//! is read, and answered at once: the vote runs on its own task, well within Slack's 3 s.

use super::render::{APPROVE_ACTION, DENY_ACTION, DENY_MODAL, REASON_BLOCK, REASON_INPUT};
use super::{BACKEND, Slack, signature};
use crate::approval::{Ballot, Broker, Sighting, VoteSource};
use crate::timestamp::now_ms;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

pub const PATH: &str = "/chat/slack/interactions";

#[derive(Clone)]
pub struct Callbacks {
    pub slack: Arc<Slack>,
    pub broker: Arc<Broker>,
}

pub fn router(slack: Arc<Slack>, broker: Arc<Broker>) -> axum::Router {
    axum::Router::new()
        .route(PATH, axum::routing::post(interaction))
        .route(
            super::events::PATH,
            axum::routing::post(super::events::event),
        )
        .with_state(Callbacks { slack, broker })
}

impl Callbacks {
    /// Checks a request's v0 signature and timestamp before anything reads its body.
    pub(super) fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), (StatusCode, String)> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let secret = self.slack.config.signing_secret.expose_secret().as_bytes();
        let (timestamp, sig) = (
            header("x-slack-request-timestamp"),
            header("x-slack-signature"),
        );
        signature::verify(secret, timestamp, sig, body, now_ms() / 1000).map_err(|e| {
            tracing::warn!(error = %e, "slack: callback refused");
            (StatusCode::UNAUTHORIZED, e.to_string())
        })
    }
}

async fn interaction(
    State(callbacks): State<Callbacks>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if let Err(refused) = callbacks.verify(&headers, &body) {
        return refused;
    }
    let payload = match parse(&body) {
        Ok(payload) => payload,
        Err(why) => return (StatusCode::BAD_REQUEST, why.to_string()),
    };
    tokio::spawn(async move {
        if let Err(e) = callbacks.handle(&payload).await {
            tracing::warn!(error = %e, "slack: could not handle an interaction");
        }
    });
    (StatusCode::OK, String::new())
}

/// Why an interaction's body is refused (400, with this text).
#[derive(Debug, thiserror::Error)]
enum PayloadError {
    #[error("not a form: {0}")]
    NotAForm(#[source] serde_urlencoded::de::Error),
    #[error("no payload field")]
    NoPayload,
    #[error("payload is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
}

/// The `payload` field of a form-encoded interaction, as JSON.
fn parse(body: &[u8]) -> Result<Value, PayloadError> {
    let form: HashMap<String, String> =
        serde_urlencoded::from_bytes(body).map_err(PayloadError::NotAForm)?;
    let payload = form.get("payload").ok_or(PayloadError::NoPayload)?;
    serde_json::from_str(payload).map_err(PayloadError::NotJson)
}

impl Callbacks {
    async fn handle(&self, payload: &Value) -> anyhow::Result<()> {
        match payload["type"].as_str() {
            Some("block_actions") => self.clicked(payload).await,
            Some("view_submission") if payload["view"]["callback_id"] == DENY_MODAL => {
                self.reason_given(payload).await
            }
            other => {
                tracing::debug!(kind = ?other, "slack: interaction ignored");
                Ok(())
            }
        }
    }

    /// Approve votes at once; Deny opens the modal that asks why.
    async fn clicked(&self, payload: &Value) -> anyhow::Result<()> {
        let Some(action) = payload["actions"].as_array().and_then(|a| a.first()) else {
            return Ok(());
        };
        let Some(id) = action["value"]
            .as_str()
            .and_then(|v| Uuid::parse_str(v).ok())
        else {
            return Ok(());
        };
        let approval = self.broker.get(id).await?;
        let evidence = evidence(payload, action);
        let team = (&payload["team"]["id"], &payload["user"]["team_id"]);
        if let Some(why) = self.foreign_team(team.0, team.1) {
            return self
                .refuse(&approval, user_id(payload), &why, evidence)
                .await;
        }
        let approver = self.approver(payload);
        let sighting = Sighting {
            who: approver
                .clone()
                .unwrap_or_else(|| user_id(payload).to_owned()),
            source: VoteSource::Slack,
            how: "click".into(),
            evidence: evidence.clone(),
        };
        self.broker.seen(&approval, sighting).await?;
        let Some(approver) = approver else {
            tracing::info!(
                user = user_id(payload),
                "slack: click from an unmapped user ignored"
            );
            return Ok(());
        };
        match action["action_id"].as_str() {
            Some(APPROVE_ACTION) => self.vote(id, approver, true, None, evidence).await,
            Some(DENY_ACTION) => {
                let trigger = payload["trigger_id"].as_str().unwrap_or_default();
                let modal = super::render::deny_modal(&id.to_string());
                let opened = json!({"trigger_id": trigger, "view": modal});
                self.slack.api.call("views.open", &opened).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The deny modal was submitted: a deny with its reason.
    async fn reason_given(&self, payload: &Value) -> anyhow::Result<()> {
        let view = &payload["view"];
        let Some(id) = view["private_metadata"]
            .as_str()
            .and_then(|v| Uuid::parse_str(v).ok())
        else {
            return Ok(());
        };
        let evidence = json!({"user": payload["user"], "team": payload["team"],
            "view_id": view["id"], "callback_id": view["callback_id"], "signature": "v0 verified"});
        let team = (&payload["team"]["id"], &payload["user"]["team_id"]);
        if let Some(why) = self.foreign_team(team.0, team.1) {
            let approval = self.broker.get(id).await?;
            return self
                .refuse(&approval, user_id(payload), &why, evidence)
                .await;
        }
        let Some(approver) = self.approver(payload) else {
            tracing::info!(
                user = user_id(payload),
                "slack: deny from an unmapped user ignored"
            );
            return Ok(());
        };
        let reason = view["state"]["values"][REASON_BLOCK][REASON_INPUT]["value"]
            .as_str()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        self.vote(id, approver, false, reason, evidence).await
    }

    pub(super) async fn vote(
        &self,
        id: Uuid,
        approver: String,
        approve: bool,
        reason: Option<String>,
        evidence: Value,
    ) -> anyhow::Result<()> {
        let ballot = Ballot {
            approver,
            approve,
            reason,
            source: VoteSource::Slack,
            evidence,
            break_glass: None,
            idp: None,
        };
        let result = self.broker.vote(id, ballot).await?;
        tracing::info!(approval = %id, ?result, "slack: vote");
        Ok(())
    }

    /// The approver behind the Slack user: by user id only (a username is the member's to
    /// change, and is not what the signature vouches for).
    fn approver(&self, payload: &Value) -> Option<String> {
        self.approver_of(payload["user"]["id"].as_str()?)
    }

    /// The approver with this Slack user id.
    pub(super) fn approver_of(&self, user_id: &str) -> Option<String> {
        let person = self.broker.directory().by_chat(BACKEND, &[user_id])?;
        Some(person.id.clone())
    }

    /// Why a request is not from the configured team, if it is not: the workspace it comes
    /// from must be ours, and so must the user's own team when the request names it (a user
    /// from another organisation in a shared channel).
    pub(super) fn foreign_team(&self, workspace: &Value, user_team: &Value) -> Option<String> {
        let ours = self.slack.config.team_id.as_str();
        match workspace.as_str() {
            Some(team) if team == ours => {}
            other => {
                let team = other.unwrap_or("(none)");
                return Some(format!("the request comes from team {team}, not {ours}"));
            }
        }
        match user_team.as_str() {
            Some(team) if team != ours => Some(format!("the user is in team {team}, not {ours}")),
            _ => None,
        }
    }

    /// Records a verified request that may not vote (`approval.vote`, result `rejected`).
    pub(super) async fn refuse(
        &self,
        approval: &crate::approval::Approval,
        user: &str,
        why: &str,
        evidence: Value,
    ) -> anyhow::Result<()> {
        tracing::warn!(approval = %approval.id, user, why, "slack: refused");
        let who = format!("slack:{user}");
        self.broker
            .rejected(approval, BACKEND, &who, why, evidence)
            .await?;
        Ok(())
    }
}

fn user_id(payload: &Value) -> &str {
    payload["user"]["id"].as_str().unwrap_or("unknown")
}

fn evidence(payload: &Value, action: &Value) -> Value {
    json!({
        "user": payload["user"], "team": payload["team"], "channel": payload["channel"],
        "container": payload["container"], "action_id": action["action_id"],
        "action_ts": action["action_ts"], "signature": "v0 verified",
    })
}
