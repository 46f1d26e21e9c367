//! Policy, approvals and the audit log through the running gateway, on SQLite and PostgreSQL.

use crate::app::{AGENT_KEY, TestApp, Vote};
use crate::support::{Backend, modern_meta, post};
use serde_json::{Value, json};
use std::time::Duration;

/// The standard app (see `TestAppBuilder`) on `backend`.
async fn setup(backend: Backend) -> TestApp {
    TestApp::builder().backend(backend).spawn().await
}

async fn quorum_and_self_approval(backend: Backend) {
    let app = setup(backend).await;
    let agent = app.spawn_call("delete_record", json!({"record_id": "r1"}));
    let approval = app.pending(1).await.remove(0);
    let id = approval.id.as_str();
    assert_eq!(approval.rule, "destructive-needs-two");
    assert_eq!(
        app.vote(id, "alice", Vote::Approve).await["result"],
        "not_authorized",
        "the agent's own human"
    );
    assert_eq!(
        app.vote(id, "dave", Vote::Approve).await["result"],
        "not_authorized",
        "not in ops"
    );
    assert_eq!(
        app.vote(id, "bob", Vote::Approve).await,
        json!({"result":"counted","approvals":1,"quorum":2})
    );
    assert_eq!(
        app.vote(id, "bob", Vote::Approve).await["result"],
        "already_voted"
    );
    assert_eq!(
        app.vote(id, "carol", Vote::Approve).await,
        json!({"result":"decided","status":"approved"})
    );
    assert_eq!(
        app.vote(id, "carol", Vote::Deny(Some("late"))).await["result"],
        "already_decided"
    );
    let response = agent.answer().await;
    assert_eq!(response.text(), "deleted r1", "{response}");
    assert!(!response.progress.is_empty(), "progress while waiting");
    let kinds = app.story(&approval.call_id).await;
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
    let app = setup(backend).await;
    let allowed = app.call("echo", json!({"message": "hi"})).await;
    assert_eq!(allowed.text(), "hi");
    let list =
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":modern_meta()}});
    let auth = format!("Bearer {AGENT_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];
    let tools = post(&app.url, &headers, &list).await.json();
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
    let refused = app.call("add", json!({"a": 1, "b": 2})).await;
    assert_eq!(
        refused.text(),
        "Denied by policy (rule no-adding): agents do their own arithmetic"
    );
    let denied = app
        .call("delete_record", json!({"record_id": "prod-7"}))
        .await;
    assert!(denied.is_error());
    assert!(
        denied
            .text()
            .contains("production records are never deleted by agents"),
        "{denied}"
    );
    let (agent, id) = app.held_delete("r2").await;
    let reasonless = app.vote(&id, "bob", Vote::Deny(None)).await;
    assert_eq!(reasonless["error"], "a deny needs a reason", "{reasonless}");
    assert_eq!(
        app.vote(&id, "bob", Vote::Deny(Some("not today"))).await,
        json!({"result":"decided","status":"denied"})
    );
    let response = agent.answer().await;
    assert!(response.is_error());
    assert_eq!(
        response.text(),
        format!("Denied by bob: not today (approval {id})")
    );
}

async fn break_glass(backend: Backend) {
    let app = setup(backend).await;
    let (agent, id) = app.held_delete("r9").await;
    let attempt = |who: &'static str, justification: &'static str| {
        app.vote(&id, who, Vote::BreakGlass(justification))
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
    assert_eq!(agent.answer().await.text(), "deleted r9");
    let approval = app.approval(&id).await;
    assert!(approval.break_glass);
    assert_eq!(approval.reason.as_deref(), Some(justification));

    // verify lists it until another approver reviews it; bob may not review his own.
    let unreviewed = |report: &Value| {
        report["unreviewed_break_glass"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["approval_id"] == id.as_str())
    };
    let report = app.verify_report().await;
    assert!(unreviewed(&report), "{report}");
    let review = format!("/approvals/{id}/review");
    let note = json!({"note": "checked INC-42, the delete was needed"});
    let (status, own) = app.post(&review, "bob", Some(note.clone())).await;
    assert_eq!(status, 400, "{own}");
    let (status, reviewed) = app.post(&review, "carol", Some(note)).await;
    assert_eq!(status, 200, "{reviewed}");
    let report = app.verify_report().await;
    assert!(!unreviewed(&report), "{report}");
    assert_eq!(report["ok"], true, "{report}");
}

crate::on_both_databases!(break_glass: break_glass_needs_a_justification_and_is_flagged_on_sqlite, break_glass_needs_a_justification_and_is_flagged_on_postgres);

crate::on_both_databases!(veto_and_rules: one_deny_decides_and_rules_apply_on_sqlite, one_deny_decides_and_rules_apply_on_postgres);

async fn expiry(backend: Backend) {
    let app = setup(backend).await;
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        app.call("slow_count", json!({"n": 1})),
    )
    .await
    .unwrap();
    assert!(response.is_error());
    assert!(response.text().contains("expired"), "{response}");
    assert_eq!(app.approvals("expired").await.len(), 1);
}

crate::on_both_databases!(expiry: expiry_denies_on_sqlite, expiry_denies_on_postgres);

async fn concurrent_votes(backend: Backend) {
    let app = setup(backend).await;
    let (agent, id) = app.held_delete("r3").await;
    let votes =
        ["bob", "carol", "alice", "bob", "carol"].map(|who| app.vote(&id, who, Vote::Approve));
    let results = futures::future::join_all(votes).await;
    let decided = results.iter().filter(|r| r["result"] == "decided").count();
    assert_eq!(decided, 1, "exactly one vote decides: {results:?}");
    assert_eq!(agent.answer().await.text(), "deleted r3");
}

crate::on_both_databases!(concurrent_votes: concurrent_votes_decide_once_on_sqlite, concurrent_votes_decide_once_on_postgres);

async fn restart(backend: Backend) {
    let mut app = setup(backend).await;
    let abandoned = app.spawn_call("delete_record", json!({"record_id": "r4"}));
    let id = app.pending(1).await.remove(0).id;
    app.stop();
    abandoned.abort();
    app.start().await;
    let retry = app.spawn_call("delete_record", json!({"record_id": "r4"}));
    // Joining an approval records nothing of its own: give the retry time to arrive (and, were
    // it wrong, to open a second approval) before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = app.pending(1).await;
    assert_eq!(
        still[0].id, id,
        "the retry joined the approval that survived the restart"
    );
    app.vote(&id, "bob", Vote::Approve).await;
    app.vote(&id, "carol", Vote::Approve).await;
    assert_eq!(retry.answer().await.text(), "deleted r4");
}

crate::on_both_databases!(restart: a_pending_approval_survives_a_restart_on_sqlite, a_pending_approval_survives_a_restart_on_postgres);

async fn audit_failure(backend: Backend) {
    let app = setup(backend).await;
    let ok = app.call("echo", json!({"message": "before"})).await;
    assert_eq!(ok.text(), "before");
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&app.db.url)
        .await
        .unwrap();
    sqlx::query("drop table audit_events")
        .execute(&mut conn)
        .await
        .unwrap();
    let refused = app.call("echo", json!({"message": "after"})).await;
    assert!(refused.is_error(), "{refused}");
    assert!(refused.text().contains("could not record"), "{refused}");
}

