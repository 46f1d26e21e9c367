//! Attacks at the edge of the gateway (issue 12, items 9–17): what passes without a policy,
//! approval floods, slow clients, Host and Origin on every route, a database outage, a full
//! disk, shutdown and where the database goes. Loads are bounded in count and time and stay
//! on loopback.

use crate::app::{Agent, Approver, Client, TestApp, TestAppBuilder, token};
use crate::support::{self, Backend, modern_meta, post};
use crate::wait;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "edge-key";
const AUTH: (&str, &str) = ("authorization", "Bearer edge-key");

const POLICY: &str = r#"
defaults:
  verdict: allow
rules:
  - id: wipe-needs-bob
    match: {tool: wipe}
    verdict: approve
    approvers: [bob]
    quorum: 1
    timeout: 10m
"#;

// --- a recording upstream -------------------------------------------------------------------

/// Every JSON-RPC message the stub upstream received.
type Seen = Arc<Mutex<Vec<Value>>>;

/// A legacy Streamable HTTP MCP server on loopback that records what it receives.
async fn recording_upstream() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(stub))
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

async fn stub(State(seen): State<Seen>, axum::Json(message): axum::Json<Value>) -> Response {
    seen.lock().unwrap().push(message.clone());
    let Some(id) = message.get("id").cloned() else {
        return axum::http::StatusCode::ACCEPTED.into_response();
    };
    let result = match message["method"].as_str().unwrap_or_default() {
        "initialize" => json!({"protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
            "serverInfo": {"name": "rec", "version": "0"}}),
        "tools/list" => json!({"tools": [
            {"name": "echo", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}},
            {"name": "wipe", "inputSchema": {"type": "object"}, "annotations": {"destructiveHint": true}}]}),
        "tools/call" => json!({"content": [{"type": "text", "text": "ran"}]}),
        "resources/list" => json!({"resources": [{"uri": "rec://doc", "name": "doc"}]}),
        "resources/read" => json!({"contents": [{"uri": "rec://doc", "text": "the doc"}]}),
        "prompts/list" => json!({"prompts": [{"name": "greet"}]}),
        "prompts/get" => json!({"messages": []}),
        "custom/allowed" => json!({"ran": true}),
        _ => {
            return axum::Json(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "not here"}}))
            .into_response();
        }
    };
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn methods_seen(seen: &Seen) -> Vec<Value> {
    seen.lock().unwrap().clone()
}

// --- the gateway under test -----------------------------------------------------------------

/// A gateway with policies, approvals and audit in front of the recording upstream `rec`:
/// [`POLICY`], agent `agent-1` ([`KEY`]) acting for nobody, approver bob, auditor audrey.
async fn builder(backend: Backend) -> (TestAppBuilder, Seen) {
    let (addr, seen) = recording_upstream().await;
    // More than `Upstream` says: the legacy era, and a method of its own passed through.
    let rec = json!({"name": "rec", "era": "legacy", "http": {"url": format!("http://{addr}/mcp")},
        "pass_methods": ["custom/allowed"]});
    let builder = TestApp::builder()
        .backend(backend)
        .policy(POLICY)
        .set("upstreams", json!([rec]))
        .agents(vec![Agent::new("agent-1", KEY)])
        .approvers(vec![Approver::new("bob")]);
    (builder, seen)
}

async fn setup(backend: Backend) -> (TestApp, Seen) {
    let (builder, rec) = builder(backend).await;
    (builder.spawn().await, rec)
}

