//! The audit log against both backends: SQLite (a file in a tempdir) and PostgreSQL (a fresh
//! database per test on 127.0.0.1:5432, dropped afterwards; override the maintenance URL
//! with COUNTERSIGN_TEST_PG_URL).
//!
//! Tampering tests play the attacker the log is built against: a database administrator
//! with full rights, who first drops the append-only triggers.

use countersign::audit::{
    self, AuditLog, Checkpoint, EventKind, Filter, Format, NewEvent, auditor_router,
};
use countersign::auth::hash_key;
use countersign::config::AuditorConfig;
use countersign::store::{self, Backend, Db};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

use crate::db;
use crate::wait;

use db::TestDb;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A fresh database for one test, connected (and migrated) for the audit log, with the tools of
/// the attacker the tampering tests play. The database is removed when dropped.
struct AuditDb {
    db: Db,
    /// After `db`: the pool is let go before the database is dropped.
    fresh: TestDb,
}

impl AuditDb {
    async fn sqlite() -> AuditDb {
        AuditDb::on(TestDb::sqlite().await).await
    }

    async fn postgres() -> AuditDb {
        AuditDb::on(TestDb::postgres().await).await
    }

    async fn on(fresh: TestDb) -> AuditDb {
        let db = fresh.connect().await;
        AuditDb { db, fresh }
    }

    async fn log(&self) -> AuditLog {
        AuditLog::open(self.db.clone()).await.unwrap()
    }

    /// Runs raw SQL as the attacker (or the test) would.
    async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.db.pool)
            .await
            .map(|r| r.rows_affected())
    }

    /// The attacker's first step: remove the append-only guard.
    async fn drop_guard(&self) {
        match self.db.backend {
            Backend::Sqlite => {
                self.exec("DROP TRIGGER audit_events_no_update")
                    .await
                    .unwrap();
                self.exec("DROP TRIGGER audit_events_no_delete")
                    .await
                    .unwrap();
            }
            Backend::Postgres => {
                self.exec("DROP TRIGGER audit_events_no_update_delete ON audit_events")
                    .await
                    .unwrap();
            }
        }
    }
}

/// Every test runs on both backends, bounded in time.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::bounded(async { super::$name(super::AuditDb::sqlite().await).await }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::bounded(async { super::$name(super::AuditDb::postgres().await).await }).await
            }
        }
    )*};
}

on_both_backends!(
    appended_events_form_a_chain_that_verifies,
    concurrent_appends_get_gap_free_seqs,
    a_deferred_append_shares_the_next_commit,
    transitions_share_a_commit_only_on_disjoint_keys,
    two_writers_on_one_database_never_fork_the_chain,
    the_database_refuses_update_and_delete,
    an_edited_row_is_caught,
    a_deleted_row_is_caught,
    swapped_rows_are_caught,
    an_inserted_row_is_caught,
    a_cut_tail_or_a_rewritten_chain_is_caught_against_a_checkpoint,
    a_rotated_key_is_trusted_from_its_introduction,
    filters_select_the_right_events,
    a_failed_append_is_an_error_and_the_log_recovers,
    an_append_to_a_closed_database_fails,
    the_auditor_api_authenticates_and_records_every_query,
    the_auditor_api_fails_closed,
    cli_functions_verify_and_record_reads,
);

async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("the test finished in time");
}

fn event(call_id: Option<Uuid>, kind: EventKind, payload: Value) -> NewEvent {
    NewEvent::untyped(call_id, kind, "gateway", payload)
}

/// Appends `n` call events with varied payloads; returns the call ids used.
async fn seed(log: &AuditLog, n: usize) -> Vec<Uuid> {
    let calls: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for i in 0..n {
        let call = calls[i % calls.len()];
        log.append(event(
            Some(call),
            EventKind::CallReceived,
            json!({"agent": format!("agent-{}", i % 2), "server": "git", "tool": "push",
                   "n": i, "args": {"branch": "main", "force": i.is_multiple_of(3)}, "note": "ü \"q\"\n"}),
        ))
        .await
        .unwrap();
    }
    calls
}

/// What the tests verify against: the keys every log in this process signs with.
fn options(checkpoint: Option<&Checkpoint>) -> audit::VerifyOptions {
    audit::VerifyOptions {
        checkpoint: checkpoint.cloned(),
        trusted: audit::AuditKeys::ephemeral().trusted.clone(),
        ..Default::default()
    }
}

async fn verify_ok(t: &AuditDb) -> audit::VerifyReport {
    let report = audit::verify(&t.db, &options(None)).await.unwrap();
    assert!(report.ok, "{report}");
    report
}

