//! Reading the log: filtered lists, one call's story, and output formats.

use super::{AuditError, Event, EventKind, chain};
use crate::store::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::fmt::Write as _;
use std::str::FromStr;
use uuid::Uuid;

/// Events per list when the filter names no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most events one list returns; page with `after_seq`.
pub const MAX_LIMIT: u32 = 10_000;

/// Which events to list. Every field is optional; set fields are ANDed.
///
/// `agent`, `server`, `tool`, `approver` and `outcome` match the payload's top-level string
/// fields of those names. `since` (inclusive) and `until` (exclusive) are RFC 3339 timestamps
/// or dates. Results are in chain order, starting after `after_seq`; to page, pass the last
/// `seq` of one page as the next page's `after_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EventKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<i64>,
}

impl Filter {
    /// The limit that applies: the filter's, else [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`].
    pub fn effective_limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// Output formats for events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Aligned columns for a terminal: seq, time, kind, actor, call, summary.
    #[default]
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row; the payload is a JSON text column.
    Csv,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::Jsonl => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

impl FromStr for Format {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            other => Err(AuditError::InvalidQuery(format!(
                "unknown format `{other}`; use table, json, jsonl or csv"
            ))),
        }
    }
}

const SELECT: &str = "SELECT seq, id, call_id, kind, at, actor, payload, prev_hash, hash \
                      FROM audit_events";

/// A bound value of a built query.
enum Value {
    Text(String),
    Int(i64),
}

pub(crate) async fn list(db: &Db, filter: &Filter) -> Result<Vec<Event>, AuditError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut add = |column: &str, op: &str, value: Value| {
        values.push(value);
        clauses.push(format!("{column} {op} ${}", values.len()));
    };
    for (column, value) in [
        ("agent", &filter.agent),
        ("server", &filter.server),
        ("tool", &filter.tool),
        ("approver", &filter.approver),
        ("outcome", &filter.outcome),
    ] {
        if let Some(value) = value {
            add(column, "=", Value::Text(value.clone()));
        }
    }
    if let Some(kind) = filter.kind {
        add("kind", "=", Value::Text(kind.as_str().into()));
    }
    if let Some(call_id) = filter.call_id {
        add("call_id", "=", Value::Text(call_id.to_string()));
    }
    if let Some(since) = &filter.since {
        let since =
            chain::parse_timestamp(since).map_err(|e| AuditError::InvalidQuery(e.to_string()))?;
        add("at", ">=", Value::Text(since));
    }
    if let Some(until) = &filter.until {
        let until =
            chain::parse_timestamp(until).map_err(|e| AuditError::InvalidQuery(e.to_string()))?;
        add("at", "<", Value::Text(until));
    }
    if let Some(after) = filter.after_seq {
        add("seq", ">", Value::Int(after));
    }
    let mut sql = String::from(SELECT);
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    let _ = write!(sql, " ORDER BY seq LIMIT {}", filter.effective_limit());

    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in values {
        query = match value {
            Value::Text(text) => query.bind(text),
            Value::Int(n) => query.bind(n),
        };
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter().map(event_of_row).collect()
}

pub(crate) async fn show(db: &Db, call_id: Uuid) -> Result<Vec<Event>, AuditError> {
    let rows = sqlx::query(
        "SELECT seq, id, call_id, kind, at, actor, payload, prev_hash, hash \
         FROM audit_events WHERE call_id = $1 ORDER BY seq",
    )
    .bind(call_id.to_string())
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(event_of_row).collect()
}

