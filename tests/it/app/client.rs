//! The agent's and the humans' view of a gateway: MCP calls, the approver API and the
//! auditor API, with the typed answers they give.

use super::token;
use crate::support::{self, TestGateway, modern_meta, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// An approval, as the approver API shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Approval {
    pub id: String,
    pub call_id: String,
    pub rule: String,
    pub status: String,
    pub arguments: Value,
    pub args_sha256: String,
    #[serde(default)]
    pub break_glass: bool,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
}

/// The end of a tool call: the final message and the progress notifications before it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub message: Value,
    pub progress: Vec<Value>,
}

impl Reply {
    /// The text of the result's first content block ("" if none).
    pub fn text(&self) -> &str {
        text(&self.message)
    }

    /// Whether the result is a tool error (`isError`).
    pub fn is_error(&self) -> bool {
        self.message["result"]["isError"] == true
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.message.fmt(f)
    }
}

/// A tool call running in a task (held for approval, typically).
pub struct HeldCall(tokio::task::JoinHandle<Reply>);

impl HeldCall {
    /// The agent's answer (within 20 s).
    pub async fn answer(self) -> Reply {
        tokio::time::timeout(Duration::from_secs(20), self.0)
            .await
            .expect("the call ends in time")
            .expect("the call task")
    }

    /// The client gives up (closes its stream).
    pub fn abort(&self) {
        self.0.abort();
    }
}

/// An approver's decision.
#[derive(Debug, Clone, Copy)]
pub enum Vote<'a> {
    Approve,
    /// Deny, with the reason a deny needs (or without, to be refused).
    Deny(Option<&'a str>),
    /// Approve alone, with this justification.
    BreakGlass(&'a str),
}

/// The agent's and the humans' view of one gateway: MCP calls as the agent, the approver API
/// (listing as bob) and the auditor API (as audrey).
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    agent_key: String,
}

impl Client {
    pub fn new(gw: &TestGateway, agent_key: &str) -> Client {
        Client::at(gw.addr, agent_key)
    }

    /// The gateway at `addr`, called with `agent_key`.
    pub fn at(addr: std::net::SocketAddr, agent_key: &str) -> Client {
        Client {
            url: format!("http://{addr}/mcp"),
            base: format!("http://{addr}"),
            agent_key: agent_key.into(),
        }
    }

    /// Calls `echo__<tool>` as the agent (modern era, with a progress token).
    pub async fn call(&self, tool: &str, arguments: Value) -> Reply {
        agent_call(self.url.clone(), self.agent_key.clone(), tool, arguments).await
    }

