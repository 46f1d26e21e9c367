//! The MCP conformance suites (0.1.16 and 0.2.0-alpha.12 `--requirements 2026-07-28`) in server
//! mode, run directly against the project fixture and through the gateway in front of it.
//! Every scenario that passes directly must pass through the gateway.
//!
//! Counts are printed (run with `--nocapture`) and written to `target/conformance-summary.txt`;
//! the suites' own results stay in `target/conformance/{direct,gateway}/`.

use crate::app::TestApp;
use crate::support::{peers, root};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

const SUITES: [&str; 2] = ["0.1.16", "alpha"];

/// The fixture upstream on its own port; killed by PID when dropped.
struct Fixture {
    child: Child,
    port: u16,
}

impl Fixture {
    /// The fixture as an upstream of the gateway, its tools unprefixed (the suites call them by
    /// their own names).
    fn upstream(&self) -> Value {
        let url = format!("http://127.0.0.1:{}/mcp", self.port);
        json!({"name": "fixture", "prefix": "", "http": {"url": url}})
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

async fn start_fixture(log: &Path) -> Fixture {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(peers().join("venv/bin/python"))
        .arg(root().join("tests/peers/conformance_fixture.py"))
        .arg("http")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("fixture log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the conformance fixture");
    let what = format!("the conformance fixture (log {})", log.display());
    crate::peers::wait_for_port(port, &mut child, &what).await;
    Fixture { child, port }
}

/// A plain proxy anyone may call, in front of `upstream`, started within 60 s.
async fn gateway(upstream: Value) -> TestApp {
    let builder = TestApp::builder()
        .plain_proxy()
        .agents(Vec::new())
        .set("upstreams", [upstream]);
    tokio::time::timeout(Duration::from_secs(60), builder.spawn())
        .await
        .expect("gateway starts")
}

/// Runs `tests/peers/conformance.sh URL OUT`; returns its summary lines.
async fn run_suites(url: &str, out: &Path) -> String {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let child = Command::new("bash")
        .arg(root().join("tests/peers/conformance.sh"))
        .arg(url)
        .arg(out)
        .env("PEERS_DIR", peers())
        .env("CONF_SUITE_TIMEOUT", "600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run conformance.sh");
    let output = tokio::time::timeout(Duration::from_secs(1300), child.wait_with_output())
        .await
        .expect("conformance.sh finished within 1300 s")
        .expect("conformance.sh output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "conformance.sh failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn scenarios(out: &Path, kind: &str, suite: &str) -> BTreeSet<String> {
    let file = out.join(format!("{kind}-{suite}.txt"));
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The failed checks of a scenario from the suite's `checks.json`, one line each.
fn failed_checks(out: &Path, suite: &str, scenario: &str) -> Vec<String> {
    let dir = out.join(suite);
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![format!("(no results directory {})", dir.display())];
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // <mode>-<scenario>-<timestamp>
        let Some(rest) = name.strip_prefix("server-") else {
            continue;
        };
        if !rest.starts_with(scenario) || !rest[scenario.len()..].starts_with('-') {
            continue;
        }
        let rest_after = &rest[scenario.len() + 1..];
        if !rest_after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
        {
            continue; // a longer scenario name sharing the prefix
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("checks.json")) else {
            continue;
        };
        let Ok(checks) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for c in checks.as_array().into_iter().flatten() {
            let status = c["status"].as_str().unwrap_or_default();
            if status == "SUCCESS" || status == "INFO" {
                continue;
            }
            let mut line = format!("{} [{}]", c["id"].as_str().unwrap_or("?"), status);
            if let Some(m) = c["errorMessage"].as_str() {
                let _ = write!(line, ": {}", m.chars().take(300).collect::<String>());
            }
            found.push(line);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_gateway_matches_direct() {
    let base: PathBuf = root().join("target/conformance");
    std::fs::create_dir_all(&base).unwrap();
    let direct_out = base.join("direct");
    let gateway_out = base.join("gateway");

    // (a) directly against the fixture
    let direct_fixture = start_fixture(&base.join("fixture-direct.log")).await;
    let direct_url = format!("http://127.0.0.1:{}/mcp", direct_fixture.port);
    let direct_summary = run_suites(&direct_url, &direct_out).await;
    drop(direct_fixture);

    // (b) through the gateway in front of a fresh fixture
    let fixture = start_fixture(&base.join("fixture-gateway.log")).await;
    let app = gateway(fixture.upstream()).await;
    let gateway_summary = run_suites(&app.url, &gateway_out).await;
    drop(app);
    drop(fixture);

    let mut report = String::new();
    let _ = writeln!(report, "direct (fixture):\n{direct_summary}");
    let _ = writeln!(report, "through the gateway:\n{gateway_summary}");
    let mut missing_total = 0;
    for suite in SUITES {
        let direct = scenarios(&direct_out, "passed", suite);
        let through = scenarios(&gateway_out, "passed", suite);
        let direct_failed = scenarios(&direct_out, "failed", suite).len();
        let through_failed = scenarios(&gateway_out, "failed", suite).len();
        let lost: Vec<&String> = direct.difference(&through).collect();
        let gained: Vec<&String> = through.difference(&direct).collect();
        let _ = writeln!(
            report,
            "suite {suite}: direct {} passed / {} failed; through gateway {} passed / {} failed; {} lost, {} gained",
            direct.len(),
            direct_failed,
            through.len(),
            through_failed,
            lost.len(),
            gained.len()
        );
        for s in &lost {
            let _ = writeln!(report, "  LOST {suite} {s}");
            for check in failed_checks(&gateway_out, suite, s) {
                let _ = writeln!(report, "      {check}");
            }
        }
        for s in &gained {
            let _ = writeln!(report, "  gained {suite} {s}");
        }
        missing_total += lost.len();
    }
    println!("{report}");
    std::fs::write(root().join("target/conformance-summary.txt"), &report).unwrap();
    assert!(
        !SUITES
            .iter()
            .all(|s| scenarios(&direct_out, "passed", s).is_empty()),
        "nothing passed directly: the fixture or the suite is broken\n{report}"
    );
    assert_eq!(
        missing_total, 0,
        "scenarios that pass directly fail through the gateway:\n{report}"
    );
}

// ---- Pinpoint tests for the differences the suites found (fast, raw HTTP) ----

use crate::support::{modern_meta, post};

/// A gateway in front of `server-everything` (a legacy-only stdio server).
async fn gateway_over_everything() -> TestApp {
    let ev = peers().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    gateway(json!({"name": "ev", "stdio": {"command": "node", "args": [ev, "stdio"]}})).await
}

fn modern_headers<'a>(method: &'a str, name: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    if let Some(n) = name {
        h.push(("mcp-name", n));
    }
    h
}

fn modern_request(id: u64, method: &str, mut params: Value) -> Value {
    params["_meta"] = modern_meta();
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// 2026-07-28 requires `resultType` on every result and `ttlMs`/`cacheScope` on cacheable ones
/// (`resources/read`); a legacy upstream sends neither, so the gateway must add them when it
/// answers a modern client. (Found by the Python and TypeScript clients in `peers.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_results_from_a_legacy_upstream_carry_result_type() {
    let app = gateway_over_everything().await;
    let uri = "demo://resource/static/document/architecture.md";
    let cases = [
        (
            "tools/call",
            Some("ev__echo"),
            json!({"name": "ev__echo", "arguments": {"message": "x"}}),
            false,
        ),
        ("resources/read", Some(uri), json!({"uri": uri}), true),
        (
            "prompts/get",
            Some("ev__simple-prompt"),
            json!({"name": "ev__simple-prompt"}),
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (i, (method, name, params, cacheable)) in cases.into_iter().enumerate() {
        let r = post(
            &app.url,
            &modern_headers(method, name),
            &modern_request(10 + i as u64, method, params),
        )
        .await;
        let msg = r.messages().pop().expect("a response");
        let result = &msg["result"];
        if r.status != 200 || result.is_null() {
            failures.push(format!("{method}: HTTP {} {}", r.status, r.text));
            continue;
        }
        if result["resultType"] != "complete" {
            failures.push(format!(
                "{method}: resultType is {} (want \"complete\")",
                result["resultType"]
            ));
        }
        if cacheable && (result["ttlMs"].as_u64().is_none() || !result["cacheScope"].is_string()) {
            failures.push(format!(
                "{method}: ttlMs/cacheScope missing: ttlMs={} cacheScope={}",
                result["ttlMs"], result["cacheScope"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// server-stateless `sep-2575-http-server-header-mismatch-400`: `_meta` says v999.0.0, the
/// header says 2026-07-28 → HeaderMismatch (-32020), not UnsupportedProtocolVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_header_body_version_mismatch_is_32020() {
    let app = gateway_over_everything().await;
    let mut body = modern_request(302, "server/discover", json!({}));
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("v999.0.0");
    let r = post(&app.url, &modern_headers("server/discover", None), &body).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (400, Some(-32020)),
        "{}",
        r.text
    );
}

/// server-stateless `sep-2575-http-server-method-not-found-404-initialize`: a request that
/// carries the 2026-07-28 headers and `_meta` is modern even when its method is `initialize`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_initialize_is_404_method_not_found() {
    let app = gateway_over_everything().await;
    let r = post(
        &app.url,
        &modern_headers("initialize", None),
        &modern_request(500, "initialize", json!({})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (404, Some(-32601)),
        "{}",
        r.text
    );
    assert!(
        r.header("mcp-session-id").is_none(),
        "a modern request must not open a session"
    );
}

/// server-stateless `sep-2575-http-server-method-not-found-404`: an unknown method is 404 +
/// -32601 for a modern client, also when the -32601 comes from the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_unknown_method_is_http_404() {
    let app = gateway_over_everything().await;
    let r = post(
        &app.url,
        &modern_headers("unknown/method", None),
        &modern_request(601, "unknown/method", json!({})),
    )
    .await;
    let msg = r.messages().pop().expect("a response");
    assert_eq!(
        (r.status, msg["error"]["code"].as_i64()),
        (404, Some(-32601)),
        "{}",
        r.text
    );
}

/// 0.1.16 `logging-set-level`, `resources-subscribe`, `tools-call-sampling`, ...: a legacy client
/// behind the gateway, in front of a dual-era HTTP upstream, must still get the legacy features
/// (setLevel, subscribe, server-to-client requests): its requests have to reach the upstream in
/// a legacy session, not bridged onto stateless 2026-07-28 POSTs where those methods are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_client_keeps_legacy_features_with_a_dual_era_http_upstream() {
    let base = root().join("target/conformance");
    std::fs::create_dir_all(&base).unwrap();
    let fixture = start_fixture(&base.join("fixture-pinpoint.log")).await;
    let app = gateway(fixture.upstream()).await;
    let sid = crate::support::initialize(&app.url, &[]).await;
    let h = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let mut failures = Vec::new();
    for (id, method, params) in [
        (2, "logging/setLevel", json!({"level": "info"})),
        (
            3,
            "resources/subscribe",
            json!({"uri": "test://watched-resource"}),
        ),
        (
            4,
            "resources/unsubscribe",
            json!({"uri": "test://watched-resource"}),
        ),
    ] {
        let r = post(
            &app.url,
            &h,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .await;
        let msg = r.messages().pop().unwrap_or_default();
        if r.status != 200 || msg.get("result").is_none() {
            failures.push(format!("{method}: HTTP {} {}", r.status, r.text));
        }
    }
    // A tool that asks the client for sampling: a legacy client must see sampling/createMessage.
    // The tool then waits for the answer this client never gives, so the stream is read only
    // until the request arrives.
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "test_sampling", "arguments": {"prompt": "hi"}}});
    let seen = stream_until(&app.url, &h, &call, "sampling/createMessage").await;
    if !seen.contains("sampling/createMessage") {
        failures.push(format!(
            "tools/call test_sampling: no sampling/createMessage relayed: {}",
            seen.chars().take(600).collect::<String>()
        ));
    }
    drop(app);
    drop(fixture);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// POSTs `body` and reads the response stream until it mentions `wanted` (10 s at most);
/// returns what was read.
async fn stream_until(url: &str, headers: &[(&str, &str)], body: &Value, wanted: &str) -> String {
    use futures::StreamExt as _;
    let mut request = crate::support::http()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("gateway reachable");
    let mut chunks = response.bytes_stream();
    let mut seen = String::new();
    let read = async {
        while let Some(Ok(chunk)) = chunks.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(wanted) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    seen
}
