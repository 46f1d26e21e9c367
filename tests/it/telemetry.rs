//! Metrics at `/metrics` and OTLP trace export.

use crate::app::{AGENT_KEY, Agent, Approver, TestApp, Upstream, Vote};
use crate::support::{self, modern_meta, post};
use crate::wait;
use axum::body::Bytes;
use serde_json::json;
use std::time::Duration;
use tokio::sync::mpsc;

/// `/metrics` of `app`'s gateway.
async fn metrics(app: &TestApp) -> String {
    support::http()
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn calls_are_counted_by_server_tool_and_outcome() {
    // Anyone may call (no agents), through the upstream `metered`.
    let app = TestApp::builder()
        .plain_proxy()
        .agents(Vec::new())
        .upstreams(vec![("metered", Upstream::Echo)])
        .spawn()
        .await;
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "metered__add"),
    ];
    for args in [json!({"a":1,"b":2}), json!({"a":"x"})] {
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"metered__add","arguments":args,"_meta":modern_meta()}});
        post(&app.url, &headers, &call).await;
    }
    let metrics = metrics(&app).await;
    assert!(
        metrics.contains(
            r#"countersign_tool_calls_total{server="metered",tool="add",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"countersign_tool_calls_total{server="metered",tool="add",outcome="invalid_arguments"} 1"#), "{metrics}");
    assert_every_family_has_help(&metrics);
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
    // Its own process, so that SIGTERM ends it; anyone may call, through the upstream `traced`.
    let mut app = TestApp::builder()
        .plain_proxy()
        .agents(Vec::new())
        .upstreams(vec![("traced", Upstream::Echo)])
        .set("telemetry.otlp_endpoint", endpoint)
        .child_process()
        .spawn()
        .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut meta = modern_meta();
    meta["traceparent"] = json!(format!("00-{trace_id}-00f067aa0ba902b7-01"));
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"traced__echo","arguments":{"message":"t"},"_meta":meta}});
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "traced__echo"),
    ];
    let answered = post(&app.url, &headers, &call).await.status == 200;
    assert!(answered, "gateway did not come up");
    // SIGTERM: graceful shutdown flushes the batch exporter.
    app.signal("-TERM").await;
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
/// gateway started with; written to a file, it holds no terminal colour codes. Its metrics
/// (its own process, so its own recorder) count the same run, every family with its HELP, and
/// keep the tool's own time apart from the human wait, as `call.completed` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_told_in_the_log_and_the_metrics() {
    // Agent-1 acting for nobody; approvers bob and carol (ops).
    let mut app = TestApp::builder()
        .agents(vec![Agent::new("agent-1", AGENT_KEY)])
        .approvers(vec![
            Approver::new("bob").in_groups(&["ops"]),
            Approver::new("carol").in_groups(&["ops"]),
        ])
        .spawn_logging()
        .await;
    let allowed = app.call("echo", json!({"message": "hi"})).await;
    assert_eq!(allowed.text(), "hi");
    for _ in 0..3 {
        let refused = crate::support::http()
            .post(&app.url)
            .bearer_auth("not-a-key")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    }
    let held = app.spawn_call("delete_record", json!({"record_id": "logged"}));
    let approval = app.pending(1).await.remove(0);
    let id = approval.id.clone();
    app.vote(&id, "bob", Vote::Approve).await;
    // The humans take their time: the wait is what the tool's own duration must leave out
    // (the behaviour under test, not synchronisation).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.vote(&id, "carol", Vote::Approve).await;
    let deleted = held.answer().await;
    assert_eq!(deleted.text(), "deleted logged");

    let ended = completed_event(&app, &approval.call_id).await;
    let (tool_ms, total_ms) = (ended["tool_ms"].as_u64(), ended["total_ms"].as_u64());
    assert!(
        tool_ms.is_some_and(|t| t < 1000) && total_ms.is_some_and(|t| t >= 1200),
        "call.completed keeps the tool's time apart from the wait: {ended}"
    );
    let metrics = metrics(&app).await;
    assert_every_family_has_help(&metrics);
    for sample in [
        r#"countersign_approvals_decided_total{outcome="approved",channel="http",rule="destructive-needs-two",server="echo",tool="delete_record",agent="agent-1"} 1"#,
        r#"countersign_approval_decision_seconds_count{outcome="approved",rule="destructive-needs-two"} 1"#,
        r#"countersign_approval_votes_total{approver="bob",vote="approve"} 1"#,
        r#"countersign_approval_votes_total{approver="carol",vote="approve"} 1"#,
        r#"countersign_auth_refused_total{route="/mcp"} 3"#,
        "countersign_approvals_pending 0",
        r#"countersign_tool_call_duration_seconds_count{server="echo",tool="delete_record"} 1"#,
        r#"countersign_tool_calls_total{server="echo",tool="delete_record",outcome="ok"} 1"#,
    ] {
        assert!(metrics.contains(sample), "no `{sample}` in:\n{metrics}");
    }
    let tool_seconds = sample_value(
        &metrics,
        r#"countersign_tool_call_duration_seconds_sum{server="echo",tool="delete_record"}"#,
    );
    let decision_seconds = sample_value(
        &metrics,
        r#"countersign_approval_decision_seconds_sum{outcome="approved",rule="destructive-needs-two"}"#,
    );
    assert!(
        tool_seconds < 1.0 && decision_seconds >= 1.2,
        "tool {tool_seconds} s, decision {decision_seconds} s"
    );
    assert!(sample_value(&metrics, "countersign_audit_batch_events_count") >= 1.0);
    assert!(sample_value(&metrics, "countersign_audit_commit_seconds_count") >= 1.0);
    // The decision-time buckets reach hours; the tool-time buckets stay fine-grained.
    assert!(
        metrics.contains(
            r#"countersign_approval_decision_seconds_bucket{outcome="approved",rule="destructive-needs-two",le="28800"}"#
        ),
        "{metrics}"
    );
    let log = app.log_file();
    app.signal("-TERM").await;

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

