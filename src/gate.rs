//! The gate that makes Countersign decide every call: policy, then (when the policy asks)
//! human approval, with every step written to the audit log before the call may run.
//!
//! Order, and why:
//! 1. `call.received` and `policy.decided` are appended together (with `call.forwarded` when
//!    the policy allows: one durable write); if the audit log cannot be written, the call is
//!    refused (fail closed).
//! 2. `deny` refuses with the policy's reason; `allow` goes to step 4.
//! 3. `approve` opens an approval (or joins the pending one for the same exact call), waits for
//!    its decision, and uses the grant once.
//! 4. `call.forwarded` is appended before the call goes out; `finished` appends
//!    `call.completed` or `call.failed` with a digest of the result.

use crate::approval::{self, Approval, Broker, GrantUse, Status};
use crate::audit::events::{
    AuditEvent, CallEnded, CallForwarded, CallReceived, PolicyDecided, PolicyOutcome,
};
use crate::audit::{AuditLog, NewEvent};
use crate::chat::CallSummary;
use crate::gateway::{CallGate, CallOutcome, Progress, ToolCall, Verdict};
use crate::policy::{self, Annotations, CallFacts, Decision, Policies};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub struct PolicyGate {
    pub policies: Policies,
    pub audit: AuditLog,
    pub broker: Arc<Broker>,
    /// Longest a call waits for its approval before the agent is told to retry (and join it).
    pub max_hold: Option<std::time::Duration>,
    /// Approved calls now running, by call id: their cards get a reply when they end.
    running: Mutex<HashMap<Uuid, Approval>>,
    /// Calls waiting for a human, by call id: the approval each waits on.
    waiting: Mutex<HashMap<Uuid, Uuid>>,
    /// Cancelled when the gateway stops: the calls it drops then were not withdrawn by agents.
    shutdown: CancellationToken,
    /// The `finished` calls under way, which a shutdown waits for.
    finishing: TaskTracker,
}

impl PolicyGate {
    pub fn new(
        policies: Policies,
        audit: AuditLog,
        broker: Arc<Broker>,
        max_hold: Option<std::time::Duration>,
        shutdown: CancellationToken,
    ) -> Self {
        PolicyGate {
            shutdown,
            policies,
            audit,
            broker,
            max_hold,
            running: Mutex::default(),
            waiting: Mutex::default(),
            finishing: TaskTracker::new(),
        }
    }
}

impl CallGate for PolicyGate {
    fn check<'a>(&'a self, call: &'a ToolCall, progress: &'a Progress) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            // A card lists the tool's required arguments first.
            crate::chat::tools::learn(&call.upstream, &call.tool, &call.definition);
            match self.decide(call, progress).await {
                Ok(verdict) => verdict,
                Err(why) => {
                    tracing::error!(call = %call.id, error = %why, "refusing a call: cannot record it");
                    Verdict::Refuse(format!(
                        "Countersign could not record this call ({why}); it was not run."
                    ))
                }
            }
        })
    }

    fn hides(
        &self,
        agent: &crate::auth::Agent,
        upstream: &str,
        tool: &str,
        definition: &Value,
    ) -> bool {
        let annotations = Annotations::from_tool(definition);
        self.policies
            .current()
            .always_denies(agent, upstream, tool, annotations)
            .is_some()
    }

    fn needs_human(&self, call: &ToolCall) -> bool {
        matches!(
            self.policies.current().evaluate(&facts(call)).verdict,
            policy::Verdict::Approve(_)
        )
    }

    fn resume<'a>(
        &'a self,
        call: &'a ToolCall,
        approval: Uuid,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            crate::chat::tools::learn(&call.upstream, &call.tool, &call.definition);
            let args_sha256 = approval::arguments_digest(&call.arguments);
            let resumed = async {
                let decided = self.hold(call, approval, progress).await?;
                match decided {
                    Some(decided) => self.after_approval(call, &args_sha256, decided).await,
                    None => Ok(Verdict::Refuse(format!(
                        "Approval {approval} is still pending."
                    ))),
                }
            };
            resumed.await.unwrap_or_else(|why| {
                Verdict::Refuse(format!(
                    "Countersign could not record this call ({why}); it was not run."
                ))
            })
        })
    }

    /// A client that cancels its waiting call withdraws the approval request, unless another
    /// call (a retry that joined it) still waits on it here.
    fn withdrawn<'a>(&'a self, call: &'a ToolCall) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(approval) = self.stop_waiting(call.id) else {
                return;
            };
            if self.shutdown.is_cancelled() {
                // The gateway is going down, not the agent: the approval stays pending for a
                // retry (or a task) to pick up after the restart.
                return;
            }
            let others = self
                .waiting
                .lock()
                .expect("waiting lock")
                .values()
                .any(|a| *a == approval);
            if others {
                return;
            }
            let reason = "the agent cancelled the call";
            if let Err(e) = self
                .broker
                .cancel(approval, call.agent.id.as_ref(), reason)
                .await
            {
                tracing::error!(call = %call.id, %approval, error = %e, "could not withdraw an approval request");
            }
        })
    }

    fn finished<'a>(&'a self, call: &'a ToolCall, outcome: CallOutcome<'a>) -> BoxFuture<'a, ()> {
        // Counted from now, so a shutdown's drain cannot miss a call that is just ending.
        let finishing = self.finishing.token();
        Box::pin(async move {
            let _finishing = finishing;
            let event = completion_event(call, &outcome);
            // The answer has left: nothing waits on this record, so it shares the next commit.
            if let Err(e) = self.audit.append_deferred(event).await {
                tracing::error!(call = %call.id, error = %e, "could not record how a call ended");
            }
            let approved = self.running.lock().expect("running lock").remove(&call.id);
            if let Some(approval) = approved {
                let summary = CallSummary {
                    outcome: outcome.outcome.to_string(),
                    tool_time: outcome.tool_time,
                    total_time: outcome.total_time,
                    response: outcome.response.cloned(),
                };
                self.broker.call_finished(approval, summary);
            }
        })
    }

    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.drain_finishing())
    }
}

