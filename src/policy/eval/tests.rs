//! The policy matrix: each matcher, precedence, defaults, and the fail-closed approvals.

use crate::auth::Agent;
use crate::policy::load::{PolicySet, Source};
use crate::policy::{Annotations, CallFacts, Decision, Verdict};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

/// A policy set from in-memory files `(name, text)`.
pub(crate) fn set(files: &[(&str, &str)]) -> PolicySet {
    let sources: Vec<Source> = files
        .iter()
        .map(|(name, text)| Source {
            name: (*name).into(),
            path: PathBuf::from("policies").join(name),
            text: (*text).into(),
        })
        .collect();
    PolicySet::from_sources(sources).unwrap_or_else(|e| panic!("{e}"))
}

fn one(text: &str) -> PolicySet {
    set(&[("p.yaml", text)])
}

/// A call to be decided; fields are changed by the tests.
struct Call {
    agent: Agent,
    server: &'static str,
    tool: &'static str,
    annotations: Annotations,
    arguments: Value,
}

fn call(server: &'static str, tool: &'static str) -> Call {
    Call {
        agent: Agent {
            id: "ci-bot".into(),
            on_behalf_of: Some("alice".into()),
            groups: Arc::new(["builders".to_owned()]),
        },
        server,
        tool,
        annotations: Annotations::default(),
        arguments: json!({}),
    }
}

impl Call {
    fn decide(&self, set: &PolicySet) -> Decision {
        set.evaluate(&CallFacts {
            agent: &self.agent,
            server: self.server,
            tool: self.tool,
            annotations: self.annotations,
            arguments: &self.arguments,
        })
    }

    /// The id of the deciding rule.
    fn rule(&self, set: &PolicySet) -> String {
        self.decide(set).rule
    }
}

const DENY_DEFAULT: &str = "defaults: {verdict: deny}\n";

#[test]
fn a_server_glob_matches_and_a_list_means_any_of_them() {
    let s = one(&format!(
        "{DENY_DEFAULT}rules:\n  - id: r\n    match: {{server: [docs, 'fs-*']}}\n    verdict: allow\n"
    ));
    assert_eq!(call("fs-home", "read").rule(&s), "r");
    assert_eq!(call("docs", "read").rule(&s), "r");
    assert_eq!(call("fs", "read").rule(&s), "default");
}

#[test]
fn a_tool_glob_matches_the_tool_name() {
    let s = one(&format!(
        "{DENY_DEFAULT}rules:\n  - id: r\n    match: {{tool: 'delete_*'}}\n    verdict: allow\n"
    ));
    assert_eq!(call("x", "delete_record").rule(&s), "r");
    assert_eq!(call("x", "undelete").rule(&s), "default");
}

#[test]
fn an_agent_pattern_matches_the_agent_id() {
    let s = one(&format!(
        "{DENY_DEFAULT}rules:\n  - id: r\n    match: {{agent: 'ci-*'}}\n    verdict: allow\n"
    ));
    let mut c = call("x", "t");
    assert_eq!(c.rule(&s), "r");
    c.agent.id = "human-bot".into();
    assert_eq!(c.rule(&s), "default");
}

#[test]
fn an_agent_group_matches_when_any_of_the_agents_groups_does() {
    let s = one(&format!(
        "{DENY_DEFAULT}rules:\n  - id: r\n    match: {{agent_group: [ops, builders]}}\n    verdict: allow\n"
    ));
    let mut c = call("x", "t");
    assert_eq!(c.rule(&s), "r");
    assert!(
        c.decide(&s)
            .explanation
            .contains("agent group `builders` matches `builders`")
    );
    c.agent.groups = Arc::new([]);
    assert_eq!(c.rule(&s), "default");
}

#[test]
fn annotation_conditions_see_the_spec_defaults_of_a_tool_that_declares_nothing() {
    let rules = "rules:\n  - id: destructive\n    match: {destructive: true, open_world: true}\n    verdict: allow\n  - id: read-only\n    match: {read_only: true}\n    verdict: allow\n";
    let s = one(&format!("{DENY_DEFAULT}{rules}"));
    let mut c = call("x", "t");
    c.annotations = Annotations::from_tool(&json!({"name": "t"}));
    assert_eq!(c.rule(&s), "destructive");
    c.annotations = Annotations::from_tool(
        &json!({"annotations": {"readOnlyHint": true, "destructiveHint": false}}),
    );
    assert_eq!(c.rule(&s), "read-only");
}

#[test]
fn idempotent_is_matched_as_declared() {
    let s = one(&format!(
        "{DENY_DEFAULT}rules:\n  - id: r\n    match: {{idempotent: true}}\n    verdict: allow\n"
    ));
    let mut c = call("x", "t");
    assert_eq!(c.rule(&s), "default", "idempotentHint defaults to false");
    c.annotations.idempotent = true;
    assert_eq!(c.rule(&s), "r");
}

