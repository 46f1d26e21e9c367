//! The attacks on the trust core, each played against the running gateway on SQLite and
//! PostgreSQL: the database owner forging state or events, cutting or emptying the log; a
//! shutdown during a flood of cancellations; a crash right after the deciding vote; and
//! secrets a rule redacts.

use crate::app::{ApprovalLimits, Approver, POLICY, TestApp, TestAppBuilder, Vote, countersign};
use crate::support::{self, Backend};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

async fn exec(pool: &sqlx::AnyPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

/// Drops the append-only triggers, as a database owner with full rights can.
async fn drop_triggers(pool: &sqlx::AnyPool, backend: Backend) {
    match backend {
        Backend::Sqlite => {
            exec(pool, "DROP TRIGGER audit_events_no_update").await;
            exec(pool, "DROP TRIGGER audit_events_no_delete").await;
        }
        Backend::Postgres => {
            exec(
                pool,
                "DROP TRIGGER audit_events_no_update_delete ON audit_events",
            )
            .await;
        }
    }
}

async fn kinds(pool: &sqlx::AnyPool) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM audit_events ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// `audit verify` with the gateway's config; (success, stdout + stderr).
fn verify_cli(app: &TestApp) -> (bool, String) {
    let out = app.cli(&["audit", "verify"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The gateway's public key, as an auditor is given it.
fn public_key(app: &TestApp) -> String {
    let out = app.cli(&["audit", "public-key"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The standard app on `backend`, telling a waiting call every second.
async fn progressing(backend: Backend) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .progress_secs(1)
        .spawn()
        .await
}

/// Attack 1: `UPDATE approvals SET status = 'approved'` makes nothing run. The gateway reads
/// decisions from the verified log, sees the forged row and records an alert.
async fn forged_row(backend: Backend) {
    let app = progressing(backend).await;
    let (agent, id) = app.held_delete("forged-1").await;
    let pool = app.owner().await;
    exec(
        &pool,
        "UPDATE approvals SET status = 'approved', decided_by = 'mallory', decided_at = 1 \
         WHERE status = 'pending'",
    )
    .await;
    let response = agent.answer().await;
    assert!(response.is_error(), "{response}");
    let said = response.text();
    assert!(
        said.contains(&format!("Approval {id} cannot be used")) && said.contains("not approved"),
        "{said}"
    );
    let kinds = kinds(&pool).await;
    assert!(!kinds.contains(&"call.forwarded".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"audit.alert".to_string()), "{kinds:?}");
    let report = app.verify_report().await;
    assert_eq!(
        report["ok"], true,
        "the log itself was not touched: {report}"
    );
}

crate::on_both_databases!(forged_row: a_forged_approved_row_runs_nothing_on_sqlite, a_forged_approved_row_runs_nothing_on_postgres);

/// SHA-256 over the previous hash and the JCS of the event, as the chain documents it.
fn chain_hash(prev: &str, fields: &Value) -> String {
    let canonical = serde_json_canonicalizer::to_vec(fields).unwrap();
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(&canonical);
    hex::encode(h.finalize())
}

/// Attack 2: correctly chained `approval.vote` and `approval.decided` rows appended with plain
/// INSERTs. The writer refuses to continue from them (every call is refused, fail closed) and
/// `audit verify`, offline with only the public key, names them.
async fn forged_inserts(backend: Backend) {
    let app = progressing(backend).await;
    let (agent, id) = app.held_delete("forged-2").await;
    let pool = app.owner().await;
    let (seq, hash, at): (i64, String, String) =
        sqlx::query_as("SELECT seq, hash, at FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let call_id: String = sqlx::query_scalar("SELECT call_id FROM approvals WHERE id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut prev = hash;
    for (n, (kind, payload)) in [
        ("approval.vote", json!({"approval_id": id, "approver": "bob", "vote": "approve", "source": "http", "result": {"result": "counted"}, "agent": "agent-1", "server": "echo", "tool": "delete_record"})),
        ("approval.decided", json!({"approval_id": id, "outcome": "approved", "decided_by": "bob", "agent": "agent-1", "server": "echo", "tool": "delete_record", "approvers": []})),
    ]
    .into_iter()
    .enumerate()
    {
        let row_seq = seq + 1 + n as i64;
        let row_id = uuid::Uuid::now_v7().to_string();
        let fields = json!({"seq": row_seq, "id": row_id, "call_id": call_id, "kind": kind,
            "at": at, "actor": "bob", "payload": payload});
        let row_hash = chain_hash(&prev, &fields);
        sqlx::query(
            "INSERT INTO audit_events (seq, id, call_id, kind, at, actor, agent, server, tool, approver, outcome, payload, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, 'bob', 'agent-1', 'echo', 'delete_record', $6, $7, $8, $9, $10)",
        )
        .bind(row_seq)
        .bind(&row_id)
        .bind(&call_id)
        .bind(kind)
        .bind(&at)
        .bind(payload["approver"].as_str())
        .bind(payload["outcome"].as_str())
        .bind(serde_json_canonicalizer::to_string(&payload).unwrap())
        .bind(&prev)
        .bind(&row_hash)
        .execute(&pool)
        .await
        .unwrap();
        prev = row_hash;
    }
    exec(
        &pool,
        "UPDATE approvals SET status = 'approved' WHERE status = 'pending'",
    )
    .await;

    let response = agent.answer().await;
    assert!(
        !response.text().starts_with("deleted"),
        "a forged decision must not run the call: {response}"
    );
    let allowed = app.call("echo", json!({"message": "hi"})).await;
    assert!(
        allowed.text().contains("could not record"),
        "nothing is appended on top of forged events: {allowed}"
    );

    let key = public_key(&app);
    let db = &app.db.url;
    let offline = ["audit", "verify", "--database", db, "--public-key", &key];
    let out = countersign(&offline).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        said.contains(&format!("BROKEN at seq {}", seq + 1))
            && said.contains("does not hold a signing key"),
        "{said}"
    );
    let offline_without_key = countersign(&["audit", "verify", "--database", db])
        .output()
        .unwrap();
    assert!(!offline_without_key.status.success());
    assert!(String::from_utf8_lossy(&offline_without_key.stderr).contains("--public-key"));
}

crate::on_both_databases!(forged_inserts: forged_inserts_stop_the_writer_and_verify_names_them_on_sqlite, forged_inserts_stop_the_writer_and_verify_names_them_on_postgres);

/// Attack 3: the tail cut at a signed head, then the whole log emptied. Neither leaves a bad
/// signature; the anchors the gateway wrote off the database catch both, in `audit verify`
/// and when the gateway starts.
async fn cut_and_emptied(backend: Backend) {
    let mut app = TestApp::builder()
        .backend(backend)
        .anchors_every_secs(1)
        .spawn()
        .await;
    let anchors = app.anchors_file();
    for n in 0..3 {
        let response = app.call("echo", json!({"message": format!("m{n}")})).await;
        assert_eq!(response.text(), format!("m{n}"));
    }
    let pool = app.owner().await;
    let head: i64 = sqlx::query_scalar("SELECT max(seq) FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let anchored = || {
        std::fs::read_to_string(&anchors)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|a| a["seq"].as_i64())
            .max()
            .unwrap_or(0)
    };
    support::until("the head is anchored", || anchored() >= head).await;
    app.stop();
    let (ok, said) = verify_cli(&app);
    assert!(ok, "{said}");

    // Cut back to an earlier signed head, so no signature is missing: only the anchors know.
    let signed: i64 = sqlx::query_scalar(
        "SELECT max(seq) FROM audit_events WHERE signature IS NOT NULL AND seq < $1",
    )
    .bind(head)
    .fetch_one(&pool)
    .await
    .unwrap();
    drop_triggers(&pool, backend).await;
    exec(
        &pool,
        &format!("DELETE FROM audit_events WHERE seq > {signed}"),
    )
    .await;
    let (ok, said) = verify_cli(&app);
    assert!(!ok && said.contains("removed from the tail"), "{said}");
    let restarted = app.try_build().await;
    let error = format!("{:#}", restarted.err().expect("a cut log refuses to start"));
    assert!(
        error.contains("tampered") && error.contains("removed from the tail"),
        "{error}"
    );

    exec(&pool, "DELETE FROM audit_events").await;
    let (ok, said) = verify_cli(&app);
    assert!(!ok && said.contains("the log is empty"), "{said}");
}

crate::on_both_databases!(cut_and_emptied: a_cut_or_emptied_log_is_caught_by_the_anchors_on_sqlite, a_cut_or_emptied_log_is_caught_by_the_anchors_on_postgres);

/// Redacted values are never stored in clear: every event carries the keyed digest, which
/// whoever holds the redaction key can check against a value they know.
async fn redaction(backend: Backend) {
    let policy = POLICY.replace(
        "    break_glass: {approvers: [bob], min_justification: 20}",
        "    break_glass: {approvers: [bob], min_justification: 20}\n    redact: [/password]",
    );
    let app = TestApp::builder()
        .backend(backend)
        .policy(&policy)
        .redaction_key()
        .spawn()
        .await;
    let key_file = app.redaction_key_file();
    let agent = app.spawn_call(
        "delete_record",
        json!({"record_id": "r-secret", "password": "hunter2"}),
    );
    let id = app.pending(1).await.remove(0).id;
    for who in ["bob", "carol"] {
        app.vote(&id, who, Vote::Approve).await;
    }
    assert_eq!(agent.answer().await.text(), "deleted r-secret");

    let pool = app.owner().await;
    let payloads: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, payload FROM audit_events ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (kind, payload) in &payloads {
        assert!(
            !payload.contains("hunter2"),
            "{kind} holds the secret: {payload}"
        );
    }
    let received: Value = serde_json::from_str(
        &payloads
            .iter()
            .find(|(k, _)| k == "call.received")
            .unwrap()
            .1,
    )
    .unwrap();
    let key = hex::decode(std::fs::read_to_string(&key_file).unwrap().trim()).unwrap();
    let expected = {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(b"\"hunter2\"");
        format!(
            "[redacted] hmac-sha256:{}",
            hex::encode(mac.finalize().into_bytes())
        )
    };
    assert_eq!(received["arguments"]["password"], expected.as_str());
    assert_eq!(received["arguments"]["record_id"], "r-secret");
    let requested: Value = serde_json::from_str(
        &payloads
            .iter()
            .find(|(k, _)| k == "approval.requested")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(requested["arguments"]["password"], expected.as_str());
    let shown = app.approval(&id).await;
    assert_eq!(shown.arguments["password"], expected.as_str());
}

crate::on_both_databases!(redaction: redacted_values_are_keyed_digests_in_every_event_on_sqlite, redacted_values_are_keyed_digests_in_every_event_on_postgres);

/// The gateway as a child process, so it can be sent SIGTERM or SIGKILL, with approvers bob
/// and carol (ops).
fn child(backend: Backend) -> TestAppBuilder {
    TestApp::builder()
        .backend(backend)
        .child_process()
        .approvers(vec![
            Approver::new("bob").in_groups(&["ops"]),
            Approver::new("carol").in_groups(&["ops"]),
        ])
}

/// Every approval row that left `pending` has the `approval.decided` event that moved it, and
/// no other row has one: the state and the log agree.
async fn assert_state_matches_log(pool: &sqlx::AnyPool) -> (usize, usize) {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, status FROM approvals")
        .fetch_all(pool)
        .await
        .unwrap();
    let decided: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM audit_events WHERE kind = 'approval.decided'")
            .fetch_all(pool)
            .await
            .unwrap();
    let outcomes: std::collections::HashMap<String, String> = decided
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap())
        .map(|p| {
            (
                p["approval_id"].as_str().unwrap().to_owned(),
                p["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut ended = 0;
    for (id, status) in &rows {
        match outcomes.get(id) {
            Some(outcome) => {
                assert_eq!(outcome, status, "approval {id}");
                ended += 1;
            }
            None => assert_eq!(status, "pending", "approval {id} has no decision event"),
        }
    }
    assert_eq!(outcomes.len(), ended, "every decision event has its row");
    (rows.len(), ended)
}

/// Attack 4: 300 held calls cancelled by their clients, then SIGTERM 0.3 s later. Whatever
/// was decided has its event (they commit together), and whatever was not stays pending.
async fn sigterm_flood(backend: Backend) {
    const CALLS: usize = 300;
    // The flood caps would refuse most of them (tested in edge.rs): lift them here.
    let uncapped = ApprovalLimits {
        max_pending_per_agent: Some(1000),
        max_pending_per_tool: Some(1000),
        new_per_minute_per_agent: Some(100000),
        ..Default::default()
    };
    let mut app = child(backend).limits(uncapped).spawn().await;
    let agents: Vec<_> = (0..CALLS)
        .map(|n| app.spawn_call("delete_record", json!({"record_id": format!("flood-{n}")})))
        .collect();
    let pool = app.owner().await;
    let opened = || async {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM approvals")
            .fetch_one(&pool)
            .await
            .unwrap();
        if open as usize == CALLS {
            Ok(())
        } else {
            Err(open)
        }
    };
    crate::wait::eventually(
        "every held call opened its approval",
        Duration::from_secs(30),
        opened,
    )
    .await;
    // The clients close their streams: a modern client's cancel.
    for agent in &agents {
        agent.abort();
    }
    // The cancellations race the stop on purpose: some are decided before it, some are not,
    // and the log must agree with the rows either way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.signal("-TERM").await;
    let (rows, ended) = assert_state_matches_log(&pool).await;
    assert_eq!(rows, CALLS, "every held call opened its approval");
    assert!(ended > 0, "some cancellations were decided before the stop");
    let (ok, said) = verify_cli(&app);
    assert!(ok, "{said}");
}

crate::on_both_databases!(sigterm_flood: sigterm_during_300_cancellations_loses_no_decision_on_sqlite, sigterm_during_300_cancellations_loses_no_decision_on_postgres);

/// Attack 5: SIGKILL right after the deciding vote, with no call waiting (the agent was told
/// to retry). The grant is used only in the same commit as the forward, so it survives the
/// crash: the agent's retry joins it and the upstream runs the call once.
async fn kill_after_vote(backend: Backend) {
    let mut app = child(backend).max_hold_secs(1).spawn().await;
    let response = app.call("delete_record", json!({"record_id": "k9"})).await;
    assert!(response.text().contains("still pending"), "{response}");
    let id = app.pending(1).await.remove(0).id;
    app.vote(&id, "bob", Vote::Approve).await;
    let decided = app.vote(&id, "carol", Vote::Approve).await;
    assert_eq!(decided["result"], "decided");
    app.signal("-KILL").await;

    app.start().await;
    let response = app.call("delete_record", json!({"record_id": "k9"})).await;
    assert_eq!(
        response.text(),
        "deleted k9",
        "the retry joins the unused grant"
    );
    let pool = app.owner().await;
    let forwarded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE kind = 'call.forwarded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(forwarded, 1, "the upstream ran the call once");
    app.stop();
    let (ok, said) = verify_cli(&app);
    assert!(ok, "{said}");
}

crate::on_both_databases!(kill_after_vote: kill_9_after_the_deciding_vote_leaves_the_grant_to_the_retry_on_sqlite, kill_9_after_the_deciding_vote_leaves_the_grant_to_the_retry_on_postgres);

/// Two replicas on one PostgreSQL database (one shared key): a call held on one is approved
/// through the other. Each writer verifies what the other appended before continuing, its
/// ledger learns the other's approval and votes from the log, and the call runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_decide_on_each_others_verified_events() {
    let first = TestApp::builder().backend(Backend::Postgres).spawn().await;
    let second = first.replica().await;
    let (agent, id) = first.held_delete("replicated").await;
    second.vote(&id, "bob", Vote::Approve).await;
    let decided = second.vote(&id, "carol", Vote::Approve).await;
    assert_eq!(decided["result"], "decided", "{decided}");
    assert_eq!(agent.answer().await.text(), "deleted replicated");
    let pool = first.owner().await;
    let kinds = kinds(&pool).await;
    let forwards = kinds.iter().filter(|k| *k == "call.forwarded").count();
    assert_eq!(forwards, 1, "{kinds:?}");
    let report = first.verify_report().await;
    assert_eq!(report["ok"], true, "{report}");
}