crate::on_both_databases!(audit_failure: an_audit_write_failure_refuses_the_call_on_sqlite, an_audit_write_failure_refuses_the_call_on_postgres);

async fn hold_then_retry(backend: Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .max_hold_secs(1)
        .spawn()
        .await;
    let delete = || app.call("delete_record", json!({"record_id": "r5"}));
    let held = delete().await;
    let approval = app.pending(1).await.remove(0);
    let id = approval.id.as_str();
    assert!(held.is_error());
    assert!(
        held.text()
            .contains(&format!("Approval {id} is still pending")),
        "{held}"
    );
    app.vote(id, "bob", Vote::Approve).await;
    assert_eq!(
        app.vote(id, "carol", Vote::Approve).await["result"],
        "decided"
    );
    let retried = delete().await;
    assert_eq!(
        retried.text(),
        "deleted r5",
        "the retry joined the approved grant"
    );
    let again = delete().await;
    assert!(
        again.text().contains("is still pending"),
        "the grant was used once; a new approval opens: {again}"
    );
    let events = app.audit_events("kind=call.completed").await;
    assert_eq!(
        events.len(),
        1,
        "the upstream ran the call exactly once: {events:?}"
    );
}

crate::on_both_databases!(hold_then_retry: a_retry_after_the_hold_joins_the_approval_on_sqlite, a_retry_after_the_hold_joins_the_approval_on_postgres);

/// Runs `countersign approvals ...` against the test database, as an operator would, with
/// `token` as the approver's credential (`COUNTERSIGN_APPROVER_TOKEN`).
fn approvals_cli(app: &TestApp, token: Option<&str>, args: &[&str]) -> std::process::Output {
    approvals_command(app, token, args).output().unwrap()
}

/// `countersign approvals ARGS` with the app's configuration.
fn approvals_command(app: &TestApp, token: Option<&str>, args: &[&str]) -> std::process::Command {
    let mut command = app.cli(&[&["approvals"], args].concat());
    if let Some(token) = token {
        command.env("COUNTERSIGN_APPROVER_TOKEN", token);
    }
    command
}

