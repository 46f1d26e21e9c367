//! Numbers are bound exactly: an approval, the audit log and the upstream all see the digits
//! the agent sent, and a number the gateway cannot hold exactly is refused, never rounded.

use crate::approvals::{api, base, text, vote};
use crate::support::{self, Backend, TestDb, TestGateway, modern_meta, post_raw};
use serde_json::{Value, json};
use std::time::Duration;

const AGENT_KEY: &str = "agent-key";

const POLICY: &str = r#"
defaults:
  verdict: deny
  reason: no rule allows this call
rules:
  - id: adding-is-fine
    match: {tool: add}
    verdict: allow
  - id: echoing-is-fine
    match: {tool: echo}
    verdict: allow
  - id: deleting-needs-bob
    match: {tool: delete_record}
    verdict: approve
    approvers: [bob]
    quorum: 1
    timeout: 1m
"#;

/// 2^53 and 2^53 + 1: one f64 apart from each other, but not one number.
const TWO_53: u64 = 9_007_199_254_740_992;
const TWO_53_PLUS_1: u64 = 9_007_199_254_740_993;

async fn setup(backend: Backend) -> (TestDb, tempfile::TempDir, TestGateway) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let yaml = format!(
        "database: {{url: '{db}'}}
policy_dir: '{policies}'
upstreams:
  - name: echo
    stdio: {{command: python3, args: ['{echo}']}}
agents:
  - {{id: agent-1, on_behalf_of: alice, key_sha256: {agent}}}
approvers:
  - {{id: bob, token_sha256: {bob}}}
",
        db = db.url,
        policies = dir.path().display(),
        echo = support::echo_upstream().display(),
        agent = countersign::auth::hash_key(AGENT_KEY),
        bob = countersign::auth::hash_key("bob-token"),
    );
    let gw = support::spawn_gateway(&yaml).await;
    (db, dir, gw)
}

/// Calls `echo__<tool>` as the agent (modern era) with `arguments` as raw JSON text, so that
/// numbers reach the gateway exactly as written; returns the final message.
async fn call_raw(gw_url: String, tool: &str, arguments: String) -> Value {
    let name = format!("echo__{tool}");
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{arguments},"_meta":{}}}}}"#,
        modern_meta()
    );
    let auth = format!("Bearer {AGENT_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", name.as_str()),
    ];
    let response = post_raw(&gw_url, &headers, body).await;
    response.messages().pop().expect("a response")
}

