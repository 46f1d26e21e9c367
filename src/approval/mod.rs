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
mod eligibility;
pub mod http;
pub mod ledger;
pub mod limits;
mod notify;
mod store;
mod transitions;

pub use directory::Directory;
pub use notify::{CallSummary, Notifier, NotifyError};
/// Approving votes counted so far (chat backends show it on decided cards).
pub use store::count_approvals;
pub use store::{Approval, Status};

use crate::audit::events::{
    ApprovalRequested, ApprovalSeen, AuditEvent, BreakGlassGrant, CallForwarded, IdpVoter,
    VoteRejected,
};
use crate::audit::{AuditLog, NewEvent};
use crate::call::{Progress, ToolCall};
use crate::policy::ApprovalSpec;
use crate::store::Db;
use ledger::{Binding, Feed, Ledger};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use transitions::{Cast, Close, Decision, Forward, Open, Review};
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
    /// Proof kept in the audit log (e.g. a signed chat payload). The built-in channels put
    /// how the approver was authenticated under `authenticated`.
    pub evidence: Value,
    /// A break-glass approval: decides alone, needs a written justification, flagged in audit.
    pub break_glass: Option<String>,
    /// Who the identity provider says the voter is, with their groups: set only by the
    /// console's OpenID Connect sign-in (never from a request body), and counted only for
    /// `source: console`.
    pub idp: Option<IdpVoter>,
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

/// How a held call may go on once its approval is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantUse {
    /// The grant was used by this call and `call.forwarded` is recorded: it may run.
    Forwarded,
    /// The call may not run; the agent reads why.
    Refused(String),
}

type Wakers = Arc<Mutex<HashMap<Uuid, watch::Sender<()>>>>;

/// The state shared by the gate, the approver API and the CLI.
pub struct Broker {
    db: Db,
    audit: AuditLog,
    directory: Arc<Directory>,
    /// Every open approval, as the verified audit log tells it.
    ledger: Arc<Mutex<Ledger>>,
    /// Wakes local waiters when a decision is committed or seen in the log.
    wakers: Wakers,
    /// Approvals whose working row says decided while the ledger says pending (see
    /// `find_changed_rows`): their waiters read the row once.
    changed_rows: Mutex<std::collections::HashSet<Uuid>>,
    /// Where approvers are asked: every configured chat backend.
    chats: Vec<Arc<dyn Notifier>>,
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

/// An open approval, as a call waiting on it needs it.
struct Waiting {
    expires_at_ms: i64,
    approvals: usize,
    quorum: u32,
}

impl Waiting {
    fn of_row(approval: &Approval, approvals: i64) -> Waiting {
        Waiting {
            expires_at_ms: approval.expires_at,
            approvals: usize::try_from(approvals).unwrap_or_default(),
            quorum: approval.spec.quorum,
        }
    }

