//! Calls that become tasks, and the `tasks/*` methods, in both eras' shapes.
//!
//! A client that takes tasks (2026-07-28: the `io.modelcontextprotocol/tasks` extension
//! declared in the request's client capabilities; 2025-11-25: a `task` parameter on the call)
//! gets a task handle at once for a call the policy holds for humans, instead of a response held
//! open. The gateway then runs the call itself — the same gated path as any call — and keeps
//! its outcome. A 2025-11-25 client that asks for a task always gets one, as that era requires.

use super::call::{SendHooks, gate_then_send};
use super::reply::{Completion, Gated};
use super::seam::{Progress, ToolCall};
use super::{Caller, Gateway, Reply, ReplyStream};
use crate::auth::Agent;
use crate::jsonrpc::{self, code};
use crate::protocol::Era;
use crate::tasks::{Phase, Task, TaskStatus, Tasks};
use crate::telemetry::CallRecord;
use crate::upstream::{ClientContext, Upstream};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The 2026-07-28 tasks extension.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// How long `tasks/result` (2025-11-25) blocks at most before answering with the task as it is.
const RESULT_WAIT: Duration = Duration::from_secs(300);

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
    call: ToolCall,
    exposed: String,
    upstream: Arc<Upstream>,
    upstream_index: usize,
    message: Value,
    client: ClientContext,
}

impl TaskCall {
    fn to_json(&self) -> Value {
        json!({
            "exposed": self.exposed, "upstream": self.call.upstream.as_ref(), "tool": self.call.tool,
            "agent": {"id": self.call.agent.id.as_ref(), "on_behalf_of": self.call.agent.on_behalf_of.as_deref(), "groups": self.call.agent.groups.as_ref()},
            "message": self.message,
            "client": {"era": if self.client.era == Era::Modern { "modern" } else { "legacy" },
                       "protocol_version": self.client.protocol_version, "capabilities": self.client.capabilities},
        })
    }
}

