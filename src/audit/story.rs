//! The story `audit verify` checks, beyond the hashes: every decision the log records is
//! backed by the events before it.
//!
//! * A `call.forwarded` of a held call names an approval that was requested for exactly this
//!   call (agent, server, tool, argument digest, policy version) and decided `approved` before
//!   the forward.
//! * Every counted vote comes from someone eligible under what the request recorded: named in
//!   `eligible`, or signed in to the console through the identity provider with a group the
//!   request's `eligible_groups` lists (never the agent, nor its human unless allowed).
//! * That decision is backed by distinct people eligible under what the request recorded, at
//!   least the quorum (votes with the same voter id, or the same subject at the same issuer,
//!   are one person's); or by a break-glass vote from someone the rule allowed, with a long
//!   enough justification.
//! * Every grant is used by at most one forward; every forward has an end.
//! * A call the policy held is never forwarded without an approval.
//!
//! This is written apart from the approval ledger on purpose: the verifier is a second,
//! independent reading of the same rules.

use super::chain;
use super::events::{
    ApprovalDecided, ApprovalRequested, ApprovalReviewed, ApprovalVote, CallForwarded, Choice,
    IdpVoter, PolicyDecidedOutcome,
};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// A decision the log does not back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub seq: i64,
    pub call_id: Option<Uuid>,
    pub what: String,
}

/// A break-glass approval that no second approver has reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreviewed {
    pub approval_id: Uuid,
    pub seq: i64,
    pub decided_by: String,
}

/// A counted vote, as far as the story needs it.
struct Vote {
    approver: String,
    choice: Choice,
    /// The break-glass justification, for a break-glass vote.
    justification: Option<String>,
    /// Whether the voter was eligible when the approval was requested.
    eligible: bool,
    /// The voter's subject at the identity provider, when they signed in through it.
    person: Option<(String, String)>,
}

struct Approval {
    requested: ApprovalRequested,
    votes: Vec<Vote>,
    decided: Option<(i64, ApprovalDecided)>,
    reviewed: bool,
    used: bool,
}

#[derive(Default)]
pub(super) struct Story {
    approvals: HashMap<Uuid, Approval>,
    /// Calls the policy held for approval and that were not forwarded yet.
    held: HashSet<Uuid>,
    /// Forwarded calls with no end yet: when they were forwarded.
    open: HashMap<Uuid, (i64, String)>,
    violations: Vec<Violation>,
    last_at: String,
}

/// What the story found once the whole log was read.
pub(super) struct Ending {
    pub violations: Vec<Violation>,
    pub unreviewed: Vec<Unreviewed>,
    pub in_flight: usize,
}

impl Story {
    /// Reads one verified event.
    pub fn observe(
        &mut self,
        seq: i64,
        call_id: Option<&str>,
        kind: &str,
        at: &str,
        payload: &str,
    ) {
        self.last_at.clear();
        self.last_at.push_str(at);
        let call = call_id.and_then(|c| Uuid::parse_str(c).ok());
        match kind {
            "policy.decided" => {
                if let (Some(call), Ok(decided)) =
                    (call, serde_json::from_str::<PolicyDecidedOutcome>(payload))
                    && decided.outcome == "approve"
                {
                    self.held.insert(call);
                }
            }
            "approval.requested" => match serde_json::from_str::<ApprovalRequested>(payload) {
                Ok(requested) => {
                    self.approvals.insert(
                        requested.approval_id,
                        Approval {
                            requested,
                            votes: Vec::new(),
                            decided: None,
                            reviewed: false,
                            used: false,
                        },
                    );
                }
                Err(e) => self.violate(seq, call, format!("an unreadable approval request: {e}")),
            },
            "approval.vote" => self.vote(seq, call, payload),
            "approval.decided" => self.decided(seq, call, payload),
            "approval.reviewed" => self.reviewed(seq, call, payload),
            "call.forwarded" => self.forwarded(seq, call, at, payload),
            "call.completed" | "call.failed" | "call.ambiguous" => {
                if let Some(call) = call {
                    self.open.remove(&call);
                }
            }
            _ => {}
        }
    }

    fn violate(&mut self, seq: i64, call_id: Option<Uuid>, what: String) {
        self.violations.push(Violation { seq, call_id, what });
    }

    fn vote(&mut self, seq: i64, call: Option<Uuid>, payload: &str) {
        let vote = match serde_json::from_str::<ApprovalVote>(payload) {
            Ok(vote) => vote,
            Err(e) => return self.violate(seq, call, format!("an unreadable vote: {e}")),
        };
        if !vote.counted() {
            return;
        }
        let Some(approval) = self.approvals.get_mut(&vote.approval_id) else {
            return self.violate(
                seq,
                call,
                format!(
                    "a vote counted on approval {}, which was never requested",
                    vote.approval_id
                ),
            );
        };
        if approval.decided.is_some() {
            return self.violate(
                seq,
                call,
                format!(
                    "a vote counted on approval {} after it was decided",
                    vote.approval_id
                ),
            );
        }
        let eligible = eligible(&approval.requested, &vote);
        let why = (!eligible).then(|| ineligible(&vote));
        approval.votes.push(Vote {
            justification: vote
                .break_glass
                .then(|| vote.justification.clone().unwrap_or_default()),
            person: vote
                .idp
                .map(|i| (i.issuer.trim_end_matches('/').to_owned(), i.subject)),
            approver: vote.approver,
            choice: vote.vote,
            eligible,
        });
        if let Some(why) = why {
            self.violate(seq, call, why);
        }
    }

