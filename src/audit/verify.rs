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

use super::AuditError;
use super::anchor::Anchor;
use super::chain::{self, Fields, GENESIS_HASH};
use super::events::AuditKeyEvent;
use super::keys::{TrustedKeys, parse_public};
use super::story::{Story, Unreviewed, Violation};
use crate::store::{Backend, Db};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::Instant;
use tokio::sync::mpsc;

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

/// The outcome of [`verify`].
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

/// Events per page read by [`verify`].
const PAGE: i64 = 4096;

/// SQLite: one page of the log as a single framed text: per event `SEQ:` then 15 fields,
/// each `-` (NULL) or `LEN:TEXT` with LEN in bytes. Reading rows one by one through sqlx costs a
/// thread hop and 14 allocations per row, which held verify near 100k events/s; one value
/// per page of 4096 events lets it run at the speed of hashing. The fields are the stored
/// text exactly, so the framing changes nothing that is checked.
const PAGE_SQLITE: &str = "SELECT count(*), max(seq), group_concat(rec, '') FROM (\
    SELECT seq, concat(seq, ':', \
    coalesce(octet_length(id) || ':', '-'), id, \
    coalesce(octet_length(call_id) || ':', '-'), call_id, \
    coalesce(octet_length(kind) || ':', '-'), kind, \
    coalesce(octet_length(at) || ':', '-'), at, \
    coalesce(octet_length(actor) || ':', '-'), actor, \
    coalesce(octet_length(payload) || ':', '-'), payload, \
    coalesce(octet_length(prev_hash) || ':', '-'), prev_hash, \
    coalesce(octet_length(hash) || ':', '-'), hash, \
    coalesce(octet_length(agent) || ':', '-'), agent, \
    coalesce(octet_length(server) || ':', '-'), server, \
    coalesce(octet_length(tool) || ':', '-'), tool, \
    coalesce(octet_length(approver) || ':', '-'), approver, \
    coalesce(octet_length(outcome) || ':', '-'), outcome, \
    coalesce(octet_length(key_id) || ':', '-'), key_id, \
    coalesce(octet_length(signature) || ':', '-'), signature) AS rec \
    FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2)";

/// PostgreSQL streams rows cheaply (one socket, no thread hop), but its string functions
/// are slow; so there the rows are streamed with `fetch` and framed here instead.
const STREAM_POSTGRES: &str = "SELECT seq, id, call_id, kind, at, actor, payload, prev_hash, \
    hash, agent, server, tool, approver, outcome, key_id, signature FROM audit_events ORDER BY seq";

#[derive(Default)]
struct Page {
    rows: i64,
    last_seq: Option<i64>,
    text: String,
}

/// SQLite: the pages after `after`, each read as one framed value, until a short page.
async fn read_sqlite(db: Db, pages: mpsc::Sender<Result<Page, sqlx::Error>>) {
    let mut after = i64::MIN;
    loop {
        let page = async {
            let row = sqlx::query(PAGE_SQLITE)
                .bind(after)
                .bind(PAGE)
                .fetch_one(&db.pool)
                .await?;
            Ok(Page {
                rows: row.try_get(0)?,
                last_seq: row.try_get(1)?,
                text: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
            })
        }
        .await;
        let next = match &page {
            Ok(page) if page.rows == PAGE => page.last_seq,
            _ => None,
        };
        if pages.send(page).await.is_err() {
            return;
        }
        match next {
            Some(last) => after = last,
            None => return,
        }
    }
}

/// PostgreSQL: one streamed query, framed into pages here.
async fn read_postgres(db: Db, pages: mpsc::Sender<Result<Page, sqlx::Error>>) {
    let mut page = Page::default();
    let mut rows = sqlx::query(STREAM_POSTGRES).fetch(&db.pool);
    loop {
        let framed = match rows.try_next().await {
            Ok(Some(row)) => frame_row(&mut page, &row),
            Ok(None) => {
                let _ = pages.send(Ok(page)).await;
                return;
            }
            Err(e) => Err(e),
        };
        if let Err(e) = framed {
            let _ = pages.send(Err(e)).await;
            return;
        }
        if page.rows == PAGE && pages.send(Ok(std::mem::take(&mut page))).await.is_err() {
            return;
        }
    }
}

