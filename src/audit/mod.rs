//! The audit log: one append-only, hash-chained, signed table of events in a total order.
//!
//! * [`AuditLog::append`] resolves only once the event is durably committed. One writer task
//!   per process does group commit (`writer/`): every queued append (up to [`MAX_BATCH`]
//!   events) goes into one transaction, chained, and the batch's last event carries an Ed25519
//!   signature over the new head by a key that is not in the database (`keys.rs`).
//! * [`AuditLog::transact`] runs a [`Transition`] inside the writer's transaction: the state
//!   change (a vote, a decision, a grant used) and the events that record it commit together,
//!   and the transition decides on the state as of the chain's verified head. At most one
//!   transition rides in a batch, so each sees every event before it.
//! * An [`Observer`] sees every event that is committed or verified, in order: the approval
//!   ledger is built from the chain this way, never from a status column.
//! * A writer never continues from events it cannot verify. Before each batch it reads the
//!   head; events another writer appended must chain onto what it knew and end in a head
//!   signed by a trusted key, or the batch is refused and the tampering logged.
//! * Signed heads are also exported to an anchors file off the database (`anchor.rs`), so a
//!   truncated or emptied log is caught even by someone who holds the signing key.
//! * The hash chain (`chain.rs`): `hash = SHA-256(prev_hash || canonical(event))`, where
//!   canonical is JCS with exact 64-bit integers (see [`crate::canonical`]).
//! * The database refuses UPDATE, DELETE (and on PostgreSQL TRUNCATE) of events; what a
//!   database administrator with full rights can still do is what [`verify()`] detects.
//!
//! The parts: this file holds the events' shapes and the [`AuditLog`] handle;
//! `kind.rs` names what happened ([`EventKind`]), `events/` types every payload, `prepare.rs`
//! makes an event canonical on the caller's task, `writer/` commits it, `chain.rs`, `keys.rs`
//! and `anchor.rs` are what the log is kept with, `verify/` and `story.rs` check it all,
//! `query.rs`, `http.rs` and `cli.rs` read it, `setup.rs` opens it as configured,
//! `unfinished.rs` records calls whose end never was, and `error.rs` says what went wrong.

mod anchor;
mod chain;
pub mod cli;
mod error;
pub mod events;
mod http;
pub mod keys;
mod kind;
mod prepare;
mod query;
pub mod setup;
mod story;
mod unfinished;
mod verify;
mod writer;

pub use anchor::{Anchor, Anchors};
pub use chain::GENESIS_HASH;
pub(crate) use chain::timestamp_micros;
pub use error::{AnchorsFileError, AuditError, WriteFailure};
pub use http::auditor_router;
pub(crate) use http::filter_of;
pub use keys::{KeyError, RedactionKey, SigningKey, TrustedKeys};
pub use kind::EventKind;
pub(crate) use prepare::Indexed;
use prepare::{Prepared, prepare};
pub use query::{Filter, Format, MAX_LIMIT, render};
pub use story::{Unreviewed, Violation};
pub use verify::{
    BadCheckpoint, Breach, Checkpoint, VerifyOptions, VerifyReport, checkpoint, verify,
    verify_counting,
};
pub use writer::{Observer, Recorded, Transition};

use crate::store::Db;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most events the writer commits in one transaction.
pub const MAX_BATCH: usize = 1024;
/// The longest a deferred append waits for another append to share its commit.
pub const DEFER_AT_MOST: std::time::Duration = std::time::Duration::from_millis(2);
/// Appends that may wait for the writer before `append` itself waits for room.
const QUEUE: usize = 8192;

/// An event to append, built from a typed [`events::AuditEvent`] by [`NewEvent::new`]. The
/// writer assigns `seq`, `id`, `at` and the hashes.
///
/// The payload's top-level string fields `agent`, `server`, `tool`, `approver` and `outcome`
/// are also stored as indexed columns, which is what makes [`Filter`] fast: emitters put
/// `agent`, `server` and `tool` on every event of a call, so that filtering by them finds the
/// call's whole story.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    call_id: Option<Uuid>,
    kind: EventKind,
    actor: String,
    payload: serde_json::Value,
}

impl NewEvent {
    /// An event of any kind with any payload, as someone holding the database and the signing
    /// key could write one: for tests that forge history or fill the log, never for the
    /// gateway's own events.
    #[doc(hidden)]
    pub fn untyped(
        call_id: Option<Uuid>,
        kind: EventKind,
        actor: impl Into<String>,
        payload: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            call_id,
            kind,
            actor: actor.into(),
            payload,
        }
    }

    pub fn call_id(&self) -> Option<Uuid> {
        self.call_id
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }
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

/// The handle to the audit log; cheap to clone. The writer task stops when the last handle
/// is dropped, after committing what was queued.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    queue: mpsc::Sender<writer::Request>,
    keys: Arc<AuditKeys>,
    anchors: Option<Anchors>,
}

/// The keys the log is kept with (none of them is in the database).
#[derive(Debug)]
pub struct AuditKeys {
    /// Signs the head at every commit.
    pub signing: SigningKey,
    /// Whose heads are accepted: the signing key's own, and those configured (replicas, the
    /// key before a rotation).
    pub trusted: TrustedKeys,
    /// Keys redacted argument values.
    pub redaction: RedactionKey,
}

impl AuditKeys {
    /// A redacted value as the log and the cards record it: the keyed digest of its
    /// canonical JSON (`hmac-sha256:HEX`).
    pub fn seal(&self, value: &serde_json::Value) -> String {
        self.redaction.digest(&crate::canonical::to_vec(value))
    }

