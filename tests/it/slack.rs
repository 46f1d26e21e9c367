//! The Slack backend against a Web API stub (there is no local Slack server): cards through
//! `chat.postMessage`, outcomes through `chat.update`, and signed, form-encoded interaction
//! posts as Slack would send them.

use crate::app::{Approver, Client, TestApp, TestAppBuilder};
use crate::chat_gateway as cg;
use crate::wait;
use axum::extract::{Path, State};
use axum::routing::post;
use countersign::chat::slack::signature;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SIGNING_SECRET: &str = "test-slack-signing-secret";
pub const CHANNEL: &str = "C0APPROVALS";
/// The workspace the app is installed in (`chat.slack.team_id`).
pub const TEAM: &str = "T0TEAM1";

/// Every Web API call the stub received: (method, JSON body).
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// A Slack Web API stub on a free loopback port: records every call, answers like Slack.
#[derive(Clone)]
pub struct SlackStub {
    pub url: String,
    calls: Calls,
}

impl SlackStub {
    pub async fn start() -> SlackStub {
        let calls = Calls::default();
        let app = axum::Router::new()
            .route("/api/{method}", post(web_api))
            .with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        SlackStub { url, calls }
    }

    pub fn calls(&self, method: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// `chat.slack` for a gateway using this stub.
    pub fn settings(&self) -> Value {
        SlackStub::settings_at(&self.url, SIGNING_SECRET)
    }

    /// `chat.slack` for a Web API at `api_base`, with this signing secret.
    pub fn settings_at(api_base: &str, secret: &str) -> Value {
        json!({"bot_token": "xoxb-test", "signing_secret": secret, "team_id": TEAM,
            "channel": CHANNEL, "api_base": api_base})
    }

    /// The posted card of `approval` (bounded wait): its message `ts`.
    pub async fn card(&self, approval: &str) -> String {
        let what = format!("a Slack card for approval {approval}");
        let posted = wait::eventually(&what, Duration::from_secs(5), || async move {
            self.calls("chat.postMessage")
                .into_iter()
                .find(|m| m["blocks"].to_string().contains(approval) && m["thread_ts"].is_null())
        })
        .await;
        posted["ts_given"].as_str().unwrap().to_owned()
    }

    /// The card's text as it now reads (its last `chat.update`, or the post), without mrkdwn
    /// emphasis.
    pub fn card_text(&self, ts: &str) -> String {
        self.card_mrkdwn(ts).replace(['*', '`'], "")
    }

    /// The card's mrkdwn as sent, with `[Approve] [Deny]` while it has buttons.
    pub fn card_mrkdwn(&self, ts: &str) -> String {
        let calls = self.calls.lock().unwrap();
        let latest = calls.iter().rev().find(|(m, b)| {
            (m == "chat.update" && b["ts"] == ts)
                || (m == "chat.postMessage" && b["ts_given"] == ts)
        });
        let Some((_, message)) = latest else {
            return String::new();
        };
        let blocks = message["blocks"].as_array().cloned().unwrap_or_default();
        let mut text: Vec<String> = blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
            .collect();
        if blocks.iter().any(|b| b["type"] == "actions") {
            text.push("[Approve] [Deny]".into());
        }
        text.join("\n")
    }
}

async fn web_api(
    State(calls): State<Calls>,
    Path(method): Path<String>,
    headers: axum::http::HeaderMap,
    axum::Json(mut body): axum::Json<Value>,
) -> axum::Json<Value> {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer xoxb-test") {
        return axum::Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    let mut calls = calls.lock().unwrap();
    let ts = format!("1700000000.{:06}", calls.len());
    let answer = match method.as_str() {
        "chat.postMessage" => {
            body["ts_given"] = json!(ts);
            json!({"ok": true, "channel": body["channel"], "ts": ts})
        }
        "chat.update" => json!({"ok": true, "channel": body["channel"], "ts": body["ts"]}),
        "views.open" => json!({"ok": true, "view": {"id": "V1"}}),
        "auth.test" => json!({"ok": true, "user_id": "UBOT", "team": "test"}),
        "conversations.info" if body["channel"] == CHANNEL => {
            json!({"ok": true, "channel": {"id": CHANNEL}})
        }
        "conversations.info" => json!({"ok": false, "error": "channel_not_found"}),
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    calls.push((method, body));
    axum::Json(answer)
}

/// `U0BOB` for bob.
pub fn slack_user(who: &str) -> String {
    format!("U0{}", who.to_uppercase())
}

/// The chat tests' app on `stub`, each approver's Slack account being [`slack_user`].
fn app_on(stub: &SlackStub) -> TestAppBuilder {
    cg::builder()
        .approvers(cg::approvers_on("slack", slack_user))
        .set("chat.slack", stub.settings())
}

/// POSTs an interaction payload to the gateway as Slack would: form-encoded, v0-signed at
/// `timestamp` (now when `None`). Returns the HTTP status.
pub async fn signed_interaction(app: &Client, payload: &Value, timestamp: Option<i64>) -> u16 {
    let timestamp = timestamp
        .unwrap_or_else(|| countersign::timestamp::now_ms() / 1000)
        .to_string();
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let sig = signature::sign(SIGNING_SECRET.as_bytes(), &timestamp, body.as_bytes());
    send_interaction(app, &timestamp, &sig, body).await
}

async fn send_interaction(app: &Client, timestamp: &str, sig: &str, body: String) -> u16 {
    let started = std::time::Instant::now();
    let response = crate::support::http()
        .post(format!("{}/chat/slack/interactions", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "Slack wants an answer within 3 s"
    );
    response.status().as_u16()
}

/// A button click on the card.
pub fn click(who: &str, approval: &str, action: &str, ts: &str) -> Value {
    json!({
        "type": "block_actions", "trigger_id": format!("trigger-{who}-{approval}"),
        "user": {"id": slack_user(who), "username": who, "team_id": TEAM},
        "team": {"id": TEAM, "domain": "test"}, "channel": {"id": CHANNEL},
        "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL},
        "actions": [{"action_id": action, "block_id": format!("countersign_{approval}"),
            "type": "button", "value": approval, "action_ts": "1700000001.000001"}],
    })
}

/// The deny modal submitted with `reason`.
pub fn deny_submission(who: &str, approval: &str, reason: &str) -> Value {
    json!({
        "type": "view_submission", "user": {"id": slack_user(who), "username": who},
        "team": {"id": TEAM},
        "view": {"id": "V1", "callback_id": "countersign_deny_reason", "private_metadata": approval,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}},
    })
}

/// Clicks Deny, waits for the modal to open, and submits it with `reason`.
pub async fn deny_in_modal(
    stub: &SlackStub,
    app: &Client,
    who: &str,
    approval: &str,
    reason: &str,
) {
    let ts = stub.card(approval).await;
    let deny = click(who, approval, "countersign_deny", &ts);
    assert_eq!(signed_interaction(app, &deny, None).await, 200);
    let trigger = format!("trigger-{who}-{approval}");
    let opened = wait::eventually("the deny modal to open", Duration::from_secs(5), || {
        let opened = stub.calls("views.open");
        std::future::ready(
            opened
                .into_iter()
                .find(|v| v["trigger_id"] == trigger.as_str()),
        )
    })
    .await;
    assert_eq!(opened["view"]["private_metadata"], approval);
    let submission = deny_submission(who, approval, reason);
    assert_eq!(signed_interaction(app, &submission, None).await, 200);
}

async fn started() -> (SlackStub, TestApp) {
    let stub = SlackStub::start().await;
    let app = app_on(&stub).spawn().await;
    (stub, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_approves_and_chat_update_removes_the_buttons() {
    let (stub, app) = started().await;
    let (agent, approval) = app.held_record("one-s1").await;
    let id = approval.id.as_str();
    let ts = stub.card(id).await;
    let posted = &stub.calls("chat.postMessage")[0];
    assert_eq!(posted["channel"], CHANNEL);
    assert_eq!(posted["text"], "Approval needed: delete_record on echo");
    assert!(stub.card_text(&ts).contains("[Approve] [Deny]"));
    assert_eq!(
        signed_interaction(&app, &click("bob", id, "countersign_approve", &ts), None).await,
        200
    );
    assert_eq!(agent.answer().await.text(), "deleted one-s1");
    let text = wait::within(Duration::from_millis(2500), || {
        let text = stub.card_text(&ts);
        std::future::ready(if text.contains("Approved by bob") {
            Ok(text)
        } else {
            Err(text)
        })
    })
    .await;
    let text = text.unwrap_or_else(|last| last.unwrap_or_default());
    assert!(
        text.contains("Approved by bob") && !text.contains("[Approve]"),
        "{text}"
    );
    let vote = app
        .call_events(&approval.call_id)
        .await
        .into_iter()
        .find(|e| e["kind"] == "approval.vote")
        .unwrap();
    assert_eq!(vote["payload"]["source"], "slack");
    assert_eq!(vote["payload"]["evidence"]["user"]["id"], "U0BOB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_asks_for_the_reason_in_a_modal() {
    let (stub, app) = started().await;
    let (agent, approval) = app.held_record("one-s2").await;
    let id = approval.id.as_str();
    deny_in_modal(&stub, &app, "carol", id, "not on prod").await;
    assert_eq!(
        agent.answer().await.text(),
        format!("Denied by carol: not on prod (approval {id})")
    );
}

/// POSTs an Events API envelope as Slack would: JSON, v0-signed now (or with `sig`). Returns
/// the status and the body.
async fn send_event(app: &Client, envelope: &Value, sig: Option<&str>) -> (u16, String) {
    let timestamp = (countersign::timestamp::now_ms() / 1000).to_string();
    let body = envelope.to_string();
    let signed = signature::sign(SIGNING_SECRET.as_bytes(), &timestamp, body.as_bytes());
    let response = crate::support::http()
        .post(format!("{}/chat/slack/events", app.base))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", &timestamp)
        .header("x-slack-signature", sig.unwrap_or(&signed))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `who` replies `text` in the thread of the card at `ts`.
fn thread_reply(who: &str, ts: &str, text: &str, n: u32) -> Value {
    json!({
        "type": "event_callback", "team_id": TEAM, "event_id": format!("Ev{n}"),
        "event": {"type": "message", "channel": CHANNEL, "user": slack_user(who), "text": text,
            "ts": format!("1700000100.{n:06}"), "thread_ts": ts},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_reply_denies_with_its_reason_and_other_messages_do_not_vote() {
    let (stub, app) = started().await;
    let (challenge, said) = send_event(
        &app,
        &json!({"type": "url_verification", "challenge": "c-123", "token": "t"}),
        None,
    )
    .await;
    assert_eq!(
        (challenge, said.as_str()),
        (200, r#"{"challenge":"c-123"}"#)
    );
    let (agent, approval) = app.held_record("one-s3").await;
    let id = approval.id.as_str();
    let ts = stub.card(id).await;
    let forged = thread_reply("carol", &ts, "approve", 1);
    assert_eq!(send_event(&app, &forged, Some("v0=00")).await.0, 401);
    // Not votes: an unmapped user, the bot itself, an edit, chatter from an approver.
    let mut bot = thread_reply("bob", &ts, "approve", 2);
    bot["event"]["bot_id"] = json!("B1");
    let mut edit = thread_reply("bob", &ts, "approve", 3);
    edit["event"]["subtype"] = json!("message_changed");
    for ignored in [
        thread_reply("mallory", &ts, "approve", 4),
        bot,
        edit,
        thread_reply("bob", &ts, "approve after lunch?", 5),
    ] {
        assert_eq!(send_event(&app, &ignored, None).await.0, 200);
    }
    let call_id = approval.call_id.as_str();
    for who in ["U0MALLORY", "bob"] {
        app.call_events_with(call_id, |e| {
            e["kind"] == "approval.seen"
                && e["payload"]["how"] == "reply"
                && e["payload"]["who"] == who
        })
        .await;
    }
    let denial = thread_reply("carol", &ts, "deny: not on prod", 6);
    assert_eq!(send_event(&app, &denial, None).await.0, 200);
    assert_eq!(
        agent.answer().await.text(),
        format!("Denied by carol: not on prod (approval {id})")
    );
    let events = app.call_events(call_id).await;
    let votes: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "approval.vote")
        .collect();
    assert_eq!(votes.len(), 1, "only carol's reply voted: {votes:?}");
    assert_eq!(votes[0]["payload"]["evidence"]["event_id"], "Ev6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_stale_and_altered_interactions_are_refused() {
    let (stub, app) = started().await;
    let (agent, approval) = app.held_record("one-s3").await;
    let id = approval.id.as_str();
    let ts = stub.card(id).await;
    let payload = click("bob", id, "countersign_approve", &ts);
    let stale = countersign::timestamp::now_ms() / 1000 - 301;
    assert_eq!(
        signed_interaction(&app, &payload, Some(stale)).await,
        401,
        "stale"
    );
    let now = (countersign::timestamp::now_ms() / 1000).to_string();
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let sig = signature::sign(SIGNING_SECRET.as_bytes(), &now, body.as_bytes());
    let altered = body.replace("U0BOB", "U0CAROL");
    assert_eq!(
        send_interaction(&app, &now, &sig, altered).await,
        401,
        "altered body"
    );
    let wrong = signature::sign(b"not-the-secret", &now, body.as_bytes());
    assert_eq!(
        send_interaction(&app, &now, &wrong, body.clone()).await,
        401,
        "wrong secret"
    );
    assert_eq!(
        send_interaction(&app, &now, "", body).await,
        401,
        "unsigned"
    );
    // An unmapped Slack user's click is verified, recorded as a sighting, and not counted.
    let mut outsider = click("mallory", id, "countersign_approve", &ts);
    outsider["user"]["id"] = json!("U0MALLORY");
    assert_eq!(signed_interaction(&app, &outsider, None).await, 200);
    let call_id = approval.call_id.as_str();
    let events = app
        .call_events_with(call_id, |e| e["kind"] == "approval.seen")
        .await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "approval.vote")
            .count(),
        0,
        "{events:#?}"
    );
    assert_eq!(app.approval(id).await.status, "pending");
    assert_eq!(
        signed_interaction(&app, &click("bob", id, "countersign_approve", &ts), None).await,
        200
    );
    assert_eq!(agent.answer().await.text(), "deleted one-s3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bot_token_fails_the_call_closed() {
    let stub = SlackStub::start().await;
    let app = app_on(&stub)
        .set("chat.slack.bot_token", "xoxb-revoked")
        .spawn()
        .await;
    let (agent, _approval) = app.held_record("one-s4").await;
    let answer = agent.answer().await;
    let text = answer.text();
    assert!(text.contains("invalid_auth"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_test_checks_the_token_and_the_channel() {
    let stub = SlackStub::start().await;
    let on_stub = || cg::chat_only().set("chat.slack", stub.settings());
    let app = on_stub().spawn_stopped().await;
    let (ok, out) = app.chat_test("slack", &[]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("ok   the bot can see channel C0APPROVALS"),
        "{out}"
    );
    let elsewhere = on_stub()
        .set("chat.slack.channel", "C0NOWHERE")
        .spawn_stopped()
        .await;
    let (ok, out) = elsewhere.chat_test("slack", &[]).await;
    assert!(
        !ok && out.contains("channel_not_found") && out.contains("fix: invite the app"),
        "{out}"
    );
    let (ok, out) = app.chat_test("matrix", &[]).await;
    assert!(
        !ok && out.contains("no chat backend \"matrix\" is configured (configured: slack)"),
        "{out}"
    );
}

/// A gateway configuration with `chat.slack` set to `slack` and bob's Slack account, parsed as
/// at start-up: the error, if it is refused.
fn refused_config(slack: Value, bob_account: &str) -> Option<String> {
    let unused = std::path::Path::new("unused");
    let yaml = cg::chat_only()
        .approvers(vec![Approver::new("bob").chat("slack", bob_account)])
        .set("chat.slack", slack)
        .yaml("sqlite://unused.db", unused, unused, None);
    countersign::config::parse(&yaml, "countersign.yaml", &[])
        .err()
        .map(|e| e.to_string())
}

/// Item 6: an empty or short signing secret would let anyone sign interactions; the gateway
/// refuses to start and names the key.
#[test]
fn an_empty_or_short_signing_secret_is_refused_at_start() {
    let good = SlackStub::settings_at("http://127.0.0.1:9/api", SIGNING_SECRET);
    assert_eq!(refused_config(good, "U0BOB"), None);
    for secret in ["", "short-secret"] {
        let slack = SlackStub::settings_at("http://127.0.0.1:9/api", secret);
        let refused = refused_config(slack, "U0BOB").unwrap_or_else(|| panic!("{secret} accepted"));
        assert!(
            refused.contains("chat.slack.signing_secret") && refused.contains("16"),
            "{refused}"
        );
    }
}

/// Item 6: approvers are Slack user ids; a username (which any member can take) is refused.
#[test]
fn a_slack_approver_named_by_username_is_refused_at_start() {
    let slack = SlackStub::settings_at("http://127.0.0.1:9/api", SIGNING_SECRET);
    let refused = refused_config(slack, "bob").expect("a username mapping is refused");
    assert!(
        refused.contains("approvers[0].chat.slack") && refused.contains("user id"),
        "{refused}"
    );
}

/// Item 6: a correctly signed click from another Slack team (a shared channel, another
/// workspace of the app) does not vote, even with an approver's user id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_from_another_team_does_not_vote() {
    let (stub, app) = started().await;
    let (agent, approval) = app.held_record("one-team").await;
    let id = approval.id.as_str();
    let ts = stub.card(id).await;
    let mut foreign = click("bob", id, "countersign_approve", &ts);
    foreign["team"]["id"] = json!("T_OTHER");
    foreign["user"]["team_id"] = json!("T_OTHER");
    assert_eq!(signed_interaction(&app, &foreign, None).await, 200);
    let call_id = approval.call_id.as_str();
    let events = app
        .call_events_with(call_id, |e| e["kind"] == "approval.vote")
        .await;
    let vote = events
        .iter()
        .find(|e| e["kind"] == "approval.vote")
        .unwrap();
    assert_eq!(vote["payload"]["result"]["result"], "rejected", "{vote}");
    assert_eq!(app.approval(id).await.status, "pending");
    let mut foreign_reply = thread_reply("bob", &ts, "approve", 1);
    foreign_reply["team_id"] = json!("T_OTHER");
    assert_eq!(send_event(&app, &foreign_reply, None).await.0, 200);
    app.call_events_with(call_id, |e| {
        e["kind"] == "approval.vote" && e["payload"]["evidence"]["event_id"] == "Ev1"
    })
    .await;
    assert_eq!(app.approval(id).await.status, "pending");
    assert_eq!(
        signed_interaction(&app, &click("bob", id, "countersign_approve", &ts), None).await,
        200
    );
    assert_eq!(agent.answer().await.text(), "deleted one-team");
}

/// Item 4: in a busy thread, and sent with "Also send to channel" (`thread_broadcast`), a deny
/// still answers the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_in_a_busy_thread_answers_the_card() {
    let (stub, app) = started().await;
    let (agent, approval) = app.held_record("two-busy").await;
    let id = approval.id.as_str();
    let ts = stub.card(id).await;
    for (n, who) in [(1, "mallory"), (2, "dave")] {
        let chatter = thread_reply(who, &ts, "is this prod?", n);
        assert_eq!(send_event(&app, &chatter, None).await.0, 200);
    }
    let mut denial = thread_reply("bob", &ts, "deny: not on prod", 3);
    denial["event"]["subtype"] = json!("thread_broadcast");
    assert_eq!(send_event(&app, &denial, None).await.0, 200);
    assert_eq!(
        agent.answer().await.text(),
        format!("Denied by bob: not on prod (approval {id})")
    );
}

/// Item 7: the reason is shown in code on the card: no link, mention or emphasis renders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_text_cannot_format_the_card() {
    let (stub, app) = started().await;
    let (agent, approval) = app.held_record("one-esc").await;
    let id = approval.id.as_str();
    let ts = stub.card(id).await;
    let reason = "`<http://evil.example|click>` <!channel> *now*";
    deny_in_modal(&stub, &app, "carol", id, reason).await;
    assert!(agent.answer().await.text().starts_with("Denied by carol"));
    let mrkdwn = wait::within(Duration::from_millis(2500), || {
        let mrkdwn = stub.card_mrkdwn(&ts);
        std::future::ready(if mrkdwn.contains("Denied by carol") {
            Ok(mrkdwn)
        } else {
            Err(mrkdwn)
        })
    })
    .await;
    let mrkdwn = mrkdwn.unwrap_or_else(|last| last.unwrap_or_default());
    // Slack's code spans do not nest: split on backticks, keep the parts outside.
    let outside: String = mrkdwn.split('`').step_by(2).collect();
    assert!(
        !outside.contains("evil.example") && !outside.contains("*now*"),
        "the reason renders on the card:\n{mrkdwn}"
    );
    assert!(
        !mrkdwn.contains("<http") && !mrkdwn.contains("<!channel>"),
        "{mrkdwn}"
    );
}

/// Item 8: a long first field cannot push the payee off the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_argument_field_can_be_pushed_off_the_card() {
    let (stub, app) = started().await;
    let arguments =
        json!({"note": "n".repeat(5_000), "to": "mallory-offshore", "record_id": "one-hide"});
    let (agent, approval) = app.held_record_with(arguments).await;
    let id = approval.id.as_str();
    let ts = stub.card(id).await;
    let text = stub.card_text(&ts);
    assert!(text.contains("mallory-offshore"), "`to` is hidden:\n{text}");
    assert!(
        text.find("record_id").unwrap() < text.find("note").unwrap(),
        "required fields first:\n{text}"
    );
    assert!(
        text.contains(&format!("countersign approvals show {id}")),
        "{text}"
    );
    assert_eq!(
        signed_interaction(&app, &click("bob", id, "countersign_approve", &ts), None).await,
        200
    );
    assert_eq!(agent.answer().await.text(), "deleted one-hide");
}
