//! One table of approval scenarios, run unchanged against every chat backend through a small
//! driver: the built-in approver API, Mattermost on its contract stub, Matrix on a real Synapse,
//! and Slack on its stub. Another backend joins the table by implementing [`ChatDriver`] and
//! adding one line to [`every_backend!`].

use crate::app::{Approver, TestApp, TestAppBuilder, Vote};
use crate::chat_gateway as cg;
use crate::wait;
use futures::future::BoxFuture;
use std::time::Duration;

/// How a test acts as an approver on one backend, and reads the card there.
pub trait ChatDriver: Send + Sync {
    /// The approver's account on this backend, as (backend, handle); none for the built-in
    /// API.
    fn account(&self, approver: &str) -> Option<(&'static str, String)>;

    /// The gateway's settings for this backend: its `chat:` section, and the port to listen
    /// on when the chat server calls the gateway back at a URL given there.
    fn configure(&self, app: TestAppBuilder) -> TestAppBuilder;

    /// `approver` approves `approval` the way this backend's users do.
    fn approve<'a>(
        &'a self,
        app: &'a TestApp,
        approval: &'a str,
        approver: &'a str,
    ) -> BoxFuture<'a, ()>;

    /// `approver` denies `approval`, saying why.
    fn deny<'a>(
        &'a self,
        app: &'a TestApp,
        approval: &'a str,
        approver: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, ()>;

    /// What the approvers now see about `approval` (the card after its edits), as plain text.
    fn card_text<'a>(&'a self, app: &'a TestApp, approval: &'a str) -> BoxFuture<'a, String>;
}

/// Waits (bounded) until the card says `needle`.
async fn card_says(driver: &dyn ChatDriver, app: &TestApp, approval: &str, needle: &str) -> String {
    let what = format!("the card to say {needle:?}");
    // Every 50 ms: on Matrix, each look is a request to Synapse.
    let every = Duration::from_millis(50);
    wait::eventually_every(&what, Duration::from_secs(10), every, || async move {
        let text = driver.card_text(app, approval).await;
        if text.contains(needle) {
            Ok(text)
        } else {
            Err(format!("it reads:\n{text}"))
        }
    })
    .await
}

/// The chat tests' policy and approvers (`chat_gateway.rs`), with their accounts on the
/// driver's backend, and the backend's settings.
async fn start(driver: &dyn ChatDriver) -> TestApp {
    let approvers = cg::APPROVERS
        .iter()
        .map(|who| match driver.account(who) {
            Some((backend, handle)) => Approver::new(who).chat(backend, &handle),
            None => Approver::new(who),
        })
        .collect();
    let settings = TestApp::builder().policy(cg::POLICY).approvers(approvers);
    driver.configure(settings).spawn().await
}

// === the scenarios ===

pub async fn one_approval_runs_the_call(driver: &dyn ChatDriver) {
    let app = start(driver).await;
    let (agent, approval) = app.held_record("one-t1").await;
    card_says(driver, &app, &approval.id, "Approvals: 0/1").await;
    driver.approve(&app, &approval.id, "bob").await;
    assert_eq!(agent.answer().await.text(), "deleted one-t1");
    card_says(driver, &app, &approval.id, "Approved by bob").await;
}

pub async fn a_deny_tells_the_agent_why(driver: &dyn ChatDriver) {
    let app = start(driver).await;
    let (agent, approval) = app.held_record("one-t2").await;
    driver
        .deny(&app, &approval.id, "carol", "not on prod")
        .await;
    let expected = format!("Denied by carol: not on prod (approval {})", approval.id);
    assert_eq!(agent.answer().await.text(), expected);
    card_says(driver, &app, &approval.id, "Denied by carol: not on prod").await;
}

pub async fn two_of_three_must_approve(driver: &dyn ChatDriver) {
    let app = start(driver).await;
    let (agent, approval) = app.held_record("two-t3").await;
    driver.approve(&app, &approval.id, "bob").await;
    card_says(driver, &app, &approval.id, "Approvals: 1/2").await;
    assert_eq!(app.approval(&approval.id).await.status, "pending");
    driver.approve(&app, &approval.id, "dave").await;
    assert_eq!(agent.answer().await.text(), "deleted two-t3");
    card_says(driver, &app, &approval.id, "Approved by dave").await;
}

pub async fn the_agents_own_human_cannot_approve(driver: &dyn ChatDriver) {
    let app = &start(driver).await;
    let (agent, approval) = app.held_record("one-t4").await;
    driver.approve(app, &approval.id, "alice").await;
    let call_id = approval.call_id.as_str();
    let vote = wait::eventually(
        "the vote in the audit log",
        Duration::from_secs(10),
        || async move {
            let events = app.call_events(call_id).await;
            events.into_iter().find(|e| e["kind"] == "approval.vote")
        },
    )
    .await;
    assert_eq!(vote["payload"]["result"]["result"], "not_authorized");
    assert_eq!(app.approval(&approval.id).await.status, "pending");
    driver.approve(app, &approval.id, "carol").await;
    assert_eq!(agent.answer().await.text(), "deleted one-t4");
}

