//! The attacks on the trust core, each played against the running gateway on SQLite and
//! PostgreSQL: the database owner forging state or events, cutting or emptying the log; a
//! shutdown during a flood of cancellations; a crash right after the deciding vote; and
//! secrets a rule redacts.

use crate::approvals::{
    AGENT_KEY, POLICY, answer, api, base, call, gateway_with, held_delete, pending, text, vote,
};
use crate::support::{self, Backend, TestDb};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// A connection to the test database, as its owner has one.
async fn owner(db: &TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&db.url).await.unwrap()
}

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

/// Runs the `countersign` binary with `args`.
fn countersign(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env_remove("COUNTERSIGN_APPROVER_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The gateway's configuration for the CLI (the same database, keys and anchors).
fn cli_config(db: &TestDb, dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("cli.yaml");
    let yaml = format!(
        "database: {{url: '{}'}}\nupstreams: [{{name: echo, stdio: {{command: 'true'}}}}]\n\
         server: {{allow_anonymous: true}}\n{extra}\n",
        db.url
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `audit verify` with the gateway's config; (success, stdout + stderr).
fn verify_cli(config: &Path) -> (bool, String) {
    let out = countersign(&["audit", "verify", "--config", config.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The gateway's public key, as an auditor is given it.
fn public_key(config: &Path) -> String {
    let out = countersign(&["audit", "public-key", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Attack 1: `UPDATE approvals SET status = 'approved'` makes nothing run. The gateway reads
/// decisions from the verified log, sees the forged row and records an alert.
async fn forged_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = crate::approvals::policy_dir();
    let gw = gateway_with(&db, dir.path(), "approvals: {progress_secs: 1}").await;
    let (agent, id) = held_delete(&gw, "forged-1").await;
    let pool = owner(&db).await;
    exec(
        &pool,
        "UPDATE approvals SET status = 'approved', decided_by = 'mallory', decided_at = 1 \
         WHERE status = 'pending'",
    )
    .await;
    let (response, _) = answer(agent).await;
    assert_eq!(response["result"]["isError"], true, "{response}");
    let said = text(&response);
    assert!(
        said.contains(&format!("Approval {id} cannot be used")) && said.contains("not approved"),
        "{said}"
    );
    let kinds = kinds(&pool).await;
    assert!(!kinds.contains(&"call.forwarded".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"audit.alert".to_string()), "{kinds:?}");
    let (_, report) = api(
        reqwest::Method::GET,
        format!("{}/audit/verify", base(&gw)),
        "audrey",
        None,
    )
    .await;
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
    let db = TestDb::new(backend).await;
    let dir = crate::approvals::policy_dir();
    let work = tempfile::tempdir().unwrap();
    let gw = gateway_with(&db, dir.path(), "approvals: {progress_secs: 1}").await;
    let (agent, id) = held_delete(&gw, "forged-2").await;
    let pool = owner(&db).await;
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

    let (response, _) = answer(agent).await;
    assert!(
        !text(&response).starts_with("deleted"),
        "a forged decision must not run the call: {response}"
    );
    let (allowed, _) = call(gw.url.clone(), "echo", json!({"message": "hi"})).await;
    assert!(
        text(&allowed).contains("could not record"),
        "nothing is appended on top of forged events: {allowed}"
    );

    let config = cli_config(&db, work.path(), "");
    let key = public_key(&config);
    let out = countersign(&[
        "audit",
        "verify",
        "--database",
        &db.url,
        "--public-key",
        &key,
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        said.contains(&format!("BROKEN at seq {}", seq + 1))
            && said.contains("does not hold a signing key"),
        "{said}"
    );
    let offline_without_key = countersign(&["audit", "verify", "--database", &db.url]);
    assert!(!offline_without_key.status.success());
    assert!(String::from_utf8_lossy(&offline_without_key.stderr).contains("--public-key"));
}

crate::on_both_databases!(forged_inserts: forged_inserts_stop_the_writer_and_verify_names_them_on_sqlite, forged_inserts_stop_the_writer_and_verify_names_them_on_postgres);

/// Attack 3: the tail cut at a signed head, then the whole log emptied. Neither leaves a bad
/// signature; the anchors the gateway wrote off the database catch both, in `audit verify`
/// and when the gateway starts.
async fn cut_and_emptied(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = crate::approvals::policy_dir();
    let work = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("anchors.jsonl");
    let audit = format!(
        "audit: {{anchors: {{file: '{}', every_secs: 1}}}}",
        anchors.display()
    );
    let gw = gateway_with(&db, dir.path(), &audit).await;
    for n in 0..3 {
        let (response, _) = call(gw.url.clone(), "echo", json!({"message": format!("m{n}")})).await;
        assert_eq!(text(&response), format!("m{n}"));
    }
    let pool = owner(&db).await;
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
    drop(gw);
    let config = cli_config(&db, work.path(), &audit);
    let (ok, said) = verify_cli(&config);
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
    let (ok, said) = verify_cli(&config);
    assert!(!ok && said.contains("removed from the tail"), "{said}");
    let yaml = std::fs::read_to_string(&config).unwrap();
    let restarted = countersign::startup::Application::build(
        &countersign::config::parse(
            &format!("{yaml}\npolicy_dir: '{}'\n", dir.path().display()),
            "restart.yaml",
            &[],
        )
        .unwrap(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let error = format!("{:#}", restarted.err().expect("a cut log refuses to start"));
    assert!(
        error.contains("tampered") && error.contains("removed from the tail"),
        "{error}"
    );

    exec(&pool, "DELETE FROM audit_events").await;
    let (ok, said) = verify_cli(&config);
    assert!(!ok && said.contains("the log is empty"), "{said}");
}

crate::on_both_databases!(cut_and_emptied: a_cut_or_emptied_log_is_caught_by_the_anchors_on_sqlite, a_cut_or_emptied_log_is_caught_by_the_anchors_on_postgres);

/// Redacted values are never stored in clear: every event carries the keyed digest, which
/// whoever holds the redaction key can check against a value they know.
async fn redaction(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = POLICY.replace(
        "    break_glass: {approvers: [bob], min_justification: 20}",
        "    break_glass: {approvers: [bob], min_justification: 20}\n    redact: [/password]",
    );
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let key_file = dir.path().join("redaction.key");
    let audit = format!("audit: {{redaction_key: '{}'}}", key_file.display());
    let gw = gateway_with(&db, dir.path(), &audit).await;
    let agent = tokio::spawn(call(
        gw.url.clone(),
        "delete_record",
        json!({"record_id": "r-secret", "password": "hunter2"}),
    ));
    let id = pending(&gw, 1).await[0]["id"].as_str().unwrap().to_owned();
    for who in ["bob", "carol"] {
        vote(&gw, &id, who, true, None).await;
    }
    let (response, _) = answer(agent).await;
    assert_eq!(text(&response), "deleted r-secret");

    let pool = owner(&db).await;
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
    let (_, shown) = api(
        reqwest::Method::GET,
        format!("{}/approvals/{id}", base(&gw)),
        "bob",
        None,
    )
    .await;
    assert_eq!(shown["arguments"]["password"], expected.as_str());
}

crate::on_both_databases!(redaction: redacted_values_are_keyed_digests_in_every_event_on_sqlite, redacted_values_are_keyed_digests_in_every_event_on_postgres);

/// The gateway as a child process, so it can be sent SIGTERM or SIGKILL.
struct Child;

impl Child {
    /// A gateway on `policies`, its config written in `work`.
    async fn start(db: &TestDb, dir: &Path, work: &Path, extra: &str) -> support::GatewayProcess {
        let port = support::free_port();
        let path = work.join(format!("gateway-{port}.yaml"));
        let token = |who: &str| countersign::auth::hash_key(&format!("{who}-token"));
        let yaml = format!(
            "server: {{listen: '127.0.0.1:{port}'}}\ndatabase: {{url: '{db}'}}\npolicy_dir: '{policies}'\n\
             upstreams:\n  - name: echo\n    stdio: {{command: python3, args: ['{echo}']}}\n\
             agents:\n  - {{id: agent-1, on_behalf_of: alice, key_sha256: {agent}}}\n\
             approvers:\n  - {{id: bob, groups: [ops], token_sha256: {bob}}}\n  - {{id: carol, groups: [ops], token_sha256: {carol}}}\n\
             auditors:\n  - {{id: audrey, token_sha256: {audrey}}}\n{extra}\n",
            db = db.url,
            policies = dir.display(),
            echo = support::echo_upstream().display(),
            agent = countersign::auth::hash_key(AGENT_KEY),
            bob = token("bob"),
            carol = token("carol"),
            audrey = token("audrey"),
        );
        std::fs::write(&path, yaml).unwrap();
        support::GatewayProcess::spawn(&path, port).await
    }
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
    let db = TestDb::new(backend).await;
    let dir = crate::approvals::policy_dir();
    let work = tempfile::tempdir().unwrap();
    // The flood caps would refuse most of them (tested in edge.rs): lift them here.
    let uncapped = "approvals: {max_pending_per_agent: 1000, max_pending_per_tool: 1000, \
                    new_per_minute_per_agent: 100000}";
    let child = Child::start(&db, dir.path(), work.path(), uncapped).await;
    let url = child.gw.url.clone();
    let agents: Vec<_> = (0..CALLS)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                call(
                    url,
                    "delete_record",
                    json!({"record_id": format!("flood-{n}")}),
                )
                .await
            })
        })
        .collect();
    let pool = owner(&db).await;
    for _ in 0..300 {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM approvals")
            .fetch_one(&pool)
            .await
            .unwrap();
        if open as usize == CALLS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The clients close their streams: a modern client's cancel.
    for agent in &agents {
        agent.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.signal("-TERM").await;
    let (rows, ended) = assert_state_matches_log(&pool).await;
    assert_eq!(rows, CALLS, "every held call opened its approval");
    assert!(ended > 0, "some cancellations were decided before the stop");
    let config = cli_config(&db, work.path(), "");
    let (ok, said) = verify_cli(&config);
    assert!(ok, "{said}");
}

crate::on_both_databases!(sigterm_flood: sigterm_during_300_cancellations_loses_no_decision_on_sqlite, sigterm_during_300_cancellations_loses_no_decision_on_postgres);

/// Attack 5: SIGKILL right after the deciding vote, with no call waiting (the agent was told
/// to retry). The grant is used only in the same commit as the forward, so it survives the
/// crash: the agent's retry joins it and the upstream runs the call once.
async fn kill_after_vote(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = crate::approvals::policy_dir();
    let work = tempfile::tempdir().unwrap();
    let hold = "approvals: {max_hold_secs: 1}";
    let first = Child::start(&db, dir.path(), work.path(), hold).await;
    let (response, _) = call(
        first.gw.url.clone(),
        "delete_record",
        json!({"record_id": "k9"}),
    )
    .await;
    assert!(text(&response).contains("still pending"), "{response}");
    let id = pending(&first.gw, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    vote(&first.gw, &id, "bob", true, None).await;
    let decided = vote(&first.gw, &id, "carol", true, None).await;
    assert_eq!(decided["result"], "decided");
    first.signal("-KILL").await;

    let second = Child::start(&db, dir.path(), work.path(), hold).await;
    let (response, _) = call(
        second.gw.url.clone(),
        "delete_record",
        json!({"record_id": "k9"}),
    )
    .await;
    assert_eq!(
        text(&response),
        "deleted k9",
        "the retry joins the unused grant"
    );
    let pool = owner(&db).await;
    let forwarded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE kind = 'call.forwarded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(forwarded, 1, "the upstream ran the call once");
    drop(second);
    let config = cli_config(&db, work.path(), "");
    let (ok, said) = verify_cli(&config);
    assert!(ok, "{said}");
}

crate::on_both_databases!(kill_after_vote: kill_9_after_the_deciding_vote_leaves_the_grant_to_the_retry_on_sqlite, kill_9_after_the_deciding_vote_leaves_the_grant_to_the_retry_on_postgres);

/// Two replicas on one PostgreSQL database (one shared key): a call held on one is approved
/// through the other. Each writer verifies what the other appended before continuing, its
/// ledger learns the other's approval and votes from the log, and the call runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_decide_on_each_others_verified_events() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = crate::approvals::policy_dir();
    let first = gateway_with(&db, dir.path(), "").await;
    let second = gateway_with(&db, dir.path(), "").await;
    let (agent, id) = held_delete(&first, "replicated").await;
    vote(&second, &id, "bob", true, None).await;
    let decided = vote(&second, &id, "carol", true, None).await;
    assert_eq!(decided["result"], "decided", "{decided}");
    let (response, _) = answer(agent).await;
    assert_eq!(text(&response), "deleted replicated");
    let pool = owner(&db).await;
    let kinds = kinds(&pool).await;
    let forwards = kinds.iter().filter(|k| *k == "call.forwarded").count();
    assert_eq!(forwards, 1, "{kinds:?}");
    let (_, report) = api(
        reqwest::Method::GET,
        format!("{}/audit/verify", base(&first)),
        "audrey",
        None,
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
}
