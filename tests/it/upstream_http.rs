//! The HTTP upstream against two small axum servers: a modern (stateless) one and a legacy
//! session server that answers with SSE.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use countersign::config::{EraPreference, HttpUpstreamConfig, UpstreamConfig};
use countersign::protocol::Era;
use countersign::upstream::{ClientContext, Exchange, Upstream};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;

use crate::wait;

const WAIT: Duration = Duration::from_secs(5);

/// What a test server saw and the knobs a test turns.
struct Seen {
    /// Every POST: (headers, body).
    posts: Mutex<Vec<(HeaderMap, Value)>>,
    sessions: Mutex<HashSet<String>>,
    initializes: AtomicUsize,
    /// Set when a streamed response was dropped by the client.
    stream_closed: Arc<AtomicBool>,
    /// Answers to server-to-client requests, by id.
    answers: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Standalone GET streams opened.
    gets: AtomicUsize,
    /// What the test pushes down the standalone GET streams.
    push: broadcast::Sender<Value>,
}

impl Seen {
    fn new() -> Shared {
        Arc::new(Seen {
            posts: Mutex::default(),
            sessions: Mutex::default(),
            initializes: AtomicUsize::default(),
            stream_closed: Arc::default(),
            answers: Mutex::default(),
            gets: AtomicUsize::default(),
            push: broadcast::channel(8).0,
        })
    }

    fn posts_of(&self, method: &str) -> Vec<(HeaderMap, Value)> {
        let posts = self.posts.lock().unwrap();
        posts
            .iter()
            .filter(|(_, b)| b["method"] == method)
            .cloned()
            .collect()
    }
}

type Shared = Arc<Seen>;

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn frame(msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}

fn sse(frames: BoxStream<'static, Bytes>) -> Response {
    let body = Body::from_stream(frames.map(Ok::<_, Infallible>));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// Sets the flag when dropped, i.e. when the client closed the stream holding it.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A stream that sends `frames` and then stays open until the client leaves.
fn open_ended(frames: Vec<Bytes>, seen: &Seen) -> BoxStream<'static, Bytes> {
    let flag = DropFlag(seen.stream_closed.clone());
    stream::iter(frames)
        .chain(stream::pending())
        .map(move |b| {
            let _ = &flag;
            b
        })
        .boxed()
}

// === the modern server ===

async fn modern(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let msg: Value = serde_json::from_slice(&body).unwrap();
    seen.posts.lock().unwrap().push((headers, msg.clone()));
    let id = &msg["id"];
    match (
        msg["method"].as_str().unwrap(),
        msg["params"]["name"].as_str(),
    ) {
        ("server/discover", _) => json_response(
            StatusCode::OK,
            result(
                id,
                json!({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {"m": 1}}}),
            ),
        ),
        ("tools/call", Some("add")) => {
            json_response(StatusCode::OK, result(id, json!({"content": [], "sum": 3})))
        }
        ("tools/call", Some("progress")) => {
            let token = &msg["params"]["_meta"]["progressToken"];
            let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                  "params": {"progressToken": token, "progress": 1}});
            sse(stream::iter([frame(&progress), frame(&result(id, json!({"done": true})))]).boxed())
        }
        ("tools/call", Some("hang")) => {
            let log = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}});
            sse(open_ended(vec![frame(&log)], &seen))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
        ),
    }
}

// === the legacy session server ===

async fn legacy(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let msg: Value = serde_json::from_slice(&body).unwrap();
    seen.posts
        .lock()
        .unwrap()
        .push((headers.clone(), msg.clone()));
    let method = msg["method"].as_str();
    if method == Some("initialize") {
        return legacy_initialize(&seen, &msg);
    }
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if method == Some("server/discover") && session.is_empty() {
        // What the TypeScript SDK answers: 400 with an id-less error.
        let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: Server not initialized"}});
        return json_response(StatusCode::BAD_REQUEST, body);
    }
    if !seen.sessions.lock().unwrap().contains(session) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(method) = method else {
        // A response to one of our requests.
        if let Some(tx) = seen
            .answers
            .lock()
            .unwrap()
            .remove(msg["id"].as_str().unwrap())
        {
            let _ = tx.send(msg["result"].clone());
        }
        return StatusCode::ACCEPTED.into_response();
    };
    if method.starts_with("notifications/") {
        return StatusCode::ACCEPTED.into_response();
    }
    legacy_call(&seen, &msg, &headers)
}

