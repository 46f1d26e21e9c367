//! The payloads of `approval.*` events: what the approval ledger is built from and what
//! `audit verify` checks the story with.

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

/// `approval.vote` with result `rejected`: a vote a chat backend refused before it reached the
/// ballot box (a forged or replayed token, a bad signature, a click on the wrong post).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRejected {
    pub approval_id: Uuid,
    /// Who the attempt claimed to come from.
    pub approver: String,
    pub source: String,
    pub evidence: Value,
    /// `{"result": "rejected", "why": …}`.
    pub result: Value,
    pub agent: String,
    pub server: String,
    pub tool: String,
}

impl VoteRejected {
    pub fn result(why: &str) -> Value {
        serde_json::json!({"result": "rejected", "why": why})
    }
}

/// `approval.seen`: someone saw an approval request (evidence of who knew).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalSeen {
    pub approval_id: Uuid,
    /// The approver id when the chat user maps to one; else the chat user as the backend names
    /// it.
    pub who: String,
    /// The backend: `mattermost`, `matrix`, …
    pub source: String,
    /// `audience`, `reaction`, `acknowledgement`, `read_receipt`, `click`, …
    pub how: String,
    pub evidence: Value,
}

/// `approval.refused`: a held call was refused before any approval opened (a pending or rate
/// limit), so there is nothing to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRefused {
    pub agent: String,
    pub server: String,
    pub tool: String,
    /// Always `refused`.
    pub outcome: String,
    /// The configuration key of the limit, e.g. `approvals.max_pending_per_agent`.
    pub limit: String,
    pub reason: String,
}
