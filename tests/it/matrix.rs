//! The Matrix backend against a real Synapse (see `synapse.rs`): cards, reactions, replies,
//! read receipts, edits, expiry, and a restart in the middle of a pending approval.

use crate::app::{TestApp, TestAppBuilder};
use crate::chat_gateway as cg;
use crate::support::Backend;
use crate::synapse::{MatrixUser, synapse, unique};
use crate::wait;
use serde_json::{Value, json};
use std::time::Duration;

const TEN_S: Duration = Duration::from_secs(10);
/// Each look is a request to Synapse: not more often than this.
const SYNAPSE_POLL: Duration = Duration::from_millis(50);

/// A bot, the four approvers, an outsider, and a room they all joined.
pub struct World {
    pub bot: MatrixUser,
    pub people: Vec<(&'static str, MatrixUser)>,
    pub mallory: MatrixUser,
    pub room: String,
}

impl World {
    pub async fn new() -> World {
        World::with_room(false).await
    }

    pub async fn with_room(encrypted: bool) -> World {
        let synapse = synapse();
        let bot = synapse.register(&unique("bot")).await;
        let mut people = Vec::new();
        for who in cg::APPROVERS {
            people.push((who, synapse.register(&unique(who)).await));
        }
        let mallory = synapse.register(&unique("mallory")).await;
        let mut invited: Vec<&MatrixUser> = people.iter().map(|(_, u)| u).collect();
        invited.push(&mallory);
        let room = bot.create_room(&invited, encrypted).await;
        for user in invited {
            user.join(&room).await;
        }
        World {
            bot,
            people,
            mallory,
            room,
        }
    }

    pub fn user(&self, who: &str) -> &MatrixUser {
        &self.people.iter().find(|(w, _)| *w == who).unwrap().1
    }

    /// `chat.matrix`: the bot's token and the room.
    pub fn settings(&self) -> Value {
        json!({"homeserver": synapse().url, "access_token": self.bot.token, "room": self.room,
            "sync_timeout_secs": 5})
    }

