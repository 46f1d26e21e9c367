//! What approvers do, recorded: a vote (judged on the ledger, counted only if the voter is
//! eligible), whether a vote could count (asked by the console and chat before they ask for
//! more), a vote attempt a chat backend refused, and who saw a request.

use super::broker::report_decided;
use super::eligibility;
use super::transitions::Cast;
use super::{Approval, Ballot, Broker, BrokerError, Sighting, VoteResult};
use crate::audit::NewEvent;
use crate::audit::events::{ApprovalSeen, AuditEvent, VoteRejected};
use crate::timestamp::now_ms;
use serde_json::Value;
use uuid::Uuid;

impl Broker {
    /// Records a vote and decides the approval when it should, on the state the verified log
    /// tells. Every vote is audited, whether it counted or not.
    pub async fn vote(&self, id: Uuid, ballot: Ballot) -> Result<VoteResult, BrokerError> {
        let row = self.get(id).await?;
        let configured = self.directory.get(&ballot.approver).is_some();
        let source = ballot.source;
        let (approver, approve) = (ballot.approver.clone(), ballot.approve);
        let cast = Cast::new(
            self.ledger.clone(),
            row.clone(),
            ballot,
            configured,
            now_ms(),
        );
        let (cast, _) = self.audit.transact(cast).await?;
        let result = cast.result.clone().unwrap_or(VoteResult::AlreadyVoted);
        if matches!(
            result,
            VoteResult::Counted { .. } | VoteResult::Decided { .. }
        ) {
            crate::telemetry::approval_vote(&approver, approve);
        }
        match &result {
            VoteResult::Decided { status } => {
                let decided = self.get(id).await?;
                report_decided(&decided, *status, source.as_str());
                self.wake(id);
                self.tell_decided(decided);
            }
            VoteResult::Counted { approvals, .. } => self.tell_progressed(row, *approvals),
            _ => {}
        }
        Ok(result)
    }

    /// Why `ballot` may not count, if it may not. The agent never approves its own call; the
    /// human behind it only when the policy allows; others only when the policy names them.
    /// (Public so a chat backend can check before asking the voter for more, e.g. a reason;
    /// the vote itself is judged again on the ledger.)
    pub fn refusal(&self, approval: &Approval, ballot: &Ballot) -> Option<String> {
        let configured = self.directory.get(&ballot.approver).is_some();
        let ledger = self.ledger.lock().expect("ledger lock");
        match ledger.get(approval.id) {
            Some(entry) => eligibility::refusal(entry, ballot, configured),
            None => Some(format!("approval {} is not open", approval.id)),
        }
    }

    /// Records who saw an approval request (`approval.seen`).
    pub async fn seen(&self, approval: &Approval, sighting: Sighting) -> Result<(), BrokerError> {
        let seen = ApprovalSeen {
            approval_id: approval.id,
            who: sighting.who.clone(),
            source: sighting.source.to_string(),
            how: sighting.how,
            evidence: sighting.evidence,
        };
        let event = NewEvent::new(
            Some(approval.call_id),
            sighting.who,
            AuditEvent::ApprovalSeen(seen),
        );
        self.audit.append(event).await?;
        Ok(())
    }

    /// Records a vote attempt a chat backend refused before it reached the ballot box (a forged
    /// or replayed token, a bad signature, a click on the wrong post): `approval.vote` with
    /// result `rejected`. `source` is the backend's name ([`super::Notifier::name`]).
    pub async fn rejected(
        &self,
        approval: &Approval,
        source: &str,
        who: &str,
        why: &str,
        evidence: Value,
    ) -> Result<(), BrokerError> {
        let rejected = VoteRejected {
            approval_id: approval.id,
            approver: who.to_owned(),
            source: source.to_owned(),
            evidence,
            result: VoteRejected::result(why),
            agent: approval.agent.clone(),
            server: approval.server.clone(),
            tool: approval.tool.clone(),
        };
        let event = NewEvent::new(
            Some(approval.call_id),
            who,
            AuditEvent::VoteRejected(rejected),
        );
        self.audit.append(event).await?;
        Ok(())
    }
}