pub async fn expiry_denies_and_shows_on_the_card(driver: &dyn ChatDriver) {
    let app = start(driver).await;
    let (agent, approval) = app.held_record("fast-t5").await;
    assert!(agent.answer().await.text().contains("expired"));
    card_says(driver, &app, &approval.id, "Expired").await;
}

/// One test per (backend, scenario).
macro_rules! every_backend {
    ($($backend:ident => $driver:expr;)*) => {$(
        mod $backend {
            use super::*;
            every_backend!(@scenarios $driver;
                one_approval_runs_the_call, a_deny_tells_the_agent_why, two_of_three_must_approve,
                the_agents_own_human_cannot_approve, expiry_denies_and_shows_on_the_card);
        }
    )*};
    (@scenarios $driver:expr; $($scenario:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() {
            let driver = $driver;
            super::$scenario(&driver).await;
        }
    )*};
}

every_backend! {
    builtin => drivers::BuiltIn;
    mattermost => drivers::Mattermost::new().await;
    matrix => drivers::Matrix::new().await;
    slack => drivers::Slack::new().await;
}

/// The drivers, one per backend.
pub mod drivers {
    use super::*;
    use serde_json::{Value, json};

    /// No chat: the approver HTTP API votes; the "card" is the approval record and its votes.
    pub struct BuiltIn;

    impl ChatDriver for BuiltIn {
        fn account(&self, _: &str) -> Option<(&'static str, String)> {
            None
        }

        fn configure(&self, app: TestAppBuilder) -> TestAppBuilder {
            app
        }

