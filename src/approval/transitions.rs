//! Every change of an approval's state, as an audit [`Transition`]: it decides on the ledger
//! (the state the verified log tells) inside the audit writer's transaction, and its events
//! and its working-state row commit together. No state row can exist without its event, and
//! a forged row changes nothing the ledger says.

use super::eligibility::{recorded_idp, refusal};
use super::ledger::{Binding, Entry, Ledger};
use super::store;
use super::{Approval, Ballot, Status, VoteResult};
use crate::audit::events::{
    ApprovalDecided, ApprovalRequested, ApprovalReviewed, ApprovalVote, AuditAlert, AuditEvent,
    CallForwarded, Choice, CountedVote,
};
use crate::audit::{NewEvent, Transition};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

type Shared = Arc<Mutex<Ledger>>;

fn event(call_id: Uuid, actor: &str, event: AuditEvent) -> NewEvent {
    NewEvent::new(Some(call_id), actor, event)
}

/// A decision to record: the approval's new status, with who and why.
#[derive(Debug, Clone)]
pub(super) struct Decision {
    pub status: Status,
    pub by: Option<String>,
    pub reason: Option<String>,
    pub break_glass: bool,
    pub at: i64,
}

fn decided_event(entry: &Entry, decision: &Decision) -> NewEvent {
    let r = &entry.requested;
    let payload = ApprovalDecided {
        approval_id: r.approval_id,
        outcome: decision.status.as_str().into(),
        decided_by: decision.by.clone(),
        reason: decision.reason.clone(),
        break_glass: decision.break_glass,
        agent: r.agent.clone(),
        server: r.server.clone(),
        tool: r.tool.clone(),
        approvers: entry.votes.clone(),
    };
    let actor = decision.by.as_deref().unwrap_or("countersign");
    event(entry.call_id, actor, AuditEvent::ApprovalDecided(payload))
}

fn write_decision<'c>(
    conn: &'c mut sqlx::AnyConnection,
    id: Uuid,
    decision: &'c Decision,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { store::decide(conn, id, decision).await })
}

/// Opens an approval, or joins the open one for the same exact call.
pub(super) struct Open {
    pub ledger: Shared,
    pub approval: Approval,
    pub requested: ApprovalRequested,
    /// Set by `decide`: the approval joined, when one was open.
    pub joined: Option<Uuid>,
}

impl Transition for Open {
    fn decide(&mut self) -> Vec<NewEvent> {
        let binding = Binding {
            agent: self.requested.agent.clone(),
            server: self.requested.server.clone(),
            tool: self.requested.tool.clone(),
            args_sha256: self.requested.args_sha256.clone(),
            policy_version: self.requested.policy_version.clone(),
        };
        let ledger = self.ledger.lock().expect("ledger lock");
        if let Some(open) = ledger.joinable(&binding, self.approval.created_at) {
            self.joined = Some(open.id());
            return Vec::new();
        }
        vec![event(
            self.approval.call_id,
            "countersign",
            AuditEvent::ApprovalRequested(self.requested.clone()),
        )]
    }

    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if self.joined.is_none() {
                store::insert(conn, &self.approval).await?;
            }
            Ok(())
        })
    }

    /// Opens for different exact calls decide on different approvals: they share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        let r = &self.requested;
        let binding = [
            &r.agent,
            &r.server,
            &r.tool,
            &r.args_sha256,
            &r.policy_version,
        ];
        Some(("open", binding.map(String::as_str).join("\u{1f}")))
    }
}

