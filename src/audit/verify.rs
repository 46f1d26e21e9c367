//! Verifying the chain: every row, in `seq` order, streamed.
//!
//! The attacker model is a database administrator with full rights: they can drop the
//! append-only triggers and then edit, delete, insert or reorder rows, or cut the tail.
//! `verify` finds the first row where the chain breaks:
//!
//! | tampering | found as |
//! | --- | --- |
//! | a field edited | hash mismatch at that seq |
//! | an indexed column edited (hides a row from filters) | column/payload mismatch at that seq |
//! | a row deleted | seq gap: the missing seq |
//! | a row inserted (tail renumbered) | prev_hash mismatch at the row after it (or at it, if its own hash is off) |
//! | two rows swapped | prev_hash mismatch at the first |
//! | the tail cut, or the whole chain recomputed | only against a [`Checkpoint`] printed earlier |
//!
//! A chain has no secret, so someone who rewrites a row and recomputes every later hash
//! produces a valid chain; the defence is to keep checkpoints (`audit checkpoint`, printed
//! regularly into a place the DBA cannot edit) and to verify against them.

use super::chain::{self, Fields, GENESIS_HASH};
use super::AuditError;
use crate::store::Db;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

/// The head of the chain at some moment: `SEQ:HASH`. Printed by `audit checkpoint`; a later
/// `verify` against it proves that the log still holds that event with that hash (so nothing
/// up to it was rewritten and the tail was not cut below it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for Checkpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a checkpoint; expected SEQ:HASH (64 hex digits)");
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if seq < 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Checkpoint { seq, hash })
    }
}

/// Where and why the chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub seq: i64,
    pub reason: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// True when every row checked out (and the checkpoint, if given, matched).
    pub ok: bool,
    /// Rows read before the verdict.
    pub events: u64,
    /// The last good event: the head of the chain when `ok`.
    pub head: Checkpoint,
    pub first_bad: Option<Breach>,
    pub checkpoint: Option<Checkpoint>,
    pub elapsed_ms: u64,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_bad {
            None => {
                write!(f, "ok: {} events, head {}", self.events, self.head)?;
                if let Some(cp) = &self.checkpoint {
                    write!(f, ", checkpoint {} matches", cp.seq)?;
                }
                Ok(())
            }
            Some(breach) => write!(
                f,
                "BROKEN at seq {}: {} (last good event: {})",
                breach.seq, breach.reason, self.head
            ),
        }
    }
}

/// The current head of the chain (`0:000…0` for an empty log).
pub async fn checkpoint(db: &Db) -> Result<Checkpoint, AuditError> {
    let head = super::read_head(&db.pool).await?;
    Ok(Checkpoint {
        seq: head.seq,
        hash: head.hash,
    })
}