fn legacy_initialize(seen: &Seen, msg: &Value) -> Response {
    let n = seen.initializes.fetch_add(1, Ordering::SeqCst) + 1;
    let session = format!("session-{n}");
    seen.sessions.lock().unwrap().insert(session.clone());
    let answer = result(
        &msg["id"],
        json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {"legacy": true}},
                                          "serverInfo": {"name": "legacy", "version": "0"}}),
    );
    let mut response = sse(stream::iter([frame(&answer)]).boxed());
    response
        .headers_mut()
        .insert("mcp-session-id", session.parse().unwrap());
    response
}

fn legacy_call(seen: &Seen, msg: &Value, headers: &HeaderMap) -> Response {
    let id = msg["id"].clone();
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    match msg["params"]["name"].as_str() {
        Some("echo") => {
            let priming = Bytes::from_static(b"id: 1\ndata:\n\n");
            let log = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}});
            let answer = result(
                &id,
                json!({"session": header("mcp-session-id"), "version": header("mcp-protocol-version"),
                                            "upstream_id": id}),
            );
            sse(stream::iter([
                priming,
                Bytes::from_static(b": keep-alive\n\n"),
                frame(&log),
                frame(&answer),
            ])
            .boxed())
        }
        Some("ask") => {
            let (tx, rx) = oneshot::channel();
            seen.answers.lock().unwrap().insert("e1".into(), tx);
            let ask = json!({"jsonrpc": "2.0", "id": "e1", "method": "elicitation/create", "params": {"message": "ok?"}});
            let answer =
                stream::once(
                    async move { frame(&result(&id, json!({"answer": rx.await.unwrap()}))) },
                );
            sse(stream::iter([frame(&ask)]).chain(answer).boxed())
        }
        Some("wait") => sse(open_ended(vec![], seen)),
        _ => json_response(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "no"}}),
        ),
    }
}

/// The standalone stream: whatever the test pushes.
async fn legacy_get(State(seen): State<Shared>, headers: HeaderMap) -> Response {
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !seen.sessions.lock().unwrap().contains(session) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let pushed = BroadcastStream::new(seen.push.subscribe())
        .filter_map(|m| async move { m.ok().map(|m| frame(&m)) });
    seen.gets.fetch_add(1, Ordering::SeqCst);
    sse(pushed.boxed())
}

// === harness ===

async fn serve(router: Router, addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn modern_app(seen: Shared) -> Router {
    Router::new().route("/mcp", post(modern)).with_state(seen)
}

fn legacy_app(seen: Shared) -> Router {
    Router::new()
        .route("/mcp", post(legacy).get(legacy_get))
        .with_state(seen)
}

fn config(addr: SocketAddr) -> UpstreamConfig {
    UpstreamConfig {
        name: "web".into(),
        prefix: None,
        http: Some(HttpUpstreamConfig {
            url: format!("http://{addr}/mcp"),
            headers: BTreeMap::from([("x-api-key".to_owned(), "secret".into())]),
        }),
        stdio: None,
        era: EraPreference::Auto,
        timeout_secs: 10,
        pass_methods: Vec::new(),
    }
}

async fn start(addr: SocketAddr, shutdown: &CancellationToken) -> Upstream {
    let tls = Default::default();
    tokio::time::timeout(WAIT, Upstream::start(&config(addr), &tls, shutdown.clone()))
        .await
        .unwrap()
        .unwrap()
}

fn client(era: Era) -> ClientContext {
    let version = match era {
        Era::Legacy => "2025-11-25",
        Era::Modern => "2026-07-28",
    };
    ClientContext {
        era,
        protocol_version: version.into(),
        capabilities: json!({"elicitation": {}}),
        mirrored_headers: Vec::new(),
    }
}

fn call(id: Value, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
}

async fn next(exchange: &mut Exchange) -> Value {
    tokio::time::timeout(WAIT, exchange.next())
        .await
        .expect("message in time")
        .expect("a message")
}

/// Waits (at most `WAIT`) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    wait::eventually(what, WAIT, || std::future::ready(check().then_some(()))).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header"))
}

// === modern ===

