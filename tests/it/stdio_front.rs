//! `countersign stdio`: the gateway as a stdio MCP server, spawned like any tool server.

use crate::app::{Agent, TestApp};
use crate::support;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// `countersign stdio` over a plain proxy whose one agent, `stdio-agent`, has key `k1`.
struct StdioGateway {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its configuration file.
    _app: TestApp,
}

impl StdioGateway {
    async fn spawn(api_key: Option<&str>) -> Self {
        let app = TestApp::builder()
            .plain_proxy()
            .agents(vec![Agent::new("stdio-agent", "k1")])
            .spawn_stopped()
            .await;
        let mut command = Command::from(app.cli(&["stdio"]));
        command.env_remove("COUNTERSIGN_API_KEY");
        if let Some(key) = api_key {
            command.env("COUNTERSIGN_API_KEY", key);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        StdioGateway {
            child,
            stdin,
            lines,
            _app: app,
        }
    }

    async fn send(&mut self, message: Value) {
        self.send_line(&message.to_string()).await;
    }

    /// Sends one line of raw JSON text (numbers exactly as written).
    async fn send_line(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
    }

    /// The next message on stdout that is `wanted` (within 20 s and 100 lines).
    async fn next_where(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let lines = &mut self.lines;
        let found = async {
            for _ in 0..100 {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("gateway still running");
                let message: Value = serde_json::from_str(&line).unwrap();
                if wanted(&message) {
                    return message;
                }
            }
            panic!("no such message in 100 lines");
        };
        tokio::time::timeout(Duration::from_secs(20), found)
            .await
            .expect("the message in time")
    }

    /// The next message on stdout that has the given id (skipping notifications).
    async fn response(&mut self, id: i64) -> (Value, Vec<Value>) {
        let mut notifications = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .expect("gateway answers in time")
                .unwrap()
                .expect("gateway still running");
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == id {
                return (message, notifications);
            }
            notifications.push(message);
        }
    }
}

#[tokio::test]
async fn a_legacy_client_lists_and_calls_tools_with_progress_over_stdio() {
    let mut gw = StdioGateway::spawn(Some("k1")).await;
    gw.send(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}})).await;
    let (init, _) = gw.response(1).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "countersign");
    gw.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
        .await;
    gw.send(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .await;
    let (list, _) = gw.response(2).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"echo__echo") && names.contains(&"echo__slow_count"),
        "{names:?}"
    );
    gw.send(json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo__slow_count","arguments":{"n":2},"_meta":{"progressToken":"p-1"}}})).await;
    let (done, notes) = gw.response(3).await;
    assert_eq!(done["result"]["content"][0]["text"], "counted to 2");
    let progress: Vec<&Value> = notes
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 2, "{notes:?}");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "p-1"),
        "the client's own token comes back"
    );
}

#[tokio::test]
async fn a_cancelled_request_gets_no_answer_and_the_next_one_does() {
    let mut gw = StdioGateway::spawn(Some("k1")).await;
    gw.send(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{}}})).await;
    gw.response(1).await;
    gw.send(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo__slow_count","arguments":{"n":30},"_meta":{"progressToken":"c-2"}}})).await;
    // Cancelled while it runs upstream: once its first progress notification is here.
    gw.next_where(|m| m["method"] == "notifications/progress")
        .await;
    gw.send(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2,"reason":"changed my mind"}})).await;
    gw.send(json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo__echo","arguments":{"message":"after"}}})).await;
    let (next, seen) = gw.response(3).await;
    assert_eq!(next["result"]["content"][0]["text"], "after");
    assert!(
        seen.iter().all(|m| m["id"] != 2),
        "no answer to the cancelled request: {seen:?}"
    );
}

#[tokio::test]
async fn a_modern_client_discovers_and_calls_over_stdio() {
    let mut gw = StdioGateway::spawn(Some("k1")).await;
    let meta = support::modern_meta();
    gw.send(json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":meta}}))
        .await;
    let (discover, _) = gw.response(1).await;
    assert_eq!(
        discover["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );
    gw.send(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo__add","arguments":{"a":2,"b":40},"_meta":meta}})).await;
    assert_eq!(gw.response(2).await.0["result"]["content"][0]["text"], "42");
    gw.send(json!({"jsonrpc":"2.0","id":3,"method":"ping","params":{"_meta":meta}}))
        .await;
    assert_eq!(
        gw.response(3).await.0["error"]["code"],
        -32601,
        "ping is gone in 2026-07-28"
    );
}

#[tokio::test]
async fn stdio_mode_refuses_to_start_without_a_valid_key() {
    let gw = StdioGateway::spawn(Some("wrong")).await;
    let out = tokio::time::timeout(Duration::from_secs(20), gw.child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn numbers_pass_exactly_or_are_refused_over_stdio() {
    let mut gw = StdioGateway::spawn(Some("k1")).await;
    gw.send(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{}}})).await;
    gw.response(1).await;
    gw.send_line(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo__add","arguments":{"a":123456789012345678901234567890,"b":0}}}"#).await;
    let (refused, _) = gw.response(2).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert_eq!(
        refused["error"]["message"],
        "arguments/a: 123456789012345678901234567890 is too large to bind exactly (integers must fit in 64 bits)"
    );
    gw.send_line(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo__add","arguments":{"a":18446744073709551615,"b":-1}}}"#).await;
    let (sum, _) = gw.response(3).await;
    assert_eq!(
        sum["result"]["content"][0]["text"], "18446744073709551614",
        "{sum}"
    );
}