/// Streams every event in `seq` order, recomputes its hash, and reports the first break.
/// With a `checkpoint`, also requires that event `checkpoint.seq` exists with that hash.
pub async fn verify(db: &Db, checkpoint: Option<&Checkpoint>) -> Result<VerifyReport, AuditError> {
    let started = Instant::now();
    let mut state = Chain {
        expected_seq: 1,
        prev_hash: GENESIS_HASH.to_owned(),
        canonical: Vec::with_capacity(1024),
    };
    let mut events = 0u64;
    let mut first_bad = None;
    let mut checkpoint_seen = false;
    {
        let mut rows = sqlx::query(
            "SELECT seq, id, call_id, kind, at, actor, payload, prev_hash, hash, \
             agent, server, tool, approver, outcome FROM audit_events ORDER BY seq",
        )
        .fetch(&db.pool);
        while let Some(row) = rows.try_next().await? {
            events += 1;
            if let Err(breach) = state.check(&row) {
                first_bad = Some(breach);
                break;
            }
            if let Some(cp) = checkpoint
                && state.expected_seq - 1 == cp.seq
            {
                checkpoint_seen = true;
                if state.prev_hash != cp.hash {
                    first_bad = Some(Breach {
                        seq: cp.seq,
                        reason: format!(
                            "hash {} differs from the checkpoint's {}: the log was rewritten \
                             at or before this event",
                            state.prev_hash, cp.hash
                        ),
                    });
                    break;
                }
            }
        }
    }
    if first_bad.is_none()
        && let Some(cp) = checkpoint
        && !checkpoint_seen
        && cp.seq > 0
    {
        first_bad = Some(Breach {
            seq: state.expected_seq,
            reason: format!(
                "the log ends at seq {} but the checkpoint names seq {}: events were removed \
                 from the tail",
                state.expected_seq - 1,
                cp.seq
            ),
        });
    }
    if first_bad.is_none()
        && let Some(cp) = checkpoint
        && cp.seq == 0
        && cp.hash != GENESIS_HASH
    {
        first_bad = Some(Breach {
            seq: 0,
            reason: "a checkpoint at seq 0 must carry the genesis hash".into(),
        });
    }
    Ok(VerifyReport {
        ok: first_bad.is_none(),
        events,
        head: Checkpoint {
            seq: state.expected_seq - 1,
            hash: state.prev_hash,
        },
        first_bad,
        checkpoint: checkpoint.cloned(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

struct Chain {
    expected_seq: i64,
    prev_hash: String,
    canonical: Vec<u8>,
}

impl Chain {
    /// Checks one row against the chain so far; on success it becomes the new head.
    fn check(&mut self, row: &AnyRow) -> Result<(), Breach> {
        let seq: i64 = row.try_get(0).map_err(|e| Breach {
            seq: self.expected_seq,
            reason: format!("seq cannot be read: {e}"),
        })?;
        let breach = |reason: String| Breach { seq, reason };
        let text = |i: usize| -> Result<&str, Breach> {
            row.try_get::<&str, _>(i)
                .map_err(|e| breach(format!("column {i} cannot be read: {e}")))
        };
        let opt_text = |i: usize| -> Result<Option<&str>, Breach> {
            row.try_get::<Option<&str>, _>(i)
                .map_err(|e| breach(format!("column {i} cannot be read: {e}")))
        };
        if seq != self.expected_seq {
            return Err(if seq > self.expected_seq {
                Breach {
                    seq: self.expected_seq,
                    reason: format!(
                        "event {} is missing: the next event is {seq} (rows were deleted)",
                        self.expected_seq
                    ),
                }
            } else {
                breach(format!("seq {seq} is out of order (expected {})", self.expected_seq))
            });
        }
        let prev_hash = text(7)?;
        if prev_hash != self.prev_hash {
            return Err(breach(format!(
                "prev_hash {prev_hash} does not match the hash of event {} ({}): rows were \
                 inserted, removed or reordered",
                seq - 1,
                self.prev_hash
            )));
        }
        let fields = Fields {
            seq,
            id: text(1)?,
            call_id: opt_text(2)?,
            kind: text(3)?,
            at: text(4)?,
            actor: text(5)?,
            payload: text(6)?,
        };
        self.canonical.clear();
        chain::write_canonical(&mut self.canonical, &fields);
        let computed = chain::chain_hash(prev_hash, &self.canonical);
        let stored = text(8)?;
        if computed[..] != *stored.as_bytes() {
            return Err(breach(format!(
                "hash mismatch (stored {stored}, computed {}): the event was changed",
                String::from_utf8_lossy(&computed)
            )));
        }
        check_indexed(fields.payload, [opt_text(9)?, opt_text(10)?, opt_text(11)?, opt_text(12)?, opt_text(13)?])
            .map_err(breach)?;
        self.expected_seq = seq + 1;
        self.prev_hash.clear();
        self.prev_hash.push_str(stored);
        Ok(())
    }
}

/// The indexed columns must be what the (hashed) payload says, or a filter could hide rows.
fn check_indexed(payload: &str, columns: [Option<&str>; 5]) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(borrow, default)]
        agent: Option<&'a RawValue>,
        #[serde(borrow, default)]
        server: Option<&'a RawValue>,
        #[serde(borrow, default)]
        tool: Option<&'a RawValue>,
        #[serde(borrow, default)]
        approver: Option<&'a RawValue>,
        #[serde(borrow, default)]
        outcome: Option<&'a RawValue>,
    }
    if !payload.starts_with('{') {
        return Err("payload is not a JSON object".into());
    }
    let fields: Fields<'_> =
        serde_json::from_str(payload).map_err(|e| format!("payload is not a JSON object: {e}"))?;
    let names = ["agent", "server", "tool", "approver", "outcome"];
    let raws = [fields.agent, fields.server, fields.tool, fields.approver, fields.outcome];
    for ((name, raw), column) in names.iter().zip(raws).zip(columns) {
        let expected = match raw {
            Some(raw) if raw.get().starts_with('"') => Some(
                serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get())
                    .map_err(|e| format!("payload field {name}: {e}"))?,
            ),
            _ => None,
        };
        if expected.as_deref() != column {
            return Err(format!(
                "column {name} is {column:?} but the payload says {:?}: the indexed column \
                 was changed",
                expected.as_deref()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_print_and_parse() {
        let cp = Checkpoint {
            seq: 12,
            hash: "ab".repeat(32),
        };
        assert_eq!(cp.to_string().parse::<Checkpoint>().unwrap(), cp);
        assert!("12".parse::<Checkpoint>().is_err());
        assert!("x:ab".parse::<Checkpoint>().is_err());
        assert!(format!("12:{}", "g".repeat(64)).parse::<Checkpoint>().is_err());
    }

    #[test]
    fn indexed_columns_must_match_the_payload() {
        let payload = r#"{"agent":"ci","outcome":"den\u0069ed","tool":7}"#;
        assert!(check_indexed(payload, [Some("ci"), None, None, None, Some("denied")]).is_ok());
        assert!(check_indexed(payload, [Some("cd"), None, None, None, Some("denied")]).is_err());
        assert!(check_indexed(payload, [Some("ci"), None, Some("7"), None, Some("denied")]).is_err());
        assert!(check_indexed("[1]", [None; 5]).is_err());
    }
}
