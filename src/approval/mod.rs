//! The approval broker: a persisted state machine for human consent to one exact call.
//!
//! ```text
//! pending ──▶ approved ──(grant used once)──▶ the call runs
//!    ├──────▶ denied     (one authorized deny decides at once)
//!    ├──────▶ expired    (expiry denies, never approves)
//!    └──────▶ cancelled
//! ```
//!
//! Votes come from distinct authorized approvers; the requesting agent and (unless the policy
//! allows it) the requester's own human never count. Every transition is a compare-and-set in
//! the database, so double clicks, simultaneous votes and votes after the end are answered and
//! recorded but never applied twice. Waiting lives in the database too: a restart loses nothing,
//! and waiters poll it, so a vote cast by another process (the CLI, another replica) is seen.

pub mod cli;
mod directory;
pub mod http;
pub mod limits;
mod store;

pub use directory::Directory;
/// Approving votes counted so far (chat backends show it on decided cards).
pub use store::count_approvals;
pub use store::{Approval, Status};

use crate::audit::{AuditLog, EventKind, NewEvent};
use crate::chat::{CallSummary, ChatBackend};
use crate::gateway::{Progress, ToolCall};
use crate::policy::ApprovalSpec;
use crate::store::Db;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// How often the broker looks for decisions made by other processes, and for expiries.
const POLL: Duration = Duration::from_millis(500);
/// How often a waiting call reports progress to its client, unless configured.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("approval store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("no approval {0}")]
    NotFound(Uuid),
    #[error("{0}")]
    Invalid(String),
}

/// One approver's vote.
#[derive(Debug, Clone)]
pub struct Ballot {
    pub approver: String,
    pub approve: bool,
    /// Why (required for a deny through the built-in channels).
    pub reason: Option<String>,
    /// Where the vote came from: `cli`, `http`, `mattermost`, …
    pub source: String,
    /// Proof kept in the audit log (e.g. a signed chat payload).
    pub evidence: Value,
    /// A break-glass approval: decides alone, needs a written justification, flagged in audit.
    pub break_glass: Option<String>,
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum VoteResult {
    /// Counted; the approval is still pending.
    Counted { approvals: u32, quorum: u32 },
    /// This vote decided the approval.
    Decided { status: Status },
    /// Not counted: the voter may not decide this call.
    NotAuthorized { why: String },
    /// The approval had already ended (double click, late vote, or another approver first).
    AlreadyDecided { status: Status, by: Option<String> },
    /// This approver had already voted.
    AlreadyVoted,
}

/// The state shared by the gate, the approver API and the CLI.
pub struct Broker {
    db: Db,
    audit: AuditLog,
    directory: Arc<Directory>,
    /// Wakes local waiters at once when a local vote or expiry decides (others poll).
    wakers: Mutex<HashMap<Uuid, watch::Sender<()>>>,
    /// Where approvers are asked: every configured chat backend.
    chats: Vec<Arc<dyn ChatBackend>>,
    /// Chat updates in flight, so a short-lived process (the CLI) can wait for them.
    updates: tokio_util::task::TaskTracker,
    /// How often a waiting call reports progress (milliseconds).
    progress_every_ms: std::sync::atomic::AtomicU64,
}

/// Who saw an approval request, and how (`approval.seen` in the audit log).
#[derive(Debug, Clone)]
pub struct Sighting {
    /// The approver id when the chat user maps to one; else the chat user as the backend names it.
    pub who: String,
    /// The backend: `mattermost`, `matrix`, …
    pub source: String,
    /// `audience` (was in the channel when the card was posted), `reaction`, `acknowledgement`,
    /// `read_receipt`, `click`, …
    pub how: String,
    /// What the chat server sent, kept as evidence.
    pub evidence: Value,
}

impl Broker {
    pub fn new(
        db: Db,
        audit: AuditLog,
        directory: Arc<Directory>,
        chats: Vec<Arc<dyn ChatBackend>>,
    ) -> Arc<Self> {
        Arc::new(Broker {
            db,
            audit,
            directory,
            wakers: Mutex::default(),
            chats,
            updates: tokio_util::task::TaskTracker::new(),
            progress_every_ms: (PROGRESS_EVERY.as_millis() as u64).into(),
        })
    }

