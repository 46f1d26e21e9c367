//! Task handles: a call that waits for humans returns at once with a task id; the gateway runs
//! the call itself when it is approved and keeps the outcome for the task's time to live.
//!
//! ```text
//! phase:  policy ─▶ waiting (approval id known) ─▶ forwarded ─▶ done
//! status: working ──────────────────────────────────────────▶ completed | failed | cancelled
//! ```
//!
//! Tasks live in the database, so any replica can answer `tasks/get`, and they outlive the
//! process. The instance running a task holds a lease on it; a task whose lease lapsed is taken
//! over: resumed while it was still waiting for approval, recorded as ambiguous (and never run
//! again) when its call had already been forwarded.

mod table;

use crate::audit::events::{AuditEvent, CallAmbiguous};
use crate::audit::{AuditLog, NewEvent};
use crate::store::Db;
use crate::timestamp::now_ms;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a lease lasts, and how often the owner renews it.
pub const LEASE: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often clients are asked to poll.
const POLL_INTERVAL_MS: i64 = 1_000;
/// Longest time to live a client may ask for.
const MAX_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created; the policy is being applied.
    Policy,
    /// Waiting for the approval named in the task.
    Waiting,
    /// The call went to the upstream.
    Forwarded,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Policy => "policy",
            Phase::Waiting => "waiting",
            Phase::Forwarded => "forwarded",
            Phase::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "policy" => Phase::Policy,
            "waiting" => Phase::Waiting,
            "forwarded" => Phase::Forwarded,
            "done" => Phase::Done,
            _ => return None,
        })
    }
}

/// The MCP task status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Working,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Working => "working",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "working" => TaskStatus::Working,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One task as stored.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: Uuid,
    pub call_id: Uuid,
    pub agent: String,
    /// Answered in the 2026-07-28 extension's shapes, else the 2025-11-25 utility's.
    pub modern: bool,
    /// What it takes to run the call again after a restart (see the gateway's task runner).
    pub call: Value,
    pub phase: Phase,
    pub status: TaskStatus,
    pub status_message: Option<String>,
    pub approval_id: Option<Uuid>,
    /// The tool result, once completed.
    pub result: Option<Value>,
    /// The JSON-RPC error, once failed.
    pub error: Option<Value>,
    pub created_at: i64,
    pub updated_at: i64,
    pub ttl_ms: i64,
    pub poll_ms: i64,
}

