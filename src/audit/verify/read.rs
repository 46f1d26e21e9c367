//! Reading the log for `verify`: pages of rows in `seq` order, each framed as one text, and
//! the parsing of that framing back into rows.

use crate::store::{Backend, Db};
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::fmt::Write as _;
use tokio::sync::mpsc;

/// Events per page read by [`verify`](super::verify).
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

/// Rows framed as one text.
#[derive(Default)]
pub(super) struct Page {
    pub(super) rows: i64,
    last_seq: Option<i64>,
    pub(super) text: String,
}

/// Starts reading every page into `pages`, in `seq` order, the way that is fast on the
/// backend.
pub(super) fn spawn_reader(
    db: &Db,
    pages: mpsc::Sender<Result<Page, sqlx::Error>>,
) -> tokio::task::JoinHandle<()> {
    let db = db.clone();
    match db.backend {
        Backend::Sqlite => tokio::spawn(read_sqlite(db, pages)),
        Backend::Postgres => tokio::spawn(read_postgres(db, pages)),
    }
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

/// One stored row, fields as framed: id, call_id, kind, at, actor, payload, prev_hash,
/// hash, agent, server, tool, approver, outcome, key_id, signature.
pub(super) struct Raw<'a> {
    pub(super) seq: i64,
    pub(super) fields: [Option<&'a str>; FIELDS],
}

const FIELDS: usize = 15;

pub(super) const FIELD_NAMES: [&str; FIELDS] = [
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

/// Parses one framed row off the front of `s`; `None` if the framing is broken.
pub(super) fn parse_row(s: &str) -> Option<(Raw<'_>, &str)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
