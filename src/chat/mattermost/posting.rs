//! Cards being posted. Mattermost stores a post, and tells the channel of it, before the
//! gateway reads the answer that names the post: a reply or a reaction can arrive for a card
//! whose post id the gateway has not recorded yet. While a card is being posted, an event on
//! a post it does not know waits (bounded) for the card to be recorded instead of being lost.

use super::cards::{self, Card};
use crate::store::Db;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest an event waits for a card being posted to be recorded.
const CARD_WAIT: Duration = Duration::from_secs(5);

/// How many cards are being posted now, and a wake-up when one is recorded.
#[derive(Default)]
pub(super) struct Posting {
    in_flight: AtomicUsize,
    recorded: Notify,
}

/// A card being posted; recorded (or failed) when dropped.
pub(super) struct InFlight<'a>(&'a Posting);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.recorded.notify_waiters();
    }
}

impl Posting {
    /// A card is about to be posted; hold the guard until its post id is recorded.
    pub(super) fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    /// The card posted as `post_id`: at once when it is recorded; else, while cards are being
    /// posted, once one of them is recorded (for at most [`CARD_WAIT`]). `None`: not a card.
    pub(super) async fn card_of_post(
        &self,
        db: &Db,
        post_id: &str,
    ) -> Result<Option<Card>, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + CARD_WAIT;
        loop {
            let recorded = self.recorded.notified();
            tokio::pin!(recorded);
            recorded.as_mut().enable();
            if let Some(card) = cards::card_by_post(db, post_id).await? {
                return Ok(Some(card));
            }
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return Ok(None);
            }
            if tokio::time::timeout_at(deadline, recorded).await.is_err() {
                return cards::card_by_post(db, post_id).await;
            }
        }
    }
}
