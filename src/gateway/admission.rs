//! What reaches an upstream besides `tools/call`, and what is recorded of it:
//!
//! * a notification (no `id`) carrying a request method, such as `tools/call`, is dropped: it
//!   would reach every upstream with no policy and no answer. It is logged and recorded as a
//!   denied call;
//! * a request method outside MCP is refused (`-32601`) unless an upstream lists it in
//!   `upstreams[].pass_methods`; it then goes to the first such upstream and is recorded;
//! * `resources/read` and `prompts/get` are recorded before they go out (fail closed: a
//!   request that cannot be recorded is not sent).

use super::{Caller, Gateway};
use crate::audit::events::{AuditEvent, CallReceived, PolicyDecided, PolicyOutcome};
use crate::audit::{AuditError, AuditLog, NewEvent};
use crate::jsonrpc;
use serde_json::{Value, json};
use uuid::Uuid;

/// Client requests the gateway routes to an upstream without owning them (listings and
/// `tools/call` take their own paths).
const ROUTED: &[&str] = &[
    "prompts/get",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    // 2026-07-28; not served by the gateway itself, so it goes to the first upstream.
    "subscriptions/listen",
    // Owned by the gateway when it has a database; otherwise they go to the first upstream.
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "tasks/update",
];

/// Routed requests that are recorded before they go out.
const RECORDED: &[&str] = &["prompts/get", "resources/read"];

/// Where a request goes, as far as admission is concerned.
pub(super) enum Admission {
    /// An MCP method: routed by what it names.
    Mcp,
    /// A method outside MCP that this upstream takes (`pass_methods`).
    Passed(usize),
    /// A method outside MCP that no upstream takes.
    Refused,
}

impl Gateway {
    /// Records what passes without a policy in `audit` from now on.
    pub fn record_with(&self, audit: AuditLog) {
        let _ = self.audit.set(audit);
    }

    pub(super) fn admit_method(&self, method: &str) -> Admission {
        if ROUTED.contains(&method) {
            return Admission::Mcp;
        }
        match self
            .upstreams
            .iter()
            .position(|u| u.pass_methods.iter().any(|m| m == method))
        {
            Some(upstream) => Admission::Passed(upstream),
            None => Admission::Refused,
        }
    }

    /// Whether a forwarded request of `method` must be recorded first.
    pub(super) fn is_recorded(method: &str, admission: &Admission) -> bool {
        RECORDED.contains(&method) || matches!(admission, Admission::Passed(_))
    }

    /// A notification that carries a request method (`tools/call` without an `id`, say) is
    /// not forwarded; returns whether `message` was such a notification.
    pub(super) async fn drop_request_notification(&self, caller: &Caller, message: &Value) -> bool {
        let method = jsonrpc::method(message).unwrap_or_default();
        if method.starts_with("notifications/") {
            return false;
        }
        tracing::warn!(agent = %caller.agent.id, method, "dropped a notification carrying a request method (no id): it reaches no upstream");
        let Some(audit) = self.audit.get() else {
            return true;
        };
        let call_id = Uuid::now_v7();
        let params = jsonrpc::params(message).cloned().map(Value::Object);
        let tool = (method == "tools/call")
            .then(|| jsonrpc::param_str(message, "name"))
            .flatten();
        let reason = format!(
            "a notification (no id) carrying the request method {method} is never forwarded"
        );
        let agent = caller.agent.id.to_string();
        let received = CallReceived {
            agent: agent.clone(),
            on_behalf_of: caller.agent.on_behalf_of.as_deref().map(str::to_owned),
            groups: None,
            server: None,
            tool: tool.map(str::to_owned),
            arguments: None,
            args_sha256: None,
            method: Some(method.to_owned()),
            params,
            notification: true,
        };
        let decided = PolicyDecided {
            agent: agent.clone(),
            server: None,
            tool: tool.map(str::to_owned),
            method: Some(method.to_owned()),
            outcome: PolicyOutcome::Deny,
            detail: json!({"reason": reason}),
            rule: "countersign:request-as-notification".into(),
            policy_version: None,
            explanation: None,
        };
        let events = vec![
            NewEvent::new(Some(call_id), agent, AuditEvent::CallReceived(received)),
            NewEvent::new(
                Some(call_id),
                "countersign",
                AuditEvent::PolicyDecided(decided),
            ),
        ];
        if let Err(e) = audit.append_all(events).await {
            tracing::error!(error = %e, method, "could not record a dropped notification");
        }
        true
    }

    /// Records a request that goes to `upstream` without a policy (`call.received` with the
    /// method and its params). `Err` says why it could not be recorded: it must not be sent.
    pub(super) async fn record_request(
        &self,
        caller: &Caller,
        upstream: usize,
        message: &Value,
    ) -> Result<(), AuditError> {
        let Some(audit) = self.audit.get() else {
            return Ok(());
        };
        let method = jsonrpc::method(message).unwrap_or_default();
        let received = CallReceived {
            agent: caller.agent.id.to_string(),
            on_behalf_of: caller.agent.on_behalf_of.as_deref().map(str::to_owned),
            groups: None,
            server: Some(self.upstreams[upstream].name.to_string()),
            tool: None,
            arguments: None,
            args_sha256: None,
            method: Some(method.to_owned()),
            params: Some(
                jsonrpc::params(message)
                    .cloned()
                    .map_or(Value::Null, Value::Object),
            ),
            notification: false,
        };
        let event = NewEvent::new(
            Some(Uuid::now_v7()),
            caller.agent.id.to_string(),
            AuditEvent::CallReceived(received),
        );
        audit.append(event).await.map(drop)
    }
}
