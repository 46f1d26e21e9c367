//! Policy, approvals and the audit log through the running gateway, on SQLite and PostgreSQL.

use crate::support::{self, Backend, TestDb, TestGateway, modern_meta, post};
use countersign::auth::hash_key;
use serde_json::{Value, json};
use std::time::Duration;

pub(crate) const AGENT_KEY: &str = "agent-key";

pub(crate) const POLICY: &str = r#"
defaults:
  verdict: deny
  reason: no rule allows this call
rules:
  - id: no-adding
    match: {tool: add}
    verdict: deny
    reason: agents do their own arithmetic
  - id: read-only-is-fine
    match: {server: echo, read_only: true}
    verdict: allow
  - id: no-deleting-prod
    match:
      tool: delete_record
      arguments: {properties: {record_id: {pattern: "^prod-"}}, required: [record_id]}
    verdict: deny
    reason: production records are never deleted by agents
  - id: slow-needs-one-quickly
    match: {tool: slow_count}
    verdict: approve
    approvers: [bob]
    quorum: 1
    timeout: 1s
  - id: destructive-needs-two
    match: {tool: delete_record, destructive: true}
    verdict: approve
    approver_groups: [ops]
    quorum: 2
    timeout: 1m
    break_glass: {approvers: [bob], min_justification: 20}
"#;

/// A gateway with the policy above, approvers alice (the agent's human), bob, carol (ops) and
/// dave (finance), and auditor audrey.
async fn gateway(db: &TestDb, policy_dir: &std::path::Path) -> TestGateway {
    gateway_with(db, policy_dir, "").await
}

/// The same gateway with extra top-level configuration.
pub(crate) async fn gateway_with(
    db: &TestDb,
    policy_dir: &std::path::Path,
    extra: &str,
) -> TestGateway {
    let token = |who: &str| countersign::auth::hash_key(&format!("{who}-token"));
    let yaml = format!(
        "database: {{url: '{db}'}}
policy_dir: '{policies}'
upstreams:
  - name: echo
    stdio: {{command: python3, args: ['{echo}']}}
agents:
  - {{id: agent-1, on_behalf_of: alice, key_sha256: {agent}}}
approvers:
  - {{id: alice, groups: [ops], token_sha256: {alice}}}
  - {{id: bob, groups: [ops], token_sha256: {bob}}}
  - {{id: carol, groups: [ops], token_sha256: {carol}}}
  - {{id: dave, groups: [finance], token_sha256: {dave}}}
auditors:
  - {{id: audrey, token_sha256: {audrey}}}
{extra}
",
        db = db.url,
        policies = policy_dir.display(),
        echo = support::echo_upstream().display(),
        agent = countersign::auth::hash_key(AGENT_KEY),
        alice = token("alice"),
        bob = token("bob"),
        carol = token("carol"),
        dave = token("dave"),
        audrey = token("audrey"),
    );
    support::spawn_gateway(&yaml).await
}

/// A fresh database, the test policy and a gateway over them.
async fn setup(backend: Backend) -> (TestDb, tempfile::TempDir, TestGateway) {
    let db = TestDb::new(backend).await;
    let dir = policy_dir();
    let gw = gateway(&db, dir.path()).await;
    (db, dir, gw)
}

/// The agent's `delete_record` call, running in a task and held for approval; and the
/// approval's id.
pub(crate) async fn held_delete(
    gw: &TestGateway,
    record: &str,
) -> (tokio::task::JoinHandle<(Value, Vec<Value>)>, String) {
    let agent = tokio::spawn(call(
        gw.url.clone(),
        "delete_record",
        json!({"record_id": record}),
    ));
    let id = pending(gw, 1).await[0]["id"].as_str().unwrap().to_owned();
    (agent, id)
}

pub(crate) fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    dir
}

/// Calls a tool as the agent (modern era, with a progress token); returns the final response
/// and the progress notifications.
pub(crate) async fn call(gw_url: String, tool: &str, arguments: Value) -> (Value, Vec<Value>) {
    let name = format!("echo__{tool}");
    let mut meta = modern_meta();
    meta["progressToken"] = json!("p");
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":arguments,"_meta":meta}});
    let auth = format!("Bearer {AGENT_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", name.as_str()),
    ];
    let mut messages = post(&gw_url, &headers, &body).await.messages();
    let last = messages.pop().expect("a response");
    (last, messages)
}

