//! The untyped helpers the files not yet on [`TestApp`] import (through `crate::approvals`),
//! each a thin layer over it.

use super::client::{Client, Vote, agent_call};
use super::{AGENT_KEY, POLICY, TestApp};
use crate::support::{self, TestDb, TestGateway};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

fn client(gw: &TestGateway) -> Client {
    Client::new(gw, AGENT_KEY)
}

/// The standard gateway over `db` and `policy_dir`, with `extra` top-level YAML.
pub async fn gateway_with(db: &TestDb, policy_dir: &Path, extra: &str) -> TestGateway {
    let yaml = TestApp::builder()
        .extra_yaml(extra)
        .yaml(&db.url, policy_dir, policy_dir, None);
    support::spawn_gateway(&yaml).await
}

/// A directory holding [`POLICY`].
pub fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    dir
}

/// [`Client::call`]: (final response, progress notifications).
pub async fn call(gw_url: String, tool: &str, arguments: Value) -> (Value, Vec<Value>) {
    let reply = agent_call(gw_url, AGENT_KEY.into(), tool, arguments).await;
    (reply.message, reply.progress)
}

/// [`Client::held_delete`].
pub async fn held_delete(
    gw: &TestGateway,
    record: &str,
) -> (tokio::task::JoinHandle<(Value, Vec<Value>)>, String) {
    let agent = tokio::spawn(call(
        gw.url.clone(),
        "delete_record",
        json!({"record_id": record}),
    ));
    let id = client(gw).pending(1).await.remove(0).id;
    (agent, id)
}

/// [`HeldCall::answer`].
pub async fn answer(agent: tokio::task::JoinHandle<(Value, Vec<Value>)>) -> (Value, Vec<Value>) {
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("the call ends in time")
        .expect("the call task")
}

pub fn base(gw: &TestGateway) -> String {
    format!("http://{}", gw.addr)
}

/// [`Client::vote`].
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

/// [`Client::pending_json`].
pub async fn pending(gw: &TestGateway, count: usize) -> Vec<Value> {
    client(gw).pending_json(count).await
}

/// [`Client::call_events`].
pub async fn call_events(gw: &TestGateway, call_id: &str) -> Vec<Value> {
    client(gw).call_events(call_id).await
}

/// [`Client::story`].
pub async fn story(gw: &TestGateway, call_id: &str) -> Vec<String> {
    client(gw).story(call_id).await
}
