//! The ledger's rules on hand-made event sequences: a grant needs exactly the approved call,
//! and only eligible, distinct people count.

use super::*;
use serde_json::json;

const ID: &str = "01a23b4f-d356-741c-84e4-9f71ea54be65";

fn apply(ledger: &mut Ledger, kind: EventKind, payload: serde_json::Value) -> Option<Uuid> {
    let payload = payload.to_string();
    ledger.apply(&Recorded {
        seq: 1,
        call_id: Some(Uuid::nil()),
        kind,
        actor: "x",
        payload: &payload,
    })
}

fn binding() -> Binding {
    Binding {
        agent: "agent-1".into(),
        server: "echo".into(),
        tool: "delete_record".into(),
        args_sha256: "aa".into(),
        policy_version: "v1".into(),
    }
}

fn vote(ledger: &mut Ledger, who: &str) {
    let payload = json!({"approval_id": ID, "approver": who, "vote": "approve",
        "source": "http", "result": {"result": "counted"}, "agent": "agent-1",
        "server": "echo", "tool": "delete_record"});
    apply(ledger, EventKind::ApprovalVote, payload);
}

/// A ledger holding one approval for `binding()`: quorum 2 of bob and carol, alice being
/// the agent's human.
fn requested() -> Ledger {
    let mut ledger = Ledger::default();
    let payload = json!({"approval_id": ID, "agent": "agent-1", "on_behalf_of": "alice",
        "server": "echo", "tool": "delete_record", "args_sha256": "aa",
        "policy_version": "v1", "rule": "two", "eligible": ["alice", "bob", "carol"],
        "quorum": 2, "expires_at_ms": i64::MAX});
    apply(&mut ledger, EventKind::ApprovalRequested, payload);
    ledger
}

fn decide(ledger: &mut Ledger) -> Option<Uuid> {
    let payload = json!({"approval_id": ID, "outcome": "approved", "decided_by": "bob",
        "agent": "agent-1", "server": "echo", "tool": "delete_record"});
    apply(ledger, EventKind::ApprovalDecided, payload)
}

#[test]
fn a_grant_needs_an_approved_quorum_for_exactly_this_call_once() {
    let id = Uuid::parse_str(ID).unwrap();
    let mut ledger = requested();
    assert!(ledger.joinable(&binding(), 0).is_some());
    assert!(
        ledger
            .grant(id, &binding(), 0)
            .unwrap_err()
            .to_string()
            .contains("pending")
    );
    vote(&mut ledger, "bob");
    vote(&mut ledger, "alice"); // the agent's human: never counted
    assert_eq!(decide(&mut ledger), Some(id));
    let why = ledger.grant(id, &binding(), 0).unwrap_err().to_string();
    assert!(why.contains("1 distinct eligible approvals"), "{why}");

    let mut ledger = requested();
    vote(&mut ledger, "bob");
    vote(&mut ledger, "carol");
    decide(&mut ledger);
    let other = Binding {
        args_sha256: "bb".into(),
        ..binding()
    };
    assert!(
        ledger
            .grant(id, &other, 0)
            .unwrap_err()
            .to_string()
            .contains("another call")
    );
    assert!(ledger.grant(id, &binding(), i64::MAX).is_err(), "expired");
    assert!(ledger.grant(id, &binding(), 0).is_ok());
    let forwarded = json!({"agent": "agent-1", "server": "echo", "tool": "delete_record",
        "executor": "x", "approval_id": ID});
    apply(&mut ledger, EventKind::CallForwarded, forwarded);
    assert!(ledger.grant(id, &binding(), 0).is_err(), "used once");
    assert!(ledger.is_empty(), "a used grant is forgotten");
}

/// `requested()`, with the identity provider's group `idp-ops` standing for `ops`.
fn requested_with_groups() -> Ledger {
    let mut ledger = Ledger::default();
    let payload = json!({"approval_id": ID, "agent": "agent-1", "on_behalf_of": "alice",
        "server": "echo", "tool": "delete_record", "args_sha256": "aa",
        "policy_version": "v1", "rule": "two", "eligible": ["alice", "bob", "carol"],
        "eligible_groups": [{"group": "ops", "issuer": "https://idp.example/",
            "idp_groups": ["idp-ops"]}],
        "quorum": 2, "expires_at_ms": i64::MAX});
    apply(&mut ledger, EventKind::ApprovalRequested, payload);
    ledger
}

fn group_vote(ledger: &mut Ledger, who: &str, subject: &str, groups: &[&str], source: &str) {
    let payload = json!({"approval_id": ID, "approver": who, "vote": "approve",
        "source": source, "result": {"result": "counted"}, "agent": "agent-1",
        "server": "echo", "tool": "delete_record",
        "idp": {"issuer": "https://idp.example", "subject": subject, "groups": groups}});
    apply(ledger, EventKind::ApprovalVote, payload);
}

#[test]
fn a_group_stands_in_only_from_the_console_and_only_if_the_request_recorded_it() {
    let id = Uuid::parse_str(ID).unwrap();
    let mut ledger = requested_with_groups();
    // An outsider's unmapped group, a mapped group claimed over the API, and the agent's
    // own human holding the group: none counts.
    group_vote(&mut ledger, "idp:eve", "s-eve", &["contractors"], "console");
    group_vote(
        &mut ledger,
        "idp:mallory",
        "s-mallory",
        &["idp-ops"],
        "http",
    );
    group_vote(&mut ledger, "alice", "s-alice", &["idp-ops"], "console");
    assert_eq!(ledger.get(id).unwrap().approvals(), 0);
    group_vote(&mut ledger, "idp:gina", "s-gina", &["idp-ops"], "console");
    assert_eq!(ledger.get(id).unwrap().approvals(), 1);
    // The same person again: once by their mapped id, once with the same subject.
    group_vote(&mut ledger, "carol", "s-gina", &["idp-ops"], "console");
    group_vote(&mut ledger, "idp:gina", "s-other", &["idp-ops"], "console");
    assert_eq!(ledger.get(id).unwrap().approvals(), 1);
    vote(&mut ledger, "bob");
    assert_eq!(ledger.get(id).unwrap().approvals(), 2);
    decide(&mut ledger);
    assert!(ledger.grant(id, &binding(), 0).is_ok());

    // A request that recorded no groups: a group is no standing.
    let mut ledger = requested();
    group_vote(&mut ledger, "idp:gina", "s-gina", &["idp-ops"], "console");
    vote(&mut ledger, "bob");
    decide(&mut ledger);
    let why = ledger.grant(id, &binding(), 0).unwrap_err().to_string();
    assert!(why.contains("1 distinct eligible approvals"), "{why}");
}
