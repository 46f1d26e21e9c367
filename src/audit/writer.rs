//! The writer task: group commit, signed heads, transitions, and the head check that keeps a
//! writer from continuing from events it cannot verify.
//!
//! One batch is one transaction:
//! 1. take the chain lock (`BEGIN IMMEDIATE` on SQLite, `pg_advisory_xact_lock` on
//!    PostgreSQL) and read the head;
//! 2. if the head is not the one this writer left, verify what was appended since (each link,
//!    and a head signed by a trusted key) and feed it to the observers, or refuse;
//! 3. let the batch's transitions (several only when their conflict keys say they decide on
//!    disjoint state) decide on that state and write their changes;
//! 4. insert every event, chained, the last one signed; commit;
//! 5. feed the committed events to the observers, then answer every waiter.

use super::anchor::{Anchor, Anchors};
use super::chain::{self, Fields, GENESIS_HASH};
use super::{Appended, AuditError, AuditKeys, EventKind, Indexed, MAX_BATCH, NewEvent, Prepared};
use crate::store::{Backend, Db};
use futures::future::BoxFuture;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::any::Any;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Rows per INSERT statement (16 bound values each).
const ROWS_PER_INSERT: usize = 64;
/// The PostgreSQL advisory lock key that serialises appends ("cs-audit" as ASCII).
const CHAIN_LOCK_KEY: i64 = 0x6373_2d61_7564_6974;
const COLUMNS: &str = "seq, id, call_id, kind, at, actor, agent, server, tool, approver, \
                       outcome, payload, prev_hash, hash, key_id, signature";
const VALUES_PER_ROW: usize = 16;
/// The stored fields a verifier reads, in this order.
const READ_COLUMNS: &str =
    "seq, id, call_id, kind, at, actor, payload, prev_hash, hash, key_id, signature";

/// A state change that commits with the events recording it. The writer calls [`decide`]
/// with the chain lock held and every earlier event already seen by the observers, then
/// [`write`] in the same transaction; the caller gets the transition back, holding what it
/// decided.
///
/// [`decide`]: Transition::decide
/// [`write`]: Transition::write
pub trait Transition: Any + Send {
    /// The events to append (none: nothing happens, and `write` is still called).
    fn decide(&mut self) -> Vec<NewEvent>;

    /// Writes the working-state change in the writer's transaction.
    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// What this transition decides on, as (kind, key): transitions of one kind with different
    /// keys decide on disjoint state, so they may share a commit, each deciding as if alone.
    /// `None` (the default): it commits in a batch with no other transition.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        None
    }
}

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

pub(super) enum Work {
    Append(Vec<Prepared>),
    /// Events nothing waits on: they join the next commit (see `AuditLog::append_deferred`).
    Deferred(Vec<Prepared>),
    Transition(Box<dyn Transition>),
    Attach(Arc<dyn Observer>, Option<i64>),
}

pub(super) struct Request {
    pub work: Work,
    pub reply: oneshot::Sender<Result<Done, AuditError>>,
}

/// What the writer answers one request.
pub(super) struct Done {
    pub appended: Vec<Appended>,
    pub transition: Option<Box<dyn Transition>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    seq: i64,
    hash: String,
    at: String,
    /// The key and signature on the head event (absent only on a log from before signing).
    seal: Option<(String, String)>,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            at: String::new(),
            seal: None,
        }
    }
}

/// A stored row, as a verifier reads it.
struct StoredRow {
    seq: i64,
    id: String,
    call_id: Option<String>,
    kind: String,
    at: String,
    actor: String,
    payload: String,
    prev_hash: String,
    hash: String,
    key_id: Option<String>,
    signature: Option<String>,
}

impl StoredRow {
    fn of(row: &AnyRow) -> Result<StoredRow, sqlx::Error> {
        Ok(StoredRow {
            seq: row.try_get(0)?,
            id: row.try_get(1)?,
            call_id: row.try_get(2)?,
            kind: row.try_get(3)?,
            at: row.try_get(4)?,
            actor: row.try_get(5)?,
            payload: row.try_get(6)?,
            prev_hash: row.try_get(7)?,
            hash: row.try_get(8)?,
            key_id: row.try_get(9)?,
            signature: row.try_get(10)?,
        })
    }

    /// The hash this row's fields and `prev_hash` chain to.
    fn computed_hash(&self) -> String {
        let mut canonical = Vec::with_capacity(256 + self.payload.len());
        chain::write_canonical(
            &mut canonical,
            &Fields {
                seq: self.seq,
                id: &self.id,
                call_id: self.call_id.as_deref(),
                kind: &self.kind,
                at: &self.at,
                actor: &self.actor,
                payload: &self.payload,
            },
        );
        String::from_utf8(chain::chain_hash(&self.prev_hash, &canonical).to_vec())
            .expect("hex is ASCII")
    }

