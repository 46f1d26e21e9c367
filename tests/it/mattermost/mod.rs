//! The Mattermost backend against a contract-faithful stub server (`stub.rs`): cards, verified
//! clicks, deny reasons, quorum progress, refused clicks, outages and the websocket mode.

mod attacks;
pub mod stub;

use crate::app::{Approver, TestApp, countersign};
use crate::support::{Backend, free_port, until};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use stub::{BOT_TOKEN, Stub, User};

const POLICY: &str = r#"
defaults:
  verdict: deny
  reason: no rule allows this call
rules:
  - id: read-only-is-fine
    match: {server: echo, read_only: true}
    verdict: allow
  - id: nowhere
    match: {tool: add}
    verdict: approve
    approvers: [bob]
    channel: eng/no-such-channel
  - id: quick-expiry
    match: {tool: slow_count}
    verdict: approve
    approvers: [bob]
    timeout: 2s
  - id: one-of-two
    match:
      tool: delete_record
      arguments: {properties: {record_id: {pattern: "^one-"}}, required: [record_id]}
    verdict: approve
    approvers: [bob, carol]
    quorum: 1
    timeout: 1m
    classification: secret
    redact: [/token]
  - id: two-of-ops
    match: {tool: delete_record, destructive: true}
    verdict: approve
    approver_groups: [ops]
    quorum: 2
    timeout: 1m
    post_results: true
"#;

fn alice() -> User {
    User::named("alice")
}
fn bob() -> User {
    User::named("bob")
}
fn carol() -> User {
    User::named("carol")
}
fn dave() -> User {
    User::named("dave")
}
fn mallory() -> User {
    User::named("mallory")
}
fn eve() -> User {
    User::named("eve")
}
/// Not an approver, like mallory.
fn oscar() -> User {
    User::named("oscar")
}

/// The channel cards go to.
const CHANNEL: &str = "eng/mcp-approvals";

/// How approvers answer on the card.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Buttons, whose clicks the stub sends back to the gateway.
    Buttons,
    /// Reactions and thread replies, which the gateway reads from the websocket.
    Reactions,
}

/// `chat.mattermost` for `stub` in buttons mode, with clicks coming back to loopback `port`
/// (and no websocket).
pub fn buttons(stub: &Stub, port: u16) -> Value {
    json!({
        "url": stub.url,
        "token": BOT_TOKEN,
        "channel": CHANNEL,
        "callback_url": format!("http://127.0.0.1:{port}"),
        "websocket": false,
    })
}

/// A stub Mattermost, and a gateway posting to it; derefs to the gateway's [`TestApp`].
struct Harness {
    stub: Arc<Stub>,
    app: TestApp,
}

