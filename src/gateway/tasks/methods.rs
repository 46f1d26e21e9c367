//! The `tasks/*` methods: `tasks/get` and `tasks/cancel` in both eras, `tasks/result` and
//! `tasks/list` (2025-11-25); `tasks/update` only exists in 2026-07-28, where no task asks for
//! input.

use super::shapes::{error, legacy_task, modern_detailed};
use super::{EXTENSION, declares_extension};
use crate::gateway::{Caller, Gateway, Reply};
use crate::jsonrpc::{self, code};
use crate::protocol::Era;
use crate::tasks::{Task, TaskStatus, Tasks};
use crate::upstream::ClientContext;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long `tasks/result` (2025-11-25) blocks at most before answering with the task as it is.
const RESULT_WAIT: Duration = Duration::from_secs(300);

impl Gateway {
    /// `tasks/get`, `tasks/cancel`, and (2025-11-25) `tasks/result` and `tasks/list`.
    pub(in crate::gateway) async fn task_method(
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
        if let Some(refusal) = outside_era(&method, modern, &caller.client) {
            return reply(Err(refusal));
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

/// The error for a method the client's era does not have, or a 2026-07-28 client that did
/// not declare the tasks extension.
fn outside_era(method: &str, modern: bool, client: &ClientContext) -> Option<Value> {
    if modern && matches!(method, "tasks/result" | "tasks/list") {
        return Some(error(
            code::METHOD_NOT_FOUND,
            format!("{method} is not part of 2026-07-28; tasks/get carries the result"),
        ));
    }
    if !modern && method == "tasks/update" {
        return Some(error(
            code::METHOD_NOT_FOUND,
            "tasks/update is not part of 2025-11-25",
        ));
    }
    if modern && !declares_extension(client) {
        let mut missing = error(
            code::MISSING_CLIENT_CAPABILITY,
            format!(
                "{method} needs the {EXTENSION} extension in the request's client capabilities"
            ),
        );
        missing["data"] = json!({"requiredCapabilities": {"extensions": {EXTENSION: {}}}});
        return Some(missing);
    }
    None
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
