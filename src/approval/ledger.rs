//! The approval ledger: the state of every open approval, derived only from audit events the
//! writer committed or verified (never from the `approvals` table, which anyone who can write
//! the database can change). The gate asks it, inside the writer's transaction, whether a
//! call may use a grant.

use super::{Status, VoteSource};
use crate::audit::events::{
    ApprovalDecided, ApprovalRequested, ApprovalReviewed, ApprovalVote, CallForwarded, Choice,
    CountedVote, IdpVoter, same_issuer,
};
use crate::audit::{EventKind, Observer, Recorded};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// The exact call a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    pub agent: String,
    pub server: String,
    pub tool: String,
    pub args_sha256: String,
    pub policy_version: String,
}

impl Binding {
    fn of(requested: &ApprovalRequested) -> Binding {
        Binding {
            agent: requested.agent.clone(),
            server: requested.server.clone(),
            tool: requested.tool.clone(),
            args_sha256: requested.args_sha256.clone(),
            policy_version: requested.policy_version.clone(),
        }
    }
}

/// One approval as the log tells it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub requested: ApprovalRequested,
    pub call_id: Uuid,
    /// Counted votes, in order.
    pub votes: Vec<CountedVote>,
    /// The break-glass justifications given, by approver.
    pub justifications: HashMap<String, String>,
    pub status: Status,
    pub decided_by: Option<String>,
    pub break_glass: bool,
    pub consumed_by: Option<Uuid>,
    pub reviewed: bool,
}

impl Entry {
    pub fn id(&self) -> Uuid {
        self.requested.approval_id
    }

    /// The identity provider's groups through which `idp` stands in for an approver group the
    /// request recorded in `eligible_groups`: none unless the vote came from the console.
    pub fn standing_groups(
        &self,
        idp: Option<&IdpVoter>,
        source: Option<VoteSource>,
    ) -> Vec<String> {
        let Some(idp) = idp.filter(|_| source.is_some_and(VoteSource::attests_idp)) else {
            return Vec::new();
        };
        let groups = &self.requested.eligible_groups;
        idp.groups
            .iter()
            .filter(|g| {
                groups
                    .iter()
                    .any(|e| same_issuer(&e.issuer, &idp.issuer) && e.idp_groups.contains(g))
            })
            .cloned()
            .collect()
    }

    /// Whether `who` may vote at all: eligible when requested (by id, or through an identity
    /// provider's group the request recorded), never the agent, and never its own human
    /// unless the rule allows it.
    pub fn may_vote(&self, who: &str, idp: Option<&IdpVoter>, source: Option<VoteSource>) -> bool {
        let r = &self.requested;
        let eligible =
            r.eligible.iter().any(|e| e == who) || !self.standing_groups(idp, source).is_empty();
        eligible
            && who != r.agent
            && (r.allow_self_approval || r.on_behalf_of.as_deref() != Some(who))
    }

    /// Whether this person's vote is already counted: the same voter id, or the same subject at
    /// the same identity provider.
    pub fn has_voted(&self, who: &str, idp: Option<&IdpVoter>) -> bool {
        self.votes
            .iter()
            .any(|v| same_person((&v.approver, v.idp.as_ref()), (who, idp)))
    }

    /// Distinct eligible people who approved.
    pub fn approvals(&self) -> usize {
        let approving: Vec<&CountedVote> = self
            .votes
            .iter()
            .filter(|v| {
                v.vote == Choice::Approve
                    && self.may_vote(&v.approver, v.idp.as_ref(), VoteSource::parse(&v.source))
            })
            .collect();
        distinct_people(&approving)
    }

    /// Why the approved decision is not backed by the votes, if it is not.
    fn unbacked(&self) -> Option<Unbacked> {
        let r = &self.requested;
        if self.break_glass {
            let by = self.decided_by.as_deref().unwrap_or_default();
            let Some(grant) = &r.break_glass else {
                return Some(Unbacked::BreakGlassNotAllowed);
            };
            let justification = self
                .justifications
                .get(by)
                .map_or(0, |j| j.trim().chars().count());
            if !grant.eligible.iter().any(|p| p == by) || !self.may_vote(by, None, None) {
                return Some(Unbacked::BreakGlassNotEligible(by.to_owned()));
            }
            if justification < grant.min_justification {
                return Some(Unbacked::JustificationTooShort);
            }
            return None;
        }
        let quorum = r.quorum.max(1) as usize;
        let have = self.approvals();
        (have < quorum).then_some(Unbacked::Quorum { have, quorum })
    }
}

