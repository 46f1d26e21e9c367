//! Exports for auditors: CSV with one column per field that matters (times in RFC 3339), and
//! JSON lines with every event whole.

use super::Console;
use super::error::ConsoleError;
use super::history::{Params, filter, record_read};
use crate::audit::{Event, Format, MAX_LIMIT};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;

/// The CSV's columns after `seq`, `at`, `kind`, `call_id` and `actor`: payload fields by
/// name (`a/b` reaches into an object).
const FIELDS: &[&str] = &[
    "agent",
    "on_behalf_of",
    "server",
    "tool",
    "rule",
    "policy_version",
    "outcome",
    "approval_id",
    "approver",
    "vote",
    "result/result",
    "reason",
    "break_glass",
    "justification",
    "decided_by",
    "source",
    "who",
    "how",
    "executor",
    "args_sha256",
    "result_sha256",
    "tool_ms",
    "total_ms",
    "via",
    "route",
];

pub(super) async fn export(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    let format = match params.get("format").map(String::as_str) {
        Some("csv") | None => Format::Csv,
        Some("jsonl") => Format::Jsonl,
        Some(other) => {
            return Err(ConsoleError::BadRequest(format!(
                "unknown format `{}`; use csv or jsonl",
                other.chars().take(20).collect::<String>()
            )));
        }
    };
    let (mut kept, filter) = filter(&params, MAX_LIMIT)?;
    kept.insert(
        "format".into(),
        if format == Format::Csv {
            "csv"
        } else {
            "jsonl"
        }
        .into(),
    );
    record_read(&console, &current, "/console/audit/export", &kept).await?;
    let events = console.audit.list(&filter).await?;
    let (body, file) = match format {
        Format::Csv => (csv(&events), "countersign-audit.csv"),
        _ => (
            crate::audit::render(&events, Format::Jsonl),
            "countersign-audit.jsonl",
        ),
    };
    let disposition = format!("attachment; filename=\"{file}\"");
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// RFC 4180 CSV with a header row.
pub fn csv(events: &[Event]) -> String {
    let mut out = String::new();
    let header: Vec<String> = ["seq", "at", "kind", "call_id", "actor"]
        .iter()
        .map(|h| h.to_string())
        .chain(FIELDS.iter().map(|f| f.replace('/', "_")))
        .chain(
            [
                "authenticated_method",
                "authenticated_issuer",
                "authenticated_subject",
                "hash",
            ]
            .map(String::from),
        )
        .collect();
    row(&mut out, &header);
    for e in events {
        let mut cells = vec![
            e.seq.to_string(),
            e.at.clone(),
            e.kind.as_str().to_owned(),
            e.call_id.map(|c| c.to_string()).unwrap_or_default(),
            e.actor.clone(),
        ];
        cells.extend(
            FIELDS
                .iter()
                .map(|f| cell(e.payload.pointer(&format!("/{f}")))),
        );
        let auth = e
            .payload
            .get("authenticated")
            .filter(|a| !a.is_null())
            .or_else(|| e.payload.pointer("/evidence/authenticated"));
        for key in ["method", "issuer", "subject"] {
            cells.push(cell(auth.and_then(|a| a.get(key))));
        }
        cells.push(e.hash.clone());
        row(&mut out, &cells);
    }
    out
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn row(out: &mut String, cells: &[String]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, cell);
    }
    out.push_str("\r\n");
}

/// Quoted when needed (RFC 4180); a cell a spreadsheet would take for a formula gets a
/// leading `'`, since agents choose much of what is logged.
fn field(out: &mut String, text: &str) {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;
    use serde_json::json;

    #[test]
    fn one_column_per_field_and_no_formulas() {
        let event = Event {
            seq: 3,
            id: uuid::Uuid::nil(),
            call_id: None,
            kind: EventKind::ApprovalVote,
            at: "2026-01-02T03:04:05.000000Z".into(),
            actor: "alice".into(),
            payload: json!({"agent": "ci", "approver": "alice", "vote": "deny", "reason": "=HYPERLINK(\"x\"), no",
                "result": {"result": "decided"}, "authenticated": {"method": "openid connect", "issuer": "https://idp", "subject": "s1"}}),
            prev_hash: String::new(),
            hash: "h".into(),
        };
        let text = csv(&[event]);
        let mut lines = text.split("\r\n");
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(&header[..5], ["seq", "at", "kind", "call_id", "actor"]);
        assert!(header.contains(&"result_result") && header.contains(&"authenticated_subject"));
        let row = lines.next().unwrap();
        assert!(
            row.starts_with("3,2026-01-02T03:04:05.000000Z,approval.vote,,alice,ci,"),
            "{row}"
        );
        assert!(row.contains(r#""'=HYPERLINK(""x""), no""#), "{row}");
        assert!(row.contains(",openid connect,https://idp,s1,h"), "{row}");
    }
}
