//! Observers: they see every event of the chain that the writer committed or verified, in
//! `seq` order, starting with a replay of the verified events they ask for.

use super::Writer;
use super::head::{self, Head, READ_COLUMNS, StoredRow};
use super::insert::PendingRow;
use crate::audit::{AuditError, AuditKeys, EventKind};
use crate::store::Db;
use std::sync::Arc;
use uuid::Uuid;

/// One event as committed (by this writer) or verified (appended by another).
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub seq: i64,
    pub call_id: Option<Uuid>,
    pub kind: EventKind,
    pub actor: &'a str,
    /// The payload's canonical JSON.
    pub payload: &'a str,
}

/// Sees every event of the chain that the writer committed or verified, in `seq` order.
pub trait Observer: Send + Sync {
    fn observe(&self, event: &Recorded<'_>);
}

impl Writer {
    /// Shows one event to every observer.
    pub(super) fn feed(&self, recorded: &Recorded<'_>) {
        for observer in &self.observers {
            observer.observe(recorded);
        }
    }

    /// Shows the events this writer just committed to every observer.
    pub(super) fn feed_committed(&self, rows: &[PendingRow<'_>]) {
        for row in rows {
            let recorded = Recorded {
                seq: row.seq,
                call_id: row
                    .event
                    .call_id
                    .as_deref()
                    .and_then(|c| Uuid::parse_str(c).ok()),
                kind: row.event.kind,
                actor: &row.event.actor,
                payload: &row.event.payload,
            };
            self.feed(&recorded);
        }
    }

    /// Replays the verified events from `from` to the head into `observer`, then keeps it.
    pub(super) async fn attach(
        &mut self,
        observer: Arc<dyn Observer>,
        from: Option<i64>,
    ) -> Result<(), AuditError> {
        if let Some(from) = from.filter(|&from| from <= self.head.seq) {
            replay(&self.db, &self.keys, &self.head, observer.as_ref(), from).await?;
        }
        self.observers.push(observer);
        Ok(())
    }
}

/// Feeds `observer` the events from `from` to the `verified` head, once the links from the
/// first of them to that signed head check out.
async fn replay(
    db: &Db,
    keys: &AuditKeys,
    verified: &Head,
    observer: &dyn Observer,
    from: i64,
) -> Result<(), AuditError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {READ_COLUMNS} FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq"
    )))
    .bind(from.max(1))
    .bind(verified.seq)
    .fetch_all(&db.pool)
    .await?;
    let rows = rows
        .iter()
        .map(StoredRow::of)
        .collect::<Result<Vec<_>, _>>()?;
    // The first row's prev_hash is taken as given: the links from it to the signed
    // head are what prove the rows.
    let start = match rows.first() {
        Some(first) => Head {
            seq: first.seq - 1,
            hash: first.prev_hash.clone(),
            ..Head::genesis()
        },
        None => {
            return Err(AuditError::Tampered(
                "the log has no events to replay".into(),
            ));
        }
    };
    let end =
        head::verify_run(keys, &start, &rows).map_err(|e| AuditError::Tampered(e.to_string()))?;
    if end.seq != verified.seq || end.hash != verified.hash {
        return Err(AuditError::Tampered(format!(
            "replaying events {from}..{} ends at hash {} but the verified head is {}",
            verified.seq, end.hash, verified.hash
        )));
    }
    for row in &rows {
        if let Some(recorded) = row.recorded() {
            observer.observe(&recorded);
        }
    }
    Ok(())
}
