//! Numbers are bound exactly: an approval, the audit log and the upstream all see the digits
//! the agent sent, and a number the gateway cannot hold exactly is refused, never rounded.

use crate::app::{Approval, Approver, TestApp, Vote};
use crate::support::Backend;
use serde_json::{Value, json};

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

/// The agent, bob as the only approver, and the policy above.
async fn setup(backend: Backend) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .policy(POLICY)
        .approvers(vec![Approver::new("bob")])
        .auditors(&[])
        .spawn()
        .await
}

/// The stored payload text of every event of `kind`, oldest first.
async fn payloads(app: &TestApp, kind: &str) -> Vec<String> {
    sqlx::query_scalar("select payload from audit_events where kind = $1 order by seq")
        .bind(kind)
        .fetch_all(&app.owner().await)
        .await
        .unwrap()
}

async fn approvals_bind_exact_integers(backend: Backend) {
    let app = setup(backend).await;
    let low = format!(r#"{{"record_id":"r1","amount":{TWO_53}}}"#);
    let high = format!(r#"{{"record_id":"r1","amount":{TWO_53_PLUS_1}}}"#);
    let low_call = app.spawn_call_raw("delete_record", low);
    app.pending(1).await;
    let high_call = app.spawn_call_raw("delete_record", high);

    let held = app.pending(2).await;
    let amount = |a: &Approval| a.arguments["amount"].as_u64().unwrap();
    let low_approval = held.iter().find(|a| amount(a) == TWO_53).expect("2^53");
    let high_approval = held
        .iter()
        .find(|a| amount(a) == TWO_53_PLUS_1)
        .expect("2^53+1");
    assert_ne!(
        low_approval.args_sha256, high_approval.args_sha256,
        "one approval per amount"
    );
    let expected = json!({"record_id": "r1", "amount": TWO_53_PLUS_1});
    assert_eq!(
        high_approval.args_sha256,
        countersign::canonical::sha256_hex(&expected)
    );

    let approved = app.vote(&low_approval.id, "bob", Vote::Approve).await;
    assert_eq!(approved["result"], "decided", "{approved}");
    let done = low_call.answer().await;
    assert_eq!(done.text(), "deleted r1", "{done}");
    let still = app.pending(1).await;
    assert_eq!(
        amount(&still[0]),
        TWO_53_PLUS_1,
        "approving 2^53 does not run 2^53+1"
    );
    let denied = app
        .vote(&still[0].id, "bob", Vote::Deny(Some("not approved")))
        .await;
    assert_eq!(denied["result"], "decided", "{denied}");
    let refused = high_call.answer().await;
    assert!(refused.is_error(), "{refused}");

    let received = payloads(&app, "call.received").await;
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
    assert_eq!(recorded["args_sha256"], high_approval.args_sha256.as_str());
}

crate::on_both_databases!(approvals_bind_exact_integers: approvals_bind_exact_integers_on_sqlite, approvals_bind_exact_integers_on_postgres);

async fn numbers_reach_the_upstream_exactly_or_not_at_all(backend: Backend) {
    let app = setup(backend).await;
    for (a, b, sum) in [
        (TWO_53_PLUS_1.to_string(), "0", TWO_53_PLUS_1.to_string()),
        (u64::MAX.to_string(), "-1", (u64::MAX - 1).to_string()),
        (i64::MIN.to_string(), "0", i64::MIN.to_string()),
    ] {
        let arguments = format!(r#"{{"a":{a},"b":{b}}}"#);
        let response = app.call_raw("add", &arguments).await;
        assert_eq!(response.text(), sum, "{response}");
    }
    let forwarded_before = payloads(&app, "call.received").await.len();

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
        let response = app.call_raw(tool, arguments).await.message;
        assert_eq!(response["error"]["code"], -32602, "{response}");
        assert_eq!(response["error"]["message"], message, "{response}");
        assert_eq!(response["id"], 1, "{response}");
    }
    assert_eq!(
        payloads(&app, "call.received").await.len(),
        forwarded_before,
        "a refused call is not received, decided or forwarded"
    );
}

crate::on_both_databases!(numbers_reach_the_upstream_exactly_or_not_at_all: numbers_reach_the_upstream_exactly_or_not_at_all_on_sqlite, numbers_reach_the_upstream_exactly_or_not_at_all_on_postgres);