impl PolicyGate {
    /// Waits for the ends of calls being recorded, then has the writer commit what is queued
    /// (a deferred `call.completed` does not wait out its deferral).
    async fn drain_finishing(&self) {
        self.finishing.close();
        self.finishing.wait().await;
        if let Err(e) = self.audit.sync().await {
            tracing::error!(error = %e, "could not record the ends of the last calls");
        }
    }
}

/// A failure to record: the call must not run. Keeps its cause.
#[derive(Debug, thiserror::Error)]
enum Unrecorded {
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Broker(#[from] approval::BrokerError),
}

impl PolicyGate {
    async fn decide(&self, call: &ToolCall, progress: &Progress) -> Result<Verdict, Unrecorded> {
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
            policy::Verdict::Allow => Ok(Verdict::Forward),
            policy::Verdict::Deny { reason } => Ok(Verdict::Refuse(format!(
                "Denied by policy (rule {}): {reason}",
                decision.rule
            ))),
            policy::Verdict::Approve(spec) => {
                let limits = self.broker.directory().limits();
                let _permit = match limits.admit(&call.agent.id, &call.upstream, &call.tool) {
                    Ok(permit) => permit,
                    Err(refused) => {
                        let event = refused.event(call);
                        self.audit.append(event).await?;
                        tracing::warn!(call = %call.id, agent = %call.agent.id, "{refused}");
                        return Ok(Verdict::Refuse(refused.to_string()));
                    }
                };
                let (approval, joined) = self
                    .broker
                    .request(
                        call,
                        &args_sha256,
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
                    return Ok(Verdict::Refuse(format!(
                        "Approval {} is still pending after {} s. Retry the same call (same arguments) to keep waiting: it joins this approval, and runs once when it is approved.",
                        approval.id,
                        self.max_hold.unwrap_or_default().as_secs()
                    )));
                };
                self.after_approval(call, &args_sha256, decided).await
            }
        }
    }

    /// Waits for the decision on `approval`, at most the hold limit unless the caller is
    /// patient; `None` when the limit came first.
    async fn hold(
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

    fn stop_waiting(&self, call: Uuid) -> Option<Uuid> {
        self.waiting.lock().expect("waiting lock").remove(&call)
    }

    async fn after_approval(
        &self,
        call: &ToolCall,
        args_sha256: &str,
        approval: Approval,
    ) -> Result<Verdict, Unrecorded> {
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
                    return Ok(Verdict::Refuse(format!(
                        "Approval {id} cannot be used for this call: {why}. The call was not run."
                    )));
                }
                self.running
                    .lock()
                    .expect("running lock")
                    .insert(call.id, approval);
                Ok(Verdict::Forward)
            }
            Status::Denied => Ok(Verdict::Refuse(format!(
                "Denied by {by}: {reason} (approval {id})"
            ))),
            Status::Expired => Ok(Verdict::Refuse(format!(
                "Approval {id} expired before enough approvers decided; the call was not run."
            ))),
            Status::Cancelled => Ok(Verdict::Refuse(format!(
                "Approval {id} was cancelled by {by}: {reason}"
            ))),
            Status::Pending => Ok(Verdict::Refuse(format!(
                "Approval {id} is still pending; the call was not run."
            ))),
        }
    }
}

