//! SQL for approvals and votes: runtime queries that run on SQLite and PostgreSQL alike.

use super::Ballot;
use super::transitions::Decision;
use crate::call::ToolCall;
use crate::policy::{ApprovalSpec, BreakGlassRule};
use crate::store::Db;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::time::Duration;
use uuid::Uuid;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Status::Pending,
            "approved" => Status::Approved,
            "denied" => Status::Denied,
            "expired" => Status::Expired,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
}

/// One approval as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Approval {
    pub id: Uuid,
    pub call_id: Uuid,
    pub agent: String,
    pub on_behalf_of: Option<String>,
    pub server: String,
    pub tool: String,
    pub args_sha256: String,
    /// Redacted as the policy says.
    pub arguments: Value,
    pub policy_version: String,
    pub rule: String,
    #[serde(serialize_with = "serialize_spec")]
    pub spec: ApprovalSpec,
    pub status: Status,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub break_glass: bool,
    pub consumed_by: Option<String>,
    /// Who reviewed a break-glass approval afterwards.
    pub reviewed_by: Option<String>,
}

impl Approval {
    /// A new pending approval; `seal` turns each redacted value into its keyed digest.
    pub fn new(
        call: &ToolCall,
        args_sha256: &str,
        policy_version: &str,
        rule: &str,
        spec: &ApprovalSpec,
        now: i64,
        seal: impl Fn(&Value) -> String,
    ) -> Self {
        Approval {
            id: Uuid::now_v7(),
            call_id: call.id,
            agent: call.agent.id.to_string(),
            on_behalf_of: call.agent.on_behalf_of.as_deref().map(str::to_owned),
            server: call.upstream.to_string(),
            tool: call.tool.clone(),
            args_sha256: args_sha256.to_owned(),
            arguments: spec.redact_arguments(&call.arguments, seal),
            policy_version: policy_version.to_owned(),
            rule: rule.to_owned(),
            spec: spec.clone(),
            status: Status::Pending,
            created_at: now,
            expires_at: now + spec.timeout.as_millis() as i64,
            decided_at: None,
            decided_by: None,
            reason: None,
            break_glass: false,
            consumed_by: None,
            reviewed_by: None,
        }
    }
}

fn serialize_spec<S: serde::Serializer>(spec: &ApprovalSpec, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&spec_to_json(spec), s)
}

fn spec_to_json(spec: &ApprovalSpec) -> Value {
    json!({
        "approvers": spec.approvers, "approver_groups": spec.approver_groups, "quorum": spec.quorum,
        "allow_self_approval": spec.allow_self_approval, "timeout_ms": spec.timeout.as_millis() as u64,
        "redact": spec.redact, "classification": spec.classification, "channel": spec.channel,
        "post_results": spec.post_results,
        "break_glass": spec.break_glass.as_ref().map(|b| json!({
            "approvers": b.approvers, "approver_groups": b.approver_groups,
            "min_justification": b.min_justification,
        })),
    })
}

fn spec_from_json(v: &Value) -> ApprovalSpec {
    let strings = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    ApprovalSpec {
        approvers: strings("approvers"),
        approver_groups: strings("approver_groups"),
        quorum: v["quorum"].as_u64().unwrap_or(1) as u32,
        allow_self_approval: v["allow_self_approval"].as_bool().unwrap_or(false),
        timeout: Duration::from_millis(v["timeout_ms"].as_u64().unwrap_or(0)),
        redact: strings("redact"),
        classification: v["classification"].as_str().map(str::to_owned),
        channel: v["channel"].as_str().map(str::to_owned),
        post_results: v["post_results"].as_bool().unwrap_or(false),
        break_glass: v.get("break_glass").filter(|b| b.is_object()).map(|b| {
            let strings = |key: &str| -> Vec<String> {
                b[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            };
            BreakGlassRule {
                approvers: strings("approvers"),
                approver_groups: strings("approver_groups"),
                min_justification: b["min_justification"].as_u64().unwrap_or(20) as usize,
            }
        }),
    }
}

const COLUMNS: &str = "id, call_id, agent, on_behalf_of, server, tool, args_sha256, arguments, policy_version, rule, spec, \
    status, created_at, expires_at, decided_at, decided_by, reason, break_glass, consumed_by, reviewed_by";

fn from_row(row: &AnyRow) -> Result<Approval, sqlx::Error> {
    let text = |i: &str| row.try_get::<String, _>(i);
    let uuid = |i: &str| -> Result<Uuid, sqlx::Error> {
        Uuid::parse_str(&text(i)?).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let json = |i: &str| -> Result<Value, sqlx::Error> {
        serde_json::from_str(&text(i)?).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let status = text("status")?;
    Ok(Approval {
        id: uuid("id")?,
        call_id: uuid("call_id")?,
        agent: text("agent")?,
        on_behalf_of: row.try_get("on_behalf_of")?,
        server: text("server")?,
        tool: text("tool")?,
        args_sha256: text("args_sha256")?,
        arguments: json("arguments")?,
        policy_version: text("policy_version")?,
        rule: text("rule")?,
        spec: spec_from_json(&json("spec")?),
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status}").into()))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
        reason: row.try_get("reason")?,
        break_glass: row.try_get::<i64, _>("break_glass")? != 0,
        consumed_by: row.try_get("consumed_by")?,
        reviewed_by: row.try_get("reviewed_by")?,
    })
}

pub async fn insert(conn: &mut sqlx::AnyConnection, a: &Approval) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into approvals (id, call_id, agent, on_behalf_of, server, tool, args_sha256, arguments, policy_version, rule, spec, status, created_at, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13)",
    )
    .bind(a.id.to_string())
    .bind(a.call_id.to_string())
    .bind(&a.agent)
    .bind(&a.on_behalf_of)
    .bind(&a.server)
    .bind(&a.tool)
    .bind(&a.args_sha256)
    .bind(a.arguments.to_string())
    .bind(&a.policy_version)
    .bind(&a.rule)
    .bind(spec_to_json(&a.spec).to_string())
    .bind(a.created_at)
    .bind(a.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(db: &Db, id: Uuid) -> Result<Option<Approval>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("select {COLUMNS} from approvals where id = $1"));
    let row = sqlx::query(sql)
        .bind(id.to_string())
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(db: &Db, status: Option<super::Status>) -> Result<Vec<Approval>, sqlx::Error> {
    let rows = match status {
        Some(s) => {
            let sql = sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from approvals where status = $1 order by created_at"
            ));
            sqlx::query(sql)
                .bind(s.as_str())
                .fetch_all(&db.pool)
                .await?
        }
        None => {
            let sql = sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from approvals order by created_at"
            ));
            sqlx::query(sql).fetch_all(&db.pool).await?
        }
    };
    rows.iter().map(from_row).collect()
}