    fn decided(&mut self, seq: i64, call: Option<Uuid>, payload: &str) {
        let decided = match serde_json::from_str::<ApprovalDecided>(payload) {
            Ok(decided) => decided,
            Err(e) => return self.violate(seq, call, format!("an unreadable decision: {e}")),
        };
        let id = decided.approval_id;
        let Some(approval) = self.approvals.get_mut(&id) else {
            return self.violate(
                seq,
                call,
                format!("approval {id} was decided but never requested"),
            );
        };
        if let Some((earlier, _)) = &approval.decided {
            let earlier = *earlier;
            return self.violate(
                seq,
                call,
                format!("approval {id} was decided twice (first at seq {earlier})"),
            );
        }
        approval.decided = Some((seq, decided));
        if let Some(why) = unbacked(approval) {
            self.violate(seq, call, format!("approval {id} was approved but {why}"));
        }
    }

    fn reviewed(&mut self, seq: i64, call: Option<Uuid>, payload: &str) {
        let Ok(review) = serde_json::from_str::<ApprovalReviewed>(payload) else {
            return self.violate(seq, call, "an unreadable review".into());
        };
        let Some(approval) = self.approvals.get_mut(&review.approval_id) else {
            return;
        };
        let by = approval
            .decided
            .as_ref()
            .and_then(|(_, d)| d.decided_by.clone());
        if by.as_deref() == Some(review.reviewer.as_str()) {
            return self.violate(
                seq,
                call,
                format!(
                    "{} reviewed their own break-glass approval {}",
                    review.reviewer, review.approval_id
                ),
            );
        }
        approval.reviewed = true;
    }

    fn forwarded(&mut self, seq: i64, call: Option<Uuid>, at: &str, payload: &str) {
        let forwarded = match serde_json::from_str::<CallForwarded>(payload) {
            Ok(forwarded) => forwarded,
            Err(e) => return self.violate(seq, call, format!("an unreadable forward: {e}")),
        };
        let held = call.is_some_and(|c| self.held.remove(&c));
        if let Some(call) = call {
            self.open.insert(call, (seq, at.to_owned()));
        }
        let Some(id) = forwarded.approval_id else {
            if held {
                self.violate(
                    seq,
                    call,
                    "the policy held this call for approval, but it was forwarded without one"
                        .into(),
                );
            }
            return;
        };
        let Some(approval) = self.approvals.get_mut(&id) else {
            return self.violate(
                seq,
                call,
                format!("forwarded on approval {id}, which was never requested"),
            );
        };
        let why = grant_refusal(approval, &forwarded);
        approval.used = true;
        if let Some(why) = why {
            self.violate(seq, call, format!("forwarded on approval {id}, but {why}"));
        }
    }

    /// The violations, including forwards that never ended (older than `in_flight` before the
    /// log's last event), and the unreviewed break-glass approvals.
    pub fn finish(mut self, in_flight: Duration) -> Ending {
        let last = chain::timestamp_micros(&self.last_at).unwrap_or(i64::MAX);
        let cutoff = last.saturating_sub(in_flight.as_micros() as i64);
        let mut still_running = 0;
        let mut open: Vec<_> = self.open.drain().collect();
        open.sort_by_key(|(_, (seq, _))| *seq);
        for (call, (seq, at)) in open {
            if chain::timestamp_micros(&at).is_some_and(|t| t < cutoff) {
                self.violations.push(Violation {
                    seq,
                    call_id: Some(call),
                    what: format!(
                        "forwarded at {at} and never ended (no call.completed, call.failed or call.ambiguous)"
                    ),
                });
            } else {
                still_running += 1;
            }
        }
        self.violations.sort_by_key(|v| v.seq);
        let mut unreviewed: Vec<Unreviewed> = self
            .approvals
            .values()
            .filter(|a| !a.reviewed)
            .filter_map(|a| {
                let (seq, decided) = a.decided.as_ref()?;
                (decided.break_glass && decided.outcome == "approved").then(|| Unreviewed {
                    approval_id: decided.approval_id,
                    seq: *seq,
                    decided_by: decided.decided_by.clone().unwrap_or_default(),
                })
            })
            .collect();
        unreviewed.sort_by_key(|u| u.seq);
        Ending {
            violations: self.violations,
            unreviewed,
            in_flight: still_running,
        }
    }
}