impl Task {
    pub fn is_terminal(&self) -> bool {
        self.status != TaskStatus::Working
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// The tasks of this gateway instance and the shared table behind them.
pub struct Tasks {
    db: Db,
    audit: AuditLog,
    /// This process: the owner name on the leases it holds.
    instance: String,
    default_ttl_ms: i64,
    /// Tasks this instance is running, with what stops each and its latest progress.
    running: Mutex<HashMap<Uuid, Runner>>,
}

/// A task running on this instance.
struct Runner {
    stop: CancellationToken,
    /// The latest progress note: kept in memory and shown by this instance's `tasks/get`,
    /// never written per note (ten thousand waiting tasks would otherwise write ten thousand
    /// rows every progress period). The row keeps the phase's message.
    note: Option<String>,
}

impl Tasks {
    pub fn new(db: Db, audit: AuditLog, default_ttl: Duration) -> Arc<Self> {
        Arc::new(Tasks {
            db,
            audit,
            instance: Uuid::now_v7().to_string(),
            default_ttl_ms: default_ttl.as_millis() as i64,
            running: Mutex::default(),
        })
    }

    /// Creates a task durably (before its id is given to the client) and leases it to this
    /// instance. `ttl_ms` is the client's wish, capped.
    pub async fn create(
        &self,
        call_id: Uuid,
        agent: &str,
        modern: bool,
        call: Value,
        ttl_ms: Option<i64>,
    ) -> Result<Task, sqlx::Error> {
        let now = now_ms();
        let task = Task {
            id: Uuid::now_v7(),
            call_id,
            agent: agent.to_owned(),
            modern,
            call,
            phase: Phase::Policy,
            status: TaskStatus::Working,
            status_message: Some("checking the policy".into()),
            approval_id: None,
            result: None,
            error: None,
            created_at: now,
            updated_at: now,
            ttl_ms: ttl_ms
                .filter(|t| *t > 0)
                .unwrap_or(self.default_ttl_ms)
                .min(MAX_TTL_MS),
            poll_ms: POLL_INTERVAL_MS,
        };
        let _turn = self.db.write_turn().await;
        table::insert(
            &self.db,
            &task,
            &self.instance,
            now + LEASE.as_millis() as i64,
        )
        .await?;
        Ok(task)
    }

    /// The task, when it exists and belongs to `agent` (others' tasks do not exist for them).
    pub async fn get(&self, id: Uuid, agent: &str) -> Result<Option<Task>, sqlx::Error> {
        let task = table::get(&self.db, id).await?.filter(|t| t.agent == agent);
        Ok(task.map(|t| self.with_note(t)))
    }

    pub async fn list(&self, agent: &str, limit: i64) -> Result<Vec<Task>, sqlx::Error> {
        let tasks = table::list(&self.db, agent, limit).await?;
        Ok(tasks.into_iter().map(|t| self.with_note(t)).collect())
    }

    /// A working task's status message is its runner's latest note, when it runs here.
    fn with_note(&self, mut task: Task) -> Task {
        if task.status == TaskStatus::Working
            && let Some(note) = self
                .running
                .lock()
                .expect("running lock")
                .get(&task.id)
                .and_then(|r| r.note.clone())
        {
            task.status_message = Some(note);
        }
        task
    }

    pub async fn set_phase(
        &self,
        id: Uuid,
        phase: Phase,
        approval: Option<Uuid>,
        message: &str,
    ) -> Result<bool, sqlx::Error> {
        let turn = self.db.write_turn().await;
        let set = table::set_phase(&self.db, id, phase, approval, message, now_ms()).await;
        drop(turn);
        let set = set?;
        // The new phase's message replaces the last phase's progress.
        if let Some(runner) = self.running.lock().expect("running lock").get_mut(&id) {
            runner.note = None;
        }
        Ok(set)
    }

    /// Records a running task's latest progress (in memory: see [`Runner::note`]).
    pub fn note(&self, id: Uuid, message: &str) {
        if let Some(runner) = self.running.lock().expect("running lock").get_mut(&id) {
            runner.note = Some(message.to_owned());
        }
    }

    /// Records how a task ended, unless it had ended already (a cancel wins over a late result).
    pub async fn finish(
        &self,
        id: Uuid,
        status: TaskStatus,
        message: &str,
        result: Option<&Value>,
        error: Option<&Value>,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.db.write_turn().await;
        table::finish(&self.db, id, status, message, result, error, now_ms()).await
    }

    /// Ends a task whose call had been forwarded by an instance that died: the call may or may
    /// not have run, so it is recorded as ambiguous (`call.ambiguous`) and never run again.
    pub async fn end_ambiguous(&self, task: &Task) -> Result<(), TaskError> {
        let message = "The gateway stopped while this call was running: it may or may not have run, and it was not retried. Check the tool's effects before calling it again.";
        let error = json!({"code": crate::jsonrpc::code::SERVER_ERROR, "message": message, "data": {"callId": task.call_id}});
        if !self
            .finish(task.id, TaskStatus::Failed, message, None, Some(&error))
            .await?
        {
            return Ok(());
        }
        let text = |key: &str| {
            task.call
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let ambiguous = CallAmbiguous {
            agent: Some(task.agent.clone()),
            server: text("upstream"),
            tool: text("tool"),
            forwarded_at: None,
            task_id: Some(task.id),
            approval_id: task.approval_id,
            reason: "the gateway instance running the call stopped before recording its end".into(),
        };
        let event = NewEvent::new(
            Some(task.call_id),
            "countersign",
            AuditEvent::CallAmbiguous(ambiguous),
        );
        self.audit.append(event).await?;
        Ok(())
    }

    /// Cancels a working task: marks it cancelled, and stops its runner when it runs here
    /// (another instance's runner stops at its next lease renewal).
    pub async fn cancel(&self, id: Uuid, message: &str) -> Result<bool, sqlx::Error> {
        let cancelled = self
            .finish(id, TaskStatus::Cancelled, message, None, None)
            .await?;
        if cancelled && let Some(runner) = self.running.lock().expect("running lock").get(&id) {
            runner.stop.cancel();
        }
        Ok(cancelled)
    }

    /// Registers a runner on this instance; the token stops it.
    pub fn started(&self, id: Uuid) -> CancellationToken {
        let stop = CancellationToken::new();
        let runner = Runner {
            stop: stop.clone(),
            note: None,
        };
        self.running
            .lock()
            .expect("running lock")
            .insert(id, runner);
        stop
    }

    pub fn stopped(&self, id: Uuid) {
        self.running.lock().expect("running lock").remove(&id);
    }

    /// Takes over the tasks whose owner died; the caller resumes or ends each. At start-up on
    /// SQLite (one process per database file) every working task is an orphan, whatever its
    /// lease says: the process that held it is gone.
    pub async fn claim_orphans(&self, at_startup: bool) -> Result<Vec<Task>, sqlx::Error> {
        let now = now_ms();
        let until = now + LEASE.as_millis() as i64;
        let sole_process = at_startup && self.db.backend == crate::store::Backend::Sqlite;
        let lapsed_before = if sole_process { i64::MAX } else { now };
        let mut claimed = Vec::new();
        for task in table::orphans(&self.db, lapsed_before).await? {
            let turn = self.db.write_turn().await;
            let claimed_it =
                table::claim(&self.db, task.id, &self.instance, lapsed_before, until).await?;
            drop(turn);
            if claimed_it {
                claimed.push(task);
            }
        }
        Ok(claimed)
    }

    /// Until `shutdown`: renews this instance's leases (stopping runners whose task was
    /// cancelled elsewhere), and purges ended tasks past their time to live. `orphans` is told
    /// when tasks of a dead instance were taken over.
    pub fn spawn_keeper(
        self: &Arc<Self>,
        shutdown: CancellationToken,
        orphans: impl Fn(Vec<Task>) + Send + Sync + 'static,
    ) {
        let tasks = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(tasks) = tasks.upgrade() else { break };
                if let Err(e) = tasks.keep(&orphans).await {
                    tracing::warn!(error = %e, "could not renew task leases");
                }
            }
        });
    }

    async fn keep(&self, orphans: &impl Fn(Vec<Task>)) -> Result<(), sqlx::Error> {
        let mine: Vec<Uuid> = self
            .running
            .lock()
            .expect("running lock")
            .keys()
            .copied()
            .collect();
        let until = now_ms() + LEASE.as_millis() as i64;
        let turn = self.db.write_turn().await;
        let lost = table::renew(&self.db, &self.instance, &mine, until).await;
        drop(turn);
        for lost in lost? {
            if let Some(runner) = self.running.lock().expect("running lock").get(&lost) {
                runner.stop.cancel();
            }
        }
        let claimed = self.claim_orphans(false).await?;
        if !claimed.is_empty() {
            orphans(claimed);
        }
        let _turn = self.db.write_turn().await;
        table::purge(&self.db, now_ms()).await?;
        Ok(())
    }
}