    fn progress_text(&self, id: Uuid) -> String {
        let left = (self.expires_at_ms - now_ms()).max(0) / 1000;
        format!(
            "waiting for approval {id}: {}/{} approvals, expires in {left} s",
            self.approvals, self.quorum
        )
    }
}

impl Broker {
    /// A broker whose ledger is rebuilt from the verified log (the approvals that may still
    /// be decided, used or reviewed) before it answers anything.
    pub async fn new(
        db: Db,
        audit: AuditLog,
        directory: Arc<Directory>,
        chats: Vec<Arc<dyn Notifier>>,
    ) -> Result<Arc<Self>, BrokerError> {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let wakers: Wakers = Arc::default();
        let feed = Feed {
            ledger: ledger.clone(),
            decided: Box::new({
                let wakers = wakers.clone();
                move |id| wake(&wakers, id)
            }),
        };
        let from = store::replay_from(&db).await?;
        audit.attach(Arc::new(feed), from).await?;
        Ok(Arc::new(Broker {
            db,
            audit,
            directory,
            ledger,
            wakers,
            changed_rows: Mutex::default(),
            chats,
            updates: tokio_util::task::TaskTracker::new(),
            progress_every_ms: (PROGRESS_EVERY.as_millis() as u64).into(),
        }))
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
        let keys = self.audit.keys();
        let seal = |v: &Value| keys.seal(v);
        let approval = Approval::new(
            call,
            args_sha256,
            policy_version,
            rule,
            spec,
            now_ms(),
            seal,
        );
        let requested = ApprovalRequested {
            approval_id: approval.id,
            agent: approval.agent.clone(),
            on_behalf_of: approval.on_behalf_of.clone(),
            server: approval.server.clone(),
            tool: approval.tool.clone(),
            args_sha256: args_sha256.to_owned(),
            policy_version: policy_version.to_owned(),
            rule: rule.to_owned(),
            approvers: spec.approvers.clone(),
            approver_groups: spec.approver_groups.clone(),
            eligible: self
                .directory
                .resolve(&spec.approvers, &spec.approver_groups),
            eligible_groups: self.directory.idp_groups(&spec.approver_groups),
            quorum: spec.quorum,
            allow_self_approval: spec.allow_self_approval,
            break_glass: spec.break_glass.as_ref().map(|b| BreakGlassGrant {
                eligible: self.directory.resolve(&b.approvers, &b.approver_groups),
                min_justification: b.min_justification,
            }),
            expires_at_ms: approval.expires_at,
            classification: spec.classification.clone(),
            channel: spec.channel.clone(),
            arguments: approval.arguments.clone(),
        };
        let open = Open {
            ledger: self.ledger.clone(),
            approval,
            requested,
            joined: None,
        };
        let (open, _) = self.audit.transact(open).await?;
        if let Some(joined) = open.joined {
            return Ok((self.get(joined).await?, true));
        }
        let a = &open.approval;
        tracing::info!(
            approval = %a.id,
            agent = %a.agent,
            server = %a.server,
            tool = %a.tool,
            rule = %a.rule,
            quorum = a.spec.quorum,
            answer = %format!(
                "countersign approvals approve|deny {} (or POST /approvals/{}/approve|deny)",
                a.id, a.id
            ),
            "approval requested"
        );
        self.announce(&open.approval).await?;
        Ok((open.approval, false))
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
            // While the approval is open the ledger answers: a waiting call costs no database
            // read, however many wait. The row is read once it is decided.
            let changed = self
                .changed_rows
                .lock()
                .expect("changed rows lock")
                .remove(&id);
            let open = match self.open_in_ledger(id).filter(|_| !changed) {
                Some(open) => open,
                None => {
                    let approval = self.get(id).await?;
                    if approval.status != Status::Pending {
                        return Ok(approval);
                    }
                    Waiting::of_row(&approval, store::count_approvals(&self.db, id).await?)
                }
            };
            if open.expires_at_ms <= now_ms() {
                self.expire(id).await?;
                continue;
            }
            if tokio::time::Instant::now() >= next_report {
                progress.report(open.progress_text(id));
                next_report += self.progress_every();
            }
            let until_expiry = Duration::from_millis((open.expires_at_ms - now_ms()).max(0) as u64);
            let until_report = next_report.saturating_duration_since(tokio::time::Instant::now());
            let _ = tokio::time::timeout(until_expiry.min(until_report), wake.changed()).await;
        }
    }

    /// An approval the ledger holds open, as a waiter needs it.
    fn open_in_ledger(&self, id: Uuid) -> Option<Waiting> {
        let ledger = self.ledger.lock().expect("ledger lock");
        let entry = ledger.get(id).filter(|e| e.status == Status::Pending)?;
        Some(Waiting {
            expires_at_ms: entry.requested.expires_at_ms,
            approvals: entry.approvals(),
            quorum: entry.requested.quorum,
        })
    }

    pub async fn get(&self, id: Uuid) -> Result<Approval, BrokerError> {
        store::get(&self.db, id)
            .await?
            .ok_or(BrokerError::NotFound(id))
    }

