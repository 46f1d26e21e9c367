//! The `/sync` long-poll loop: reactions, replies and read receipts on cards become votes and
//! who-saw events. It resumes from the stored `next_batch` after a restart, and handles each
//! event once.

use super::render::{APPROVAL_KEY, APPROVE, DENY};
use super::{Matrix, sync_state};
use crate::approval::{Ballot, Broker, Sighting, VoteSource};
use crate::backoff::Backoff;
use crate::chat::answer::{self, Answer};
use crate::chat::db::{CardRef, card_by_message};
use crate::chat::retry::Retryable;
use crate::store::Db;
use crate::timestamp::now_ms;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BACKEND: &str = "matrix";
/// Pauses between attempts while the homeserver is unreachable: 0.5 s doubling to 30 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}
/// Most pages of missed events fetched for one room after a gap (100 events a page).
const MAX_GAP_PAGES: usize = 50;

/// Runs until `shutdown`.
pub async fn run(
    matrix: std::sync::Arc<Matrix>,
    broker: std::sync::Arc<Broker>,
    shutdown: CancellationToken,
) {
    let mut backoff = backoff();
    let (bot, db) = loop {
        match matrix.prepare().await {
            Ok(ready) => break ready,
            Err(e) if e.is_refusal() => {
                tracing::error!(error = %e, "matrix: not starting the sync loop");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "matrix: homeserver not ready, retrying"),
        }
        if pause(&shutdown, &mut backoff).await {
            return;
        }
    };
    let mut since = sync_state::position(db, &bot).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "matrix: cannot read the sync position; starting afresh");
        None
    });
    tracing::info!(bot = %bot, resumed = since.is_some(), "matrix: sync loop started");
    let handler = Handler {
        matrix: &matrix,
        broker: &broker,
        db,
        bot: &bot,
    };
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            batch = matrix.client.sync(since.as_deref(), matrix.sync_timeout()) => batch,
        };
        match batch {
            Ok(batch) => {
                backoff.reset();
                handler.batch(&batch, since.as_deref()).await;
                if let Some(next) = batch["next_batch"].as_str() {
                    if let Err(e) = sync_state::save_position(db, &bot, next, now_ms()).await {
                        tracing::warn!(error = %e, "matrix: cannot store the sync position");
                    }
                    since = Some(next.to_owned());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "matrix: sync failed, retrying");
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps the backoff's next delay; true when shut down meanwhile.
async fn pause(shutdown: &CancellationToken, backoff: &mut Backoff) -> bool {
    let wait = backoff.next_delay();
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

struct Handler<'a> {
    matrix: &'a Matrix,
    broker: &'a Broker,
    db: &'a Db,
    bot: &'a str,
}

impl Handler<'_> {
    async fn batch(&self, batch: &Value, since: Option<&str>) {
        let Some(rooms) = batch["rooms"]["join"].as_object() else {
            return;
        };
        for (room, joined) in rooms {
            let state = joined["state"]["events"].as_array().into_iter().flatten();
            let timeline_events = joined["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten();
            if state
                .chain(timeline_events)
                .any(|e| e["type"] == "m.room.encryption")
            {
                self.matrix.mark_encrypted(room);
            }
            let timeline = &joined["timeline"];
            if let (Some(since), true) = (since, timeline["limited"] == true) {
                let prev = timeline["prev_batch"].as_str().unwrap_or_default();
                self.gap(room, since, prev).await;
            }
            for event in joined["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Err(e) = self.timeline_event(room, event).await {
                    tracing::warn!(room = %room, error = %e, "matrix: could not handle an event");
                }
            }
            let ephemeral = joined["ephemeral"]["events"]
                .as_array()
                .into_iter()
                .flatten();
            for event in ephemeral.filter(|e| e["type"] == "m.receipt") {
                if let Err(e) = self.receipts(room, &event["content"]).await {
                    tracing::warn!(room = %room, error = %e, "matrix: could not record receipts");
                }
            }
        }
    }

    /// More happened in `room` than one sync returns (a long downtime): reads the events between
    /// the stored position and the batch, so no answer is lost.
    async fn gap(&self, room: &str, since: &str, prev_batch: &str) {
        let mut from = since.to_owned();
        for _ in 0..MAX_GAP_PAGES {
            let page = match self
                .matrix
                .client
                .messages_between(room, &from, prev_batch)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(room, error = %e, "matrix: could not read the missed events");
                    return;
                }
            };
            let events = page["chunk"].as_array().cloned().unwrap_or_default();
            for event in &events {
                if let Err(e) = self.timeline_event(room, event).await {
                    tracing::warn!(room, error = %e, "matrix: could not handle an event");
                }
            }
            match page["end"].as_str() {
                Some(end) if !events.is_empty() && end != from => from = end.to_owned(),
                _ => return,
            }
        }
        tracing::warn!(
            room,
            "matrix: gave up reading missed events after {MAX_GAP_PAGES} pages"
        );
    }

    /// A reaction or a reply to a card: a sighting, and a vote when a mapped approver answered.
    async fn timeline_event(&self, room: &str, event: &Value) -> anyhow::Result<()> {
        let (Some(sender), Some(event_id)) = (event["sender"].as_str(), event["event_id"].as_str())
        else {
            return Ok(());
        };
        if sender == self.bot {
            return Ok(());
        }
        let Some(Response {
            how,
            target,
            answer,
        }) = response(room, sender, event)
        else {
            return Ok(());
        };
        let Some(card) = self.answered_card(room, target, answer.is_some()).await? else {
            return Ok(());
        };
        let content = &event["content"];
        if !sync_state::claim(self.db, event_id, now_ms()).await? {
            return Ok(());
        }
        let evidence = json!({
            "room_id": room, "event_id": event_id, "sender": sender, "type": event["type"],
            "origin_server_ts": event["origin_server_ts"], "content": content,
        });
        let approver = self
            .broker
            .directory()
            .by_chat(BACKEND, &[sender])
            .map(|p| p.id.clone());
        let approval = self.broker.get(card.approval_id).await?;
        let sighting = Sighting {
            who: approver.clone().unwrap_or_else(|| sender.to_owned()),
            source: VoteSource::Matrix,
            how: how.into(),
            evidence: evidence.clone(),
        };
        self.broker.seen(&approval, sighting).await?;
        let (Some(answer), Some(approver)) = (answer, approver) else {
            if answer_given(event) {
                tracing::info!(sender, approval = %card.approval_id, "matrix: answer from an unmapped user ignored");
            }
            return Ok(());
        };
        let (approve, reason) = answer.into_vote();
        let ballot = Ballot {
            approver,
            approve,
            reason,
            source: VoteSource::Matrix,
            evidence,
            break_glass: None,
            idp: None,
        };
        let result = self.broker.vote(card.approval_id, ballot).await?;
        tracing::info!(sender, approval = %card.approval_id, ?result, "matrix: vote");
        Ok(())
    }

    /// `m.read` receipts on cards: who saw them (best-effort evidence: receipts are
    /// user-controlled, and a missing receipt proves nothing).
    async fn receipts(&self, room: &str, content: &Value) -> anyhow::Result<()> {
        let Some(events) = content.as_object() else {
            return Ok(());
        };
        for (event_id, kinds) in events {
            let Some(readers) = kinds["m.read"].as_object() else {
                continue;
            };
            let Some(card) = self.card(room, Some(event_id)).await? else {
                continue;
            };
            for (user, receipt) in readers.iter().filter(|(u, _)| *u != self.bot) {
                let key = format!("receipt:{event_id}:{user}");
                if !sync_state::claim(self.db, &key, now_ms()).await? {
                    continue;
                }
                let who = self.broker.directory().by_chat(BACKEND, &[user]);
                let sighting = Sighting {
                    who: who.map_or_else(|| user.clone(), |p| p.id.clone()),
                    source: VoteSource::Matrix,
                    how: "read_receipt".into(),
                    evidence: json!({"room_id": room, "event_id": event_id, "user": user, "receipt": receipt}),
                };
                let approval = self.broker.get(card.approval_id).await?;
                self.broker.seen(&approval, sighting).await?;
            }
        }
        Ok(())
    }

    /// The card an event relates to; for an answer, also a card whose id is not stored yet.
    async fn answered_card(
        &self,
        room: &str,
        target: Option<&str>,
        is_answer: bool,
    ) -> sqlx::Result<Option<CardRef>> {
        Ok(match self.card(room, target).await? {
            Some(card) => Some(card),
            None if is_answer => self.unsaved_card(room, target).await,
            None => None,
        })
    }

    /// The card `target` names, when it is one of ours and in this room.
    async fn card(&self, room: &str, target: Option<&str>) -> sqlx::Result<Option<CardRef>> {
        let Some(target) = target else {
            return Ok(None);
        };
        let card = card_by_message(self.db, BACKEND, target).await?;
        Ok(card.filter(|c| c.channel == room))
    }
}

