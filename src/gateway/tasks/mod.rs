//! Calls that become tasks, and the `tasks/*` methods, in both eras' shapes.
//!
//! A client that takes tasks (2026-07-28: the `io.modelcontextprotocol/tasks` extension
//! declared in the request's client capabilities; 2025-11-25: a `task` parameter on the call)
//! gets a task handle at once for a call the policy holds for humans, instead of a response held
//! open. The gateway then runs the call itself, on the same path as any call
//! ([`super::pipeline`]), and keeps its outcome. A 2025-11-25 client that asks for a task always
//! gets one, as that era requires.
//!
//! * `mod.rs`: starting a task, resuming tasks after a restart, and running one;
//! * `stored.rs`: what a task stores of its call, and reading it back;
//! * `methods.rs`: `tasks/get`, `tasks/cancel`, `tasks/result`, `tasks/list`;
//! * `shapes.rs`: a task as each era shows it.

mod methods;
mod shapes;
mod stored;

use super::call::Accepted;
use super::gate::{CallGate, Outcome, Progress};
use super::pipeline::{ReplyTo, RoutedCall, SendHooks};
use super::{Caller, Gateway, Reply};
use crate::jsonrpc::{self, code};
use crate::protocol::Era;
use crate::tasks::{Phase, Task, TaskStatus, Tasks};
use crate::telemetry::CallRecord;
use crate::upstream::ClientContext;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// The 2026-07-28 tasks extension.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// How a client asked for a task.
pub(super) enum TaskAsk {
    /// 2026-07-28: the server decides; a task only when the call waits for humans.
    Modern,
    /// 2025-11-25: the client asked (with an optional time to live, ms).
    Legacy { ttl_ms: Option<i64> },
}

impl TaskAsk {
    pub(super) fn of(caller: &Caller, message: &Value) -> Option<TaskAsk> {
        match caller.client.era {
            Era::Modern => declares_extension(&caller.client).then_some(TaskAsk::Modern),
            Era::Legacy => {
                let task = jsonrpc::params(message)?.get("task")?.as_object()?;
                let ttl_ms = task.get("ttl").and_then(Value::as_i64);
                Some(TaskAsk::Legacy { ttl_ms })
            }
        }
    }
}

fn declares_extension(client: &ClientContext) -> bool {
    client
        .capabilities
        .get("extensions")
        .and_then(|e| e.get(EXTENSION))
        .is_some()
}

/// What a task needs to run its call, and to run it again after a restart.
struct TaskCall {
    routed: RoutedCall,
    /// The name the client called the tool by.
    exposed: String,
}

impl Gateway {
    /// Starts an accepted call as a task: created durably, run in the background, answered
    /// at once.
    pub(super) async fn start_task(
        &self,
        tasks: &Arc<Tasks>,
        ask: TaskAsk,
        accepted: Accepted,
    ) -> Reply {
        let Accepted {
            mut routed,
            exposed,
            record,
            ..
        } = accepted;
        let id = routed.message["id"].clone();
        if let Some(params) = jsonrpc::params_mut(&mut routed.message) {
            params.remove("task");
        }
        let (modern, ttl_ms) = match ask {
            TaskAsk::Modern => (true, None),
            TaskAsk::Legacy { ttl_ms } => (false, ttl_ms),
        };
        let run = TaskCall { routed, exposed };
        let (call_id, agent) = (run.routed.call.id, run.routed.call.agent.id.clone());
        let task = match tasks
            .create(call_id, &agent, modern, run.to_json(), ttl_ms)
            .await
        {
            Ok(task) => task,
            Err(e) => {
                record.finish(Outcome::TaskUnavailable);
                tracing::error!(call = %call_id, error = %e, "could not create a task; the call was not run");
                let message = format!(
                    "Countersign could not create a task for this call ({e}); it was not run."
                );
                return Reply::Response(jsonrpc::error(Some(id), code::INTERNAL_ERROR, message));
            }
        };
        let answer = shapes::created(&task);
        let runner = TaskRunner::new(tasks.clone(), task.id);
        tokio::spawn(runner.run(self.gate.clone(), run, None, Some(record)));
        Reply::Response(jsonrpc::result(id, answer))
    }

