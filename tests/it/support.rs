//! The test harness: an in-process gateway on a free loopback port, and the peers installed by
//! `tests/peers/setup.sh`.

#![allow(dead_code)]

/// Two tests for one scenario: on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($scenario:ident: $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario($crate::support::Backend::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $scenario($crate::support::Backend::Postgres).await;
        }
    };
}

use countersign::gateway::CallGate;
use countersign::startup::Application;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A running gateway; stopped when dropped.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    shutdown: CancellationToken,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a gateway from YAML text. `listen` is forced to `127.0.0.1:0`.
pub async fn spawn_gateway(yaml: &str) -> TestGateway {
    spawn_gateway_on(yaml, 0).await
}

/// The same, listening on loopback `port` (0: any), for peers that must know the address
/// before the gateway starts (a chat server's callback URL).
pub async fn spawn_gateway_on(yaml: &str, port: u16) -> TestGateway {
    let mut config = test_config(yaml);
    config.server.listen.set_port(port);
    let shutdown = CancellationToken::new();
    let app = Application::build(&config, shutdown.clone())
        .await
        .expect("gateway starts");
    serve(app, shutdown)
}

fn test_config(yaml: &str) -> countersign::config::Config {
    let mut config = countersign::config::parse(yaml, "test.yaml", &[])
        .unwrap_or_else(|e| panic!("test config: {e}"));
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config
}

fn serve(app: Application, shutdown: CancellationToken) -> TestGateway {
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestGateway {
        addr,
        url: format!("http://{addr}/mcp"),
        shutdown,
    }
}

/// A gateway running elsewhere (a child process) at `addr`.
pub fn external_gateway(addr: SocketAddr) -> TestGateway {
    TestGateway {
        addr,
        url: format!("http://{addr}/mcp"),
        shutdown: CancellationToken::new(),
    }
}

/// An HTTP client for the tests (one TLS setup per test binary, so no test reads the system's CA
/// certificates again).
pub fn http() -> reqwest::Client {
    static TLS: std::sync::LazyLock<countersign::tls::Tls> =
        std::sync::LazyLock::new(|| countersign::tls::Tls::new(&Default::default()).unwrap());
    TLS.client()
}

/// Waits (at most 5 s) until `f` holds.
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let holds = || std::future::ready(f().then_some(()));
    crate::wait::eventually(what, std::time::Duration::from_secs(5), holds).await;
}

/// A gateway run as a child process (so it can be sent signals), from a config file that
/// listens on loopback `port`.
pub struct GatewayProcess {
    process: tokio::process::Child,
    pub gw: TestGateway,
}

impl GatewayProcess {
    /// Starts `countersign serve --config config` and waits (at most 15 s) until it answers.
    pub async fn spawn(config: &std::path::Path, port: u16) -> GatewayProcess {
        Self::spawn_logging_to(config, port, None).await
    }

    /// The same, with the gateway's log (stderr) written to `log` when given.
    pub async fn spawn_logging_to(
        config: &std::path::Path,
        port: u16,
        log: Option<&std::path::Path>,
    ) -> GatewayProcess {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
        command
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("COUNTERSIGN_LOG")
            .kill_on_drop(true);
        if let Some(log) = log {
            command.stderr(std::fs::File::create(log).unwrap());
        }
        let process = command.spawn().unwrap();
        let gw = external_gateway(([127, 0, 0, 1], port).into());
        let health = format!("http://{}/healthz", gw.addr);
        let up = || async {
            let answer = http().get(&health).send().await;
            answer.is_ok_and(|r| r.status() == 200).then_some(())
        };
        let (timeout, every) = (
            std::time::Duration::from_secs(15),
            std::time::Duration::from_millis(50),
        );
        crate::wait::eventually_every("the gateway process comes up", timeout, every, up).await;
        GatewayProcess { process, gw }
    }

    /// Sends `signal` (`-TERM`, `-KILL`) and waits (at most 20 s) for the process to end.
    pub async fn signal(mut self, signal: &str) {
        let pid = self.process.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let wait = self.process.wait();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(20), wait).await;
    }
}

/// A loopback port that was free a moment ago (for a gateway run as a child process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn spawn_gateway_with_gate(yaml: &str, gate: Arc<dyn CallGate>) -> TestGateway {
    let config = test_config(yaml);
    let shutdown = CancellationToken::new();
    let app = Application::with_gate(&config, gate, shutdown.clone())
        .await
        .expect("gateway starts");
    serve(app, shutdown)
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `.peers/`, installed by `tests/peers/setup.sh` (which `.ci/run` runs).
pub fn peers() -> PathBuf {
    let dir = root().join(".peers");
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("node_modules").exists(),
        "the test peers are missing: run `bash tests/peers/setup.sh` first"
    );
    dir
}

/// Path of the Python stdlib echo upstream used by the quick start.
pub fn echo_upstream() -> PathBuf {
    root().join("examples/upstreams/echo_server.py")
}

/// A raw HTTP exchange with the gateway.
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The JSON-RPC messages of an SSE body, or the single JSON body.
    pub fn messages(&self) -> Vec<Value> {
        if !self.text.starts_with("event:")
            && !self.text.starts_with("data:")
            && !self.text.starts_with(':')
        {
            return vec![self.json()];
        }
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).expect("SSE data is JSON"))
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// POSTs `body` (raw text) with `headers` plus the usual MCP content negotiation.
pub async fn post_raw(
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> RawResponse {
    let mut request = crate::support::http()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.body(body).send().await.expect("gateway reachable");
    RawResponse {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap_or_default(),
    }
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> RawResponse {
    post_raw(url, headers, body.to_string()).await
}

/// Opens a legacy session; returns its id.
pub async fn initialize(url: &str, auth: &[(&str, &str)]) -> String {
    let init = serde_json::json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"0"}}});
    let r = post(url, auth, &init).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.header("mcp-session-id").expect("session id").to_owned()
}

/// The `_meta` every 2026-07-28 request carries.
pub fn modern_meta() -> Value {
    serde_json::json!({"io.modelcontextprotocol/protocolVersion":"2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":{},
        "io.modelcontextprotocol/clientInfo":{"name":"it","version":"0"}})
}

/// A fresh database for one test (`tests/it/db.rs`).
pub use crate::db::{Backend, TestDb};
