//! The stdio upstream against a small Python MCP server (stdlib only, legacy or modern era).

use countersign::config::{EraPreference, StdioUpstreamConfig, UpstreamConfig};
use countersign::protocol::Era;
use countersign::upstream::{ClientContext, Exchange, Upstream};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::wait;

/// Answers `server/discover` only when MODERN=1. Tools: `echo` (returns the request it got and
/// its pid), `slow` (sleeps `ms`), `progress` (two progress notifications), `die` (exits),
/// `wait` (never answers), `received` (every message received so far), `sample` (asks the
/// client for `sampling/createMessage` and returns the answer).
const SERVER: &str = r#"
import json, os, sys, threading, time
MODERN = os.environ.get("MODERN") == "1"
lock = threading.Lock()
received = []
answers = {}
def send(msg):
    with lock:
        sys.stdout.write(json.dumps(msg) + "\n"); sys.stdout.flush()
def result(req, res): send({"jsonrpc": "2.0", "id": req["id"], "result": res})
def text(req, t): result(req, {"content": [{"type": "text", "text": t}]})
def call(req):
    name = req["params"]["name"]; args = req["params"].get("arguments", {})
    if name == "echo": text(req, json.dumps({"request": req, "pid": os.getpid()}))
    elif name == "slow": time.sleep(args["ms"] / 1000); text(req, "slept")
    elif name == "progress":
        tok = req["params"]["_meta"]["progressToken"]
        for i in (1, 2):
            send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": tok, "progress": i, "total": 2}})
        text(req, "done")
    elif name == "die": sys.stderr.write("dying\n"); sys.stderr.flush(); os._exit(3)
    elif name == "wait": pass
    elif name == "received": text(req, json.dumps(received))
    elif name == "sample":
        answers["s1"] = threading.Event()
        send({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {"messages": []}})
        answers["s1"].wait(5); text(req, json.dumps(answers.get("s1-result")))