/// Casts one vote; decides the approval when it should. Every vote is recorded, counted or
/// not.
pub(super) struct Cast {
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
            return match self.row.status {
                Status::Pending => (
                    VoteResult::NotAuthorized {
                        why: format!("the audit log holds no open approval {}", self.id),
                    },
                    None,
                ),
                status => (
                    VoteResult::AlreadyDecided {
                        status,
                        by: self.row.decided_by.clone(),
                    },
                    None,
                ),
            };
        };
        if entry.status != Status::Pending {
            let result = VoteResult::AlreadyDecided {
                status: entry.status,
                by: entry.decided_by.clone(),
            };
            return (result, None);
        }
        if let Some(why) = refusal(entry, &self.ballot, self.configured) {
            return (VoteResult::NotAuthorized { why }, None);
        }
        if entry.has_voted(&self.ballot.approver, self.ballot.idp.as_ref()) {
            return (VoteResult::AlreadyVoted, None);
        }
        let decision = |status, break_glass| Decision {
            status,
            by: Some(self.ballot.approver.clone()),
            reason: self
                .ballot
                .reason
                .clone()
                .or_else(|| self.ballot.break_glass.clone()),
            break_glass,
            at: self.now,
        };
        let quorum = entry.requested.quorum.max(1);
        let approvals = entry.approvals() as u32 + u32::from(self.ballot.approve);
        match (self.ballot.approve, &self.ballot.break_glass) {
            (false, _) => (
                VoteResult::Decided {
                    status: Status::Denied,
                },
                Some(decision(Status::Denied, false)),
            ),
            (true, Some(_)) => (
                VoteResult::Decided {
                    status: Status::Approved,
                },
                Some(decision(Status::Approved, true)),
            ),
            (true, None) if approvals >= quorum => (
                VoteResult::Decided {
                    status: Status::Approved,
                },
                Some(decision(Status::Approved, false)),
            ),
            _ => (VoteResult::Counted { approvals, quorum }, None),
        }
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
        let ballot = &self.ballot;
        let idp = recorded_idp(ballot, entry);
        let vote = ApprovalVote {
            approval_id: self.id,
            approver: ballot.approver.clone(),
            vote: if ballot.approve {
                Choice::Approve
            } else {
                Choice::Deny
            },
            reason: ballot.reason.clone(),
            source: ballot.source.clone(),
            authenticated: authenticated(ballot),
            evidence: ballot.evidence.clone(),
            break_glass: ballot.break_glass.is_some(),
            justification: ballot.break_glass.clone(),
            idp: idp.clone(),
            result: serde_json::to_value(&result).expect("a vote result serialises"),
            at_ms: self.now,
            agent: self.row.agent.clone(),
            server: self.row.server.clone(),
            tool: self.row.tool.clone(),
        };
        let choice = vote.vote;
        let mut events = vec![event(
            self.row.call_id,
            &ballot.approver,
            AuditEvent::ApprovalVote(vote),
        )];
        if let (Some(decision), Some(entry)) = (&decision, entry) {
            let mut entry = entry.clone();
            if self.counted {
                entry.votes.push(CountedVote {
                    approver: ballot.approver.clone(),
                    vote: choice,
                    reason: ballot.reason.clone(),
                    source: ballot.source.clone(),
                    at_ms: self.now,
                    idp,
                });
            }
            events.push(decided_event(&entry, decision));
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
                store::insert_vote(conn, self.id, &self.ballot, self.now).await?;
            }
            if let Some(decision) = &self.decision {
                store::decide(conn, self.id, decision).await?;
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
        None => json!({"method": "chat", "verified_by": ballot.source}),
    }
}

/// Ends a pending approval without a vote: expiry (only once it is due) or cancellation.
pub(super) struct Close {
    pub ledger: Shared,
    pub id: Uuid,
    pub decision: Decision,
    /// Set by `decide`: whether this closed it.
    pub closed: bool,
}

impl Transition for Close {
    /// Changes to different approvals share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        Some(("approval", self.id.to_string()))
    }

    fn decide(&mut self) -> Vec<NewEvent> {
        let ledger = self.ledger.lock().expect("ledger lock");
        let Some(entry) = ledger.get(self.id) else {
            return Vec::new();
        };
        let due = self.decision.status != Status::Expired
            || entry.requested.expires_at_ms <= self.decision.at;
        if entry.status != Status::Pending || !due {
            return Vec::new();
        }
        self.closed = true;
        vec![decided_event(entry, &self.decision)]
    }

    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        if self.closed {
            write_decision(conn, self.id, &self.decision)
        } else {
            Box::pin(std::future::ready(Ok(())))
        }
    }
}

