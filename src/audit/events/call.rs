//! The payloads of `call.*` and `policy.decided` events: what an agent asked, what the policy
//! said, and how a call went out and ended.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// `call.received`: what the agent sent, as it arrived. A `tools/call` carries its (redacted)
/// arguments and their digest; any other recorded request carries its method and params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallReceived {
    pub agent: String,
    pub on_behalf_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The arguments, with values the rule redacts replaced by their keyed digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// SHA-256 of the exact arguments' canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
    /// A method other than `tools/call` (a read, a request sent as a notification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// Sent as a notification (no id): it is never forwarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notification: bool,
}

/// What the policy decided, as the log spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOutcome {
    Allow,
    Deny,
    Approve,
}

/// `policy.decided`: the policy's verdict on a call, naming the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDecided {
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub outcome: PolicyOutcome,
    /// `{"reason"}` for a deny, `{"quorum", "timeout_ms"}` for an approve.
    pub detail: Value,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// `call.ambiguous`: a forwarded call whose end was never recorded (its gateway stopped): it
/// may or may not have run, and it is never run again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallAmbiguous {
    pub agent: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    /// When the call was forwarded (found by the scan for unfinished calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_at: Option<String>,
    /// The task that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<Uuid>,
    pub reason: String,
}

/// `call.forwarded`: the call goes upstream, with what it runs as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallForwarded {
    pub agent: String,
    pub server: String,
    pub tool: String,
    pub executor: String,
    /// The grant it uses, for a held call.
    #[serde(default)]
    pub approval_id: Option<Uuid>,
    #[serde(default)]
    pub args_sha256: Option<String>,
    #[serde(default)]
    pub policy_version: Option<String>,
}

/// `call.completed` (an answer came back) or `call.failed` (none did): how a forwarded call
/// ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEnded {
    pub agent: String,
    pub server: String,
    pub tool: String,
    /// `ok`, `tool_error`, `error`, `cancelled`, `upstream_unavailable`, …
    pub outcome: String,
    /// SHA-256 of the canonical response, when one came back.
    pub result_sha256: Option<String>,
    /// The tool's own time: from sending the call upstream to its answer.
    pub tool_ms: u64,
    /// From the call's arrival to its answer, including any wait for a human.
    pub total_ms: u64,
    /// The upstream's JSON-RPC error, if it answered with one.
    pub error: Option<Value>,
}

/// The one field of `policy.decided` the story needs.
#[derive(Debug, Clone, Deserialize)]
pub struct PolicyDecidedOutcome {
    pub outcome: String,
}
