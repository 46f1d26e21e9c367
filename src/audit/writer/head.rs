//! The head check: a writer continues only from a head it can verify. At start-up the
//! newest event must hash correctly, be signed by a trusted key and not be behind the last
//! anchor; before every batch, whatever other writers appended must chain onto the head this
//! writer knew and end in a head signed by a trusted key.

use super::Writer;
use super::commit::BatchError;
use crate::audit::anchor::Anchor;
use crate::audit::chain::{self, Fields, GENESIS_HASH};
use crate::audit::keys::HeadError;
use crate::audit::{AuditError, AuditKeys, Recorded};
use crate::store::Db;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

/// The stored fields a verifier reads, in this order.
pub(super) const READ_COLUMNS: &str =
    "seq, id, call_id, kind, at, actor, payload, prev_hash, hash, key_id, signature";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) seq: i64,
    pub(super) hash: String,
    pub(super) at: String,
    /// The key and signature on the head event (absent only on a log from before signing).
    pub(super) seal: Option<(String, String)>,
}

impl Head {
    pub(super) fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            at: String::new(),
            seal: None,
        }
    }
}

/// A stored row, as a verifier reads it.
pub(super) struct StoredRow {
    pub(super) seq: i64,
    id: String,
    call_id: Option<String>,
    kind: String,
    at: String,
    actor: String,
    payload: String,
    pub(super) prev_hash: String,
    hash: String,
    key_id: Option<String>,
    signature: Option<String>,
}

impl StoredRow {
    pub(super) fn of(row: &AnyRow) -> Result<StoredRow, sqlx::Error> {
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

    pub(super) fn recorded(&self) -> Option<Recorded<'_>> {
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

    pub(super) fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
            at: self.at.clone(),
            seal: self.key_id.clone().zip(self.signature.clone()),
        }
    }
}

/// Why a run of stored rows does not continue a verified head.
#[derive(Debug, thiserror::Error)]
pub(super) enum BrokenRun {
    #[error("event {expected} is missing (the next one is {found})")]
    Missing { expected: i64, found: i64 },
    #[error(
        "event {seq} does not chain onto event {previous} (prev_hash {prev_hash} is not \
         {expected})",
        previous = .seq - 1
    )]
    Unchained {
        seq: i64,
        prev_hash: String,
        expected: String,
    },
    #[error("event {seq} does not match its hash: it was changed")]
    Changed { seq: i64 },
    #[error("the head at event {seq}: {source}")]
    Signature { seq: i64, source: HeadError },
    #[error("no events to verify")]
    Empty,
    #[error(
        "events after the last signed head, up to seq {last}, are signed by no key: they were \
         inserted by someone who does not hold a signing key"
    )]
    Unsigned { last: i64 },
}

/// Checks a run of stored rows that must follow `from` link by link and end in a head signed
/// by a trusted key (every signature on the way is checked too). Returns the new head.
pub(super) fn verify_run(
    keys: &AuditKeys,
    from: &Head,
    rows: &[StoredRow],
) -> Result<Head, BrokenRun> {
    let mut prev = from.hash.as_str();
    for (expected, row) in (from.seq + 1..).zip(rows) {
        if row.seq != expected {
            return Err(BrokenRun::Missing {
                expected,
                found: row.seq,
            });
        }
        if row.prev_hash != prev {
            return Err(BrokenRun::Unchained {
                seq: row.seq,
                prev_hash: row.prev_hash.clone(),
                expected: prev.to_owned(),
            });
        }
        if row.computed_hash() != row.hash {
            return Err(BrokenRun::Changed { seq: row.seq });
        }
        if let (Some(key_id), Some(signature)) = (&row.key_id, &row.signature) {
            keys.trusted
                .verify_head(key_id, row.seq, &row.hash, signature)
                .map_err(|source| BrokenRun::Signature {
                    seq: row.seq,
                    source,
                })?;
        }
        prev = &row.hash;
    }
    let last = rows.last().ok_or(BrokenRun::Empty)?;
    if last.signature.is_none() {
        return Err(BrokenRun::Unsigned { last: last.seq });
    }
    Ok(last.head())
}

/// The head found at start-up must hash correctly and be signed by a trusted key. A log
/// whose events carry no signature at all predates signing: accepted (and signed from now
/// on) only when no anchor says it was ever signed.
pub(super) async fn check_head_row(
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
        _ => check_unsigned_head(db, row, anchored).await,
    }
}

/// The newest event carries no signature: that is a log from before signing, or events
/// inserted without the key.
async fn check_unsigned_head(db: &Db, row: &StoredRow, anchored: bool) -> Result<(), AuditError> {
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

/// The log must still hold the last anchored head: same hash at the same seq.
pub(super) async fn check_against_anchor(
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

impl Writer {
    /// Verifies what other writers appended since this writer's head, feeds it to the
    /// observers, and moves the head; refuses a head that went back, was rewritten, or ends
    /// in events no trusted key signed.
    pub(super) async fn catch_up(
        &mut self,
        tx: &mut sqlx::AnyConnection,
    ) -> Result<(), BatchError> {
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
        let head = verify_run(&self.keys, &self.head, &rows)
            .map_err(|e| BatchError::Tampered(e.to_string()))?;
        for row in &rows {
            if let Some(recorded) = row.recorded() {
                self.feed(&recorded);
            }
        }
        self.head = head;
        Ok(())
    }
}
