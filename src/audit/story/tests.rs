use super::*;
use serde_json::json;

const CALL: &str = "01a23b4f-d356-741c-84e4-9f71ea54be64";
const APPROVAL: &str = "01a23b4f-d356-741c-84e4-9f71ea54be65";
const AT: &str = "2026-12-03T10:00:00.000000Z";

fn requested() -> String {
    json!({"approval_id": APPROVAL, "agent": "agent-1", "on_behalf_of": "alice",
        "server": "echo", "tool": "delete_record", "args_sha256": "aa", "policy_version": "v1",
        "rule": "two", "eligible": ["alice", "bob", "carol"], "quorum": 2,
        "expires_at_ms": 0})
    .to_string()
}

fn vote(who: &str) -> String {
    json!({"approval_id": APPROVAL, "approver": who, "vote": "approve", "source": "http",
        "result": {"result": "counted"}, "agent": "agent-1", "server": "echo",
        "tool": "delete_record"})
    .to_string()
}

fn decided() -> String {
    json!({"approval_id": APPROVAL, "outcome": "approved", "decided_by": "bob",
        "agent": "agent-1", "server": "echo", "tool": "delete_record"})
    .to_string()
}

fn forwarded(args: &str) -> String {
    json!({"agent": "agent-1", "server": "echo", "tool": "delete_record", "executor": "x",
        "approval_id": APPROVAL, "args_sha256": args, "policy_version": "v1"})
    .to_string()
}

/// Plays `events` (kind, payload) from seq 1 and returns what the story found.
fn play(events: &[(&str, String)]) -> Ending {
    let mut story = Story::default();
    for (n, (kind, payload)) in events.iter().enumerate() {
        story.observe(n as i64 + 1, Some(CALL), kind, AT, payload);
    }
    story.finish(Duration::from_secs(3600))
}

fn held() -> (&'static str, String) {
    ("policy.decided", json!({"outcome": "approve"}).to_string())
}

#[test]
fn a_quorum_backed_forward_with_an_end_is_a_clean_story() {
    let ending = play(&[
        held(),
        ("approval.requested", requested()),
        ("approval.vote", vote("bob")),
        ("approval.vote", vote("carol")),
        ("approval.decided", decided()),
        ("call.forwarded", forwarded("aa")),
        ("call.completed", "{}".into()),
    ]);
    assert_eq!(ending.violations, []);
    assert_eq!(ending.in_flight, 0);
}

#[test]
fn every_unbacked_decision_is_a_violation_with_its_seq() {
    // One vote, and the agent's own human's: not a quorum of eligible approvers.
    let ending = play(&[
        held(),
        ("approval.requested", requested()),
        ("approval.vote", vote("bob")),
        ("approval.vote", vote("alice")),
        ("approval.decided", decided()),
        ("call.forwarded", forwarded("aa")),
        ("call.forwarded", forwarded("aa")),
        ("call.forwarded", forwarded("bb")),
    ]);
    let seqs: Vec<i64> = ending.violations.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, [4, 5, 6, 7, 8], "{:?}", ending.violations);
    assert!(
        ending.violations[0]
            .what
            .contains("a vote from alice counted")
    );
    assert!(
        ending.violations[1]
            .what
            .contains("1 distinct eligible approvals")
    );
    assert!(ending.violations[3].what.contains("already been used"));
    assert_eq!(
        ending.violations[1].call_id,
        Some(Uuid::parse_str(CALL).unwrap())
    );
}

#[test]
fn a_forward_before_its_decision_or_without_an_approval_is_a_violation() {
    let ending = play(&[
        held(),
        ("approval.requested", requested()),
        ("call.forwarded", forwarded("aa")),
    ]);
    assert!(ending.violations[0].what.contains("before any decision"));
    let ending = play(&[
        held(),
        (
            "call.forwarded",
            json!({"agent": "agent-1", "server": "echo", "tool": "delete_record",
                "executor": "x"})
            .to_string(),
        ),
    ]);
    assert!(ending.violations[0].what.contains("forwarded without one"));
}