        fn approve<'a>(
            &'a self,
            app: &'a TestApp,
            approval: &'a str,
            who: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                app.vote(approval, who, Vote::Approve).await;
            })
        }

        fn deny<'a>(
            &'a self,
            app: &'a TestApp,
            approval: &'a str,
            who: &'a str,
            reason: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                app.vote(approval, who, Vote::Deny(Some(reason))).await;
            })
        }

        fn card_text<'a>(&'a self, app: &'a TestApp, approval: &'a str) -> BoxFuture<'a, String> {
            Box::pin(async move {
                // The record as the API gives it: its `spec` holds the quorum.
                let (_, record) = app.get(&format!("/approvals/{approval}"), "bob").await;
                let events = app.call_events(record["call_id"].as_str().unwrap()).await;
                builtin_text(&record, &events)
            })
        }
    }
    /// The approval record in the card's words.
    fn builtin_text(record: &Value, events: &[Value]) -> String {
        let counted = |e: &&Value| {
            e["kind"] == "approval.vote"
                && e["payload"]["vote"] == "approve"
                && matches!(
                    e["payload"]["result"]["result"].as_str(),
                    Some("counted" | "decided")
                )
        };
        let approvals = events.iter().filter(counted).count();
        let quorum = &record["spec"]["quorum"];
        let by = record["decided_by"].as_str().unwrap_or("countersign");
        let reason = record["reason"].as_str().unwrap_or_default();
        let outcome = match record["status"].as_str().unwrap_or_default() {
            "approved" => format!("Approved by {by}"),
            "denied" => format!("Denied by {by}: {reason}"),
            "expired" => "Expired: nobody decided in time".into(),
            other => other.to_owned(),
        };
        format!("{outcome}\nApprovals: {approvals}/{quorum}")
    }

    /// Mattermost on its contract stub: buttons approve; Deny opens the dialog for the reason.
    pub struct Mattermost {
        stub: std::sync::Arc<Stub>,
        port: u16,
    }

    use crate::mattermost::stub::{Stub, User};

    impl Mattermost {
        pub async fn new() -> Self {
            let members = cg::APPROVERS.iter().map(|who| User::named(who)).collect();
            Mattermost {
                stub: Stub::start(members).await,
                port: crate::support::free_port(),
            }
        }

        /// The card's post for `approval`, once posted.
        async fn card(&self, approval: &str) -> String {
            let what = format!("a Mattermost card for approval {approval}");
            let card = wait::eventually(&what, Duration::from_secs(5), || async move {
                self.stub.cards().into_iter().find(|post| {
                    fields(post).any(|(title, value)| title == "Request" && value == approval)
                })
            })
            .await;
            card["id"].as_str().unwrap().to_owned()
        }

        /// `who` clicks `button` on `approval`'s card; the ephemeral answer.
        async fn click(&self, approval: &str, button: &str, who: &str) -> String {
            let post = self.card(approval).await;
            let said = self.stub.click(&post, button, &User::named(who)).await;
            said["ephemeral_text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    }

    /// Every request the gateway made must have kept to Mattermost's published contract.
    impl Drop for Mattermost {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                assert_eq!(self.stub.violations(), Vec::<String>::new());
            }
        }
    }

    /// A post's attachment fields, as (title, value).
    fn fields(post: &Value) -> impl Iterator<Item = (&str, &str)> {
        post["props"]["attachments"][0]["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let text = |key: &str| f[key].as_str().unwrap_or_default();
                (text("title"), text("value"))
            })
    }

    impl ChatDriver for Mattermost {
        fn account(&self, who: &str) -> Option<(&'static str, String)> {
            Some(("mattermost", who.into()))
        }

        fn configure(&self, app: TestAppBuilder) -> TestAppBuilder {
            let mattermost = crate::mattermost::buttons(&self.stub, self.port);
            app.set("chat.mattermost", mattermost)
                .listen_port(self.port)
        }

        fn approve<'a>(
            &'a self,
            _: &'a TestApp,
            approval: &'a str,
            who: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let said = self.click(approval, "approve", who).await;
                assert!(
                    said.starts_with("Recorded") || said.contains("asked for"),
                    "{said}"
                );
            })
        }

        fn deny<'a>(
            &'a self,
            _: &'a TestApp,
            approval: &'a str,
            who: &'a str,
            reason: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let said = self.click(approval, "deny", who).await;
                assert!(said.contains("reason in the dialog"), "{said}");
                let user = User::named(who);
                assert_eq!(
                    self.stub.submit_dialog(&user, Some(reason)).await,
                    json!({})
                );
            })
        }

        fn card_text<'a>(&'a self, _: &'a TestApp, approval: &'a str) -> BoxFuture<'a, String> {
            Box::pin(async move {
                let post = self.stub.post(&self.card(approval).await);
                let mut lines = vec![post["message"].as_str().unwrap_or_default().to_owned()];
                lines.extend(fields(&post).map(|(title, value)| format!("{title}: {value}")));
                lines.join("\n").replace(['*', '`'], "")
            })
        }
    }

    /// Matrix on the shared Synapse: reactions approve, replies deny with a reason.
    pub struct Matrix {
        world: crate::matrix::World,
    }

    impl Matrix {
        pub async fn new() -> Self {
            Matrix {
                world: crate::matrix::World::new().await,
            }
        }
    }

    impl ChatDriver for Matrix {
        fn account(&self, who: &str) -> Option<(&'static str, String)> {
            Some(("matrix", self.world.user(who).id.clone()))
        }

        fn configure(&self, app: TestAppBuilder) -> TestAppBuilder {
            app.set("chat.matrix", self.world.settings())
        }

        fn approve<'a>(
            &'a self,
            _: &'a TestApp,
            approval: &'a str,
            who: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let user = self.world.user(who);
                let card = user.card(&self.world.room, approval).await;
                user.react(&self.world.room, &card, "✅").await;
            })
        }

        fn deny<'a>(
            &'a self,
            _: &'a TestApp,
            approval: &'a str,
            who: &'a str,
            reason: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let user = self.world.user(who);
                let card = user.card(&self.world.room, approval).await;
                user.reply(&self.world.room, &card, &format!("deny: {reason}"))
                    .await;
            })
        }

        fn card_text<'a>(&'a self, _: &'a TestApp, approval: &'a str) -> BoxFuture<'a, String> {
            Box::pin(async move {
                let bob = self.world.user("bob");
                let card = bob.card(&self.world.room, approval).await;
                bob.card_text(&self.world.room, &card).await
            })
        }
    }

    /// Slack on its Web API stub: signed button clicks, and the deny modal.
    pub struct Slack {
        stub: crate::slack::SlackStub,
    }

    impl Slack {
        pub async fn new() -> Self {
            Slack {
                stub: crate::slack::SlackStub::start().await,
            }
        }
    }

    impl ChatDriver for Slack {
        fn account(&self, who: &str) -> Option<(&'static str, String)> {
            Some(("slack", crate::slack::slack_user(who)))
        }

        fn configure(&self, app: TestAppBuilder) -> TestAppBuilder {
            app.set("chat.slack", self.stub.settings())
        }

        fn approve<'a>(
            &'a self,
            app: &'a TestApp,
            approval: &'a str,
            who: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let ts = self.stub.card(approval).await;
                let click = crate::slack::click(who, approval, "countersign_approve", &ts);
                let status = crate::slack::signed_interaction(app, &click, None).await;
                assert_eq!(status, 200);
            })
        }

        fn deny<'a>(
            &'a self,
            app: &'a TestApp,
            approval: &'a str,
            who: &'a str,
            reason: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(crate::slack::deny_in_modal(
                &self.stub, app, who, approval, reason,
            ))
        }

        fn card_text<'a>(&'a self, _: &'a TestApp, approval: &'a str) -> BoxFuture<'a, String> {
            Box::pin(async move {
                let ts = self.stub.card(approval).await;
                self.stub.card_text(&ts)
            })
        }
    }
}
