//! The story `audit verify` checks, beyond the hashes: every decision the log records is
//! backed by the events before it.
//!
//! * A `call.forwarded` of a held call names an approval that was requested for exactly this
//!   call (agent, server, tool, argument digest, policy version) and decided `approved` before
//!   the forward.
//! * That decision is backed by distinct approvers eligible under what the request recorded
//!   (never the agent, nor its human unless allowed), at least the quorum; or by a
//!   break-glass vote from someone the rule allowed, with a long enough justification.
//! * Every grant is used by at most one forward; every forward has an end.
//! * A call the policy held is never forwarded without an approval.
//!
//! This is written apart from the approval ledger on purpose: the verifier is a second,
//! independent reading of the same rules.

use super::chain;
use super::events::{
    ApprovalDecided, ApprovalRequested, ApprovalReviewed, ApprovalVote, CallForwarded, Choice,
    PolicyDecidedOutcome,
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

struct Approval {
    requested: ApprovalRequested,
    /// Counted votes: approver, choice, break-glass justification.
    votes: Vec<(String, Choice, Option<String>)>,
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
        let justification = vote
            .break_glass
            .then(|| vote.justification.unwrap_or_default());
        approval
            .votes
            .push((vote.approver, vote.vote, justification));
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
        if let Err(why) = backing(approval) {
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
    backing(approval).err()
}

/// Why an approved decision is not backed by its votes, if it is not.
fn backing(approval: &Approval) -> Result<(), String> {
    let Some((_, decided)) = &approval.decided else {
        return Ok(());
    };
    if decided.outcome != "approved" {
        return Ok(());
    }
    let requested = &approval.requested;
    let eligible: BTreeSet<&str> = if requested.eligible.is_empty() {
        requested.approvers.iter().map(String::as_str).collect()
    } else {
        requested.eligible.iter().map(String::as_str).collect()
    };
    let may_vote = |who: &str| {
        eligible.contains(who)
            && who != requested.agent
            && (requested.allow_self_approval || requested.on_behalf_of.as_deref() != Some(who))
    };
    if decided.break_glass {
        let by = decided.decided_by.as_deref().unwrap_or_default();
        let Some(grant) = &requested.break_glass else {
            return Err("by break-glass, which the rule did not allow".into());
        };
        if !grant.eligible.iter().any(|p| p == by) || !may_vote(by) {
            return Err(format!("by break-glass from {by}, who may not use it"));
        }
        let justification = approval
            .votes
            .iter()
            .find(|(who, _, j)| who == by && j.is_some())
            .and_then(|(_, _, j)| j.as_deref())
            .unwrap_or_default();
        if justification.trim().chars().count() < grant.min_justification {
            return Err(format!(
                "by break-glass with a justification shorter than {} characters",
                grant.min_justification
            ));
        }
        return Ok(());
    }
    let distinct: BTreeSet<&str> = approval
        .votes
        .iter()
        .filter(|(who, choice, _)| *choice == Choice::Approve && may_vote(who))
        .map(|(who, _, _)| who.as_str())
        .collect();
    if distinct.len() < requested.quorum.max(1) as usize {
        return Err(format!(
            "with {} distinct eligible approvals where the rule needs {}",
            distinct.len(),
            requested.quorum.max(1)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CALL: &str = "01a23b4f-d356-741c-84e4-9f71ea54be64";
    const APPROVAL: &str = "01a23b4f-d356-741c-84e4-9f71ea54be65";
    const AT: &str = "2026-12-03T10:00:00.000000Z";

    fn requested() -> String {
        json!({"approval_id": APPROVAL, "agent": "agent-1", "on_behalf_of": "alice",
            "server": "echo", "tool": "delete_record", "args_sha256": "aa", "policy_version": "v1",
            "rule": "two", "eligible": ["alice", "bob", "carol"], "quorum": 2,
            "expires_at_ms": 0})
        .to_string()
    }

    fn vote(who: &str) -> String {
        json!({"approval_id": APPROVAL, "approver": who, "vote": "approve", "source": "http",
            "result": {"result": "counted"}, "agent": "agent-1", "server": "echo",
            "tool": "delete_record"})
        .to_string()
    }

    fn decided() -> String {
        json!({"approval_id": APPROVAL, "outcome": "approved", "decided_by": "bob",
            "agent": "agent-1", "server": "echo", "tool": "delete_record"})
        .to_string()
    }

    fn forwarded(args: &str) -> String {
        json!({"agent": "agent-1", "server": "echo", "tool": "delete_record", "executor": "x",
            "approval_id": APPROVAL, "args_sha256": args, "policy_version": "v1"})
        .to_string()
    }

    /// Plays `events` (kind, payload) from seq 1 and returns what the story found.
    fn play(events: &[(&str, String)]) -> Ending {
        let mut story = Story::default();
        for (n, (kind, payload)) in events.iter().enumerate() {
            story.observe(n as i64 + 1, Some(CALL), kind, AT, payload);
        }
        story.finish(Duration::from_secs(3600))
    }

    fn held() -> (&'static str, String) {
        ("policy.decided", json!({"outcome": "approve"}).to_string())
    }

    #[test]
    fn a_quorum_backed_forward_with_an_end_is_a_clean_story() {
        let ending = play(&[
            held(),
            ("approval.requested", requested()),
            ("approval.vote", vote("bob")),
            ("approval.vote", vote("carol")),
            ("approval.decided", decided()),
            ("call.forwarded", forwarded("aa")),
            ("call.completed", "{}".into()),
        ]);
        assert_eq!(ending.violations, []);
        assert_eq!(ending.in_flight, 0);
    }

    #[test]
    fn every_unbacked_decision_is_a_violation_with_its_seq() {
        // One vote, and the agent's own human's: not a quorum of eligible approvers.
        let ending = play(&[
            held(),
            ("approval.requested", requested()),
            ("approval.vote", vote("bob")),
            ("approval.vote", vote("alice")),
            ("approval.decided", decided()),
            ("call.forwarded", forwarded("aa")),
            ("call.forwarded", forwarded("aa")),
            ("call.forwarded", forwarded("bb")),
        ]);
        let seqs: Vec<i64> = ending.violations.iter().map(|v| v.seq).collect();
        assert_eq!(seqs, [5, 6, 7, 8], "{:?}", ending.violations);
        assert!(
            ending.violations[0]
                .what
                .contains("1 distinct eligible approvals")
        );
        assert!(ending.violations[2].what.contains("already been used"));
        assert_eq!(
            ending.violations[0].call_id,
            Some(Uuid::parse_str(CALL).unwrap())
        );
    }

    #[test]
    fn a_forward_before_its_decision_or_without_an_approval_is_a_violation() {
        let ending = play(&[
            held(),
            ("approval.requested", requested()),
            ("call.forwarded", forwarded("aa")),
        ]);
        assert!(ending.violations[0].what.contains("before any decision"));
        let ending = play(&[
            held(),
            (
                "call.forwarded",
                json!({"agent": "agent-1", "server": "echo", "tool": "delete_record",
                    "executor": "x"})
                .to_string(),
            ),
        ]);
        assert!(ending.violations[0].what.contains("forwarded without one"));
    }

    #[test]
    fn break_glass_needs_the_rule_and_a_review() {
        let mut allowed: serde_json::Value = serde_json::from_str(&requested()).unwrap();
        allowed["break_glass"] = json!({"eligible": ["bob"], "min_justification": 20});
        let glass = json!({"approval_id": APPROVAL, "approver": "bob", "vote": "approve",
            "source": "http", "break_glass": true, "justification": "the outage INC-42 needs it",
            "result": {"result": "decided"}, "agent": "agent-1", "server": "echo",
            "tool": "delete_record"})
        .to_string();
        let mut decided: serde_json::Value = serde_json::from_str(&decided()).unwrap();
        decided["break_glass"] = json!(true);
        let events = [
            ("approval.requested", allowed.to_string()),
            ("approval.vote", glass),
            ("approval.decided", decided.to_string()),
        ];
        let ending = play(&events);
        assert_eq!(ending.violations, []);
        assert_eq!(ending.unreviewed.len(), 1);
        let mut reviewed = events.to_vec();
        let review = json!({"approval_id": APPROVAL, "reviewer": "carol", "note": "ok",
            "agent": "agent-1", "server": "echo", "tool": "delete_record"});
        reviewed.push(("approval.reviewed", review.to_string()));
        assert_eq!(play(&reviewed).unreviewed, []);
        // Without the rule's permission, the same decision is a violation.
        let mut bare = events.to_vec();
        bare[0].1 = requested(); // no break_glass on the rule
        assert!(play(&bare).violations[0].what.contains("did not allow"));
    }
}