#[test]
fn break_glass_needs_the_rule_and_a_review() {
    let mut allowed: serde_json::Value = serde_json::from_str(&requested()).unwrap();
    allowed["break_glass"] = json!({"eligible": ["bob"], "min_justification": 20});
    let glass = json!({"approval_id": APPROVAL, "approver": "bob", "vote": "approve",
        "source": "http", "break_glass": true, "justification": "the outage INC-42 needs it",
        "result": {"result": "decided"}, "agent": "agent-1", "server": "echo",
        "tool": "delete_record"})
    .to_string();
    let mut decided: serde_json::Value = serde_json::from_str(&decided()).unwrap();
    decided["break_glass"] = json!(true);
    let events = [
        ("approval.requested", allowed.to_string()),
        ("approval.vote", glass),
        ("approval.decided", decided.to_string()),
    ];
    let ending = play(&events);
    assert_eq!(ending.violations, []);
    assert_eq!(ending.unreviewed.len(), 1);
    let mut reviewed = events.to_vec();
    let review = json!({"approval_id": APPROVAL, "reviewer": "carol", "note": "ok",
        "agent": "agent-1", "server": "echo", "tool": "delete_record"});
    reviewed.push(("approval.reviewed", review.to_string()));
    assert_eq!(play(&reviewed).unreviewed, []);
    // Without the rule's permission, the same decision is a violation.
    let mut bare = events.to_vec();
    bare[0].1 = requested(); // no break_glass on the rule
    assert!(play(&bare).violations[0].what.contains("did not allow"));
}

fn with_groups() -> String {
    let mut requested: serde_json::Value = serde_json::from_str(&requested()).unwrap();
    requested["eligible_groups"] = json!([{"group": "ops", "issuer": "https://idp.example",
        "idp_groups": ["idp-ops"]}]);
    requested.to_string()
}

fn group_vote(who: &str, subject: &str, groups: &[&str], source: &str) -> String {
    let mut vote: serde_json::Value = serde_json::from_str(&vote(who)).unwrap();
    vote["source"] = json!(source);
    vote["idp"] = json!({"issuer": "https://idp.example/", "subject": subject, "groups": groups});
    vote.to_string()
}

#[test]
fn a_group_vote_counts_when_the_request_recorded_its_group_and_once_per_person() {
    let clean = play(&[
        held(),
        ("approval.requested", with_groups()),
        (
            "approval.vote",
            group_vote("idp:gina", "s-gina", &["idp-ops"], "console"),
        ),
        ("approval.vote", vote("bob")),
        ("approval.decided", decided()),
        ("call.forwarded", forwarded("aa")),
        ("call.completed", "{}".into()),
    ]);
    assert_eq!(clean.violations, []);
    // The same person twice (her mapped id with the same subject) is one approval.
    let twice = play(&[
        ("approval.requested", with_groups()),
        (
            "approval.vote",
            group_vote("idp:gina", "s-gina", &["idp-ops"], "console"),
        ),
        (
            "approval.vote",
            group_vote("carol", "s-gina", &[], "console"),
        ),
        ("approval.decided", decided()),
    ]);
    let what: Vec<&str> = twice.violations.iter().map(|v| v.what.as_str()).collect();
    assert_eq!(twice.violations.len(), 1, "{what:?}");
    assert!(
        what[0].contains("1 distinct eligible approvals"),
        "{what:?}"
    );
}

#[test]
fn a_forged_group_vote_is_named() {
    // Groups the request did not record, groups claimed outside the console, a group
    // where the request recorded none, and the agent's own human holding the group.
    let ending = play(&[
        ("approval.requested", with_groups()),
        (
            "approval.vote",
            group_vote("idp:eve", "s-eve", &["contractors"], "console"),
        ),
        (
            "approval.vote",
            group_vote("idp:mal", "s-mal", &["idp-ops"], "http"),
        ),
        (
            "approval.vote",
            group_vote("alice", "s-alice", &["idp-ops"], "console"),
        ),
        ("approval.decided", decided()),
    ]);
    let seqs: Vec<i64> = ending.violations.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5], "{:?}", ending.violations);
    assert!(ending.violations[0].what.contains(
        "a vote from idp:eve counted on approval 01a23b4f-d356-741c-84e4-9f71ea54be65, but the request did not make them eligible (their identity provider's groups contractors stand for no approver group it named)"
    ), "{:?}", ending.violations);
    assert!(
        ending.violations[3]
            .what
            .contains("0 distinct eligible approvals")
    );
    let ungrouped = play(&[
        ("approval.requested", requested()),
        (
            "approval.vote",
            group_vote("idp:gina", "s-gina", &["idp-ops"], "console"),
        ),
    ]);
    assert!(
        ungrouped.violations[0].what.contains("idp:gina"),
        "{:?}",
        ungrouped.violations
    );
}
