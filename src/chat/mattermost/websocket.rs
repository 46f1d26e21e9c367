//! The bot's websocket: who saw a card (reactions, acknowledgements, replies) and, in
//! `reactions` mode, the decisions themselves: ✅ approves, ❌ denies, and a thread reply
//! `approve` or `deny: <reason>` decides with words. The event fields are asserted by the
//! server over the bot's own authenticated connection; that is the evidence recorded.

use super::api::ApiError;
use super::cards::Card;
use super::{Mattermost, Mode, NAME};
use crate::approval::{Ballot, Broker, BrokerError, Sighting, VoteSource};
use crate::chat::ChatError;
use crate::chat::answer::{self, Answer};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

/// The reactions that decide in `reactions` mode.
pub const APPROVE_EMOJI: &str = "white_check_mark";
pub const DENY_EMOJI: &str = "x";
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Pre-adds ✅ and ❌ under the card so each choice is one click (best effort).
pub async fn add_choice_reactions(mm: &Mattermost, card: &Card) {
    let bot = match mm.bot_user_id().await {
        Ok(id) => id.clone(),
        Err(e) => {
            tracing::warn!(error = %e, "could not learn the bot's user id");
            return;
        }
    };
    for emoji in [APPROVE_EMOJI, DENY_EMOJI] {
        if let Err(e) = mm.api.add_reaction(&bot, &card.post_id, emoji).await {
            tracing::warn!(post = %card.post_id, error = %e, backend = NAME, "could not add a reaction");
        }
    }
}

/// Listens until `shutdown`, reconnecting with backoff.
pub fn spawn(mm: Arc<Mattermost>, broker: Arc<Broker>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut pause = RECONNECT_FIRST;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = listen(&mm, &broker) => match ended {
                    Ok(()) => pause = RECONNECT_FIRST,
                    Err(e) => tracing::warn!(error = %e, retry_in = ?pause, "Mattermost websocket"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RECONNECT_MAX);
        }
    });
}

/// Why the websocket stopped (it is opened again after a pause).
#[derive(Debug, thiserror::Error)]
enum SocketError {
    /// The bot's own user id could not be learnt.
    #[error(transparent)]
    BotUser(#[from] ApiError),
    #[error("connect: {0}")]
    Connect(#[source] WsError),
    /// Sending the authentication challenge, or reading an event, failed.
    #[error(transparent)]
    Socket(#[from] WsError),
}

/// Why one event could not be handled (the socket stays open).
#[derive(Debug, thiserror::Error)]
enum EventError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

async fn listen(mm: &Mattermost, broker: &Broker) -> Result<(), SocketError> {
    let bot = mm.bot_user_id().await?.clone();
    let connector = Some(mm.tls.websocket());
    let (mut socket, _) = tokio_tungstenite::connect_async_tls_with_config(
        mm.api.websocket_url(),
        None,
        false,
        connector,
    )
    .await
    .map_err(SocketError::Connect)?;
    let challenge =
        json!({"seq": 1, "action": "authentication_challenge", "data": {"token": mm.api.token()}});
    socket.send(Message::text(challenge.to_string())).await?;
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if let Err(e) = on_event(mm, broker, &bot, &event).await {
            tracing::warn!(error = %e, event = %event["event"], "could not handle a Mattermost event");
        }
    }
    Ok(())
}

/// What a websocket event says, when it concerns one of our cards.
struct Signal {
    user_id: String,
    post_id: String,
    how: &'static str,
    /// A vote it casts in `reactions` mode: approve?, reason.
    vote: Option<(bool, Option<String>)>,
    evidence: Value,
}

/// `data.<key>` is a JSON document in a string.
fn inner(event: &Value, key: &str) -> Option<Value> {
    serde_json::from_str(event["data"][key].as_str()?).ok()
}

fn signal(event: &Value) -> Option<Signal> {
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let evidence = json!({"event": event["event"], "seq": event["seq"], "data": event["data"],
                          "via": "the bot's authenticated Mattermost websocket (server-asserted)"});
    match event["event"].as_str()? {
        "reaction_added" => {
            let r = inner(event, "reaction")?;
            let vote = match r["emoji_name"].as_str()? {
                APPROVE_EMOJI => Some((true, None)),
                DENY_EMOJI => Some((false, None)),
                _ => None,
            };
            Some(Signal {
                user_id: text(&r, "user_id"),
                post_id: text(&r, "post_id"),
                how: "reaction",
                vote,
                evidence,
            })
        }
        "post_acknowledgement_added" => {
            let a = inner(event, "acknowledgement")?;
            Some(Signal {
                user_id: text(&a, "user_id"),
                post_id: text(&a, "post_id"),
                how: "acknowledgement",
                vote: None,
                evidence,
            })
        }
        "posted" => {
            let p = inner(event, "post")?;
            let root = text(&p, "root_id");
            (!root.is_empty()).then(|| Signal {
                user_id: text(&p, "user_id"),
                post_id: root,
                how: "reply",
                vote: answer::parse(p["message"].as_str().unwrap_or_default())
                    .map(Answer::into_vote),
                evidence,
            })
        }
        _ => None,
    }
}

async fn on_event(
    mm: &Mattermost,
    broker: &Broker,
    bot: &str,
    event: &Value,
) -> Result<(), EventError> {
    let Some(signal) = signal(event) else {
        return Ok(());
    };
    if signal.user_id == bot || signal.user_id.is_empty() {
        return Ok(());
    }
    let db = mm.db().await?;
    let Some(card) = mm.posting.card_of_post(db, &signal.post_id).await? else {
        return Ok(());
    };
    let approval = broker.get(card.approval_id).await?;
    let who = mm.person(&signal.user_id).await.name().to_owned();
    let sighting = Sighting {
        who: who.clone(),
        source: VoteSource::Mattermost,
        how: signal.how.into(),
        evidence: signal.evidence.clone(),
    };
    broker.seen(&approval, sighting).await?;
    if let (Mode::Reactions, Some((approve, reason))) = (mm.config.mode, signal.vote) {
        let ballot = Ballot {
            approver: who,
            approve,
            reason,
            source: VoteSource::Mattermost,
            evidence: signal.evidence,
            break_glass: None,
            idp: None,
        };
        let result = broker.vote(approval.id, ballot).await?;
        tracing::info!(approval = %approval.id, ?result, "vote from a Mattermost {}", signal.how);
    }
    Ok(())
}