fn event_of_row(row: &AnyRow) -> Result<Event, AuditError> {
    let seq: i64 = row.try_get("seq")?;
    let corrupt = |reason: String| AuditError::Corrupt { seq, reason };
    let id: &str = row.try_get("id")?;
    let call_id: Option<&str> = row.try_get("call_id")?;
    let kind: &str = row.try_get("kind")?;
    let payload: &str = row.try_get("payload")?;
    Ok(Event {
        seq,
        id: id.parse().map_err(|e| corrupt(format!("id `{id}`: {e}")))?,
        call_id: call_id
            .map(|c| {
                c.parse()
                    .map_err(|e| corrupt(format!("call_id `{c}`: {e}")))
            })
            .transpose()?,
        kind: kind
            .parse()
            .map_err(|_| corrupt(format!("unknown kind `{kind}`")))?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        payload: serde_json::from_str(payload)
            .map_err(|e| corrupt(format!("payload is not JSON: {e}")))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Formats events for output.
pub fn render(events: &[Event], format: Format) -> String {
    match format {
        Format::Json => {
            let mut out = serde_json::to_string_pretty(events).expect("events serialize");
            out.push('\n');
            out
        }
        Format::Jsonl => {
            let mut out = String::new();
            for event in events {
                out.push_str(&serde_json::to_string(event).expect("events serialize"));
                out.push('\n');
            }
            out
        }
        Format::Csv => render_csv(events),
        Format::Table => render_table(events),
    }
}

fn render_csv(events: &[Event]) -> String {
    let mut out = String::from("seq,id,call_id,kind,at,actor,payload,prev_hash,hash\r\n");
    for e in events {
        let fields = [
            e.seq.to_string(),
            e.id.to_string(),
            e.call_id.map(|c| c.to_string()).unwrap_or_default(),
            e.kind.as_str().to_owned(),
            e.at.clone(),
            e.actor.clone(),
            e.payload.to_string(),
            e.prev_hash.clone(),
            e.hash.clone(),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(&mut out, field);
        }
        out.push_str("\r\n");
    }
    out
}

/// RFC 4180: quote a field that holds a comma, quote, CR or LF; double the quotes inside.
fn csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

fn render_table(events: &[Event]) -> String {
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|e| {
            [
                e.seq.to_string(),
                e.at.clone(),
                e.kind.as_str().to_owned(),
                printable(&e.actor, 24),
                e.call_id
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                printable(&summary(&e.payload), 60),
            ]
        })
        .collect();
    let header = ["SEQ", "AT", "KIND", "ACTOR", "CALL", "SUMMARY"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    let _ = writeln!(out, "({} events)", events.len());
    out
}

/// `agent=… server=… tool=… approver=… outcome=…` from the payload, for the table.
fn summary(payload: &serde_json::Value) -> String {
    ["agent", "server", "tool", "approver", "outcome"]
        .iter()
        .filter_map(|k| {
            payload
                .get(*k)
                .and_then(|v| v.as_str())
                .map(|v| format!("{k}={v}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Control characters replaced (a terminal must not be steered by logged text), cut to `max`.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.pop();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Event {
        Event {
            seq: 7,
            id: Uuid::nil(),
            call_id: None,
            kind: EventKind::CallReceived,
            at: "2026-01-02T03:04:05.000000Z".into(),
            actor: "ci\u{1b}[31m".into(),
            payload: json!({"agent": "ci", "note": "a,\"b\"\nc"}),
            prev_hash: "0".repeat(64),
            hash: "1".repeat(64),
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let csv = render(&[event()], Format::Csv);
        assert!(
            csv.contains(r#""{""agent"":""ci"",""note"":""a,\""b\""\nc""}""#),
            "{csv}"
        );
        assert!(csv.starts_with("seq,id,call_id,kind,at,actor,payload,prev_hash,hash\r\n"));
    }

    #[test]
    fn table_and_lines() {
        let table = render(&[event()], Format::Table);
        assert!(table.contains("agent=ci"), "{table}");
        assert!(!table.contains('\u{1b}'), "control characters are replaced");
        let jsonl = render(&[event(), event()], Format::Jsonl);
        assert_eq!(jsonl.lines().count(), 2);
        let json: serde_json::Value =
            serde_json::from_str(&render(&[event()], Format::Json)).unwrap();
        assert_eq!(json[0]["kind"], "call.received");
    }
}
