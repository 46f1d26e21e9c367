//! The app of the chat backend tests: the echo upstream, a policy with three approval rules,
//! and approvers whose chat accounts the test chooses. What these tests ask of a gateway
//! (a held call's approval, bounded waits, `chat test`) is in `app/chat.rs`.

use crate::app::{Agent, Approver, Client, TestApp, TestAppBuilder, Vote};
use crate::support::{self, TestDb, TestGateway};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

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

// The old untyped helpers, over the typed app, for the files not yet on `TestApp`
// (chat_table.rs, webhook.rs, tls.rs). Delete them once those have moved.

/// A database and policy directory that outlive gateways (for restarts).
pub struct Setting {
    pub db: TestDb,
    pub policies: tempfile::TempDir,
}

impl Setting {
    pub async fn new() -> Setting {
        let policies = tempfile::tempdir().unwrap();
        std::fs::write(policies.path().join("policy.yaml"), POLICY).unwrap();
        Setting {
            db: TestDb::new(support::Backend::Sqlite).await,
            policies,
        }
    }

    /// Starts a gateway. `accounts(approver)` gives each approver's `chat:` map (YAML flow
    /// style, e.g. `{matrix: '@bob:localhost'}`); `chat` is the `chat:` section's body.
    pub async fn gateway(&self, accounts: &dyn Fn(&str) -> String, chat: &str) -> TestGateway {
        self.gateway_on(accounts, chat, 0).await
    }

    /// The same, on loopback `port` (0: any).
    pub async fn gateway_on(
        &self,
        accounts: &dyn Fn(&str) -> String,
        chat: &str,
        port: u16,
    ) -> TestGateway {
        let approvers = APPROVERS
            .iter()
            .map(|who| {
                let accounts: BTreeMap<String, String> =
                    serde_yaml_ng::from_str(&accounts(who)).unwrap();
                accounts
                    .iter()
                    .fold(Approver::new(who), |approver, (backend, account)| {
                        approver.chat(backend, account)
                    })
            })
            .collect();
        let builder = with_chat_section(builder().approvers(approvers), chat);
        let policies = self.policies.path();
        let yaml = builder.yaml(&self.db.url, policies, policies, None);
        support::spawn_gateway_on(&yaml, port).await
    }
}

/// `builder` with `chat`, the body of an old `chat:` section (and any top-level sections
/// written after it, as `tls:`).
fn with_chat_section(mut builder: TestAppBuilder, chat: &str) -> TestAppBuilder {
    let sections: Map<String, Value> =
        serde_yaml_ng::from_str(&["chat:", chat].join("\n")).unwrap();
    for (name, section) in sections {
        if !section.is_null() {
            builder = builder.set(&name, section);
        }
    }
    builder
}

fn client(gw: &TestGateway) -> Client {
    Client::new(gw, AGENT_KEY)
}

/// Calls `delete_record` as the agent in a task; returns the task and the approval it opened.
pub async fn held_delete(
    gw: &TestGateway,
    record: &str,
) -> (tokio::task::JoinHandle<Value>, Value) {
    let app = client(gw);
    let caller = app.clone();
    let arguments = json!({"record_id": record});
    let agent = tokio::spawn(async move { caller.call("delete_record", arguments).await.message });
    let id = app
        .approval_where(|a| a.arguments["record_id"] == record)
        .await
        .id;
    (agent, approval(gw, &id).await)
}

/// The agent's answer text (bounded wait).
pub async fn answer(agent: tokio::task::JoinHandle<Value>) -> String {
    let response = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("the call ends in time")
        .expect("the call task");
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {response}"))
        .to_owned()
}

pub fn base(gw: &TestGateway) -> String {
    client(gw).base
}

/// The approval as the approver API shows it.
pub async fn approval(gw: &TestGateway, id: &str) -> Value {
    client(gw).get(&format!("/approvals/{id}"), "bob").await.1
}

/// A vote through the approver HTTP API.
pub async fn vote(
    gw: &TestGateway,
    id: &str,
    who: &str,
    approve: bool,
    reason: Option<&str>,
) -> Value {
    let vote = if approve {
        Vote::Approve
    } else {
        Vote::Deny(reason)
    };
    client(gw).vote(id, who, vote).await
}

/// The audit events of one call, from the auditor API.
pub async fn audit(gw: &TestGateway, call_id: &str) -> Vec<Value> {
    client(gw).call_events(call_id).await
}

/// Waits (bounded) until the call's audit events include one `wanted`; returns them all.
pub async fn wait_audit(
    gw: &TestGateway,
    call_id: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    client(gw).call_events_with(call_id, wanted).await
}

/// Runs `countersign chat test BACKEND` with a configuration holding `chat` (the `chat:`
/// section's body) and extra environment variables; returns the exit status and stdout.
pub async fn chat_test(backend: &str, chat: &str, env: &[(&str, &str)]) -> (bool, String) {
    let app = with_chat_section(chat_only(), chat).spawn_stopped().await;
    app.chat_test(backend, env).await
}