    fn recorded(&self) -> Option<Recorded<'_>> {
        Some(Recorded {
            seq: self.seq,
            call_id: self
                .call_id
                .as_deref()
                .and_then(|c| Uuid::parse_str(c).ok()),
            kind: self.kind.parse().ok()?,
            actor: &self.actor,
            payload: &self.payload,
        })
    }

    fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
            at: self.at.clone(),
            seal: self.key_id.clone().zip(self.signature.clone()),
        }
    }
}

/// Why a batch was not committed.
enum BatchError {
    Sql(sqlx::Error),
    Tampered(String),
    Invalid(String),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Sql(e)
    }
}

impl BatchError {
    fn to_audit(&self) -> AuditError {
        match self {
            BatchError::Sql(e) => AuditError::WriteFailed(e.to_string()),
            BatchError::Tampered(why) => AuditError::Tampered(why.clone()),
            BatchError::Invalid(why) => AuditError::InvalidEvent(why.clone()),
        }
    }
}

pub(super) struct Writer {
    db: Db,
    /// The writer's own connection, detached from the pool: every call's record waits on the
    /// writer, so it never waits for a connection behind other work, and its page cache stays
    /// warm (on SQLite each connection has its own).
    conn: Option<sqlx::AnyConnection>,
    keys: Arc<AuditKeys>,
    head: Head,
    anchors: Option<Anchors>,
    anchored_seq: i64,
    observers: Vec<Arc<dyn Observer>>,
    /// The last tampering reported, so a persisting one is logged once.
    alerted: Option<String>,
}