async fn first_bad(t: &AuditDb, checkpoint: Option<&Checkpoint>) -> (i64, String) {
    let report = audit::verify(&t.db, &options(checkpoint)).await.unwrap();
    assert!(!report.ok, "verify missed the tampering: {report}");
    let breach = report.first_bad.unwrap();
    (breach.seq, breach.reason)
}

/// An independent implementation of the documented hash: SHA-256 over the previous hash's
/// hex text followed by the JCS of {seq,id,call_id,kind,at,actor,payload}.
#[allow(clippy::too_many_arguments)] // one argument per hashed field, in the documented order
fn forge_hash(
    prev_hash: &str,
    seq: i64,
    id: &str,
    call_id: Option<&str>,
    kind: &str,
    at: &str,
    actor: &str,
    payload: &Value,
) -> String {
    let canonical = serde_json_canonicalizer::to_vec(&json!({
        "seq": seq, "id": id, "call_id": call_id, "kind": kind, "at": at, "actor": actor,
        "payload": payload,
    }))
    .unwrap();
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(&canonical);
    hex::encode(h.finalize())
}

async fn appended_events_form_a_chain_that_verifies(t: AuditDb) {
    let log = t.log().await;
    let empty = audit::checkpoint(&t.db).await.unwrap();
    assert_eq!(empty.to_string(), format!("0:{}", audit::GENESIS_HASH));
    let (seq, reason) = first_bad(&t, None).await;
    assert_eq!(seq, 1, "a verifier given a key expects signed events");
    assert!(reason.contains("the log is empty"), "{reason}");

    let call = Uuid::now_v7();
    let mut appended = Vec::new();
    for (i, kind) in EventKind::ALL.into_iter().enumerate() {
        appended.push(
            log.append(event(
                Some(call),
                kind,
                json!({"i": i, "x": [1.5, 1e21, "é"], "agent": "ci"}),
            ))
            .await
            .unwrap(),
        );
    }
    let kinds = EventKind::ALL.len() as i64;
    assert_eq!(
        appended.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (1..=kinds).collect::<Vec<_>>()
    );
    let events = log.show(call).await.unwrap();
    assert_eq!(events.len() as i64, kinds);
    assert_eq!(events[0].prev_hash, audit::GENESIS_HASH);
    for (pair, a) in events.windows(2).zip(&appended[1..]) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].hash, a.hash);
        assert!(pair[1].at >= pair[0].at);
    }
    // The stored hash is the documented one, recomputed independently.
    for e in &events {
        let expected = forge_hash(
            &e.prev_hash,
            e.seq,
            &e.id.to_string(),
            e.call_id.map(|c| c.to_string()).as_deref(),
            e.kind.as_str(),
            &e.at,
            &e.actor,
            &e.payload,
        );
        assert_eq!(e.hash, expected, "seq {}", e.seq);
    }
    // The chain holds; the story does not: these approval events name no approval.
    let report = audit::verify(&t.db, &options(None)).await.unwrap();
    assert_eq!(report.first_bad, None, "{report}");
    assert!(report.signatures_checked && report.signed_heads == kinds as u64);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.seq == 3 && v.what.contains("unreadable approval request")),
        "{report}"
    );
    assert_eq!(report.events as i64, kinds);
    let checkpoint = audit::checkpoint(&t.db).await.unwrap();
    assert_eq!(report.head, checkpoint);
    assert_eq!(checkpoint.seq, kinds);
    assert_eq!(
        checkpoint.to_string().parse::<Checkpoint>().unwrap(),
        checkpoint
    );
    let against = audit::verify(&t.db, &options(Some(&checkpoint)))
        .await
        .unwrap();
    assert_eq!(against.first_bad, None);

    // A batch is atomic and consecutive; a non-object payload is refused before the writer.
    let batch = log
        .append_all(vec![event(None, EventKind::AuditRead, json!({})); 3])
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [kinds + 1, kinds + 2, kinds + 3]
    );
    assert!(
        log.append(event(None, EventKind::AuditRead, json!([1])))
            .await
            .is_err()
    );

    // A second handle opened later continues the same chain.
    drop(log);
    let log = t.log().await;
    assert_eq!(
        log.append(event(None, EventKind::AuditRead, json!({})))
            .await
            .unwrap()
            .seq,
        kinds + 4
    );
    let report = audit::verify(&t.db, &options(None)).await.unwrap();
    assert_eq!(report.first_bad, None, "{report}");
}