impl Handler<'_> {
    /// An answer to a card whose id is not stored yet (the answer raced the card's post): the
    /// bot's own event names its approval.
    async fn unsaved_card(&self, room: &str, target: Option<&str>) -> Option<CardRef> {
        let target = target?;
        let event = self.matrix.client.event(room, target).await.ok()?;
        if event["sender"] != self.bot {
            return None;
        }
        let id = event["content"][APPROVAL_KEY]["approval_id"].as_str()?;
        Some(CardRef {
            approval_id: uuid::Uuid::parse_str(id).ok()?,
            channel: room.to_owned(),
            message_id: target.to_owned(),
        })
    }
}

/// What a timeline event may say about a card: how it responds, the event it relates to, and
/// the answer it gives, if any.
struct Response<'a> {
    how: &'static str,
    target: Option<&'a str>,
    answer: Option<Answer>,
}

/// A reaction or a message; `None` for any other event (a redaction is logged: decisions
/// already made stand).
fn response<'a>(room: &str, sender: &str, event: &'a Value) -> Option<Response<'a>> {
    let content = &event["content"];
    match event["type"].as_str() {
        Some("m.reaction") => {
            let relates = &content["m.relates_to"];
            let key = relates["key"].as_str().unwrap_or_default();
            Some(Response {
                how: "reaction",
                target: relates["event_id"].as_str(),
                answer: reaction_answer(key),
            })
        }
        Some("m.room.message") => {
            let body = content["body"].as_str().unwrap_or_default();
            Some(Response {
                how: "reply",
                target: reply_target(content),
                answer: answer::parse(body),
            })
        }
        Some("m.room.redaction") => {
            tracing::info!(room, sender, redacts = ?event["redacts"], "matrix: a redaction; decisions already made stand");
            None
        }
        _ => None,
    }
}