/// Uses an approval's grant for one call and records the forward, together: the check is on
/// the ledger, so a row forged in the `approvals` table runs nothing.
pub(super) struct Forward {
    pub ledger: Shared,
    pub id: Uuid,
    pub call_id: Uuid,
    pub binding: Binding,
    pub forwarded: CallForwarded,
    /// What the working table said (an approved row the ledger disagrees with is an alert).
    pub row_status: Status,
    pub now: i64,
    /// Set by `decide`: why the grant may not be used, if it may not.
    pub refused: Option<String>,
}

impl Transition for Forward {
    /// Changes to different approvals share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        Some(("approval", self.id.to_string()))
    }

    fn decide(&mut self) -> Vec<NewEvent> {
        let ledger = self.ledger.lock().expect("ledger lock");
        match ledger.grant(self.id, &self.binding, self.now) {
            Ok(_) => vec![event(
                self.call_id,
                "countersign",
                AuditEvent::CallForwarded(self.forwarded.clone()),
            )],
            Err(why) => {
                let forged = self.row_status == Status::Approved
                    && ledger
                        .get(self.id)
                        .is_some_and(|e| e.status != Status::Approved);
                self.refused = Some(why.clone());
                if forged {
                    tracing::error!(alert = "approval-row-forged", approval = %self.id, "the approvals table says approved, the audit log does not: the call is refused");
                    let alert = AuditAlert {
                        what: "approval row forged".into(),
                        approval_id: Some(self.id),
                        detail: format!(
                            "the approvals table says approved, but {why}; the call was not run"
                        ),
                    };
                    return vec![event(
                        self.call_id,
                        "countersign",
                        AuditEvent::AuditAlert(alert),
                    )];
                }
                Vec::new()
            }
        }
    }

    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if self.refused.is_none() {
                store::consume(conn, self.id, self.call_id).await?;
            }
            Ok(())
        })
    }
}

/// A second approver's review of a break-glass approval.
pub(super) struct Review {
    pub ledger: Shared,
    pub id: Uuid,
    pub reviewer: String,
    pub note: String,
    pub authenticated: Value,
    /// Set by `decide`: why the review is not accepted, if it is not.
    pub refused: Option<String>,
}

impl Transition for Review {
    /// Changes to different approvals share a commit.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        Some(("approval", self.id.to_string()))
    }

    fn decide(&mut self) -> Vec<NewEvent> {
        let ledger = self.ledger.lock().expect("ledger lock");
        let entry = match ledger.get(self.id) {
            Some(entry) if entry.break_glass && !entry.reviewed => entry,
            _ => {
                self.refused = Some(format!(
                    "approval {} is not a break-glass approval awaiting review",
                    self.id
                ));
                return Vec::new();
            }
        };
        if entry.decided_by.as_deref() == Some(self.reviewer.as_str()) {
            self.refused = Some("a break-glass approval is reviewed by another approver".into());
            return Vec::new();
        }
        if !entry.requested.eligible.contains(&self.reviewer) {
            self.refused = Some(format!(
                "{} is not an approver for this call",
                self.reviewer
            ));
            return Vec::new();
        }
        if self.note.trim().is_empty() {
            self.refused = Some("a review needs a note".into());
            return Vec::new();
        }
        let r = &entry.requested;
        let review = ApprovalReviewed {
            approval_id: self.id,
            reviewer: self.reviewer.clone(),
            note: self.note.clone(),
            authenticated: self.authenticated.clone(),
            agent: r.agent.clone(),
            server: r.server.clone(),
            tool: r.tool.clone(),
        };
        vec![event(
            entry.call_id,
            &self.reviewer,
            AuditEvent::ApprovalReviewed(review),
        )]
    }

    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if self.refused.is_none() {
                store::reviewed(conn, self.id, &self.reviewer).await?;
            }
            Ok(())
        })
    }
}