impl Gateway {
    /// Starts `call` as a task: created durably, run in the background, answered at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_task(
        &self,
        tasks: &Arc<Tasks>,
        ask: TaskAsk,
        call: ToolCall,
        exposed: &str,
        upstream_index: usize,
        mut message: Value,
        client: ClientContext,
        record: CallRecord,
    ) -> Reply {
        let id = message["id"].clone();
        if let Some(params) = jsonrpc::params_mut(&mut message) {
            params.remove("task");
        }
        let (modern, ttl_ms) = match ask {
            TaskAsk::Modern => (true, None),
            TaskAsk::Legacy { ttl_ms } => (false, ttl_ms),
        };
        let run = TaskCall {
            call,
            exposed: exposed.to_owned(),
            upstream: self.upstreams[upstream_index].clone(),
            upstream_index,
            message,
            client,
        };
        let task = match tasks
            .create(
                run.call.id,
                &run.call.agent.id,
                modern,
                run.to_json(),
                ttl_ms,
            )
            .await
        {
            Ok(task) => task,
            Err(e) => {
                record.finish(crate::call::Outcome::TaskUnavailable);
                tracing::error!(call = %run.call.id, error = %e, "could not create a task; the call was not run");
                return Reply::Response(jsonrpc::error(
                    Some(id),
                    code::INTERNAL_ERROR,
                    format!(
                        "Countersign could not create a task for this call ({e}); it was not run."
                    ),
                ));
            }
        };
        let answer = created(&task);
        tokio::spawn(run_task(
            tasks.clone(),
            task.id,
            self.gate.clone(),
            run,
            None,
            Some(record),
        ));
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
                    tokio::spawn(run_task(
                        tasks.clone(),
                        task.id,
                        self.gate.clone(),
                        run,
                        task.approval_id,
                        None,
                    ));
                }
                Err(why) => {
                    let error = json!({"code": code::INTERNAL_ERROR, "message": why});
                    let _ = tasks
                        .finish(task.id, TaskStatus::Failed, &why, None, Some(&error))
                        .await;
                }
            }
        }
    }

    /// The call of a stored task, against today's catalog.
    async fn rebuild(&self, task: &Task) -> Result<TaskCall, String> {
        let stored = &task.call;
        let text = |pointer: &str| {
            stored
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let exposed = text("/exposed").ok_or("the stored task is incomplete")?;
        let upstream_name = text("/upstream").ok_or("the stored task is incomplete")?;
        let route = match self.snapshot().tool(&exposed) {
            Some(route) => route.clone(),
            None => {
                self.refresh_all().await;
                self.snapshot().tool(&exposed).cloned().ok_or_else(|| {
                    format!("the tool {exposed} is no longer offered; the call was not run")
                })?
            }
        };
        let upstream = self.upstreams[route.upstream].clone();
        if *upstream.name != *upstream_name {
            return Err(format!(
                "the tool {exposed} moved to another server; the call was not run"
            ));
        }
        let message = stored
            .get("message")
            .cloned()
            .ok_or("the stored task is incomplete")?;
        let groups: Vec<String> = stored
            .pointer("/agent/groups")
            .and_then(|g| serde_json::from_value(g.clone()).ok())
            .unwrap_or_default();
        let agent = Agent {
            id: task.agent.as_str().into(),
            on_behalf_of: text("/agent/on_behalf_of").map(Into::into),
            groups: groups.into(),
        };
        let call = ToolCall {
            id: task.call_id,
            agent,
            upstream: upstream_name.as_str().into(),
            tool: route.name.clone(),
            arguments: message
                .pointer("/params/arguments")
                .cloned()
                .unwrap_or_else(|| json!({})),
            definition: route.tool.clone(),
        };
        let client = ClientContext {
            era: if text("/client/era").as_deref() == Some("modern") {
                Era::Modern
            } else {
                Era::Legacy
            },
            protocol_version: text("/client/protocol_version").unwrap_or_default(),
            capabilities: stored
                .pointer("/client/capabilities")
                .cloned()
                .unwrap_or_else(|| json!({})),
            mirrored_headers: Vec::new(),
        };
        Ok(TaskCall {
            call,
            exposed,
            upstream,
            upstream_index: route.upstream,
            message,
            client,
        })
    }

    /// `tasks/get`, `tasks/cancel`, and (2025-11-25) `tasks/result` and `tasks/list`.
    pub(super) async fn task_method(
        &self,
        tasks: &Tasks,
        caller: &Caller,
        message: Value,
    ) -> Reply {
        let id = message["id"].clone();
        let method = jsonrpc::method(&message).unwrap_or_default().to_owned();
        let modern = caller.client.era == Era::Modern;
        let reply = |answer: Result<Value, Value>| {
            Reply::Response(match answer {
                Ok(result) => jsonrpc::result(id.clone(), result),
                Err(error) => json!({"jsonrpc": "2.0", "id": id.clone(), "error": error}),
            })
        };
        if modern && matches!(method.as_str(), "tasks/result" | "tasks/list") {
            return reply(Err(error(
                code::METHOD_NOT_FOUND,
                format!("{method} is not part of 2026-07-28; tasks/get carries the result"),
            )));
        }
        if !modern && method == "tasks/update" {
            return reply(Err(error(
                code::METHOD_NOT_FOUND,
                "tasks/update is not part of 2025-11-25",
            )));
        }
        if modern && !declares_extension(&caller.client) {
            let mut missing = error(
                code::MISSING_CLIENT_CAPABILITY,
                format!(
                    "{method} needs the {EXTENSION} extension in the request's client capabilities"
                ),
            );
            missing["data"] = json!({"requiredCapabilities": {"extensions": {EXTENSION: {}}}});
            return reply(Err(missing));
        }
        let agent = caller.agent.id.as_ref();
        if method == "tasks/list" {
            return reply(match tasks.list(agent, 100).await {
                Ok(list) => Ok(json!({"tasks": list.iter().map(legacy_task).collect::<Vec<_>>()})),
                Err(e) => Err(error(code::INTERNAL_ERROR, e.to_string())),
            });
        }
        let task = match self.find_task(tasks, agent, &message).await {
            Ok(task) => task,
            Err(e) => return reply(Err(e)),
        };
        reply(match method.as_str() {
            "tasks/get" if modern => Ok(modern_detailed(&task)),
            "tasks/get" => Ok(legacy_task(&task)),
            "tasks/cancel" => self.cancel_task(tasks, task, modern).await,
            "tasks/result" => task_result(tasks, task, agent).await,
            "tasks/update" => Err(error(
                code::INVALID_PARAMS,
                "this task does not ask for input",
            )),
            _ => Err(error(
                code::METHOD_NOT_FOUND,
                format!("unknown method {method}"),
            )),
        })
    }

    async fn find_task(&self, tasks: &Tasks, agent: &str, message: &Value) -> Result<Task, Value> {
        let task_id = jsonrpc::param_str(message, "taskId")
            .ok_or_else(|| error(code::INVALID_PARAMS, "params.taskId is required"))?;
        let unknown = || error(code::INVALID_PARAMS, format!("unknown task {task_id}"));
        let uuid = Uuid::parse_str(task_id).map_err(|_| unknown())?;
        match tasks.get(uuid, agent).await {
            Ok(Some(task)) => Ok(task),
            Ok(None) => Err(unknown()),
            Err(e) => Err(error(code::INTERNAL_ERROR, e.to_string())),
        }
    }

    async fn cancel_task(&self, tasks: &Tasks, task: Task, modern: bool) -> Result<Value, Value> {
        if task.is_terminal() {
            return if modern {
                Ok(json!({"resultType": "complete"}))
            } else {
                Err(error(
                    code::INVALID_PARAMS,
                    format!(
                        "task {} has already ended ({})",
                        task.id,
                        task.status.as_str()
                    ),
                ))
            };
        }
        tasks
            .cancel(task.id, "cancelled by the agent")
            .await
            .map_err(|e| error(code::INTERNAL_ERROR, e.to_string()))?;
        if modern {
            return Ok(json!({"resultType": "complete"}));
        }
        let task = tasks
            .get(task.id, &task.agent)
            .await
            .ok()
            .flatten()
            .unwrap_or(task);
        Ok(legacy_task(&task))
    }
}