    /// The chat tests' app in this world, each approver's Matrix account being their user here.
    pub fn builder(&self) -> TestAppBuilder {
        cg::builder()
            .approvers(cg::approvers_on("matrix", |who| self.user(who).id.clone()))
            .set("chat.matrix", self.settings())
    }
}

async fn started() -> (World, TestApp) {
    let world = World::new().await;
    let app = world.builder().spawn().await;
    (world, app)
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_by_reaction_posts_the_card_edits_it_and_replies_in_its_thread() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("one-r1").await;
    let bob = world.user("bob");
    let card = bob.card(&world.room, &approval.id).await;
    let text = bob.card_text(&world.room, &card).await;
    for fact in [
        "delete_record on echo",
        "Agent: agent-1",
        "On behalf of: alice",
        "Rule: one-of-two",
        "one-r1",
        "Approvals: 0/1",
        "React ✅",
    ] {
        assert!(text.contains(fact), "the card says {fact:?}:\n{text}");
    }
    let original = bob
        .recent(&world.room)
        .await
        .into_iter()
        .find(|e| e["event_id"] == card.as_str())
        .unwrap();
    assert_eq!(original["content"]["format"], "org.matrix.custom.html");
    assert!(
        original["content"]["formatted_body"]
            .as_str()
            .unwrap()
            .contains("<code>agent-1</code>")
    );
    // The bot seeds both reactions (just after the card); they are its own and do not count.
    let (room, card_id) = (&world.room, &card);
    let keys = wait::eventually_every(
        "the bot's two reactions",
        TEN_S,
        SYNAPSE_POLL,
        || async move {
            let keys: Vec<String> = bob
                .relations(room, card_id)
                .await
                .iter()
                .filter(|e| e["type"] == "m.reaction")
                .map(|e| {
                    e["content"]["m.relates_to"]["key"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            if keys.len() >= 2 {
                Ok(keys)
            } else {
                Err(format!("{keys:?}"))
            }
        },
    )
    .await;
    assert_eq!(keys, ["✅", "❌"]);
    assert_eq!(app.approval(&approval.id).await.status, "pending");

    bob.react(&world.room, &card, "✅").await;
    assert_eq!(agent.answer().await.text(), "deleted one-r1");
    let decided = app.approval(&approval.id).await;
    assert_eq!(
        (decided.status.as_str(), decided.decided_by.as_deref()),
        ("approved", Some("bob"))
    );
    let text = bob
        .card_text_with(&world.room, &card, "Approved by bob")
        .await;
    assert!(
        !text.contains("React ✅"),
        "no instructions once decided:\n{text}"
    );
    // The reply in the card's thread after the call ran.
    let what = "a thread reply after the call";
    let finished = wait::eventually_every(what, TEN_S, SYNAPSE_POLL, || async move {
        bob.relations(room, card_id)
            .await
            .into_iter()
            .find(|e| e["content"]["m.relates_to"]["rel_type"] == "m.thread")
    })
    .await;
    assert!(
        finished["content"]["body"]
            .as_str()
            .unwrap()
            .starts_with("Call finished: ok"),
        "{finished}"
    );
    let events = app.call_events(&approval.call_id).await;
    let vote = events
        .iter()
        .find(|e| e["kind"] == "approval.vote")
        .expect("a vote");
    assert_eq!(vote["payload"]["source"], "matrix");
    assert_eq!(vote["payload"]["evidence"]["room_id"], world.room.as_str());
    assert_eq!(vote["payload"]["evidence"]["sender"], bob.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_by_reply_carries_the_reason_to_the_agent_and_the_card() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("one-r2").await;
    let carol = world.user("carol");
    let card = carol.card(&world.room, &approval.id).await;
    carol.reply(&world.room, &card, "who asked for this?").await;
    carol.reply(&world.room, &card, "deny: not on prod").await;
    let expected = format!("Denied by carol: not on prod (approval {})", approval.id);
    assert_eq!(agent.answer().await.text(), expected);
    carol
        .card_text_with(&world.room, &card, "Denied by carol: not on prod")
        .await;
    let events = app.call_events(&approval.call_id).await;
    let votes: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "approval.vote")
        .collect();
    assert_eq!(votes.len(), 1, "a comment is not a vote: {events:#?}");
    assert_eq!(votes[0]["payload"]["reason"], "not on prod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_from_unmapped_users_the_agents_human_and_other_keys_do_not_count() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("one-r3").await;
    let bob = world.user("bob");
    let card = bob.card(&world.room, &approval.id).await;
    world.mallory.react(&world.room, &card, "✅").await;
    world.user("alice").react(&world.room, &card, "✅").await;
    bob.react(&world.room, &card, "👍").await;
    // Let the sync loop see them all: the sightings are recorded, the status stays pending.
    let call_id = &approval.call_id;
    let events = app
        .call_events_with(call_id, |e| {
            e["kind"] == "approval.seen"
                && e["payload"]["evidence"]["content"]["m.relates_to"]["key"] == "👍"
        })
        .await;
    let seen_by: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "approval.seen" && e["payload"]["how"] == "reaction")
        .map(|e| e["payload"]["who"].as_str().unwrap())
        .collect();
    assert!(
        seen_by.contains(&world.mallory.id.as_str())
            && seen_by.contains(&"alice")
            && seen_by.contains(&"bob"),
        "{seen_by:?}"
    );
    assert_eq!(app.approval(&approval.id).await.status, "pending");
    let votes: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "approval.vote")
        .collect();
    assert_eq!(
        votes.len(),
        1,
        "only alice's reaction reaches the broker (and is refused): {events:#?}"
    );
    assert_eq!(votes[0]["payload"]["result"]["result"], "not_authorized");
    bob.react(&world.room, &card, "✅").await;
    assert_eq!(agent.answer().await.text(), "deleted one-r3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_two_of_three_shows_progress_on_the_card() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("two-r4").await;
    let (bob, dave) = (world.user("bob"), world.user("dave"));
    let card = bob.card(&world.room, &approval.id).await;
    bob.react(&world.room, &card, "✅").await;
    bob.card_text_with(&world.room, &card, "Approvals: 1/2")
        .await;
    assert_eq!(app.approval(&approval.id).await.status, "pending");
    dave.reply(&world.room, &card, "approve").await;
    assert_eq!(agent.answer().await.text(), "deleted two-r4");
    let text = bob
        .card_text_with(&world.room, &card, "Approved by dave")
        .await;
    assert!(text.contains("Approvals: 2/2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_edits_the_card() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("fast-r5").await;
    let bob = world.user("bob");
    let card = bob.card(&world.room, &approval.id).await;
    assert!(agent.answer().await.text().contains("expired"));
    bob.card_text_with(&world.room, &card, "Expired: nobody decided in time")
        .await;
    // A reaction after the end is recorded but changes nothing.
    bob.react(&world.room, &card, "✅").await;
    let call_id = &approval.call_id;
    let events = app
        .call_events_with(call_id, |e| e["kind"] == "approval.vote")
        .await;
    let vote = events
        .iter()
        .find(|e| e["kind"] == "approval.vote")
        .unwrap();
    assert_eq!(vote["payload"]["result"]["result"], "already_decided");
    assert_eq!(app.approval(&approval.id).await.status, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_are_recorded_as_seen() {
    let (world, app) = started().await;
    let (_agent, approval) = app.held_record("one-r6").await;
    let carol = world.user("carol");
    let card = carol.card(&world.room, &approval.id).await;
    carol.read_receipt(&world.room, &card).await;
    world.mallory.read_receipt(&world.room, &card).await;
    let call_id = &approval.call_id;
    let receipts =
        |e: &Value| e["kind"] == "approval.seen" && e["payload"]["how"] == "read_receipt";
    let (app, receipts) = (&app, &receipts);
    let events = wait::eventually("two read receipts recorded", TEN_S, || async move {
        let events = app.call_events(call_id).await;
        if events.iter().filter(|e| receipts(e)).count() >= 2 {
            Ok(events)
        } else {
            Err(format!("{:?}", kinds(&events)))
        }
    })
    .await;
    let mut who: Vec<&str> = events
        .iter()
        .filter(|e| receipts(e))
        .map(|e| e["payload"]["who"].as_str().unwrap())
        .collect();
    who.sort();
    let mut expected = vec!["carol", world.mallory.id.as_str()];
    expected.sort();
    assert_eq!(who, expected, "{:?}", kinds(&events));
    let receipt = events
        .iter()
        .find(|e| receipts(e) && e["payload"]["who"] == "carol")
        .unwrap();
    assert_eq!(receipt["payload"]["evidence"]["event_id"], card.as_str());
    assert_eq!(receipt["payload"]["source"], "matrix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_stored_sync_position_on_sqlite() {
    restart_resumes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_stored_sync_position_on_postgres() {
    restart_resumes(Backend::Postgres).await;
}

async fn restart_resumes(backend: Backend) {
    let world = World::new().await;
    let mut app = world.builder().backend(backend).spawn().await;
    let (agent, approval) = app.held_record("two-r7").await;
    let (bob, carol) = (world.user("bob"), world.user("carol"));
    let card = bob.card(&world.room, &approval.id).await;
    bob.react(&world.room, &card, "✅").await;
    bob.card_text_with(&world.room, &card, "Approvals: 1/2")
        .await;
    app.stop();
    // The call still waiting is answered as the gateway stops.
    agent.answer().await;
    // Forget which events were handled: only the stored sync position now keeps bob's reaction
    // from being read (and counted) again.
    let db = countersign::store::connect(&app.db.url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("select count(*) from chat_matrix_sync")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "the sync position is stored");
    sqlx::query("delete from chat_matrix_handled")
        .execute(&db.pool)
        .await
        .unwrap();
    // While the gateway is down: carol approves, and bob's earlier reaction is still there.
    carol.react(&world.room, &card, "✅").await;
    app.start().await;
    let decided = app.approval_becomes(&approval.id, "approved").await;
    assert_eq!(decided.decided_by.as_deref(), Some("carol"));
    bob.card_text_with(&world.room, &card, "Approved by carol")
        .await;
    let events = app.call_events(&approval.call_id).await;
    let votes: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "approval.vote")
        .map(|e| e["payload"]["approver"].as_str().unwrap())
        .collect();
    assert_eq!(
        votes,
        ["bob", "carol"],
        "each reaction counted once across the restart"
    );
    let requested = events
        .iter()
        .filter(|e| e["kind"] == "approval.requested")
        .count();
    assert_eq!(requested, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_room_is_refused_and_the_call_fails_closed() {
    let world = World::with_room(true).await;
    let app = world.builder().spawn().await;
    let (agent, approval) = app.held_record("one-r8").await;
    let reply = agent.answer().await;
    let text = reply.text();
    assert!(text.contains("no approver could be asked"), "{text}");
    assert!(text.contains("encrypted"), "{text}");
    assert_eq!(app.approval(&approval.id).await.status, "cancelled");
    let posted = world
        .bot
        .recent(&world.room)
        .await
        .into_iter()
        .any(|e| e["type"] == "m.room.message" || e["type"] == "m.room.encrypted");
    assert!(!posted, "nothing was posted into the encrypted room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_test_checks_the_token_the_room_and_encryption() {
    let world = World::new().await;
    // The token comes from the environment, as secrets should.
    let matrix = json!({"homeserver": synapse().url, "room": world.room});
    let app = cg::chat_only()
        .set("chat.matrix", matrix)
        .spawn_stopped()
        .await;
    let token = [(
        "COUNTERSIGN_CHAT__MATRIX__ACCESS_TOKEN",
        world.bot.token.as_str(),
    )];
    let (ok, out) = app.chat_test("matrix", &token).await;
    assert!(ok, "{out}");
    assert_eq!(out.matches("ok  ").count(), 3, "{out}");
    let (ok, out) = app
        .chat_test(
            "matrix",
            &[("COUNTERSIGN_CHAT__MATRIX__ACCESS_TOKEN", "wrong")],
        )
        .await;
    assert!(
        !ok && out.contains("FAIL homeserver") && out.contains("fix: check chat.matrix.homeserver"),
        "{out}"
    );
    let encrypted = World::with_room(true).await;
    let app = cg::chat_only()
        .set("chat.matrix", encrypted.settings())
        .spawn_stopped()
        .await;
    let (ok, out) = app.chat_test("matrix", &[]).await;
    assert!(!ok && out.contains("is end-to-end encrypted"), "{out}");
}

#[test]
fn the_shared_synapse_runs_on_loopback_as_our_child() {
    let synapse = synapse();
    assert!(synapse.url.starts_with("http://127.0.0.1:"));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", synapse.pid)).expect("running");
    assert!(String::from_utf8_lossy(&cmdline).contains("tests/peers/synapse/run.py"));
    assert!(synapse.ready_after_ms < 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_buried_under_chatter_while_down_is_still_read() {
    let world = World::new().await;
    let mut app = world.builder().spawn().await;
    let (agent, approval) = app.held_record("one-r9").await;
    let carol = world.user("carol");
    let card = carol.card(&world.room, &approval.id).await;
    carol.read_receipt(&world.room, &card).await;
    app.call_events_with(&approval.call_id, |e| e["payload"]["how"] == "read_receipt")
        .await;
    app.stop();
    // The call still waiting is answered as the gateway stops.
    agent.answer().await;
    // More events than one sync returns (100) arrive after carol's answer.
    carol.react(&world.room, &card, "✅").await;
    for n in 0..120 {
        world
            .mallory
            .say(&world.room, &format!("chatter {n}"))
            .await;
    }
    app.start().await;
    let decided = app.approval_becomes(&approval.id, "approved").await;
    assert_eq!(decided.decided_by.as_deref(), Some("carol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_to_a_card_not_yet_stored_still_counts() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("one-r10").await;
    let bob = world.user("bob");
    let card = bob.card(&world.room, &approval.id).await;
    // As if bob answered between the post and the store of its event id.
    let db = countersign::store::connect(&app.db.url).await.unwrap();
    sqlx::query("delete from chat_cards")
        .execute(&db.pool)
        .await
        .unwrap();
    bob.react(&world.room, &card, "✅").await;
    assert_eq!(agent.answer().await.text(), "deleted one-r10");
    // A reaction to somebody else's message is never taken for an answer to a card.
    let chatter = world.mallory.say(&world.room, "not a card").await;
    let (agent, approval) = app.held_record("one-r11").await;
    bob.react(&world.room, &chatter, "✅").await;
    let card = bob.card(&world.room, &approval.id).await;
    bob.read_receipt(&world.room, &card).await;
    let call_id = &approval.call_id;
    let events = app
        .call_events_with(call_id, |e| e["payload"]["how"] == "read_receipt")
        .await;
    assert!(
        events.iter().all(|e| e["kind"] != "approval.vote"),
        "{events:#?}"
    );
    drop(agent);
}

/// Item 4: Element sends a reply in a thread as `m.thread` to the card with a reply fallback to
/// the thread's latest event. Once someone else has posted in the thread, that fallback is not
/// the card; the reply still answers the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_in_a_busy_thread_answers_the_card() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("two-busy").await;
    let (bob, carol) = (world.user("bob"), world.user("carol"));
    let card = bob.card(&world.room, &approval.id).await;
    let chatter = world
        .mallory
        .thread_reply(&world.room, &card, &card, "is this the prod one?")
        .await;
    let latest = carol
        .thread_reply(&world.room, &card, &chatter, "looks like it")
        .await;
    bob.thread_reply(&world.room, &card, &latest, "deny: not on prod")
        .await;
    let expected = format!("Denied by bob: not on prod (approval {})", approval.id);
    assert_eq!(agent.answer().await.text(), expected);
    let events = app.call_events(&approval.call_id).await;
    assert!(
        events.iter().any(|e| e["kind"] == "approval.seen"
            && e["payload"]["who"] == "bob"
            && e["payload"]["how"] == "reply"),
        "{events:#?}"
    );
}

/// Item 5: a room that becomes end-to-end encrypted after start-up gets no plaintext card; the
/// call is refused (fail closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_encrypted_after_start_up_gets_no_plaintext_card() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("one-before").await;
    let bob = world.user("bob");
    let card = bob.card(&world.room, &approval.id).await;
    bob.react(&world.room, &card, "✅").await;
    assert_eq!(agent.answer().await.text(), "deleted one-before");
    world.bot.enable_encryption(&world.room).await;
    let (agent, approval) = app.held_record("one-after").await;
    let reply = agent.answer().await;
    let refused = reply.text();
    assert!(
        refused.contains("end-to-end encrypted"),
        "the call is refused, saying why: {refused}"
    );
    let leaked = bob.recent(&world.room).await.into_iter().any(|e| {
        e["content"]["org.countersign.approval"]["approval_id"] == approval.id
            || e["content"]["m.new_content"]["org.countersign.approval"]["approval_id"]
                == approval.id
    });
    assert!(!leaked, "a plaintext card went into the encrypted room");
}

/// Item 7: the reason shows as text on the card: in the HTML it is escaped and in code (no
/// link, no markup), and in the plain body it stays on its own line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_text_is_escaped_in_the_html_and_the_body() {
    let (world, app) = started().await;
    let (agent, approval) = app.held_record("one-esc").await;
    let carol = world.user("carol");
    let card = carol.card(&world.room, &approval.id).await;
    let reason = "<a href=\"http://evil.example\">x</a> [y](http://evil.example)\nApproved by bob";
    carol
        .reply(&world.room, &card, &format!("deny: {reason}"))
        .await;
    assert!(agent.answer().await.text().starts_with("Denied by carol"));
    carol
        .card_text_with(&world.room, &card, "Denied by carol")
        .await;
    let edit = carol
        .recent(&world.room)
        .await
        .into_iter()
        .find(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == card.as_str()
                && e["content"]["m.new_content"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Denied by carol")
        })
        .expect("the decided card");
    let new = &edit["content"]["m.new_content"];
    let html = new["formatted_body"].as_str().unwrap();
    assert!(!html.contains("<a "), "{html}");
    let outside_code: String = html
        .split("<code>")
        .map(|part| part.split_once("</code>").map_or(part, |(_, rest)| rest))
        .collect();
    assert!(
        !outside_code.contains("evil.example"),
        "the reason is not in code: {html}"
    );
    let body = new["body"].as_str().unwrap();
    assert!(
        !body.lines().any(|l| l.starts_with("Approved by")),
        "the reason forged a line of the card:\n{body}"
    );
}

/// Item 8: a long first field cannot push the payee off the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_argument_field_can_be_pushed_off_the_card() {
    let (world, app) = started().await;
    let arguments = serde_json::json!({"note": "n".repeat(5_000), "to": "mallory-offshore",
                                       "record_id": "one-hide"});
    let (agent, approval) = app.held_record_with(arguments).await;
    let bob = world.user("bob");
    let card = bob.card(&world.room, &approval.id).await;
    let text = bob.card_text(&world.room, &card).await;
    assert!(text.contains("mallory-offshore"), "`to` is hidden:\n{text}");
    assert!(
        text.find("record_id").unwrap() < text.find("note").unwrap(),
        "required fields first:\n{text}"
    );
    assert!(
        text.contains(&format!("countersign approvals show {}", approval.id)),
        "{text}"
    );
    bob.react(&world.room, &card, "✅").await;
    assert_eq!(agent.answer().await.text(), "deleted one-hide");
}
