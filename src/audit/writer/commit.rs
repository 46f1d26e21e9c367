//! One batch, one transaction: take the chain lock, catch up with the head, run the
//! transitions, chain, sign and insert the events, commit; then feed the observers and answer
//! every request.

use super::insert::{self, PendingRow, ROWS_PER_INSERT};
use super::transition::take_events;
use super::{Done, Request, Work, Writer};
use crate::audit::{Appended, AuditError, Prepared, WriteFailure, chain};
use crate::store::Backend;
use std::sync::Arc;
use uuid::Uuid;

/// The PostgreSQL advisory lock key that serialises appends ("cs-audit" as ASCII).
const CHAIN_LOCK_KEY: i64 = 0x6373_2d61_7564_6974;

/// Why a batch was not committed.
pub(super) enum BatchError {
    /// Shared by every request of the batch.
    Sql(Arc<sqlx::Error>),
    Tampered(String),
    Invalid(String),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Sql(Arc::new(e))
    }
}

impl BatchError {
    fn to_audit(&self) -> AuditError {
        match self {
            BatchError::Sql(e) => AuditError::WriteFailed(WriteFailure::Database(e.clone())),
            BatchError::Tampered(why) => AuditError::Tampered(why.clone()),
            BatchError::Invalid(why) => AuditError::InvalidEvent(why.clone()),
        }
    }
}

impl Writer {
    /// Commits one batch and answers its requests.
    pub(super) async fn commit(&mut self, mut batch: Vec<Request>) {
        let started = std::time::Instant::now();
        match self.write_batch(&mut batch).await {
            Ok(appended) => {
                let events = appended.iter().map(Vec::len).sum();
                crate::telemetry::audit_committed(events, started.elapsed());
                answer(batch, appended);
            }
            Err(e) => {
                self.report_failure(&e);
                for request in batch {
                    let _ = request.reply.send(Err(e.to_audit()));
                }
            }
        }
    }

    /// Counts and logs a failed batch; a tampering once for as long as it persists.
    fn report_failure(&mut self, e: &BatchError) {
        crate::telemetry::audit_commit_failed(match e {
            BatchError::Tampered(_) => "tampered",
            _ => "write",
        });
        match e {
            BatchError::Tampered(why) => {
                if self.alerted.as_deref() != Some(why) {
                    tracing::error!(alert = "audit-tampered", error = %why, "the audit log was changed by someone who does not hold the signing key: every append is refused until it is investigated");
                    self.alerted = Some(why.clone());
                }
            }
            _ => {
                let error = e.to_audit();
                tracing::error!(error = %error, "audit append failed; the calls are refused")
            }
        }
    }

    /// One transaction: catch up with the head, run the transition, insert, sign, commit.
    /// Returns, per request, where its events landed.
    async fn write_batch(
        &mut self,
        batch: &mut [Request],
    ) -> Result<Vec<Vec<Appended>>, BatchError> {
        if self.db.pool.is_closed() {
            // The database was closed under us: so is the writer's own connection.
            self.conn = None;
            return Err(sqlx::Error::PoolClosed.into());
        }
        // An in-memory database lives in the pool's one connection: that one is borrowed per
        // batch. Otherwise the writer keeps a connection of its own, detached from the pool.
        let shared = self.db.pool.options().get_max_connections() == 1;
        if shared {
            let mut conn = self.db.pool.acquire().await?;
            let _turn = self.db.write_turn().await;
            return self.write_batch_on(&mut conn, batch).await;
        }
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.db.pool.acquire().await?.detach(),
        };
        let turn = self.db.write_turn().await;
        let written = self.write_batch_on(&mut conn, batch).await;
        drop(turn);
        // Kept for the next batch; after a failure it is closed (whatever state the failure
        // left it in) and a fresh one is taken.
        if written.is_ok() {
            self.conn = Some(conn);
        }
        written
    }

    async fn write_batch_on(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        batch: &mut [Request],
    ) -> Result<Vec<Vec<Appended>>, BatchError> {
        let backend = self.db.backend;
        let mut tx = begin_locked(conn, backend).await?;
        self.catch_up(&mut tx).await?;
        let owned = take_events(&mut tx, batch).await?;
        let at = self.next_at();
        let (rows, next) = insert::chain_onto(&self.head, owned.iter().flatten(), &at, &self.keys);
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            insert::insert(&mut tx, backend, chunk, &at).await?;
        }
        tx.commit().await?;
        self.head = next;
        self.feed_committed(&rows);
        Ok(landed(&owned, &rows, &at))
    }

    /// The batch's time: now, but never before the head's, even if this host's clock is
    /// behind another's.
    fn next_at(&self) -> String {
        let now = chain::now_timestamp();
        if now > self.head.at {
            now
        } else {
            self.head.at.clone()
        }
    }
}

/// Begins the batch's transaction holding the chain lock, so the head read next cannot go
/// stale.
async fn begin_locked(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> Result<sqlx::Transaction<'_, sqlx::Any>, sqlx::Error> {
    use sqlx::Connection;
    let mut tx = match backend {
        // Takes SQLite's write lock now.
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => conn.begin().await?,
    };
    if backend == Backend::Postgres {
        sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// Where each request's events landed, in the order of `owned`.
fn landed(owned: &[Vec<Prepared>], rows: &[PendingRow<'_>], at: &str) -> Vec<Vec<Appended>> {
    let mut landed = rows.iter().map(|row| Appended {
        seq: row.seq,
        hash: row.hash.clone(),
        id: Uuid::parse_str(&row.id).expect("a minted id parses"),
        at: at.to_owned(),
    });
    owned
        .iter()
        .map(|events| landed.by_ref().take(events.len()).collect())
        .collect()
}

/// Answers every request of a committed batch with where its events landed (and a
/// transition with itself, holding what it decided).
fn answer(batch: Vec<Request>, mut appended: Vec<Vec<Appended>>) {
    for request in batch.into_iter().rev() {
        let mine = appended.pop().unwrap_or_default();
        let transition = match request.work {
            Work::Transition(t) => Some(t),
            _ => None,
        };
        let _ = request.reply.send(Ok(Done {
            appended: mine,
            transition,
        }));
    }
}
