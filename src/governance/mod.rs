//! PolicyGate: what makes Countersign decide every call. [`PolicyGate`] implements the
//! gateway's [`CallGate`] with the policy, then (when the policy asks) human approval, with
//! every step written to the audit log before the call may run.
//!
//! * `mod.rs`: the gate's entry points (check, resume, withdrawn, finished, drain);
//! * `decide.rs`: the decision on one call, and the wait for its approval;
//! * `record.rs`: the audit events of a call.
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

mod decide;
mod record;

use crate::approval::{self, Approval, Broker};
use crate::audit::AuditLog;
use crate::chat::CallSummary;
use crate::gateway::{CallGate, CallOutcome, Clearance, Progress, ToolCall};
use crate::policy::{self, Annotations, Policies};
use futures::future::BoxFuture;
use record::{completion_event, facts};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Policy, approvals and audit behind the gateway's [`CallGate`].
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
    fn check<'a>(&'a self, call: &'a ToolCall, progress: &'a Progress) -> BoxFuture<'a, Clearance> {
        Box::pin(async move {
            // A card lists the tool's required arguments first.
            crate::chat::tools::learn(&call.upstream, &call.tool, &call.definition);
            match self.decide(call, progress).await {
                Ok(verdict) => verdict,
                Err(why) => {
                    tracing::error!(call = %call.id, error = %why, "refusing a call: cannot record it");
                    Clearance::Refuse(format!(
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
    ) -> BoxFuture<'a, Clearance> {
        Box::pin(async move {
            crate::chat::tools::learn(&call.upstream, &call.tool, &call.definition);
            let args_sha256 = approval::arguments_digest(&call.arguments);
            let resumed = async {
                let decided = self.hold(call, approval, progress).await?;
                match decided {
                    Some(decided) => self.after_approval(call, &args_sha256, decided).await,
                    None => Ok(Clearance::Refuse(format!(
                        "Approval {approval} is still pending."
                    ))),
                }
            };
            resumed.await.unwrap_or_else(|why| {
                Clearance::Refuse(format!(
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
