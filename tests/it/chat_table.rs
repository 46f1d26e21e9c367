//! One table of approval scenarios, run unchanged against every chat backend through a small
//! driver: the built-in approver API, Mattermost on its contract stub, Matrix on a real Synapse,
//! and Slack on its stub. Another backend joins the table by implementing [`ChatDriver`] and
//! adding one line to [`every_backend!`].

use crate::chat_gateway::{self as cg, Setting};
use crate::support::TestGateway;
use crate::wait;
use futures::future::BoxFuture;
use std::time::Duration;

/// How a test acts as an approver on one backend, and reads the card there.
pub trait ChatDriver: Send + Sync {
    /// The approver's `chat:` accounts, YAML flow style: `{matrix: '@bob:localhost'}`.
    fn accounts(&self, approver: &str) -> String;

    /// The body of the gateway's `chat:` section (empty for none).
    fn chat(&self) -> String;

    /// The loopback port the gateway must listen on, when the chat server calls it back at a
    /// URL given in [`ChatDriver::chat`]; 0 for any.
    fn port(&self) -> u16 {
        0
    }

    /// `approver` approves `approval` the way this backend's users do.
    fn approve<'a>(
        &'a self,
        gw: &'a TestGateway,
        approval: &'a str,
        approver: &'a str,
    ) -> BoxFuture<'a, ()>;

    /// `approver` denies `approval`, saying why.
    fn deny<'a>(
        &'a self,
        gw: &'a TestGateway,
        approval: &'a str,
        approver: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, ()>;

    /// What the approvers now see about `approval` (the card after its edits), as plain text.
    fn card_text<'a>(&'a self, gw: &'a TestGateway, approval: &'a str) -> BoxFuture<'a, String>;
}

/// Waits (bounded) until the card says `needle`.
async fn card_says(
    driver: &dyn ChatDriver,
    gw: &TestGateway,
    approval: &str,
    needle: &str,
) -> String {
    let what = format!("the card to say {needle:?}");
    // Every 50 ms: on Matrix, each look is a request to Synapse.
    let every = Duration::from_millis(50);
    wait::eventually_every(&what, Duration::from_secs(10), every, || async move {
        let text = driver.card_text(gw, approval).await;
        if text.contains(needle) {
            Ok(text)
        } else {
            Err(format!("it reads:\n{text}"))
        }
    })
    .await
}

async fn start(driver: &dyn ChatDriver) -> (Setting, TestGateway) {
    let setting = Setting::new().await;
    let gw = setting
        .gateway_on(&|who| driver.accounts(who), &driver.chat(), driver.port())
        .await;
    (setting, gw)
}

fn id(approval: &serde_json::Value) -> String {
    approval["id"].as_str().unwrap().to_owned()
}

// === the scenarios ===

pub async fn one_approval_runs_the_call(driver: &dyn ChatDriver) {
    let (_setting, gw) = start(driver).await;
    let (agent, approval) = cg::held_delete(&gw, "one-t1").await;
    card_says(driver, &gw, &id(&approval), "Approvals: 0/1").await;
    driver.approve(&gw, &id(&approval), "bob").await;
    assert_eq!(cg::answer(agent).await, "deleted one-t1");
    card_says(driver, &gw, &id(&approval), "Approved by bob").await;
}

pub async fn a_deny_tells_the_agent_why(driver: &dyn ChatDriver) {
    let (_setting, gw) = start(driver).await;
    let (agent, approval) = cg::held_delete(&gw, "one-t2").await;
    driver
        .deny(&gw, &id(&approval), "carol", "not on prod")
        .await;
    let expected = format!("Denied by carol: not on prod (approval {})", id(&approval));
    assert_eq!(cg::answer(agent).await, expected);
    card_says(driver, &gw, &id(&approval), "Denied by carol: not on prod").await;
}

pub async fn two_of_three_must_approve(driver: &dyn ChatDriver) {
    let (_setting, gw) = start(driver).await;
    let (agent, approval) = cg::held_delete(&gw, "two-t3").await;
    driver.approve(&gw, &id(&approval), "bob").await;
    card_says(driver, &gw, &id(&approval), "Approvals: 1/2").await;
    assert_eq!(cg::approval(&gw, &id(&approval)).await["status"], "pending");
    driver.approve(&gw, &id(&approval), "dave").await;
    assert_eq!(cg::answer(agent).await, "deleted two-t3");
    card_says(driver, &gw, &id(&approval), "Approved by dave").await;
}

