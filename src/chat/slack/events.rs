//! Slack's Events API (`POST /chat/slack/events`): a reply in a card's thread (`approve`,
//! `deny: <reason>`) votes like the buttons, and any reply there is recorded as seen. Verified
//! like interactions; Slack's URL check (`url_verification`) gets its challenge back.
//!
//! The app subscribes to `message.channels` (and `message.groups` for private channels).

use super::BACKEND;
use super::interactions::Callbacks;
use crate::approval::{Sighting, VoteSource};
use crate::chat::answer;
use crate::chat::db::card_by_message_soon;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};

pub const PATH: &str = "/chat/slack/events";

pub(super) async fn event(
    State(callbacks): State<Callbacks>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if let Err(refused) = callbacks.verify(&headers, &body) {
        return refused;
    }
    let Ok(envelope) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON".into());
    };
    match envelope["type"].as_str() {
        Some("url_verification") => {
            let challenge = envelope["challenge"].as_str().unwrap_or_default();
            (StatusCode::OK, json!({"challenge": challenge}).to_string())
        }
        Some("event_callback") => {
            tokio::spawn(async move {
                if let Err(e) = callbacks.thread_reply(&envelope).await {
                    tracing::warn!(error = %e, "slack: could not handle an event");
                }
            });
            (StatusCode::OK, String::new())
        }
        _ => (StatusCode::OK, String::new()),
    }
}

impl Callbacks {
    /// A person's message in a card's thread (also one sent to the channel too,
    /// `thread_broadcast`); everything else is ignored. However busy the thread, `thread_ts` is
    /// its root: the card.
    async fn thread_reply(&self, envelope: &Value) -> anyhow::Result<()> {
        let event = &envelope["event"];
        let is_reply = event["type"] == "message"
            && (event["subtype"].is_null() || event["subtype"] == "thread_broadcast")
            && event["bot_id"].is_null()
            && event["thread_ts"].is_string()
            && event["thread_ts"] != event["ts"];
        if !is_reply {
            return Ok(());
        }
        let (Some(user), Some(thread)) = (event["user"].as_str(), event["thread_ts"].as_str())
        else {
            return Ok(());
        };
        let db = self.slack.db.get(BACKEND).await?;
        let Some(card) = card_by_message_soon(db, BACKEND, thread).await? else {
            return Ok(()); // a thread that is not a card's
        };
        if event["channel"].as_str() != Some(card.channel.as_str()) {
            return Ok(());
        }
        let approval = self.broker.get(card.approval_id).await?;
        let evidence = json!({
            "event_id": envelope["event_id"], "team_id": envelope["team_id"], "user": user,
            "user_team": event["user_team"], "channel": event["channel"], "ts": event["ts"],
            "thread_ts": thread, "signature": "v0 verified",
        });
        if let Some(why) = self.foreign_team(&envelope["team_id"], &event["user_team"]) {
            return self.refuse(&approval, user, &why, evidence).await;
        }
        let approver = self.approver_of(user);
        let sighting = Sighting {
            who: approver.clone().unwrap_or_else(|| user.to_owned()),
            source: VoteSource::Slack,
            how: "reply".into(),
            evidence: evidence.clone(),
        };
        self.broker.seen(&approval, sighting).await?;
        let Some(answer) = answer::parse(event["text"].as_str().unwrap_or_default()) else {
            return Ok(());
        };
        let Some(approver) = approver else {
            tracing::info!(user, "slack: a reply from an unmapped user ignored");
            return Ok(());
        };
        let (approve, reason) = answer.into_vote();
        self.vote(card.approval_id, approver, approve, reason, evidence)
            .await
    }
}
