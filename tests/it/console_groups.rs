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

use crate::app::{Approver, Client, TestAppBuilder};
use crate::console::{
    AGENT_KEY, Provider, console_app, fresh_screenshots, prerequisites, run_script,
};
use crate::support;
use serde_json::{Value, json};

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

/// A console whose provider (at `issuer`) knows alice by her subject, whose group
/// `auditors` is audrey and whose group `payments-team` stands for `payments`, with sessions
/// of `idle` and `max` seconds.
fn payments_console(issuer: &str, idle: u64, max: u64) -> TestAppBuilder {
    let people = json!([
        {"subject": "alice", "approver": "alice"},
        {"group": "auditors", "auditor": "audrey"},
    ]);
    let payments = ["alice", "dana"]
        .map(|who| Approver::new(who).in_groups(&["payments"]))
        .to_vec();
    console_app(issuer, people, &[("payments-team", "payments")])
        .policy(POLICY)
        .approvers(payments)
        .set("console.session_idle_secs", idle)
        .set("console.session_max_secs", max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_groups_and_session_timeouts_in_a_real_browser() {
    let Some((chromium, dir)) = prerequisites() else {
        return;
    };
    let shots = fresh_screenshots("console-groups-screenshots");
    let ports = [support::free_port(), support::free_port()];
    let callbacks = ports.map(|p| format!("http://127.0.0.1:{p}/console/callback"));
    let provider = Provider::start(&dir, &callbacks, &shots.join("oidc-provider.log")).await;
    let app = payments_console(&provider.issuer, 900, 3600)
        .listen_port(ports[0])
        .spawn()
        .await;
    let short = payments_console(&provider.issuer, IDLE_SECS, MAX_SECS)
        .listen_port(ports[1])
        .spawn()
        .await;
    let settings = json!({
        "gateway": app.base, "short_gateway": short.base,
        "agent_key": AGENT_KEY, "idle_ms": IDLE_SECS * 1000, "max_ms": MAX_SECS * 1000,
        "shots": shots, "chromium": chromium,
    });
    run_script(&dir, "groups.mjs", &settings).await;
    the_log_proves_ginas_vote(&app, &provider.issuer).await;
    let verify = app.cli(&["audit", "verify"]).output().unwrap();
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
async fn the_log_proves_ginas_vote(app: &Client, issuer: &str) {
    let events = |kind: &'static str| async move {
        let events = app.audit_events(&format!("kind={kind}&limit=100")).await;
        events
            .iter()
            .map(|e| e["payload"].clone())
            .collect::<Vec<Value>>()
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