fn answer_given(event: &Value) -> bool {
    let content = &event["content"];
    reaction_answer(content["m.relates_to"]["key"].as_str().unwrap_or_default()).is_some()
        || answer::parse(content["body"].as_str().unwrap_or_default()).is_some()
}

/// ✅ approves, ❌ denies (with or without the emoji variation selector); others are not answers.
pub fn reaction_answer(key: &str) -> Option<Answer> {
    match key.trim_end_matches('\u{fe0f}') {
        APPROVE => Some(Answer::Approve),
        DENY => Some(Answer::Deny(None)),
        _ => None,
    }
}

/// The event a message answers: for a message in a thread (`m.thread`), the thread's root,
/// whatever its reply fallback (`m.in_reply_to`) points at (Element points it at the thread's
/// latest event); otherwise the event it replies to (a rich reply).
fn reply_target(content: &Value) -> Option<&str> {
    let relates = &content["m.relates_to"];
    if relates["rel_type"] == "m.thread" {
        return relates["event_id"].as_str();
    }
    relates["m.in_reply_to"]["event_id"].as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_reply_answers_the_threads_root_whatever_its_fallback() {
        let in_thread = json!({"m.relates_to": {"rel_type": "m.thread", "event_id": "$card",
            "is_falling_back": true, "m.in_reply_to": {"event_id": "$latest"}}});
        assert_eq!(reply_target(&in_thread), Some("$card"));
        let rich = json!({"m.relates_to": {"m.in_reply_to": {"event_id": "$card"}}});
        assert_eq!(reply_target(&rich), Some("$card"));
        assert_eq!(reply_target(&json!({"body": "hi"})), None);
    }

    #[test]
    fn only_the_two_seeded_reactions_are_answers() {
        assert_eq!(reaction_answer("✅"), Some(Answer::Approve));
        assert_eq!(reaction_answer("✅\u{fe0f}"), Some(Answer::Approve));
        assert_eq!(reaction_answer("❌"), Some(Answer::Deny(None)));
        assert_eq!(reaction_answer("👍"), None);
    }
}
