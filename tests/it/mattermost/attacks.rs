//! The attacks of issue 12 against the Mattermost backend, each reproduced against the stub as
//! the real server behaves: a body that lies about the user, stale triggers, answers the server
//! gave up on, approvers clicking at once, text that tries to format the card, and arguments
//! that try to hide a field.

use super::*;
use crate::support::Backend;

/// The URL clicks go to.
fn action_url(h: &Harness) -> String {
    format!("{}/mattermost/action", h.base)
}

/// What the card shows outside code spans and code blocks: where markdown would render.
fn rendered_text(post: &Value) -> String {
    let mut parts = vec![post["message"].as_str().unwrap_or_default().to_owned()];
    let attachment = attachment(post);
    parts.push(attachment["text"].as_str().unwrap_or_default().to_owned());
    for field in attachment["fields"].as_array().into_iter().flatten() {
        parts.push(field["value"].as_str().unwrap_or_default().to_owned());
    }
    parts
        .iter()
        .map(|p| outside_code(p))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` without its code spans and fenced blocks (CommonMark: a run of n backticks closes
/// only at the next run of exactly n).
fn outside_code(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let (mut out, mut i) = (String::new(), 0);
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let open = run_at(i);
        let mut j = i + open;
        let close = loop {
            if j >= chars.len() {
                break None;
            }
            if chars[j] == '`' {
                let run = run_at(j);
                if run == open {
                    break Some(j + run);
                }
                j += run;
            } else {
                j += 1;
            }
        };
        match close {
            Some(end) => i = end,
            None => {
                out.extend(&chars[i..i + open]);
                i += open;
            }
        }
    }
    out
}

#[test]
fn outside_code_drops_spans_and_blocks() {
    assert_eq!(outside_code("a `b` c"), "a  c");
    assert_eq!(outside_code("a `` x`y `` c"), "a  c");
    assert_eq!(outside_code("```json\n[x](y)\n```\nz"), "\nz");
    assert_eq!(outside_code("a ` b"), "a ` b");
}

/// Item 1: the callback body's `user_name` is not signed; only `user_id` is (in the
/// `trigger_id`). Two non-approvers claiming to be bob and carol must not approve, and a
/// renamed account does not carry its old name's votes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_a_user_name_in_the_body_does_not_choose_the_approver() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "r-lie"}));
    let post_id = id(&card(&h, 1).await);
    for (attacker, claimed) in [(mallory(), "bob"), (oscar(), "carol")] {
        let (url, mut body) = h.stub.action_request(&post_id, "approve", &attacker);
        // Mattermost signed the attacker's user id; the body says someone else.
        body["user_name"] = json!(claimed);
        let said = h.stub.send_action(&url, &body).await;
        assert_eq!(
            said["ephemeral_text"], "You are not an approver for this call.",
            "{} claiming to be {claimed}",
            attacker.username
        );
    }
    // Bob renames himself, and mallory takes the name "bob": the person is the account.
    h.stub.rename(&bob().id, "robert");
    h.stub.rename(&mallory().id, "bob");
    let renamed_mallory = User {
        id: mallory().id,
        username: "bob".into(),
    };
    let said = h.stub.click(&post_id, "approve", &renamed_mallory).await;
    assert_eq!(
        said["ephemeral_text"],
        "You are not an approver for this call."
    );
    assert_eq!(field(&h.stub.post(&post_id), "Approvals"), "0/2");
    let robert = User {
        id: bob().id,
        username: "robert".into(),
    };
    let said = h.stub.click(&post_id, "approve", &robert).await;
    assert_eq!(said["ephemeral_text"], "Recorded your approval: 1 of 2.");
    let said = h.stub.click(&post_id, "approve", &carol()).await;
    assert_eq!(
        said["ephemeral_text"],
        "Recorded your vote: the call is approved."
    );
    assert_eq!(agent.answer().await.text(), "deleted r-lie");
    let votes = events(&h, "approval.vote").await;
    let refused: Vec<&str> = votes
        .iter()
        .filter(|v| v["payload"]["result"]["result"] == "not_authorized")
        .map(|v| v["payload"]["approver"].as_str().unwrap())
        .collect();
    assert_eq!(refused.len(), 3, "{votes:#?}");
    assert!(
        refused
            .iter()
            .all(|who| !["bob", "carol", "mattermost:bob", "mattermost:carol"].contains(who)),
        "the body's name never names the voter: {refused:?}"
    );
    let requests = h.stub.requests();
    assert!(
        requests.iter().any(|r| r == "POST /api/v4/users/usernames"),
        "configured usernames are resolved to ids through the API: {requests:?}"
    );
    no_violations(&h);
}