/// The `call.completed` payload of `call_id`, from the auditor API.
async fn completed_event(app: &TestApp, call_id: &str) -> serde_json::Value {
    // `call.completed` is recorded once the answer left: wait for it (bounded).
    let what = format!("call.completed for {call_id}");
    wait::eventually(&what, Duration::from_secs(5), || async move {
        let events = app.call_events(call_id).await;
        events
            .iter()
            .find(|e| e["kind"] == "call.completed")
            .map(|event| event["payload"].clone())
    })
    .await
}

/// Every metric family in a Prometheus text page has its `# HELP` line.
fn assert_every_family_has_help(metrics: &str) {
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
}

/// The value of the sample named exactly `series` (name and labels).
fn sample_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in:\n{metrics}"))
}

/// A change to the configuration file while running is not half-applied: the log says which
/// sections changed and that a restart applies them, and the running agents stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_reported_as_needing_a_restart() {
    let agent = |id: &str| Agent::new(id, &format!("{id}-key"));
    let mut app = TestApp::builder()
        .plain_proxy()
        .agents(vec![agent("first")])
        .spawn_logging()
        .await;
    app.change_config(|settings| settings.agents(vec![agent("first"), agent("second")]));
    let log = app.log_file();
    let warned = wait::eventually("the change to be logged", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("the configuration file changed"));
        std::future::ready(line.map(str::to_owned))
    })
    .await;
    assert!(
        warned.contains("WARN")
            && warned.contains("sections=\"agents\"")
            && warned.contains("restart countersign to apply it"),
        "{warned}"
    );
    let ping = |key: &'static str| {
        crate::support::http()
            .post(&app.url)
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
    };
    assert_eq!(ping("second-key").await.unwrap().status(), 401);
    assert_ne!(ping("first-key").await.unwrap().status(), 401);
    app.signal("-TERM").await;
}
