//! The audit log: one append-only, hash-chained table of events in a total order.
//!
//! * [`AuditLog::append`] resolves only once the event is durably committed. One writer task
//!   per process does group commit: it takes every queued append (up to [`MAX_BATCH`] events)
//!   into one transaction, numbers them `seq = head + 1, head + 2, …`, chains their hashes,
//!   commits, and then answers every waiter. If the commit fails every waiter gets an error:
//!   the caller must then refuse the call (fail closed).
//! * Several writers never fork the chain: inside each transaction the writer takes the chain
//!   lock and reads the head again. On PostgreSQL the lock is `pg_advisory_xact_lock`, so
//!   several gateway replicas can share one log. On SQLite it is `BEGIN IMMEDIATE` (the
//!   database's single write lock), which also covers a CLI process appending `audit.read`
//!   events while the gateway runs.
//! * The hash chain (`src/audit/chain.rs`): `hash = SHA-256(prev_hash || canonical(event))`;
//!   canonical is JCS with exact 64-bit integers; [`verify()`] recomputes it.
//! * The database refuses UPDATE, DELETE (and on PostgreSQL TRUNCATE) of events; what a
//!   database administrator with full rights can still do (drop the triggers, then edit,
//!   delete, insert, reorder or cut events) is what [`verify()`] detects, the last only
//!   against a [`Checkpoint`] printed earlier.

mod chain;
pub mod cli;
mod http;
mod query;
mod unfinished;
mod verify;

pub use chain::GENESIS_HASH;
pub(crate) use chain::format_timestamp;
pub use http::auditor_router;
pub use query::{Filter, Format, MAX_LIMIT, render};
pub use verify::{Breach, Checkpoint, VerifyReport, checkpoint, verify};

use crate::store::{Backend, Db};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most events the writer commits in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Appends that may wait for the writer before `append` itself waits for room.
const QUEUE: usize = 8192;
/// Rows per INSERT statement (14 bound values each).
const ROWS_PER_INSERT: usize = 64;
/// The PostgreSQL advisory lock key that serialises appends ("cs-audit" as ASCII).
const CHAIN_LOCK_KEY: i64 = 0x6373_2d61_7564_6974;

/// What happened. The string forms are stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "call.received")]
    CallReceived,
    #[serde(rename = "policy.decided")]
    PolicyDecided,
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    #[serde(rename = "approval.seen")]
    ApprovalSeen,
    #[serde(rename = "approval.vote")]
    ApprovalVote,
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    #[serde(rename = "call.forwarded")]
    CallForwarded,
    #[serde(rename = "call.completed")]
    CallCompleted,
    #[serde(rename = "call.failed")]
    CallFailed,
    #[serde(rename = "call.ambiguous")]
    CallAmbiguous,
    #[serde(rename = "audit.read")]
    AuditRead,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::CallReceived,
        EventKind::PolicyDecided,
        EventKind::ApprovalRequested,
        EventKind::ApprovalSeen,
        EventKind::ApprovalVote,
        EventKind::ApprovalDecided,
        EventKind::CallForwarded,
        EventKind::CallCompleted,
        EventKind::CallFailed,
        EventKind::CallAmbiguous,
        EventKind::AuditRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CallReceived => "call.received",
            EventKind::PolicyDecided => "policy.decided",
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::ApprovalSeen => "approval.seen",
            EventKind::ApprovalVote => "approval.vote",
            EventKind::ApprovalDecided => "approval.decided",
            EventKind::CallForwarded => "call.forwarded",
            EventKind::CallCompleted => "call.completed",
            EventKind::CallFailed => "call.failed",
            EventKind::CallAmbiguous => "call.ambiguous",
            EventKind::AuditRead => "audit.read",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                AuditError::InvalidQuery(format!(
                    "unknown event kind `{s}`; known kinds: {}",
                    EventKind::ALL.map(EventKind::as_str).join(", ")
                ))
            })
    }
}

/// An event to append. The writer assigns `seq`, `id`, `at` and the hashes.
///
/// The payload's top-level string fields `agent`, `server`, `tool`, `approver` and `outcome`
/// are also stored as indexed columns, which is what makes [`Filter`] fast: emitters should
/// put `agent`, `server` and `tool` on every event of a call, so that filtering by them finds
/// the call's whole story.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub call_id: Option<Uuid>,
    pub kind: EventKind,
    pub actor: String,
    pub payload: serde_json::Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub seq: i64,
    pub id: Uuid,
    pub call_id: Option<Uuid>,
    pub kind: EventKind,
    /// RFC 3339 UTC with six fractional digits.
    pub at: String,
    pub actor: String,
    pub payload: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Where an appended event landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub seq: i64,
    pub hash: String,
    pub id: Uuid,
    pub at: String,
}