/// Item 2: a trigger is good for exactly 30 s (Mattermost's default
/// `OutgoingIntegrationRequestsTimeout`), and for at most 2 s of clock skew ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_a_trigger_is_accepted_for_exactly_30_seconds() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-age"}));
    let post_id = id(&card(&h, 1).await);
    let url = action_url(&h);
    for offset_ms in [-30_500, -31_000, -33_000, 2_500] {
        let (_, mut body) = h.stub.action_request(&post_id, "approve", &bob());
        body["trigger_id"] = json!(h.stub.trigger_id(&bob().id, stub::now_ms() + offset_ms));
        let said = h.stub.send_action(&url, &body).await;
        assert_eq!(
            said["ephemeral_text"], "Mattermost could not confirm who clicked; click again.",
            "a trigger {offset_ms} ms from now"
        );
    }
    let (_, mut body) = h.stub.action_request(&post_id, "approve", &bob());
    body["trigger_id"] = json!(h.stub.trigger_id(&bob().id, stub::now_ms() - 29_000));
    let said = h.stub.send_action(&url, &body).await;
    assert_eq!(
        said["ephemeral_text"],
        "Recorded your vote: the call is approved."
    );
    assert_eq!(agent.answer().await.text(), "deleted one-age");
    no_violations(&h);
}

/// Item 3: Mattermost gave up on a click's answer, so the card still shows the buttons it
/// showed. Those buttons keep working, for the same approver and for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_a_click_whose_answer_was_lost_leaves_every_button_usable() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "r-lost"}));
    let post_id = id(&card(&h, 1).await);
    let wait = Duration::from_secs(5);
    let (url, deny) = h.stub.action_request(&post_id, "deny", &bob());
    h.stub.send_action_given_up(&url, &deny, wait).await;
    until("the deny dialog opened", || {
        h.stub.inner.lock().unwrap().dialogs.len() == 1
    })
    .await;
    assert_eq!(h.stub.submit_dialog(&bob(), None).await, json!({}));
    // Bob changes his mind, and clicks Deny again on the card as it still reads.
    let said = h.stub.click(&post_id, "deny", &bob()).await;
    assert!(
        said["ephemeral_text"]
            .as_str()
            .unwrap()
            .contains("reason in the dialog"),
        "{said}"
    );
    assert_eq!(h.stub.submit_dialog(&bob(), None).await, json!({}));
    // Carol's approval counts though its answer is lost too; the card then shows it.
    let (_, approve) = h.stub.action_request(&post_id, "approve", &carol());
    h.stub.send_action_given_up(&url, &approve, wait).await;
    until("the card shows carol's approval", || {
        field(&h.stub.post(&post_id), "Approvals") == "1/2 (@carol)"
    })
    .await;
    let said = h.stub.click(&post_id, "approve", &eve()).await;
    assert_eq!(
        said["ephemeral_text"],
        "Recorded your vote: the call is approved."
    );
    assert_eq!(agent.answer().await.text(), "deleted r-lost");
    no_violations(&h);
}

/// Item 3: three approvers click Approve on a quorum-2 card at once. Every click is heard:
/// two decide, the third is told who decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_three_approvers_clicking_at_once_are_all_heard() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "r-three"}));
    let post_id = id(&card(&h, 1).await);
    let url = action_url(&h);
    let clicks: Vec<Value> = [bob(), carol(), eve()]
        .iter()
        .map(|u| h.stub.action_request(&post_id, "approve", u).1)
        .collect();
    let (a, b, c) = tokio::join!(
        h.stub.send_action(&url, &clicks[0]),
        h.stub.send_action(&url, &clicks[1]),
        h.stub.send_action(&url, &clicks[2]),
    );
    let said: Vec<&str> = [&a, &b, &c]
        .iter()
        .map(|s| s["ephemeral_text"].as_str().unwrap())
        .collect();
    let count = |wanted: &dyn Fn(&str) -> bool| said.iter().filter(|s| wanted(s)).count();
    assert_eq!(
        (
            count(&|s| s == "Recorded your approval: 1 of 2."),
            count(&|s| s == "Recorded your vote: the call is approved."),
            count(&|s| s.starts_with("Already approved by @")),
        ),
        (1, 1, 1),
        "{said:?}"
    );
    assert_eq!(agent.answer().await.text(), "deleted r-three");
    assert_eq!(events(&h, "approval.decided").await.len(), 1);
    no_violations(&h);
}

