//! A gateway for the chat backend tests: the echo upstream, a policy with three approval
//! rules, approvers whose chat accounts the test chooses, and helpers to call, watch and vote.

use crate::support::{self, TestDb, TestGateway, modern_meta, post};
use crate::wait;
use serde_json::{Value, json};
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

/// A database and policy directory that outlive gateways (for restarts).
pub struct Setting {
    pub db: TestDb,
    pub policies: tempfile::TempDir,
}

impl Setting {
    pub async fn new() -> Setting {
        Setting::on(support::Backend::Sqlite).await
    }

    pub async fn on(backend: support::Backend) -> Setting {
        let policies = tempfile::tempdir().unwrap();
        std::fs::write(policies.path().join("policy.yaml"), POLICY).unwrap();
        Setting {
            db: TestDb::new(backend).await,
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
        let token = |who: &str| countersign::auth::hash_key(&format!("{who}-token"));
        let approvers: String = APPROVERS
            .iter()
            .map(|who| {
                format!(
                    "  - {{id: {who}, token_sha256: {}, chat: {}}}\n",
                    token(who),
                    accounts(who)
                )
            })
            .collect();
        let yaml = format!(
            "database: {{url: '{db}'}}
policy_dir: '{policies}'
upstreams:
  - name: echo
    stdio: {{command: python3, args: ['{echo}']}}
agents:
  - {{id: agent-1, on_behalf_of: alice, key_sha256: {agent}}}
approvers:
{approvers}auditors:
  - {{id: audrey, token_sha256: {audrey}}}
chat:
{chat}
",
            db = self.db.url,
            policies = self.policies.path().display(),
            echo = support::echo_upstream().display(),
            agent = countersign::auth::hash_key(AGENT_KEY),
            audrey = token("audrey"),
        );
        let yaml = yaml.replace("chat:\n\n", "");
        support::spawn_gateway_on(&yaml, port).await
    }
}

/// Calls `delete_record` as the agent in a task; returns the task and the approval it opened.
pub async fn held_delete(
    gw: &TestGateway,
    record: &str,
) -> (tokio::task::JoinHandle<Value>, Value) {
    let url = gw.url.clone();
    let record_id = record.to_owned();
    let agent = tokio::spawn(async move { call(&url, record_id).await });
    let approval = wait_for(gw, |a| a["arguments"]["record_id"] == record).await;
    (agent, approval)
}

/// Calls `delete_record` with these `arguments` (they name the `record_id`); returns the task
/// and the approval it opened.
pub async fn held_delete_with(
    gw: &TestGateway,
    arguments: Value,
) -> (tokio::task::JoinHandle<Value>, Value) {
    let url = gw.url.clone();
    let record = arguments["record_id"].clone();
    let sent = arguments.clone();
    let agent = tokio::spawn(async move { call_with(&url, sent).await });
    let approval = wait_for(gw, |a| a["arguments"]["record_id"] == record).await;
    (agent, approval)
}

async fn call(url: &str, record: String) -> Value {
    call_with(url, json!({"record_id": record})).await
}

async fn call_with(url: &str, arguments: Value) -> Value {
    let name = "echo__delete_record";
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,
        "arguments":arguments,"_meta":modern_meta()}});
    let auth = format!("Bearer {AGENT_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", name),
    ];
    post(url, &headers, &body)
        .await
        .messages()
        .pop()
        .expect("a response")
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
    format!("http://{}", gw.addr)
}

async fn api(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    who: &str,
    body: Option<Value>,
) -> Value {
    let mut request = crate::support::http()
        .request(method, format!("{}{path}", base(gw)))
        .bearer_auth(format!("{who}-token"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    response.json().await.unwrap_or(Value::Null)
}

/// The approval as the approver API shows it.
pub async fn approval(gw: &TestGateway, id: &str) -> Value {
    api(
        gw,
        reqwest::Method::GET,
        &format!("/approvals/{id}"),
        "bob",
        None,
    )
    .await
}

/// A vote through the approver HTTP API.
pub async fn vote(
    gw: &TestGateway,
    id: &str,
    who: &str,
    approve: bool,
    reason: Option<&str>,
) -> Value {
    let verb = if approve { "approve" } else { "deny" };
    let body = reason.map(|r| json!({"reason": r}));
    api(
        gw,
        reqwest::Method::POST,
        &format!("/approvals/{id}/{verb}"),
        who,
        body,
    )
    .await
}

/// Waits (bounded) for an approval matching `wanted`; returns it.
pub async fn wait_for(gw: &TestGateway, wanted: impl Fn(&Value) -> bool) -> Value {
    let wanted = &wanted;
    wait::eventually(
        "an approval as expected",
        Duration::from_secs(15),
        || async move {
            let list = api(gw, reqwest::Method::GET, "/approvals", "bob", None).await;
            list.as_array()
                .and_then(|l| l.iter().find(|a| wanted(a)))
                .cloned()
        },
    )
    .await
}

/// Waits (bounded) until approval `id` has `status`.
pub async fn wait_status(gw: &TestGateway, id: &str, status: &str) -> Value {
    let what = format!("approval {id} to become {status}");
    wait::eventually(&what, Duration::from_secs(15), || async move {
        let seen = approval(gw, id).await;
        if seen["status"] == status {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await
}

/// The audit events of one call, from the auditor API.
pub async fn audit(gw: &TestGateway, call_id: &str) -> Vec<Value> {
    let events = api(
        gw,
        reqwest::Method::GET,
        &format!("/audit/calls/{call_id}"),
        "audrey",
        None,
    )
    .await;
    let events = events.get("events").cloned().unwrap_or(events);
    events.as_array().cloned().unwrap_or_default()
}

/// Waits (bounded) until the call's audit events include one `wanted`; returns them all.
pub async fn wait_audit(
    gw: &TestGateway,
    call_id: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let wanted = &wanted;
    wait::eventually(
        "the expected audit event",
        Duration::from_secs(10),
        || async move {
            let events = audit(gw, call_id).await;
            if events.iter().any(wanted) {
                Ok(events)
            } else {
                Err(format!("{events:#?}"))
            }
        },
    )
    .await
}

/// Runs `countersign chat test BACKEND` with a configuration holding `chat` (the `chat:`
/// section's body) and extra environment variables; returns the exit status and stdout.
pub async fn chat_test(backend: &str, chat: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cs.db").display());
    let yaml = format!(
        "database: {{url: '{db}'}}\nupstreams: [{{name: echo, stdio: {{command: 'true'}}}}]\nserver: {{allow_anonymous: true}}\nchat:\n{chat}\n"
    );
    let config = dir.path().join("countersign.yaml");
    std::fs::write(&config, yaml).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["chat", "test", backend, "--config"])
        .arg(&config)
        .envs(env.iter().copied())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("chat test ends in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{stderr}"))
}
