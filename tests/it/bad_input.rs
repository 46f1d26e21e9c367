//! Bad input gets a clear error, and the gateway keeps serving other calls.

use crate::app::{Agent, Server, TestApp, TestAppBuilder, Upstream};
use crate::support::{initialize, modern_meta, post, post_raw};
use serde_json::{Value, json};

const KEY: &str = "test-key";

/// A plain proxy over the echo server, for agent `tester`, taking bodies up to 64 KiB.
fn proxy() -> TestAppBuilder {
    TestApp::builder()
        .plain_proxy()
        .agents(vec![Agent::new("tester", KEY)])
        .server(Server {
            max_body_bytes: Some(65536),
            ..Server::default()
        })
}

async fn gateway() -> TestApp {
    proxy().spawn().await
}

const AUTH: (&str, &str) = ("authorization", "Bearer test-key");

fn modern_headers<'a>(method: &'a str, name: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        AUTH,
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
        ("mcp-name", name),
    ]
}

fn modern_call(name: &str, arguments: Value) -> Value {
    json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":name,"arguments":arguments,"_meta":modern_meta()}})
}

/// A good modern call still works: the gateway survived whatever came before.
async fn assert_still_serving(gw: &TestApp) {
    let r = post(
        &gw.url,
        &modern_headers("tools/call", "echo__echo"),
        &modern_call("echo__echo", json!({"message":"still here"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let last = r.messages().pop().unwrap();
    assert_eq!(last["result"]["content"][0]["text"], "still here", "{last}");
}

#[tokio::test]
async fn malformed_json_is_a_parse_error() {
    let gw = gateway().await;
    let r = post_raw(&gw.url, &[AUTH], "{\"jsonrpc\": \"2.0\", ").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32700);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn invalid_json_rpc_is_an_invalid_request() {
    let gw = gateway().await;
    for body in [
        json!({"id":1,"method":"ping"}),
        json!({"jsonrpc":"2.0","id":null,"method":"ping"}),
        json!([]),
    ] {
        let r = post(&gw.url, &[AUTH], &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json()["error"]["code"], -32600, "{body}");
    }
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn an_unknown_tool_is_invalid_params() {
    let gw = gateway().await;
    let r = post(
        &gw.url,
        &modern_headers("tools/call", "echo__nope"),
        &modern_call("echo__nope", json!({})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["error"]["code"], -32602);
    assert_eq!(r.json()["error"]["message"], "Unknown tool: echo__nope");
    // A tool named without its namespace gets the name to use.
    let r = post(
        &gw.url,
        &modern_headers("tools/call", "echo"),
        &modern_call("echo", json!({})),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602);
    assert_eq!(
        r.json()["error"]["message"],
        "Unknown tool: echo; did you mean echo__echo?"
    );
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn arguments_that_fail_the_schema_never_reach_the_upstream() {
    let gw = gateway().await;
    let r = post(
        &gw.url,
        &modern_headers("tools/call", "echo__add"),
        &modern_call("echo__add", json!({"a":"one"})),
    )
    .await;
    let result = &r.json()["result"];
    assert_eq!(result["isError"], true, "{}", r.text);
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Invalid arguments for tool echo__add"),
        "{text}"
    );
    assert!(
        text.contains("/a") && text.contains("\"b\" is a required property"),
        "{text}"
    );
    let r = post(
        &gw.url,
        &modern_headers("tools/call", "echo__add"),
        &modern_call("echo__add", json!({"a":1,"b":2})),
    )
    .await;
    assert_eq!(r.json()["result"]["content"][0]["text"], "3");
}

#[tokio::test]
async fn arguments_that_are_not_an_object_are_refused() {
    let gw = gateway().await;
    let r = post(
        &gw.url,
        &modern_headers("tools/call", "echo__echo"),
        &modern_call("echo__echo", json!([1])),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602);
}

#[tokio::test]
async fn an_oversize_body_is_413() {
    let gw = gateway().await;
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    );
    let r = post_raw(&gw.url, &[AUTH], big).await;
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536 bytes")
    );
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn modern_headers_must_match_the_body() {
    let gw = gateway().await;
    let call = modern_call("echo__echo", json!({"message":"x"}));
    let cases: Vec<(Vec<(&str, &str)>, i64)> = vec![
        (modern_headers("tools/call", "echo__add"), -32020),
        (modern_headers("tools/list", "echo__echo"), -32020),
        (
            vec![
                AUTH,
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo__echo"),
            ],
            -32020,
        ),
        (
            vec![
                AUTH,
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-name", "echo__echo"),
            ],
            -32020,
        ),
    ];
    for (headers, code) in cases {
        let r = post(&gw.url, &headers, &call).await;
        assert_eq!(r.status, 400, "{headers:?}: {}", r.text);
        assert_eq!(r.json()["error"]["code"], code, "{headers:?}");
    }
    let mut old = call.clone();
    old["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2027-01-01");
    let r = post(&gw.url, &modern_headers("tools/call", "echo__echo"), &old).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (400, Some(-32020)),
        "header and body disagree"
    );
    let headers = [
        AUTH,
        ("mcp-protocol-version", "2027-01-01"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo__echo"),
    ];
    let r = post(&gw.url, &headers, &old).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (400, Some(-32022))
    );
    assert_eq!(
        r.json()["error"]["data"]["supported"],
        json!(["2026-07-28"])
    );
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_with_a_challenge() {
    let gw = gateway().await;
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let r = post(&gw.url, &[], &ping).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"countersign\"")
    );
    let r = post(&gw.url, &[("authorization", "Bearer wrong")], &ping).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn a_foreign_origin_is_403() {
    let gw = gateway().await;
    let r = post(
        &gw.url,
        &[AUTH, ("origin", "https://evil.example")],
        &json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn an_unknown_session_is_404_and_sessions_work_until_deleted() {
    let gw = gateway().await;
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let r = post(
        &gw.url,
        &[AUTH, ("mcp-session-id", "no-such-session")],
        &ping,
    )
    .await;
    assert_eq!(r.status, 404);
    let sid = initialize(&gw.url, &[AUTH]).await;
    let r = post(&gw.url, &[AUTH, ("mcp-session-id", &sid)], &ping).await;
    assert_eq!((r.status, r.json()["result"].clone()), (200, json!({})));
    let deleted = crate::support::http()
        .delete(&gw.url)
        .header(AUTH.0, AUTH.1)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let r = post(&gw.url, &[AUTH, ("mcp-session-id", &sid)], &ping).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_request_without_session_or_modern_meta_is_400() {
    let gw = gateway().await;
    let r = post(
        &gw.url,
        &[AUTH],
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("initialize")
    );
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_a_clear_error_and_others_keep_working() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = Upstream::Http {
        url: format!("http://{closed}/mcp"),
    };
    let gw = proxy().also_upstream("down", down).spawn().await;
    let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"down__anything","arguments":{},"_meta":modern_meta()}});
    let r = post(
        &gw.url,
        &modern_headers("tools/call", "down__anything"),
        &call,
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602, "{}", r.text);
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn an_upstream_crashing_mid_call_fails_that_call_only() {
    let dir = tempfile::tempdir().unwrap();
    let crasher = dir.path().join("crasher.py");
    std::fs::write(&crasher, CRASHER).unwrap();
    let crash = Upstream::Python { script: crasher };
    let gw = proxy().also_upstream("crash", crash).spawn().await;
    let call = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"crash__boom","arguments":{},"_meta":modern_meta()}});
    let r = post(&gw.url, &modern_headers("tools/call", "crash__boom"), &call).await;
    let last = r.messages().pop().unwrap();
    assert_eq!(last["id"], 4);
    assert_eq!(last["error"]["code"], -32000, "{last}");
    assert!(
        last["error"]["message"].as_str().unwrap().contains("crash"),
        "{last}"
    );
    assert_still_serving(&gw).await;
}

/// A stdio MCP server whose only tool kills the process.
const CRASHER: &str = r#"
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m or "method" not in m:
        continue
    if m["method"] == "tools/call":
        os._exit(3)
    if m["method"] == "server/discover":
        r = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}, "serverInfo": {"name": "crasher", "version": "0"}}
    elif m["method"] == "tools/list":
        r = {"tools": [{"name": "boom", "inputSchema": {"type": "object"}}]}
    else:
        r = {}
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
"#;