/// Waits (bounded) until `count` approvals are pending; returns them.
async fn pending(gw: &TestGateway, count: usize) -> Vec<Value> {
    let mut seen = Value::Null;
    for _ in 0..100 {
        let url = format!("{}/approvals?status=pending", base(gw));
        seen = api(reqwest::Method::GET, url, "bob", None).await.1;
        if seen.as_array().is_some_and(|l| l.len() == count) {
            return seen.as_array().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {count} pending approvals, have {seen}");
}

/// The stored payload text of every event of `kind`, oldest first.
async fn payloads(db: &TestDb, kind: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query_scalar("select payload from audit_events where kind = $1 order by seq")
        .bind(kind)
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

async fn approvals_bind_exact_integers(backend: Backend) {
    let (db, _dir, gw) = setup(backend).await;
    let low = format!(r#"{{"record_id":"r1","amount":{TWO_53}}}"#);
    let high = format!(r#"{{"record_id":"r1","amount":{TWO_53_PLUS_1}}}"#);
    let low_call = tokio::spawn(call_raw(gw.url.clone(), "delete_record", low));
    pending(&gw, 1).await;
    let high_call = tokio::spawn(call_raw(gw.url.clone(), "delete_record", high));

    let held = pending(&gw, 2).await;
    let amount = |a: &Value| a["arguments"]["amount"].as_u64().unwrap();
    let low_approval = held.iter().find(|a| amount(a) == TWO_53).expect("2^53");
    let high_approval = held
        .iter()
        .find(|a| amount(a) == TWO_53_PLUS_1)
        .expect("2^53+1");
    assert_ne!(
        low_approval["args_sha256"], high_approval["args_sha256"],
        "one approval per amount"
    );
    let expected = json!({"record_id": "r1", "amount": TWO_53_PLUS_1});
    assert_eq!(
        high_approval["args_sha256"],
        countersign::canonical::sha256_hex(&expected)
    );

    let low_id = low_approval["id"].as_str().unwrap();
    let approved = vote(&gw, low_id, "bob", true, None).await;
    assert_eq!(approved["result"], "decided", "{approved}");
    let done = tokio::time::timeout(Duration::from_secs(20), low_call)
        .await
        .expect("the approved call ends")
        .unwrap();
    assert_eq!(text(&done), "deleted r1", "{done}");
    let still = pending(&gw, 1).await;
    assert_eq!(
        amount(&still[0]),
        TWO_53_PLUS_1,
        "approving 2^53 does not run 2^53+1"
    );
    let denied = vote(
        &gw,
        still[0]["id"].as_str().unwrap(),
        "bob",
        false,
        Some("not approved"),
    )
    .await;
    assert_eq!(denied["result"], "decided", "{denied}");
    let refused = tokio::time::timeout(Duration::from_secs(20), high_call)
        .await
        .expect("the denied call ends")
        .unwrap();
    assert_eq!(refused["result"]["isError"], true, "{refused}");

    let received = payloads(&db, "call.received").await;
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(
        received[0].contains(&format!(r#""amount":{TWO_53},"#)),
        "{}",
        received[0]
    );
    assert!(
        received[1].contains(&format!(r#""amount":{TWO_53_PLUS_1},"#)),
        "the audit log records the number forwarded: {}",
        received[1]
    );
    let recorded: Value = serde_json::from_str(&received[1]).unwrap();
    assert_eq!(recorded["args_sha256"], high_approval["args_sha256"]);
}

crate::on_both_databases!(approvals_bind_exact_integers: approvals_bind_exact_integers_on_sqlite, approvals_bind_exact_integers_on_postgres);

async fn numbers_reach_the_upstream_exactly_or_not_at_all(backend: Backend) {
    let (db, _dir, gw) = setup(backend).await;
    for (a, b, sum) in [
        (TWO_53_PLUS_1.to_string(), "0", TWO_53_PLUS_1.to_string()),
        (u64::MAX.to_string(), "-1", (u64::MAX - 1).to_string()),
        (i64::MIN.to_string(), "0", i64::MIN.to_string()),
    ] {
        let response = call_raw(gw.url.clone(), "add", format!(r#"{{"a":{a},"b":{b}}}"#)).await;
        assert_eq!(text(&response), sum, "{response}");
    }
    let forwarded_before = payloads(&db, "call.received").await.len();

    let refusals = [
        (
            r#"{"a":123456789012345678901234567890,"b":0}"#,
            "arguments/a: 123456789012345678901234567890 is too large to bind exactly (integers must fit in 64 bits)",
        ),
        (
            r#"{"message":"hi","rate":0.10000000000000001}"#,
            "arguments/rate: 0.10000000000000001 is too precise to bind exactly (the nearest 64-bit float is 0.1)",
        ),
        (
            r#"{"message":"hi","deep":{"a/b":[1,9007199254740993.0]}}"#,
            "arguments/deep/a~1b/1: 9007199254740993.0 is too precise to bind exactly (the nearest 64-bit float is 9007199254740992)",
        ),
    ];
    for (arguments, message) in refusals {
        let tool = if arguments.contains("message") {
            "echo"
        } else {
            "add"
        };
        let response = call_raw(gw.url.clone(), tool, arguments.to_owned()).await;
        assert_eq!(response["error"]["code"], -32602, "{response}");
        assert_eq!(response["error"]["message"], message, "{response}");
        assert_eq!(response["id"], 1, "{response}");
    }
    assert_eq!(
        payloads(&db, "call.received").await.len(),
        forwarded_before,
        "a refused call is not received, decided or forwarded"
    );
}

crate::on_both_databases!(numbers_reach_the_upstream_exactly_or_not_at_all: numbers_reach_the_upstream_exactly_or_not_at_all_on_sqlite, numbers_reach_the_upstream_exactly_or_not_at_all_on_postgres);
