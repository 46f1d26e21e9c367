//! The Matrix sync loop's working state: how far it has read, and what it has handled.

use crate::store::Db;
use sqlx::Row;

/// Where the bot's `/sync` stopped (`next_batch`), if it ever ran.
pub async fn position(db: &Db, account: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("select next_batch from chat_matrix_sync where account = $1")
        .bind(account)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| r.try_get("next_batch")).transpose()
}

pub async fn save_position(db: &Db, account: &str, next_batch: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "insert into chat_matrix_sync (account, next_batch, updated_at) values ($1, $2, $3)
         on conflict (account) do update set next_batch = excluded.next_batch,
                                             updated_at = excluded.updated_at",
    )
    .bind(account)
    .bind(next_batch)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Marks an event handled; false when it already was (a replay after a restart, or twice in
/// one batch). Keys are event ids, or `receipt:<event>:<user>` for read receipts.
pub async fn claim(db: &Db, key: &str, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into chat_matrix_handled (event_key, handled_at) values ($1, $2)
         on conflict (event_key) do nothing",
    )
    .bind(key)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
