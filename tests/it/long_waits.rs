//! Long waits: task handles in both eras, cancellation per era, and restarts (`kill -9`) with
//! approvals pending and calls running.

use crate::app::{
    AGENT_KEY, Agent, Approval, Approver, Client, TestApp, TestAppBuilder, Vote, text,
};
use crate::peers::{Sdk, run_client};
use crate::support::{Backend, modern_meta, post};
use crate::wait;
use serde_json::{Value, json};
use std::time::Duration;

const EXT: &str = "io.modelcontextprotocol/tasks";

const POLICY: &str = r#"
defaults: {verdict: allow}
rules:
  - id: deletes-need-bob
    match: {tool: delete_record}
    verdict: approve
    approvers: [bob]
    quorum: 1
    timeout: 5m
  - id: slow-counts-need-bob
    match: {tool: slow_count}
    verdict: approve
    approvers: [bob]
    quorum: 1
    timeout: 5m
"#;

/// The key of agent `agent-2`.
const OTHER_KEY: &str = "other-key";

/// [`POLICY`], agents `agent-1` ([`AGENT_KEY`]) and `agent-2` ([`OTHER_KEY`]) acting for
/// nobody, approver bob and auditor audrey.
fn builder() -> TestAppBuilder {
    TestApp::builder()
        .policy(POLICY)
        .agents(vec![
            Agent::new("agent-1", AGENT_KEY),
            Agent::new("agent-2", OTHER_KEY),
        ])
        .approvers(vec![Approver::new("bob")])
}

async fn setup(backend: Backend) -> TestApp {
    builder().backend(backend).spawn().await
}