async fn concurrent_appends_get_gap_free_seqs(t: AuditDb) {
    let log = t.log().await;
    let tasks: Vec<_> = (0..40)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let appended = log
                        .append(event(
                            None,
                            EventKind::CallReceived,
                            json!({"task": task, "i": i}),
                        ))
                        .await
                        .unwrap();
                    seqs.push(appended.seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one task's appends stay in order"
        );
        seqs.extend(mine);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    assert_eq!(verify_ok(&t).await.events, 1000);
}

/// How a call ended is appended deferred: alone it still commits (within the deferral bound),
/// and an append on a call's path that comes meanwhile carries it in the same commit (one
/// transaction: one `at`, consecutive seqs, one signed head).
async fn a_deferred_append_shares_the_next_commit(t: AuditDb) {
    let log = t.log().await;
    let alone = tokio::time::timeout(
        Duration::from_secs(5),
        log.append_deferred(event(None, EventKind::CallCompleted, json!({"n": 0}))),
    )
    .await
    .expect("a deferred append commits without company")
    .unwrap();
    assert_eq!(alone.seq, 1);

    let deferred = log.append_deferred(event(None, EventKind::CallCompleted, json!({"n": 1})));
    // Queued right after the deferred one (join polls them in order), well within the bound.
    let urgent = async {
        log.append_all(vec![
            event(None, EventKind::CallReceived, json!({"n": 2})),
            event(None, EventKind::CallReceived, json!({"n": 3})),
        ])
        .await
        .unwrap()
    };
    let (deferred, urgent) = tokio::join!(deferred, urgent);
    let deferred = deferred.unwrap();
    assert_eq!(
        (deferred.seq, urgent[0].seq, urgent[1].seq),
        (2, 3, 4),
        "the deferred event commits first, in order"
    );
    assert_eq!(
        deferred.at, urgent[1].at,
        "one commit: {deferred:?} {urgent:?}"
    );
    let signed: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM audit_events WHERE signature IS NOT NULL ORDER BY seq")
            .fetch_all(&t.db.pool)
            .await
            .unwrap();
    assert_eq!(signed, [1, 4], "one signed head per commit");
    assert_eq!(verify_ok(&t).await.events, 4);
}

