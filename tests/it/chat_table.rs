//! One table of approval scenarios, run unchanged against every chat backend through a small
//! driver: the built-in approver API, Matrix on a real Synapse, and Slack on its stub. Another
//! backend joins the table by implementing [`ChatDriver`] and adding one line to
//! [`every_backend!`] (e.g. a Mattermost stub).

use crate::chat_gateway::{self as cg, Setting};
use crate::support::TestGateway;
use futures::future::BoxFuture;
use std::time::Duration;

/// How a test acts as an approver on one backend, and reads the card there.
pub trait ChatDriver: Send + Sync {
    /// The approver's `chat:` accounts, YAML flow style: `{matrix: '@bob:localhost'}`.
    fn accounts(&self, approver: &str) -> String;

    /// The body of the gateway's `chat:` section (empty for none).
    fn chat(&self) -> String;

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
    let mut text = String::new();
    for _ in 0..200 {
        text = driver.card_text(gw, approval).await;
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the card never said {needle:?}; it reads:\n{text}");
}

async fn start(driver: &dyn ChatDriver) -> (Setting, TestGateway) {
    let setting = Setting::new().await;
    let gw = setting
        .gateway(&|who| driver.accounts(who), &driver.chat())
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
    matrix => drivers::Matrix::new().await;
    slack => drivers::Slack::new().await;
}

/// The drivers, one per backend.
pub mod drivers {
    use super::*;
    use serde_json::Value;

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
