//! The audit events governance writes for a call: `call.received` and `policy.decided`, then
//! `call.forwarded` when it goes out, and how it ended.

use crate::approval::Approval;
use crate::audit::NewEvent;
use crate::audit::events::{
    AuditEvent, CallEnded, CallForwarded, CallReceived, PolicyDecided, PolicyOutcome,
};
use crate::gateway::{CallOutcome, ToolCall};
use crate::policy::{self, Annotations, CallFacts, Decision};
use serde_json::{Value, json};

/// What the policy decides on.
pub(super) fn facts(call: &ToolCall) -> CallFacts<'_> {
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
pub(super) fn decision_events(
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
pub(super) fn forwarded_payload(
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

pub(super) fn forwarded_event(
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

pub(super) fn completion_event(call: &ToolCall, outcome: &CallOutcome<'_>) -> NewEvent {
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