/// A transition for the writer's batching rules: appends one event, writes nothing else.
struct Keyed(Option<(&'static str, String)>);

impl audit::Transition for Keyed {
    fn decide(&mut self) -> Vec<NewEvent> {
        vec![event(
            None,
            EventKind::CallReceived,
            json!({"key": self.0.clone().map(|k| k.1)}),
        )]
    }

    fn write<'c>(
        &'c mut self,
        _conn: &'c mut sqlx::AnyConnection,
    ) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn conflict_key(&self) -> Option<(&'static str, String)> {
        self.0.clone()
    }
}

/// Transitions of one kind with different keys commit together; the same key, another kind or
/// no key at all never share a commit (each must decide on state the others did not change).
async fn transitions_share_a_commit_only_on_disjoint_keys(t: AuditDb) {
    let log = t.log().await;
    let key = |kind: &'static str, key: &str| Keyed(Some((kind, key.to_owned())));
    // Queued in this order (join polls them in order) while the writer commits the first,
    // which shares with nothing: the rest are all waiting when it takes its next batch.
    let (blocker, a, b, c, d, e, f) = tokio::join!(
        log.transact(Keyed(None)),
        log.transact(key("open", "x")),
        log.transact(key("open", "y")),
        log.transact(key("open", "x")),
        log.transact(key("approval", "x")),
        log.transact(Keyed(None)),
        log.transact(key("open", "z")),
    );
    let at =
        |r: Result<(Keyed, Vec<audit::Appended>), audit::AuditError>| r.unwrap().1.remove(0).at;
    let (blocker, a, b, c, d, e, f) = (at(blocker), at(a), at(b), at(c), at(d), at(e), at(f));
    assert_ne!(blocker, a);
    assert_eq!(a, b, "disjoint keys of one kind share a commit");
    assert_ne!(a, c, "the same key waits for the next commit");
    assert_ne!(c, d, "another kind does not join");
    assert!(d != e && e != f, "a transition without a key commits alone");
    assert_eq!(verify_ok(&t).await.events, 7);
}

async fn two_writers_on_one_database_never_fork_the_chain(t: AuditDb) {
    // Two gateways (two pools, two writer tasks) on one database.
    let other = store::connect(&t.fresh.url).await.unwrap();
    let logs = [t.log().await, AuditLog::open(other).await.unwrap()];
    let mut tasks = Vec::new();
    for (n, log) in logs.iter().enumerate() {
        for task in 0..8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    log.append(event(
                        None,
                        EventKind::CallReceived,
                        json!({"writer": n, "task": task, "i": i}),
                    ))
                    .await
                    .unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(verify_ok(&t).await.events, 400);
}

async fn the_database_refuses_update_and_delete(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 3).await;
    for sql in [
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2",
        "UPDATE audit_events SET payload = '{}'",
        "DELETE FROM audit_events WHERE seq = 3",
        "DELETE FROM audit_events",
    ] {
        let err = t.exec(sql).await.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if t.db.backend == Backend::Postgres {
        let err = t
            .exec("TRUNCATE audit_events")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(verify_ok(&t).await.events, 3);
}

async fn an_edited_row_is_caught(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 10).await;
    t.drop_guard().await;
    t.exec(r#"UPDATE audit_events SET payload = '{"agent":"agent-0","n":3}' WHERE seq = 4"#)
        .await
        .unwrap();
    let (seq, reason) = first_bad(&t, None).await;
    assert_eq!(seq, 4);
    assert!(reason.contains("hash mismatch"), "{reason}");

    // Editing only an indexed column (to hide a row from `agent=` filters) is caught too.
    let t2 = if t.db.backend == Backend::Sqlite {
        AuditDb::sqlite().await
    } else {
        AuditDb::postgres().await
    };
    seed(&t2.log().await, 10).await;
    t2.drop_guard().await;
    t2.exec("UPDATE audit_events SET agent = 'nobody' WHERE seq = 6")
        .await
        .unwrap();
    let (seq, reason) = first_bad(&t2, None).await;
    assert_eq!(seq, 6);
    assert!(reason.contains("column agent"), "{reason}");
}

async fn a_deleted_row_is_caught(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 10).await;
    t.drop_guard().await;
    assert_eq!(
        t.exec("DELETE FROM audit_events WHERE seq = 5")
            .await
            .unwrap(),
        1
    );
    let (seq, reason) = first_bad(&t, None).await;
    assert_eq!(seq, 5);
    assert!(reason.contains("missing"), "{reason}");
}

async fn swapped_rows_are_caught(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 10).await;
    t.drop_guard().await;
    // Swap everything but seq between rows 3 and 7, via a scratch seq.
    t.exec("UPDATE audit_events SET seq = 1000 WHERE seq = 3")
        .await
        .unwrap();
    t.exec("UPDATE audit_events SET seq = 3 WHERE seq = 7")
        .await
        .unwrap();
    t.exec("UPDATE audit_events SET seq = 7 WHERE seq = 1000")
        .await
        .unwrap();
    let (seq, reason) = first_bad(&t, None).await;
    assert_eq!(seq, 3);
    assert!(reason.contains("prev_hash"), "{reason}");
}

async fn an_inserted_row_is_caught(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 10).await;
    t.drop_guard().await;
    // Make room at seq 5, then insert a forged event whose own hash is right.
    t.exec("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 5")
        .await
        .unwrap();
    t.exec("UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
        .await
        .unwrap();
    let prev: String = sqlx::query("SELECT hash FROM audit_events WHERE seq = 4")
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .get(0);
    let id = Uuid::now_v7().to_string();
    let at = "2020-01-01T00:00:00.000000Z";
    let payload = json!({"agent": "agent-0", "note": "approved by nobody"});
    let hash = forge_hash(
        &prev,
        5,
        &id,
        None,
        "approval.decided",
        at,
        "mallory",
        &payload,
    );
    sqlx::query(
        "INSERT INTO audit_events (seq, id, call_id, kind, at, actor, agent, payload, prev_hash, hash) \
         VALUES (5, $1, NULL, 'approval.decided', $2, 'mallory', 'agent-0', $3, $4, $5)",
    )
    .bind(id)
    .bind(at)
    .bind(serde_json_canonicalizer::to_string(&payload).unwrap())
    .bind(prev)
    .bind(hash)
    .execute(&t.db.pool)
    .await
    .unwrap();
    let (seq, reason) = first_bad(&t, None).await;
    assert_eq!(seq, 6, "the forged row chains, the one after it does not");
    assert!(reason.contains("prev_hash"), "{reason}");

    // A sloppier forgery at the tail is caught at itself.
    sqlx::query(
        "INSERT INTO audit_events (seq, id, kind, at, actor, payload, prev_hash, hash) \
         VALUES (12, $1, 'call.completed', $2, 'mallory', '{}', $3, $3)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(at)
    .bind("ab".repeat(32))
    .execute(&t.db.pool)
    .await
    .unwrap();
    assert_eq!(first_bad(&t, None).await.0, 6);
}

async fn a_cut_tail_or_a_rewritten_chain_is_caught_against_a_checkpoint(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 10).await;
    let checkpoint: Checkpoint = audit::checkpoint(&t.db)
        .await
        .unwrap()
        .to_string()
        .parse()
        .unwrap();
    assert_eq!(checkpoint.seq, 10);
    t.drop_guard().await;
    t.exec("DELETE FROM audit_events WHERE seq > 7")
        .await
        .unwrap();
    // Cut at a signed head and without the checkpoint (or the anchors, tested with the
    // gateway), a cut tail is a valid, shorter chain...
    assert_eq!(verify_ok(&t).await.head.seq, 7);
    // ...with it, the cut shows.
    let (seq, reason) = first_bad(&t, Some(&checkpoint)).await;
    assert_eq!(seq, 8);
    assert!(reason.contains("removed from the tail"), "{reason}");

    // Rewrite event 3 and recompute every later hash: the chain is internally valid, but the
    // signed heads no longer verify, checkpoint or not.
    let mut prev: String = sqlx::query("SELECT hash FROM audit_events WHERE seq = 2")
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .get(0);
    let checkpoint7 = Checkpoint {
        seq: 7,
        hash: sqlx::query("SELECT hash FROM audit_events WHERE seq = 7")
            .fetch_one(&t.db.pool)
            .await
            .unwrap()
            .get(0),
    };
    let rows = sqlx::query(
        "SELECT seq, id, call_id, kind, at, actor, payload FROM audit_events WHERE seq >= 3 ORDER BY seq",
    )
    .fetch_all(&t.db.pool)
    .await
    .unwrap();
    for row in rows {
        let seq: i64 = row.get(0);
        let mut payload: Value = serde_json::from_str(row.get::<&str, _>(6)).unwrap();
        if seq == 3 {
            payload["args"]["branch"] = json!("release");
        }
        let hash = forge_hash(
            &prev,
            seq,
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
            &payload,
        );
        sqlx::query(
            "UPDATE audit_events SET payload = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
        )
        .bind(serde_json_canonicalizer::to_string(&payload).unwrap())
        .bind(prev.clone())
        .bind(hash.clone())
        .bind(seq)
        .execute(&t.db.pool)
        .await
        .unwrap();
        prev = hash;
    }
    let (seq, reason) = first_bad(&t, None).await;
    assert_eq!(seq, 3);
    assert!(reason.contains("signature does not verify"), "{reason}");
    let (seq, _) = first_bad(&t, Some(&checkpoint7)).await;
    assert_eq!(seq, 3);
}

async fn filters_select_the_right_events(t: AuditDb) {
    let log = t.log().await;
    let call_a = Uuid::now_v7();
    let call_b = Uuid::now_v7();
    let story = |call: Uuid, agent: &str, tool: &str, approver: &str, outcome: &str| {
        vec![
            event(
                Some(call),
                EventKind::CallReceived,
                json!({"agent": agent, "server": "git", "tool": tool}),
            ),
            event(
                Some(call),
                EventKind::ApprovalVote,
                json!({"agent": agent, "server": "git", "tool": tool, "approver": approver}),
            ),
            event(
                Some(call),
                EventKind::ApprovalDecided,
                json!({"agent": agent, "server": "git", "tool": tool, "outcome": outcome}),
            ),
        ]
    };
    let story_a = log
        .append_all(story(call_a, "ci-bot", "push", "alice", "approved"))
        .await
        .unwrap();
    // `between` falls strictly after story A and strictly before story B: wait for the clock.
    let last_a = &story_a.last().unwrap().at;
    let between = wait::eventually("the clock to pass story A", Duration::from_secs(1), || {
        std::future::ready(Some(countersign_now()).filter(|now| now > last_a))
    })
    .await;
    wait::eventually(
        "the clock to pass `between`",
        Duration::from_secs(1),
        || std::future::ready((countersign_now() > between).then_some(())),
    )
    .await;
    log.append_all(story(call_b, "ops-bot", "force_push", "bob", "denied"))
        .await
        .unwrap();
    log.append(event(
        None,
        EventKind::AuditRead,
        json!({"query": {"agent": "ci-bot"}}),
    ))
    .await
    .unwrap();

    let seqs = |events: Vec<audit::Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let list = |filter: Filter| {
        let log = log.clone();
        async move { seqs(log.list(&filter).await.unwrap()) }
    };
    assert_eq!(list(Filter::default()).await, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        list(Filter {
            agent: Some("ci-bot".into()),
            ..Filter::default()
        })
        .await,
        [1, 2, 3],
        "nested query fields are not the agent"
    );
    assert_eq!(
        list(Filter {
            tool: Some("force_push".into()),
            ..Filter::default()
        })
        .await,
        [4, 5, 6]
    );
    assert_eq!(
        list(Filter {
            server: Some("git".into()),
            limit: Some(2),
            ..Filter::default()
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        list(Filter {
            server: Some("git".into()),
            limit: Some(2),
            after_seq: Some(2),
            ..Filter::default()
        })
        .await,
        [3, 4]
    );
    assert_eq!(
        list(Filter {
            approver: Some("bob".into()),
            ..Filter::default()
        })
        .await,
        [5]
    );
    assert_eq!(
        list(Filter {
            outcome: Some("denied".into()),
            ..Filter::default()
        })
        .await,
        [6]
    );
    assert_eq!(
        list(Filter {
            kind: Some(EventKind::ApprovalDecided),
            ..Filter::default()
        })
        .await,
        [3, 6]
    );
    assert_eq!(
        list(Filter {
            kind: Some(EventKind::AuditRead),
            ..Filter::default()
        })
        .await,
        [7]
    );
    assert_eq!(
        list(Filter {
            call_id: Some(call_b),
            kind: Some(EventKind::CallReceived),
            ..Filter::default()
        })
        .await,
        [4]
    );
    assert_eq!(
        list(Filter {
            since: Some(between.clone()),
            ..Filter::default()
        })
        .await,
        [4, 5, 6, 7]
    );
    assert_eq!(
        list(Filter {
            until: Some(between),
            agent: Some("ci-bot".into()),
            ..Filter::default()
        })
        .await,
        [1, 2, 3]
    );
    assert_eq!(
        list(Filter {
            since: Some("2999-01-01".into()),
            ..Filter::default()
        })
        .await,
        Vec::<i64>::new()
    );
    assert!(
        log.list(&Filter {
            since: Some("last tuesday".into()),
            ..Filter::default()
        })
        .await
        .is_err()
    );

    let story_a = log.show(call_a).await.unwrap();
    assert_eq!(seqs(story_a.clone()), [1, 2, 3]);
    assert_eq!(story_a[1].payload["approver"], "alice");
    assert!(log.show(Uuid::now_v7()).await.unwrap().is_empty());

    // Formats.
    let events = log.list(&Filter::default()).await.unwrap();
    let csv = audit::render(&events, Format::Csv);
    assert_eq!(csv.lines().count(), 8);
    let jsonl = audit::render(&events, Format::Jsonl);
    let parsed: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed[5]["payload"]["outcome"], "denied");
    assert_eq!(parsed[5]["kind"], "approval.decided");
    let table = audit::render(&events, Format::Table);
    assert!(table.contains("approver=bob"), "{table}");
}

/// Now as an RFC 3339 UTC timestamp.
fn countersign_now() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let secs = (micros / 1_000_000) as i64;
    let days = secs / 86_400;
    // Civil date from days (Hinnant), enough for a test.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let tod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        micros % 1_000_000
    )
}