    /// Picks up tasks whose gateway instance died: resumes those still waiting for approval,
    /// and records those whose call had gone out as ambiguous.
    pub(super) async fn resume_tasks(&self, tasks: &Arc<Tasks>, orphans: Vec<Task>) {
        for task in orphans {
            if task.phase == Phase::Forwarded {
                tracing::warn!(task = %task.id, call = %task.call_id, "a call was running when its gateway stopped: recorded as ambiguous");
                if let Err(e) = tasks.end_ambiguous(&task).await {
                    tracing::error!(task = %task.id, error = %e, "could not record an ambiguous call");
                }
                continue;
            }
            match self.rebuild(&task).await {
                Ok(run) => {
                    tracing::info!(task = %task.id, approval = ?task.approval_id, "resuming a task after a restart");
                    let runner = TaskRunner::new(tasks.clone(), task.id);
                    tokio::spawn(runner.run(self.gate.clone(), run, task.approval_id, None));
                }
                Err(why) => {
                    let why = why.to_string();
                    let error = json!({"code": code::INTERNAL_ERROR, "message": why});
                    let _ = tasks
                        .finish(task.id, TaskStatus::Failed, &why, None, Some(&error))
                        .await;
                }
            }
        }
    }
}

/// Runs one task's call on the call's path, and keeps what happens in the task's row.
struct TaskRunner {
    tasks: Arc<Tasks>,
    task_id: Uuid,
}

impl TaskRunner {
    fn new(tasks: Arc<Tasks>, task_id: Uuid) -> Self {
        TaskRunner { tasks, task_id }
    }

    /// Runs the call through the gate and upstream (resuming the wait on `resume` after a
    /// restart), and stores how it ended. Progress becomes the task's status message.
    async fn run(
        self,
        gate: Arc<dyn CallGate>,
        run: TaskCall,
        resume: Option<Uuid>,
        record: Option<CallRecord>,
    ) {
        let stop = self.tasks.started(self.task_id);
        let (progress, notes) = Progress::new(Some(json!(self.task_id.to_string())));
        let progress = progress.for_task(self.on_hold());
        let hooks = SendHooks {
            resume,
            before_send: Some(self.before_send()),
            stopping: None,
        };
        let reply_to = ReplyTo {
            record,
            ..ReplyTo::default()
        };
        let mut stream = run.routed.run(gate, (progress, notes), hooks, reply_to);
        let response = loop {
            let message = tokio::select! {
                _ = stop.cancelled() => break None,
                message = stream.next() => message,
            };
            let Some(message) = message else { break None };
            if message.get("id").is_some() && jsonrpc::method(&message).is_none() {
                break Some(message);
            }
            if let Some(note) = message.pointer("/params/message").and_then(Value::as_str) {
                self.tasks.note(self.task_id, note);
            }
        };
        // Dropping the stream withdraws the approval request, or cancels the call upstream.
        drop(stream);
        self.tasks.stopped(self.task_id);
        if let Some(response) = response {
            self.store_outcome(&response).await;
        }
    }

    /// Records the approval the call waits on (the task's phase becomes `waiting`).
    fn on_hold(&self) -> impl Fn(Uuid) + Send + Sync + 'static {
        let (tasks, task_id) = (self.tasks.clone(), self.task_id);
        move |approval: Uuid| {
            let tasks = tasks.clone();
            tokio::spawn(async move {
                let message = format!("waiting for approval {approval}");
                if let Err(e) = tasks
                    .set_phase(task_id, Phase::Waiting, Some(approval), &message)
                    .await
                {
                    tracing::error!(task = %task_id, error = %e, "could not record a task's approval");
                }
            });
        }
    }

    /// Makes the task durably `forwarded` before its call goes: after a crash it is
    /// ambiguous, never run again. The call is not sent when that cannot be recorded.
    fn before_send(&self) -> Box<dyn FnOnce() -> BoxFuture<'static, bool> + Send> {
        let (tasks, task_id) = (self.tasks.clone(), self.task_id);
        Box::new(move || {
            Box::pin(async move {
                let sent = tasks
                    .set_phase(task_id, Phase::Forwarded, None, "running")
                    .await;
                sent.unwrap_or_else(|e| {
                    tracing::error!(task = %task_id, error = %e, "could not record a task's call going out; not sending it");
                    false
                })
            })
        })
    }

    /// Stores the call's final response as the task's result or error.
    async fn store_outcome(&self, response: &Value) {
        let (status, message, result, error) = match (response.get("result"), response.get("error"))
        {
            (Some(result), _) => {
                let message = result
                    .pointer("/content/0/text")
                    .and_then(Value::as_str)
                    .filter(|_| result.get("isError") == Some(&Value::Bool(true)))
                    .unwrap_or("completed");
                (TaskStatus::Completed, message, Some(result), None)
            }
            (None, Some(error)) => {
                let message = error.get("message").and_then(Value::as_str);
                (
                    TaskStatus::Failed,
                    message.unwrap_or("failed"),
                    None,
                    Some(error),
                )
            }
            _ => {
                let message = "the upstream answered without a result";
                (TaskStatus::Failed, message, None, None)
            }
        };
        let stored = self
            .tasks
            .finish(self.task_id, status, message, result, error)
            .await;
        if let Err(e) = stored {
            tracing::error!(task = %self.task_id, error = %e, "could not store a task's outcome");
        }
    }
}