    /// The same call, with `arguments` as raw JSON text (so numbers arrive exactly as written)
    /// and no progress token.
    pub async fn call_raw(&self, tool: &str, arguments: &str) -> Reply {
        let name = format!("echo__{tool}");
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{arguments},"_meta":{}}}}}"#,
            modern_meta()
        );
        let auth = format!("Bearer {}", self.agent_key);
        let headers = [
            ("authorization", auth.as_str()),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", name.as_str()),
        ];
        let mut messages = support::post_raw(&self.url, &headers, body)
            .await
            .messages();
        let message = messages.pop().expect("a response");
        Reply {
            message,
            progress: messages,
        }
    }

    /// [`Client::call`] in a task.
    pub fn spawn_call(&self, tool: &str, arguments: Value) -> HeldCall {
        let (url, key, tool) = (self.url.clone(), self.agent_key.clone(), tool.to_owned());
        HeldCall(tokio::spawn(async move {
            agent_call(url, key, &tool, arguments).await
        }))
    }

    /// [`Client::call_raw`] in a task.
    pub fn spawn_call_raw(&self, tool: &str, arguments: String) -> HeldCall {
        let (client, tool) = (self.clone(), tool.to_owned());
        HeldCall(tokio::spawn(async move {
            client.call_raw(&tool, &arguments).await
        }))
    }

    /// The agent's `delete_record` call, held for approval (the only one pending); and the
    /// approval's id.
    pub async fn held_delete(&self, record: &str) -> (HeldCall, String) {
        let call = self.spawn_call("delete_record", json!({"record_id": record}));
        let id = self.pending(1).await.remove(0).id;
        (call, id)
    }

    /// Waits (10 s at most) until `count` approvals are pending; returns them.
    pub async fn pending(&self, count: usize) -> Vec<Approval> {
        let pending = self.pending_json(count).await;
        serde_json::from_value(Value::Array(pending)).unwrap()
    }

    /// [`Client::pending`], as the API's JSON.
    pub async fn pending_json(&self, count: usize) -> Vec<Value> {
        let what = format!("{count} pending approvals");
        let listed = || async move {
            let seen = self.get("/approvals?status=pending", "bob").await.1;
            match seen.as_array().filter(|l| l.len() == count) {
                Some(list) => Ok(list.clone()),
                None => Err(seen),
            }
        };
        crate::wait::eventually(&what, Duration::from_secs(10), listed).await
    }

    /// The approvals with `status` (`all` for every one), as bob lists them.
    pub async fn approvals(&self, status: &str) -> Vec<Approval> {
        let (code, list) = self
            .get(&format!("/approvals?status={status}"), "bob")
            .await;
        assert_eq!(code, 200, "{list}");
        serde_json::from_value(list).unwrap()
    }

    /// Approval `id`, as bob sees it.
    pub async fn approval(&self, id: &str) -> Approval {
        let (code, approval) = self.get(&format!("/approvals/{id}"), "bob").await;
        assert_eq!(code, 200, "{approval}");
        serde_json::from_value(approval).unwrap()
    }

    /// `who` votes on approval `id`; the API's answer.
    pub async fn vote(&self, id: &str, who: &str, vote: Vote<'_>) -> Value {
        let (verb, body) = match vote {
            Vote::Approve => ("approve", None),
            Vote::Deny(reason) => ("deny", reason.map(|r| json!({"reason": r}))),
            Vote::BreakGlass(why) => ("approve", Some(json!({"break_glass": why}))),
        };
        self.post(&format!("/approvals/{id}/{verb}"), who, body)
            .await
            .1
    }

    /// GET `path` with `who`'s token: (status, JSON body or null).
    pub async fn get(&self, path: &str, who: &str) -> (u16, Value) {
        api(reqwest::Method::GET, self.endpoint(path), who, None).await
    }

    /// POST `body` to `path` with `who`'s token: (status, JSON body or null).
    pub async fn post(&self, path: &str, who: &str, body: Option<Value>) -> (u16, Value) {
        api(reqwest::Method::POST, self.endpoint(path), who, body).await
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The audit events of one call (as auditor audrey).
    pub async fn call_events(&self, call_id: &str) -> Vec<Value> {
        let (status, events) = self.get(&format!("/audit/calls/{call_id}"), "audrey").await;
        assert_eq!(status, 200, "{events}");
        let events = events.get("events").cloned().unwrap_or(events);
        events.as_array().unwrap().clone()
    }

    /// The kinds of the audit events of one call.
    pub async fn story(&self, call_id: &str) -> Vec<String> {
        self.call_events(call_id)
            .await
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The audit events matching `query` (`kind=call.completed&limit=1000`), as audrey.
    pub async fn audit_events(&self, query: &str) -> Vec<Value> {
        let (status, events) = self.get(&format!("/audit/events?{query}"), "audrey").await;
        assert_eq!(status, 200, "{events}");
        let events = events.get("events").cloned().unwrap_or(events);
        events.as_array().unwrap().clone()
    }

    /// `/audit/verify`, as audrey.
    pub async fn verify_report(&self) -> Value {
        self.get("/audit/verify", "audrey").await.1
    }
}

pub(super) async fn agent_call(url: String, key: String, tool: &str, arguments: Value) -> Reply {
    let name = format!("echo__{tool}");
    let mut meta = modern_meta();
    meta["progressToken"] = json!("p");
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":arguments,"_meta":meta}});
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", name.as_str()),
    ];
    let mut messages = post(&url, &headers, &body).await.messages();
    let message = messages.pop().expect("a response");
    Reply {
        message,
        progress: messages,
    }
}

/// The text of a tool result's first content block ("" if none).
pub fn text(response: &Value) -> &str {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

/// A request to `url` with `who`'s token: (status, JSON body or null).
pub async fn api(
    method: reqwest::Method,
    url: String,
    who: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = support::http().request(method, url).bearer_auth(token(who));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
