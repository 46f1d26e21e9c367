//! The broker's entry points: building it on the verified log, opening (or joining) an
//! approval, closing it (expiry, cancellation), using its grant, recording a break-glass review,
//! and reading approvals back.

use super::ledger::{Binding, Feed, Ledger};
use super::transitions::{Close, Decision, Forward, Open, Review, ReviewRefusal};
use super::waiting::{PROGRESS_EVERY, Wakers, wake};
use super::{Approval, Broker, BrokerError, Directory, GrantUse, Notifier, Status, table};
use crate::audit::AuditLog;
use crate::audit::events::{ApprovalRequested, BreakGlassGrant, CallForwarded};
use crate::call::ToolCall;
use crate::policy::ApprovalSpec;
use crate::store::Db;
use crate::timestamp::now_ms;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

impl Broker {
    /// A broker whose ledger is rebuilt from the verified log (the approvals that may still
    /// be decided, used or reviewed) before it answers anything.
    pub async fn new(
        db: Db,
        audit: AuditLog,
        directory: Arc<Directory>,
        chats: Vec<Arc<dyn Notifier>>,
    ) -> Result<Arc<Self>, BrokerError> {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let wakers: Wakers = Arc::default();
        let feed = Feed {
            ledger: ledger.clone(),
            decided: Box::new({
                let wakers = wakers.clone();
                move |id| wake(&wakers, id)
            }),
        };
        let from = table::replay_from(&db).await?;
        audit.attach(Arc::new(feed), from).await?;
        Ok(Arc::new(Broker {
            db,
            audit,
            directory,
            ledger,
            wakers,
            changed_rows: Mutex::default(),
            chats,
            updates: tokio_util::task::TaskTracker::new(),
            progress_every_ms: (PROGRESS_EVERY.as_millis() as u64).into(),
        }))
    }

