//! Mattermost approval latency benchmark.
//!
//! ```text
//! cargo run --release --example mattermost_bench -- [--calls 200] [--warmup 20] [--postgres]
//! ```
//!
//! One gateway (in process, SQLite or — with `--postgres` — a fresh database on the PostgreSQL
//! at 127.0.0.1:5432, the durable audit log, the Python echo upstream) posts
//! to the Mattermost stub of the test suite. For each of `--calls` sequential approvals it
//! measures:
//!
//! 1. **card**: from the agent sending `tools/call` to the stub receiving `POST /api/v4/posts`;
//! 2. **decision**: from the stub sending the deciding click to the gateway recording
//!    `call.forwarded` (the audit event written just before the upstream request goes out;
//!    its timestamp comes from the audit log, on the same clock).
//!
//! Targets: under 20 ms each at p99.

#[allow(dead_code)]
#[path = "../tests/it/mattermost/stub.rs"]
mod stub;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stub::{Stub, User};
use tokio_util::sync::CancellationToken;

const AGENT_KEY: &str = "bench-agent-key";
const TARGET: Duration = Duration::from_millis(20);

const POLICY: &str = r#"
defaults: {verdict: deny, reason: no rule allows this call}
rules:
  - id: one-approver
    match: {tool: delete_record}
    verdict: approve
    approvers: [bob]
    timeout: 1m
"#;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let (calls, warmup) = (arg("--calls", 200), arg("--warmup", 20));
    let bob = User::named("bob");
    let stub = Stub::start(vec![bob.clone(), User::named("eve")]).await;
    let dir = tempfile::tempdir()?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    std::fs::write(policies.join("policy.yaml"), POLICY)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let postgres = std::env::args().any(|a| a == "--postgres");
    let database = if postgres {
        fresh_postgres().await?
    } else {
        format!("sqlite://{}", dir.path().join("bench.db").display())
    };
    let echo =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/upstreams/echo_server.py");
    let yaml = format!(
        "database: {{url: '{database}'}}
policy_dir: '{policies}'
server: {{listen: '127.0.0.1:{port}'}}
telemetry: {{log_filter: warn}}
upstreams: [{{name: echo, stdio: {{command: python3, args: ['{echo}']}}}}]
agents: [{{id: agent-1, key_sha256: {agent}}}]
approvers: [{{id: bob, chat: {{mattermost: bob}}}}]
auditors: [{{id: audrey, token_sha256: {audrey}}}]
chat:
  mattermost: {{url: '{stub}', token: {token}, callback_url: 'http://127.0.0.1:{port}', channel: eng/mcp-approvals, websocket: false}}
",
        policies = policies.display(),
        echo = echo.display(),
        agent = countersign::auth::hash_key(AGENT_KEY),
        audrey = countersign::auth::hash_key("audrey-token"),
        stub = stub.url,
        token = stub::BOT_TOKEN,
    );
    let config = countersign::config::parse(&yaml, "bench.yaml", &[])?;
    let shutdown = CancellationToken::new();
    let app = countersign::startup::Application::build(&config, shutdown.clone()).await?;
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let mcp = format!("http://127.0.0.1:{port}/mcp");
    let client = countersign::tls::Tls::new(&Default::default())
        .unwrap()
        .client();
    let mut card_latency = Vec::new();
    let mut clicks: Vec<(String, i64)> = Vec::new();
    for i in 0..warmup + calls {
        let started = Instant::now();
        let agent = tokio::spawn(call(client.clone(), mcp.clone(), format!("r-{i}")));
        let post_id = wait_for_card(&stub, i + 1).await?;
        let arrived = stub.inner.lock().unwrap().post_arrivals[&post_id];
        let (url, click) = stub.action_request(&post_id, "approve", &bob);
        let approval = request_id(&stub.post(&post_id));
        let clicked_at = wall_micros();
        let said = stub.send_action(&url, &click).await;
        anyhow::ensure!(
            said["ephemeral_text"] == "Recorded your vote: the call is approved.",
            "click: {said}"
        );
        let answer = tokio::time::timeout(Duration::from_secs(10), agent).await??;
        anyhow::ensure!(answer.contains(&format!("deleted r-{i}")), "call: {answer}");
        if i >= warmup {
            card_latency.push(arrived - started);
            clicks.push((approval, clicked_at));
        }
    }
    let forwarded = forwarded_at(&client, port).await?;
    let decision_latency: Vec<Duration> = clicks
        .iter()
        .map(|(approval, clicked)| {
            let at = forwarded[approval];
            Duration::from_micros((at - clicked).max(0) as u64)
        })
        .collect();
    println!(
        "Mattermost approval latency, {calls} sequential approvals ({warmup} warm-up), SQLite, durable audit"
    );
    println!("| metric | p50 | p99 | max | target (p99) |");
    println!("| --- | --- | --- | --- | --- |");
    let card = report("tools/call sent → card posted at the stub", card_latency);
    let decision = report(
        "deciding click sent → upstream call starting (call.forwarded)",
        decision_latency,
    );
    shutdown.cancel();
    std::process::exit(if card && decision { 0 } else { 2 });
}