impl Writer {
    /// Reads and checks the head: it must chain from its own fields, carry a signature by a
    /// trusted key, and not be behind the last anchor.
    pub(super) async fn open(
        db: Db,
        keys: Arc<AuditKeys>,
        anchors: Option<Anchors>,
    ) -> Result<Writer, AuditError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {READ_COLUMNS} FROM audit_events ORDER BY seq DESC LIMIT 1"
        )))
        .fetch_optional(&db.pool)
        .await?;
        let last_anchor = match &anchors {
            Some(anchors) => anchors.last()?,
            None => None,
        };
        let head = match row {
            None => Head::genesis(),
            Some(row) => {
                let row = StoredRow::of(&row)?;
                check_head_row(&db, &keys, &row, last_anchor.is_some()).await?;
                row.head()
            }
        };
        if let Some(anchor) = &last_anchor {
            check_against_anchor(&db, &keys, &head, anchor).await?;
        }
        Ok(Writer {
            db,
            conn: None,
            keys,
            anchored_seq: last_anchor.map_or(0, |a| a.seq),
            head,
            anchors,
            observers: Vec::new(),
            alerted: None,
        })
    }

    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let every = self
            .anchors
            .as_ref()
            .map_or(std::time::Duration::from_secs(3600), Anchors::every);
        let mut next_anchor = tokio::time::Instant::now() + every;
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(request) => request,
                None => tokio::select! {
                    request = requests.recv() => match request {
                        Some(request) => request,
                        None => break,
                    },
                    _ = tokio::time::sleep_until(next_anchor) => {
                        self.anchor().await;
                        next_anchor = tokio::time::Instant::now() + every;
                        continue;
                    }
                },
            };
            if let Work::Attach(observer, from) = first.work {
                let result = self.attach(observer, from).await;
                let _ = first.reply.send(result.map(|()| Done {
                    appended: Vec::new(),
                    transition: None,
                }));
                continue;
            }
            let mut batch = Batch::of(first);
            // Let appenders that are ready to run queue their events too, so they share this
            // commit (one fsync) instead of each waiting for the next.
            tokio::task::yield_now().await;
            while !batch.is_full() {
                let Ok(request) = requests.try_recv() else {
                    break;
                };
                if let Err(request) = batch.add(request) {
                    carry = Some(request);
                    break;
                }
            }
            if carry.is_none() && batch.can_wait() {
                // Nothing here is on a call's path: wait a little for something that is.
                let deadline = tokio::time::Instant::now() + super::DEFER_AT_MOST;
                while carry.is_none() && batch.can_wait() {
                    let request = tokio::select! {
                        request = requests.recv() => request,
                        _ = tokio::time::sleep_until(deadline) => None,
                    };
                    let Some(request) = request else { break };
                    if let Err(request) = batch.add(request) {
                        carry = Some(request);
                    }
                }
            }
            self.commit(batch.requests).await;
            // Under a steady load the queue is never empty: anchor between batches too.
            if tokio::time::Instant::now() >= next_anchor {
                self.anchor().await;
                next_anchor = tokio::time::Instant::now() + every;
            }
        }
        self.anchor().await;
    }

    /// Commits one batch and answers its requests.
    async fn commit(&mut self, mut batch: Vec<Request>) {
        let started = std::time::Instant::now();
        match self.write_batch(&mut batch).await {
            Ok(mut appended) => {
                let events = appended.iter().map(Vec::len).sum();
                crate::telemetry::audit_committed(events, started.elapsed());
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
            Err(e) => {
                let error = e.to_audit();
                crate::telemetry::audit_commit_failed(match &e {
                    BatchError::Tampered(_) => "tampered",
                    _ => "write",
                });
                match &e {
                    BatchError::Tampered(why) => {
                        if self.alerted.as_deref() != Some(why) {
                            tracing::error!(alert = "audit-tampered", error = %why, "the audit log was changed by someone who does not hold the signing key: every append is refused until it is investigated");
                            self.alerted = Some(why.clone());
                        }
                    }
                    _ => {
                        tracing::error!(error = %error, "audit append failed; the calls are refused")
                    }
                }
                for request in batch {
                    let _ = request.reply.send(Err(match &error {
                        AuditError::Tampered(w) => AuditError::Tampered(w.clone()),
                        AuditError::InvalidEvent(w) => AuditError::InvalidEvent(w.clone()),
                        other => AuditError::WriteFailed(other.to_string()),
                    }));
                }
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
            return Err(BatchError::Sql(sqlx::Error::PoolClosed));
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
        use sqlx::Connection;
        let db = self.db.clone();
        let mut tx = match db.backend {
            // Takes SQLite's write lock now, so the head read below cannot go stale.
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => conn.begin().await?,
        };
        if db.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(CHAIN_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        self.catch_up(&mut tx).await?;

        let mut owned: Vec<Vec<Prepared>> = Vec::with_capacity(batch.len());
        for request in batch.iter_mut() {
            match &mut request.work {
                Work::Append(events) | Work::Deferred(events) => owned.push(std::mem::take(events)),
                Work::Transition(transition) => {
                    let events = transition
                        .decide()
                        .into_iter()
                        .map(super::prepare)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| BatchError::Invalid(e.to_string()))?;
                    transition.write(&mut tx).await?;
                    owned.push(events);
                }
                Work::Attach(..) => owned.push(Vec::new()),
            }
        }

        let now = chain::now_timestamp();
        // `at` never goes back along the chain, even if this host's clock is behind another's.
        let at = if now > self.head.at {
            now
        } else {
            self.head.at.clone()
        };
        let mut next = self.head.clone();
        let mut rows = Vec::new();
        let mut canonical = Vec::with_capacity(512);
        for event in owned.iter().flatten() {
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
                    at: &at,
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
            next.at.clone_from(&at);
        }
        if let Some(last) = rows.last_mut() {
            let seal = (
                self.keys.signing.id().to_owned(),
                self.keys.signing.sign_head(last.seq, &last.hash),
            );
            last.seal = Some(seal.clone());
            next.seal = Some(seal);
        }
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            insert(&mut tx, db.backend, chunk, &at).await?;
        }
        tx.commit().await?;
        self.head = next;

        for row in &rows {
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
            for observer in &self.observers {
                observer.observe(&recorded);
            }
        }
        let mut landed = rows.iter().map(|row| Appended {
            seq: row.seq,
            hash: row.hash.clone(),
            id: Uuid::parse_str(&row.id).expect("a minted id parses"),
            at: at.clone(),
        });
        Ok(owned
            .iter()
            .map(|events| landed.by_ref().take(events.len()).collect())
            .collect())
    }

    /// Verifies what other writers appended since this writer's head, feeds it to the
    /// observers, and moves the head; refuses a head that went back, was rewritten, or ends
    /// in events no trusted key signed.
    async fn catch_up(&mut self, tx: &mut sqlx::AnyConnection) -> Result<(), BatchError> {
        let current = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (seq, hash): (i64, String) = match current {
            Some(row) => (row.try_get(0)?, row.try_get(1)?),
            None => (0, GENESIS_HASH.to_owned()),
        };
        if seq == self.head.seq && hash == self.head.hash {
            return Ok(());
        }
        if seq <= self.head.seq {
            return Err(BatchError::Tampered(format!(
                "this writer's last event is seq {} ({}), but the log now ends at seq {seq} \
                 ({hash}): events were removed or rewritten",
                self.head.seq, self.head.hash
            )));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {READ_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq"
        )))
        .bind(self.head.seq)
        .fetch_all(&mut *tx)
        .await?;
        let rows = rows
            .iter()
            .map(StoredRow::of)
            .collect::<Result<Vec<_>, _>>()?;
        let head = verify_run(&self.keys, &self.head, &rows).map_err(BatchError::Tampered)?;
        for row in &rows {
            if let Some(recorded) = row.recorded() {
                for observer in &self.observers {
                    observer.observe(&recorded);
                }
            }
        }
        self.head = head;
        Ok(())
    }

    /// Replays the verified events from `from` to the head into `observer`, then keeps it.
    async fn attach(
        &mut self,
        observer: Arc<dyn Observer>,
        from: Option<i64>,
    ) -> Result<(), AuditError> {
        if let Some(from) = from.filter(|&from| from <= self.head.seq) {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {READ_COLUMNS} FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq"
            )))
            .bind(from.max(1))
            .bind(self.head.seq)
            .fetch_all(&self.db.pool)
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
            let end = verify_run(&self.keys, &start, &rows).map_err(AuditError::Tampered)?;
            if end.seq != self.head.seq || end.hash != self.head.hash {
                return Err(AuditError::Tampered(format!(
                    "replaying events {from}..{} ends at hash {} but the verified head is {}",
                    self.head.seq, end.hash, self.head.hash
                )));
            }
            for row in &rows {
                if let Some(recorded) = row.recorded() {
                    observer.observe(&recorded);
                }
            }
        }
        self.observers.push(observer);
        Ok(())
    }

    /// Writes the current signed head to the anchors file, when it moved.
    async fn anchor(&mut self) {
        let Some(anchors) = &self.anchors else {
            return;
        };
        let Some((key_id, signature)) = self.head.seal.clone() else {
            return;
        };
        if self.head.seq <= self.anchored_seq {
            return;
        }
        let anchor = Anchor {
            seq: self.head.seq,
            hash: self.head.hash.clone(),
            key_id,
            signature,
            at: chain::now_timestamp(),
        };
        match anchors.append(&anchor).await {
            Ok(()) => self.anchored_seq = anchor.seq,
            Err(e) => {
                tracing::error!(error = %e, "could not write the audit anchor; the log is not anchored off the database until this is fixed")
            }
        }
    }
}

