//! Calls whose end was never recorded: forwarded by a gateway that died before the upstream
//! answered (or before the answer was written). They may or may not have run; they are recorded
//! as `call.ambiguous` and never retried.
//!
//! A call can be "unfinished" only while it may still be running, so a scan looks at calls
//! forwarded before a cut-off: on SQLite at start-up, everything before now (one process per
//! database file, and this one has forwarded nothing yet); otherwise the longest upstream
//! timeout plus a margin ago, since a live gateway records every call's end by then. Where the
//! last scan stopped is kept in `audit_marks`, so each event is looked at once.

use super::events::{AuditEvent, CallAmbiguous};
use super::{AuditError, AuditLog, NewEvent};
use crate::store::Backend;
use sqlx::Row;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MARK: &str = "unfinished_scanned_seq";
/// How often replicas look for calls a dead gateway left behind.
const SCAN_EVERY: Duration = Duration::from_secs(60);

impl AuditLog {
    /// Records `call.ambiguous` for every call forwarded before `cutoff` (an RFC 3339 stamp as
    /// stored in `at`) whose end is not in the log. Returns how many were found.
    pub async fn record_unfinished(&self, cutoff: &str) -> Result<usize, AuditError> {
        let pool = &self.db().pool;
        let scanned: i64 = sqlx::query_scalar("select value from audit_marks where name = $1")
            .bind(MARK)
            .fetch_optional(pool)
            .await?
            .unwrap_or(0);
        let upto: i64 =
            sqlx::query_scalar("select coalesce(max(seq), 0) from audit_events where at < $1")
                .bind(cutoff)
                .fetch_one(pool)
                .await?;
        if upto <= scanned {
            return Ok(0);
        }
        let rows = sqlx::query(
            "select f.call_id, f.agent, f.server, f.tool, f.at from audit_events f \
             where f.kind = 'call.forwarded' and f.seq > $1 and f.seq <= $2 and f.call_id is not null \
             and not exists (select 1 from audit_events e where e.call_id = f.call_id and e.seq > f.seq \
                             and e.kind in ('call.completed', 'call.failed', 'call.ambiguous')) \
             order by f.seq",
        )
        .bind(scanned)
        .bind(upto)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            let call_id: String = row.try_get("call_id")?;
            let ambiguous = CallAmbiguous {
                agent: row.try_get("agent")?,
                server: row.try_get("server")?,
                tool: row.try_get("tool")?,
                forwarded_at: Some(row.try_get("at")?),
                task_id: None,
                approval_id: None,
                reason: "the gateway that forwarded the call stopped before recording its end: it may or may not have run, and it was not retried".into(),
            };
            tracing::warn!(call = %call_id, "a call's end was never recorded: recorded as ambiguous");
            let event = NewEvent::new(
                uuid::Uuid::parse_str(&call_id).ok(),
                "countersign",
                AuditEvent::CallAmbiguous(ambiguous),
            );
            self.append(event).await?;
        }
        sqlx::query(
            "insert into audit_marks (name, value) values ($1, $2) \
             on conflict (name) do update set value = excluded.value where audit_marks.value < excluded.value",
        )
        .bind(MARK)
        .bind(upto)
        .execute(pool)
        .await?;
        Ok(rows.len())
    }

    /// Scans once now (see the module doc for the cut-off), then every minute until `shutdown`.
    /// `longest_call` is the longest any upstream call may take.
    pub fn spawn_unfinished_scan(&self, longest_call: Duration, shutdown: CancellationToken) {
        let audit = self.clone();
        let settled = longest_call + Duration::from_secs(60);
        tokio::spawn(async move {
            let sole_process = audit.db().backend == Backend::Sqlite;
            let mut first = true;
            loop {
                let cutoff = if first && sole_process {
                    super::chain::now_timestamp()
                } else {
                    timestamp_before(settled)
                };
                first = false;
                if let Err(e) = audit.record_unfinished(&cutoff).await {
                    tracing::warn!(error = %e, "could not look for calls whose end was never recorded");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(SCAN_EVERY) => {}
                }
            }
        });
    }
}

fn timestamp_before(ago: Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    super::chain::format_timestamp(now.saturating_sub(ago).as_micros() as i64)
}