/// A new database on the local PostgreSQL (left behind for inspection; names are unique).
async fn fresh_postgres() -> anyhow::Result<String> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let name = format!("cs_mm_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin =
        sqlx::AnyConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await?;
    Ok(format!("postgres://postgres@127.0.0.1:5432/{name}"))
}

async fn call(client: reqwest::Client, mcp: String, record: String) -> String {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo__delete_record",
        "arguments":{"record_id":record},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"0"}}}});
    let response = client
        .post(mcp)
        .bearer_auth(AGENT_KEY)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo__delete_record")
        .json(&body)
        .send()
        .await
        .expect("the gateway answers");
    response.text().await.unwrap_or_default()
}

async fn wait_for_card(stub: &Stub, n: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(card) = stub.cards().get(n - 1) {
            return Ok(card["id"].as_str().unwrap_or_default().to_owned());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    anyhow::bail!("card {n} was not posted in time")
}

fn request_id(post: &Value) -> String {
    post["props"]["attachments"][0]["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["title"] == "Request")
        .and_then(|f| f["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// `call.forwarded` times by approval id, from the auditor API.
async fn forwarded_at(client: &reqwest::Client, port: u16) -> anyhow::Result<HashMap<String, i64>> {
    let events = |kind: &str| {
        let request = client
            .get(format!(
                "http://127.0.0.1:{port}/audit/events?kind={kind}&limit=10000"
            ))
            .bearer_auth("audrey-token");
        async move { anyhow::Ok(request.send().await?.json::<Value>().await?) }
    };
    let list = |v: Value| {
        v.get("events")
            .cloned()
            .unwrap_or(v)
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let approval_of_call: HashMap<String, String> = list(events("approval.requested").await?)
        .iter()
        .map(|e| {
            (
                e["call_id"].as_str().unwrap_or_default().to_owned(),
                e["payload"]["approval_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    Ok(list(events("call.forwarded").await?)
        .iter()
        .filter_map(|e| {
            Some((
                approval_of_call.get(e["call_id"].as_str()?)?.clone(),
                parse_micros(e["at"].as_str()?)?,
            ))
        })
        .collect())
}

fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` as microseconds since the epoch.
fn parse_micros(at: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| at.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let secs_of_day = n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?;
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + secs_of_day) * 1_000_000 + n(20..26)?)
}

fn report(what: &str, mut samples: Vec<Duration>) -> bool {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    let p99 = at(0.99);
    let pass = p99 < TARGET;
    println!(
        "| {what} | {:.2} ms | {:.2} ms | {:.2} ms | < 20 ms {} |",
        at(0.5).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        if pass { "PASS" } else { "FAIL" }
    );
    pass
}