pub async fn overdue(db: &Db, now: i64) -> Result<Vec<Approval>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from approvals where status = 'pending' and expires_at <= $1"
    ));
    let rows = sqlx::query(sql).bind(now).fetch_all(&db.pool).await?;
    rows.iter().map(from_row).collect()
}

/// Who approved so far, in order.
pub async fn approvers(db: &Db, id: Uuid) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select approver from approval_votes where approval_id = $1 and approve = 1 order by at, approver",
    )
    .bind(id.to_string())
    .fetch_all(&db.pool)
    .await
}

pub async fn count_approvals(db: &Db, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from approval_votes where approval_id = $1 and approve = 1")
        .bind(id.to_string())
        .fetch_one(&db.pool)
        .await
}

/// Of `ids`, those whose working row no longer says pending.
pub async fn decided_among(db: &Db, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut decided = Vec::new();
    for chunk in ids.chunks(crate::store::IN_LIST_CHUNK) {
        let list = crate::store::placeholders(1, chunk.len());
        let sql = format!("select id from approvals where status <> 'pending' and id in ({list})");
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for id in query.fetch_all(&db.pool).await? {
            decided.extend(Uuid::parse_str(&id).ok());
        }
    }
    Ok(decided)
}

/// Records `decision` on the working row. Not a compare-and-set: the ledger decided, and a row
/// someone changed by hand is put back in line with the log.
pub async fn decide(
    conn: &mut sqlx::AnyConnection,
    id: Uuid,
    decision: &Decision,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update approvals set status = $2, decided_at = $3, decided_by = $4, reason = $5, break_glass = $6, \
         revision = revision + 1 where id = $1",
    )
    .bind(id.to_string())
    .bind(decision.status.as_str())
    .bind(decision.at)
    .bind(decision.by.as_deref())
    .bind(decision.reason.as_deref())
    .bind(i64::from(decision.break_glass))
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a counted vote.
pub async fn insert_vote(
    conn: &mut sqlx::AnyConnection,
    id: Uuid,
    ballot: &Ballot,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into approval_votes (approval_id, approver, approve, reason, source, at) values ($1, $2, $3, $4, $5, $6) \
         on conflict do nothing",
    )
    .bind(id.to_string())
    .bind(&ballot.approver)
    .bind(i64::from(ballot.approve))
    .bind(&ballot.reason)
    .bind(ballot.source.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a grant used by `call_id`.
pub async fn consume(
    conn: &mut sqlx::AnyConnection,
    id: Uuid,
    call_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("update approvals set consumed_by = $2 where id = $1")
        .bind(id.to_string())
        .bind(call_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks a break-glass approval reviewed.
pub async fn reviewed(
    conn: &mut sqlx::AnyConnection,
    id: Uuid,
    reviewer: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("update approvals set reviewed_by = $2 where id = $1")
        .bind(id.to_string())
        .bind(reviewer)
        .execute(conn)
        .await?;
    Ok(())
}

/// The first seq from which the ledger must be rebuilt: the request of the oldest approval
/// that may still be decided, used or reviewed (none: nothing to replay). The table only
/// points the way: the events replayed are verified, and an approval the table hides is
/// simply not open (fail closed).
pub async fn replay_from(db: &Db) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "select min(e.seq) from audit_events e join approvals a on e.call_id = a.call_id \
         where e.kind = 'approval.requested' and (a.status = 'pending' \
         or (a.status = 'approved' and a.consumed_by is null) \
         or (a.break_glass = 1 and a.reviewed_by is null))",
    )
    .fetch_one(&db.pool)
    .await
}