/// Why a forward may not use this approval's grant, if it may not.
fn grant_refusal(approval: &Approval, forwarded: &CallForwarded) -> Option<String> {
    let requested = &approval.requested;
    let Some((_, decided)) = &approval.decided else {
        return Some(
            "the approval had not been decided (the forward came before any decision)".into(),
        );
    };
    if decided.outcome != "approved" {
        return Some(format!("the approval was {}", decided.outcome));
    }
    if approval.used {
        return Some("its grant had already been used by another forward".into());
    }
    let bound = requested.agent == forwarded.agent
        && requested.server == forwarded.server
        && requested.tool == forwarded.tool
        && forwarded
            .args_sha256
            .as_ref()
            .is_none_or(|d| *d == requested.args_sha256)
        && forwarded
            .policy_version
            .as_ref()
            .is_none_or(|v| *v == requested.policy_version);
    if !bound {
        return Some("the forwarded call is not the call that was approved".into());
    }
    unbacked(approval)
}

/// Why an approved decision is not backed by its votes, if it is not.
fn unbacked(approval: &Approval) -> Option<String> {
    let Some((_, decided)) = &approval.decided else {
        return None;
    };
    if decided.outcome != "approved" {
        return None;
    }
    let requested = &approval.requested;
    let not_self = |who: &str| {
        who != requested.agent
            && (requested.allow_self_approval || requested.on_behalf_of.as_deref() != Some(who))
    };
    if decided.break_glass {
        let by = decided.decided_by.as_deref().unwrap_or_default();
        let Some(grant) = &requested.break_glass else {
            return Some("by break-glass, which the rule did not allow".into());
        };
        let named = named(requested);
        if !grant.eligible.iter().any(|p| p == by) || !named.contains(by) || !not_self(by) {
            return Some(format!("by break-glass from {by}, who may not use it"));
        }
        let justification = approval
            .votes
            .iter()
            .find(|v| v.approver == by && v.justification.is_some())
            .and_then(|v| v.justification.as_deref())
            .unwrap_or_default();
        if justification.trim().chars().count() < grant.min_justification {
            return Some(format!(
                "by break-glass with a justification shorter than {} characters",
                grant.min_justification
            ));
        }
        return None;
    }
    let approving: Vec<&Vote> = approval
        .votes
        .iter()
        .filter(|v| v.choice == Choice::Approve && v.eligible)
        .collect();
    let people = people(&approving);
    if people < requested.quorum.max(1) as usize {
        return Some(format!(
            "with {people} distinct eligible approvals where the rule needs {}",
            requested.quorum.max(1)
        ));
    }
    None
}

/// The voter ids the request names (`eligible`, or `approvers` in logs older than it).
fn named(requested: &ApprovalRequested) -> BTreeSet<&str> {
    if requested.eligible.is_empty() {
        requested.approvers.iter().map(String::as_str).collect()
    } else {
        requested.eligible.iter().map(String::as_str).collect()
    }
}

/// Whether the request made this vote's voter eligible: named, or a console sign-in whose
/// recorded groups include one the request listed for the same identity provider; never the
/// agent, never its human unless the rule allows it.
fn eligible(requested: &ApprovalRequested, vote: &ApprovalVote) -> bool {
    let who = vote.approver.as_str();
    let through_group = |idp: &IdpVoter| {
        requested.eligible_groups.iter().any(|e| {
            e.issuer.trim_end_matches('/') == idp.issuer.trim_end_matches('/')
                && idp.groups.iter().any(|g| e.idp_groups.contains(g))
        })
    };
    let by_group = vote.source == "console" && vote.idp.as_ref().is_some_and(through_group);
    (named(requested).contains(who) || by_group)
        && who != requested.agent
        && (requested.allow_self_approval || requested.on_behalf_of.as_deref() != Some(who))
}

/// The violation of a counted vote from someone the request did not make eligible.
fn ineligible(vote: &ApprovalVote) -> String {
    let groups = vote.idp.as_ref().map(|i| i.groups.join(", "));
    let through = match groups.filter(|g| !g.is_empty()) {
        Some(groups) => format!(
            " (their identity provider's groups {groups} stand for no approver group it named)"
        ),
        None => String::new(),
    };
    format!(
        "a vote from {} counted on approval {}, but the request did not make them eligible{through}",
        vote.approver, vote.approval_id
    )
}

/// How many people cast `votes`: two votes with the same voter id, or the same subject at the
/// same identity provider, are one person's (and so is everyone linked through them).
fn people(votes: &[&Vote]) -> usize {
    // Each person: their voter ids, and their (issuer, subject) pairs.
    type Person<'a> = (BTreeSet<&'a str>, BTreeSet<(&'a str, &'a str)>);
    let mut seen: Vec<Person> = Vec::new();
    for vote in votes {
        let mut ids = BTreeSet::from([vote.approver.as_str()]);
        let mut subjects: BTreeSet<(&str, &str)> = vote
            .person
            .iter()
            .map(|(i, s)| (i.as_str(), s.as_str()))
            .collect();
        // Merge every person this vote links to into one.
        seen.retain(|(i, s)| {
            let linked = !i.is_disjoint(&ids) || !s.is_disjoint(&subjects);
            if linked {
                ids.extend(i.iter().copied());
                subjects.extend(s.iter().copied());
            }
            !linked
        });
        seen.push((ids, subjects));
    }
    seen.len()
}

#[cfg(test)]
mod tests;