    /// Waits for the chat updates already started (before a short-lived process exits).
    pub async fn flush_updates(&self) {
        self.updates.close();
        self.updates.wait().await;
        self.updates.reopen();
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Opens an approval for `call`, or joins the one for the same exact call (same agent,
    /// server, tool, arguments and policy version) that is pending, or approved with its grant
    /// unused. Returns it and whether it was joined.
    pub async fn request(
        &self,
        call: &ToolCall,
        args_sha256: &str,
        policy_version: &str,
        rule: &str,
        spec: &ApprovalSpec,
    ) -> Result<(Approval, bool), BrokerError> {
        let keys = self.audit.keys();
        let seal = |v: &Value| keys.seal(v);
        let approval = Approval::new(
            call,
            args_sha256,
            policy_version,
            rule,
            spec,
            now_ms(),
            seal,
        );
        let open = Open {
            ledger: self.ledger.clone(),
            requested: self.requested_payload(&approval, spec),
            approval,
            joined: None,
        };
        let (open, _) = self.audit.transact(open).await?;
        if let Some(joined) = open.joined {
            return Ok((self.get(joined).await?, true));
        }
        report_requested(&open.approval);
        self.announce(&open.approval).await?;
        Ok((open.approval, false))
    }

    /// The `approval.requested` payload: the exact call, and who may decide it as the
    /// directory resolves the policy's approvers now.
    fn requested_payload(&self, approval: &Approval, spec: &ApprovalSpec) -> ApprovalRequested {
        ApprovalRequested {
            approval_id: approval.id,
            agent: approval.agent.clone(),
            on_behalf_of: approval.on_behalf_of.clone(),
            server: approval.server.clone(),
            tool: approval.tool.clone(),
            args_sha256: approval.args_sha256.clone(),
            policy_version: approval.policy_version.clone(),
            rule: approval.rule.clone(),
            approvers: spec.approvers.clone(),
            approver_groups: spec.approver_groups.clone(),
            eligible: self
                .directory
                .resolve(&spec.approvers, &spec.approver_groups),
            eligible_groups: self.directory.idp_groups(&spec.approver_groups),
            quorum: spec.quorum,
            allow_self_approval: spec.allow_self_approval,
            break_glass: spec.break_glass.as_ref().map(|b| BreakGlassGrant {
                eligible: self.directory.resolve(&b.approvers, &b.approver_groups),
                min_justification: b.min_justification,
            }),
            expires_at_ms: approval.expires_at,
            classification: spec.classification.clone(),
            channel: spec.channel.clone(),
            arguments: approval.arguments.clone(),
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Approval, BrokerError> {
        table::get(&self.db, id)
            .await?
            .ok_or(BrokerError::NotFound(id))
    }

    pub async fn list(&self, status: Option<Status>) -> Result<Vec<Approval>, BrokerError> {
        Ok(table::list(&self.db, status).await?)
    }

    /// Who approved `id` so far, in order (from the working table, for display).
    pub async fn approvers(&self, id: Uuid) -> Result<Vec<String>, BrokerError> {
        Ok(table::approvers(&self.db, id).await?)
    }

    /// Marks a pending approval expired once it is due (a concurrent decision wins).
    pub(super) async fn expire(&self, id: Uuid) -> Result<(), BrokerError> {
        let decision = Decision {
            status: Status::Expired,
            by: None,
            reason: Some("the approval timed out".into()),
            break_glass: false,
            at: now_ms(),
        };
        self.close(id, decision).await.map(drop)
    }

    async fn close(&self, id: Uuid, decision: Decision) -> Result<bool, BrokerError> {
        let close = Close {
            ledger: self.ledger.clone(),
            id,
            decision,
            closed: false,
        };
        let (close, _) = self.audit.transact(close).await?;
        if close.closed {
            let decided = self.get(id).await?;
            let channel = match close.decision.status {
                Status::Expired => "expiry",
                _ => "agent",
            };
            report_decided(&decided, close.decision.status, channel);
            self.wake(id);
            self.tell_decided(decided);
        }
        Ok(close.closed)
    }

    /// Expires every overdue approval (run periodically; waiting calls also expire their own).
    pub async fn expire_due(&self) -> Result<usize, BrokerError> {
        let due = table::overdue(&self.db, now_ms()).await?;
        for approval in &due {
            self.expire(approval.id).await?;
        }
        Ok(due.len())
    }

    /// Withdraws a pending approval.
    pub async fn cancel(&self, id: Uuid, by: &str, reason: &str) -> Result<bool, BrokerError> {
        let decision = Decision {
            status: Status::Cancelled,
            by: Some(by.to_owned()),
            reason: Some(reason.to_owned()),
            break_glass: false,
            at: now_ms(),
        };
        self.close(id, decision).await
    }

    /// Uses approval `approval`'s grant for `call` and records `forwarded`, in one commit;
    /// only if the verified log holds an approved decision for exactly this call, by enough
    /// distinct eligible approvers, with the grant unused and unexpired.
    pub async fn forward(
        &self,
        approval: &Approval,
        call: &ToolCall,
        args_sha256: &str,
        forwarded: CallForwarded,
    ) -> Result<GrantUse, BrokerError> {
        let binding = Binding {
            agent: call.agent.id.to_string(),
            server: call.upstream.to_string(),
            tool: call.tool.clone(),
            args_sha256: args_sha256.to_owned(),
            policy_version: approval.policy_version.clone(),
        };
        let forward = Forward {
            ledger: self.ledger.clone(),
            id: approval.id,
            call_id: call.id,
            binding,
            forwarded,
            row_status: approval.status,
            now: now_ms(),
            refused: None,
        };
        let (forward, _) = self.audit.transact(forward).await?;
        Ok(match forward.refused {
            None => GrantUse::Forwarded,
            Some(why) => GrantUse::Refused(why),
        })
    }

    /// Records a second approver's review of a break-glass approval (`approval.reviewed`).
    pub async fn review(
        &self,
        id: Uuid,
        reviewer: &str,
        note: &str,
        authenticated: Value,
    ) -> Result<Result<(), ReviewRefusal>, BrokerError> {
        let review = Review {
            ledger: self.ledger.clone(),
            id,
            reviewer: reviewer.to_owned(),
            note: note.to_owned(),
            authenticated,
            refused: None,
        };
        let (review, _) = self.audit.transact(review).await?;
        Ok(match review.refused {
            None => Ok(()),
            Some(why) => Err(why),
        })
    }
}

/// One INFO line per request, with how to answer it.
fn report_requested(a: &Approval) {
    tracing::info!(
        approval = %a.id,
        agent = %a.agent,
        server = %a.server,
        tool = %a.tool,
        rule = %a.rule,
        quorum = a.spec.quorum,
        answer = %format!(
            "countersign approvals approve|deny {} (or POST /approvals/{}/approve|deny)",
            a.id, a.id
        ),
        "approval requested"
    );
}

/// One INFO line per decision, in the process that took it.
/// Logs a decision this gateway made and counts it in the metrics.
pub(super) fn report_decided(approval: &Approval, status: Status, channel: &str) {
    let waited = approval.decided_at.unwrap_or_else(now_ms) - approval.created_at;
    crate::telemetry::approval_decided(&crate::telemetry::Decided {
        outcome: status.as_str(),
        channel,
        rule: &approval.rule,
        server: &approval.server,
        tool: &approval.tool,
        agent: &approval.agent,
        waited: std::time::Duration::from_millis(waited.max(0) as u64),
    });
    tracing::info!(
        channel,
        approval = %approval.id,
        outcome = status.as_str(),
        by = approval.decided_by.as_deref().unwrap_or("countersign"),
        break_glass = approval.break_glass,
        reason = approval.reason.as_deref().unwrap_or(""),
        "approval decided"
    );
}