/// Item 4: a deny typed into a thread where others have already posted still decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_a_reply_in_a_busy_thread_still_answers_the_card() {
    let h = harness(Backend::Sqlite, Mode::Reactions).await;
    until("the gateway listens on the websocket", || {
        h.stub.websocket_listeners() >= 1
    })
    .await;
    let agent = h.spawn_call("delete_record", json!({"record_id": "one-busy"}));
    let post_id = id(&card(&h, 1).await);
    card_recorded(&h, &post_id).await;
    h.stub.reply(&mallory(), &post_id, "who asked for this?");
    h.stub.reply(&dave(), &post_id, "not me");
    h.stub.reply(&bob(), &post_id, "deny: not on prod");
    let response = agent.answer().await;
    assert!(
        response.text().starts_with("Denied by bob: not on prod"),
        "{response}"
    );
    no_violations(&h);
}

/// Item 7: an approver's reason and the agent's arguments are shown, never rendered: no link,
/// no mention, no emphasis reaches the card's markdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_approver_and_agent_text_cannot_format_the_card() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let agent = h.spawn_call(
        "delete_record",
        json!({"record_id": "one-esc", "note": "```\n[agent](http://evil.example/a) @channel"}),
    );
    let posted = card(&h, 1).await;
    let post_id = id(&posted);
    let shown = rendered_text(&posted);
    assert!(
        !shown.contains("evil.example") && !shown.contains("@channel"),
        "agent text renders on the card:\n{shown}"
    );
    h.stub.click(&post_id, "deny", &bob()).await;
    let reason = "[link](http://evil.example/r) @channel **now** `x`";
    assert_eq!(h.stub.submit_dialog(&bob(), Some(reason)).await, json!({}));
    assert!(
        agent
            .answer()
            .await
            .text()
            .starts_with("Denied by bob: [link]")
    );
    until("the card shows the denial", || {
        actions(&h.stub.post(&post_id)).is_empty()
    })
    .await;
    let decided = h.stub.post(&post_id);
    let shown = rendered_text(&decided);
    assert!(
        !shown.contains("evil.example") && !shown.contains("@channel") && !shown.contains("**now"),
        "the reason renders on the card:\n{shown}"
    );
    assert!(
        decided["message"]
            .as_str()
            .unwrap()
            .contains("http://evil.example/r"),
        "the reason is still shown, as text: {decided}"
    );
    no_violations(&h);
}

/// Item 8: an agent puts long fields first to push `to` off the card. Every top-level field is
/// shown, the required one first, each value cut on its own, and the card says what was cut and
/// where to read it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_no_argument_field_can_be_pushed_off_the_card() {
    let h = harness(Backend::Sqlite, Mode::Buttons).await;
    let mut arguments = serde_json::Map::new();
    arguments.insert("note".into(), json!("n".repeat(5_000)));
    for i in 0..20 {
        arguments.insert(format!("f{i:02}"), json!("x".repeat(190)));
    }
    arguments.insert("to".into(), json!("mallory-offshore"));
    arguments.insert("record_id".into(), json!("one-hide"));
    let agent = h.spawn_call("delete_record", Value::Object(arguments));
    let posted = card(&h, 1).await;
    let all = format!(
        "{}\n{}",
        posted["message"].as_str().unwrap(),
        attachment(&posted)["text"].as_str().unwrap()
    );
    assert!(all.contains("mallory-offshore"), "`to` is hidden:\n{all}");
    let first_field = all.find("record_id").expect("record_id shown");
    assert!(
        first_field < all.find("note").unwrap(),
        "required fields come first:\n{all}"
    );
    assert!(
        all.contains("countersign approvals show") && all.contains("/approvals/"),
        "the card says where to read the arguments in full:\n{all}"
    );
    h.stub.click(&id(&posted), "approve", &bob()).await;
    assert_eq!(agent.answer().await.text(), "deleted one-hide");
    no_violations(&h);
}
