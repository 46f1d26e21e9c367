//! Typed payloads of the events that carry a decision: what the approval ledger is built
//! from and what `audit verify` checks the story with. The same types write them (the broker,
//! the gate) and read them back, so a field cannot be spelt two ways.
//!
//! Every payload keeps the top-level `agent`, `server`, `tool` (and where it applies
//! `approver`, `outcome`) strings that the log indexes for its filters.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// `approval.requested`: one request for human consent to one exact call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequested {
    pub approval_id: Uuid,
    pub agent: String,
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    pub server: String,
    pub tool: String,
    /// SHA-256 of the exact arguments' canonical form: what the grant is bound to.
    pub args_sha256: String,
    pub policy_version: String,
    pub rule: String,
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default)]
    pub approver_groups: Vec<String>,
    /// Everyone who may vote, resolved from `approvers` and the groups' members when the
    /// request was made.
    #[serde(default)]
    pub eligible: Vec<String>,
    /// The approver groups that members of an identity provider's groups may stand in for,
    /// signed in to the console (the operator's mapping when the request was made). Empty:
    /// only `eligible` may vote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eligible_groups: Vec<EligibleGroup>,
    pub quorum: u32,
    #[serde(default)]
    pub allow_self_approval: bool,
    /// Who may approve alone, and how long their justification must be; none: nobody.
    #[serde(default)]
    pub break_glass: Option<BreakGlassGrant>,
    pub expires_at_ms: i64,
    #[serde(default)]
    pub classification: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    /// The arguments with redacted values replaced by their keyed digests.
    #[serde(default)]
    pub arguments: Value,
}

/// One approver group a rule named, and the identity provider's groups that stand for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EligibleGroup {
    /// The approver group the rule named (`approver_groups`).
    pub group: String,
    /// The identity provider whose groups these are.
    pub issuer: String,
    /// Its groups (as its groups claim names them) whose members may vote for this group.
    pub idp_groups: Vec<String>,
}

/// Who cast a console vote, as the identity provider's verified ID token said: the only way a
/// vote carries groups. Set by the console's OpenID Connect sign-in alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpVoter {
    pub issuer: String,
    pub subject: String,
    /// The voter's groups that made them eligible (those the request's `eligible_groups`
    /// list); empty when they voted as a configured approver only.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl IdpVoter {
    /// Whether both name the same person (the same subject at the same issuer).
    pub fn same_person(&self, other: &IdpVoter) -> bool {
        self.subject == other.subject && same_issuer(&self.issuer, &other.issuer)
    }
}

/// Issuer URLs compared without a trailing slash.
pub fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Break-glass as the rule allowed it when the request was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassGrant {
    /// The people who may use it.
    pub eligible: Vec<String>,
    /// The shortest justification accepted, in characters.
    pub min_justification: usize,
}

/// `approve` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    Approve,
    Deny,
}

/// `approval.vote`: one vote and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalVote {
    pub approval_id: Uuid,
    pub approver: String,
    pub vote: Choice,
    #[serde(default)]
    pub reason: Option<String>,
    /// The channel: `cli`, `http`, `mattermost`, …
    pub source: String,
    /// How the approver was authenticated (a token, a signed chat payload, …).
    #[serde(default)]
    pub authenticated: Value,
    /// What the channel sent, kept as proof.
    #[serde(default)]
    pub evidence: Value,
    #[serde(default)]
    pub break_glass: bool,
    #[serde(default)]
    pub justification: Option<String>,
    /// The voter as the identity provider attested it (console sign-ins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<IdpVoter>,
    /// What the vote did: `{"result": "counted" | "decided" | "not_authorized" | …}`.
    pub result: Value,
    /// When it was cast (Unix milliseconds).
    #[serde(default)]
    pub at_ms: i64,
    pub agent: String,
    pub server: String,
    pub tool: String,
}

impl ApprovalVote {
    /// Whether the vote was counted towards the decision.
    pub fn counted(&self) -> bool {
        matches!(
            self.result.get("result").and_then(Value::as_str),
            Some("counted" | "decided")
        )
    }
}

/// A vote as listed in `approval.decided`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedVote {
    pub approver: String,
    pub vote: Choice,
    #[serde(default)]
    pub reason: Option<String>,
    pub source: String,
    pub at_ms: i64,
    /// The voter as the identity provider attested it, when they signed in through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<IdpVoter>,
}

/// `approval.decided`: how the approval ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    pub approval_id: Uuid,
    /// `approved`, `denied`, `expired` or `cancelled`.
    pub outcome: String,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub break_glass: bool,
    pub agent: String,
    pub server: String,
    pub tool: String,
    /// The votes counted, in order.
    #[serde(default)]
    pub approvers: Vec<CountedVote>,
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

/// `approval.reviewed`: a second approver looked at a break-glass approval afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalReviewed {
    pub approval_id: Uuid,
    pub reviewer: String,
    pub note: String,
    #[serde(default)]
    pub authenticated: Value,
    pub agent: String,
    pub server: String,
    pub tool: String,
}

/// `audit.key`: a public key that signs heads from now on. A key introduced by another
/// (`introduced_by`, a rotation) is trusted by a verifier once a head signed by the
/// introducing key covers this event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKeyEvent {
    pub key_id: String,
    /// Raw Ed25519 public key, hex.
    pub public_key: String,
    #[serde(default)]
    pub introduced_by: Option<String>,
}

/// `audit.alert`: the gateway saw its working state disagree with the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditAlert {
    pub what: String,
    #[serde(default)]
    pub approval_id: Option<Uuid>,
    pub detail: String,
}

/// The one field of `policy.decided` the story needs.
#[derive(Debug, Clone, Deserialize)]
pub struct PolicyDecidedOutcome {
    pub outcome: String,
}