/// One 2026-07-28 request as `key`; `tasks` declares the tasks extension. Returns the final
/// message.
async fn modern(app: &Client, key: &str, method: &str, mut params: Value, tasks: bool) -> Value {
    let mut meta = modern_meta();
    if tasks {
        meta["io.modelcontextprotocol/clientCapabilities"] = json!({"extensions": {EXT: {}}});
    }
    params["_meta"] = meta;
    let name = params
        .get("name")
        .or_else(|| params.get("taskId"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    if !name.is_empty() {
        headers.push(("mcp-name", name.as_str()));
    }
    post(&app.url, &headers, &body)
        .await
        .messages()
        .pop()
        .expect("a response")
}

async fn task_call(app: &Client, tool: &str, arguments: Value) -> String {
    let params = json!({"name": format!("echo__{tool}"), "arguments": arguments});
    let created = modern(app, AGENT_KEY, "tools/call", params, true).await;
    let result = &created["result"];
    assert_eq!(result["resultType"], "task", "{created}");
    assert_eq!(result["status"], "working", "{created}");
    assert!(result["ttlMs"].as_i64().is_some_and(|t| t > 0), "{created}");
    assert!(
        result["pollIntervalMs"].as_i64().is_some_and(|t| t > 0),
        "{created}"
    );
    assert!(
        result.get("ttl").is_none() && result.get("task").is_none(),
        "{created}"
    );
    result["taskId"].as_str().unwrap().to_owned()
}

async fn task_get(app: &Client, task: &str) -> Value {
    let got = modern(app, AGENT_KEY, "tasks/get", json!({"taskId": task}), true).await;
    got.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("tasks/get failed: {got}"))
}

/// Polls (bounded) until the task satisfies `done`.
async fn task_until(app: &Client, task: &str, done: impl Fn(&Value) -> bool) -> Value {
    let what = format!("task {task} to get there");
    let done = &done;
    wait::eventually(&what, Duration::from_secs(15), || async move {
        let got = task_get(app, task).await;
        if done(&got) { Ok(got) } else { Err(got) }
    })
    .await
}

/// The first approval in `status` (bounded wait).
async fn approval(app: &Client, status: &str) -> Approval {
    approval_of(app, status, "").await
}

/// The first approval in `status` for `tool` (any tool when empty; bounded wait).
async fn approval_of(app: &Client, status: &str, tool: &str) -> Approval {
    let what = format!("a {status} approval");
    let listed = wait::eventually(&what, Duration::from_secs(30), || async move {
        let (_, list) = app.get(&format!("/approvals?status={status}"), "bob").await;
        let mut matching = list.as_array().into_iter().flatten();
        matching
            .find(|a| tool.is_empty() || a["tool"] == tool)
            .cloned()
    })
    .await;
    serde_json::from_value(listed).unwrap()
}

/// The status of approval `id` once it is `wanted`, or as it stands after a bounded wait.
async fn approval_status_until(app: &Client, id: &str, wanted: &str) -> String {
    let status = wait::within(Duration::from_secs(15), || async move {
        let status = app.approval(id).await.status;
        if status == wanted {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await;
    status.unwrap_or_else(|last| last.unwrap_or_default())
}

/// A call's audit story once it has an event of `kind`, or as it stands after a bounded wait.
async fn story_until(app: &Client, call_id: &str, kind: &str) -> Vec<String> {
    let kinds = wait::within(Duration::from_secs(15), || async move {
        let kinds = app.story(call_id).await;
        if kinds.iter().any(|k| k == kind) {
            Ok(kinds)
        } else {
            Err(kinds)
        }
    })
    .await;
    kinds.unwrap_or_else(|last| last.unwrap_or_default())
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

async fn modern_task_runs_once_approved(backend: Backend) {
    let app = setup(backend).await;
    let task = task_call(&app, "delete_record", json!({"record_id": "r1"})).await;
    let waiting = task_until(&app, &task, |t| {
        t["statusMessage"]
            .as_str()
            .is_some_and(|m| m.contains("approval"))
    })
    .await;
    assert_eq!(waiting["status"], "working");
    assert_eq!(waiting["resultType"], "complete");
    assert!(waiting.get("result").is_none(), "{waiting}");

    // A call the policy allows is answered at once, not as a task.
    let params = json!({"name": "echo__echo", "arguments": {"message": "hi"}});
    let echoed = modern(&app, AGENT_KEY, "tools/call", params, true).await;
    assert_eq!(echoed["result"]["resultType"], "complete", "{echoed}");
    assert_eq!(text(&echoed), "hi");

    let pending = approval(&app, "pending").await;
    let vote = app.vote(&pending.id, "bob", Vote::Approve).await;
    assert_eq!(vote["result"], "decided");
    let done = task_until(&app, &task, |t| t["status"] != "working").await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["content"][0]["text"], "deleted r1", "{done}");

    let kinds = app.story(&pending.call_id).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.completed"), 1, "{kinds:?}");
}

crate::on_both_databases!(modern_task_runs_once_approved: a_held_call_becomes_a_task_on_sqlite, a_held_call_becomes_a_task_on_postgres);

/// A legacy (2025-11-25) session as `agent-1`.
#[derive(Clone)]
struct Legacy {
    url: String,
    session: String,
}

impl Legacy {
    async fn open(app: &Client) -> (Legacy, Value) {
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"0"}}});
        let auth = format!("Bearer {AGENT_KEY}");
        let response = post(&app.url, &[("authorization", auth.as_str())], &init).await;
        let session = response
            .header("mcp-session-id")
            .expect("a session")
            .to_owned();
        let result = response.messages().pop().unwrap()["result"].clone();
        let url = app.url.clone();
        (Legacy { url, session }, result)
    }

    /// `send` in a task of the test runtime (for a request that blocks).
    fn spawn(
        &self,
        id: u64,
        method: &'static str,
        params: Value,
    ) -> tokio::task::JoinHandle<Value> {
        let client = self.clone();
        tokio::spawn(async move { client.send(id, method, params).await })
    }

    async fn send(&self, id: u64, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.post(&body).await
    }

    async fn post(&self, body: &Value) -> Value {
        let auth = format!("Bearer {AGENT_KEY}");
        let headers = [
            ("authorization", auth.as_str()),
            ("mcp-session-id", self.session.as_str()),
            ("mcp-protocol-version", "2025-11-25"),
        ];
        let response = post(&self.url, &headers, body).await;
        if response.text.is_empty() {
            return Value::Null; // 202 Accepted: a notification
        }
        response.messages().pop().unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_client_gets_tasks_when_it_asks() {
    let app = setup(Backend::Sqlite).await;
    let (client, init) = Legacy::open(&app).await;
    assert!(
        init["capabilities"]["tasks"]["requests"]["tools"]["call"].is_object(),
        "{init}"
    );

    // 2025-11-25: asked for, a task even for a call the policy allows.
    let asked =
        json!({"name": "echo__echo", "arguments": {"message": "hi"}, "task": {"ttl": 60000}});
    let created = client.send(1, "tools/call", asked).await;
    let echo_task = created["result"]["task"]["taskId"]
        .as_str()
        .expect("a task")
        .to_owned();
    assert_eq!(created["result"]["task"]["ttl"], 60000, "{created}");
    let result = client
        .send(2, "tasks/result", json!({"taskId": echo_task}))
        .await;
    assert_eq!(text(&result), "hi", "{result}");
    assert_eq!(
        result["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        echo_task.as_str()
    );

    let asked =
        json!({"name": "echo__delete_record", "arguments": {"record_id": "r2"}, "task": {}});
    let created = client.send(3, "tools/call", asked).await;
    let delete_task = created["result"]["task"]["taskId"]
        .as_str()
        .expect("a task")
        .to_owned();
    let blocked = client.spawn(4, "tasks/result", json!({"taskId": delete_task}));
    let pending = approval(&app, "pending").await;
    app.vote(&pending.id, "bob", Vote::Deny(Some("not today")))
        .await;
    let denied = tokio::time::timeout(Duration::from_secs(20), blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    assert!(
        text(&denied).contains("Denied by bob: not today"),
        "{denied}"
    );

    let listed = client.send(5, "tasks/list", json!({})).await;
    let ids: Vec<&str> = listed["result"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["taskId"].as_str())
        .collect();
    assert!(
        ids.contains(&echo_task.as_str()) && ids.contains(&delete_task.as_str()),
        "{listed}"
    );
    let update = client
        .send(6, "tasks/update", json!({"taskId": delete_task}))
        .await;
    assert_eq!(update["error"]["code"], -32601, "{update}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_task_withdraws_its_approval() {
    let app = setup(Backend::Sqlite).await;
    let task = task_call(&app, "delete_record", json!({"record_id": "r3"})).await;
    let pending = approval(&app, "pending").await;
    let cancelled = modern(
        &app,
        AGENT_KEY,
        "tasks/cancel",
        json!({"taskId": task}),
        true,
    )
    .await;
    assert_eq!(
        cancelled["result"],
        json!({"resultType": "complete"}),
        "{cancelled}"
    );
    let withdrawn = approval(&app, "cancelled").await;
    assert_eq!(withdrawn.id, pending.id);
    assert_eq!(withdrawn.decided_by.as_deref(), Some("agent-1"));
    assert_eq!(task_get(&app, &task).await["status"], "cancelled");
    let again = modern(
        &app,
        AGENT_KEY,
        "tasks/cancel",
        json!({"taskId": task}),
        true,
    )
    .await;
    assert_eq!(
        again["result"],
        json!({"resultType": "complete"}),
        "idempotent: {again}"
    );
    let kinds = app.story(&pending.call_id).await;
    assert_eq!(count(&kinds, "call.forwarded"), 0, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_surface_is_guarded() {
    let app = setup(Backend::Sqlite).await;
    let task = task_call(&app, "delete_record", json!({"record_id": "r4"})).await;
    let undeclared = modern(&app, AGENT_KEY, "tasks/get", json!({"taskId": task}), false).await;
    assert_eq!(undeclared["error"]["code"], -32021, "{undeclared}");
    assert!(undeclared["error"]["data"]["requiredCapabilities"]["extensions"][EXT].is_object());
    let removed = modern(
        &app,
        AGENT_KEY,
        "tasks/result",
        json!({"taskId": task}),
        true,
    )
    .await;
    assert_eq!(removed["error"]["code"], -32601, "{removed}");
    let unknown = modern(
        &app,
        AGENT_KEY,
        "tasks/get",
        json!({"taskId": "no-such-task"}),
        true,
    )
    .await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let foreign = modern(&app, OTHER_KEY, "tasks/get", json!({"taskId": task}), true).await;
    assert_eq!(
        foreign["error"]["code"], -32602,
        "another agent's task does not exist for it: {foreign}"
    );
    let discovered = modern(&app, AGENT_KEY, "server/discover", json!({}), false).await;
    assert!(
        discovered["result"]["capabilities"]["extensions"][EXT].is_object(),
        "{discovered}"
    );
}

/// A held call (no tasks) as `agent-1`, modern, in a task of the test runtime.
fn held_modern(app: &Client, tool: &str, arguments: Value) -> tokio::task::JoinHandle<Value> {
    let app = app.clone();
    let params = json!({"name": format!("echo__{tool}"), "arguments": arguments});
    tokio::spawn(async move { modern(&app, AGENT_KEY, "tools/call", params, false).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_held_call_withdraws_its_approval_in_each_era() {
    let app = setup(Backend::Sqlite).await;

    // 2026-07-28: closing the stream is the cancellation.
    let held = held_modern(&app, "delete_record", json!({"record_id": "m1"}));
    let pending = approval(&app, "pending").await;
    held.abort();
    let withdrawn = approval(&app, "cancelled").await;
    assert_eq!(withdrawn.id, pending.id);

    // Legacy: notifications/cancelled withdraws it...
    let (client, _) = Legacy::open(&app).await;
    let arguments = json!({"record_id": "l1"});
    let held = client.spawn(
        7,
        "tools/call",
        json!({"name": "echo__delete_record", "arguments": arguments}),
    );
    let pending = approval(&app, "pending").await;
    let cancel = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"changed my mind"}});
    client.post(&cancel).await;
    let cancelled = approval_status_until(&app, &pending.id, "cancelled").await;
    assert_eq!(cancelled, "cancelled");
    let _ = tokio::time::timeout(Duration::from_secs(5), held).await;

    // ...but a legacy client that disconnects has not cancelled: the call runs when approved.
    let arguments = json!({"record_id": "l2"});
    let held = client.spawn(
        8,
        "tools/call",
        json!({"name": "echo__delete_record", "arguments": arguments}),
    );
    let pending = approval(&app, "pending").await;
    held.abort();
    // Nothing to wait for: this gives the gateway time to wrongly withdraw the approval.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = &pending.id;
    assert_eq!(approval_status_until(&app, id, "pending").await, "pending");
    app.vote(id, "bob", Vote::Approve).await;
    let kinds = story_until(&app, &pending.call_id, "call.completed").await;
    assert_eq!(
        count(&kinds, "call.completed"),
        1,
        "the drained call ran: {kinds:?}"
    );
}

/// The approval id in a task's status message ("waiting for approval ID: …").
fn approval_named_in(task: &Value) -> String {
    let message = task["statusMessage"].as_str().unwrap();
    let after = message.split("approval ").nth(1).expect("an approval id");
    after.split(':').next().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_runs_nothing_twice() {
    // A child process, so it can be killed with SIGKILL.
    let mut app = builder().child_process().spawn().await;

    let waiting = task_call(&app, "delete_record", json!({"record_id": "k1"})).await;
    let waiting_approval = approval(&app, "pending").await;
    let running = task_call(&app, "slow_count", json!({"n": 50})).await;
    let running_approval = task_until(&app, &running, |t| {
        t["statusMessage"]
            .as_str()
            .is_some_and(|m| m.contains("approval"))
    })
    .await;
    let running_approval_id = approval_named_in(&running_approval);
    app.vote(&running_approval_id, "bob", Vote::Approve).await;
    // Gone out: "running", then the upstream's own progress ("step 1/50", …).
    task_until(&app, &running, |t| {
        t["statusMessage"]
            .as_str()
            .is_some_and(|m| m == "running" || m.starts_with("step"))
    })
    .await;
    // And a call held the plain way (no task), approved and running.
    let held = held_modern(&app, "slow_count", json!({"n": 50}));
    let held_approval = approval_of(&app, "pending", "slow_count").await;
    let held_call = held_approval.call_id;
    app.vote(&held_approval.id, "bob", Vote::Approve).await;
    story_until(&app, &held_call, "call.forwarded").await;
    app.signal("-KILL").await;
    held.abort();

    app.start().await;
    // The call that had gone out is ambiguous: reported, recorded, never run again.
    let ended = task_until(&app, &running, |t| t["status"] != "working").await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(
        ended["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may or may not have run"),
        "{ended}"
    );
    let running_call = app.approval(&running_approval_id).await.call_id;
    let kinds = app.story(&running_call).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.ambiguous"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.completed"), 0, "{kinds:?}");

    // So is the plain call that was running: found by the start-up scan.
    let kinds = story_until(&app, &held_call, "call.ambiguous").await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.ambiguous"), 1, "{kinds:?}");

    // The task still waiting resumes: approved after the restart, it runs once.
    assert_eq!(task_get(&app, &waiting).await["status"], "working");
    app.vote(&waiting_approval.id, "bob", Vote::Approve).await;
    let done = task_until(&app, &waiting, |t| t["status"] != "working").await;
    assert_eq!(done["result"]["content"][0]["text"], "deleted k1", "{done}");
    let kinds = app.story(&waiting_approval.call_id).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.completed"), 1, "{kinds:?}");
    app.signal("-KILL").await;
}

/// Approves the first pending approval as bob after `after`.
fn approve_later(app: &Client, after: Duration) -> tokio::task::JoinHandle<Approval> {
    let app = app.clone();
    tokio::spawn(async move {
        let pending = approval(&app, "pending").await;
        // The human's delay under test: the client must wait past its own timeout.
        tokio::time::sleep(after).await;
        app.vote(&pending.id, "bob", Vote::Approve).await;
        pending
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_waits_past_its_timeout_on_progress() {
    let app = builder().progress_secs(1).spawn().await;
    let approver = approve_later(&app, Duration::from_secs(5));
    // The SDK gives up after 3 s without news; progress every second keeps it waiting.
    let steps = json!([{"op": "call_tool", "name": "echo__delete_record", "args": {"record_id": "ts1"},
                        "request_timeout_s": 3, "reset_on_progress": true, "timeout_s": 30}]);
    let run = run_client(
        Sdk::TypeScript,
        &app.url,
        "2026-07-28",
        &steps,
        Some(AGENT_KEY),
    )
    .await;
    let step = run.step(0);
    assert_eq!(step["ok"], true, "{}", run.report);
    assert_eq!(step["text"], "deleted ts1", "{}", run.report);
    assert!(
        step["progress"].as_array().unwrap().len() >= 3,
        "{}",
        run.report
    );
    let pending = approver.await.unwrap();
    let kinds = app.story(&pending.call_id).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_retries_and_joins_the_approval() {
    let app = builder().max_hold_secs(2).spawn().await;
    let approver = approve_later(&app, Duration::from_millis(2500));
    let call = json!({"op": "call_tool", "name": "echo__delete_record", "args": {"record_id": "py1"}, "read_timeout_s": 10});
    let steps = json!([call, {"op": "sleep", "ms": 3000}, call]);
    let run = run_client(Sdk::Python, &app.url, "auto", &steps, Some(AGENT_KEY)).await;
    let (held, retried) = (run.step(0), run.step(2));
    assert_eq!(held["is_error"], true, "{}", run.report);
    assert!(
        held["text"].as_str().unwrap().contains("still pending"),
        "{}",
        run.report
    );
    assert_eq!(retried["text"], "deleted py1", "{}", run.report);
    let pending = approver.await.unwrap();
    assert!(held["text"].as_str().unwrap().contains(&pending.id));
    // As JSON: what matters here, `consumed_by`, is not in `Approval`.
    let (_, all) = app.get("/approvals", "bob").await;
    assert_eq!(all.as_array().unwrap().len(), 1, "the retry joined: {all}");
    // The first call was refused; the retry used the grant and ran once.
    let first = app.story(&pending.call_id).await;
    assert_eq!(count(&first, "call.forwarded"), 0, "{first:?}");
    let retry = all[0]["consumed_by"].as_str().expect("the grant was used");
    let kinds = app.story(retry).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.completed"), 1, "{kinds:?}");
}