impl std::ops::Deref for Harness {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

async fn harness(backend: Backend, mode: Mode) -> Harness {
    harness_with(backend, mode, |_| {}).await
}

/// `script` prepares the stub before the gateway starts. Approvers alice, bob, carol and eve
/// (ops) and dave (finance, known to Mattermost by his user id); mallory and oscar are only
/// channel members.
async fn harness_with(backend: Backend, mode: Mode, script: impl FnOnce(&Stub)) -> Harness {
    let stub = Stub::start(vec![
        alice(),
        bob(),
        carol(),
        dave(),
        mallory(),
        eve(),
        oscar(),
    ])
    .await;
    script(&stub);
    let port = free_port();
    let mattermost = match mode {
        Mode::Buttons => buttons(&stub, port),
        Mode::Reactions => json!({
            "url": stub.url,
            "token": BOT_TOKEN,
            "channel": CHANNEL,
            "mode": "reactions",
        }),
    };
    let in_ops = |who: &str| {
        Approver::new(who)
            .in_groups(&["ops"])
            .chat("mattermost", who)
    };
    let app = TestApp::builder()
        .backend(backend)
        .policy(POLICY)
        .listen_port(port)
        .approvers(vec![
            in_ops("alice"),
            in_ops("bob"),
            in_ops("carol"),
            Approver::new("dave")
                .in_groups(&["finance"])
                .chat("mattermost", &dave().id),
            in_ops("eve"),
        ])
        .set("chat.mattermost", mattermost)
        .spawn()
        .await;
    Harness { stub, app }
}

/// The n-th card (1-based) once posted.
async fn card(h: &Harness, n: usize) -> Value {
    until(&format!("{n} card(s) are posted"), || {
        h.stub.cards().len() >= n
    })
    .await;
    h.stub.cards()[n - 1].clone()
}

/// Waits until the gateway has stored the card `post_id` (it then records who can see it, the
/// `audience` sighting): a click, reaction or reply that comes sooner finds no card.
async fn card_recorded(h: &Harness, post_id: &str) {
    let what = format!("the gateway to record card {post_id}");
    crate::wait::eventually(&what, Duration::from_secs(10), || async move {
        let seen = events(h, "approval.seen").await;
        seen.iter()
            .any(|e| {
                e["payload"]["how"] == "audience" && e["payload"]["evidence"]["post_id"] == post_id
            })
            .then_some(())
    })
    .await
}

fn id(post: &Value) -> String {
    post["id"].as_str().unwrap().to_owned()
}

fn attachment(post: &Value) -> &Value {
    &post["props"]["attachments"][0]
}

fn actions(post: &Value) -> Vec<String> {
    attachment(post)["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

fn field<'a>(post: &'a Value, title: &str) -> &'a str {
    attachment(post)["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"] == title)
        .and_then(|f| f["value"].as_str())
        .unwrap_or_else(|| panic!("no field {title}: {post}"))
}

/// The audit events of `kind` (as auditor audrey).
async fn events(h: &Harness, kind: &str) -> Vec<Value> {
    h.audit_events(&format!("kind={kind}")).await
}

fn no_violations(h: &Harness) {
    assert_eq!(
        h.stub.violations(),
        Vec::<String>::new(),
        "requests that break the contract"
    );
}

