//! The approval ledger: the state of every open approval, derived only from audit events the
//! writer committed or verified (never from the `approvals` table, which anyone who can write
//! the database can change). The gate asks it, inside the writer's transaction, whether a
//! call may use a grant.

use super::Status;
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
    pub fn standing_groups(&self, idp: Option<&IdpVoter>, source: &str) -> Vec<String> {
        let Some(idp) = idp.filter(|_| source == "console") else {
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
    pub fn may_vote(&self, who: &str, idp: Option<&IdpVoter>, source: &str) -> bool {
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
                v.vote == Choice::Approve && self.may_vote(&v.approver, v.idp.as_ref(), &v.source)
            })
            .collect();
        distinct_people(&approving)
    }

    /// Why the approved decision is not backed by the votes, if it is not.
    fn unbacked(&self) -> Option<String> {
        let r = &self.requested;
        if self.break_glass {
            let by = self.decided_by.as_deref().unwrap_or_default();
            let Some(grant) = &r.break_glass else {
                return Some("break-glass was used but the rule does not allow it".into());
            };
            let justification = self
                .justifications
                .get(by)
                .map_or(0, |j| j.trim().chars().count());
            if !grant.eligible.iter().any(|p| p == by) || !self.may_vote(by, None, "") {
                return Some(format!("{by} may not use break-glass on this rule"));
            }
            if justification < grant.min_justification {
                return Some("the break-glass justification is too short".into());
            }
            return None;
        }
        let quorum = r.quorum.max(1) as usize;
        let have = self.approvals();
        (have < quorum).then(|| {
            format!("{have} distinct eligible approvals are recorded where the rule needs {quorum}")
        })
    }
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
    pub fn grant(&self, id: Uuid, binding: &Binding, now_ms: i64) -> Result<&Entry, String> {
        let entry = self
            .entries
            .get(&id)
            .ok_or_else(|| format!("the audit log holds no open approval {id}"))?;
        if entry.status != Status::Approved {
            return Err(format!(
                "the audit log records approval {id} as {}, not approved",
                entry.status.as_str()
            ));
        }
        if Binding::of(&entry.requested) != *binding {
            return Err(format!("approval {id} was given for another call"));
        }
        if let Some(by) = entry.consumed_by {
            return Err(format!("approval {id} was already used by call {by}"));
        }
        if entry.requested.expires_at_ms <= now_ms {
            return Err(format!("approval {id} expired before it was used"));
        }
        match entry.unbacked() {
            Some(why) => Err(format!("approval {id} is not backed by the log: {why}")),
            None => Ok(entry),
        }
    }

    /// Applies one verified event. Returns the approval it decided, if it did.
    pub fn apply(&mut self, event: &Recorded<'_>) -> Option<Uuid> {
        match event.kind {
            EventKind::ApprovalRequested => {
                let requested: ApprovalRequested = serde_json::from_str(event.payload).ok()?;
                let id = requested.approval_id;
                self.by_binding.insert(Binding::of(&requested), id);
                let replaced = self.entries.insert(
                    id,
                    Entry {
                        call_id: event.call_id.unwrap_or(id),
                        requested,
                        votes: Vec::new(),
                        justifications: HashMap::new(),
                        status: Status::Pending,
                        decided_by: None,
                        break_glass: false,
                        consumed_by: None,
                        reviewed: false,
                    },
                );
                if replaced.is_none_or(|old| old.status != Status::Pending) {
                    self.pending += 1;
                }
                None
            }
            EventKind::ApprovalVote => {
                let vote: ApprovalVote = serde_json::from_str(event.payload).ok()?;
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
            EventKind::ApprovalDecided => {
                let decided: ApprovalDecided = serde_json::from_str(event.payload).ok()?;
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
            EventKind::CallForwarded => {
                let forwarded: CallForwarded = serde_json::from_str(event.payload).ok()?;
                let id = forwarded.approval_id?;
                let entry = self.entries.get_mut(&id)?;
                entry.consumed_by = event.call_id.or(Some(Uuid::nil()));
                self.prune(id);
                None
            }
            EventKind::ApprovalReviewed => {
                let review: ApprovalReviewed = serde_json::from_str(event.payload).ok()?;
                let entry = self.entries.get_mut(&review.approval_id)?;
                entry.reviewed = true;
                self.prune(review.approval_id);
                None
            }
            _ => None,
        }
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
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "01a23b4f-d356-741c-84e4-9f71ea54be65";

    fn apply(ledger: &mut Ledger, kind: EventKind, payload: serde_json::Value) -> Option<Uuid> {
        let payload = payload.to_string();
        ledger.apply(&Recorded {
            seq: 1,
            call_id: Some(Uuid::nil()),
            kind,
            actor: "x",
            payload: &payload,
        })
    }

    fn binding() -> Binding {
        Binding {
            agent: "agent-1".into(),
            server: "echo".into(),
            tool: "delete_record".into(),
            args_sha256: "aa".into(),
            policy_version: "v1".into(),
        }
    }

    fn vote(ledger: &mut Ledger, who: &str) {
        let payload = json!({"approval_id": ID, "approver": who, "vote": "approve",
            "source": "http", "result": {"result": "counted"}, "agent": "agent-1",
            "server": "echo", "tool": "delete_record"});
        apply(ledger, EventKind::ApprovalVote, payload);
    }

    /// A ledger holding one approval for `binding()`: quorum 2 of bob and carol, alice being
    /// the agent's human.
    fn requested() -> Ledger {
        let mut ledger = Ledger::default();
        let payload = json!({"approval_id": ID, "agent": "agent-1", "on_behalf_of": "alice",
            "server": "echo", "tool": "delete_record", "args_sha256": "aa",
            "policy_version": "v1", "rule": "two", "eligible": ["alice", "bob", "carol"],
            "quorum": 2, "expires_at_ms": i64::MAX});
        apply(&mut ledger, EventKind::ApprovalRequested, payload);
        ledger
    }

    fn decide(ledger: &mut Ledger) -> Option<Uuid> {
        let payload = json!({"approval_id": ID, "outcome": "approved", "decided_by": "bob",
            "agent": "agent-1", "server": "echo", "tool": "delete_record"});
        apply(ledger, EventKind::ApprovalDecided, payload)
    }

    #[test]
    fn a_grant_needs_an_approved_quorum_for_exactly_this_call_once() {
        let id = Uuid::parse_str(ID).unwrap();
        let mut ledger = requested();
        assert!(ledger.joinable(&binding(), 0).is_some());
        assert!(
            ledger
                .grant(id, &binding(), 0)
                .unwrap_err()
                .contains("pending")
        );
        vote(&mut ledger, "bob");
        vote(&mut ledger, "alice"); // the agent's human: never counted
        assert_eq!(decide(&mut ledger), Some(id));
        let why = ledger.grant(id, &binding(), 0).unwrap_err();
        assert!(why.contains("1 distinct eligible approvals"), "{why}");

        let mut ledger = requested();
        vote(&mut ledger, "bob");
        vote(&mut ledger, "carol");
        decide(&mut ledger);
        let other = Binding {
            args_sha256: "bb".into(),
            ..binding()
        };
        assert!(
            ledger
                .grant(id, &other, 0)
                .unwrap_err()
                .contains("another call")
        );
        assert!(ledger.grant(id, &binding(), i64::MAX).is_err(), "expired");
        assert!(ledger.grant(id, &binding(), 0).is_ok());
        let forwarded = json!({"agent": "agent-1", "server": "echo", "tool": "delete_record",
            "executor": "x", "approval_id": ID});
        apply(&mut ledger, EventKind::CallForwarded, forwarded);
        assert!(ledger.grant(id, &binding(), 0).is_err(), "used once");
        assert!(ledger.is_empty(), "a used grant is forgotten");
    }

    /// `requested()`, with the identity provider's group `idp-ops` standing for `ops`.
    fn requested_with_groups() -> Ledger {
        let mut ledger = Ledger::default();
        let payload = json!({"approval_id": ID, "agent": "agent-1", "on_behalf_of": "alice",
            "server": "echo", "tool": "delete_record", "args_sha256": "aa",
            "policy_version": "v1", "rule": "two", "eligible": ["alice", "bob", "carol"],
            "eligible_groups": [{"group": "ops", "issuer": "https://idp.example/",
                "idp_groups": ["idp-ops"]}],
            "quorum": 2, "expires_at_ms": i64::MAX});
        apply(&mut ledger, EventKind::ApprovalRequested, payload);
        ledger
    }

    fn group_vote(ledger: &mut Ledger, who: &str, subject: &str, groups: &[&str], source: &str) {
        let payload = json!({"approval_id": ID, "approver": who, "vote": "approve",
            "source": source, "result": {"result": "counted"}, "agent": "agent-1",
            "server": "echo", "tool": "delete_record",
            "idp": {"issuer": "https://idp.example", "subject": subject, "groups": groups}});
        apply(ledger, EventKind::ApprovalVote, payload);
    }

    #[test]
    fn a_group_stands_in_only_from_the_console_and_only_if_the_request_recorded_it() {
        let id = Uuid::parse_str(ID).unwrap();
        let mut ledger = requested_with_groups();
        // An outsider's unmapped group, a mapped group claimed over the API, and the agent's
        // own human holding the group: none counts.
        group_vote(&mut ledger, "idp:eve", "s-eve", &["contractors"], "console");
        group_vote(
            &mut ledger,
            "idp:mallory",
            "s-mallory",
            &["idp-ops"],
            "http",
        );
        group_vote(&mut ledger, "alice", "s-alice", &["idp-ops"], "console");
        assert_eq!(ledger.get(id).unwrap().approvals(), 0);
        group_vote(&mut ledger, "idp:gina", "s-gina", &["idp-ops"], "console");
        assert_eq!(ledger.get(id).unwrap().approvals(), 1);
        // The same person again: once by their mapped id, once with the same subject.
        group_vote(&mut ledger, "carol", "s-gina", &["idp-ops"], "console");
        group_vote(&mut ledger, "idp:gina", "s-other", &["idp-ops"], "console");
        assert_eq!(ledger.get(id).unwrap().approvals(), 1);
        vote(&mut ledger, "bob");
        assert_eq!(ledger.get(id).unwrap().approvals(), 2);
        decide(&mut ledger);
        assert!(ledger.grant(id, &binding(), 0).is_ok());

        // A request that recorded no groups: a group is no standing.
        let mut ledger = requested();
        group_vote(&mut ledger, "idp:gina", "s-gina", &["idp-ops"], "console");
        vote(&mut ledger, "bob");
        decide(&mut ledger);
        let why = ledger.grant(id, &binding(), 0).unwrap_err();
        assert!(why.contains("1 distinct eligible approvals"), "{why}");
    }
}
