//! Metrics at `/metrics` and OTLP trace export.

use crate::support::{self, modern_meta, post};
use axum::body::Bytes;
use serde_json::json;
use std::time::Duration;
use tokio::sync::mpsc;

#[tokio::test]
async fn calls_are_counted_by_server_tool_and_outcome() {
    let yaml = format!(
        "server: {{allow_anonymous: true}}\nupstreams:\n  - name: metered\n    stdio: {{command: python3, args: [{}]}}\n",
        support::echo_upstream().display()
    );
    let gw = support::spawn_gateway(&yaml).await;
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "metered__add"),
    ];
    for args in [json!({"a":1,"b":2}), json!({"a":"x"})] {
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"metered__add","arguments":args,"_meta":modern_meta()}});
        post(&gw.url, &headers, &call).await;
    }
    let metrics = crate::support::http()
        .get(format!("http://{}/metrics", gw.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"countersign_tool_calls_total{server="metered",tool="add",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"countersign_tool_calls_total{server="metered",tool="add",outcome="invalid_arguments"} 1"#), "{metrics}");
    // Every family says what it is.
    let families: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n))
        })
        .collect();
    assert!(families.len() >= 3, "{metrics}");
    for family in families {
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(
            r#"countersign_tool_call_duration_seconds_count{server="metered",tool="add"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"countersign_upstream_up{upstream="metered"} 1"#),
        "{metrics}"
    );
}

/// A one-route OTLP/HTTP collector that hands every export body to the test.
async fn collector() -> (String, mpsc::UnboundedReceiver<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn a_call_span_is_exported_over_otlp_in_the_clients_trace() {
    let (endpoint, mut exports) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "server: {{listen: '127.0.0.1:{port}', allow_anonymous: true}}\ntelemetry: {{otlp_endpoint: '{endpoint}'}}\nupstreams:\n  - name: traced\n    stdio: {{command: python3, args: [{}]}}\n",
            support::echo_upstream().display()
        ),
    )
    .unwrap();
    let mut gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config"])
        .arg(&config)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut meta = modern_meta();
    meta["traceparent"] = json!(format!("00-{trace_id}-00f067aa0ba902b7-01"));
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"traced__echo","arguments":{"message":"t"},"_meta":meta}});
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "traced__echo"),
    ];
    let mut answered = false;
    for _ in 0..100 {
        if let Ok(r) = crate::support::http()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            && r.status() == 200
        {
            answered = post(&url, &headers, &call).await.status == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "gateway did not come up");
    // SIGTERM: graceful shutdown flushes the batch exporter.
    let pid = gateway.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), gateway.wait()).await;
    let body = tokio::time::timeout(Duration::from_secs(5), exports.recv())
        .await
        .expect("an OTLP export")
        .unwrap();
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"gen_ai.tool.name"),
        "span attributes are exported"
    );
    assert!(contains(b"traced__echo"));
    let trace_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(
        contains(&trace_bytes),
        "the span continues the client's trace"
    );
}

/// A run's log says what was decided, one INFO line each (the call's verdict and rule, the
/// approval asked for with how to answer it, its decision), refused keys at WARN, and what the
/// gateway started with; written to a file, it holds no terminal colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tells_every_decision_in_plain_text() {
    use crate::approvals::{AGENT_KEY, call, pending, text, vote};
    let db = support::TestDb::new(support::Backend::Sqlite).await;
    let policies = crate::approvals::policy_dir();
    let work = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let token = |who: &str| countersign::auth::hash_key(&format!("{who}-token"));
    let config = work.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{listen: '127.0.0.1:{port}'}}\ndatabase: {{url: '{}'}}\npolicy_dir: '{}'\n\
             upstreams:\n  - name: echo\n    stdio: {{command: python3, args: ['{}']}}\n\
             agents:\n  - {{id: agent-1, key_sha256: {}}}\n\
             approvers:\n  - {{id: bob, groups: [ops], token_sha256: {}}}\n  - {{id: carol, groups: [ops], token_sha256: {}}}\n",
            db.url,
            policies.path().display(),
            support::echo_upstream().display(),
            countersign::auth::hash_key(AGENT_KEY),
            token("bob"),
            token("carol"),
        ),
    )
    .unwrap();
    let log = work.path().join("gateway.log");
    let gateway = support::GatewayProcess::spawn_logging_to(&config, port, Some(&log)).await;
    let (allowed, _) = call(gateway.gw.url.clone(), "echo", json!({"message": "hi"})).await;
    assert_eq!(text(&allowed), "hi");
    for _ in 0..3 {
        let refused = crate::support::http()
            .post(&gateway.gw.url)
            .bearer_auth("not-a-key")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    }
    let held = tokio::spawn(call(
        gateway.gw.url.clone(),
        "delete_record",
        json!({"record_id": "logged"}),
    ));
    let id = pending(&gateway.gw, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    vote(&gateway.gw, &id, "bob", true, None).await;
    vote(&gateway.gw, &id, "carol", true, None).await;
    let (deleted, _) = held.await.unwrap();
    assert_eq!(text(&deleted), "deleted logged");
    gateway.signal("-TERM").await;

    let log = std::fs::read_to_string(&log).unwrap();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` line in:\n{log}"))
            .to_owned()
    };
    assert!(!log.contains('\u{1b}'), "no colour codes in a file:\n{log}");
    let start = line("starting countersign");
    assert!(
        start.contains("gateway.yaml") && start.contains("policy_version="),
        "{start}"
    );
    let decided = line("call decided");
    assert!(
        decided.contains("INFO")
            && decided.contains("verdict=\"allow\"")
            && decided.contains("tool=echo"),
        "{decided}"
    );
    let requested = line("approval requested");
    assert!(
        requested.contains(&format!("countersign approvals approve|deny {id}")),
        "{requested}"
    );
    let outcome = line("approval decided");
    assert!(
        outcome.contains("outcome=\"approved\"") && outcome.contains("by=\"carol\""),
        "{outcome}"
    );
    let warned = line("refused a missing or unknown credential");
    assert!(
        warned.contains("WARN") && warned.contains("agent key"),
        "{warned}"
    );
    assert_eq!(
        log.matches("refused a missing or unknown credential")
            .count(),
        1,
        "three refusals in a row are one WARN line (rate-limited):\n{log}"
    );
}
