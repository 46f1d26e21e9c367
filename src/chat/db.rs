//! The chat backends' working state: where each card was posted.
//!
//! Backends are built before the gateway's database is opened (and in short-lived commands
//! such as `countersign approvals`), so each opens its own pool on first use, from the same
//! `database.url`.

use super::ChatError;
use crate::store::Db;
use sqlx::Row;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// A database connection opened on first use.
pub struct LazyDb {
    url: String,
    db: OnceCell<Db>,
}

impl LazyDb {
    pub fn new(url: &str) -> Self {
        LazyDb {
            url: url.to_owned(),
            db: OnceCell::new(),
        }
    }

    pub async fn get(&self, backend: &'static str) -> Result<&Db, ChatError> {
        self.db
            .get_or_try_init(|| crate::store::connect(&self.url))
            .await
            .map_err(|e| ChatError::Unavailable {
                backend,
                detail: format!("its database: {e}"),
            })
    }
}

/// Where a card was posted: a Matrix room and event id, or a Slack channel and message ts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRef {
    pub approval_id: Uuid,
    pub channel: String,
    pub message_id: String,
}

pub async fn save_card(db: &Db, backend: &str, card: &CardRef, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "insert into chat_cards (backend, approval_id, channel, message_id, created_at)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(backend)
    .bind(card.approval_id.to_string())
    .bind(&card.channel)
    .bind(&card.message_id)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn card_of(db: &Db, backend: &str, approval: Uuid) -> sqlx::Result<Option<CardRef>> {
    let row = sqlx::query(
        "select approval_id, channel, message_id from chat_cards
         where backend = $1 and approval_id = $2",
    )
    .bind(backend)
    .bind(approval.to_string())
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| card_from_row(&r)).transpose()
}

/// The card a chat message is, if it is one.
pub async fn card_by_message(
    db: &Db,
    backend: &str,
    message_id: &str,
) -> sqlx::Result<Option<CardRef>> {
    let row = sqlx::query(
        "select approval_id, channel, message_id from chat_cards
         where backend = $1 and message_id = $2",
    )
    .bind(backend)
    .bind(message_id)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| card_from_row(&r)).transpose()
}

/// How long [`card_by_message_soon`] waits for a card being saved.
const CARD_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
const CARD_WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(10);

/// The card a chat message is, waiting briefly (at most half a second) for one being saved: an
/// answer can arrive between the chat server creating the card and the backend recording it.
pub async fn card_by_message_soon(
    db: &Db,
    backend: &str,
    message_id: &str,
) -> sqlx::Result<Option<CardRef>> {
    let deadline = tokio::time::Instant::now() + CARD_WAIT;
    loop {
        let card = card_by_message(db, backend, message_id).await?;
        if card.is_some() || tokio::time::Instant::now() >= deadline {
            return Ok(card);
        }
        tokio::time::sleep(CARD_WAIT_STEP).await;
    }
}

fn card_from_row(row: &sqlx::any::AnyRow) -> sqlx::Result<CardRef> {
    let id: String = row.try_get("approval_id")?;
    Ok(CardRef {
        approval_id: Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        channel: row.try_get("channel")?,
        message_id: row.try_get("message_id")?,
    })
}