/// Errors of the audit log. An append error means the event is not in the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the audit log could not be written: {0}")]
    WriteFailed(String),
    #[error("the audit log writer has stopped; no event can be recorded")]
    WriterStopped,
    #[error("the event cannot be recorded: {0}")]
    InvalidEvent(String),
    #[error("invalid audit query: {0}")]
    InvalidQuery(String),
    #[error("verifying the audit log failed: {0}")]
    VerifyFailed(String),
    #[error("audit event {seq} cannot be read: {reason} (run `countersign audit verify`)")]
    Corrupt { seq: i64, reason: String },
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Store(crate::store::StoreError::Query(e))
    }
}

/// The handle to the audit log; cheap to clone. The writer task stops when the last handle
/// is dropped, after committing what was queued.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    queue: mpsc::Sender<Request>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("backend", &self.inner.db.backend)
            .finish_non_exhaustive()
    }
}

/// One caller's events, committed together, answered together.
struct Request {
    events: Vec<Prepared>,
    reply: oneshot::Sender<Result<Vec<Appended>, AuditError>>,
}

/// An event with its payload already canonical (done on the caller's task, not the writer's).
struct Prepared {
    call_id: Option<String>,
    kind: EventKind,
    actor: String,
    payload: String,
    indexed: Indexed,
}

/// The payload fields copied into indexed columns.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Indexed {
    pub agent: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub approver: Option<String>,
    pub outcome: Option<String>,
}

impl Indexed {
    fn of(payload: &serde_json::Value) -> Indexed {
        let field = |name: &str| {
            payload
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Indexed {
            agent: field("agent"),
            server: field("server"),
            tool: field("tool"),
            approver: field("approver"),
            outcome: field("outcome"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    seq: i64,
    hash: String,
    at: String,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            at: String::new(),
        }
    }
}

impl AuditLog {
    /// Reads the head of the chain and starts the writer task.
    pub async fn open(db: Db) -> Result<AuditLog, AuditError> {
        let head = read_head(&db.pool).await?;
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(run_writer(db.clone(), requests, head));
        Ok(AuditLog {
            inner: Arc::new(Inner { db, queue }),
        })
    }

    /// The database behind the log.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Appends one event; resolves once it is durably committed.
    pub async fn append(&self, event: NewEvent) -> Result<Appended, AuditError> {
        let mut appended = self.append_all(vec![event]).await?;
        appended
            .pop()
            .ok_or_else(|| AuditError::WriteFailed("the writer answered no event".into()))
    }

    /// Appends several events atomically and consecutively (all or none); resolves once they
    /// are durably committed. At most [`MAX_BATCH`] events.
    pub async fn append_all(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, AuditError> {
        if events.len() > MAX_BATCH {
            return Err(AuditError::InvalidEvent(format!(
                "{} events in one append; at most {MAX_BATCH}",
                events.len()
            )));
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let events = events
            .into_iter()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .send(Request { events, reply })
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        answer.await.map_err(|_| AuditError::WriterStopped)?
    }

    /// Events matching `filter`, in chain order.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<Event>, AuditError> {
        query::list(&self.inner.db, filter).await
    }

    /// Every event of one call, in chain order.
    pub async fn show(&self, call_id: Uuid) -> Result<Vec<Event>, AuditError> {
        query::show(&self.inner.db, call_id).await
    }
}

fn prepare(event: NewEvent) -> Result<Prepared, AuditError> {
    if !event.payload.is_object() {
        return Err(AuditError::InvalidEvent(
            "the payload must be a JSON object".into(),
        ));
    }
    let payload = chain::canonical_payload(&event.payload).map_err(AuditError::InvalidEvent)?;
    Ok(Prepared {
        call_id: event.call_id.map(|id| id.to_string()),
        kind: event.kind,
        actor: event.actor,
        indexed: Indexed::of(&event.payload),
        payload,
    })
}

async fn read_head<'e, E>(executor: E) -> Result<Head, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT seq, hash, at FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(executor)
        .await?;
    Ok(match row {
        Some(row) => Head {
            seq: row.try_get(0)?,
            hash: row.try_get(1)?,
            at: row.try_get(2)?,
        },
        None => Head::genesis(),
    })
}

async fn run_writer(db: Db, mut requests: mpsc::Receiver<Request>, mut head: Head) {
    let mut batch: Vec<Request> = Vec::new();
    loop {
        // Take what is queued, up to MAX_BATCH events (always at least one request).
        if batch.is_empty() && requests.recv_many(&mut batch, 1).await == 0 {
            return;
        }
        // Let appenders that are ready to run queue their events too, so they share this
        // commit (one fsync) instead of each waiting for the next.
        tokio::task::yield_now().await;
        let mut events: usize = batch.iter().map(|r| r.events.len()).sum();
        let mut carry = None;
        while events < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) if events + request.events.len() <= MAX_BATCH => {
                    events += request.events.len();
                    batch.push(request);
                }
                Ok(request) => {
                    carry = Some(request);
                    break;
                }
                Err(_) => break,
            }
        }
        let result = write_batch(&db, &mut head, &batch).await;
        match result {
            Ok(mut appended) => {
                for request in batch.drain(..).rev() {
                    let mine = appended.split_off(appended.len() - request.events.len());
                    let _ = request.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(error = %message, events, "audit append failed; the calls are refused");
                for request in batch.drain(..) {
                    let _ = request
                        .reply
                        .send(Err(AuditError::WriteFailed(message.clone())));
                }
                // The transaction was rolled back; start again from what the database holds.
                match read_head(&db.pool).await {
                    Ok(current) => head = current,
                    Err(e) => tracing::error!(error = %e, "cannot reload the audit head"),
                }
            }
        }
        batch.extend(carry);
    }
}