#[test]
fn an_argument_schema_must_accept_the_arguments() {
    let rule = "rules:\n  - id: outside\n    match:\n      tool: write_file\n      arguments:\n        type: object\n        properties:\n          path: {type: string, not: {pattern: '^/workspace/'}}\n        required: [path]\n    verdict: deny\n    reason: write under /workspace only\n";
    let s = one(&format!("defaults: {{verdict: allow}}\n{rule}"));
    let mut c = call("fs", "write_file");
    c.arguments = json!({"path": "/etc/passwd"});
    let d = c.decide(&s);
    assert_eq!(
        d.verdict,
        Verdict::Deny {
            reason: "write under /workspace only".into()
        }
    );
    assert!(
        d.explanation.contains("the arguments match the schema"),
        "{}",
        d.explanation
    );
    c.arguments = json!({"path": "/workspace/a.txt"});
    assert_eq!(c.rule(&s), "default");
}

#[test]
fn every_stated_condition_must_hold() {
    let s = one(&format!(
        "{DENY_DEFAULT}rules:\n  - id: r\n    match: {{server: fs, tool: read, agent: ci-bot}}\n    verdict: allow\n"
    ));
    assert_eq!(call("fs", "read").rule(&s), "r");
    assert_eq!(call("fs", "write").rule(&s), "default");
    assert_eq!(call("db", "read").rule(&s), "default");
}

#[test]
fn a_rule_without_match_matches_every_call() {
    let s = one("rules:\n  - id: all\n    verdict: allow\n");
    let d = call("any", "thing").decide(&s);
    assert_eq!((d.rule.as_str(), d.verdict), ("all", Verdict::Allow));
}

const MIXED: &str = "defaults: {verdict: allow}
rules:
  - id: allow-all
    verdict: allow
  - id: approve-all
    verdict: approve
    approvers: [bob]
  - id: deny-delete
    match: {tool: 'delete*'}
    verdict: deny
    reason: no deleting
";

#[test]
fn deny_wins_over_approve_and_allow_whatever_their_order() {
    let d = call("x", "delete_all").decide(&one(MIXED));
    assert_eq!(d.rule, "deny-delete");
    assert_eq!(
        d.verdict,
        Verdict::Deny {
            reason: "no deleting".into()
        }
    );
    assert!(
        d.explanation
            .contains("`allow-all` (allow), `approve-all` (approve)"),
        "{}",
        d.explanation
    );
}

#[test]
fn approve_wins_over_allow() {
    let d = call("x", "read").decide(&one(MIXED));
    assert_eq!(d.rule, "approve-all");
    assert!(matches!(d.verdict, Verdict::Approve(_)));
}

#[test]
fn among_equal_verdicts_the_first_by_file_name_then_rule_order_decides() {
    let a = "rules:\n  - id: a1\n    verdict: allow\n  - id: a2\n    verdict: allow\n";
    let b = "rules:\n  - id: b1\n    verdict: allow\n";
    assert_eq!(
        call("x", "t").rule(&set(&[("b.yaml", b), ("a.yaml", a)])),
        "a1"
    );
    let b_first = set(&[("0-b.yaml", b), ("a.yaml", a)]);
    assert_eq!(call("x", "t").rule(&b_first), "b1");
}

#[test]
fn the_first_matching_approve_rule_decides_alone() {
    let text = "rules:
  - id: two-ops
    verdict: approve
    approver_groups: [ops]
    quorum: 2
  - id: security
    verdict: approve
    approver_groups: [security]
    classification: SECRET
";
    let Verdict::Approve(spec) = call("x", "t").decide(&one(text)).verdict else {
        panic!()
    };
    assert_eq!(
        (spec.approver_groups, spec.quorum, spec.classification),
        (vec!["ops".to_owned()], 2, None)
    );
}

#[test]
fn when_no_rule_matches_the_configured_default_decides() {
    let s = one(
        "defaults:\n  verdict: approve\n  approver_groups: [operators]\n  quorum: 2\n  timeout: 1h\n",
    );
    let d = call("x", "t").decide(&s);
    assert_eq!(d.rule, "default");
    let Verdict::Approve(spec) = d.verdict else {
        panic!("{d:?}")
    };
    assert_eq!(spec.approver_groups, ["operators"]);
    assert_eq!((spec.quorum, spec.timeout.as_secs()), (2, 3600));
    let s = one("defaults:\n  verdict: deny\n  reason: ask first\n");
    assert_eq!(
        call("x", "t").decide(&s).verdict,
        Verdict::Deny {
            reason: "ask first".into()
        }
    );
}

#[test]
fn the_built_in_default_approval_names_no_approvers_and_so_denies() {
    let d = call("x", "t").decide(&one("rules: []\n"));
    assert_eq!(d.rule, "default");
    let Verdict::Deny { reason } = d.verdict else {
        panic!("{d:?}")
    };
    assert!(reason.contains("names no approvers"), "{reason}");
    assert!(
        d.explanation.contains("no file sets `defaults`"),
        "{}",
        d.explanation
    );
}