/// A 2026-07-28 message (a request when `id` is set, else a notification) with its headers.
async fn modern(
    app: &Client,
    id: Option<i64>,
    method: &str,
    name: Option<&str>,
    mut params: Value,
) -> support::RawResponse {
    params["_meta"] = modern_meta();
    let mut message = json!({"jsonrpc": "2.0", "method": method, "params": params});
    if let Some(id) = id {
        message["id"] = json!(id);
    }
    let mut headers = vec![
        AUTH,
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    if let Some(name) = name {
        headers.push(("mcp-name", name));
    }
    post(&app.url, &headers, &message).await
}

async fn call_tool(app: &Client, id: i64, tool: &str, arguments: Value) -> Value {
    let r = modern(
        app,
        Some(id),
        "tools/call",
        Some(tool),
        json!({"name": tool, "arguments": arguments}),
    )
    .await;
    r.messages().pop().expect("a response")
}

/// The audit events of `kind`, read through the auditor API.
async fn audit_events(app: &Client, kind: &str) -> Vec<Value> {
    app.audit_events(&format!("kind={kind}&limit=1000")).await
}

// --- item 9: notifications carrying requests ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_call_notification_never_reaches_the_upstream_and_is_recorded() {
    let (app, rec) = setup(Backend::Sqlite).await;
    let r = modern(
        &app,
        None,
        "tools/call",
        Some("rec__wipe"),
        json!({"name": "rec__wipe", "arguments": {"all": true}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // A real call afterwards reaches the upstream: the notification had its chance to.
    let done = call_tool(&app, 1, "rec__echo", json!({})).await;
    assert_eq!(done["result"]["content"][0]["text"], "ran", "{done}");

    let seen = methods_seen(&rec);
    let calls: Vec<_> = seen
        .iter()
        .filter(|m| m["method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 1, "only the real call went out: {calls:?}");
    assert_eq!(calls[0]["params"]["name"], "echo");
    assert!(
        seen.iter().all(|m| m.get("id").is_some()
            || m["method"].as_str().unwrap().starts_with("notifications/")),
        "no request method arrived as a notification: {seen:?}"
    );
    let denied = audit_events(&app, "policy.decided").await;
    let dropped: Vec<_> = denied
        .iter()
        .filter(|e| e["payload"]["rule"] == "countersign:request-as-notification")
        .collect();
    assert_eq!(dropped.len(), 1, "{denied:?}");
    assert_eq!(dropped[0]["payload"]["outcome"], "deny");
    assert_eq!(dropped[0]["payload"]["tool"], "rec__wipe");
}

// --- item 10: methods outside tools/call ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_are_refused_unless_an_upstream_passes_them() {
    let (app, rec) = setup(Backend::Sqlite).await;
    let r = modern(
        &app,
        Some(1),
        "custom/exec",
        None,
        json!({"cmd": "rm -rf /"}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], -32601, "{}", r.text);
    assert!(r.text.contains("pass_methods"), "{}", r.text);

    let r = modern(&app, Some(2), "custom/allowed", None, json!({"x": 1})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.messages().pop().unwrap()["result"]["ran"], true);

    let seen = methods_seen(&rec);
    assert!(
        !seen.iter().any(|m| m["method"] == "custom/exec"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|m| m["method"] == "custom/allowed"));
    let received = audit_events(&app, "call.received").await;
    assert!(
        received
            .iter()
            .any(|e| e["payload"]["method"] == "custom/allowed" && e["payload"]["server"] == "rec"),
        "{received:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_reads_and_prompt_gets_are_recorded() {
    let (app, _rec) = setup(Backend::Sqlite).await;
    let r = modern(
        &app,
        Some(1),
        "resources/read",
        Some("rec://doc"),
        json!({"uri": "rec://doc"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.messages().pop().unwrap()["result"]["contents"][0]["text"],
        "the doc"
    );
    let r = modern(
        &app,
        Some(2),
        "prompts/get",
        Some("rec__greet"),
        json!({"name": "rec__greet"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let received = audit_events(&app, "call.received").await;
    let read = received
        .iter()
        .find(|e| e["payload"]["method"] == "resources/read")
        .unwrap_or_else(|| panic!("resources/read recorded: {received:?}"));
    assert_eq!(read["actor"], "agent-1");
    assert_eq!(read["payload"]["params"]["uri"], "rec://doc");
    assert!(
        received
            .iter()
            .any(|e| e["payload"]["method"] == "prompts/get"
                && e["payload"]["params"]["name"] == "greet")
    );
}

// --- item 11: approval floods ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_past_its_pending_cap_is_refused_and_recorded() {
    let (app, _rec) = setup(Backend::Sqlite).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..25 {
        let app = Client::clone(&app);
        calls.spawn(async move { call_tool(&app, i, "rec__wipe", json!({"n": i})).await });
    }
    // Twenty wait for bob; five are refused at once.
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        let done = tokio::time::timeout(left, calls.join_next())
            .await
            .expect("five calls refused within 20 s")
            .expect("calls left")
            .unwrap();
        refused.push(done);
    }
    for r in &refused {
        assert_eq!(r["result"]["isError"], true, "{r}");
        let text = r["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("max_pending_per_agent"), "{text}");
    }
    assert_eq!(app.pending(20).await.len(), 20);
    let decided = audit_events(&app, "approval.refused").await;
    let capped: Vec<_> = decided
        .iter()
        .filter(|e| e["payload"]["outcome"] == "refused")
        .collect();
    assert_eq!(capped.len(), 5, "{decided:?}");
    assert_eq!(
        capped[0]["payload"]["limit"],
        "approvals.max_pending_per_agent"
    );
    assert_eq!(calls.len(), 20, "the others still wait");
    calls.abort_all();
}

// --- item 12: slow clients ------------------------------------------------------------------

/// Reads until the server closes the connection; the bytes it sent.
async fn read_to_close(mut stream: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `head` and then one body byte a second until the server closes; what it answered.
async fn trickle(addr: SocketAddr, head: String) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let feeder = tokio::spawn(async move {
        for _ in 0..30 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            // The slowness under test: one byte a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut out = Vec::new();
    let _ = read.read_to_end(&mut out).await;
    feeder.abort();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_bodies_are_cut_off_and_healthz_stays_up() {
    let (builder, _rec) = builder(Backend::Sqlite).await;
    let app = builder
        .set("server.header_read_timeout_secs", 2)
        .set("server.body_read_timeout_secs", 2)
        .spawn()
        .await;
    let addr = app.gateway().addr;
    let started = Instant::now();
    let mut hanging = tokio::task::JoinSet::new();
    for _ in 0..26 {
        hanging.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
                .await
                .unwrap();
            ("slow headers", read_to_close(stream).await)
        });
    }
    let body_head = |path: &str, auth: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\n{auth}Content-Length: 1000000\r\n\r\n"
        )
    };
    for (what, path, auth) in [
        ("slow body, no token", "/mcp", ""),
        (
            "slow body, agent key",
            "/mcp",
            "Authorization: Bearer edge-key\r\n",
        ),
        ("slow body, no approver token", "/approvals/x/approve", ""),
        (
            "slow body, approver token",
            "/approvals/00000000-0000-0000-0000-000000000000/approve",
            "Authorization: Bearer bob-token\r\n",
        ),
    ] {
        for _ in 0..6 {
            let head = body_head(path, auth);
            hanging.spawn(async move { (what, trickle(addr, head).await) });
        }
    }
    // While 50 connections hang, the gateway still answers.
    for _ in 0..3 {
        let health = tokio::time::timeout(
            Duration::from_secs(1),
            support::http().get(format!("http://{addr}/healthz")).send(),
        )
        .await
        .expect("/healthz answers within 1 s")
        .unwrap();
        assert_eq!(health.status(), 200);
        // Not synchronisation: the probes are spread over the time the connections hang.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut answers = Vec::new();
    while let Some(done) = tokio::time::timeout(Duration::from_secs(8), hanging.join_next())
        .await
        .expect("every slow connection is closed within 8 s")
    {
        answers.push(done.unwrap());
    }
    assert_eq!(answers.len(), 50);
    assert!(started.elapsed() < Duration::from_secs(8));
    for (what, answer) in &answers {
        let status = answer.split(' ').nth(1).unwrap_or("none");
        let expected: &[&str] = match *what {
            // Closed, with or without a 408.
            "slow headers" => &["none", "408"],
            "slow body, agent key" => &["408"],
            // axum's body extractor answers 400 for any body error.
            "slow body, approver token" => &["400", "408"],
            _ => &["401"],
        };
        assert!(expected.contains(&status), "{what}: {answer}");
        if status == "400" || status == "408" {
            assert!(
                answer.contains("did not arrive within 2 s"),
                "{what}: {answer}"
            );
        }
    }
}

// --- item 13: Host and Origin everywhere, the metrics token ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused_on_every_route() {
    let (app, _rec) = setup(Backend::Sqlite).await;
    for path in ["/healthz", "/metrics", "/approvals", "/audit/verify"] {
        let url = format!("{}{path}", app.base);
        let r = support::http()
            .get(&url)
            .header("host", "rebound.evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path} with a foreign Host");
        let r = support::http()
            .get(&url)
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path} with a foreign Origin");
    }
    let r = support::http()
        .get(format!("{}/healthz", app.base))
        .header("host", format!("localhost:{}", app.gateway().addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_metrics_token_when_one_is_set() {
    let hash = countersign::auth::hash_key("metrics-secret");
    let (builder, _rec) = builder(Backend::Sqlite).await;
    let app = builder
        .set("server.metrics_token_sha256", hash)
        .spawn()
        .await;
    let url = format!("{}/metrics", app.base);
    let get = |token: Option<&'static str>| {
        let mut r = support::http().get(&url);
        if let Some(token) = token {
            r = r.header("authorization", format!("Bearer {token}"));
        }
        r.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("wrong")).await.unwrap().status(), 401);
    let ok = get(Some("metrics-secret")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("countersign_upstream_up"));
}

// --- item 14: a database outage -------------------------------------------------------------

/// A TCP relay to PostgreSQL that the test can cut (its port then refuses connections) and
/// restore, standing in for a database outage without stopping the shared server.
struct Relay {
    addr: SocketAddr,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Relay {
    async fn start(addr: Option<SocketAddr>) -> Arc<Relay> {
        let listener = TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let relay = Arc::new(Relay {
            addr: listener.local_addr().unwrap(),
            tasks: Mutex::default(),
        });
        let weak = Arc::downgrade(&relay);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(relay) = weak.upgrade() else { return };
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                relay.tasks.lock().unwrap().push(pipe);
            }
        });
        relay.tasks.lock().unwrap().push(accept);
        relay
    }

    /// Cuts every connection and closes the port; returns once all of them are closed.
    async fn cut(&self) {
        // The accept loop may add a pipe while it is being stopped: until none is left.
        for _ in 0..10 {
            let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
            if tasks.is_empty() {
                return;
            }
            for task in &tasks {
                task.abort();
            }
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), task)
                    .await
                    .expect("a relay task ends once aborted");
            }
        }
        panic!("the relay kept accepting connections after it was cut");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_answered_fast_and_fail_closed() {
    let (builder, rec) = builder(Backend::Postgres).await;
    let mut app = builder.spawn_stopped().await;
    let relay = Relay::start(None).await;
    // The gateway reaches its database through the relay.
    let relayed = app
        .db
        .url
        .replace("127.0.0.1:5432", &relay.addr.to_string());
    app.db.url = relayed;
    app.start().await;
    let ok = call_tool(&app, 1, "rec__echo", json!({})).await;
    assert_eq!(ok["result"]["content"][0]["text"], "ran", "{ok}");

    relay.cut().await;
    let t = Instant::now();
    let refused = call_tool(&app, 2, "rec__echo", json!({"n": 2})).await;
    // At worst the audit writer first fails an earlier batch and reloads its head (3 s each).
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    let text = refused["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("could not record"), "{text}");
    let calls = methods_seen(&rec);
    assert_eq!(
        calls.iter().filter(|m| m["method"] == "tools/call").count(),
        1,
        "nothing ran unaudited"
    );
    for (path, who) in [
        ("/approvals?status=pending", "bob"),
        ("/audit/verify", "audrey"),
    ] {
        let t = Instant::now();
        let r = support::http()
            .get(format!("{}{path}", app.base))
            .bearer_auth(token(who))
            .send()
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{path}: {:?}",
            t.elapsed()
        );
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "5", "{path}");
    }

    // The database comes back: so does the gateway, without a restart.
    let _back = Relay::start(Some(relay.addr)).await;
    let (app, mut next) = (&app, 10);
    let what = "calls to run again once the database is back";
    let every = Duration::from_millis(500);
    let recovered = wait::eventually_every(what, Duration::from_secs(45), every, || {
        let n = next;
        next += 1;
        async move {
            let r = call_tool(app, n, "rec__echo", json!({"n": n})).await;
            if r["result"]["isError"] != true {
                Ok(r)
            } else {
                Err(r)
            }
        }
    })
    .await;
    assert_eq!(recovered["result"]["content"][0]["text"], "ran");
}

// --- item 15: SQLite after a full disk ------------------------------------------------------

/// A 2 MiB tmpfs, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: detached now even if a file on it is still open (a panicking test), freed
        // once closed.
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_recovers_by_itself_once_a_full_disk_has_room() {
    use countersign::audit::{AuditLog, EventKind, NewEvent};
    let disk = SmallDisk::mount();
    let url = format!("sqlite://{}", disk.dir.path().join("cs.db").display());
    let db = countersign::store::connect(&url).await.unwrap();
    let log = AuditLog::open(db.clone()).await.unwrap();
    let event = |n: usize| {
        let payload = json!({"n": n, "padding": "x".repeat(16 * 1024)});
        NewEvent::untyped(None, EventKind::AuditRead, "test", payload)
    };
    // Fill the disk with a file, then the log until it fails a few times.
    let filler = disk.dir.path().join("filler");
    let free = 2 * 1024 * 1024
        - std::fs::metadata(disk.dir.path().join("cs.db"))
            .unwrap()
            .len();
    let _ = std::fs::write(&filler, vec![0u8; free as usize]);
    let mut failures = Vec::new();
    for n in 0..200 {
        if let Err(e) = log.append(event(n)).await {
            failures.push(e.to_string());
            if failures.len() == 4 {
                break;
            }
        }
    }
    assert_eq!(failures.len(), 4, "the disk filled up");
    assert!(failures.iter().any(|f| f.contains("full")), "{failures:?}");
    std::fs::remove_file(&filler).unwrap();
    let mut last = None;
    for n in 0..10 {
        match log.append(event(1000 + n)).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e.to_string()),
        }
    }
    assert_eq!(last, None, "appends work again once there is room");
    for n in 0..5 {
        log.append(event(2000 + n)).await.expect("and keep working");
    }
    drop(log);
    db.pool.close().await;
}

// --- item 16: shutdown ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_held_calls_and_keeps_their_approvals_pending() {
    let (builder, _rec) = builder(Backend::Sqlite).await;
    let mut app = builder.set("server.shutdown_grace_secs", 2).spawn().await;
    let client = Client::clone(&app);
    let held = tokio::spawn(async move { call_tool(&client, 1, "rec__wipe", json!({})).await });
    support::until("the call waits for bob", || !held.is_finished()).await;
    assert_eq!(app.pending(1).await.len(), 1);
    let t = Instant::now();
    app.stop();
    let answer = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held call is answered within the grace")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("shutting down"), "{text}");
    let db = countersign::store::connect(&app.db.url).await.unwrap();
    let status: String = sqlx::query_scalar("select status from approvals")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending", "the approval waits for the restart");
}

// --- item 17: where the database goes -------------------------------------------------------

#[tokio::test]
async fn a_relative_sqlite_path_is_relative_to_the_config_file() {
    // A plain proxy anyone may call, its database named relative to its configuration file.
    let app = TestApp::builder()
        .plain_proxy()
        .agents(Vec::new())
        .set("database.url", "sqlite://data.db")
        .spawn_stopped()
        .await;
    let elsewhere = tempfile::tempdir().unwrap();
    let out = app
        .cli(&["audit", "verify"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(app.dir().join("data.db").exists());
    assert!(!elsewhere.path().join("data.db").exists());
}
