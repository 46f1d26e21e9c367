//! Real MCP clients (Python SDK `mcp` 2.3.0, TypeScript SDK v2 2.4.0) driving the in-process
//! gateway in front of real MCP servers (`server-everything`, `server-filesystem`).
//!
//! The clients are the scripted ones in `tests/peers/` (copied to `.peers/scripts/` by
//! `tests/peers/setup.sh`); each prints one JSON line that the tests assert on.

use crate::app::{Agent, TestApp, TestAppBuilder};
use crate::support::{free_port, peers};
use crate::wait;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Upper bound for one client run (the client's own limit is a little lower).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(100);

fn everything_js() -> PathBuf {
    peers().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

fn filesystem_js() -> PathBuf {
    peers().join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Sdk {
    Python,
    TypeScript,
}

/// What one client run produced.
pub(crate) struct ClientRun {
    pub(crate) report: Value,
    exit: Option<i32>,
    stderr: String,
}

impl ClientRun {
    pub(crate) fn step(&self, i: usize) -> &Value {
        &self.report["steps"][i]
    }

    fn context(&self) -> String {
        format!(
            "report: {}\nexit: {:?}\nstderr: {}",
            self.report,
            self.exit,
            tail(&self.stderr, 3000)
        )
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs a scripted client against `target` and returns its JSON report.
pub(crate) async fn run_client(
    sdk: Sdk,
    target: &str,
    mode: &str,
    steps: &Value,
    bearer: Option<&str>,
) -> ClientRun {
    let peers = peers();
    let mut cmd = match sdk {
        Sdk::Python => {
            let mut c = Command::new(peers.join("venv/bin/python"));
            c.arg(peers.join("scripts/py_client.py"));
            c
        }
        Sdk::TypeScript => {
            let mut c = Command::new("node");
            c.arg(peers.join("scripts/ts_client.mjs"));
            c.current_dir(peers.join("scripts"));
            c
        }
    };
    cmd.arg(target)
        .arg(mode)
        .arg(steps.to_string())
        .env("PEER_CLIENT_TIMEOUT", "90")
        .env_remove("MCP_BEARER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(key) = bearer {
        cmd.env("MCP_BEARER", key);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {sdk:?} client: {e}"));
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!("{sdk:?} client ({mode}) did not finish within {CLIENT_TIMEOUT:?}")
        })
        .expect("client output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "{sdk:?} client ({mode}) printed no JSON report\nstdout: {stdout}\nstderr: {}",
                tail(&stderr, 3000)
            )
        });
    let report: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("client report is not JSON ({e}): {line}"));
    ClientRun {
        report,
        exit: output.status.code(),
        stderr,
    }
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let awaited = format!("{what} to listen on {port}");
    let every = Duration::from_millis(100);
    wait::eventually_every(&awaited, Duration::from_secs(30), every, || {
        let exited = child.try_wait();
        async move {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(());
            }
            if let Ok(Some(status)) = exited {
                panic!("{what} exited before listening on {port}: {status}");
            }
            None
        }
    })
    .await
}

/// A child process on a loopback port, killed (by its PID) when dropped.
pub struct ServerProcess {
    child: Child,
    pub port: u16,
}