#[test]
fn a_configured_default_approval_without_approvers_also_denies() {
    let d = call("x", "t").decide(&one("defaults: {verdict: approve, quorum: 1}\n"));
    assert!(matches!(d.verdict, Verdict::Deny { .. }), "{d:?}");
}

#[test]
fn rules_inherit_unset_approval_settings_from_defaults_and_join_redactions() {
    let text = "defaults:
  verdict: deny
  approver_groups: [operators]
  timeout: 30m
  redact: [/token]
  channel: approvals
rules:
  - id: r
    verdict: approve
    quorum: 2
    redact: [/password]
";
    let Verdict::Approve(spec) = call("x", "t").decide(&one(text)).verdict else {
        panic!()
    };
    assert_eq!(spec.approver_groups, ["operators"]);
    assert_eq!((spec.quorum, spec.timeout.as_secs()), (2, 1800));
    assert_eq!(spec.redact, ["/token", "/password"]);
    assert_eq!(spec.channel.as_deref(), Some("approvals"));
}

#[test]
fn approvers_named_by_a_rule_replace_both_inherited_lists() {
    let text = "defaults: {verdict: deny, approver_groups: [operators]}\nrules:\n  - id: r\n    verdict: approve\n    approvers: [bob]\n";
    let Verdict::Approve(spec) = call("x", "t").decide(&one(text)).verdict else {
        panic!()
    };
    assert_eq!(
        (spec.approvers, spec.approver_groups),
        (vec!["bob".to_owned()], vec![])
    );
}

#[test]
fn the_self_approval_flag_and_card_settings_are_carried() {
    let text = "rules:
  - id: r
    verdict: approve
    approvers: [alice, bob]
    allow_self_approval: true
    classification: CONFIDENTIAL
    channel: hr
    post_results: true
";
    let Verdict::Approve(spec) = call("x", "t").decide(&one(text)).verdict else {
        panic!()
    };
    assert!(spec.allow_self_approval && spec.post_results);
    assert_eq!(spec.classification.as_deref(), Some("CONFIDENTIAL"));
    assert_eq!(spec.channel.as_deref(), Some("hr"));
    let Verdict::Approve(spec) = call("x", "t")
        .decide(&one(
            "rules:\n  - id: r\n    verdict: approve\n    approvers: [bob]\n",
        ))
        .verdict
    else {
        panic!()
    };
    assert!(
        !spec.allow_self_approval && !spec.post_results,
        "both default to false"
    );
}

#[test]
fn a_requester_who_is_the_only_listed_approver_is_denied_unless_self_approval_is_allowed() {
    let refused = "rules:\n  - id: r\n    verdict: approve\n    approvers: [alice]\n";
    let d = call("x", "t").decide(&one(refused));
    let Verdict::Deny { reason } = &d.verdict else {
        panic!("{d:?}")
    };
    assert!(reason.contains("alice requested it"), "{reason}");
    let allowed = format!("{refused}    allow_self_approval: true\n");
    assert!(matches!(
        call("x", "t").decide(&one(&allowed)).verdict,
        Verdict::Approve(_)
    ));
}

#[test]
fn a_decision_names_its_rule_the_policy_version_and_why() {
    let s = one(
        "rules:\n  - id: fs-read\n    match: {server: fs, read_only: true}\n    verdict: allow\n",
    );
    let mut c = call("fs", "read");
    c.annotations.read_only = true;
    let d = c.decide(&s);
    assert_eq!(d.rule, "fs-read");
    assert_eq!(d.policy_version, s.version());
    assert_eq!(d.policy_version.len(), 64);
    assert_eq!(
        d.explanation,
        "rule `fs-read` (p.yaml) matched: server `fs` matches `fs`, read_only is true"
    );
}

#[test]
fn the_version_changes_with_any_byte_or_file_name_but_not_otherwise() {
    let text = "rules: []\n";
    let v = |files: &[(&str, &str)]| set(files).version().to_owned();
    assert_eq!(v(&[("a.yaml", text)]), v(&[("a.yaml", text)]));
    assert_ne!(v(&[("a.yaml", text)]), v(&[("b.yaml", text)]));
    assert_ne!(v(&[("a.yaml", text)]), v(&[("a.yaml", "rules: [] \n")]));
    assert_eq!(
        v(&[("a.yaml", text), ("b.yaml", text)]),
        v(&[("b.yaml", text), ("a.yaml", text)])
    );
}

#[test]
fn a_deny_rule_without_an_argument_condition_always_denies_the_tool() {
    let s = one(MIXED);
    let c = call("x", "delete_all");
    assert_eq!(
        s.always_denies(&c.agent, c.server, c.tool, c.annotations),
        Some("deny-delete")
    );
    assert_eq!(
        s.always_denies(&c.agent, c.server, "read", c.annotations),
        None
    );
    let by_arguments = one(
        "rules:\n  - id: d\n    match: {arguments: {required: [x]}}\n    verdict: deny\n    reason: no\n",
    );
    assert_eq!(
        by_arguments.always_denies(&c.agent, c.server, c.tool, c.annotations),
        None
    );
}
