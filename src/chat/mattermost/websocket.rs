//! The bot's websocket: who saw a card (reactions, acknowledgements) and, in `reactions` mode,
//! the decisions themselves (✅ / ❌ reactions and thread replies).

use super::store::Card;
use super::{Mattermost, NAME};
use crate::approval::Broker;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The reactions that decide in `reactions` mode.
pub const APPROVE_EMOJI: &str = "white_check_mark";
pub const DENY_EMOJI: &str = "x";

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

pub fn spawn(_mm: Arc<Mattermost>, _broker: Arc<Broker>, _shutdown: CancellationToken) {}