for line in sys.stdin:
    msg = json.loads(line); received.append(msg)
    m = msg.get("method")
    if m is None:
        answers[str(msg["id"]) + "-result"] = msg.get("result"); answers[str(msg["id"])].set()
    elif m == "server/discover":
        if MODERN: result(msg, {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {"modern": True}}})
        else: send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "Method not found"}})
    elif m == "initialize":
        result(msg, {"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "py", "version": "0"}})
    elif m == "notifications/initialized":
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    elif m == "tools/call": threading.Thread(target=call, args=(msg,), daemon=True).start()
"#;

const WAIT: Duration = Duration::from_secs(5);

struct Fixture {
    upstream: Upstream,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(modern: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("server.py");
    std::fs::write(&script, SERVER).unwrap();
    let env = BTreeMap::from([(
        "MODERN".to_owned(),
        if modern { "1" } else { "0" }.to_owned(),
    )]);
    let config = UpstreamConfig {
        name: "py".into(),
        prefix: None,
        http: None,
        stdio: Some(StdioUpstreamConfig {
            command: "python3".into(),
            args: vec!["-u".into(), script.to_string_lossy().into_owned()],
            env,
            cwd: Some(dir.path().to_owned()),
        }),
        era: EraPreference::Auto,
        timeout_secs: 10,
        pass_methods: Vec::new(),
    };
    let shutdown = CancellationToken::new();
    let upstream = tokio::time::timeout(
        WAIT,
        Upstream::start(&config, &Default::default(), shutdown.clone()),
    )
    .await
    .expect("start in time")
    .expect("start");
    Fixture {
        upstream,
        shutdown,
        _dir: dir,
    }
}

fn legacy_client() -> ClientContext {
    ClientContext {
        era: Era::Legacy,
        protocol_version: "2025-11-25".into(),
        capabilities: json!({"sampling": {}}),
        mirrored_headers: Vec::new(),
    }
}

fn call(id: Value, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

async fn next(exchange: &mut Exchange) -> Value {
    tokio::time::timeout(WAIT, exchange.next())
        .await
        .expect("message in time")
        .expect("a message")
}

/// The JSON a tool returned as its text content.
fn tool_json(response: &Value) -> Value {
    let text = response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {response}"));
    serde_json::from_str(text).unwrap()
}

async fn echo(upstream: &Upstream, id: Value) -> Value {
    let mut ex = upstream
        .request(call(id, "echo", json!({})), &legacy_client())
        .await
        .unwrap();
    next(&mut ex).await
}

#[tokio::test]
async fn legacy_handshake_and_capabilities() {
    let f = start(false).await;
    assert!(f.upstream.is_healthy());
    assert_eq!(
        f.upstream.capabilities(),
        json!({"tools": {"listChanged": true}})
    );

    let response = echo(&f.upstream, json!(1)).await;
    let got = tool_json(&response)["request"].clone();
    assert_eq!(response["id"], 1);
    assert!(
        got.pointer("/params/_meta").is_none(),
        "legacy upstream gets the request as it is: {got}"
    );

    let received = echo_received(&f.upstream).await;
    let methods: Vec<&str> = received
        .iter()
        .filter_map(|m| m["method"].as_str())
        .collect();
    assert_eq!(
        &methods[..3],
        ["server/discover", "initialize", "notifications/initialized"]
    );
    let init = &received[1]["params"];
    assert_eq!(init["protocolVersion"], "2025-11-25");
    assert_eq!(
        init["capabilities"]["elicitation"],
        json!({"form": {}, "url": {}})
    );
    assert_eq!(init["clientInfo"]["name"], "countersign");
}

async fn echo_received(upstream: &Upstream) -> Vec<Value> {
    let mut ex = upstream
        .request(call(json!("r"), "received", json!({})), &legacy_client())
        .await
        .unwrap();
    tool_json(&next(&mut ex).await).as_array().unwrap().clone()
}

#[tokio::test]
async fn modern_child_gets_meta_added_for_a_legacy_client() {
    let f = start(true).await;
    assert_eq!(
        f.upstream.capabilities(),
        json!({"tools": {"modern": true}})
    );
    let got = tool_json(&echo(&f.upstream, json!(1)).await)["request"].clone();
    let meta = &got["params"]["_meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert_eq!(
        meta["io.modelcontextprotocol/clientCapabilities"],
        json!({"sampling": {}})
    );
    let methods: Vec<Value> = echo_received(&f.upstream)
        .await
        .iter()
        .map(|m| m["method"].clone())
        .collect();
    assert!(
        !methods.contains(&json!("initialize")),
        "no initialize after a successful discover"
    );
}

#[tokio::test]
async fn concurrent_requests_with_the_same_client_id_are_kept_apart() {
    let f = start(false).await;
    let client = legacy_client();
    let mut slow = f
        .upstream
        .request(call(json!(7), "slow", json!({"ms": 300})), &client)
        .await
        .unwrap();
    let mut fast = f
        .upstream
        .request(call(json!(7), "echo", json!({})), &client)
        .await
        .unwrap();

    let fast_response = next(&mut fast).await;
    assert_eq!(fast_response["id"], 7);
    let slow_response = next(&mut slow).await;
    assert_eq!(slow_response["id"], 7);
    assert_eq!(slow_response["result"]["content"][0]["text"], "slept");

    let received = echo_received(&f.upstream).await;
    let ids: Vec<&Value> = received
        .iter()
        .filter(|m| m["method"] == "tools/call")
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1], "the upstream saw distinct ids: {ids:?}");
}

#[tokio::test]
async fn progress_goes_back_with_the_client_token() {
    let f = start(false).await;
    let mut request = call(json!("c"), "progress", json!({}));
    request["params"]["_meta"] = json!({"progressToken": "client-token"});
    let mut ex = f.upstream.request(request, &legacy_client()).await.unwrap();
    for expected in [1, 2] {
        let progress = next(&mut ex).await;
        assert_eq!(progress["method"], "notifications/progress");
        assert_eq!(progress["params"]["progressToken"], "client-token");
        assert_eq!(progress["params"]["progress"], expected);
    }
    assert_eq!(next(&mut ex).await["id"], "c");
    assert!(ex.next().await.is_none());
}

#[tokio::test]
async fn server_request_reaches_the_call_and_respond_answers_it() {
    let f = start(false).await;
    let mut ex = f
        .upstream
        .request(call(json!(1), "sample", json!({})), &legacy_client())
        .await
        .unwrap();
    let sampling = next(&mut ex).await;
    assert_eq!(sampling["method"], "sampling/createMessage");
    assert_eq!(
        sampling["id"], "s1",
        "server-to-client requests keep the upstream's id"
    );
    let answer = json!({"jsonrpc": "2.0", "id": "s1", "result": {"model": "m"}});
    f.upstream.respond(answer).await.unwrap();
    assert_eq!(tool_json(&next(&mut ex).await), json!({"model": "m"}));
}

#[tokio::test]
async fn dropping_an_exchange_sends_cancelled_with_the_upstream_id() {
    let f = start(false).await;
    let ex = f
        .upstream
        .request(call(json!(99), "wait", json!({})), &legacy_client())
        .await
        .unwrap();
    let upstream = &f.upstream;
    wait::eventually("the child to receive the wait call", WAIT, || async move {
        let received = echo_received(upstream).await;
        received
            .iter()
            .any(|m| m["params"]["name"] == "wait")
            .then_some(())
    })
    .await;
    drop(ex);

    let received = echo_received(&f.upstream).await;
    let wait_id = received
        .iter()
        .find(|m| m["params"]["name"] == "wait")
        .expect("wait call")["id"]
        .clone();
    assert_ne!(wait_id, json!(99));
    let cancelled = received
        .iter()
        .find(|m| m["method"] == "notifications/cancelled")
        .expect("a cancellation");
    assert_eq!(cancelled["params"]["requestId"], wait_id);
}

#[tokio::test]
async fn a_child_that_dies_fails_its_calls_and_is_restarted() {
    let f = start(false).await;
    let client = legacy_client();
    let first_pid = tool_json(&echo(&f.upstream, json!(1)).await)["pid"].clone();
    let mut pending = f
        .upstream
        .request(call(json!("p"), "wait", json!({})), &client)
        .await
        .unwrap();
    let mut dying = f
        .upstream
        .request(call(json!("d"), "die", json!({})), &client)
        .await
        .unwrap();

    for ex in [&mut pending, &mut dying] {
        let error = next(ex).await;
        assert_eq!(error["error"]["code"], -32000);
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("py exited"),
            "{error}"
        );
    }

    wait::eventually("the child to be restarted", WAIT, || {
        std::future::ready(f.upstream.is_healthy().then_some(()))
    })
    .await;
    let second_pid = tool_json(&echo(&f.upstream, json!(2)).await)["pid"].clone();
    assert_ne!(first_pid, second_pid);
}

#[tokio::test]
async fn a_missing_command_starts_unhealthy_and_refuses_requests() {
    let config = UpstreamConfig {
        name: "ghost".into(),
        prefix: None,
        http: None,
        stdio: Some(StdioUpstreamConfig {
            command: "/nonexistent/countersign-test-server".into(),
            args: vec![],
            env: BTreeMap::new(),
            cwd: None,
        }),
        era: EraPreference::Auto,
        timeout_secs: 10,
        pass_methods: Vec::new(),
    };
    let shutdown = CancellationToken::new();
    let upstream = Upstream::start(&config, &Default::default(), shutdown.clone())
        .await
        .unwrap();
    assert!(!upstream.is_healthy());
    let err = upstream
        .request(call(json!(1), "echo", json!({})), &legacy_client())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ghost is unavailable"), "{err}");
    shutdown.cancel();
}
