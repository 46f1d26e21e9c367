//! SQL for approvals and votes: runtime queries that run on SQLite and PostgreSQL alike.

use super::{Ballot, VoteResult};
use crate::gateway::ToolCall;
use crate::policy::ApprovalSpec;
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
}

impl Approval {
    pub fn new(
        call: &ToolCall,
        args_sha256: &str,
        policy_version: &str,
        rule: &str,
        spec: &ApprovalSpec,
        now: i64,
    ) -> Self {
        Approval {
            id: Uuid::now_v7(),
            call_id: call.id,
            agent: call.agent.id.to_string(),
            on_behalf_of: call.agent.on_behalf_of.as_deref().map(str::to_owned),
            server: call.upstream.to_string(),
            tool: call.tool.clone(),
            args_sha256: args_sha256.to_owned(),
            arguments: spec.redact_arguments(&call.arguments),
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
    }
}

const COLUMNS: &str = "id, call_id, agent, on_behalf_of, server, tool, args_sha256, arguments, policy_version, rule, spec, \
    status, created_at, expires_at, decided_at, decided_by, reason, break_glass, consumed_by";

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
    })
}

pub async fn insert(db: &Db, a: &Approval) -> Result<(), sqlx::Error> {
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
    .execute(&db.pool)
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

/// The approval a retry of exactly this call joins: a pending one, or an approved one whose
/// grant is still unused (the first call stopped waiting before the decision).
pub async fn find_joinable(
    db: &Db,
    call: &ToolCall,
    args_sha256: &str,
    policy_version: &str,
    now: i64,
) -> Result<Option<Approval>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from approvals where agent = $1 and server = $2 and tool = $3 and args_sha256 = $4 \
         and policy_version = $5 and expires_at > $6 \
         and (status = 'pending' or (status = 'approved' and consumed_by is null)) order by created_at limit 1"
    ));
    let row = sqlx::query(sql)
        .bind(call.agent.id.as_ref())
        .bind(call.upstream.as_ref())
        .bind(&call.tool)
        .bind(args_sha256)
        .bind(policy_version)
        .bind(now)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn overdue(db: &Db, now: i64) -> Result<Vec<Approval>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from approvals where status = 'pending' and expires_at <= $1"
    ));
    let rows = sqlx::query(sql).bind(now).fetch_all(&db.pool).await?;
    rows.iter().map(from_row).collect()
}

/// Approvals decided at or after `since` (ms).
pub async fn decided_since(db: &Db, since: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar("select id from approvals where decided_at >= $1")
        .bind(since)
        .fetch_all(&db.pool)
        .await?;
    Ok(ids
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect())
}

pub async fn count_approvals(db: &Db, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from approval_votes where approval_id = $1 and approve = 1")
        .bind(id.to_string())
        .fetch_one(&db.pool)
        .await
}

/// The votes cast so far, in order.
pub async fn votes(db: &Db, id: Uuid) -> Result<Value, sqlx::Error> {
    let rows = sqlx::query("select approver, approve, reason, source, at from approval_votes where approval_id = $1 order by at, approver")
        .bind(id.to_string())
        .fetch_all(&db.pool)
        .await?;
    let votes: Result<Vec<Value>, sqlx::Error> = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "approver": r.try_get::<String, _>("approver")?,
                "vote": if r.try_get::<i64, _>("approve")? != 0 { "approve" } else { "deny" },
                "reason": r.try_get::<Option<String>, _>("reason")?,
                "source": r.try_get::<String, _>("source")?,
                "at_ms": r.try_get::<i64, _>("at")?,
            }))
        })
        .collect();
    Ok(Value::Array(votes?))
}

/// Moves a pending approval to `status`; false if it was no longer pending (someone else won).
pub async fn decide(
    db: &Db,
    id: Uuid,
    status: Status,
    by: Option<&str>,
    reason: Option<&str>,
    break_glass: bool,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update approvals set status = $2, decided_at = $3, decided_by = $4, reason = $5, break_glass = $6 \
         where id = $1 and status = 'pending'",
    )
    .bind(id.to_string())
    .bind(status.as_str())
    .bind(now)
    .bind(by)
    .bind(reason)
    .bind(i64::from(break_glass))
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a vote and applies it, in one transaction that first bumps the approval's revision:
/// that write serialises concurrent voters on the same approval (a row lock on PostgreSQL, the
/// write lock on SQLite), so a quorum is counted exactly once.
pub async fn vote(
    db: &Db,
    approval: &Approval,
    ballot: &Ballot,
    now: i64,
) -> Result<VoteResult, sqlx::Error> {
    let id = approval.id.to_string();
    let mut tx = db.pool.begin().await?;
    sqlx::query("update approvals set revision = revision + 1 where id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query("select status, decided_by from approvals where id = $1")
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
    let status = Status::parse(&row.try_get::<String, _>("status")?).unwrap_or(Status::Pending);
    if status != Status::Pending {
        tx.commit().await?;
        return Ok(VoteResult::AlreadyDecided {
            status,
            by: row.try_get("decided_by")?,
        });
    }
    let inserted = sqlx::query(
        "insert into approval_votes (approval_id, approver, approve, reason, source, at) values ($1, $2, $3, $4, $5, $6) \
         on conflict do nothing",
    )
    .bind(&id)
    .bind(&ballot.approver)
    .bind(i64::from(ballot.approve))
    .bind(&ballot.reason)
    .bind(&ballot.source)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        tx.commit().await?;
        return Ok(VoteResult::AlreadyVoted);
    }
    let approvals: i64 = sqlx::query_scalar(
        "select count(*) from approval_votes where approval_id = $1 and approve = 1",
    )
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    let quorum = approval.spec.quorum.max(1);
    let decision = match (ballot.approve, &ballot.break_glass) {
        (false, _) => Some((Status::Denied, false)),
        (true, Some(_)) => Some((Status::Approved, true)),
        (true, None) if approvals >= i64::from(quorum) => Some((Status::Approved, false)),
        _ => None,
    };
    let result = match decision {
        Some((status, break_glass)) => {
            sqlx::query(
                "update approvals set status = $2, decided_at = $3, decided_by = $4, reason = $5, break_glass = $6 \
                 where id = $1 and status = 'pending'",
            )
            .bind(&id)
            .bind(status.as_str())
            .bind(now)
            .bind(&ballot.approver)
            .bind(ballot.reason.as_deref().or(ballot.break_glass.as_deref()))
            .bind(i64::from(break_glass))
            .execute(&mut *tx)
            .await?;
            VoteResult::Decided { status }
        }
        None => VoteResult::Counted {
            approvals: approvals as u32,
            quorum,
        },
    };
    tx.commit().await?;
    Ok(result)
}

/// Marks an approved grant used by `call_id`; false if it was used already.
pub async fn consume(db: &Db, id: Uuid, call_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update approvals set consumed_by = $2 where id = $1 and status = 'approved' and consumed_by is null")
        .bind(id.to_string())
        .bind(call_id.to_string())
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