/// Commits one batch and returns where each event landed, in batch order.
async fn write_batch(
    db: &Db,
    head: &mut Head,
    batch: &[Request],
) -> Result<Vec<Appended>, sqlx::Error> {
    let mut tx = match db.backend {
        // Takes SQLite's write lock now, so the head read below cannot go stale.
        Backend::Sqlite => db.pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => db.pool.begin().await?,
    };
    if db.backend == Backend::Postgres {
        sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
    }
    let current = read_head(&mut *tx).await?;
    if current != *head {
        tracing::debug!(
            seq = current.seq,
            "another writer appended to the audit log; continuing from its head"
        );
    }
    let mut next = current;

    let mut rows = Vec::with_capacity(batch.iter().map(|r| r.events.len()).sum());
    let now = chain::now_timestamp();
    // `at` never goes back along the chain, even if this host's clock is behind another's.
    let at = if now > next.at { now } else { next.at.clone() };
    let mut canonical = Vec::with_capacity(512);
    for event in batch.iter().flat_map(|r| &r.events) {
        let seq = next.seq + 1;
        let id = Uuid::now_v7();
        let id_text = id.to_string();
        canonical.clear();
        chain::write_canonical(
            &mut canonical,
            &chain::Fields {
                seq,
                id: &id_text,
                call_id: event.call_id.as_deref(),
                kind: event.kind.as_str(),
                at: &at,
                actor: &event.actor,
                payload: &event.payload,
            },
        );
        let hash = chain::chain_hash(&next.hash, &canonical);
        let hash = String::from_utf8(hash.to_vec()).expect("hex is ASCII");
        rows.push((event, seq, id, id_text, next.hash.clone(), hash.clone()));
        next = Head {
            seq,
            hash,
            at: at.clone(),
        };
    }

    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = insert_sql(db.backend, chunk.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (event, seq, _, id_text, prev_hash, hash) in chunk {
            query = query
                .bind(*seq)
                .bind(id_text.clone())
                .bind(event.call_id.clone())
                .bind(event.kind.as_str())
                .bind(at.clone())
                .bind(event.actor.clone())
                .bind(event.indexed.agent.clone())
                .bind(event.indexed.server.clone())
                .bind(event.indexed.tool.clone())
                .bind(event.indexed.approver.clone())
                .bind(event.indexed.outcome.clone())
                .bind(event.payload.clone())
                .bind(prev_hash.clone())
                .bind(hash.clone());
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    *head = next;
    Ok(rows
        .into_iter()
        .map(|(_, seq, id, _, _, hash)| Appended {
            seq,
            hash,
            id,
            at: at.clone(),
        })
        .collect())
}

const COLUMNS: &str = "seq, id, call_id, kind, at, actor, agent, server, tool, approver, \
                       outcome, payload, prev_hash, hash";

/// A multi-row INSERT. SQLite gets anonymous `?` placeholders: sqlx looks up the name of
/// every numbered parameter, which is quadratic in their count (it was a fifth of the time).
fn insert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = format!("INSERT INTO audit_events ({COLUMNS}) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for col in 0..14 {
            if col > 0 {
                sql.push(',');
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    let _ = write!(sql, "${}", row * 14 + col + 1);
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
    use serde_json::json;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        assert!("call.exploded".parse::<EventKind>().is_err());
    }

    #[test]
    fn indexed_fields_are_top_level_strings() {
        let indexed = Indexed::of(
            &json!({"agent": "ci", "tool": 3, "server": {"x": 1}, "outcome": "denied"}),
        );
        assert_eq!(
            indexed,
            Indexed {
                agent: Some("ci".into()),
                outcome: Some("denied".into()),
                ..Indexed::default()
            }
        );
    }

    #[test]
    fn insert_sql_numbers_every_placeholder() {
        let sql = insert_sql(Backend::Postgres, 2);
        assert!(sql.ends_with("$27,$28)"), "{sql}");
        let sql = insert_sql(Backend::Sqlite, 2);
        assert_eq!(sql.matches('?').count(), 28);
    }
}
