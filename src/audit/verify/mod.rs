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
//! | the whole chain re-hashed | a head signature that no longer verifies |
//! | rows appended without the key | events after the last signed head |
//! | the tail cut inside a batch | events after the last signed head |
//! | the log emptied | no events, where keys were given |
//! | the tail cut at a signed head | against the anchors file (or a checkpoint) |
//! | a decision the story does not back (a forward without quorum, a grant used twice, a forward before its decision, a forward with no end) | a [`Violation`] with its seq and call |
//!
//! Signatures need the public keys ([`VerifyOptions::trusted`]); a key that a trusted key
//! introduced in the chain (`audit.key` with `introduced_by`, a rotation) is trusted from the
//! first head signed by the introducer that covers it.
//!
//! The parts: this file runs the check and holds its state ([`Chain`]); `read.rs` reads the
//! rows in framed pages, `rows.rs` checks them one by one, `signatures.rs` the signed heads,
//! `anchors.rs` the checkpoint and the anchors, and `report.rs` is what comes out.

mod anchors;
mod read;
mod report;
mod rows;
mod signatures;

pub use report::{BadCheckpoint, Breach, Checkpoint, VerifyReport, checkpoint};

use super::AuditError;
use super::anchor::Anchor;
use super::chain::GENESIS_HASH;
use super::keys::TrustedKeys;
use super::story::Story;
use crate::store::Db;
use read::Page;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// What [`verify`] checks the log against.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// A head printed earlier that the log must still hold.
    pub checkpoint: Option<Checkpoint>,
    /// The public keys whose head signatures are accepted; none: signatures are not checked
    /// (and the report says so).
    pub trusted: TrustedKeys,
    /// Anchored heads (from the anchors file) the log must still hold.
    pub anchors: Vec<Anchor>,
    /// A forward whose end is missing counts as a violation only when it is older than this
    /// (before the log's last event), since the call may still be running.
    pub in_flight: std::time::Duration,
}

/// Reads every event in `seq` order (in pages, the next page read while this one is
/// checked), recomputes its hash, checks every head signature with the trusted keys, follows
/// the story of every decision, and reports the first break and every violation. Then checks
/// the checkpoint and the anchors, if given.
pub async fn verify(db: &Db, options: &VerifyOptions) -> Result<VerifyReport, AuditError> {
    verify_counting(db, options, &AtomicU64::new(0)).await
}

/// [`verify`], storing in `checked` how many events it has checked so far (for a progress
/// report while a large log is read).
pub async fn verify_counting(
    db: &Db,
    options: &VerifyOptions,
    checked: &AtomicU64,
) -> Result<VerifyReport, AuditError> {
    let started = Instant::now();
    let (pages, received) = mpsc::channel::<Result<Page, sqlx::Error>>(2);
    // Stop reading ahead once we return, whichever way.
    let _stop = AbortOnDrop(read::spawn_reader(db, pages));
    let (chain, first_bad) = check_pages(Chain::new(options), received, checked).await?;
    let first_bad = first_bad.or_else(|| chain.check_end(options));
    Ok(chain.report(options, first_bad, started))
}

/// Checks the pages as they come, until the first break.
async fn check_pages(
    mut chain: Chain,
    mut received: mpsc::Receiver<Result<Page, sqlx::Error>>,
    checked: &AtomicU64,
) -> Result<(Chain, Option<Breach>), AuditError> {
    while let Some(page) = received.recv().await {
        let page = page?;
        // Hashing is CPU work: keep it off the async workers.
        let (back, result) = tokio::task::spawn_blocking(move || {
            let result = chain.check_page(&page);
            (chain, result)
        })
        .await
        .map_err(AuditError::VerifyFailed)?;
        chain = back;
        checked.store(chain.events, Ordering::Relaxed);
        if let Err(breach) = result {
            return Ok((chain, Some(breach)));
        }
    }
    Ok((chain, None))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The state of the check: the head so far, what the signatures and anchors have shown, and
/// the story.
struct Chain {
    expected_seq: i64,
    prev_hash: String,
    canonical: Vec<u8>,
    checkpoint: Option<Checkpoint>,
    checkpoint_seen: bool,
    /// Rows read so far.
    events: u64,
    trusted: TrustedKeys,
    /// Keys introduced by a trusted key, trusted once a signed head covers the introduction.
    introduced: Vec<String>,
    /// The last event covered by a verified signature (0: none yet).
    last_signed: i64,
    signed_heads: u64,
    /// The hashes at the anchored seqs, as found.
    anchored: HashMap<i64, String>,
    story: Story,
}

impl Chain {
    fn new(options: &VerifyOptions) -> Chain {
        Chain {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            canonical: Vec::with_capacity(1024),
            checkpoint: options.checkpoint.clone(),
            checkpoint_seen: false,
            events: 0,
            trusted: options.trusted.clone(),
            introduced: Vec::new(),
            last_signed: 0,
            signed_heads: 0,
            anchored: options
                .anchors
                .iter()
                .map(|a| (a.seq, String::new()))
                .collect(),
            story: Story::default(),
        }
    }

    /// The checks once every row is read, in this order; the first that fails is the break.
    fn check_end(&self, options: &VerifyOptions) -> Option<Breach> {
        let head_seq = self.expected_seq - 1;
        self.emptied(head_seq)
            .or_else(|| self.unsigned_tail())
            .or_else(|| self.check_checkpoint(options.checkpoint.as_ref()))
            .or_else(|| self.check_anchors(&options.anchors, head_seq))
    }

    /// An empty log, where keys were given: events signed by them were expected.
    fn emptied(&self, head_seq: i64) -> Option<Breach> {
        (head_seq == 0 && !self.trusted.is_empty()).then(|| Breach {
            seq: 1,
            reason: "the log is empty, but events signed by the given keys are expected: it \
                     was emptied, or this is not the gateway's database"
                .into(),
        })
    }

    /// The report: `first_bad`, the story's ending, and the head reached.
    fn report(
        self,
        options: &VerifyOptions,
        first_bad: Option<Breach>,
        started: Instant,
    ) -> VerifyReport {
        let head_seq = self.expected_seq - 1;
        let story = self.story.finish(options.in_flight);
        VerifyReport {
            ok: first_bad.is_none() && story.violations.is_empty(),
            signatures_checked: !self.trusted.is_empty(),
            signed_heads: self.signed_heads,
            anchors_checked: if first_bad.is_none() {
                options.anchors.len()
            } else {
                0
            },
            violations: story.violations,
            unreviewed_break_glass: story.unreviewed,
            in_flight: story.in_flight,
            events: self.events,
            head: Checkpoint {
                seq: head_seq,
                hash: self.prev_hash,
            },
            first_bad,
            checkpoint: options.checkpoint.clone(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }
}
