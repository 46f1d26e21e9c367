//! What `verify` reports: where the chain first breaks ([`Breach`]), the violations of the
//! story, and the head reached ([`Checkpoint`]), printed for a person.

use crate::audit::story::{Unreviewed, Violation};
use crate::audit::{AuditError, GENESIS_HASH};
use crate::store::Db;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

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

/// A text that is not a [`Checkpoint`].
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a checkpoint; expected SEQ:HASH (64 hex digits)")]
pub struct BadCheckpoint(String);

impl FromStr for Checkpoint {
    type Err = BadCheckpoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCheckpoint(s.to_owned());
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

/// The outcome of [`verify`](super::verify).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// True when every row checked out, every decision is backed by the story, and the
    /// checkpoint and anchors, if given, matched.
    pub ok: bool,
    /// Whether head signatures were checked (public keys were given).
    pub signatures_checked: bool,
    /// Signed heads seen.
    pub signed_heads: u64,
    /// Anchors the log was checked against.
    pub anchors_checked: usize,
    /// Decisions the story does not back, in chain order.
    pub violations: Vec<Violation>,
    /// Break-glass approvals no second approver has reviewed yet.
    pub unreviewed_break_glass: Vec<Unreviewed>,
    /// Forwarded calls whose end is not recorded yet and may still be running.
    pub in_flight: usize,
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
            None if self.violations.is_empty() => {
                write!(f, "ok: {} events, head {}", self.events, self.head)?;
                if self.signatures_checked {
                    write!(f, ", {} signed heads verified", self.signed_heads)?;
                } else {
                    write!(f, " (signatures NOT checked: no public key given)")?;
                }
                if self.anchors_checked > 0 {
                    write!(f, ", {} anchors match", self.anchors_checked)?;
                }
                if let Some(cp) = &self.checkpoint {
                    write!(f, ", checkpoint {} matches", cp.seq)?;
                }
            }
            None => write!(
                f,
                "BROKEN: the chain holds ({} events, head {}) but {} decisions are not backed by the log",
                self.events,
                self.head,
                self.violations.len()
            )?,
            Some(breach) => write!(
                f,
                "BROKEN at seq {}: {} (last good event: {})",
                breach.seq, breach.reason, self.head
            )?,
        }
        for v in &self.violations {
            write!(f, "\n  violation at seq {}", v.seq)?;
            if let Some(call) = &v.call_id {
                write!(f, " (call {call})")?;
            }
            write!(f, ": {}", v.what)?;
        }
        if self.in_flight > 0 {
            write!(
                f,
                "\n  {} forwarded calls have no recorded end yet (may still be running)",
                self.in_flight
            )?;
        }
        for u in &self.unreviewed_break_glass {
            write!(
                f,
                "\n  unreviewed break-glass approval {} (seq {}, by {}): `countersign approvals review {}`",
                u.approval_id, u.seq, u.decided_by, u.approval_id
            )?;
        }
        Ok(())
    }
}

/// The current head of the chain (`0:000…0` for an empty log).
pub async fn checkpoint(db: &Db) -> Result<Checkpoint, AuditError> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&db.pool)
            .await?;
    Ok(match row {
        Some((seq, hash)) => Checkpoint { seq, hash },
        None => Checkpoint {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        },
    })
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
        assert!(
            format!("12:{}", "g".repeat(64))
                .parse::<Checkpoint>()
                .is_err()
        );
    }
}