    /// Keys that live as long as this process (one set per process, so every log opened in it
    /// trusts the others): for tests and benchmarks. A verifier elsewhere cannot check them.
    pub fn ephemeral() -> Arc<AuditKeys> {
        static KEYS: std::sync::OnceLock<Arc<AuditKeys>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let signing = SigningKey::generate().expect("randomness for a key");
            let mut trusted = TrustedKeys::new();
            trusted.add(signing.public());
            Arc::new(AuditKeys {
                signing,
                trusted,
                redaction: RedactionKey::from_bytes([0x5a; 32]),
            })
        })
        .clone()
    }
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("backend", &self.inner.db.backend)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log with ephemeral keys and no anchors (see [`AuditKeys::ephemeral`]).
    pub async fn open(db: Db) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(db, AuditKeys::ephemeral(), None).await
    }

    /// Checks the head of the chain (signed by a trusted key, and not behind the anchors) and
    /// starts the writer task.
    pub async fn open_with(
        db: Db,
        keys: Arc<AuditKeys>,
        anchors: Option<Anchors>,
    ) -> Result<AuditLog, AuditError> {
        let (queue, requests) = mpsc::channel(QUEUE);
        let writer = writer::Writer::open(db.clone(), keys.clone(), anchors.clone()).await?;
        tokio::spawn(writer.run(requests));
        let log = AuditLog {
            inner: Arc::new(Inner {
                db,
                queue,
                keys,
                anchors,
            }),
        };
        Ok(log)
    }

    /// Records this writer's public key in the chain (`audit.key`) unless it is there already,
    /// so an auditor can see which keys signed.
    pub async fn introduce_key(&self) -> Result<(), AuditError> {
        let id = self.inner.keys.signing.id().to_owned();
        let known: Option<i64> = sqlx::query_scalar(
            "select seq from audit_events where kind = 'audit.key' and actor = $1 limit 1",
        )
        .bind(&id)
        .fetch_optional(&self.inner.db.pool)
        .await?;
        if known.is_none() {
            let key = events::AuditKeyEvent {
                key_id: id.clone(),
                public_key: self.inner.keys.signing.public_hex(),
                introduced_by: None,
            };
            let event = events::AuditEvent::AuditKey(key);
            self.append(NewEvent::new(None, id, event)).await?;
        }
        Ok(())
    }

    /// What this log is verified against: its trusted keys and its anchors so far.
    pub fn verify_options(&self) -> Result<VerifyOptions, AuditError> {
        Ok(VerifyOptions {
            trusted: self.inner.keys.trusted.clone(),
            anchors: match &self.inner.anchors {
                Some(anchors) => anchor::read(anchors.path())?,
                None => Vec::new(),
            },
            in_flight: std::time::Duration::from_secs(3600),
            ..VerifyOptions::default()
        })
    }

    /// The database behind the log.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The keys the log is kept with.
    pub fn keys(&self) -> &AuditKeys {
        &self.inner.keys
    }

    /// Appends one event; resolves once it is durably committed.
    pub async fn append(&self, event: NewEvent) -> Result<Appended, AuditError> {
        let mut appended = self.append_all(vec![event]).await?;
        appended
            .pop()
            .ok_or_else(|| AuditError::WriteFailed(WriteFailure::NoEvent))
    }

    /// Appends one event nothing is waiting on (how a call ended, once its answer left): it
    /// asks for no commit of its own, but joins the next one, or commits after
    /// [`DEFER_AT_MOST`] if no other append comes. Resolves once it is durably committed.
    ///
    /// On a steady stream of calls this halves the commits (and fsyncs) per call: the end of
    /// one call commits with the decision on the next.
    pub async fn append_deferred(&self, event: NewEvent) -> Result<Appended, AuditError> {
        let done = self
            .send(writer::Work::Deferred(vec![prepare(event)?]))
            .await?;
        done.appended
            .into_iter()
            .next()
            .ok_or_else(|| AuditError::WriteFailed(WriteFailure::NoEvent))
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
        let done = self.send(writer::Work::Append(events)).await?;
        Ok(done.appended)
    }

    /// Runs `transition` in the writer's next transaction: its state change and the events it
    /// decides on commit together (or not at all). Returns it (with what it decided) and where
    /// its events landed.
    pub async fn transact<T: Transition>(
        &self,
        transition: T,
    ) -> Result<(T, Vec<Appended>), AuditError> {
        let done = self
            .send(writer::Work::Transition(Box::new(transition)))
            .await?;
        let any: Box<dyn std::any::Any> = done
            .transition
            .ok_or_else(|| AuditError::WriteFailed(WriteFailure::LostTransition))?;
        let transition = any
            .downcast::<T>()
            .map_err(|_| AuditError::WriteFailed(WriteFailure::OtherTransition))?;
        Ok((*transition, done.appended))
    }

    /// Feeds `observer` the verified events from `from_seq` on (each link re-checked up to the
    /// signed head), then every event committed or verified from now on.
    pub async fn attach(
        &self,
        observer: Arc<dyn Observer>,
        from_seq: Option<i64>,
    ) -> Result<(), AuditError> {
        self.send(writer::Work::Attach(observer, from_seq))
            .await
            .map(drop)
    }

    /// Makes the writer look at the head now (and feed observers what others appended).
    pub async fn sync(&self) -> Result<(), AuditError> {
        self.send(writer::Work::Append(Vec::new())).await.map(drop)
    }

    async fn send(&self, work: writer::Work) -> Result<writer::Done, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .send(writer::Request { work, reply })
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

/// Unix milliseconds as RFC 3339 UTC (`2026-01-02T03:04:05.123000Z`).
pub fn rfc3339_of_ms(ms: i64) -> String {
    crate::timestamp::rfc3339_ms(ms)
}