async fn a_failed_append_is_an_error_and_the_log_recovers(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 3).await;
    // A poisoned event makes the whole batch's transaction fail.
    match t.db.backend {
        Backend::Sqlite => t
            .exec(
                "CREATE TRIGGER poison BEFORE INSERT ON audit_events WHEN NEW.actor = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
            )
            .await
            .unwrap(),
        Backend::Postgres => {
            t.exec(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.actor = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$",
            )
            .await
            .unwrap();
            t.exec("CREATE TRIGGER poison BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION poison()")
                .await
                .unwrap()
        }
    };
    let poisoned = NewEvent::untyped(None, EventKind::CallReceived, "poison", json!({}));
    let err = log.append(poisoned).await.unwrap_err();
    assert!(err.to_string().contains("could not be written"), "{err}");
    // Appends queued with it fail together; nothing half-written remains.
    let poisoned = NewEvent::untyped(None, EventKind::CallReceived, "poison", json!({}));
    assert!(
        log.append_all(vec![
            event(None, EventKind::CallReceived, json!({})),
            poisoned
        ])
        .await
        .is_err()
    );
    // The next append continues the chain without a gap.
    let next = log
        .append(event(None, EventKind::CallReceived, json!({})))
        .await
        .unwrap();
    assert_eq!(next.seq, 4);
    verify_ok(&t).await;

    // A missing table is an error too, not a silent drop.
    t.drop_guard().await;
    t.exec("DROP TABLE audit_events").await.unwrap();
    assert!(
        log.append(event(None, EventKind::CallReceived, json!({})))
            .await
            .is_err()
    );
}

