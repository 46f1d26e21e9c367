//! Long waits: task handles in both eras, cancellation per era, and restarts (`kill -9`) with
//! approvals pending and calls running.

use crate::approvals::{api, story, text, vote};
use crate::peers::{Sdk, run_client};
use crate::support::{self, Backend, TestDb, TestGateway, modern_meta, post};
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

/// The gateway's configuration over `db`, with agents `agent-1` (key `agent-key`) and `agent-2`
/// (`other-key`), approver bob and auditor audrey.
fn config(db: &TestDb, policies: &std::path::Path, listen: &str) -> String {
    config_with(db, policies, listen, "")
}

/// The same configuration with extra top-level YAML.
fn config_with(db: &TestDb, policies: &std::path::Path, listen: &str, extra: &str) -> String {
    let hash = countersign::auth::hash_key;
    format!(
        "server: {{listen: '{listen}'}}
database: {{url: '{db}'}}
policy_dir: '{policies}'
upstreams:
  - name: echo
    stdio: {{command: python3, args: ['{echo}']}}
agents:
  - {{id: agent-1, key_sha256: {agent}}}
  - {{id: agent-2, key_sha256: {other}}}
approvers:
  - {{id: bob, token_sha256: {bob}}}
auditors:
  - {{id: audrey, token_sha256: {audrey}}}
{extra}
",
        db = db.url,
        policies = policies.display(),
        echo = support::echo_upstream().display(),
        agent = hash("agent-key"),
        other = hash("other-key"),
        bob = hash("bob-token"),
        audrey = hash("audrey-token"),
    )
}

fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    dir
}

async fn setup(backend: Backend) -> (TestDb, tempfile::TempDir, TestGateway) {
    let db = TestDb::new(backend).await;
    let dir = policy_dir();
    let gw = support::spawn_gateway(&config(&db, dir.path(), "127.0.0.1:0")).await;
    (db, dir, gw)
}

/// One 2026-07-28 request as `key`; `tasks` declares the tasks extension. Returns the final
/// message.
async fn modern(
    gw: &TestGateway,
    key: &str,
    method: &str,
    mut params: Value,
    tasks: bool,
) -> Value {
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
    post(&gw.url, &headers, &body)
        .await
        .messages()
        .pop()
        .expect("a response")
}

async fn task_call(gw: &TestGateway, tool: &str, arguments: Value) -> String {
    let params = json!({"name": format!("echo__{tool}"), "arguments": arguments});
    let created = modern(gw, "agent-key", "tools/call", params, true).await;
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

async fn task_get(gw: &TestGateway, task: &str) -> Value {
    let got = modern(gw, "agent-key", "tasks/get", json!({"taskId": task}), true).await;
    got.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("tasks/get failed: {got}"))
}

/// Polls (bounded) until the task satisfies `done`.
async fn task_until(gw: &TestGateway, task: &str, done: impl Fn(&Value) -> bool) -> Value {
    let what = format!("task {task} to get there");
    let done = &done;
    wait::eventually(&what, Duration::from_secs(15), || async move {
        let got = task_get(gw, task).await;
        if done(&got) { Ok(got) } else { Err(got) }
    })
    .await
}

/// The first approval in `status` (bounded wait).
async fn approval(gw: &TestGateway, status: &str) -> Value {
    approval_of(gw, status, "").await
}

/// The first approval in `status` for `tool` (any tool when empty; bounded wait).
async fn approval_of(gw: &TestGateway, status: &str, tool: &str) -> Value {
    let what = format!("a {status} approval");
    wait::eventually(&what, Duration::from_secs(30), || async move {
        let url = format!("http://{}/approvals?status={status}", gw.addr);
        let (_, list) = api(reqwest::Method::GET, url, "bob", None).await;
        let mut matching = list.as_array().into_iter().flatten();
        matching
            .find(|a| tool.is_empty() || a["tool"] == tool)
            .cloned()
    })
    .await
}