/// Appends one row to a page in the framing of [`PAGE_SQLITE`] (lengths in bytes).
fn frame_row(page: &mut Page, row: &AnyRow) -> Result<(), sqlx::Error> {
    let seq: i64 = row.try_get(0)?;
    let _ = write!(page.text, "{seq}:");
    for i in 1..=FIELDS {
        match row.try_get::<Option<&str>, _>(i)? {
            None => page.text.push('-'),
            Some(field) => {
                let _ = write!(page.text, "{}:", field.len());
                page.text.push_str(field);
            }
        }
    }
    page.rows += 1;
    page.last_seq = Some(seq);
    Ok(())
}

/// Reads every event in `seq` order (in pages, the next page read while this one is
/// checked), recomputes its hash, checks every head signature with the trusted keys, follows
/// the story of every decision, and reports the first break and every violation. Then checks
/// the checkpoint and the anchors, if given.
pub async fn verify(db: &Db, options: &VerifyOptions) -> Result<VerifyReport, AuditError> {
    verify_counting(db, options, &std::sync::atomic::AtomicU64::new(0)).await
}

/// [`verify`], storing in `checked` how many events it has checked so far (for a progress
/// report while a large log is read).
pub async fn verify_counting(
    db: &Db,
    options: &VerifyOptions,
    checked: &std::sync::atomic::AtomicU64,
) -> Result<VerifyReport, AuditError> {
    let started = Instant::now();
    let (pages, mut received) = mpsc::channel::<Result<Page, sqlx::Error>>(2);
    let reader = {
        let db = db.clone();
        match db.backend {
            Backend::Sqlite => tokio::spawn(read_sqlite(db, pages)),
            Backend::Postgres => tokio::spawn(read_postgres(db, pages)),
        }
    };
    // Stop reading ahead once we return, whichever way.
    let _stop = AbortOnDrop(reader);

    let mut chain = Chain::new(options);
    let mut first_bad = None;
    while let Some(page) = received.recv().await {
        let page = page?;
        // Hashing is CPU work: keep it off the async workers.
        let (back, result) = tokio::task::spawn_blocking(move || {
            let result = chain.check_page(&page);
            (chain, result)
        })
        .await
        .map_err(|e| AuditError::VerifyFailed(e.to_string()))?;
        chain = back;
        checked.store(chain.events, std::sync::atomic::Ordering::Relaxed);
        if let Err(breach) = result {
            first_bad = Some(breach);
            break;
        }
    }
    let head_seq = chain.expected_seq - 1;
    if first_bad.is_none() && head_seq == 0 && !chain.trusted.is_empty() {
        first_bad = Some(Breach {
            seq: 1,
            reason: "the log is empty, but events signed by the given keys are expected: it \
                     was emptied, or this is not the gateway's database"
                .into(),
        });
    }
    if first_bad.is_none() {
        first_bad = chain.unsigned_tail();
    }
    if first_bad.is_none() {
        first_bad = chain.check_checkpoint(options.checkpoint.as_ref());
    }
    if first_bad.is_none() {
        first_bad = chain.check_anchors(&options.anchors, head_seq);
    }
    let story = chain.story.finish(options.in_flight);
    Ok(VerifyReport {
        ok: first_bad.is_none() && story.violations.is_empty(),
        signatures_checked: !chain.trusted.is_empty(),
        signed_heads: chain.signed_heads,
        anchors_checked: if first_bad.is_none() {
            options.anchors.len()
        } else {
            0
        },
        violations: story.violations,
        unreviewed_break_glass: story.unreviewed,
        in_flight: story.in_flight,
        events: chain.events,
        head: Checkpoint {
            seq: head_seq,
            hash: chain.prev_hash,
        },
        first_bad,
        checkpoint: options.checkpoint.clone(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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

    /// A signature on the row at `seq` over `hash`, checked when keys were given.
    fn check_signature(
        &mut self,
        seq: i64,
        hash: &str,
        key_id: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), String> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Ok(());
        };
        if self.trusted.is_empty() {
            self.last_signed = seq;
            return Ok(());
        }
        self.trusted
            .verify_head(key_id, seq, hash, signature)
            .map_err(|e| format!("the signed head: {e}"))?;
        self.last_signed = seq;
        self.signed_heads += 1;
        for key in self.introduced.drain(..) {
            if let Ok(id) = self.trusted.add_text(&key) {
                tracing::debug!(key = %id, "a rotated-in key is trusted from here on");
            }
        }
        Ok(())
    }

    /// An `audit.key` event introduced by a trusted key: its key becomes trusted at the next
    /// signed head.
    fn note_key(&mut self, payload: &str) {
        let Ok(event) = serde_json::from_str::<AuditKeyEvent>(payload) else {
            return;
        };
        if event
            .introduced_by
            .as_deref()
            .is_some_and(|by| self.trusted.contains(by))
            && parse_public(&event.public_key).is_ok()
        {
            self.introduced.push(event.public_key);
        }
    }

    /// Events after the last signed head were appended by someone without a key.
    fn unsigned_tail(&self) -> Option<Breach> {
        let last = self.expected_seq - 1;
        (last > self.last_signed).then(|| Breach {
            seq: self.last_signed + 1,
            reason: format!(
                "events {}..{last} come after the last signed head: they were appended by \
                 someone who does not hold a signing key",
                self.last_signed + 1
            ),
        })
    }

    fn check_checkpoint(&self, checkpoint: Option<&Checkpoint>) -> Option<Breach> {
        let cp = checkpoint?;
        if cp.seq == 0 && cp.hash != GENESIS_HASH {
            return Some(Breach {
                seq: 0,
                reason: "a checkpoint at seq 0 must carry the genesis hash".into(),
            });
        }
        (cp.seq > 0 && !self.checkpoint_seen).then(|| Breach {
            seq: self.expected_seq,
            reason: format!(
                "the log ends at seq {} but the checkpoint names seq {}: events were removed \
                 from the tail",
                self.expected_seq - 1,
                cp.seq
            ),
        })
    }

    /// Every anchored head must be signed by a trusted key and still be in the log.
    fn check_anchors(&self, anchors: &[Anchor], head_seq: i64) -> Option<Breach> {
        for anchor in anchors {
            if !self.trusted.is_empty()
                && let Err(e) = self.trusted.verify_head(
                    &anchor.key_id,
                    anchor.seq,
                    &anchor.hash,
                    &anchor.signature,
                )
            {
                return Some(Breach {
                    seq: anchor.seq,
                    reason: format!("the anchor at seq {}: {e}", anchor.seq),
                });
            }
            if anchor.seq > head_seq {
                return Some(Breach {
                    seq: head_seq + 1,
                    reason: format!(
                        "the log ends at seq {head_seq} but an anchor (written {}) records seq \
                         {}: events were removed from the tail{}",
                        anchor.at,
                        anchor.seq,
                        if head_seq == 0 {
                            " (the log is empty)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            let found = self.anchored.get(&anchor.seq).map(String::as_str);
            if found != Some(anchor.hash.as_str()) {
                return Some(Breach {
                    seq: anchor.seq,
                    reason: format!(
                        "the anchor records hash {} at seq {} but the log holds {}: the log was \
                         rewritten",
                        anchor.hash,
                        anchor.seq,
                        found.unwrap_or("nothing")
                    ),
                });
            }
        }
        None
    }
}

/// One stored row, fields as framed: id, call_id, kind, at, actor, payload, prev_hash,
/// hash, agent, server, tool, approver, outcome, key_id, signature.
struct Raw<'a> {
    seq: i64,
    fields: [Option<&'a str>; FIELDS],
}

const FIELDS: usize = 15;

const FIELD_NAMES: [&str; FIELDS] = [
    "id",
    "call_id",
    "kind",
    "at",
    "actor",
    "payload",
    "prev_hash",
    "hash",
    "agent",
    "server",
    "tool",
    "approver",
    "outcome",
    "key_id",
    "signature",
];

impl Chain {
    fn check_page(&mut self, page: &Page) -> Result<(), Breach> {
        let mut rest = page.text.as_str();
        let mut rows = Vec::with_capacity(page.rows as usize);
        while !rest.is_empty() {
            let (raw, after) = parse_row(rest).ok_or_else(|| Breach {
                seq: self.expected_seq,
                reason: "the stored row cannot be read".into(),
            })?;
            rest = after;
            rows.push(raw);
        }
        if rows.len() as i64 != page.rows {
            return Err(Breach {
                seq: self.expected_seq,
                reason: format!("{} rows could not be read", page.rows - rows.len() as i64),
            });
        }
        // The aggregate's order is not guaranteed; the page's rows are in seq order in the
        // table, so this sort is a linear pass in practice.
        rows.sort_by_key(|raw| raw.seq);
        for raw in &rows {
            self.events += 1;
            self.check(raw)?;
        }
        Ok(())
    }

    /// Checks one row against the chain so far; on success it becomes the new head.
    fn check(&mut self, row: &Raw<'_>) -> Result<(), Breach> {
        let seq = row.seq;
        let breach = |reason: String| Breach { seq, reason };
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
                breach(format!(
                    "seq {seq} is out of order (expected {})",
                    self.expected_seq
                ))
            });
        }
        let required =
            |i: usize| row.fields[i].ok_or_else(|| breach(format!("{} is NULL", FIELD_NAMES[i])));
        let prev_hash = required(6)?;
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
            id: required(0)?,
            call_id: row.fields[1],
            kind: required(2)?,
            at: required(3)?,
            actor: required(4)?,
            payload: required(5)?,
        };
        self.canonical.clear();
        chain::write_canonical(&mut self.canonical, &fields);
        let computed = chain::chain_hash(prev_hash, &self.canonical);
        let stored = required(7)?;
        if computed[..] != *stored.as_bytes() {
            return Err(breach(format!(
                "hash mismatch (stored {stored}, computed {}): the event was changed",
                String::from_utf8_lossy(&computed)
            )));
        }
        let indexed = [
            row.fields[8],
            row.fields[9],
            row.fields[10],
            row.fields[11],
            row.fields[12],
        ];
        check_indexed(fields.payload, indexed).map_err(breach)?;
        if fields.kind == "audit.key" {
            self.note_key(fields.payload);
        }
        self.check_signature(seq, stored, row.fields[13], row.fields[14])
            .map_err(breach)?;
        if let Some(found) = self.anchored.get_mut(&seq) {
            found.push_str(stored);
        }
        self.story
            .observe(seq, fields.call_id, fields.kind, fields.at, fields.payload);
        self.expected_seq = seq + 1;
        self.prev_hash.clear();
        self.prev_hash.push_str(stored);
        if let Some(cp) = &self.checkpoint
            && cp.seq == seq
        {
            self.checkpoint_seen = true;
            if cp.hash != stored {
                return Err(breach(format!(
                    "hash {stored} differs from the checkpoint's {}: the log was rewritten at \
                     or before this event",
                    cp.hash
                )));
            }
        }
        Ok(())
    }
}

/// Parses one framed row off the front of `s`; `None` if the framing is broken.
fn parse_row(s: &str) -> Option<(Raw<'_>, &str)> {
    let (seq, mut rest) = s.split_once(':')?;
    let seq = seq.parse().ok()?;
    let mut fields = [None; FIELDS];
    for field in &mut fields {
        if let Some(after) = rest.strip_prefix('-') {
            rest = after;
            continue;
        }
        let (len, after) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let end = after.is_char_boundary(len).then_some(len)?;
        *field = Some(&after[..end]);
        rest = &after[end..];
    }
    Some((Raw { seq, fields }, rest))
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
    let raws = [
        fields.agent,
        fields.server,
        fields.tool,
        fields.approver,
        fields.outcome,
    ];
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
        assert!(
            format!("12:{}", "g".repeat(64))
                .parse::<Checkpoint>()
                .is_err()
        );
    }

    #[test]
    fn framed_rows_parse() {
        let text = "7:3:abc-2:\u{e9}4:x:yz12:a\u{1f600}b:c\"def-----0:----";
        let (raw, rest) = parse_row(text).unwrap();
        assert_eq!(raw.seq, 7);
        assert_eq!(raw.fields[0], Some("abc"));
        assert_eq!(raw.fields[1], None);
        assert_eq!(raw.fields[2], Some("\u{e9}"));
        assert_eq!(raw.fields[3], Some("x:yz"));
        assert_eq!(raw.fields[4], Some("a\u{1f600}b:c\"def"));
        assert_eq!(raw.fields[10], Some(""));
        assert_eq!(rest, "");
        assert!(parse_row("7:3:ab").is_none());
        assert!(parse_row("x:-").is_none());
        assert!(
            parse_row("1:1:\u{e9}---------------").is_none(),
            "not a character boundary"
        );
    }

    #[test]
    fn indexed_columns_must_match_the_payload() {
        let payload = r#"{"agent":"ci","outcome":"den\u0069ed","tool":7}"#;
        assert!(check_indexed(payload, [Some("ci"), None, None, None, Some("denied")]).is_ok());
        assert!(check_indexed(payload, [Some("cd"), None, None, None, Some("denied")]).is_err());
        assert!(
            check_indexed(payload, [Some("ci"), None, Some("7"), None, Some("denied")]).is_err()
        );
        assert!(check_indexed("[1]", [None; 5]).is_err());
    }
}