#[tokio::test]
async fn modern_upstream_gets_stateless_posts_with_headers_and_meta() {
    let seen = Seen::new();
    let shutdown = CancellationToken::new();
    let upstream = modern_upstream(&seen, &shutdown).await;
    assert!(upstream.is_healthy());
    assert_eq!(upstream.capabilities(), json!({"tools": {"m": 1}}));

    let mut ex = upstream
        .request(call(json!("a"), "add"), &client(Era::Legacy))
        .await
        .unwrap();
    let response = next(&mut ex).await;
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "id": "a", "result": {"content": [], "sum": 3}})
    );
    assert!(ex.next().await.is_none());

    let (headers, body) = seen.posts_of("tools/call").pop().unwrap();
    assert_eq!(header(&headers, "mcp-protocol-version"), "2026-07-28");
    assert_eq!(header(&headers, "mcp-method"), "tools/call");
    assert_eq!(header(&headers, "mcp-name"), "add");
    assert_eq!(header(&headers, "x-api-key"), "secret");
    assert!(header(&headers, "accept").contains("text/event-stream"));
    assert!(headers.get("mcp-session-id").is_none());
    assert_ne!(body["id"], "a", "the upstream gets its own id");
    assert_eq!(
        body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert_eq!(
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"],
        json!({"elicitation": {}})
    );
    assert!(
        seen.posts_of("initialize").len() <= 1,
        "a legacy client's first call tries one legacy session; a modern-only server refuses it and later calls are bridged"
    );
    let mut again = upstream
        .request(call(json!("b"), "add"), &client(Era::Legacy))
        .await
        .unwrap();
    next(&mut again).await;
    assert!(
        seen.posts_of("initialize").len() <= 1,
        "the refusal is remembered"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn modern_sse_progress_maps_back_and_error_bodies_pass_through() {
    let seen = Seen::new();
    let shutdown = CancellationToken::new();
    let upstream = modern_upstream(&seen, &shutdown).await;
    let mut request = call(json!(5), "progress");
    request["params"]["_meta"] = json!({"progressToken": "mine"});
    let mut ex = upstream
        .request(request, &client(Era::Modern))
        .await
        .unwrap();
    let progress = next(&mut ex).await;
    assert_eq!(progress["params"]["progressToken"], "mine");
    assert_eq!(
        next(&mut ex).await,
        json!({"jsonrpc": "2.0", "id": 5, "result": {"done": true}})
    );
    let sent = &seen.posts_of("tools/call")[0].1;
    assert_ne!(sent["params"]["_meta"]["progressToken"], "mine");

    let unknown = json!({"jsonrpc": "2.0", "id": 6, "method": "nope/nope", "params": {}});
    let error = next(
        &mut upstream
            .request(unknown, &client(Era::Modern))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error["id"], 6);
    assert_eq!(error["error"]["code"], -32601);
    shutdown.cancel();
}

#[tokio::test]
async fn dropping_a_modern_exchange_closes_the_stream() {
    let seen = Seen::new();
    let shutdown = CancellationToken::new();
    let upstream = modern_upstream(&seen, &shutdown).await;
    let mut ex = upstream
        .request(call(json!(1), "hang"), &client(Era::Modern))
        .await
        .unwrap();
    assert_eq!(next(&mut ex).await["method"], "notifications/message");
    assert!(!seen.stream_closed.load(Ordering::SeqCst));
    drop(ex);
    eventually("the stream to close", || {
        seen.stream_closed.load(Ordering::SeqCst)
    })
    .await;
    assert!(
        seen.posts_of("notifications/cancelled").is_empty(),
        "modern cancels by closing only"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn an_upstream_down_at_start_is_unhealthy_then_recovers() {
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let shutdown = CancellationToken::new();
    let upstream = start(addr, &shutdown).await;
    assert!(!upstream.is_healthy());
    let err = upstream
        .request(call(json!(1), "add"), &client(Era::Modern))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("web is unavailable"), "{err}");

    let seen = Seen::new();
    serve(modern_app(seen.clone()), addr).await;
    eventually("the background probe", || upstream.is_healthy()).await;
    let response = next(
        &mut upstream
            .request(call(json!(2), "add"), &client(Era::Modern))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(response["result"]["sum"], 3);
    shutdown.cancel();
}

// === legacy ===

/// An upstream client of a fresh modern (2026-07-28) test server.
async fn modern_upstream(seen: &Shared, shutdown: &CancellationToken) -> Upstream {
    start(
        serve(modern_app(seen.clone()), "127.0.0.1:0".parse().unwrap()).await,
        shutdown,
    )
    .await
}

async fn legacy_upstream(seen: &Shared, shutdown: &CancellationToken) -> Upstream {
    start(
        serve(legacy_app(seen.clone()), "127.0.0.1:0".parse().unwrap()).await,
        shutdown,
    )
    .await
}

#[tokio::test]
async fn legacy_upstream_gets_a_session_and_sse_is_parsed() {
    let seen = Seen::new();
    let shutdown = CancellationToken::new();
    let upstream = legacy_upstream(&seen, &shutdown).await;
    assert!(upstream.is_healthy());
    assert_eq!(upstream.capabilities(), json!({"tools": {"legacy": true}}));
    let init = &seen.posts_of("initialize")[0].1;
    assert_eq!(init["params"]["protocolVersion"], "2025-11-25");
    let (initialized, _) = &seen.posts_of("notifications/initialized")[0];
    assert_eq!(header(initialized, "mcp-session-id"), "session-1");

    // A modern client is bridged into the legacy session.
    let mut ex = upstream
        .request(call(json!("x"), "echo"), &client(Era::Modern))
        .await
        .unwrap();
    assert_eq!(next(&mut ex).await["method"], "notifications/message");
    let response = next(&mut ex).await;
    assert_eq!(response["id"], "x");
    assert_eq!(response["result"]["session"], "session-1");
    assert_eq!(
        response["result"]["version"], "2025-06-18",
        "the negotiated version"
    );
    assert!(response["result"]["upstream_id"].is_i64());
    assert!(ex.next().await.is_none());
    shutdown.cancel();
}

#[tokio::test]
async fn an_expired_session_is_initialized_again_and_the_request_retried() {
    let seen = Seen::new();
    let shutdown = CancellationToken::new();
    let upstream = legacy_upstream(&seen, &shutdown).await;
    seen.sessions.lock().unwrap().clear();

    let mut ex = upstream
        .request(call(json!(1), "echo"), &client(Era::Legacy))
        .await
        .unwrap();
    assert_eq!(next(&mut ex).await["method"], "notifications/message");
    let response = next(&mut ex).await;
    assert_eq!(response["result"]["session"], "session-2");
    assert_eq!(seen.initializes.load(Ordering::SeqCst), 2);
    shutdown.cancel();
}

#[tokio::test]
async fn server_requests_on_the_stream_are_answered_through_respond() {
    let seen = Seen::new();
    let shutdown = CancellationToken::new();
    let upstream = legacy_upstream(&seen, &shutdown).await;
    let mut ex = upstream
        .request(call(json!(1), "ask"), &client(Era::Legacy))
        .await
        .unwrap();
    let ask = next(&mut ex).await;
    assert_eq!(ask["method"], "elicitation/create");
    assert_eq!(ask["id"], "e1");
    upstream
        .respond(json!({"jsonrpc": "2.0", "id": "e1", "result": {"action": "accept"}}))
        .await
        .unwrap();
    let response = next(&mut ex).await;
    assert_eq!(response["result"]["answer"], json!({"action": "accept"}));
    shutdown.cancel();
}

#[tokio::test]
async fn dropping_a_legacy_exchange_posts_cancelled_with_the_upstream_id() {
    let seen = Seen::new();
    let shutdown = CancellationToken::new();
    let upstream = legacy_upstream(&seen, &shutdown).await;
    let ex = upstream
        .request(call(json!("w"), "wait"), &client(Era::Legacy))
        .await
        .unwrap();
    drop(ex);
    eventually("a cancellation", || {
        !seen.posts_of("notifications/cancelled").is_empty()
    })
    .await;
    let upstream_id = seen.posts_of("tools/call")[0].1["id"].clone();
    let (headers, cancelled) = &seen.posts_of("notifications/cancelled")[0];
    assert_eq!(cancelled["params"]["requestId"], upstream_id);
    assert_eq!(header(headers, "mcp-session-id"), "session-1");
    shutdown.cancel();
}

#[tokio::test]
async fn the_standalone_get_stream_feeds_events() {
    let seen = Seen::new();
    let shutdown = CancellationToken::new();
    let upstream = legacy_upstream(&seen, &shutdown).await;
    let mut events = upstream.events();
    eventually("the GET stream", || seen.gets.load(Ordering::SeqCst) == 1).await;
    let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
    seen.push.send(changed.clone()).unwrap();
    let event = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .unwrap();
    assert_eq!(event, changed);
    let sampling = json!({"jsonrpc": "2.0", "id": "s9", "method": "roots/list"});
    seen.push.send(sampling.clone()).unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap(),
        sampling
    );
    shutdown.cancel();
}