    pub fn chats(&self) -> &[Arc<dyn ChatBackend>] {
        &self.chats
    }

    /// Sets how often a waiting call reports progress (at least once a second).
    pub fn set_progress_every(&self, every: Duration) {
        let ms = every.max(Duration::from_secs(1)).as_millis() as u64;
        self.progress_every_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn progress_every(&self) -> Duration {
        let ms = self
            .progress_every_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(ms)
    }

    /// Waits for the chat updates already started (before a short-lived process exits).
    pub async fn flush_updates(&self) {
        self.updates.close();
        self.updates.wait().await;
        self.updates.reopen();
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Opens an approval for `call`, or joins the one for the same exact call (same agent,
    /// server, tool, arguments and policy version) that is pending, or approved with its grant
    /// unused. Returns it and whether it was joined.
    pub async fn request(
        &self,
        call: &ToolCall,
        args_sha256: &str,
        policy_version: &str,
        rule: &str,
        spec: &ApprovalSpec,
    ) -> Result<(Approval, bool), BrokerError> {
        let now = now_ms();
        if let Some(pending) =
            store::find_joinable(&self.db, call, args_sha256, policy_version, now).await?
        {
            return Ok((pending, true));
        }
        let approval = Approval::new(call, args_sha256, policy_version, rule, spec, now);
        store::insert(&self.db, &approval).await?;
        self.audit
            .append(NewEvent {
                call_id: Some(call.id),
                kind: EventKind::ApprovalRequested,
                actor: "countersign".into(),
                payload: json!({
                    "approval_id": approval.id, "agent": call.agent.id.as_ref(), "server": call.upstream.as_ref(),
                    "tool": call.tool, "approvers": spec.approvers, "approver_groups": spec.approver_groups,
                    "quorum": spec.quorum, "allow_self_approval": spec.allow_self_approval,
                    "expires_at_ms": approval.expires_at, "rule": rule, "policy_version": policy_version,
                    "classification": spec.classification, "channel": spec.channel, "arguments": approval.arguments,
                }),
            })
            .await?;
        self.announce(&approval).await?;
        Ok((approval, false))
    }

    /// Posts the card to every chat backend. When backends are configured and none could post
    /// it, nobody can decide: the approval is cancelled (and the call refused).
    async fn announce(&self, approval: &Approval) -> Result<(), BrokerError> {
        if self.chats.is_empty() {
            return Ok(());
        }
        let posts = self.chats.iter().map(|chat| chat.requested(approval));
        let mut failures = Vec::new();
        for (chat, posted) in self
            .chats
            .iter()
            .zip(futures::future::join_all(posts).await)
        {
            if let Err(e) = posted {
                tracing::error!(approval = %approval.id, backend = chat.name(), error = %e, "could not post the approval card");
                failures.push(e.to_string());
            }
        }
        if failures.len() == self.chats.len() {
            let reason = format!("no approver could be asked: {}", failures.join("; "));
            self.cancel(approval.id, "countersign", &reason).await?;
        }
        Ok(())
    }

    /// Waits until the approval leaves `pending` (or expires), reporting progress to the client.
    pub async fn wait(&self, id: Uuid, progress: &Progress) -> Result<Approval, BrokerError> {
        let mut next_report = tokio::time::Instant::now();
        loop {
            // Subscribe before reading, so a decision between the two still wakes us.
            let mut wake = self.waker(id);
            let approval = self.get(id).await?;
            if approval.status != Status::Pending {
                return Ok(approval);
            }
            if approval.expires_at <= now_ms() {
                self.expire(&approval).await?;
                continue;
            }
            if tokio::time::Instant::now() >= next_report {
                progress.report(self.progress_text(&approval).await?);
                next_report += self.progress_every();
            }
            let until_expiry =
                Duration::from_millis((approval.expires_at - now_ms()).max(0) as u64);
            let until_report = next_report.saturating_duration_since(tokio::time::Instant::now());
            let _ = tokio::time::timeout(until_expiry.min(until_report), wake.changed()).await;
        }
    }

    async fn progress_text(&self, approval: &Approval) -> Result<String, BrokerError> {
        let approvals = store::count_approvals(&self.db, approval.id).await?;
        let left = (approval.expires_at - now_ms()).max(0) / 1000;
        Ok(format!(
            "waiting for approval {}: {approvals}/{} approvals, expires in {left} s",
            approval.id, approval.spec.quorum
        ))
    }

    pub async fn get(&self, id: Uuid) -> Result<Approval, BrokerError> {
        store::get(&self.db, id)
            .await?
            .ok_or(BrokerError::NotFound(id))
    }

    pub async fn list(&self, status: Option<Status>) -> Result<Vec<Approval>, BrokerError> {
        Ok(store::list(&self.db, status).await?)
    }

    /// Records a vote and decides the approval when it should. Every vote is audited, whether
    /// it counted or not.
    pub async fn vote(&self, id: Uuid, ballot: Ballot) -> Result<VoteResult, BrokerError> {
        let approval = self.get(id).await?;
        if let Some(why) = self.refusal(&approval, &ballot) {
            let result = VoteResult::NotAuthorized { why };
            self.audit_vote(&approval, &ballot, &result).await?;
            return Ok(result);
        }
        let result = store::vote(&self.db, &approval, &ballot, now_ms()).await?;
        self.audit_vote(&approval, &ballot, &result).await?;
        match &result {
            VoteResult::Decided { status } => {
                let decided = self.get(id).await?;
                self.audit_decided(&decided, *status).await?;
                self.wake(id);
                self.tell_decided(decided);
            }
            VoteResult::Counted { approvals, .. } => self.tell_progressed(approval, *approvals),
            _ => {}
        }
        Ok(result)
    }

    /// Why `ballot` may not count, if it may not. The agent never approves its own call; the
    /// human behind it only when the policy allows; others only when the policy names them.
    /// (Public so a chat backend can check before asking the voter for more, e.g. a reason.)
    pub fn refusal(&self, approval: &Approval, ballot: &Ballot) -> Option<String> {
        let who = ballot.approver.as_str();
        if who == approval.agent {
            return Some("the requesting agent cannot vote on its own call".into());
        }
        let Some(person) = self.directory.get(who) else {
            return Some(format!("{who} is not a configured approver"));
        };
        if approval.on_behalf_of.as_deref() == Some(who) && !approval.spec.allow_self_approval {
            return Some(format!(
                "{who} asked for this call (the agent acts on their behalf) and may not approve it"
            ));
        }
        let named = approval.spec.approvers.iter().any(|a| a == who);
        let in_group = person
            .groups
            .iter()
            .any(|g| approval.spec.approver_groups.contains(g));
        if !(named || in_group) {
            return Some(format!("{who} is not an approver for this call"));
        }
        if ballot
            .break_glass
            .as_deref()
            .is_some_and(|j| j.trim().is_empty())
        {
            return Some("a break-glass approval needs a written justification".into());
        }
        // The built-in channels ask for a reason; a chat reaction cannot carry one.
        let asks_reason = matches!(ballot.source.as_str(), "cli" | "http");
        if !ballot.approve
            && asks_reason
            && ballot.reason.as_deref().is_none_or(|r| r.trim().is_empty())
        {
            return Some("a deny needs a reason".into());
        }
        None
    }

    /// Marks a pending approval expired (compare-and-set; a concurrent decision wins).
    async fn expire(&self, approval: &Approval) -> Result<(), BrokerError> {
        if store::decide(
            &self.db,
            approval.id,
            Status::Expired,
            None,
            Some("the approval timed out"),
            false,
            now_ms(),
        )
        .await?
        {
            let expired = self.get(approval.id).await?;
            self.audit_decided(&expired, Status::Expired).await?;
            self.wake(approval.id);
            self.tell_decided(expired);
        }
        Ok(())
    }

    /// Expires every overdue approval (run periodically; waiting calls also expire their own).
    pub async fn expire_due(&self) -> Result<usize, BrokerError> {
        let due = store::overdue(&self.db, now_ms()).await?;
        for approval in &due {
            self.expire(approval).await?;
        }
        Ok(due.len())
    }

    /// Withdraws a pending approval.
    pub async fn cancel(&self, id: Uuid, by: &str, reason: &str) -> Result<bool, BrokerError> {
        let cancelled = store::decide(
            &self.db,
            id,
            Status::Cancelled,
            Some(by),
            Some(reason),
            false,
            now_ms(),
        )
        .await?;
        if cancelled {
            let approval = self.get(id).await?;
            self.audit_decided(&approval, Status::Cancelled).await?;
            self.wake(id);
            self.tell_decided(approval);
        }
        Ok(cancelled)
    }

    /// Uses an approved grant for `call_id`: once, and only for the exact call it was given for.
    pub async fn consume(
        &self,
        approval: &Approval,
        call: &ToolCall,
        args_sha256: &str,
    ) -> Result<bool, BrokerError> {
        let exact = approval.agent == *call.agent.id
            && approval.server == *call.upstream
            && approval.tool == call.tool
            && approval.args_sha256 == args_sha256;
        if !exact || approval.status != Status::Approved || approval.expires_at <= now_ms() {
            return Ok(false);
        }
        Ok(store::consume(&self.db, approval.id, call.id).await?)
    }

    /// Records who saw an approval request (`approval.seen`).
    pub async fn seen(&self, approval: &Approval, sighting: Sighting) -> Result<(), BrokerError> {
        let event = NewEvent {
            call_id: Some(approval.call_id),
            kind: EventKind::ApprovalSeen,
            actor: sighting.who.clone(),
            payload: json!({
                "approval_id": approval.id, "who": sighting.who, "source": sighting.source,
                "how": sighting.how, "evidence": sighting.evidence,
            }),
        };
        self.audit.append(event).await?;
        Ok(())
    }

    /// Records a vote attempt a chat backend refused before it reached the ballot box (a forged
    /// or replayed token, a bad signature, a click on the wrong post): `approval.vote` with
    /// result `rejected`.
    pub async fn rejected(
        &self,
        approval: &Approval,
        source: &str,
        who: &str,
        why: &str,
        evidence: Value,
    ) -> Result<(), BrokerError> {
        let payload = json!({
            "approval_id": approval.id, "approver": who, "source": source, "evidence": evidence,
            "result": {"result": "rejected", "why": why},
            "agent": approval.agent, "server": approval.server, "tool": approval.tool,
        });
        let event = NewEvent {
            call_id: Some(approval.call_id),
            kind: EventKind::ApprovalVote,
            actor: who.to_owned(),
            payload,
        };
        self.audit.append(event).await?;
        Ok(())
    }

    /// Tells the chat backends that an approved call ran (a reply in the card's thread).
    pub fn call_finished(&self, approval: Approval, call: CallSummary) {
        for chat in &self.chats {
            let (chat, approval, call) = (chat.clone(), approval.clone(), call.clone());
            self.updates
                .spawn(async move { chat.finished(&approval, &call).await });
        }
    }

    /// Chat updates run on their own tasks: a slow chat server never holds up a decision.
    fn tell_decided(&self, approval: Approval) {
        for chat in &self.chats {
            let (chat, approval) = (chat.clone(), approval.clone());
            self.updates
                .spawn(async move { chat.decided(&approval).await });
        }
    }

    fn tell_progressed(&self, approval: Approval, approvals: u32) {
        for chat in &self.chats {
            let (chat, approval) = (chat.clone(), approval.clone());
            self.updates
                .spawn(async move { chat.progressed(&approval, approvals).await });
        }
    }

    async fn audit_vote(
        &self,
        approval: &Approval,
        ballot: &Ballot,
        result: &VoteResult,
    ) -> Result<(), BrokerError> {
        let payload = json!({
            "approval_id": approval.id, "approver": ballot.approver, "vote": if ballot.approve { "approve" } else { "deny" },
            "reason": ballot.reason, "source": ballot.source, "evidence": ballot.evidence,
            "break_glass": ballot.break_glass.is_some(), "justification": ballot.break_glass,
            "result": result, "agent": approval.agent, "server": approval.server, "tool": approval.tool,
        });
        let event = NewEvent {
            call_id: Some(approval.call_id),
            kind: EventKind::ApprovalVote,
            actor: ballot.approver.clone(),
            payload,
        };
        self.audit.append(event).await?;
        Ok(())
    }

    async fn audit_decided(&self, approval: &Approval, status: Status) -> Result<(), BrokerError> {
        let payload = json!({
            "approval_id": approval.id, "outcome": status.as_str(), "decided_by": approval.decided_by,
            "reason": approval.reason, "break_glass": approval.break_glass,
            "agent": approval.agent, "server": approval.server, "tool": approval.tool,
            "approvers": store::votes(&self.db, approval.id).await?,
        });
        let actor = approval
            .decided_by
            .clone()
            .unwrap_or_else(|| "countersign".into());
        let event = NewEvent {
            call_id: Some(approval.call_id),
            kind: EventKind::ApprovalDecided,
            actor,
            payload,
        };
        self.audit.append(event).await?;
        Ok(())
    }

    fn waker(&self, id: Uuid) -> watch::Receiver<()> {
        let mut wakers = self.wakers.lock().expect("wakers lock");
        wakers
            .entry(id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    fn wake(&self, id: Uuid) {
        if let Some(waker) = self.wakers.lock().expect("wakers lock").remove(&id) {
            let _ = waker.send(());
        }
    }

    /// Until `shutdown`, twice a second: expires overdue approvals, and wakes the local waiters
    /// of approvals decided elsewhere (the CLI, another replica). One query for all waiters.
    pub fn spawn_watch(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            let mut since = now_ms();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(broker) = broker.upgrade() else {
                    break;
                };
                let now = now_ms();
                if let Err(e) = broker.watch_once(since).await {
                    tracing::warn!(error = %e, "could not check approvals");
                }
                // Overlap the windows a little: a decision committed late in one tick is seen.
                since = now - POLL.as_millis() as i64;
            }
        });
    }

    async fn watch_once(&self, since: i64) -> Result<(), BrokerError> {
        self.expire_due().await?;
        if self.wakers.lock().expect("wakers lock").is_empty() {
            return Ok(());
        }
        for id in store::decided_since(&self.db, since).await? {
            self.wake(id);
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as i64
}

/// Hex SHA-256 of the RFC 8785 canonical form of the arguments: what a grant is bound to.
pub fn arguments_digest(arguments: &Value) -> String {
    use sha2::{Digest, Sha256};
    let canonical =
        serde_json_canonicalizer::to_vec(arguments).expect("a JSON value canonicalises");
    Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_key_order_and_whitespace() {
        let a = serde_json::from_str::<Value>(r#"{"b": 1, "a": [1, 2]}"#).unwrap();
        let b = serde_json::from_str::<Value>(r#"{"a":[1,2],"b":1}"#).unwrap();
        assert_eq!(arguments_digest(&a), arguments_digest(&b));
        assert_ne!(
            arguments_digest(&a),
            arguments_digest(&json!({"a": [2, 1], "b": 1}))
        );
    }
}