/// The status of approval `id` once it is `wanted`, or as it stands after a bounded wait.
async fn approval_status_until(gw: &TestGateway, id: &str, wanted: &str) -> String {
    let url = &format!("http://{}/approvals/{id}", gw.addr);
    let status = wait::within(Duration::from_secs(15), || async move {
        let (_, approval) = api(reqwest::Method::GET, url.clone(), "bob", None).await;
        let status = approval["status"].as_str().unwrap_or_default().to_owned();
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
async fn story_until(gw: &TestGateway, call_id: &str, kind: &str) -> Vec<String> {
    let kinds = wait::within(Duration::from_secs(15), || async move {
        let kinds = story(gw, call_id).await;
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
    let (_db, _dir, gw) = setup(backend).await;
    let task = task_call(&gw, "delete_record", json!({"record_id": "r1"})).await;
    let waiting = task_until(&gw, &task, |t| {
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
    let echoed = modern(&gw, "agent-key", "tools/call", params, true).await;
    assert_eq!(echoed["result"]["resultType"], "complete", "{echoed}");
    assert_eq!(text(&echoed), "hi");

    let pending = approval(&gw, "pending").await;
    let id = pending["id"].as_str().unwrap();
    assert_eq!(vote(&gw, id, "bob", true, None).await["result"], "decided");
    let done = task_until(&gw, &task, |t| t["status"] != "working").await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["content"][0]["text"], "deleted r1", "{done}");

    let kinds = story(&gw, pending["call_id"].as_str().unwrap()).await;
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
    async fn open(gw: &TestGateway) -> (Legacy, Value) {
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"0"}}});
        let response = post(&gw.url, &[("authorization", "Bearer agent-key")], &init).await;
        let session = response
            .header("mcp-session-id")
            .expect("a session")
            .to_owned();
        let result = response.messages().pop().unwrap()["result"].clone();
        let url = gw.url.clone();
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
        let headers = [
            ("authorization", "Bearer agent-key"),
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
    let (_db, _dir, gw) = setup(Backend::Sqlite).await;
    let (client, init) = Legacy::open(&gw).await;
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
    let pending = approval(&gw, "pending").await;
    vote(
        &gw,
        pending["id"].as_str().unwrap(),
        "bob",
        false,
        Some("not today"),
    )
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
    let (_db, _dir, gw) = setup(Backend::Sqlite).await;
    let task = task_call(&gw, "delete_record", json!({"record_id": "r3"})).await;
    let pending = approval(&gw, "pending").await;
    let cancelled = modern(
        &gw,
        "agent-key",
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
    let withdrawn = approval(&gw, "cancelled").await;
    assert_eq!(withdrawn["id"], pending["id"]);
    assert_eq!(withdrawn["decided_by"], "agent-1");
    assert_eq!(task_get(&gw, &task).await["status"], "cancelled");
    let again = modern(
        &gw,
        "agent-key",
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
    let kinds = story(&gw, pending["call_id"].as_str().unwrap()).await;
    assert_eq!(count(&kinds, "call.forwarded"), 0, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_surface_is_guarded() {
    let (_db, _dir, gw) = setup(Backend::Sqlite).await;
    let task = task_call(&gw, "delete_record", json!({"record_id": "r4"})).await;
    let undeclared = modern(
        &gw,
        "agent-key",
        "tasks/get",
        json!({"taskId": task}),
        false,
    )
    .await;
    assert_eq!(undeclared["error"]["code"], -32021, "{undeclared}");
    assert!(undeclared["error"]["data"]["requiredCapabilities"]["extensions"][EXT].is_object());
    let removed = modern(
        &gw,
        "agent-key",
        "tasks/result",
        json!({"taskId": task}),
        true,
    )
    .await;
    assert_eq!(removed["error"]["code"], -32601, "{removed}");
    let unknown = modern(
        &gw,
        "agent-key",
        "tasks/get",
        json!({"taskId": "no-such-task"}),
        true,
    )
    .await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let foreign = modern(&gw, "other-key", "tasks/get", json!({"taskId": task}), true).await;
    assert_eq!(
        foreign["error"]["code"], -32602,
        "another agent's task does not exist for it: {foreign}"
    );
    let discovered = modern(&gw, "agent-key", "server/discover", json!({}), false).await;
    assert!(
        discovered["result"]["capabilities"]["extensions"][EXT].is_object(),
        "{discovered}"
    );
}

/// A held call (no tasks) as `agent-1`, modern, in a task of the test runtime.
fn held_modern(gw: &TestGateway, record: &str) -> tokio::task::JoinHandle<Value> {
    let gw = support::external_gateway(gw.addr);
    let params = json!({"name": "echo__delete_record", "arguments": {"record_id": record}});
    tokio::spawn(async move { modern(&gw, "agent-key", "tools/call", params, false).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_held_call_withdraws_its_approval_in_each_era() {
    let (_db, _dir, gw) = setup(Backend::Sqlite).await;

    // 2026-07-28: closing the stream is the cancellation.
    let held = held_modern(&gw, "m1");
    let pending = approval(&gw, "pending").await;
    held.abort();
    let withdrawn = approval(&gw, "cancelled").await;
    assert_eq!(withdrawn["id"], pending["id"]);

    // Legacy: notifications/cancelled withdraws it...
    let (client, _) = Legacy::open(&gw).await;
    let arguments = json!({"record_id": "l1"});
    let held = client.spawn(
        7,
        "tools/call",
        json!({"name": "echo__delete_record", "arguments": arguments}),
    );
    let pending = approval(&gw, "pending").await;
    let cancel = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"changed my mind"}});
    client.post(&cancel).await;
    let cancelled = approval_status_until(&gw, pending["id"].as_str().unwrap(), "cancelled").await;
    assert_eq!(cancelled, "cancelled");
    let _ = tokio::time::timeout(Duration::from_secs(5), held).await;

    // ...but a legacy client that disconnects has not cancelled: the call runs when approved.
    let arguments = json!({"record_id": "l2"});
    let held = client.spawn(
        8,
        "tools/call",
        json!({"name": "echo__delete_record", "arguments": arguments}),
    );
    let pending = approval(&gw, "pending").await;
    held.abort();
    // Nothing to wait for: this gives the gateway time to wrongly withdraw the approval.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = pending["id"].as_str().unwrap();
    assert_eq!(approval_status_until(&gw, id, "pending").await, "pending");
    vote(&gw, pending["id"].as_str().unwrap(), "bob", true, None).await;
    let kinds = story_until(&gw, pending["call_id"].as_str().unwrap(), "call.completed").await;
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

/// The gateway as a child process (so it can be killed with SIGKILL).
struct Process;

impl Process {
    async fn start(
        db: &TestDb,
        policies: &std::path::Path,
        dir: &std::path::Path,
    ) -> support::GatewayProcess {
        let port = support::free_port();
        let path = dir.join(format!("gateway-{port}.yaml"));
        std::fs::write(&path, config(db, policies, &format!("127.0.0.1:{port}"))).unwrap();
        support::GatewayProcess::spawn(&path, port).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_runs_nothing_twice() {
    let db = TestDb::new(Backend::Sqlite).await;
    let policies = policy_dir();
    let dir = tempfile::tempdir().unwrap();
    let first = Process::start(&db, policies.path(), dir.path()).await;

    let waiting = task_call(&first.gw, "delete_record", json!({"record_id": "k1"})).await;
    let waiting_approval = approval(&first.gw, "pending").await;
    let running = task_call(&first.gw, "slow_count", json!({"n": 50})).await;
    let running_approval = task_until(&first.gw, &running, |t| {
        t["statusMessage"]
            .as_str()
            .is_some_and(|m| m.contains("approval"))
    })
    .await;
    let running_approval_id = approval_named_in(&running_approval);
    vote(&first.gw, &running_approval_id, "bob", true, None).await;
    // Gone out: "running", then the upstream's own progress ("step 1/50", …).
    task_until(&first.gw, &running, |t| {
        t["statusMessage"]
            .as_str()
            .is_some_and(|m| m == "running" || m.starts_with("step"))
    })
    .await;
    // And a call held the plain way (no task), approved and running.
    let held = {
        let gw = support::external_gateway(first.gw.addr);
        let params = json!({"name": "echo__slow_count", "arguments": {"n": 50}});
        tokio::spawn(async move { modern(&gw, "agent-key", "tools/call", params, false).await })
    };
    let held_approval = approval_of(&first.gw, "pending", "slow_count").await;
    let held_call = held_approval["call_id"].as_str().unwrap().to_owned();
    vote(
        &first.gw,
        held_approval["id"].as_str().unwrap(),
        "bob",
        true,
        None,
    )
    .await;
    story_until(&first.gw, &held_call, "call.forwarded").await;
    first.signal("-KILL").await;
    held.abort();

    let second = Process::start(&db, policies.path(), dir.path()).await;
    // The call that had gone out is ambiguous: reported, recorded, never run again.
    let ended = task_until(&second.gw, &running, |t| t["status"] != "working").await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(
        ended["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may or may not have run"),
        "{ended}"
    );
    let url = format!("http://{}/approvals/{running_approval_id}", second.gw.addr);
    let running_call = api(reqwest::Method::GET, url, "bob", None).await.1["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let kinds = story(&second.gw, &running_call).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.ambiguous"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.completed"), 0, "{kinds:?}");

    // So is the plain call that was running: found by the start-up scan.
    let kinds = story_until(&second.gw, &held_call, "call.ambiguous").await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.ambiguous"), 1, "{kinds:?}");

    // The task still waiting resumes: approved after the restart, it runs once.
    assert_eq!(task_get(&second.gw, &waiting).await["status"], "working");
    vote(
        &second.gw,
        waiting_approval["id"].as_str().unwrap(),
        "bob",
        true,
        None,
    )
    .await;
    let done = task_until(&second.gw, &waiting, |t| t["status"] != "working").await;
    assert_eq!(done["result"]["content"][0]["text"], "deleted k1", "{done}");
    let kinds = story(&second.gw, waiting_approval["call_id"].as_str().unwrap()).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.completed"), 1, "{kinds:?}");
    second.signal("-KILL").await;
}

/// A gateway with extra configuration, over a fresh SQLite database.
async fn setup_with(extra: &str) -> (TestDb, tempfile::TempDir, TestGateway) {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = policy_dir();
    let gw = support::spawn_gateway(&config_with(&db, dir.path(), "127.0.0.1:0", extra)).await;
    (db, dir, gw)
}

/// Approves the first pending approval as bob after `after`.
fn approve_later(gw: &TestGateway, after: Duration) -> tokio::task::JoinHandle<Value> {
    let gw = support::external_gateway(gw.addr);
    tokio::spawn(async move {
        let pending = approval(&gw, "pending").await;
        // The human's delay under test: the client must wait past its own timeout.
        tokio::time::sleep(after).await;
        vote(&gw, pending["id"].as_str().unwrap(), "bob", true, None).await;
        pending
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_waits_past_its_timeout_on_progress() {
    let (_db, _dir, gw) = setup_with("approvals: {progress_secs: 1}").await;
    let approver = approve_later(&gw, Duration::from_secs(5));
    // The SDK gives up after 3 s without news; progress every second keeps it waiting.
    let steps = json!([{"op": "call_tool", "name": "echo__delete_record", "args": {"record_id": "ts1"},
                        "request_timeout_s": 3, "reset_on_progress": true, "timeout_s": 30}]);
    let run = run_client(
        Sdk::TypeScript,
        &gw.url,
        "2026-07-28",
        &steps,
        Some("agent-key"),
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
    let kinds = story(&gw, pending["call_id"].as_str().unwrap()).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_retries_and_joins_the_approval() {
    let (_db, _dir, gw) = setup_with("approvals: {max_hold_secs: 2}").await;
    let approver = approve_later(&gw, Duration::from_millis(2500));
    let call = json!({"op": "call_tool", "name": "echo__delete_record", "args": {"record_id": "py1"}, "read_timeout_s": 10});
    let steps = json!([call, {"op": "sleep", "ms": 3000}, call]);
    let run = run_client(Sdk::Python, &gw.url, "auto", &steps, Some("agent-key")).await;
    let (held, retried) = (run.step(0), run.step(2));
    assert_eq!(held["is_error"], true, "{}", run.report);
    assert!(
        held["text"].as_str().unwrap().contains("still pending"),
        "{}",
        run.report
    );
    assert_eq!(retried["text"], "deleted py1", "{}", run.report);
    let pending = approver.await.unwrap();
    assert!(
        held["text"]
            .as_str()
            .unwrap()
            .contains(pending["id"].as_str().unwrap())
    );
    let url = format!("http://{}/approvals", gw.addr);
    let (_, all) = api(reqwest::Method::GET, url, "bob", None).await;
    assert_eq!(all.as_array().unwrap().len(), 1, "the retry joined: {all}");
    // The first call was refused; the retry used the grant and ran once.
    let first = story(&gw, pending["call_id"].as_str().unwrap()).await;
    assert_eq!(count(&first, "call.forwarded"), 0, "{first:?}");
    let retry = all[0]["consumed_by"].as_str().expect("the grant was used");
    let kinds = story(&gw, retry).await;
    assert_eq!(count(&kinds, "call.forwarded"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "call.completed"), 1, "{kinds:?}");
}