/// Why an approved decision is not backed by the votes the log records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbacked {
    #[error("break-glass was used but the rule does not allow it")]
    BreakGlassNotAllowed,
    #[error("{0} may not use break-glass on this rule")]
    BreakGlassNotEligible(String),
    #[error("the break-glass justification is too short")]
    JustificationTooShort,
    #[error("{have} distinct eligible approvals are recorded where the rule needs {quorum}")]
    Quorum { have: usize, quorum: usize },
}

/// Why a held call may not use approval `id`'s grant (the agent reads it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefusal {
    #[error("the audit log holds no open approval {0}")]
    NotOpen(Uuid),
    #[error("the audit log records approval {id} as {}, not approved", .status.as_str())]
    NotApproved { id: Uuid, status: Status },
    #[error("approval {0} was given for another call")]
    OtherCall(Uuid),
    #[error("approval {id} was already used by call {by}")]
    Used { id: Uuid, by: Uuid },
    #[error("approval {0} expired before it was used")]
    Expired(Uuid),
    #[error("approval {id} is not backed by the log: {why}")]
    Unbacked { id: Uuid, why: Unbacked },
}

/// Whether two votes are one person's: the same voter id, or the same subject at the same
/// identity provider.
fn same_person(a: (&str, Option<&IdpVoter>), b: (&str, Option<&IdpVoter>)) -> bool {
    a.0 == b.0 || matches!((a.1, b.1), (Some(x), Some(y)) if x.same_person(y))
}

/// How many people cast `votes`: votes linked by [`same_person`], directly or through
/// others, are one person's.
fn distinct_people(votes: &[&CountedVote]) -> usize {
    let mut person: Vec<usize> = (0..votes.len()).collect();
    fn root(person: &mut [usize], mut i: usize) -> usize {
        while person[i] != i {
            i = person[i];
        }
        i
    }
    for i in 0..votes.len() {
        for j in 0..i {
            let (a, b) = (votes[i], votes[j]);
            if same_person((&a.approver, a.idp.as_ref()), (&b.approver, b.idp.as_ref())) {
                let (ri, rj) = (root(&mut person, i), root(&mut person, j));
                person[ri] = rj;
            }
        }
    }
    (0..votes.len())
        .filter(|&i| root(&mut person, i) == i)
        .count()
}

/// Every open approval, and the exact-call index retries join by.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<Uuid, Entry>,
    by_binding: HashMap<Binding, Uuid>,
    /// How many entries are still pending.
    pending: usize,
}

impl Ledger {
    pub fn get(&self, id: Uuid) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// How many approvals wait for a decision.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Whether no approval is held (open, or decided and still to be used or reviewed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The approval a call with this binding joins: pending, or approved and unused, and not
    /// expired.
    pub fn joinable(&self, binding: &Binding, now_ms: i64) -> Option<&Entry> {
        let entry = self.entries.get(self.by_binding.get(binding)?)?;
        let open = entry.status == Status::Pending
            || (entry.status == Status::Approved && entry.consumed_by.is_none());
        (open && entry.requested.expires_at_ms > now_ms).then_some(entry)
    }

    /// The check before a held call goes upstream: approval `id` was decided `approved` for
    /// exactly this call, by enough distinct eligible approvers (or a valid break-glass), its
    /// grant is unused, and it has not expired.
    pub fn grant(&self, id: Uuid, binding: &Binding, now_ms: i64) -> Result<&Entry, GrantRefusal> {
        let entry = self.entries.get(&id).ok_or(GrantRefusal::NotOpen(id))?;
        if entry.status != Status::Approved {
            let status = entry.status;
            return Err(GrantRefusal::NotApproved { id, status });
        }
        if Binding::of(&entry.requested) != *binding {
            return Err(GrantRefusal::OtherCall(id));
        }
        if let Some(by) = entry.consumed_by {
            return Err(GrantRefusal::Used { id, by });
        }
        if entry.requested.expires_at_ms <= now_ms {
            return Err(GrantRefusal::Expired(id));
        }
        match entry.unbacked() {
            Some(why) => Err(GrantRefusal::Unbacked { id, why }),
            None => Ok(entry),
        }
    }

