//! The backend's tables (migration 0003): cards (which post asks for which approval) and
//! button tokens, stored as SHA-256 only. A token is good for every click until its approval
//! ends (see [`super::callback`]); the table's `used_*` columns are no longer written.

use crate::auth::hash_key;
use crate::store::Db;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::Row;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

/// The post that asks for one approval.
#[derive(Debug, Clone)]
pub struct Card {
    pub approval_id: Uuid,
    pub post_id: String,
    pub channel_id: String,
}

/// The two buttons' tokens for one rendering of a card.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub approve: String,
    pub deny: String,
}

/// A stored token.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub sha256: String,
    pub approval_id: String,
    pub decision: String,
    pub expires_at: i64,
}

/// 32 random bytes, base64url.
fn fresh_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// New approve and deny tokens for `approval`, valid until it expires.
pub async fn issue(db: &Db, approval: Uuid, expires_at: i64) -> Result<Tokens, sqlx::Error> {
    let tokens = Tokens {
        approve: fresh_token(),
        deny: fresh_token(),
    };
    for (token, decision) in [(&tokens.approve, "approve"), (&tokens.deny, "deny")] {
        sqlx::query(
            "insert into mattermost_tokens (token_sha256, approval_id, decision, expires_at) values ($1, $2, $3, $4)",
        )
        .bind(hash_key(token))
        .bind(approval.to_string())
        .bind(decision)
        .bind(expires_at)
        .execute(&db.pool)
        .await?;
    }
    Ok(tokens)
}

/// The stored token `token` hashes to, if any. The lookup is by hash; the hash is compared
/// again in constant time.
pub async fn find(db: &Db, token: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    let sha256 = hash_key(token);
    let row = by_hash(db, &sha256).await?;
    Ok(row.filter(|r| bool::from(r.sha256.as_bytes().ct_eq(sha256.as_bytes()))))
}

async fn by_hash(db: &Db, sha256: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    let row = sqlx::query(
        "select token_sha256, approval_id, decision, expires_at from mattermost_tokens where token_sha256 = $1",
    )
    .bind(sha256)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|row| {
        Ok(TokenRow {
            sha256: row.try_get("token_sha256")?,
            approval_id: row.try_get("approval_id")?,
            decision: row.try_get("decision")?,
            expires_at: row.try_get("expires_at")?,
        })
    })
    .transpose()
}

pub async fn save_card(db: &Db, card: &Card, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into mattermost_cards (approval_id, post_id, channel_id, created_at) values ($1, $2, $3, $4)",
    )
    .bind(card.approval_id.to_string())
    .bind(&card.post_id)
    .bind(&card.channel_id)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(())
}

fn card_from(row: &sqlx::any::AnyRow) -> Result<Card, sqlx::Error> {
    let id: String = row.try_get("approval_id")?;
    Ok(Card {
        approval_id: Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        post_id: row.try_get("post_id")?,
        channel_id: row.try_get("channel_id")?,
    })
}

pub async fn card(db: &Db, approval: Uuid) -> Result<Option<Card>, sqlx::Error> {
    let row = sqlx::query(
        "select approval_id, post_id, channel_id from mattermost_cards where approval_id = $1",
    )
    .bind(approval.to_string())
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(card_from).transpose()
}

pub async fn card_by_post(db: &Db, post_id: &str) -> Result<Option<Card>, sqlx::Error> {
    let row = sqlx::query(
        "select approval_id, post_id, channel_id from mattermost_cards where post_id = $1",
    )
    .bind(post_id)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(card_from).transpose()
}

/// The approvers who approved, in order (read from the broker's votes).
pub async fn approvers(db: &Db, approval: Uuid) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select approver from approval_votes where approval_id = $1 and approve = 1 order by at, approver",
    )
    .bind(approval.to_string())
    .fetch_all(&db.pool)
    .await
}
