//! A tiny, fast MCP server with one tool, `echo`: the upstream of `examples/bench.rs`, and a
//! handy peer for trying the gateway by hand.
//!
//! ```text
//! cargo run --release --example echo_server -- --listen 127.0.0.1:8940   # Streamable HTTP at /mcp
//! cargo run --release --example echo_server -- --stdio                   # newline-delimited JSON
//! ```
//!
//! Both protocol eras are served on the same endpoint:
//! - modern (2026-07-28, stateless): `server/discover`, then requests carrying `_meta`;
//! - legacy: `initialize` (answered with the client's version when it is one we know, and a
//!   freshly minted `Mcp-Session-Id`), `notifications/initialized` (202), `ping`.
//!
//! `tools/list` and `tools/call` work in both. Answers are always `application/json` (no SSE);
//! GET (the legacy standalone stream) is 405, so a client knows there is none.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};

const MODERN_VERSION: &str = "2026-07-28";
const LEGACY_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--stdio"] => serve_stdio(),
        ["--listen", addr] => serve_http(addr.parse()?),
        _ => anyhow::bail!("usage: echo_server --listen 127.0.0.1:PORT | --stdio"),
    }
}

// === the protocol, shared by both transports ===

/// What one incoming message asks for.
enum Answer {
    /// A JSON-RPC response to send back.
    Reply(Value),
    /// A notification or a response from the client: nothing to say (HTTP 202).
    Nothing,
    /// An `initialize` answer, which also opens a session.
    Initialized(Value),
}

fn handle(message: &Value) -> Answer {
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return Answer::Nothing; // a client's response to us: we never ask anything
    };
    let Some(id) = message.get("id").cloned() else {
        return Answer::Nothing; // notifications/initialized, notifications/cancelled, ...
    };
    let params = message.get("params");
    let modern = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        == Some(MODERN_VERSION);
    let result = match method {
        "initialize" => {
            let asked = params
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str);
            let version = asked
                .filter(|v| LEGACY_VERSIONS.contains(v))
                .unwrap_or(LEGACY_VERSIONS[LEGACY_VERSIONS.len() - 1]);
            return Answer::Initialized(ok(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {}},
                    "serverInfo": server_info(),
                }),
            ));
        }
        "server/discover" => json!({
            "supportedVersions": [MODERN_VERSION],
            "capabilities": {"tools": {}},
            "serverInfo": server_info(),
            "resultType": "complete",
        }),
        "ping" => json!({}),
        "tools/list" => json!({"tools": [echo_tool()]}),
        "tools/call" => match call(params) {
            Ok(result) => result,
            Err(why) => return Answer::Reply(error(id, -32602, why)),
        },
        other => return Answer::Reply(error(id, -32601, format!("method not found: {other}"))),
    };
    let mut result = result;
    if modern && method != "server/discover" {
        result["resultType"] = json!("complete");
    }
    Answer::Reply(ok(id, result))
}

fn call(params: Option<&Value>) -> Result<Value, String> {
    let name = params.and_then(|p| p.get("name")).and_then(Value::as_str);
    if name != Some("echo") {
        return Err(format!("unknown tool: {}", name.unwrap_or("(none)")));
    }
    let Some(message) = params
        .and_then(|p| p.pointer("/arguments/message"))
        .and_then(Value::as_str)
    else {
        return Ok(json!({
            "content": [{"type": "text", "text": "arguments.message must be a string"}],
            "isError": true,
        }));
    };
    Ok(json!({"content": [{"type": "text", "text": message}], "isError": false}))
}

fn echo_tool() -> Value {
    json!({
        "name": "echo",
        "description": "Returns its message unchanged.",
        "inputSchema": {
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        },
    })
}

fn server_info() -> Value {
    json!({"name": "echo-server", "version": "0.1.0"})
}

fn ok(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

// === Streamable HTTP ===

fn serve_http(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let app = Router::new().route(
            "/mcp",
            post(post_mcp)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(|| async { StatusCode::OK }),
        );
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

async fn post_mcp(body: Bytes) -> Response {
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(e) => return json_response(&error(Value::Null, -32700, format!("parse error: {e}"))),
    };
    match handle(&message) {
        Answer::Reply(reply) => json_response(&reply),
        Answer::Nothing => StatusCode::ACCEPTED.into_response(),
        Answer::Initialized(reply) => {
            let id = format!(
                "echo-{}-{}",
                std::process::id(),
                NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
            );
            let mut response = json_response(&reply);
            response.headers_mut().insert(
                "mcp-session-id",
                HeaderValue::from_str(&id).expect("ASCII id"),
            );
            response
        }
    }
}

fn json_response(body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

// === stdio ===

fn serve_stdio() -> anyhow::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(message) => match handle(&message) {
                Answer::Reply(reply) | Answer::Initialized(reply) => reply,
                Answer::Nothing => continue,
            },
            Err(e) => error(Value::Null, -32700, format!("parse error: {e}")),
        };
        serde_json::to_writer(&mut stdout, &reply)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
    }
    Ok(())
}