/// The requests one commit answers.
struct Batch {
    requests: Vec<Request>,
    events: usize,
    /// The conflict keys of the batch's transitions (`None`: one that shares with none).
    transitions: Vec<Option<(&'static str, String)>>,
}

impl Batch {
    fn of(first: Request) -> Batch {
        Batch {
            events: first.events(),
            transitions: first.conflict_key().into_iter().collect(),
            requests: vec![first],
        }
    }

    /// Whether a transition with `key` may join the batch's transitions: all of one kind,
    /// every key different.
    fn may_join(&self, key: &Option<(&'static str, String)>) -> bool {
        let Some((kind, key)) = key else {
            return self.transitions.is_empty();
        };
        self.transitions
            .iter()
            .all(|other| matches!(other, Some((k, o)) if k == kind && o != key))
    }

    fn is_full(&self) -> bool {
        self.events >= MAX_BATCH
    }

    /// Whether every request may wait for company (all deferred).
    fn can_wait(&self) -> bool {
        !self.is_full()
            && self
                .requests
                .iter()
                .all(|r| matches!(r.work, Work::Deferred(_)))
    }

    /// Adds `request`, or hands it back when it must wait for the next batch: over the size
    /// limit, a second transition, or an observer to attach.
    fn add(&mut self, request: Request) -> Result<(), Request> {
        let key = request.conflict_key();
        let fits = self.events + request.events() <= MAX_BATCH
            && key.as_ref().is_none_or(|key| self.may_join(key))
            && !matches!(request.work, Work::Attach(..));
        if !fits {
            return Err(request);
        }
        self.events += request.events();
        self.transitions.extend(key);
        self.requests.push(request);
        Ok(())
    }
}

impl Request {
    fn events(&self) -> usize {
        match &self.work {
            Work::Append(events) | Work::Deferred(events) => events.len(),
            // A transition appends a few events; count it as one.
            Work::Transition(_) => 1,
            Work::Attach(..) => 0,
        }
    }

