//! The web console in a real browser, part two (`tests/console/groups.mjs`, same prerequisites
//! as `console.rs`): an identity provider's group standing for an approver group, and session
//! timeouts. Screenshots go to `target/console-groups-screenshots/`.
//!
//! * gina is in no configuration, but the provider puts her in `payments-team`, which stands
//!   for the approver group `payments`: she and alice (a configured approver) approve a call
//!   that needs two of `payments`; it runs, and `audit verify` (chain and story) passes. eve,
//!   whose only group stands for nothing, sees nothing.
//! * On a second gateway, sessions end after 2 s idle and 4 s in all: both end in the browser,
//!   and the next page load signs in again through the provider.

use crate::console::{
    AGENT_KEY, CLIENT_SECRET, Provider, fresh_screenshots, prerequisites, run_script,
};
use crate::support::{self, Backend, TestDb};
use serde_json::{Value, json};
use std::path::Path;

const IDLE_SECS: u64 = 2;
const MAX_SECS: u64 = 4;

const POLICY: &str = r#"
defaults:
  verdict: deny
  reason: no rule allows this call
rules:
  - id: payments-need-two
    description: Deleting a record needs two of payments.
    match: {tool: delete_record}
    verdict: approve
    approver_groups: [payments]
    quorum: 2
    timeout: 10m
"#;

/// A console whose provider's group `payments-team` stands for `payments`, with sessions of
/// `idle` and `max` seconds.
fn config(db: &TestDb, policies: &Path, issuer: &str, idle: u64, max: u64) -> String {
    format!(
        "database: {{url: '{db}'}}
policy_dir: '{policies}'
upstreams:
  - name: echo
    stdio: {{command: python3, args: ['{echo}']}}
agents:
  - {{id: ci-bot, on_behalf_of: dana, key_sha256: {agent}}}
approvers:
  - {{id: alice, groups: [payments]}}
  - {{id: dana, groups: [payments]}}
auditors:
  - {{id: audrey, token_sha256: {audrey}}}
console:
  session_idle_secs: {idle}
  session_max_secs: {max}
  oidc:
    issuer: '{issuer}'
    client_id: countersign
    client_secret: '{CLIENT_SECRET}'
    scopes: [email, profile, groups]
    people:
      - {{subject: alice, approver: alice}}
      - {{group: auditors, auditor: audrey}}
    approver_groups:
      payments-team: payments
",
        db = db.url,
        policies = policies.display(),
        echo = support::echo_upstream().display(),
        agent = countersign::auth::hash_key(AGENT_KEY),
        audrey = countersign::auth::hash_key("audrey-token"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_groups_and_session_timeouts_in_a_real_browser() {
    let Some((chromium, dir)) = prerequisites() else {
        return;
    };
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("groups.yaml"), POLICY).unwrap();
    let (db, short_db) = (
        TestDb::new(Backend::Sqlite).await,
        TestDb::new(Backend::Sqlite).await,
    );
    let shots = fresh_screenshots("console-groups-screenshots");
    let ports = [support::free_port(), support::free_port()];
    let callbacks = ports.map(|p| format!("http://127.0.0.1:{p}/console/callback"));
    let provider = Provider::start(&dir, &callbacks, &shots.join("oidc-provider.log")).await;
    let yaml = config(&db, policies.path(), &provider.issuer, 900, 3600);
    let gw = support::spawn_gateway_on(&yaml, ports[0]).await;
    let short = config(
        &short_db,
        policies.path(),
        &provider.issuer,
        IDLE_SECS,
        MAX_SECS,
    );
    let short_gw = support::spawn_gateway_on(&short, ports[1]).await;
    let settings = json!({
        "gateway": format!("http://{}", gw.addr), "short_gateway": format!("http://{}", short_gw.addr),
        "agent_key": AGENT_KEY, "idle_ms": IDLE_SECS * 1000, "max_ms": MAX_SECS * 1000,
        "shots": shots, "chromium": chromium,
    });
    run_script(&dir, "groups.mjs", &settings).await;
    the_log_proves_ginas_vote(&gw, &provider.issuer).await;
    let config_file = shots.join("countersign.yaml");
    std::fs::write(&config_file, &yaml).unwrap();
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "verify", "--config", config_file.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // `ok:` only when the chain holds and the story has no violation.
    assert!(
        said.starts_with("ok: ") && !said.contains("violation"),
        "{said}"
    );
}

/// What the log says about the approval: the group the request let stand in, and gina's vote
/// with who she is at the provider and the group that made her eligible.
async fn the_log_proves_ginas_vote(gw: &support::TestGateway, issuer: &str) {
    let events = |kind: &'static str| async move {
        let url = format!("http://{}/audit/events?kind={kind}&limit=100", gw.addr);
        let response = support::http().get(url).bearer_auth("audrey-token").send();
        let events: Value = response.await.unwrap().json().await.unwrap();
        events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"].clone())
            .collect::<Vec<_>>()
    };
    let requested = events("approval.requested").await;
    assert_eq!(
        requested[0]["eligible_groups"],
        json!([{"group": "payments", "issuer": issuer, "idp_groups": ["payments-team"]}])
    );
    let votes = events("approval.vote").await;
    let gina = votes
        .iter()
        .find(|v| v["idp"]["subject"] == "gina")
        .unwrap_or_else(|| panic!("no vote from gina: {votes:?}"));
    assert!(
        gina["approver"].as_str().unwrap().starts_with("idp:"),
        "{gina}"
    );
    assert_eq!(gina["idp"]["groups"], json!(["payments-team"]), "{gina}");
    assert_eq!(gina["result"]["result"], "counted", "{gina}");
    let alice = votes.iter().find(|v| v["approver"] == "alice").unwrap();
    assert_eq!(alice["idp"]["groups"], json!([]), "{alice}");
    assert_eq!(alice["result"]["result"], "decided", "{alice}");
}