/// What the policy decides on.
fn facts(call: &ToolCall) -> CallFacts<'_> {
    CallFacts {
        agent: &call.agent,
        server: &call.upstream,
        tool: &call.tool,
        annotations: Annotations::from_tool(&call.definition),
        arguments: &call.arguments,
    }
}

/// `call.received` and `policy.decided`, written together. Arguments a rule redacts are
/// recorded as keyed digests (`seal`), never in clear.
fn decision_events(
    call: &ToolCall,
    args_sha256: &str,
    decision: &Decision,
    seal: impl Fn(&Value) -> String,
) -> Vec<NewEvent> {
    let arguments = match &decision.verdict {
        policy::Verdict::Approve(spec) => spec.redact_arguments(&call.arguments, seal),
        _ => call.arguments.clone(),
    };
    let received = CallReceived {
        agent: call.agent.id.to_string(),
        on_behalf_of: call.agent.on_behalf_of.as_deref().map(str::to_owned),
        groups: Some(call.agent.groups.to_vec()),
        server: Some(call.upstream.to_string()),
        tool: Some(call.tool.clone()),
        arguments: Some(arguments),
        args_sha256: Some(args_sha256.to_owned()),
        method: None,
        params: None,
        notification: false,
    };
    let (outcome, detail) = match &decision.verdict {
        policy::Verdict::Allow => (PolicyOutcome::Allow, Value::Null),
        policy::Verdict::Deny { reason } => (PolicyOutcome::Deny, json!({"reason": reason})),
        policy::Verdict::Approve(spec) => (
            PolicyOutcome::Approve,
            json!({"quorum": spec.quorum, "timeout_ms": spec.timeout.as_millis() as u64}),
        ),
    };
    let decided = PolicyDecided {
        agent: call.agent.id.to_string(),
        server: Some(call.upstream.to_string()),
        tool: Some(call.tool.clone()),
        method: None,
        outcome,
        detail,
        rule: decision.rule.clone(),
        policy_version: Some(decision.policy_version.clone()),
        explanation: Some(decision.explanation.clone()),
    };
    let actor = call.agent.id.to_string();
    vec![
        NewEvent::new(Some(call.id), actor, AuditEvent::CallReceived(received)),
        NewEvent::new(
            Some(call.id),
            "countersign",
            AuditEvent::PolicyDecided(decided),
        ),
    ]
}

/// `call.forwarded`: the upstream, the credentials the call runs with, and what it is bound
/// to (the grant, the argument digest, the policy version).
fn forwarded_payload(
    call: &ToolCall,
    approval: Option<&Approval>,
    args_sha256: &str,
    policy_version: &str,
) -> CallForwarded {
    CallForwarded {
        agent: call.agent.id.to_string(),
        server: call.upstream.to_string(),
        tool: call.tool.clone(),
        executor: format!(
            "countersign's configured credentials for upstream {}",
            call.upstream
        ),
        approval_id: approval.map(|a| a.id),
        args_sha256: Some(args_sha256.to_owned()),
        policy_version: Some(policy_version.to_owned()),
    }
}

fn forwarded_event(
    call: &ToolCall,
    approval: Option<&Approval>,
    args_sha256: &str,
    policy_version: &str,
) -> NewEvent {
    let forwarded = forwarded_payload(call, approval, args_sha256, policy_version);
    NewEvent::new(
        Some(call.id),
        "countersign",
        AuditEvent::CallForwarded(forwarded),
    )
}

fn completion_event(call: &ToolCall, outcome: &CallOutcome<'_>) -> NewEvent {
    let failed = !outcome.outcome.tool_answered();
    let ended = CallEnded {
        agent: call.agent.id.to_string(),
        server: call.upstream.to_string(),
        tool: call.tool.clone(),
        outcome: outcome.outcome.to_string(),
        result_sha256: outcome.response.map(crate::canonical::sha256_hex),
        tool_ms: outcome.tool_time.as_millis() as u64,
        total_ms: outcome.total_time.as_millis() as u64,
        error: outcome.response.and_then(|r| r.get("error")).cloned(),
    };
    let event = if failed {
        AuditEvent::CallFailed(ended)
    } else {
        AuditEvent::CallCompleted(ended)
    };
    NewEvent::new(Some(call.id), call.upstream.to_string(), event)
}
