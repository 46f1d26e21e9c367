//! How a task is shown to a client, in each era's shape.

use crate::tasks::{Task, TaskStatus};
use serde_json::{Value, json};

pub(super) fn error(code: i64, message: impl Into<String>) -> Value {
    json!({"code": code, "message": message.into()})
}

fn timestamp(ms: i64) -> String {
    crate::timestamp::rfc3339_micros(ms * 1000)
}

/// 2026-07-28 `CreateTaskResult`: flat, `resultType: "task"`.
pub(super) fn created(task: &Task) -> Value {
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
pub(super) fn modern_detailed(task: &Task) -> Value {
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
pub(super) fn legacy_task(task: &Task) -> Value {
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
