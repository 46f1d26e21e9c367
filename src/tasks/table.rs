//! SQL for tasks: runtime queries that run on SQLite and PostgreSQL alike.

use super::{Phase, Task, TaskStatus};
use crate::store::Db;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

const COLUMNS: &str = "id, call_id, agent, era, call, phase, status, status_message, approval_id, \
                       result, error, created_at, updated_at, ttl_ms, poll_ms";

fn from_row(row: &AnyRow) -> Result<Task, sqlx::Error> {
    let uuid = |col: &str| -> Result<Uuid, sqlx::Error> {
        let text: String = row.try_get(col)?;
        Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let json = |col: &str| -> Result<Option<Value>, sqlx::Error> {
        let text: Option<String> = row.try_get(col)?;
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let decode = |what: &str, text: String| sqlx::Error::Decode(format!("{what} {text:?}").into());
    let phase: String = row.try_get("phase")?;
    let status: String = row.try_get("status")?;
    let approval: Option<String> = row.try_get("approval_id")?;
    Ok(Task {
        id: uuid("id")?,
        call_id: uuid("call_id")?,
        agent: row.try_get("agent")?,
        modern: row.try_get::<String, _>("era")? == "modern",
        call: json("call")?.unwrap_or(Value::Null),
        phase: Phase::parse(&phase).ok_or_else(|| decode("task phase", phase.clone()))?,
        status: TaskStatus::parse(&status).ok_or_else(|| decode("task status", status.clone()))?,
        status_message: row.try_get("status_message")?,
        approval_id: approval.and_then(|a| Uuid::parse_str(&a).ok()),
        result: json("result")?,
        error: json("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        ttl_ms: row.try_get("ttl_ms")?,
        poll_ms: row.try_get("poll_ms")?,
    })
}

pub async fn insert(
    db: &Db,
    task: &Task,
    owner: &str,
    lease_until: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into tasks (id, call_id, agent, era, call, phase, status, status_message, created_at, updated_at, ttl_ms, poll_ms, owner, lease_until) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(task.id.to_string())
    .bind(task.call_id.to_string())
    .bind(&task.agent)
    .bind(if task.modern { "modern" } else { "legacy" })
    .bind(task.call.to_string())
    .bind(task.phase.as_str())
    .bind(task.status.as_str())
    .bind(&task.status_message)
    .bind(task.created_at)
    .bind(task.updated_at)
    .bind(task.ttl_ms)
    .bind(task.poll_ms)
    .bind(owner)
    .bind(lease_until)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn get(db: &Db, id: Uuid) -> Result<Option<Task>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("select {COLUMNS} from tasks where id = $1"));
    let row = sqlx::query(sql)
        .bind(id.to_string())
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// An agent's tasks, newest first, `limit` at most, created before `before` (ms) when given.
pub async fn list(db: &Db, agent: &str, limit: i64) -> Result<Vec<Task>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from tasks where agent = $1 order by created_at desc limit $2"
    ));
    let rows = sqlx::query(sql)
        .bind(agent)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Moves a working task to `phase` (with the approval it waits on, when known).
pub async fn set_phase(
    db: &Db,
    id: Uuid,
    phase: Phase,
    approval: Option<Uuid>,
    message: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update tasks set phase = $2, approval_id = coalesce($3, approval_id), status_message = $4, updated_at = $5 \
         where id = $1 and status = 'working'",
    )
    .bind(id.to_string())
    .bind(phase.as_str())
    .bind(approval.map(|a| a.to_string()))
    .bind(message)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends a working task (compare-and-set: a task cancelled meanwhile stays cancelled).
pub async fn finish(
    db: &Db,
    id: Uuid,
    status: TaskStatus,
    message: &str,
    result: Option<&Value>,
    error: Option<&Value>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update tasks set status = $2, phase = 'done', status_message = $3, result = $4, error = $5, updated_at = $6, lease_until = 0 \
         where id = $1 and status = 'working'",
    )
    .bind(id.to_string())
    .bind(status.as_str())
    .bind(message)
    .bind(result.map(Value::to_string))
    .bind(error.map(Value::to_string))
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Renews this instance's lease on its running tasks; returns the ids no longer working here
/// (cancelled, or taken over), so their runners stop.
pub async fn renew(
    db: &Db,
    owner: &str,
    ids: &[Uuid],
    lease_until: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    // One transaction (one commit) for every lease, in statements of a bounded size.
    let mut tx = db.pool.begin().await?;
    let mut kept = std::collections::HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(crate::store::IN_LIST_CHUNK) {
        let list = crate::store::placeholders(3, chunk.len());
        let sql = format!(
            "update tasks set lease_until = $2 where owner = $1 and status = 'working' \
             and id in ({list}) returning id"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_until);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut *tx).await? {
            kept.insert(row.try_get::<String, _>(0)?);
        }
    }
    tx.commit().await?;
    Ok(ids
        .iter()
        .filter(|id| !kept.contains(&id.to_string()))
        .copied()
        .collect())
}

/// Working tasks whose lease lapsed: their instance died.
pub async fn orphans(db: &Db, now: i64) -> Result<Vec<Task>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from tasks where status = 'working' and lease_until < $1 order by created_at limit 100"
    ));
    let rows = sqlx::query(sql).bind(now).fetch_all(&db.pool).await?;
    rows.iter().map(from_row).collect()
}

/// Takes over an orphaned task (compare-and-set on the lapsed lease: one instance wins).
pub async fn claim(
    db: &Db,
    id: Uuid,
    owner: &str,
    now: i64,
    lease_until: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update tasks set owner = $2, lease_until = $4 where id = $1 and status = 'working' and lease_until < $3",
    )
    .bind(id.to_string())
    .bind(owner)
    .bind(now)
    .bind(lease_until)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes ended tasks whose time to live has passed.
pub async fn purge(db: &Db, now: i64) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("delete from tasks where status <> 'working' and updated_at + ttl_ms < $1")
            .bind(now)
            .execute(&db.pool)
            .await?;
    Ok(done.rows_affected())
}
