//! The row-by-row check: each row must follow the one before it (seq, prev_hash), hash to its
//! stored hash, keep its indexed columns true to its payload, and carry a valid signature if
//! it is a signed head; then the story sees it and it becomes the head.

use super::read::{FIELD_NAMES, Page, Raw, parse_row};
use super::{Breach, Chain};
use crate::audit::chain::{self, Fields};
use serde::Deserialize;
use serde_json::value::RawValue;

impl Chain {
    /// Checks every row of a page, in `seq` order; the first break stops it.
    pub(super) fn check_page(&mut self, page: &Page) -> Result<(), Breach> {
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
        self.check_order(seq)?;
        let (fields, hash) = self.check_link(row)?;
        let indexed = [
            row.fields[8],
            row.fields[9],
            row.fields[10],
            row.fields[11],
            row.fields[12],
        ];
        check_indexed(fields.payload, indexed).map_err(|e| breach(e.to_string()))?;
        if fields.kind == "audit.key" {
            self.note_key(fields.payload);
        }
        self.check_signature(seq, hash, row.fields[13], row.fields[14])
            .map_err(|e| breach(format!("the signed head: {e}")))?;
        self.advance(&fields, hash);
        self.check_checkpoint_at(seq, hash)
    }

    /// The row must be the next one: none missing, none out of order.
    fn check_order(&self, seq: i64) -> Result<(), Breach> {
        if seq == self.expected_seq {
            return Ok(());
        }
        Err(if seq > self.expected_seq {
            Breach {
                seq: self.expected_seq,
                reason: format!(
                    "event {} is missing: the next event is {seq} (rows were deleted)",
                    self.expected_seq
                ),
            }
        } else {
            Breach {
                seq,
                reason: format!("seq {seq} is out of order (expected {})", self.expected_seq),
            }
        })
    }

    /// The row must chain onto the head (its `prev_hash`) and its fields must hash to its
    /// stored hash. Returns its hashed fields and that hash.
    fn check_link<'r>(&mut self, row: &Raw<'r>) -> Result<(Fields<'r>, &'r str), Breach> {
        let seq = row.seq;
        let breach = |reason: String| Breach { seq, reason };
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
        Ok((fields, stored))
    }

    /// The row checked out: notes its hash if it is anchored, tells the story, and makes it
    /// the head.
    fn advance(&mut self, fields: &Fields<'_>, hash: &str) {
        if let Some(found) = self.anchored.get_mut(&fields.seq) {
            found.push_str(hash);
        }
        self.story.observe(
            fields.seq,
            fields.call_id,
            fields.kind,
            fields.at,
            fields.payload,
        );
        self.expected_seq = fields.seq + 1;
        self.prev_hash.clear();
        self.prev_hash.push_str(hash);
    }
}

/// How the indexed columns of a row disagree with its (hashed) payload.
#[derive(Debug, thiserror::Error)]
enum IndexedMismatch {
    #[error("payload is not a JSON object")]
    NotAnObject,
    #[error("payload is not a JSON object: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("payload field {name}: {source}")]
    Field {
        name: &'static str,
        source: serde_json::Error,
    },
    #[error(
        "column {name} is {column:?} but the payload says {payload:?}: the indexed column \
         was changed"
    )]
    Changed {
        name: &'static str,
        column: Option<String>,
        payload: Option<String>,
    },
}

/// The indexed columns must be what the (hashed) payload says, or a filter could hide rows.
fn check_indexed(payload: &str, columns: [Option<&str>; 5]) -> Result<(), IndexedMismatch> {
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
        return Err(IndexedMismatch::NotAnObject);
    }
    let fields: Fields<'_> = serde_json::from_str(payload).map_err(IndexedMismatch::Unreadable)?;
    let names = ["agent", "server", "tool", "approver", "outcome"];
    let raws = [
        fields.agent,
        fields.server,
        fields.tool,
        fields.approver,
        fields.outcome,
    ];
    for ((name, raw), column) in names.into_iter().zip(raws).zip(columns) {
        let expected = match raw {
            Some(raw) if raw.get().starts_with('"') => Some(
                serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get())
                    .map_err(|source| IndexedMismatch::Field { name, source })?,
            ),
            _ => None,
        };
        if expected.as_deref() != column {
            return Err(IndexedMismatch::Changed {
                name,
                column: column.map(str::to_owned),
                payload: expected.map(std::borrow::Cow::into_owned),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