/// 2025-11-25 `tasks/result`: waits (bounded) for the task to end, then answers as the call
/// would have.
async fn task_result(tasks: &Tasks, mut task: Task, agent: &str) -> Result<Value, Value> {
    let deadline = Instant::now() + RESULT_WAIT;
    while !task.is_terminal() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(task.poll_ms.clamp(100, 1000) as u64)).await;
        task = match tasks.get(task.id, agent).await {
            Ok(Some(task)) => task,
            Ok(None) => {
                return Err(error(
                    code::INVALID_PARAMS,
                    format!("unknown task {}", task.id),
                ));
            }
            Err(e) => return Err(error(code::INTERNAL_ERROR, e.to_string())),
        };
    }
    let related = json!({"io.modelcontextprotocol/related-task": {"taskId": task.id.to_string()}});
    match task.status {
        TaskStatus::Completed => {
            let mut result = task.result.unwrap_or_else(|| json!({"content": []}));
            result["_meta"] = related;
            Ok(result)
        }
        TaskStatus::Failed => Err(task
            .error
            .unwrap_or_else(|| error(code::INTERNAL_ERROR, "the task failed"))),
        TaskStatus::Cancelled => Err(error(
            code::INVALID_PARAMS,
            format!("task {} was cancelled", task.id),
        )),
        TaskStatus::Working => Err(error(
            code::SERVER_ERROR,
            format!("task {} is still working; ask again", task.id),
        )),
    }
}