impl ServerProcess {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // kill(2) on this child's PID only, then reap it if it is already gone.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

/// `server-everything` over Streamable HTTP on a free port.
async fn everything_http() -> ServerProcess {
    let port = free_port();
    let mut child = Command::new("node")
        .arg("-r")
        .arg(peers().join("scripts/loopback-listen.cjs"))
        .arg(everything_js())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start server-everything");
    wait_for_port(port, &mut child, "server-everything (streamableHttp)").await;
    ServerProcess { child, port }
}

/// `server-everything` over stdio, as upstream `ev`.
fn everything_stdio_upstream() -> Value {
    json!({"name": "ev", "stdio": {"command": "node", "args": [everything_js(), "stdio"]}})
}

/// `server-everything` at `url`, as upstream `ev`.
fn everything_http_upstream(url: &str) -> Value {
    json!({"name": "ev", "http": {"url": url}})
}

/// `server-filesystem` over stdio, allowed `dir`, as upstream `fs`.
fn filesystem_upstream(dir: &Path) -> Value {
    json!({"name": "fs", "stdio": {"command": "node", "args": [filesystem_js(), dir]}})
}

/// A plain proxy in front of `upstreams`, in the gateway's terms (`Upstream` starts no node
/// server).
fn proxy(upstreams: Vec<Value>) -> TestAppBuilder {
    TestApp::builder().plain_proxy().set("upstreams", upstreams)
}

/// The app, started within 60 s.
async fn spawn(builder: TestAppBuilder) -> TestApp {
    tokio::time::timeout(Duration::from_secs(60), builder.spawn())
        .await
        .expect("the gateway starts within 60 s")
}

/// A plain proxy anyone may call, in front of `upstreams`.
async fn gateway(upstreams: Vec<Value>) -> TestApp {
    spawn(proxy(upstreams).agents(Vec::new())).await
}

const ARCHITECTURE: &str = "demo://resource/static/document/architecture.md";

/// The everything-server scenario: list, call, read a resource, get a prompt, progress, cancel,
/// and a call after the cancellation (the gateway and the upstream are still usable).
fn everything_script() -> Value {
    json!([
        {"op": "list_tools"},
        {"op": "call_tool", "name": "ev__echo", "args": {"message": "hello through countersign"}},
        {"op": "call_tool", "name": "ev__get-sum", "args": {"a": 2, "b": 40}},
        {"op": "read_resource", "uri": ARCHITECTURE},
        {"op": "list_prompts"},
        {"op": "get_prompt", "name": "ev__args-prompt", "args": {"city": "Paris", "state": "TX"}},
        {"op": "call_tool", "name": "ev__trigger-long-running-operation", "args": {"duration": 1, "steps": 3}},
        {"op": "cancel", "name": "ev__trigger-long-running-operation", "args": {"duration": 20, "steps": 20}},
        {"op": "call_tool", "name": "ev__echo", "args": {"message": "after cancel"}},
    ])
}

/// Asserts every step of [`everything_script`], collecting all failures before panicking so one
/// run shows everything that went wrong.
fn check_everything(run: &ClientRun, label: &str) {
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: &str, step: Option<usize>| {
        if !ok {
            let detail = step.map(|i| {
                let mut s = run.step(i).clone();
                if let Some(o) = s.as_object_mut() {
                    o.remove("raw");
                }
                s.to_string()
            });
            failures.push(format!("{what}: {}", detail.unwrap_or_default()));
        }
    };
    let r = &run.report;
    let step_ok = |i: usize| run.step(i)["ok"] == true;
    let text = |i: usize| run.step(i)["text"].as_str().unwrap_or_default().to_owned();

    let tools: Vec<&str> = run.step(0)["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    check(step_ok(0), "list_tools succeeds", Some(0));
    for t in [
        "ev__echo",
        "ev__get-sum",
        "ev__trigger-long-running-operation",
    ] {
        check(tools.contains(&t), &format!("tools/list offers {t}"), None);
    }
    check(
        tools.iter().all(|t| t.starts_with("ev__")),
        "every tool is namespaced ev__",
        None,
    );

    check(
        step_ok(1) && text(1) == "Echo: hello through countersign",
        "echo answers",
        Some(1),
    );
    check(
        step_ok(2) && run.step(2)["is_error"] == false && text(2).contains("42"),
        "get-sum answers 42",
        Some(2),
    );
    check(
        step_ok(3) && text(3).contains("Architecture"),
        "resources/read returns the document",
        Some(3),
    );
    let prompts: Vec<&str> = run.step(4)["prompts"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    check(
        step_ok(4) && prompts.contains(&"ev__args-prompt"),
        "prompts/list offers ev__args-prompt",
        Some(4),
    );
    check(
        step_ok(5) && text(5).contains("Paris"),
        "prompts/get fills in the arguments",
        Some(5),
    );

    let progress = run.step(6)["progress"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    check(
        step_ok(6) && text(6).contains("completed"),
        "the long-running operation completes",
        Some(6),
    );
    check(
        progress >= 1,
        &format!("progress notifications arrive (got {progress})"),
        Some(6),
    );
    check(
        run.step(6)["progress"][0]["total"].as_f64() == Some(3.0),
        "progress carries the total",
        Some(6),
    );

    check(
        step_ok(7) && run.step(7)["cancelled"] == true,
        "the 20 s call is cancelled",
        Some(7),
    );
    check(
        run.step(7)["elapsed_ms"]
            .as_u64()
            .is_some_and(|ms| ms < 10_000),
        "the cancellation is prompt",
        Some(7),
    );
    check(
        step_ok(8) && text(8) == "Echo: after cancel",
        "a call after the cancellation works",
        Some(8),
    );

    check(r["ok"] == true, "the client reports ok", None);
    check(run.exit == Some(0), "the client exits 0", None);
    assert!(
        failures.is_empty(),
        "[{label}] {} failure(s):\n  {}\n{}",
        failures.len(),
        failures.join("\n  "),
        run.context()
    );
}

async fn everything_through_gateway(
    sdk: Sdk,
    mode: &str,
    http_upstream: bool,
    expect_version: &str,
) {
    let label = format!(
        "{sdk:?} {mode} / upstream {}",
        if http_upstream { "http" } else { "stdio" }
    );
    let server = if http_upstream {
        Some(everything_http().await)
    } else {
        None
    };
    let upstream = match &server {
        Some(s) => everything_http_upstream(&s.url()),
        None => everything_stdio_upstream(),
    };
    let app = gateway(vec![upstream]).await;
    let run = run_client(sdk, &app.url, mode, &everything_script(), None).await;
    assert_eq!(
        run.report["protocol_version"],
        expect_version,
        "[{label}] negotiated version\n{}",
        run.context()
    );
    check_everything(&run, &label);
    drop(app);
    drop(server);
}

// ---- 1. server-everything over stdio ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_legacy_everything_stdio() {
    everything_through_gateway(Sdk::Python, "legacy", false, "2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_modern_everything_stdio() {
    everything_through_gateway(Sdk::Python, "2026-07-28", false, "2026-07-28").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_legacy_everything_stdio() {
    everything_through_gateway(Sdk::TypeScript, "legacy", false, "2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_auto_everything_stdio() {
    // The gateway answers server/discover, so `auto` settles on the modern era.
    everything_through_gateway(Sdk::TypeScript, "auto", false, "2026-07-28").await;
}

// ---- 1. server-everything over Streamable HTTP ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_legacy_everything_http() {
    everything_through_gateway(Sdk::Python, "legacy", true, "2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_modern_everything_http() {
    everything_through_gateway(Sdk::Python, "2026-07-28", true, "2026-07-28").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_legacy_everything_http() {
    everything_through_gateway(Sdk::TypeScript, "legacy", true, "2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_auto_everything_http() {
    everything_through_gateway(Sdk::TypeScript, "auto", true, "2026-07-28").await;
}

// ---- 2. server-filesystem ----

fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().canonicalize().expect("canonical tempdir");
    (dir, path)
}

async fn filesystem_read_write(sdk: Sdk, mode: &str) {
    let (_dir, root) = canonical_tempdir();
    std::fs::write(root.join("a.txt"), "alpha file\n").unwrap();
    let app = gateway(vec![filesystem_upstream(&root)]).await;
    let a = root.join("a.txt").to_string_lossy().into_owned();
    let b = root.join("sub-b.txt").to_string_lossy().into_owned();
    let outside = "/etc/hostname";
    let script = json!([
        {"op": "call_tool", "name": "fs__read_text_file", "args": {"path": a}},
        {"op": "call_tool", "name": "fs__write_file", "args": {"path": b, "content": "written via countersign"}},
        {"op": "call_tool", "name": "fs__read_text_file", "args": {"path": b}},
        {"op": "call_tool", "name": "fs__read_text_file", "args": {"path": outside}},
    ]);
    let run = run_client(sdk, &app.url, mode, &script, None).await;
    let ctx = run.context();
    assert_eq!(run.step(0)["ok"], true, "read a.txt\n{ctx}");
    assert_eq!(run.step(0)["is_error"], false, "read a.txt\n{ctx}");
    assert_eq!(run.step(0)["text"], "alpha file\n", "{ctx}");
    assert_eq!(run.step(1)["ok"], true, "write_file\n{ctx}");
    assert_eq!(run.step(1)["is_error"], false, "write_file\n{ctx}");
    assert_eq!(
        std::fs::read_to_string(root.join("sub-b.txt"))
            .ok()
            .as_deref(),
        Some("written via countersign"),
        "write_file wrote the file on disk\n{ctx}"
    );
    assert_eq!(run.step(2)["text"], "written via countersign", "{ctx}");
    // Outside the allowed directory: a tool error from the upstream, passed through as a result.
    assert_eq!(run.step(3)["ok"], true, "{ctx}");
    assert_eq!(
        run.step(3)["is_error"],
        true,
        "reading outside the root is refused\n{ctx}"
    );
    assert_eq!(run.exit, Some(0), "{ctx}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_legacy_filesystem_read_write() {
    filesystem_read_write(Sdk::Python, "legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_auto_filesystem_read_write() {
    filesystem_read_write(Sdk::TypeScript, "auto").await;
}

// ---- 3. two upstreams at once ----

async fn two_upstreams(sdk: Sdk, mode: &str) {
    let (_dir, root) = canonical_tempdir();
    std::fs::write(root.join("two.txt"), "from the filesystem upstream").unwrap();
    let app = gateway(vec![
        everything_stdio_upstream(),
        filesystem_upstream(&root),
    ])
    .await;
    let file = root.join("two.txt").to_string_lossy().into_owned();
    let script = json!([
        {"op": "list_tools"},
        {"op": "call_tool", "name": "ev__echo", "args": {"message": "to everything"}},
        {"op": "call_tool", "name": "fs__read_text_file", "args": {"path": file}},
        {"op": "call_tool", "name": "fs__list_allowed_directories"},
        {"op": "call_tool", "name": "fs__echo", "args": {"message": "nobody"}, "allow_error": true},
        {"op": "call_tool", "name": "ev__read_text_file", "args": {"path": file}, "allow_error": true},
    ]);
    let run = run_client(sdk, &app.url, mode, &script, None).await;
    let ctx = run.context();
    let tools: Vec<&str> = run.step(0)["tools"]
        .as_array()
        .expect(&ctx)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in [
        "ev__echo",
        "ev__get-sum",
        "fs__read_text_file",
        "fs__write_file",
        "fs__list_allowed_directories",
    ] {
        assert!(tools.contains(&t), "tools/list lacks {t}: {tools:?}");
    }
    assert!(
        tools
            .iter()
            .all(|t| t.starts_with("ev__") || t.starts_with("fs__")),
        "{tools:?}"
    );
    assert!(
        !tools.contains(&"echo") && !tools.contains(&"read_text_file"),
        "bare names leak: {tools:?}"
    );
    assert_eq!(run.step(1)["text"], "Echo: to everything", "{ctx}");
    assert_eq!(run.step(2)["text"], "from the filesystem upstream", "{ctx}");
    assert!(
        run.step(3)["text"]
            .as_str()
            .unwrap_or_default()
            .contains(root.to_str().unwrap()),
        "list_allowed_directories comes from the fs upstream\n{ctx}"
    );
    // Tools do not cross namespaces: fs has no echo, ev has no read_text_file.
    for i in [4, 5] {
        let s = run.step(i);
        assert!(
            s["ok"] == false || s["is_error"] == true,
            "step {i} must fail: {s}\n{ctx}"
        );
    }
    assert_eq!(run.report["ok"], true, "{ctx}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_legacy_two_upstreams() {
    two_upstreams(Sdk::Python, "legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_legacy_two_upstreams() {
    two_upstreams(Sdk::TypeScript, "legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_modern_two_upstreams() {
    two_upstreams(Sdk::Python, "2026-07-28").await;
}

// ---- 4. authentication ----

const AGENT_KEY: &str = "peer-test-key-3f9c1e";

/// A plain proxy in front of `server-everything`, for agent `peer-agent` ([`AGENT_KEY`]).
async fn authenticated_gateway() -> TestApp {
    let agent = Agent::new("peer-agent", AGENT_KEY);
    spawn(proxy(vec![everything_stdio_upstream()]).agents(vec![agent])).await
}

async fn auth_with_key(mode: &str) {
    let app = authenticated_gateway().await;
    let script = json!([{"op": "list_tools"}, {"op": "call_tool", "name": "ev__echo", "args": {"message": "authed"}}]);

    let run = run_client(Sdk::Python, &app.url, mode, &script, Some(AGENT_KEY)).await;
    let ctx = run.context();
    assert_eq!(run.report["ok"], true, "with the key\n{ctx}");
    assert_eq!(run.step(1)["text"], "Echo: authed", "{ctx}");
    assert_eq!(run.exit, Some(0), "{ctx}");

    let run = run_client(Sdk::Python, &app.url, mode, &script, None).await;
    assert_eq!(
        run.report["ok"],
        false,
        "without a key the client must fail\n{}",
        run.context()
    );
    assert_ne!(run.exit, Some(0), "{}", run.context());
    assert!(
        run.report["steps"]
            .as_array()
            .is_none_or(|s| s.iter().all(|s| s["ok"] != true)),
        "no step may succeed without a key\n{}",
        run.context()
    );

    let run = run_client(Sdk::Python, &app.url, mode, &script, Some("not-the-key")).await;
    assert_eq!(
        run.report["ok"],
        false,
        "a wrong key must fail\n{}",
        run.context()
    );
    assert!(
        run.report["steps"]
            .as_array()
            .is_none_or(|s| s.iter().all(|s| s["ok"] != true)),
        "no step may succeed with a wrong key\n{}",
        run.context()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_legacy_agent_key() {
    auth_with_key("legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_modern_agent_key() {
    auth_with_key("2026-07-28").await;
}

/// The README's Python SDK example (`examples/clients/python_sdk.py`) runs as written against
/// a gateway that requires its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_sdk_example_passes_the_api_key() {
    let app = TestApp::builder()
        .plain_proxy()
        .agents(vec![Agent::new("readme", "readme-key")])
        .spawn()
        .await;
    let example = crate::support::root().join("examples/clients/python_sdk.py");
    let run = |key: &str| {
        Command::new(peers().join("venv/bin/python"))
            .arg(&example)
            .arg(&app.url)
            .env("COUNTERSIGN_API_KEY", key)
            .kill_on_drop(true)
            .output()
    };
    let out = tokio::time::timeout(CLIENT_TIMEOUT, run("readme-key"))
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("echo__echo: hi") && stdout.contains("echo__delete_record"),
        "{stdout}"
    );
    let refused = tokio::time::timeout(CLIENT_TIMEOUT, run("wrong-key"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a wrong key is refused: {refused:?}"
    );
}