async fn approve_by_click(backend: Backend) {
    let h = harness(backend, Mode::Buttons).await;
    let agent = h.spawn_call(
        "delete_record",
        json!({"record_id": "one-1", "token": "s3cret", "note": "n".repeat(500)}),
    );
    let posted = card(&h, 1).await;
    let message = posted["message"].as_str().unwrap();
    assert!(
        message.starts_with("**SECRET**\n"),
        "classification banner: {message}"
    );
    let args = attachment(&posted)["text"].as_str().unwrap();
    assert!(
        args.starts_with("```\n") && args.contains("[redacted]") && !args.contains("s3cret"),
        "{args}"
    );
    assert!(
        args.contains("[cut: 302 more characters]") && args.contains("countersign approvals show"),
        "long values are cut, and the card says where to read them: {args}"
    );
    assert_eq!(field(&posted, "Agent"), "`agent-1`");
    assert_eq!(field(&posted, "On behalf of"), "alice");
    assert_eq!(field(&posted, "Rule"), "`one-of-two`");
    assert_eq!(field(&posted, "Approvals"), "0/1");
    assert!(field(&posted, "Expires").ends_with(" UTC"));
    assert_eq!(actions(&posted), ["approve", "deny"]);
    let (url, click) = h.stub.action_request(&id(&posted), "approve", &bob());
    assert_eq!(url, format!("{}/mattermost/action", h.base));
    let said = h.stub.send_action(&url, &click).await;
    assert_eq!(
        said["ephemeral_text"], "Recorded your vote: the call is approved.",
        "{said}"
    );
    let after = h.stub.post(&id(&posted));
    assert!(
        actions(&after).is_empty(),
        "buttons removed once decided: {after}"
    );
    assert!(
        after["message"]
            .as_str()
            .unwrap()
            .contains(":white_check_mark: Approved by bob"),
        "{after}"
    );
    assert!(field(&after, "Decided").ends_with(" UTC"), "{after}");
    assert_eq!(agent.answer().await.text(), "deleted one-1");
    until("the thread reply", || {
        h.stub.replies(&id(&posted)).len() == 1
    })
    .await;
    let reply = &h.stub.replies(&id(&posted))[0];
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with(":checkered_flag: The call ran: **"),
        "{reply}"
    );
    assert!(
        !reply["message"].as_str().unwrap().contains("```"),
        "results only when the policy says so"
    );
    let votes = events(&h, "approval.vote").await;
    let evidence = &votes[0]["payload"]["evidence"];
    assert_eq!(
        evidence["trigger_id"], click["trigger_id"],
        "the raw trigger_id is kept"
    );
    assert_eq!(evidence["trigger"]["verified"], true);
    let seen = events(&h, "approval.seen").await;
    let audience = seen
        .iter()
        .find(|e| e["payload"]["how"] == "audience")
        .expect("audience recorded");
    assert_eq!(
        audience["payload"]["evidence"]["members"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert!(
        seen.iter()
            .any(|e| e["payload"]["how"] == "click" && e["payload"]["who"] == "bob")
    );
    no_violations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_approve_by_click_on_sqlite() {
    approve_by_click(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_approve_by_click_on_postgres() {
    approve_by_click(Backend::Postgres).await;
}

async fn deny_with_reason(backend: Backend) {
    let h = harness(backend, Mode::Buttons).await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-2"}));
    let posted = card(&h, 1).await;
    let said = h.stub.click(&id(&posted), "deny", &bob()).await;
    assert!(
        said["ephemeral_text"]
            .as_str()
            .unwrap()
            .contains("reason in the dialog"),
        "{said}"
    );
    assert_eq!(
        h.stub.inner.lock().unwrap().dialogs.len(),
        1,
        "a dialog was opened"
    );
    assert_eq!(
        actions(&h.stub.post(&id(&posted))),
        ["approve", "deny"],
        "still pending until the reason comes"
    );
    let wrong_user = h.stub.submit_dialog(&carol(), Some("not mine")).await;
    assert_eq!(
        wrong_user["error"],
        "Refused: the dialog was opened for another user."
    );
    let forged = h
        .stub
        .submit_dialog_with(&bob(), Some("forged"), |state| {
            // Bind the dialog to another approval: the HMAC no longer matches.
            let text = state.as_str().unwrap().to_owned();
            *state = json!(format!("f{}", &text[1..]));
        })
        .await;
    assert_eq!(
        forged["error"],
        "Refused: the dialog state was not issued by Countersign."
    );
    let empty = h.stub.submit_dialog(&bob(), Some("  ")).await;
    assert!(empty["errors"]["reason"].is_string(), "{empty}");
    assert_eq!(
        h.stub.submit_dialog(&bob(), Some("not on prod")).await,
        json!({})
    );
    let response = agent.answer().await;
    assert!(
        response.text().starts_with("Denied by bob: not on prod"),
        "{response}"
    );
    until("the card shows the denial", || {
        let after = h.stub.post(&id(&posted));
        actions(&after).is_empty()
            && after["message"]
                .as_str()
                .unwrap()
                .contains("Denied by bob: `not on prod`")
    })
    .await;
    assert!(
        h.stub.post(&id(&posted))["message"]
            .as_str()
            .unwrap()
            .ends_with(": `not on prod`")
    );
    let votes = events(&h, "approval.vote").await;
    let vote = votes
        .iter()
        .find(|v| v["payload"]["result"]["result"] == "decided")
        .expect("the deciding vote");
    assert_eq!(vote["payload"]["reason"], "not on prod");
    assert!(
        vote["payload"]["evidence"]["click"]["trigger_id"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    no_violations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_deny_with_a_reason_from_the_dialog_on_sqlite() {
    deny_with_reason(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_deny_with_a_reason_from_the_dialog_on_postgres() {
    deny_with_reason(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_quorum_shows_progress_and_refuses_non_approvers_and_double_clicks() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "r-2"}));
    let posted = card(&h, 1).await;
    let post_id = id(&posted);
    let (_, unused_deny) = h.stub.action_request(&post_id, "deny", &bob());
    let url = format!("{}/mattermost/action", h.base);
    let said = h.stub.click(&post_id, "approve", &mallory()).await;
    assert_eq!(
        said["ephemeral_text"],
        "You are not an approver for this call."
    );
    let said = h.stub.click(&post_id, "approve", &dave()).await;
    assert_eq!(
        said["ephemeral_text"],
        "Your vote does not count: dave is not an approver for this call."
    );
    let said = h.stub.click(&post_id, "approve", &alice()).await;
    assert!(
        said["ephemeral_text"]
            .as_str()
            .unwrap()
            .contains("asked for this call"),
        "{said}"
    );
    // Bob double-clicks: the same callback twice at once; one counts, the other is told so.
    let (_, twice) = h.stub.action_request(&post_id, "approve", &bob());
    let (a, b) = tokio::join!(
        h.stub.send_action(&url, &twice),
        h.stub.send_action(&url, &twice)
    );
    let mut said = [a["ephemeral_text"].clone(), b["ephemeral_text"].clone()];
    said.sort_by_key(|s| s.to_string());
    assert_eq!(
        said,
        [
            json!("Recorded your approval: 1 of 2."),
            json!("You have already voted on this call.")
        ]
    );
    let progressed = h.stub.post(&post_id);
    assert_eq!(field(&progressed, "Approvals"), "1/2 (@bob)");
    assert_eq!(
        actions(&progressed),
        ["approve", "deny"],
        "buttons stay while pending"
    );
    let again = h.stub.click(&post_id, "approve", &bob()).await;
    assert_eq!(
        again["ephemeral_text"],
        "You have already voted on this call."
    );
    let decided = h.stub.click(&post_id, "approve", &carol()).await;
    assert_eq!(
        decided["ephemeral_text"],
        "Recorded your vote: the call is approved."
    );
    let decided = h.stub.post(&post_id);
    assert!(
        decided["message"]
            .as_str()
            .unwrap()
            .contains("Approved by carol"),
        "{decided}"
    );
    assert_eq!(field(&decided, "Approvals"), "2/2 (@bob, @carol)");
    assert_eq!(agent.answer().await.text(), "deleted r-2");
    let late = h.stub.send_action(&url, &unused_deny).await;
    assert_eq!(late["ephemeral_text"], "Already approved by @carol.");
    until("the thread reply with the result", || {
        h.stub.replies(&post_id).len() == 1
    })
    .await;
    let reply = h.stub.replies(&post_id)[0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reply.contains("```json") && reply.contains("deleted r-2"),
        "post_results: {reply}"
    );
    no_violations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_two_approvers_racing_decide_once() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-10"}));
    let post_id = id(&card(&h, 1).await);
    card_recorded(&h, &post_id).await;
    let (url, from_bob) = h.stub.action_request(&post_id, "approve", &bob());
    let (_, from_carol) = h.stub.action_request(&post_id, "approve", &carol());
    let (a, b) = tokio::join!(
        h.stub.send_action(&url, &from_bob),
        h.stub.send_action(&url, &from_carol)
    );
    // Both clicked the same button of the same card: both votes reach the broker, which
    // decides once and tells the second who decided.
    let said = [
        a["ephemeral_text"].as_str().unwrap(),
        b["ephemeral_text"].as_str().unwrap(),
    ];
    let decided = said
        .iter()
        .filter(|s| **s == "Recorded your vote: the call is approved.")
        .count();
    let late = said
        .iter()
        .filter(|s| s.starts_with("Already approved by @"))
        .count();
    assert_eq!((decided, late), (1, 1), "{said:?}");
    assert_eq!(agent.answer().await.text(), "deleted one-10");
    let decisions = events(&h, "approval.decided").await;
    assert_eq!(decisions.len(), 1);
    no_violations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_refuses_forged_replayed_and_misdirected_clicks() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-3"}));
    let post_id = id(&card(&h, 1).await);
    let url = format!("{}/mattermost/action", h.base);
    let (_, valid) = h.stub.action_request(&post_id, "approve", &bob());
    let refused = |change: &dyn Fn(&mut Value)| {
        let mut body = valid.clone();
        change(&mut body);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "forged token",
            refused(&|b| b["context"]["token"] = json!("AAAAforgedAAAA")),
            "This button is not valid.",
        ),
        (
            "token of the other button",
            refused(&|b| b["context"]["decision"] = json!("deny")),
            "This button is not valid.",
        ),
        (
            "trigger for another user",
            refused(&|b| b["user_id"] = json!(carol().id)),
            "Mattermost could not confirm who clicked; click again.",
        ),
        (
            "stale trigger",
            refused(&|b| {
                b["trigger_id"] = json!(h.stub.trigger_id(&bob().id, stub::now_ms() - 40_000))
            }),
            "Mattermost could not confirm who clicked; click again.",
        ),
        (
            "trigger from the future",
            refused(&|b| {
                b["trigger_id"] = json!(h.stub.trigger_id(&bob().id, stub::now_ms() + 60_000))
            }),
            "Mattermost could not confirm who clicked; click again.",
        ),
        (
            "tampered trigger",
            refused(&|b| b["trigger_id"] = json!(tamper(b["trigger_id"].as_str().unwrap()))),
            "Mattermost could not confirm who clicked; click again.",
        ),
        (
            "another post",
            refused(&|b| b["post_id"] = json!("p0000000000000000000000099")),
            "This button does not belong to this post.",
        ),
        (
            "another channel",
            refused(&|b| b["channel_id"] = json!("other000000000000000000000")),
            "This button does not belong to this post.",
        ),
        (
            "no context",
            refused(&|b| {
                b.as_object_mut()
                    .unwrap()
                    .remove("context")
                    .map(drop)
                    .unwrap_or(())
            }),
            "This is not a Countersign button.",
        ),
    ];
    for (case, body, expected) in &cases {
        let said = h.stub.send_action(&url, body).await;
        assert_eq!(said["ephemeral_text"], *expected, "{case}");
        assert!(
            said.get("update").is_none(),
            "{case}: the card is left alone"
        );
    }
    assert_eq!(
        actions(&h.stub.post(&post_id)),
        ["approve", "deny"],
        "still pending"
    );
    let said = h.stub.send_action(&url, &valid).await;
    assert_eq!(
        said["ephemeral_text"], "Recorded your vote: the call is approved.",
        "refusals changed nothing"
    );
    assert_eq!(agent.answer().await.text(), "deleted one-3");
    let replayed = h.stub.send_action(&url, &valid).await;
    assert_eq!(
        replayed["ephemeral_text"], "Already approved by @bob.",
        "a replayed click changes nothing (the broker says why)"
    );
    let rejected = events(&h, "approval.vote").await;
    let rejected = rejected
        .iter()
        .filter(|e| e["payload"]["result"]["result"] == "rejected")
        .count();
    // Every case but the one without a context names the approval.
    assert_eq!(
        rejected,
        cases.len() - 1,
        "each refused click naming the approval is audited"
    );
    no_violations(&h);
}

/// A trigger_id whose signed user part was changed (the signature no longer matches).
fn tamper(trigger: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = String::from_utf8(b64.decode(trigger).unwrap()).unwrap();
    let mut parts: Vec<String> = raw.splitn(4, ':').map(str::to_owned).collect();
    parts[2] = (parts[2].parse::<i64>().unwrap() + 1).to_string();
    b64.encode(parts.join(":"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_click_after_expiry_is_refused_and_the_card_says_expired() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call("slow_count", json!({"n": 1}));
    let post_id = id(&card(&h, 1).await);
    let (url, late) = h.stub.action_request(&post_id, "approve", &bob());
    let response = agent.answer().await;
    assert!(response.text().contains("expired"), "{response}");
    until("the card shows the expiry", || {
        let after = h.stub.post(&post_id);
        actions(&after).is_empty()
            && after["message"]
                .as_str()
                .unwrap()
                .contains(":hourglass: Expired: nobody decided in time")
    })
    .await;
    let said = h.stub.send_action(&url, &late).await;
    assert_eq!(said["ephemeral_text"], "This request has expired.");
    no_violations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_down_while_posting_refuses_the_call_after_retrying() {
    let h = harness_with(Backend::Sqlite, Mode::Buttons, |stub| {
        stub.down.store(true, std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let started = std::time::Instant::now();
    let response = h.call("slow_count", json!({"n": 1})).await;
    assert!(response.is_error(), "{response}");
    assert!(
        response
            .text()
            .contains("no approver could be asked: mattermost unavailable"),
        "{response}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "retried within the approval's timeout"
    );
    let attempts = h
        .stub
        .requests()
        .iter()
        .filter(|r| r.contains("/channels/name/"))
        .count();
    assert!(attempts >= 3, "retried with backoff: {attempts} attempts");
    let decided = events(&h, "approval.decided").await;
    assert_eq!(decided[0]["payload"]["outcome"], "cancelled");
    assert!(
        decided[0]["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("mattermost unavailable")
    );
    // A short outage is ridden out.
    h.stub
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    h.stub
        .fail_posts
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-4"}));
    let post_id = id(&card(&h, 1).await);
    h.stub.click(&post_id, "approve", &carol()).await;
    assert_eq!(agent.answer().await.text(), "deleted one-4");
    no_violations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_without_a_signing_key_accepts_the_token_and_records_weaker_evidence() {
    let h = harness_with(Backend::Sqlite, Mode::Buttons, |stub| {
        stub.publishes_key
            .store(false, std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-5"}));
    let post_id = id(&card(&h, 1).await);
    let said = h.stub.click(&post_id, "deny", &bob()).await;
    assert_eq!(
        said["ephemeral_text"], "Recorded your vote: the call is denied.",
        "no dialog without a verified trigger"
    );
    assert!(agent.answer().await.text().starts_with("Denied by bob"));
    let votes = events(&h, "approval.vote").await;
    let trigger = &votes[0]["payload"]["evidence"]["trigger"];
    assert_eq!(trigger["verified"], false, "{trigger}");
    assert!(
        trigger["why"]
            .as_str()
            .unwrap()
            .contains("AsymmetricSigningPublicKey"),
        "{trigger}"
    );
    no_violations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_acknowledgements_are_requested_only_from_a_licensed_server() {
    let h = harness_with(Backend::Sqlite, Mode::Buttons, |stub| {
        stub.licensed
            .store(true, std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-6"}));
    let posted = card(&h, 1).await;
    assert_eq!(
        posted["metadata"]["priority"],
        json!({"priority": "important", "requested_ack": true})
    );
    h.stub.click(&id(&posted), "approve", &bob()).await;
    agent.answer().await;
    let unlicensed = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = unlicensed.spawn_call("delete_record", json!({"record_id": "one-7"}));
    let posted = card(&unlicensed, 1).await;
    assert_eq!(
        posted["metadata"],
        json!({}),
        "no acknowledgement request on an unlicensed server"
    );
    unlicensed.stub.click(&id(&posted), "approve", &bob()).await;
    agent.answer().await;
    no_violations(&h);
    no_violations(&unlicensed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_chat_test_checks_the_server_token_channel_and_callback() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let run = |config: &std::path::Path| {
        countersign(&["chat", "test", "mattermost", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let good = run(&h.config_file());
    let out = String::from_utf8_lossy(&good.stdout).to_string();
    assert!(
        good.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok  ")).count(),
        5,
        "{out}"
    );
    let yaml = std::fs::read_to_string(h.config_file()).unwrap();
    let broken = yaml
        .replace(BOT_TOKEN, "wrong-token")
        .replace(&h.base, "http://127.0.0.1:9");
    let broken_path = h.dir().join("broken.yaml");
    std::fs::write(&broken_path, broken).unwrap();
    let bad = run(&broken_path);
    let out = String::from_utf8_lossy(&bad.stdout).to_string();
    assert!(!bad.status.success());
    assert!(
        out.contains("FAIL the bot token is accepted") && out.contains("fix: "),
        "{out}"
    );
    assert!(out.contains("AllowedUntrustedInternalConnections"), "{out}");
}

/// The real server stores a post (and tells the channel of it) before its creator reads the
/// answer: a reply in the card's thread can reach the gateway before it knows the card's post.
/// It still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_a_reply_before_the_gateway_knows_its_card_still_counts() {
    let h = harness(Backend::Sqlite, Mode::Reactions).await;
    until("the gateway listens on the websocket", || {
        h.stub.websocket_listeners() >= 1
    })
    .await;
    h.stub
        .post_answer_delay_ms
        .store(1000, std::sync::atomic::Ordering::Relaxed);
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-early"}));
    let post_id = id(&card(&h, 1).await);
    h.stub.reply(&bob(), &post_id, "approve");
    assert_eq!(agent.answer().await.text(), "deleted one-early");
    no_violations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_reactions_mode_decides_by_reaction_and_thread_reply() {
    let h = harness(Backend::Sqlite, Mode::Reactions).await;
    until("the gateway listens on the websocket", || {
        h.stub.websocket_listeners() >= 1
    })
    .await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-8"}));
    let posted = card(&h, 1).await;
    let post_id = id(&posted);
    assert!(
        actions(&posted).is_empty(),
        "no buttons when Mattermost cannot reach the gateway"
    );
    until("the bot pre-added its reactions", || {
        let reactions = h.stub.inner.lock().unwrap().reactions.clone();
        ["white_check_mark", "x"].iter().all(|e| {
            reactions.iter().any(|r| {
                r["emoji_name"] == *e
                    && r["user_id"] == stub::BOT_ID
                    && r["post_id"] == post_id.as_str()
            })
        })
    })
    .await;
    h.stub.react(&mallory(), &post_id, "white_check_mark");
    h.stub.react(&bob(), &post_id, "eyes");
    h.stub.acknowledge(&carol(), &post_id);
    h.stub.react(&bob(), &post_id, "white_check_mark");
    assert_eq!(agent.answer().await.text(), "deleted one-8");
    until("the card shows the approval", || {
        h.stub.post(&post_id)["message"]
            .as_str()
            .unwrap()
            .contains("Approved by bob")
    })
    .await;
    let seen: Vec<(String, String)> = events(&h, "approval.seen")
        .await
        .iter()
        .map(|e| {
            (
                e["payload"]["who"].as_str().unwrap().to_owned(),
                e["payload"]["how"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(_, how)| how != "audience")
        .collect();
    let expected = [
        ("mattermost:mallory", "reaction"),
        ("bob", "reaction"),
        ("carol", "acknowledgement"),
        ("bob", "reaction"),
    ];
    assert_eq!(seen, expected.map(|(w, h)| (w.to_owned(), h.to_owned())));
    let votes = events(&h, "approval.vote").await;
    assert_eq!(
        votes[0]["payload"]["result"]["result"], "not_authorized",
        "mallory's reaction does not count"
    );
    assert_eq!(votes[1]["payload"]["evidence"]["event"], "reaction_added");
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-9"}));
    let second = id(&card(&h, 2).await);
    h.stub.reply(&carol(), &second, "deny: not on prod");
    let response = agent.answer().await;
    assert!(
        response.text().starts_with("Denied by carol: not on prod"),
        "{response}"
    );
    no_violations(&h);
}