    /// Applies one verified event. Returns the approval it decided, if it did. An event whose
    /// payload does not parse, or that names no approval held, changes nothing.
    pub fn apply(&mut self, event: &Recorded<'_>) -> Option<Uuid> {
        let payload = event.payload;
        match event.kind {
            EventKind::ApprovalRequested => {
                self.requested(serde_json::from_str(payload).ok()?, event.call_id);
                None
            }
            EventKind::ApprovalVote => self.voted(serde_json::from_str(payload).ok()?),
            EventKind::ApprovalDecided => self.decided(serde_json::from_str(payload).ok()?),
            EventKind::CallForwarded => {
                self.forwarded(serde_json::from_str(payload).ok()?, event.call_id)
            }
            EventKind::ApprovalReviewed => self.reviewed(serde_json::from_str(payload).ok()?),
            _ => None,
        }
    }

    /// `approval.requested`: a new pending entry (a replayed request replaces its entry).
    fn requested(&mut self, requested: ApprovalRequested, call_id: Option<Uuid>) {
        let id = requested.approval_id;
        self.by_binding.insert(Binding::of(&requested), id);
        let entry = Entry {
            call_id: call_id.unwrap_or(id),
            requested,
            votes: Vec::new(),
            justifications: HashMap::new(),
            status: Status::Pending,
            decided_by: None,
            break_glass: false,
            consumed_by: None,
            reviewed: false,
        };
        let replaced = self.entries.insert(id, entry);
        if replaced.is_none_or(|old| old.status != Status::Pending) {
            self.pending += 1;
        }
    }

    /// `approval.vote`: a counted vote on a pending approval joins its votes.
    fn voted(&mut self, vote: ApprovalVote) -> Option<Uuid> {
        if !vote.counted() {
            return None;
        }
        let entry = self.entries.get_mut(&vote.approval_id)?;
        if entry.status != Status::Pending {
            return None;
        }
        if let Some(j) = vote.justification.filter(|_| vote.break_glass) {
            entry.justifications.insert(vote.approver.clone(), j);
        }
        entry.votes.push(CountedVote {
            approver: vote.approver,
            vote: vote.vote,
            reason: vote.reason,
            source: vote.source,
            at_ms: vote.at_ms,
            idp: vote.idp,
        });
        None
    }

    /// `approval.decided`: a pending approval ends. Returns it.
    fn decided(&mut self, decided: ApprovalDecided) -> Option<Uuid> {
        let entry = self.entries.get_mut(&decided.approval_id)?;
        if entry.status != Status::Pending {
            return None;
        }
        entry.status = Status::parse(&decided.outcome)?;
        self.pending -= 1;
        entry.decided_by = decided.decided_by;
        entry.break_glass = decided.break_glass;
        let id = entry.id();
        self.prune(id);
        Some(id)
    }

    /// `call.forwarded` with an approval: its grant is used.
    fn forwarded(&mut self, forwarded: CallForwarded, call_id: Option<Uuid>) -> Option<Uuid> {
        let id = forwarded.approval_id?;
        let entry = self.entries.get_mut(&id)?;
        entry.consumed_by = call_id.or(Some(Uuid::nil()));
        self.prune(id);
        None
    }

    /// `approval.reviewed`: a break-glass approval's review is done.
    fn reviewed(&mut self, review: ApprovalReviewed) -> Option<Uuid> {
        let entry = self.entries.get_mut(&review.approval_id)?;
        entry.reviewed = true;
        self.prune(review.approval_id);
        None
    }

    /// Forgets an approval nobody can use any more (a break-glass one once reviewed).
    fn prune(&mut self, id: Uuid) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        let usable = entry.status == Status::Pending
            || (entry.status == Status::Approved && entry.consumed_by.is_none());
        if !usable {
            self.by_binding.remove(&Binding::of(&entry.requested));
        }
        let awaits_review = entry.break_glass && !entry.reviewed;
        if !usable && !awaits_review {
            self.entries.remove(&id);
        }
    }
}

/// Feeds the ledger from the audit writer, and tells whoever waits that an approval was
/// decided.
pub struct Feed {
    pub ledger: Arc<Mutex<Ledger>>,
    pub decided: Box<dyn Fn(Uuid) + Send + Sync>,
}

impl Observer for Feed {
    fn observe(&self, event: &Recorded<'_>) {
        let (decided, before, after) = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            let before = ledger.pending();
            (ledger.apply(event), before, ledger.pending())
        };
        if before != after {
            crate::telemetry::approvals_pending(after);
        }
        if let Some(id) = decided {
            (self.decided)(id);
        }
    }
}

#[cfg(test)]
mod tests;