/// Runs a task's call through the gate and upstream, and stores how it ended.
async fn run_task(
    tasks: Arc<Tasks>,
    task_id: Uuid,
    gate: Arc<dyn super::CallGate>,
    run: TaskCall,
    resume: Option<Uuid>,
    record: Option<CallRecord>,
) {
    let stop = tasks.started(task_id);
    let (progress, notes) = Progress::new(Some(json!(task_id.to_string())));
    let on_hold = {
        let tasks = tasks.clone();
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
    };
    let progress = progress.for_task(on_hold);
    let before_send = {
        let tasks = tasks.clone();
        Box::new(move || -> futures::future::BoxFuture<'static, bool> {
            Box::pin(async move {
                // Durably "forwarded" before it goes: after a crash it is ambiguous, never re-run.
                let sent = tasks
                    .set_phase(task_id, Phase::Forwarded, None, "running")
                    .await;
                sent.unwrap_or_else(|e| {
                    tracing::error!(task = %task_id, error = %e, "could not record a task's call going out; not sending it");
                    false
                })
            })
        })
    };
    let hooks = SendHooks {
        resume,
        before_send: Some(before_send),
        stopping: None,
    };
    let request_id = run.message["id"].clone();
    let waiting = gate_then_send(
        gate.clone(),
        run.call.clone(),
        progress,
        run.upstream.clone(),
        run.message,
        run.client,
        hooks,
    );
    let gated = Gated {
        waiting: Box::pin(waiting),
        notes,
        completion: Completion::new(gate, run.call),
    };
    let mut stream = ReplyStream::gated(
        gated,
        run.upstream,
        run.upstream_index,
        None,
        request_id,
        record,
    );
    // Progress becomes the task's status message.
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
            tasks.note(task_id, note);
        }
    };
    // Dropping the stream withdraws the approval request, or cancels the call upstream.
    drop(stream);
    tasks.stopped(task_id);
    let Some(response) = response else { return };
    let stored = match (response.get("result"), response.get("error")) {
        (Some(result), _) => {
            let message = result
                .pointer("/content/0/text")
                .and_then(Value::as_str)
                .filter(|_| result.get("isError") == Some(&Value::Bool(true)))
                .unwrap_or("completed");
            tasks
                .finish(task_id, TaskStatus::Completed, message, Some(result), None)
                .await
        }
        (None, Some(error)) => {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("failed");
            tasks
                .finish(task_id, TaskStatus::Failed, message, None, Some(error))
                .await
        }
        _ => {
            tasks
                .finish(
                    task_id,
                    TaskStatus::Failed,
                    "the upstream answered without a result",
                    None,
                    None,
                )
                .await
        }
    };
    if let Err(e) = stored {
        tracing::error!(task = %task_id, error = %e, "could not store a task's outcome");
    }
}

fn error(code: i64, message: impl Into<String>) -> Value {
    json!({"code": code, "message": message.into()})
}

fn timestamp(ms: i64) -> String {
    crate::audit::format_timestamp(ms * 1000)
}

/// 2026-07-28 `CreateTaskResult`: flat, `resultType: "task"`.
fn created(task: &Task) -> Value {
    if task.modern {
        let mut shown = modern_task(task);
        shown["resultType"] = json!("task");
        shown
    } else {
        json!({
            "task": legacy_task(task),
            "_meta": {"io.modelcontextprotocol/model-immediate-response":
                "This call waits for human approval; poll the task for its result."},
        })
    }
}

fn modern_task(task: &Task) -> Value {
    let mut shown = json!({
        "taskId": task.id.to_string(), "status": task.status.as_str(),
        "createdAt": timestamp(task.created_at), "lastUpdatedAt": timestamp(task.updated_at),
        "ttlMs": task.ttl_ms, "pollIntervalMs": task.poll_ms,
    });
    if let Some(message) = &task.status_message {
        shown["statusMessage"] = json!(message);
    }
    shown
}

/// 2026-07-28 `tasks/get`: the task, with the result or error inlined once it ended.
fn modern_detailed(task: &Task) -> Value {
    let mut shown = modern_task(task);
    shown["resultType"] = json!("complete");
    match task.status {
        TaskStatus::Completed => shown["result"] = task.result.clone().unwrap_or(Value::Null),
        TaskStatus::Failed => shown["error"] = task.error.clone().unwrap_or(Value::Null),
        _ => {}
    }
    shown
}

/// 2025-11-25 `Task`.
fn legacy_task(task: &Task) -> Value {
    let mut shown = json!({
        "taskId": task.id.to_string(), "status": task.status.as_str(),
        "createdAt": timestamp(task.created_at), "lastUpdatedAt": timestamp(task.updated_at),
        "ttl": task.ttl_ms, "pollInterval": task.poll_ms,
    });
    if let Some(message) = &task.status_message {
        shown["statusMessage"] = json!(message);
    }
    shown
}
