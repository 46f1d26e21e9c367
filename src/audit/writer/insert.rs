//! The batch's rows: chained onto the head, the last one signed, and inserted in multi-row
//! INSERT statements.

use super::head::Head;
use crate::audit::chain::{self, Fields};
use crate::audit::{AuditKeys, Indexed, Prepared};
use crate::store::Backend;
use std::fmt::Write as _;
use uuid::Uuid;

/// Rows per INSERT statement (16 bound values each).
pub(super) const ROWS_PER_INSERT: usize = 64;
const COLUMNS: &str = "seq, id, call_id, kind, at, actor, agent, server, tool, approver, \
                       outcome, payload, prev_hash, hash, key_id, signature";
const VALUES_PER_ROW: usize = 16;

/// One event as it is about to be inserted.
pub(super) struct PendingRow<'a> {
    pub(super) event: &'a Prepared,
    pub(super) seq: i64,
    pub(super) id: String,
    prev_hash: String,
    pub(super) hash: String,
    seal: Option<(String, String)>,
}

/// `events` as rows chained onto `head`, each stamped `at`, the last one signed with the
/// writer's key. Returns the rows and the head they end in (`head` itself when there are no
/// events).
pub(super) fn chain_onto<'a>(
    head: &Head,
    events: impl Iterator<Item = &'a Prepared>,
    at: &str,
    keys: &AuditKeys,
) -> (Vec<PendingRow<'a>>, Head) {
    let mut next = head.clone();
    let mut rows = Vec::new();
    let mut canonical = Vec::with_capacity(512);
    for event in events {
        let seq = next.seq + 1;
        let id = Uuid::now_v7().to_string();
        canonical.clear();
        chain::write_canonical(
            &mut canonical,
            &Fields {
                seq,
                id: &id,
                call_id: event.call_id.as_deref(),
                kind: event.kind.as_str(),
                at,
                actor: &event.actor,
                payload: &event.payload,
            },
        );
        let hash = String::from_utf8(chain::chain_hash(&next.hash, &canonical).to_vec())
            .expect("hex is ASCII");
        rows.push(PendingRow {
            event,
            seq,
            id,
            prev_hash: std::mem::replace(&mut next.hash, hash.clone()),
            hash,
            seal: None,
        });
        next.seq = seq;
        next.at = at.to_owned();
    }
    sign_last(&mut rows, &mut next, keys);
    (rows, next)
}

/// Signs the new head: the last row carries the writer's signature over its seq and hash.
fn sign_last(rows: &mut [PendingRow<'_>], next: &mut Head, keys: &AuditKeys) {
    if let Some(last) = rows.last_mut() {
        let seal = (
            keys.signing.id().to_owned(),
            keys.signing.sign_head(last.seq, &last.hash),
        );
        last.seal = Some(seal.clone());
        next.seal = Some(seal);
    }
}

/// Inserts `rows` (at most [`ROWS_PER_INSERT`]) in one statement.
pub(super) async fn insert(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    rows: &[PendingRow<'_>],
    at: &str,
) -> Result<(), sqlx::Error> {
    let sql = insert_sql(backend, rows.len());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        let Indexed {
            agent,
            server,
            tool,
            approver,
            outcome,
        } = &row.event.indexed;
        let (key_id, signature) = row.seal.clone().unzip();
        query = query
            .bind(row.seq)
            .bind(row.id.clone())
            .bind(row.event.call_id.clone())
            .bind(row.event.kind.as_str())
            .bind(at.to_owned())
            .bind(row.event.actor.clone())
            .bind(agent.clone())
            .bind(server.clone())
            .bind(tool.clone())
            .bind(approver.clone())
            .bind(outcome.clone())
            .bind(row.event.payload.clone())
            .bind(row.prev_hash.clone())
            .bind(row.hash.clone())
            .bind(key_id)
            .bind(signature);
    }
    query.execute(&mut *tx).await?;
    Ok(())
}

/// A multi-row INSERT. SQLite gets anonymous `?` placeholders: sqlx looks up the name of
/// every numbered parameter, which is quadratic in their count (it was a fifth of the time).
fn insert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = format!("INSERT INTO audit_events ({COLUMNS}) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for col in 0..VALUES_PER_ROW {
            if col > 0 {
                sql.push(',');
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    let _ = write!(sql, "${}", row * VALUES_PER_ROW + col + 1);
                }
            }
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_every_placeholder() {
        let sql = insert_sql(Backend::Postgres, 2);
        assert!(sql.ends_with("$31,$32)"), "{sql}");
        let sql = insert_sql(Backend::Sqlite, 2);
        assert_eq!(sql.matches('?').count(), 32);
    }
}
