//! The app of the chat backend tests: the echo upstream, a policy with three approval rules,
//! and approvers whose chat accounts the test chooses. What these tests ask of a gateway
//! (a held call's approval, bounded waits, `chat test`) is in `app/chat.rs`.

use crate::app::{Agent, Approver, TestApp, TestAppBuilder};

pub const AGENT_KEY: &str = "chat-agent-key";

/// `delete_record` needs one of bob and carol for `one-*` records, two of bob, carol and dave
/// for `two-*`, and bob within two seconds for `fast-*`. The agent acts for alice.
pub const POLICY: &str = r#"
defaults: {verdict: deny, reason: no rule allows this call}
rules:
  - id: one-of-two
    match: {tool: delete_record, arguments: {properties: {record_id: {pattern: "^one-"}}, required: [record_id]}}
    verdict: approve
    approvers: [bob, carol]
    quorum: 1
    timeout: 1m
  - id: two-of-three
    match: {tool: delete_record, arguments: {properties: {record_id: {pattern: "^two-"}}, required: [record_id]}}
    verdict: approve
    approvers: [bob, carol, dave]
    quorum: 2
    timeout: 1m
  - id: fast-expiry
    match: {tool: delete_record, arguments: {properties: {record_id: {pattern: "^fast-"}}, required: [record_id]}}
    verdict: approve
    approvers: [bob]
    quorum: 1
    timeout: 2s
"#;

pub const APPROVERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// The chat tests' app: [`POLICY`]; agent-1 (key [`AGENT_KEY`]) acting for alice; approvers
/// [`APPROVERS`], in no group and with no chat account (see [`approvers_on`]); auditor audrey.
/// The caller adds the `chat.<backend>` settings.
pub fn builder() -> TestAppBuilder {
    TestApp::builder()
        .policy(POLICY)
        .agents(vec![Agent::new("agent-1", AGENT_KEY).on_behalf_of("alice")])
        .approvers(APPROVERS.map(Approver::new).to_vec())
}

/// [`APPROVERS`], in no group, each with `account(who)` on chat `backend`.
pub fn approvers_on(backend: &str, account: impl Fn(&str) -> String) -> Vec<Approver> {
    APPROVERS
        .iter()
        .map(|who| Approver::new(who).chat(backend, &account(who)))
        .collect()
}

/// An app with no agent (callers are anonymous), approver or auditor: the configuration
/// `chat test` and the start-up checks of a `chat.<backend>` section are tried on.
pub fn chat_only() -> TestAppBuilder {
    TestApp::builder()
        .agents(Vec::new())
        .approvers(Vec::new())
        .auditors(&[])
}