async fn an_append_to_a_closed_database_fails(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 2).await;
    t.db.pool.close().await;
    let err = log
        .append(event(None, EventKind::CallReceived, json!({})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not be written"), "{err}");
}

struct Api {
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Api {
    async fn start(log: AuditLog) -> Api {
        let auditors = [
            AuditorConfig {
                id: "auditor-ann".into(),
                token_sha256: hash_key("ann-token"),
            },
            AuditorConfig {
                id: "broken".into(),
                token_sha256: "not hex".into(),
            },
        ];
        let app = auditor_router(log, &auditors);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let http = countersign::tls::Tls::new(&Default::default())
            .unwrap()
            .http()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Api { base, http, server }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn audit_reads(log: &AuditLog) -> Vec<audit::Event> {
    log.list(&Filter {
        kind: Some(EventKind::AuditRead),
        ..Filter::default()
    })
    .await
    .unwrap()
}

async fn the_auditor_api_authenticates_and_records_every_query(t: AuditDb) {
    let log = t.log().await;
    let calls = seed(&log, 6).await;
    let api = Api::start(log.clone()).await;
    let token = Some("ann-token");

    for (path, token) in [
        ("/audit/events", None),
        ("/audit/events", Some("wrong")),
        ("/audit/verify", Some("")),
        ("/audit/calls/x", None),
    ] {
        let response = api.get(path, token).await;
        assert_eq!(response.status(), 401, "{path} {token:?}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    }
    assert!(
        audit_reads(&log).await.is_empty(),
        "refused requests reveal nothing and are not reads"
    );

    let response = api.get("/audit/events?agent=agent-1&limit=2", token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-next-after-seq"], "4");
    let events: Vec<Value> = response.json().await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 4]
    );

    let response = api
        .get("/audit/events?kind=call.received&format=jsonl", token)
        .await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.text().await.unwrap().lines().count(), 6);
    let response = api.get("/audit/events?tool=push&format=csv", token).await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(response.text().await.unwrap().lines().count(), 7);

    let response = api.get(&format!("/audit/calls/{}", calls[0]), token).await;
    assert_eq!(response.status(), 200);
    let story: Vec<Value> = response.json().await.unwrap();
    assert_eq!(
        story
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 4]
    );
    assert_eq!(
        api.get(&format!("/audit/calls/{}", Uuid::now_v7()), token)
            .await
            .status(),
        404
    );
    assert_eq!(
        api.get("/audit/calls/not-a-uuid", token).await.status(),
        400
    );
    assert_eq!(
        api.get("/audit/events?kind=nope", token).await.status(),
        400
    );
    assert_eq!(
        api.get("/audit/events?colour=red", token).await.status(),
        400
    );

    let checkpoint = audit::checkpoint(&t.db).await.unwrap();
    let response = api
        .get(&format!("/audit/verify?checkpoint={checkpoint}"), token)
        .await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");

    // Every authenticated request, answered or not, was recorded first, as the auditor.
    let reads = audit_reads(&log).await;
    assert_eq!(reads.len(), 9);
    assert!(
        reads
            .iter()
            .all(|e| e.actor == "auditor-ann" && e.payload["via"] == "http")
    );
    assert_eq!(reads[0].payload["route"], "/audit/events");
    assert_eq!(
        reads[0].payload["query"],
        json!({"agent": "agent-1", "limit": "2"})
    );
    assert_eq!(reads[3].payload["query"]["call_id"], calls[0].to_string());
    // The verify read precedes the verification, so the report covers it.
    assert_eq!(
        report["events"].as_i64().unwrap(),
        reads.last().unwrap().seq
    );
    verify_ok(&t).await;
}

async fn the_auditor_api_fails_closed(t: AuditDb) {
    let log = t.log().await;
    seed(&log, 2).await;
    let api = Api::start(log.clone()).await;
    assert_eq!(
        api.get("/audit/events", Some("ann-token")).await.status(),
        200
    );
    t.db.pool.close().await;
    for path in [
        "/audit/events",
        "/audit/verify",
        &format!("/audit/calls/{}", Uuid::now_v7()),
    ] {
        let response = api.get(path, Some("ann-token")).await;
        assert_eq!(response.status(), 503, "{path}");
        assert!(response.text().await.unwrap().contains("cannot record"));
    }
}

async fn cli_functions_verify_and_record_reads(t: AuditDb) {
    use audit::cli::{ListArgs, ShowArgs, VerifyArgs};
    use std::process::ExitCode;
    let log = t.log().await;
    let calls = seed(&log, 4).await;
    let verify_args = VerifyArgs {
        checkpoint: None,
        public_keys: Vec::new(),
        anchors: None,
        database: None,
        in_flight_secs: 3600,
        json: false,
    };
    assert_eq!(
        audit::cli::verify(&t.db, &options(None), &verify_args)
            .await
            .unwrap(),
        ExitCode::SUCCESS
    );
    assert_eq!(
        audit::cli::checkpoint(&t.db).await.unwrap(),
        ExitCode::SUCCESS
    );
    let list_args = ListArgs {
        agent: Some("agent-0".into()),
        format: Format::Jsonl,
        auditor: Some("carol".into()),
        ..ListArgs::default()
    };
    assert_eq!(
        audit::cli::list(&log, &list_args).await.unwrap(),
        ExitCode::SUCCESS
    );
    let show_args = ShowArgs {
        call_id: calls[1],
        format: Format::Table,
        auditor: None,
    };
    assert_eq!(
        audit::cli::show(&log, &show_args).await.unwrap(),
        ExitCode::SUCCESS
    );
    let reads = audit_reads(&log).await;
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0].actor, "carol");
    assert_eq!(reads[0].payload["query"]["agent"], "agent-0");
    assert_eq!(reads[1].payload["via"], "cli");
    assert_eq!(reads[1].payload["query"]["call_id"], calls[1].to_string());

    t.drop_guard().await;
    t.exec("UPDATE audit_events SET actor = 'someone else' WHERE seq = 2")
        .await
        .unwrap();
    assert_eq!(
        audit::cli::verify(&t.db, &options(None), &verify_args)
            .await
            .unwrap(),
        ExitCode::FAILURE
    );
}

/// Keys for one writer: `signing`, trusting itself and `also`.
fn keys_of(
    signing: audit::SigningKey,
    also: &[ed25519_dalek::VerifyingKey],
) -> std::sync::Arc<audit::AuditKeys> {
    let mut trusted = audit::TrustedKeys::new();
    trusted.add(signing.public());
    for key in also {
        trusted.add(*key);
    }
    std::sync::Arc::new(audit::AuditKeys {
        signing,
        trusted,
        redaction: audit::RedactionKey::from_bytes([7; 32]),
    })
}

/// Key rotation is an event in the chain: a verifier that knows only the old key accepts the
/// heads of a new key the old one introduced, and refuses those of a key nobody introduced.
async fn a_rotated_key_is_trusted_from_its_introduction(t: AuditDb) {
    let old = audit::SigningKey::generate().unwrap();
    let new = audit::SigningKey::generate().unwrap();
    let stranger = audit::SigningKey::generate().unwrap();
    let (old_public, new_public) = (old.public(), new.public());
    let introduction = json!({
        "key_id": new.id(), "public_key": new.public_hex(), "introduced_by": old.id(),
    });
    let old_only = {
        let mut trusted = audit::TrustedKeys::new();
        trusted.add(old_public);
        trusted
    };
    let verify_with = |trusted: audit::TrustedKeys| audit::VerifyOptions {
        trusted,
        ..Default::default()
    };

    let log = AuditLog::open_with(t.db.clone(), keys_of(old, &[]), None)
        .await
        .unwrap();
    seed(&log, 3).await;
    log.append(event(None, EventKind::AuditKey, introduction))
        .await
        .unwrap();
    drop(log);
    // The new writer trusts the old key's heads (the configured `trusted_keys`).
    let keys = keys_of(new, &[old_public]);
    let log = AuditLog::open_with(t.db.clone(), keys, None).await.unwrap();
    seed(&log, 2).await;
    drop(log);
    let report = audit::verify(&t.db, &verify_with(old_only.clone()))
        .await
        .unwrap();
    assert!(report.ok, "{report}");
    assert_eq!(report.signed_heads, 6);

    // A key nobody introduced is not trusted, even by a writer that trusts the others.
    let keys = keys_of(stranger, &[old_public, new_public]);
    let log = AuditLog::open_with(t.db.clone(), keys, None).await.unwrap();
    seed(&log, 1).await;
    drop(log);
    let (seq, reason) = first_bad_with(&t, &verify_with(old_only)).await;
    assert_eq!(seq, 7);
    assert!(reason.contains("not trusted"), "{reason}");
}

async fn first_bad_with(t: &AuditDb, options: &audit::VerifyOptions) -> (i64, String) {
    let report = audit::verify(&t.db, options).await.unwrap();
    assert!(!report.ok, "verify missed the tampering: {report}");
    let breach = report.first_bad.unwrap();
    (breach.seq, breach.reason)
}