    pub async fn list(&self, status: Option<Status>) -> Result<Vec<Approval>, BrokerError> {
        Ok(store::list(&self.db, status).await?)
    }

    /// Who approved `id` so far, in order (from the working table, for display).
    pub async fn approvers(&self, id: Uuid) -> Result<Vec<String>, BrokerError> {
        Ok(store::approvers(&self.db, id).await?)
    }

    /// Records a vote and decides the approval when it should, on the state the verified log
    /// tells. Every vote is audited, whether it counted or not.
    pub async fn vote(&self, id: Uuid, ballot: Ballot) -> Result<VoteResult, BrokerError> {
        let row = self.get(id).await?;
        let configured = self.directory.get(&ballot.approver).is_some();
        let source = ballot.source.clone();
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
                report_decided(&decided, *status, &source);
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

    /// Marks a pending approval expired once it is due (a concurrent decision wins).
    async fn expire(&self, id: Uuid) -> Result<(), BrokerError> {
        let decision = Decision {
            status: Status::Expired,
            by: None,
            reason: Some("the approval timed out".into()),
            break_glass: false,
            at: now_ms(),
        };
        self.close(id, decision).await.map(drop)
    }

    async fn close(&self, id: Uuid, decision: Decision) -> Result<bool, BrokerError> {
        let close = Close {
            ledger: self.ledger.clone(),
            id,
            decision,
            closed: false,
        };
        let (close, _) = self.audit.transact(close).await?;
        if close.closed {
            let decided = self.get(id).await?;
            let channel = match close.decision.status {
                Status::Expired => "expiry",
                _ => "agent",
            };
            report_decided(&decided, close.decision.status, channel);
            self.wake(id);
            self.tell_decided(decided);
        }
        Ok(close.closed)
    }

    /// Expires every overdue approval (run periodically; waiting calls also expire their own).
    pub async fn expire_due(&self) -> Result<usize, BrokerError> {
        let due = store::overdue(&self.db, now_ms()).await?;
        for approval in &due {
            self.expire(approval.id).await?;
        }
        Ok(due.len())
    }

    /// Withdraws a pending approval.
    pub async fn cancel(&self, id: Uuid, by: &str, reason: &str) -> Result<bool, BrokerError> {
        let decision = Decision {
            status: Status::Cancelled,
            by: Some(by.to_owned()),
            reason: Some(reason.to_owned()),
            break_glass: false,
            at: now_ms(),
        };
        self.close(id, decision).await
    }

    /// Uses approval `approval`'s grant for `call` and records `forwarded`, in one commit;
    /// only if the verified log holds an approved decision for exactly this call, by enough
    /// distinct eligible approvers, with the grant unused and unexpired.
    pub async fn forward(
        &self,
        approval: &Approval,
        call: &ToolCall,
        args_sha256: &str,
        forwarded: CallForwarded,
    ) -> Result<GrantUse, BrokerError> {
        let binding = Binding {
            agent: call.agent.id.to_string(),
            server: call.upstream.to_string(),
            tool: call.tool.clone(),
            args_sha256: args_sha256.to_owned(),
            policy_version: approval.policy_version.clone(),
        };
        let forward = Forward {
            ledger: self.ledger.clone(),
            id: approval.id,
            call_id: call.id,
            binding,
            forwarded,
            row_status: approval.status,
            now: now_ms(),
            refused: None,
        };
        let (forward, _) = self.audit.transact(forward).await?;
        Ok(match forward.refused {
            None => GrantUse::Forwarded,
            Some(why) => GrantUse::Refused(why),
        })
    }

    /// Records a second approver's review of a break-glass approval (`approval.reviewed`).
    pub async fn review(
        &self,
        id: Uuid,
        reviewer: &str,
        note: &str,
        authenticated: Value,
    ) -> Result<Result<(), String>, BrokerError> {
        let review = Review {
            ledger: self.ledger.clone(),
            id,
            reviewer: reviewer.to_owned(),
            note: note.to_owned(),
            authenticated,
            refused: None,
        };
        let (review, _) = self.audit.transact(review).await?;
        Ok(match review.refused {
            None => Ok(()),
            Some(why) => Err(why),
        })
    }

    /// Records who saw an approval request (`approval.seen`).
    pub async fn seen(&self, approval: &Approval, sighting: Sighting) -> Result<(), BrokerError> {
        let seen = ApprovalSeen {
            approval_id: approval.id,
            who: sighting.who.clone(),
            source: sighting.source,
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
    /// result `rejected`.
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

    fn waker(&self, id: Uuid) -> watch::Receiver<()> {
        let mut wakers = self.wakers.lock().expect("wakers lock");
        wakers
            .entry(id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    fn wake(&self, id: Uuid) {
        wake(&self.wakers, id);
    }

    /// Until `shutdown`, twice a second: expires overdue approvals, and has the audit writer
    /// read what other processes (the CLI, another replica) appended, which wakes the local
    /// waiters of approvals decided there.
    pub fn spawn_watch(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(broker) = broker.upgrade() else {
                    break;
                };
                if let Err(e) = broker.watch_once().await {
                    tracing::warn!(error = %e, "could not check approvals");
                }
            }
        });
    }

    async fn watch_once(&self) -> Result<(), BrokerError> {
        self.expire_due().await?;
        if !self.wakers.lock().expect("wakers lock").is_empty() {
            // Even when the writer cannot catch up (forged events in the log), a changed row
            // wakes its waiters: they then fail at the grant, not wait to the expiry.
            let synced = self.audit.sync().await;
            self.find_changed_rows().await?;
            synced?;
        }
        Ok(())
    }

    /// Waiters read the ledger, not the working table: a row changed by hand to say decided
    /// would go unnoticed. So once per watch, one query (not one per waiter) looks for rows
    /// that say decided where the ledger, caught up with the log, still says pending; their
    /// waiters read the row, and the grant check refuses it and raises the alert.
    async fn find_changed_rows(&self) -> Result<(), BrokerError> {
        let waited: Vec<Uuid> = self
            .wakers
            .lock()
            .expect("wakers lock")
            .keys()
            .copied()
            .collect();
        let decided = store::decided_among(&self.db, &waited).await?;
        for id in decided {
            if self.open_in_ledger(id).is_some() {
                self.changed_rows
                    .lock()
                    .expect("changed rows lock")
                    .insert(id);
                self.wake(id);
            }
        }
        Ok(())
    }
}

/// One INFO line per decision, in the process that took it.
/// Logs a decision this gateway made and counts it in the metrics.
fn report_decided(approval: &Approval, status: Status, channel: &str) {
    let waited = approval.decided_at.unwrap_or_else(now_ms) - approval.created_at;
    crate::telemetry::approval_decided(&crate::telemetry::Decided {
        outcome: status.as_str(),
        channel,
        rule: &approval.rule,
        server: &approval.server,
        tool: &approval.tool,
        agent: &approval.agent,
        waited: std::time::Duration::from_millis(waited.max(0) as u64),
    });
    tracing::info!(
        channel,
        approval = %approval.id,
        outcome = status.as_str(),
        by = approval.decided_by.as_deref().unwrap_or("countersign"),
        break_glass = approval.break_glass,
        reason = approval.reason.as_deref().unwrap_or(""),
        "approval decided"
    );
}

fn wake(wakers: &Wakers, id: Uuid) {
    if let Some(waker) = wakers.lock().expect("wakers lock").remove(&id) {
        let _ = waker.send(());
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    crate::timestamp::now_ms()
}

/// Hex SHA-256 of the canonical form of the arguments (RFC 8785 with exact 64-bit integers,
/// see [`crate::canonical`]): what a grant is bound to.
pub fn arguments_digest(arguments: &Value) -> String {
    crate::canonical::sha256_hex(arguments)
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
            arguments_digest(&serde_json::json!({"a": [2, 1], "b": 1}))
        );
    }
}
