//! `Cast`: one vote, judged on the ledger; it decides the approval when it should.

use super::{Decision, Shared, decided_event, event};
use crate::approval::eligibility::{recorded_idp, refusal};
use crate::approval::ledger::Entry;
use crate::approval::table;
use crate::approval::{Approval, Ballot, Status, VoteResult};
use crate::audit::events::{ApprovalVote, AuditEvent, Choice, CountedVote, IdpVoter};
use crate::audit::{NewEvent, Transition};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use uuid::Uuid;

/// Casts one vote; decides the approval when it should. Every vote is recorded, counted or
/// not.
pub(in crate::approval) struct Cast {
    pub ledger: Shared,
    pub id: Uuid,
    pub ballot: Ballot,
    /// Whether the voter is a configured approver at all.
    pub configured: bool,
    /// The working-state row, for the approval's names and for messages when the ledger no
    /// longer holds it.
    pub row: Approval,
    pub now: i64,
    /// Set by `decide`.
    pub result: Option<VoteResult>,
    pub decision: Option<Decision>,
    counted: bool,
}

impl Cast {
    pub fn new(ledger: Shared, row: Approval, ballot: Ballot, configured: bool, now: i64) -> Cast {
        Cast {
            ledger,
            id: row.id,
            ballot,
            configured,
            row,
            now,
            result: None,
            decision: None,
            counted: false,
        }
    }

    /// What the vote does, on the ledger's state.
    fn judge(&self, entry: Option<&Entry>) -> (VoteResult, Option<Decision>) {
        let Some(entry) = entry else {
            return (self.not_in_ledger(), None);
        };
        match self.not_counted(entry) {
            Some(result) => (result, None),
            None => self.count(entry),
        }
    }

    /// A vote on an approval the ledger does not hold: decided (and forgotten) already, or,
    /// when the working row still says pending, never opened in the log.
    fn not_in_ledger(&self) -> VoteResult {
        match self.row.status {
            Status::Pending => VoteResult::NotAuthorized {
                why: format!("the audit log holds no open approval {}", self.id),
            },
            status => VoteResult::AlreadyDecided {
                status,
                by: self.row.decided_by.clone(),
            },
        }
    }

    /// Why the vote does not count on `entry`, as its result: the approval ended, the voter
    /// may not vote, or already did.
    fn not_counted(&self, entry: &Entry) -> Option<VoteResult> {
        if entry.status != Status::Pending {
            return Some(VoteResult::AlreadyDecided {
                status: entry.status,
                by: entry.decided_by.clone(),
            });
        }
        if let Some(why) = refusal(entry, &self.ballot, self.configured) {
            return Some(VoteResult::NotAuthorized { why });
        }
        if entry.has_voted(&self.ballot.approver, self.ballot.idp.as_ref()) {
            return Some(VoteResult::AlreadyVoted);
        }
        None
    }

    /// A counted vote: a deny, or a break-glass approval, decides at once; an approval decides
    /// once the quorum is reached.
    fn count(&self, entry: &Entry) -> (VoteResult, Option<Decision>) {
        let quorum = entry.requested.quorum.max(1);
        let approvals = entry.approvals() as u32 + u32::from(self.ballot.approve);
        let decides = match (self.ballot.approve, &self.ballot.break_glass) {
            (false, _) => Some((Status::Denied, false)),
            (true, Some(_)) => Some((Status::Approved, true)),
            (true, None) if approvals >= quorum => Some((Status::Approved, false)),
            _ => None,
        };
        match decides {
            Some((status, break_glass)) => (
                VoteResult::Decided { status },
                Some(self.decision(status, break_glass)),
            ),
            None => (VoteResult::Counted { approvals, quorum }, None),
        }
    }

    fn decision(&self, status: Status, break_glass: bool) -> Decision {
        Decision {
            status,
            by: Some(self.ballot.approver.clone()),
            reason: self
                .ballot
                .reason
                .clone()
                .or_else(|| self.ballot.break_glass.clone()),
            break_glass,
            at: self.now,
        }
    }

    /// The `approval.vote` payload: every vote is recorded, with its result.
    fn vote_payload(&self, result: &VoteResult, idp: Option<IdpVoter>) -> ApprovalVote {
        let ballot = &self.ballot;
        ApprovalVote {
            approval_id: self.id,
            approver: ballot.approver.clone(),
            vote: choice(ballot),
            reason: ballot.reason.clone(),
            source: ballot.source.to_string(),
            authenticated: authenticated(ballot),
            evidence: ballot.evidence.clone(),
            break_glass: ballot.break_glass.is_some(),
            justification: ballot.break_glass.clone(),
            idp,
            result: serde_json::to_value(result).expect("a vote result serialises"),
            at_ms: self.now,
            agent: self.row.agent.clone(),
            server: self.row.server.clone(),
            tool: self.row.tool.clone(),
        }
    }

    /// The `approval.decided` event, with this vote among the approvers when it counted.
    fn decided(&self, entry: &Entry, decision: &Decision, idp: Option<IdpVoter>) -> NewEvent {
        let ballot = &self.ballot;
        let mut entry = entry.clone();
        if self.counted {
            entry.votes.push(CountedVote {
                approver: ballot.approver.clone(),
                vote: choice(ballot),
                reason: ballot.reason.clone(),
                source: ballot.source.to_string(),
                at_ms: self.now,
                idp,
            });
        }
        decided_event(&entry, decision)
    }
}

fn choice(ballot: &Ballot) -> Choice {
    if ballot.approve {
        Choice::Approve
    } else {
        Choice::Deny
    }
}

impl Transition for Cast {
    /// Changes to different approvals share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        Some(("approval", self.id.to_string()))
    }

    fn decide(&mut self) -> Vec<NewEvent> {
        let ledger = self.ledger.lock().expect("ledger lock");
        let entry = ledger.get(self.id);
        let (result, decision) = self.judge(entry);
        self.counted = matches!(
            result,
            VoteResult::Counted { .. } | VoteResult::Decided { .. }
        );
        let idp = recorded_idp(&self.ballot, entry);
        let vote = self.vote_payload(&result, idp.clone());
        let mut events = vec![event(
            self.row.call_id,
            &self.ballot.approver,
            AuditEvent::ApprovalVote(vote),
        )];
        if let (Some(decision), Some(entry)) = (&decision, entry) {
            events.push(self.decided(entry, decision, idp));
        }
        self.result = Some(result);
        self.decision = decision;
        events
    }

    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if self.counted {
                table::insert_vote(conn, self.id, &self.ballot, self.now).await?;
            }
            if let Some(decision) = &self.decision {
                table::decide(conn, self.id, decision).await?;
            }
            Ok(())
        })
    }
}

/// How the voter was authenticated: what the channel put under `evidence.authenticated`, or
/// for chat, the backend that verified the payload.
fn authenticated(ballot: &Ballot) -> Value {
    match ballot.evidence.get("authenticated") {
        Some(how) => how.clone(),
        None => json!({"method": "chat", "verified_by": ballot.source.as_str()}),
    }
}