    /// For a transition, its conflict key (`Some(None)`: it shares a batch with none).
    fn conflict_key(&self) -> Option<Option<(&'static str, String)>> {
        match &self.work {
            Work::Transition(t) => Some(t.conflict_key()),
            _ => None,
        }
    }
}

/// Checks a run of stored rows that must follow `from` link by link and end in a head signed
/// by a trusted key (every signature on the way is checked too). Returns the new head.
fn verify_run(keys: &AuditKeys, from: &Head, rows: &[StoredRow]) -> Result<Head, String> {
    let mut prev = from.hash.as_str();
    for (expected, row) in (from.seq + 1..).zip(rows) {
        if row.seq != expected {
            return Err(format!(
                "event {expected} is missing (the next one is {})",
                row.seq
            ));
        }
        if row.prev_hash != prev {
            return Err(format!(
                "event {} does not chain onto event {} (prev_hash {} is not {prev})",
                row.seq,
                row.seq - 1,
                row.prev_hash
            ));
        }
        if row.computed_hash() != row.hash {
            return Err(format!(
                "event {} does not match its hash: it was changed",
                row.seq
            ));
        }
        if let (Some(key_id), Some(signature)) = (&row.key_id, &row.signature) {
            keys.trusted
                .verify_head(key_id, row.seq, &row.hash, signature)
                .map_err(|e| format!("the head at event {}: {e}", row.seq))?;
        }
        prev = &row.hash;
    }
    let last = rows.last().ok_or("no events to verify")?;
    if last.signature.is_none() {
        return Err(format!(
            "events after the last signed head, up to seq {}, are signed by no key: they were \
             inserted by someone who does not hold a signing key",
            last.seq
        ));
    }
    Ok(last.head())
}

/// The head found at start-up must hash correctly and be signed by a trusted key. A log
/// whose events carry no signature at all predates signing: accepted (and signed from now
/// on) only when no anchor says it was ever signed.
async fn check_head_row(
    db: &Db,
    keys: &AuditKeys,
    row: &StoredRow,
    anchored: bool,
) -> Result<(), AuditError> {
    if row.computed_hash() != row.hash {
        return Err(AuditError::Tampered(format!(
            "the newest event (seq {}) does not match its hash",
            row.seq
        )));
    }
    match (&row.key_id, &row.signature) {
        (Some(key_id), Some(signature)) => keys
            .trusted
            .verify_head(key_id, row.seq, &row.hash, signature)
            .map_err(|e| AuditError::Tampered(format!("the newest event (seq {}): {e}", row.seq))),
        _ => {
            let signed: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM audit_events WHERE signature IS NOT NULL ORDER BY seq DESC LIMIT 1",
            )
            .fetch_optional(&db.pool)
            .await?;
            match signed {
                Some(last_signed) => Err(AuditError::Tampered(format!(
                    "events {}..{} come after the last signed head and are signed by no key: \
                     they were inserted by someone who does not hold a signing key",
                    last_signed + 1,
                    row.seq
                ))),
                None if anchored => Err(AuditError::Tampered(
                    "no event carries a signature, but the anchors file holds signed heads: \
                     the signatures were removed or the log was replaced"
                        .into(),
                )),
                None => {
                    tracing::warn!(
                        events = row.seq,
                        "the audit log predates signed heads: its {} events are covered by the next signed head",
                        row.seq
                    );
                    Ok(())
                }
            }
        }
    }
}

/// The log must still hold the last anchored head: same hash at the same seq.
async fn check_against_anchor(
    db: &Db,
    keys: &AuditKeys,
    head: &Head,
    anchor: &Anchor,
) -> Result<(), AuditError> {
    keys.trusted
        .verify_head(&anchor.key_id, anchor.seq, &anchor.hash, &anchor.signature)
        .map_err(|e| AuditError::Tampered(format!("the last anchor (seq {}): {e}", anchor.seq)))?;
    if head.seq < anchor.seq {
        return Err(AuditError::Tampered(format!(
            "the anchors file records seq {} but the log ends at seq {}: events were removed \
             from the tail{}",
            anchor.seq,
            head.seq,
            if head.seq == 0 {
                " (the log is empty)"
            } else {
                ""
            }
        )));
    }
    let stored: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
        .bind(anchor.seq)
        .fetch_optional(&db.pool)
        .await?;
    if stored.as_deref() != Some(anchor.hash.as_str()) {
        return Err(AuditError::Tampered(format!(
            "the anchors file records hash {} at seq {}, the log holds {}: the log was rewritten",
            anchor.hash,
            anchor.seq,
            stored.as_deref().unwrap_or("nothing")
        )));
    }
    Ok(())
}

struct PendingRow<'a> {
    event: &'a Prepared,
    seq: i64,
    id: String,
    prev_hash: String,
    hash: String,
    seal: Option<(String, String)>,
}

async fn insert(
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