pub async fn the_agents_own_human_cannot_approve(driver: &dyn ChatDriver) {
    let (_setting, gw) = start(driver).await;
    let (agent, approval) = cg::held_delete(&gw, "one-t4").await;
    driver.approve(&gw, &id(&approval), "alice").await;
    let call_id = approval["call_id"].as_str().unwrap();
    let events = cg::wait_audit(&gw, call_id, |e| e["kind"] == "approval.vote").await;
    let vote = events
        .iter()
        .find(|e| e["kind"] == "approval.vote")
        .unwrap();
    assert_eq!(vote["payload"]["result"]["result"], "not_authorized");
    assert_eq!(cg::approval(&gw, &id(&approval)).await["status"], "pending");
    driver.approve(&gw, &id(&approval), "carol").await;
    assert_eq!(cg::answer(agent).await, "deleted one-t4");
}

pub async fn expiry_denies_and_shows_on_the_card(driver: &dyn ChatDriver) {
    let (_setting, gw) = start(driver).await;
    let (agent, approval) = cg::held_delete(&gw, "fast-t5").await;
    assert!(cg::answer(agent).await.contains("expired"));
    card_says(driver, &gw, &id(&approval), "Expired").await;
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
        fn accounts(&self, _: &str) -> String {
            "{}".into()
        }

        fn chat(&self) -> String {
            String::new()
        }

        fn approve<'a>(
            &'a self,
            gw: &'a TestGateway,
            approval: &'a str,
            who: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                cg::vote(gw, approval, who, true, None).await;
            })
        }

        fn deny<'a>(
            &'a self,
            gw: &'a TestGateway,
            approval: &'a str,
            who: &'a str,
            reason: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                cg::vote(gw, approval, who, false, Some(reason)).await;
            })
        }

        fn card_text<'a>(
            &'a self,
            gw: &'a TestGateway,
            approval: &'a str,
        ) -> BoxFuture<'a, String> {
            Box::pin(async move {
                let record = cg::approval(gw, approval).await;
                let events = cg::audit(gw, record["call_id"].as_str().unwrap()).await;
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

    use crate::mattermost::stub::{BOT_TOKEN, Stub, User};

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
        fn accounts(&self, who: &str) -> String {
            format!("{{mattermost: {who}}}")
        }

        fn chat(&self) -> String {
            format!(
                "  mattermost: {{url: '{}', token: {BOT_TOKEN}, channel: eng/mcp-approvals, \
                 callback_url: 'http://127.0.0.1:{}', websocket: false}}",
                self.stub.url, self.port
            )
        }

        fn port(&self) -> u16 {
            self.port
        }

        fn approve<'a>(
            &'a self,
            _: &'a TestGateway,
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
            _: &'a TestGateway,
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

        fn card_text<'a>(&'a self, _: &'a TestGateway, approval: &'a str) -> BoxFuture<'a, String> {
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
        fn accounts(&self, who: &str) -> String {
            self.world.accounts(who)
        }

        fn chat(&self) -> String {
            self.world.chat()
        }

        fn approve<'a>(
            &'a self,
            _: &'a TestGateway,
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
            _: &'a TestGateway,
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

        fn card_text<'a>(&'a self, _: &'a TestGateway, approval: &'a str) -> BoxFuture<'a, String> {
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
        fn accounts(&self, who: &str) -> String {
            crate::slack::accounts(who)
        }

        fn chat(&self) -> String {
            self.stub.chat()
        }

        fn approve<'a>(
            &'a self,
            gw: &'a TestGateway,
            approval: &'a str,
            who: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let ts = self.stub.card(approval).await;
                let click = crate::slack::click(who, approval, "countersign_approve", &ts);
                assert_eq!(crate::slack::interact(gw, &click, None).await, 200);
            })
        }

        fn deny<'a>(
            &'a self,
            gw: &'a TestGateway,
            approval: &'a str,
            who: &'a str,
            reason: &'a str,
        ) -> BoxFuture<'a, ()> {
            Box::pin(crate::slack::deny(&self.stub, gw, who, approval, reason))
        }

        fn card_text<'a>(&'a self, _: &'a TestGateway, approval: &'a str) -> BoxFuture<'a, String> {
            Box::pin(async move {
                let ts = self.stub.card(approval).await;
                self.stub.card_text(&ts)
            })
        }
    }
}