/// The agent's answer to a call running in a task (bounded wait).
pub(crate) async fn answer(
    agent: tokio::task::JoinHandle<(Value, Vec<Value>)>,
) -> (Value, Vec<Value>) {
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("the call ends in time")
        .expect("the call task")
}

pub(crate) fn text(response: &Value) -> &str {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

pub(crate) fn base(gw: &TestGateway) -> String {
    format!("http://{}", gw.addr)
}

pub(crate) async fn api(
    method: reqwest::Method,
    url: String,
    who: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = crate::support::http()
        .request(method, url)
        .bearer_auth(format!("{who}-token"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn vote(
    gw: &TestGateway,
    id: &str,
    who: &str,
    approve: bool,
    reason: Option<&str>,
) -> Value {
    let verb = if approve { "approve" } else { "deny" };
    let body = reason.map(|r| json!({"reason": r}));
    api(
        reqwest::Method::POST,
        format!("{}/approvals/{id}/{verb}", base(gw)),
        who,
        body,
    )
    .await
    .1
}

/// Waits (bounded) until `count` approvals are pending; returns them.
pub(crate) async fn pending(gw: &TestGateway, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (_, list) = api(
            reqwest::Method::GET,
            format!("{}/approvals?status=pending", base(gw)),
            "bob",
            None,
        )
        .await;
        if list.as_array().is_some_and(|l| l.len() == count) {
            return list.as_array().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {count} pending approvals");
}

/// The audit events of one call, from the auditor API (as auditor audrey).
pub(crate) async fn call_events(gw: &TestGateway, call_id: &str) -> Vec<Value> {
    let (status, events) = api(
        reqwest::Method::GET,
        format!("{}/audit/calls/{call_id}", base(gw)),
        "audrey",
        None,
    )
    .await;
    assert_eq!(status, 200, "{events}");
    let events = events.get("events").cloned().unwrap_or(events);
    events.as_array().unwrap().clone()
}

/// The kinds of the audit events of one call, from the auditor API.
pub(crate) async fn story(gw: &TestGateway, call_id: &str) -> Vec<String> {
    call_events(gw, call_id)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn quorum_and_self_approval(backend: Backend) {
    let (_db, _dir, gw) = setup(backend).await;
    let agent = tokio::spawn(call(
        gw.url.clone(),
        "delete_record",
        json!({"record_id": "r1"}),
    ));
    let approval = pending(&gw, 1).await.remove(0);
    let id = approval["id"].as_str().unwrap();
    assert_eq!(approval["rule"], "destructive-needs-two");
    assert_eq!(
        vote(&gw, id, "alice", true, None).await["result"],
        "not_authorized",
        "the agent's own human"
    );
    assert_eq!(
        vote(&gw, id, "dave", true, None).await["result"],
        "not_authorized",
        "not in ops"
    );
    assert_eq!(
        vote(&gw, id, "bob", true, None).await,
        json!({"result":"counted","approvals":1,"quorum":2})
    );
    assert_eq!(
        vote(&gw, id, "bob", true, None).await["result"],
        "already_voted"
    );
    assert_eq!(
        vote(&gw, id, "carol", true, None).await,
        json!({"result":"decided","status":"approved"})
    );
    assert_eq!(
        vote(&gw, id, "carol", false, Some("late")).await["result"],
        "already_decided"
    );
    let (response, progress) = answer(agent).await;
    assert_eq!(text(&response), "deleted r1", "{response}");
    assert!(!progress.is_empty(), "progress while waiting");
    let kinds = story(&gw, approval["call_id"].as_str().unwrap()).await;
    let expected = [
        "call.received",
        "policy.decided",
        "approval.requested",
        "approval.vote",
        "approval.vote",
        "approval.vote",
        "approval.vote",
        "approval.vote",
        "approval.decided",
        "approval.vote",
        "call.forwarded",
        "call.completed",
    ];
    let mut sorted = kinds.clone();
    sorted.retain(|k| k != "approval.vote");
    assert_eq!(
        sorted,
        [
            "call.received",
            "policy.decided",
            "approval.requested",
            "approval.decided",
            "call.forwarded",
            "call.completed"
        ],
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "approval.vote").count(),
        6,
        "every vote is recorded: {kinds:?} vs {expected:?}"
    );
}

crate::on_both_databases!(quorum_and_self_approval: quorum_counts_distinct_authorized_humans_on_sqlite, quorum_counts_distinct_authorized_humans_on_postgres);

async fn veto_and_rules(backend: Backend) {
    let (_db, _dir, gw) = setup(backend).await;
    let (allowed, _) = call(gw.url.clone(), "echo", json!({"message": "hi"})).await;
    assert_eq!(text(&allowed), "hi");
    let list =
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":modern_meta()}});
    let auth = format!("Bearer {AGENT_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];
    let tools = post(&gw.url, &headers, &list).await.json();
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"echo__echo") && !names.contains(&"echo__add"),
        "a tool policy always denies is hidden: {names:?}"
    );
    let (refused, _) = call(gw.url.clone(), "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(
        text(&refused),
        "Denied by policy (rule no-adding): agents do their own arithmetic"
    );
    let (denied, _) = call(
        gw.url.clone(),
        "delete_record",
        json!({"record_id": "prod-7"}),
    )
    .await;
    assert_eq!(denied["result"]["isError"], true);
    assert!(
        text(&denied).contains("production records are never deleted by agents"),
        "{denied}"
    );
    let (agent, id) = held_delete(&gw, "r2").await;
    let reasonless = vote(&gw, &id, "bob", false, None).await;
    assert_eq!(reasonless["error"], "a deny needs a reason", "{reasonless}");
    assert_eq!(
        vote(&gw, &id, "bob", false, Some("not today")).await,
        json!({"result":"decided","status":"denied"})
    );
    let (response, _) = answer(agent).await;
    assert_eq!(response["result"]["isError"], true);
    assert_eq!(
        text(&response),
        format!("Denied by bob: not today (approval {id})")
    );
}

async fn break_glass(backend: Backend) {
    let (_db, _dir, gw) = setup(backend).await;
    let (agent, id) = held_delete(&gw, "r9").await;
    let url = format!("{}/approvals/{id}/approve", base(&gw));
    let attempt = |who: &'static str, justification: &'static str| {
        let url = url.clone();
        async move {
            let body = json!({"break_glass": justification});
            api(reqwest::Method::POST, url, who, Some(body)).await.1
        }
    };
    let blank = attempt("bob", " ").await;
    assert_eq!(blank["result"], "not_authorized", "{blank}");
    let short = attempt("bob", "outage, INC-42").await;
    assert_eq!(short["result"], "not_authorized", "{short}");
    assert!(
        short["why"]
            .as_str()
            .unwrap()
            .contains("at least 20 characters"),
        "{short}"
    );
    let not_named = attempt("carol", "outage INC-42: customer writes fail").await;
    assert_eq!(not_named["result"], "not_authorized", "{not_named}");
    assert!(
        not_named["why"]
            .as_str()
            .unwrap()
            .contains("may not use break-glass"),
        "{not_named}"
    );
    let justification = "outage INC-42: customer writes fail";
    let decided = attempt("bob", justification).await;
    assert_eq!(
        decided,
        json!({"result":"decided","status":"approved"}),
        "the named approver decides alone"
    );
    let (response, _) = answer(agent).await;
    assert_eq!(text(&response), "deleted r9");
    let (_, approval) = api(
        reqwest::Method::GET,
        format!("{}/approvals/{id}", base(&gw)),
        "bob",
        None,
    )
    .await;
    assert_eq!(approval["break_glass"], true);
    assert_eq!(approval["reason"], justification);

    // verify lists it until another approver reviews it; bob may not review his own.
    let unreviewed = |report: &Value| {
        report["unreviewed_break_glass"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["approval_id"] == id.as_str())
    };
    let verify_url = format!("{}/audit/verify", base(&gw));
    let (_, report) = api(reqwest::Method::GET, verify_url.clone(), "audrey", None).await;
    assert!(unreviewed(&report), "{report}");
    let review_url = format!("{}/approvals/{id}/review", base(&gw));
    let note = json!({"note": "checked INC-42, the delete was needed"});
    let (status, own) = api(
        reqwest::Method::POST,
        review_url.clone(),
        "bob",
        Some(note.clone()),
    )
    .await;
    assert_eq!(status, 400, "{own}");
    let (status, reviewed) = api(reqwest::Method::POST, review_url, "carol", Some(note)).await;
    assert_eq!(status, 200, "{reviewed}");
    let (_, report) = api(reqwest::Method::GET, verify_url, "audrey", None).await;
    assert!(!unreviewed(&report), "{report}");
    assert_eq!(report["ok"], true, "{report}");
}

crate::on_both_databases!(break_glass: break_glass_needs_a_justification_and_is_flagged_on_sqlite, break_glass_needs_a_justification_and_is_flagged_on_postgres);

crate::on_both_databases!(veto_and_rules: one_deny_decides_and_rules_apply_on_sqlite, one_deny_decides_and_rules_apply_on_postgres);

async fn expiry(backend: Backend) {
    let (_db, _dir, gw) = setup(backend).await;
    let (response, _) = tokio::time::timeout(
        Duration::from_secs(20),
        call(gw.url.clone(), "slow_count", json!({"n": 1})),
    )
    .await
    .unwrap();
    assert_eq!(response["result"]["isError"], true);
    assert!(text(&response).contains("expired"), "{response}");
    let (_, list) = api(
        reqwest::Method::GET,
        format!("{}/approvals?status=expired", base(&gw)),
        "bob",
        None,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

crate::on_both_databases!(expiry: expiry_denies_on_sqlite, expiry_denies_on_postgres);

async fn concurrent_votes(backend: Backend) {
    let (_db, _dir, gw) = setup(backend).await;
    let (agent, id) = held_delete(&gw, "r3").await;
    let votes =
        ["bob", "carol", "alice", "bob", "carol"].map(|who| vote(&gw, &id, who, true, None));
    let results = futures::future::join_all(votes).await;
    let decided = results.iter().filter(|r| r["result"] == "decided").count();
    assert_eq!(decided, 1, "exactly one vote decides: {results:?}");
    let (response, _) = answer(agent).await;
    assert_eq!(text(&response), "deleted r3");
}

crate::on_both_databases!(concurrent_votes: concurrent_votes_decide_once_on_sqlite, concurrent_votes_decide_once_on_postgres);

async fn restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = policy_dir();
    let first = gateway(&db, dir.path()).await;
    let abandoned = tokio::spawn(call(
        first.url.clone(),
        "delete_record",
        json!({"record_id": "r4"}),
    ));
    let id = pending(&first, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(first);
    abandoned.abort();
    let second = gateway(&db, dir.path()).await;
    let retry = tokio::spawn(call(
        second.url.clone(),
        "delete_record",
        json!({"record_id": "r4"}),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = pending(&second, 1).await;
    assert_eq!(
        still[0]["id"], id,
        "the retry joined the approval that survived the restart"
    );
    vote(&second, &id, "bob", true, None).await;
    vote(&second, &id, "carol", true, None).await;
    let (response, _) = answer(retry).await;
    assert_eq!(text(&response), "deleted r4");
}

crate::on_both_databases!(restart: a_pending_approval_survives_a_restart_on_sqlite, a_pending_approval_survives_a_restart_on_postgres);

async fn audit_failure(backend: Backend) {
    let (db, _dir, gw) = setup(backend).await;
    let (ok, _) = call(gw.url.clone(), "echo", json!({"message": "before"})).await;
    assert_eq!(text(&ok), "before");
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("drop table audit_events")
        .execute(&mut conn)
        .await
        .unwrap();
    let (refused, _) = call(gw.url.clone(), "echo", json!({"message": "after"})).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(text(&refused).contains("could not record"), "{refused}");
}

crate::on_both_databases!(audit_failure: an_audit_write_failure_refuses_the_call_on_sqlite, an_audit_write_failure_refuses_the_call_on_postgres);

async fn hold_then_retry(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = policy_dir();
    let gw = gateway_with(&db, dir.path(), "approvals: {max_hold_secs: 1}").await;
    let (held, _) = call(gw.url.clone(), "delete_record", json!({"record_id": "r5"})).await;
    let approval = pending(&gw, 1).await.remove(0);
    let id = approval["id"].as_str().unwrap();
    assert_eq!(held["result"]["isError"], true);
    assert!(
        text(&held).contains(&format!("Approval {id} is still pending")),
        "{held}"
    );
    vote(&gw, id, "bob", true, None).await;
    assert_eq!(
        vote(&gw, id, "carol", true, None).await["result"],
        "decided"
    );
    let (retried, _) = call(gw.url.clone(), "delete_record", json!({"record_id": "r5"})).await;
    assert_eq!(
        text(&retried),
        "deleted r5",
        "the retry joined the approved grant"
    );
    let (again, _) = call(gw.url.clone(), "delete_record", json!({"record_id": "r5"})).await;
    assert!(
        text(&again).contains("is still pending"),
        "the grant was used once; a new approval opens: {again}"
    );
    let (_, events) = api(
        reqwest::Method::GET,
        format!("{}/audit/events?kind=call.completed", base(&gw)),
        "audrey",
        None,
    )
    .await;
    let events = events.get("events").cloned().unwrap_or(events);
    assert_eq!(
        events.as_array().unwrap().len(),
        1,
        "the upstream ran the call exactly once: {events}"
    );
}

crate::on_both_databases!(hold_then_retry: a_retry_after_the_hold_joins_the_approval_on_sqlite, a_retry_after_the_hold_joins_the_approval_on_postgres);

/// Runs `countersign approvals ...` against the test database, as an operator would, with
/// `token` as the approver's credential (`COUNTERSIGN_APPROVER_TOKEN`).
fn approvals_cli(
    db: &TestDb,
    dir: &std::path::Path,
    token: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    approvals_command(db, dir, token, args).output().unwrap()
}

/// `countersign approvals ARGS` against `db`, with bob and carol as approvers.
fn approvals_command(
    db: &TestDb,
    dir: &std::path::Path,
    token: Option<&str>,
    args: &[&str],
) -> std::process::Command {
    let config = dir.join("cli.yaml");
    let yaml = format!(
        "database: {{url: '{}'}}\nupstreams: [{{name: echo, stdio: {{command: 'true'}}}}]\nserver: {{allow_anonymous: true}}\n\
         approvers:\n  - {{id: bob, groups: [ops], token_sha256: {}}}\n  - {{id: carol, groups: [ops], token_sha256: {}}}\n",
        db.url,
        hash_key("bob-token"),
        hash_key("carol-token"),
    );
    std::fs::write(&config, yaml).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    command
        .arg("approvals")
        .args(args)
        .arg("--config")
        .arg(&config)
        .env_remove("COUNTERSIGN_APPROVER_TOKEN")
        .stdin(std::process::Stdio::null());
    if let Some(token) = token {
        command.env("COUNTERSIGN_APPROVER_TOKEN", token);
    }
    command
}

/// `approvals watch` prints a request when it comes, each vote, and the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_watch_follows_requests_votes_and_decisions() {
    use tokio::io::AsyncBufReadExt as _;
    let (db, _dir, gw) = setup(Backend::Sqlite).await;
    let work = tempfile::tempdir().unwrap();
    let mut watch = tokio::process::Command::from(approvals_command(
        &db,
        work.path(),
        None,
        &["watch", "--format", "json"],
    ))
    .stdout(std::process::Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("watch printed within 20 s")
            .unwrap()
            .expect("watch is still running");
        serde_json::from_str(&line).unwrap()
    };
    let (agent, id) = held_delete(&gw, "watched").await;
    let requested = next().await;
    assert_eq!(
        (requested["id"].as_str(), requested["status"].as_str()),
        (Some(id.as_str()), Some("pending")),
        "{requested}"
    );
    assert_eq!(requested["arguments"], json!({"record_id": "watched"}));
    vote(&gw, &id, "bob", true, None).await;
    let voted = next().await;
    assert_eq!(voted["approvals_so_far"], json!(["bob"]), "{voted}");
    vote(&gw, &id, "carol", true, None).await;
    let decided = next().await;
    assert_eq!(
        (decided["status"].as_str(), decided["decided_by"].as_str()),
        (Some("approved"), Some("carol")),
        "{decided}"
    );
    assert_eq!(text(&answer(agent).await.0), "deleted watched");
    watch.start_kill().unwrap();
}

async fn cli_votes(backend: Backend) {
    let (db, dir, gw) = setup(backend).await;
    let (agent, id) = held_delete(&gw, "r6").await;
    let listed = approvals_cli(&db, dir.path(), None, &["list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{listed:?}"
    );
    // `--as` alone names nobody; a token that is someone else's is refused too.
    let unauthenticated = approvals_cli(&db, dir.path(), None, &["approve", &id, "--as", "bob"]);
    assert!(!unauthenticated.status.success());
    assert!(
        String::from_utf8_lossy(&unauthenticated.stderr).contains("an approver token is required"),
        "{unauthenticated:?}"
    );
    let impostor = approvals_cli(
        &db,
        dir.path(),
        Some("carol-token"),
        &["approve", &id, "--as", "bob"],
    );
    assert!(!impostor.status.success());
    assert!(
        String::from_utf8_lossy(&impostor.stderr).contains("not bob's"),
        "{impostor:?}"
    );
    for who in ["bob", "carol"] {
        let token = format!("{who}-token");
        let voted = approvals_cli(&db, dir.path(), Some(&token), &["approve", &id]);
        assert!(voted.status.success(), "{voted:?}");
        if who == "bob" {
            // The listing says what is asked, the progress and who voted.
            let listed = approvals_cli(&db, dir.path(), None, &["list"]);
            let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
            assert!(
                listed.contains("1/2 (bob)") && listed.contains("expires in"),
                "{listed}"
            );
            assert!(
                listed.contains(r#"arguments: {"record_id":"r6"}"#),
                "{listed}"
            );
            let json = approvals_cli(&db, dir.path(), None, &["list", "--format", "json"]);
            let json: Value = serde_json::from_slice(&json.stdout).unwrap();
            assert_eq!(json[0]["approvals_so_far"], json!(["bob"]), "{json}");
        }
    }
    let (response, _) = answer(agent).await;
    assert_eq!(
        text(&response),
        "deleted r6",
        "a decision made by another process wakes the call"
    );
    let denied = approvals_cli(
        &db,
        dir.path(),
        Some("bob-token"),
        &["deny", &id, "--reason", "late"],
    );
    assert!(
        !denied.status.success(),
        "a vote after the end is refused: {denied:?}"
    );
    assert!(String::from_utf8_lossy(&denied.stdout).contains("already_decided"));
    // Decided: no countdown, but who decided and when, in RFC 3339.
    let all = approvals_cli(&db, dir.path(), None, &["list", "--status", "all"]);
    let all = String::from_utf8_lossy(&all.stdout).into_owned();
    assert!(
        all.contains("decided by carol at 20") && !all.contains("expires in"),
        "{all}"
    );
    let shown = approvals_cli(&db, dir.path(), None, &["show", &id]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert!(shown["created"].as_str().unwrap().ends_with('Z'), "{shown}");
    assert_eq!(shown["approvals_so_far"], json!(["bob", "carol"]));
    let (_, listed) = api(
        reqwest::Method::GET,
        format!("{}/approvals?status=all", base(&gw)),
        "bob",
        None,
    )
    .await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str()),
        "status=all lists decided approvals too: {listed}"
    );
}

crate::on_both_databases!(cli_votes: votes_from_the_cli_wake_the_waiting_call_on_sqlite, votes_from_the_cli_wake_the_waiting_call_on_postgres);

/// The approver and auditor APIs refuse the same way: 401 with a bearer challenge and a JSON
/// body saying what is needed; a bad query is a JSON 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approver_and_auditor_apis_refuse_alike_in_json() {
    let (_db, _dir, gw) = setup(Backend::Sqlite).await;
    for (path, realm) in [
        ("/approvals", "countersign-approvers"),
        ("/audit/events", "countersign-audit"),
    ] {
        let response = crate::support::http()
            .get(format!("{}{path}", base(&gw)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with(&format!("Bearer realm=\"{realm}\"")),
            "{challenge}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("token is required"),
            "{path}: {body}"
        );
    }
    let (status, body) = api(
        reqwest::Method::GET,
        format!("{}/audit/events?since=yesterday-ish", base(&gw)),
        "audrey",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("yesterday-ish"),
        "{body}"
    );
}
