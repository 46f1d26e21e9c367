//! How governance decides one call: the policy's verdict recorded, then for a held call the
//! approval limits, the approval for this exact call, the wait for its decision, and the use
//! of its grant. Any failure to record refuses the call.

use super::PolicyGate;
use super::record::{decision_events, facts, forwarded_event, forwarded_payload};
use crate::approval::{self, Approval, GrantUse, Status};
use crate::gateway::{Clearance, Progress, ToolCall};
use crate::policy::{self, ApprovalSpec, Decision};
use uuid::Uuid;

impl PolicyGate {
    /// Waits for the ends of calls being recorded, then has the writer commit what is queued
    /// (a deferred `call.completed` does not wait out its deferral).
    pub(super) async fn drain_finishing(&self) {
        self.finishing.close();
        self.finishing.wait().await;
        if let Err(e) = self.audit.sync().await {
            tracing::error!(error = %e, "could not record the ends of the last calls");
        }
    }
}

/// A failure to record: the call must not run. Keeps its cause.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unrecorded {
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Broker(#[from] approval::BrokerError),
}

impl PolicyGate {
    pub(super) async fn decide(
        &self,
        call: &ToolCall,
        progress: &Progress,
    ) -> Result<Clearance, Unrecorded> {
        let args_sha256 = approval::arguments_digest(&call.arguments);
        let decision = self.policies.current().evaluate(&facts(call));
        let keys = self.audit.keys();
        let mut events = decision_events(call, &args_sha256, &decision, |v| keys.seal(v));
        let allowed = matches!(decision.verdict, policy::Verdict::Allow);
        if allowed {
            // One durable write on the path of an allowed call: it goes out right away.
            events.push(forwarded_event(
                call,
                None,
                &args_sha256,
                &decision.policy_version,
            ));
        }
        self.audit.append_all(events).await?;
        tracing::info!(
            call = %call.id,
            agent = %call.agent.id,
            server = %call.upstream,
            tool = %call.tool,
            verdict = decision.verdict.kind(),
            rule = %decision.rule,
            "call decided"
        );
        match &decision.verdict {
            policy::Verdict::Allow => Ok(Clearance::Forward),
            policy::Verdict::Deny { reason } => Ok(Clearance::Refuse(format!(
                "Denied by policy (rule {}): {reason}",
                decision.rule
            ))),
            policy::Verdict::Approve(spec) => {
                self.ask_humans(call, &args_sha256, &decision, spec, progress)
                    .await
            }
        }
    }

    /// A call the policy holds for humans: within the approval limits, opens (or joins) the
    /// approval for this exact call, waits for its decision, and uses the grant.
    async fn ask_humans(
        &self,
        call: &ToolCall,
        args_sha256: &str,
        decision: &Decision,
        spec: &ApprovalSpec,
        progress: &Progress,
    ) -> Result<Clearance, Unrecorded> {
        let limits = self.broker.directory().limits();
        let _permit = match limits.admit(&call.agent.id, &call.upstream, &call.tool) {
            Ok(permit) => permit,
            Err(refused) => {
                let event = refused.event(call);
                self.audit.append(event).await?;
                tracing::warn!(call = %call.id, agent = %call.agent.id, "{refused}");
                return Ok(Clearance::Refuse(refused.to_string()));
            }
        };
        let (approval, joined) = self
            .broker
            .request(
                call,
                args_sha256,
                &decision.policy_version,
                &decision.rule,
                spec,
            )
            .await?;
        if joined {
            tracing::info!(call = %call.id, approval = %approval.id, "retry joined an approval");
        }
        progress.held(approval.id);
        let Some(decided) = self.hold(call, approval.id, progress).await? else {
            return Ok(Clearance::Refuse(format!(
                "Approval {} is still pending after {} s. Retry the same call (same arguments) to keep waiting: it joins this approval, and runs once when it is approved.",
                approval.id,
                self.max_hold.unwrap_or_default().as_secs()
            )));
        };
        self.after_approval(call, args_sha256, decided).await
    }

    /// Waits for the decision on `approval`, at most the hold limit unless the caller is
    /// patient; `None` when the limit came first.
    pub(super) async fn hold(
        &self,
        call: &ToolCall,
        approval: Uuid,
        progress: &Progress,
    ) -> Result<Option<Approval>, Unrecorded> {
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(call.id, approval);
        let wait = self.broker.wait(approval, progress);
        let waited = match self.max_hold.filter(|_| !progress.is_patient()) {
            Some(hold) => tokio::time::timeout(hold, wait).await.ok(),
            None => Some(wait.await),
        };
        self.stop_waiting(call.id);
        waited.transpose().map_err(Unrecorded::from)
    }

    pub(super) fn stop_waiting(&self, call: Uuid) -> Option<Uuid> {
        self.waiting.lock().expect("waiting lock").remove(&call)
    }

    pub(super) async fn after_approval(
        &self,
        call: &ToolCall,
        args_sha256: &str,
        approval: Approval,
    ) -> Result<Clearance, Unrecorded> {
        let id = approval.id;
        let by = approval
            .decided_by
            .clone()
            .unwrap_or_else(|| "an approver".into());
        let reason = approval
            .reason
            .clone()
            .unwrap_or_else(|| "no reason given".into());
        match approval.status {
            Status::Approved => {
                let forwarded =
                    forwarded_payload(call, Some(&approval), args_sha256, &approval.policy_version);
                let used = self
                    .broker
                    .forward(&approval, call, args_sha256, forwarded)
                    .await?;
                if let GrantUse::Refused(why) = used {
                    tracing::warn!(call = %call.id, approval = %id, why = %why, "a held call may not use its grant");
                    return Ok(Clearance::Refuse(format!(
                        "Approval {id} cannot be used for this call: {why}. The call was not run."
                    )));
                }
                self.running
                    .lock()
                    .expect("running lock")
                    .insert(call.id, approval);
                Ok(Clearance::Forward)
            }
            Status::Denied => Ok(Clearance::Refuse(format!(
                "Denied by {by}: {reason} (approval {id})"
            ))),
            Status::Expired => Ok(Clearance::Refuse(format!(
                "Approval {id} expired before enough approvers decided; the call was not run."
            ))),
            Status::Cancelled => Ok(Clearance::Refuse(format!(
                "Approval {id} was cancelled by {by}: {reason}"
            ))),
            Status::Pending => Ok(Clearance::Refuse(format!(
                "Approval {id} is still pending; the call was not run."
            ))),
        }
    }
}