/// `approvals watch` prints a request when it comes, each vote, and the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_watch_follows_requests_votes_and_decisions() {
    use tokio::io::AsyncBufReadExt as _;
    let app = setup(Backend::Sqlite).await;
    let mut watch = tokio::process::Command::from(approvals_command(
        &app,
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
    let (agent, id) = app.held_delete("watched").await;
    let requested = next().await;
    assert_eq!(
        (requested["id"].as_str(), requested["status"].as_str()),
        (Some(id.as_str()), Some("pending")),
        "{requested}"
    );
    assert_eq!(requested["arguments"], json!({"record_id": "watched"}));
    app.vote(&id, "bob", Vote::Approve).await;
    let voted = next().await;
    assert_eq!(voted["approvals_so_far"], json!(["bob"]), "{voted}");
    app.vote(&id, "carol", Vote::Approve).await;
    let decided = next().await;
    assert_eq!(
        (decided["status"].as_str(), decided["decided_by"].as_str()),
        (Some("approved"), Some("carol")),
        "{decided}"
    );
    assert_eq!(agent.answer().await.text(), "deleted watched");
    watch.start_kill().unwrap();
}

async fn cli_votes(backend: Backend) {
    let app = setup(backend).await;
    let (agent, id) = app.held_delete("r6").await;
    let listed = approvals_cli(&app, None, &["list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{listed:?}"
    );
    // `--as` alone names nobody; a token that is someone else's is refused too.
    let unauthenticated = approvals_cli(&app, None, &["approve", &id, "--as", "bob"]);
    assert!(!unauthenticated.status.success());
    assert!(
        String::from_utf8_lossy(&unauthenticated.stderr).contains("an approver token is required"),
        "{unauthenticated:?}"
    );
    let impostor = approvals_cli(&app, Some("carol-token"), &["approve", &id, "--as", "bob"]);
    assert!(!impostor.status.success());
    assert!(
        String::from_utf8_lossy(&impostor.stderr).contains("not bob's"),
        "{impostor:?}"
    );
    for who in ["bob", "carol"] {
        let token = format!("{who}-token");
        let voted = approvals_cli(&app, Some(&token), &["approve", &id]);
        assert!(voted.status.success(), "{voted:?}");
        if who == "bob" {
            // The listing says what is asked, the progress and who voted.
            let listed = approvals_cli(&app, None, &["list"]);
            let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
            assert!(
                listed.contains("1/2 (bob)") && listed.contains("expires in"),
                "{listed}"
            );
            assert!(
                listed.contains(r#"arguments: {"record_id":"r6"}"#),
                "{listed}"
            );
            let json = approvals_cli(&app, None, &["list", "--format", "json"]);
            let json: Value = serde_json::from_slice(&json.stdout).unwrap();
            assert_eq!(json[0]["approvals_so_far"], json!(["bob"]), "{json}");
        }
    }
    assert_eq!(
        agent.answer().await.text(),
        "deleted r6",
        "a decision made by another process wakes the call"
    );
    let denied = approvals_cli(&app, Some("bob-token"), &["deny", &id, "--reason", "late"]);
    assert!(
        !denied.status.success(),
        "a vote after the end is refused: {denied:?}"
    );
    assert!(String::from_utf8_lossy(&denied.stdout).contains("already_decided"));
    // Decided: no countdown, but who decided and when, in RFC 3339.
    let all = approvals_cli(&app, None, &["list", "--status", "all"]);
    let all = String::from_utf8_lossy(&all.stdout).into_owned();
    assert!(
        all.contains("decided by carol at 20") && !all.contains("expires in"),
        "{all}"
    );
    let shown = approvals_cli(&app, None, &["show", &id]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert!(shown["created"].as_str().unwrap().ends_with('Z'), "{shown}");
    assert_eq!(shown["approvals_so_far"], json!(["bob", "carol"]));
    let listed = app.approvals("all").await;
    assert!(
        listed.iter().any(|a| a.id == id),
        "status=all lists decided approvals too: {listed:?}"
    );
}

crate::on_both_databases!(cli_votes: votes_from_the_cli_wake_the_waiting_call_on_sqlite, votes_from_the_cli_wake_the_waiting_call_on_postgres);

/// The approver and auditor APIs refuse the same way: 401 with a bearer challenge and a JSON
/// body saying what is needed; a bad query is a JSON 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approver_and_auditor_apis_refuse_alike_in_json() {
    let app = setup(Backend::Sqlite).await;
    for (path, realm) in [
        ("/approvals", "countersign-approvers"),
        ("/audit/events", "countersign-audit"),
    ] {
        let response = crate::support::http()
            .get(format!("{}{path}", app.base))
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
    let (status, body) = app.get("/audit/events?since=yesterday-ish", "audrey").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("yesterday-ish"),
        "{body}"
    );
}
