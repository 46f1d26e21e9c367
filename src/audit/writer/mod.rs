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
//!
//! The parts: this file holds the task and its loop (and the anchors it writes between
//! batches); `batch.rs` gathers the requests that share a commit, `commit.rs` runs the steps
//! above and answers, `head.rs` checks the head (at start-up and before every batch),
//! `transition.rs` runs the transitions, `insert.rs` chains, signs and inserts the rows, and
//! `observe.rs` feeds the observers.

mod batch;
mod commit;
mod head;
mod insert;
mod observe;
mod transition;

pub use observe::{Observer, Recorded};
pub use transition::Transition;

use super::anchor::{Anchor, Anchors};
use super::{Appended, chain};
use super::{AuditError, AuditKeys, Prepared};
use crate::store::Db;
use batch::Batch;
use head::{Head, READ_COLUMNS, StoredRow};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

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
                head::check_head_row(&db, &keys, &row, last_anchor.is_some()).await?;
                row.head()
            }
        };
        if let Some(anchor) = &last_anchor {
            head::check_against_anchor(&db, &keys, &head, anchor).await?;
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

    /// Commits batches until the last handle is dropped, anchoring the head every so often,
    /// and once more at the end.
    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let every = self
            .anchors
            .as_ref()
            .map_or(std::time::Duration::from_secs(3600), Anchors::every);
        let mut next_anchor = Instant::now() + every;
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(request) => request,
                None => match self
                    .next_request(&mut requests, &mut next_anchor, every)
                    .await
                {
                    Some(request) => request,
                    None => break,
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
            let batch;
            (batch, carry) = Batch::gather(first, &mut requests).await;
            self.commit(batch.requests).await;
            // Under a steady load the queue is never empty: anchor between batches too.
            if Instant::now() >= next_anchor {
                self.anchor().await;
                next_anchor = Instant::now() + every;
            }
        }
        self.anchor().await;
    }

    /// Waits for the next request, anchoring the head whenever `next_anchor` comes first;
    /// `None` once every handle is dropped.
    async fn next_request(
        &mut self,
        requests: &mut mpsc::Receiver<Request>,
        next_anchor: &mut Instant,
        every: std::time::Duration,
    ) -> Option<Request> {
        loop {
            tokio::select! {
                request = requests.recv() => return request,
                _ = tokio::time::sleep_until(*next_anchor) => {
                    self.anchor().await;
                    *next_anchor = Instant::now() + every;
                }
            }
        }
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
