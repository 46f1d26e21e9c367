//! The Slack backend: a Block Kit card with Approve and Deny buttons in the rule's channel;
//! clicks arrive as signed interaction callbacks (see [`interactions`]); a deny asks for its
//! reason in a modal; `chat.update` shows the outcome and removes the buttons.
//!
//! Who answered is the request's user id, vouched for by the v0 signature over the whole
//! request, and only in the configured team (`team_id`); approvers are configured by user id
//! (usernames are refused at start-up: a member can change theirs).

mod api;
mod events;
pub mod interactions;
mod render;
pub mod signature;

pub use api::{SlackApi, SlackError};

use super::db::{CardRef, LazyDb, card_of, save_card};
use super::retry::until_expiry;
use super::{CallSummary, ChatBackend, ChatError, Check, card};
use crate::approval::Notifier;
use crate::approval::{Approval, Broker};
use crate::timestamp::now_ms;
use crate::tls::Tls;
use futures::future::BoxFuture;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use std::sync::Arc;

pub use crate::config::chat::SlackConfig;

const BACKEND: &str = "slack";

pub struct Slack {
    config: SlackConfig,
    api: SlackApi,
    db: LazyDb,
}

impl Slack {
    pub fn new(config: SlackConfig, database_url: &str, tls: &Tls) -> Self {
        Slack {
            api: SlackApi::new(&config.api_base, config.bot_token.expose_secret(), tls),
            config,
            db: LazyDb::new(database_url),
        }
    }

    async fn post_card(&self, approval: &Approval) -> Result<(), ChatError> {
        let channel = approval
            .spec
            .channel
            .as_deref()
            .unwrap_or(&self.config.channel);
        let mut message = render::card(approval, 0);
        message["channel"] = json!(channel);
        let posted = until_expiry(approval.expires_at, || {
            self.api.call("chat.postMessage", &message)
        })
        .await
        .map_err(chat_error)?;
        let card = CardRef {
            approval_id: approval.id,
            channel: posted["channel"].as_str().unwrap_or(channel).to_owned(),
            message_id: posted["ts"].as_str().unwrap_or_default().to_owned(),
        };
        let db = self.db.get(BACKEND).await?;
        save_card(db, BACKEND, &card, now_ms()).await?;
        Ok(())
    }

    async fn card(&self, approval: &Approval) -> Option<CardRef> {
        let db = self.db.get(BACKEND).await.ok()?;
        card_of(db, BACKEND, approval.id).await.ok().flatten()
    }

    /// `chat.update`s the card; logged when it fails.
    async fn update(&self, approval: &Approval, mut message: Value) {
        let Some(card) = self.card(approval).await else {
            return;
        };
        message["channel"] = json!(card.channel);
        message["ts"] = json!(card.message_id);
        if let Err(e) = self.api.call("chat.update", &message).await {
            tracing::warn!(approval = %approval.id, error = %e, "slack: could not update the card");
        }
    }

    async fn counted(&self, approval: &Approval) -> u32 {
        let Ok(db) = self.db.get(BACKEND).await else {
            return 0;
        };
        let counted = crate::approval::count_approvals(db, approval.id).await;
        counted.map_or(0, |n| u32::try_from(n).unwrap_or(0))
    }

    async fn diagnose_all(&self) -> Vec<Check> {
        let auth = self.api.call("auth.test", &json!({})).await;
        let mut checks = vec![check(
            format!("{} accepts the bot token", self.config.api_base),
            auth.as_ref().map(|_| ()),
            "check chat.slack.bot_token (an xoxb- token of the installed app)",
        )];
        if auth.is_ok() {
            let info = json!({"channel": self.config.channel});
            let channel = self.api.call("conversations.info", &info).await;
            checks.push(check(
                format!("the bot can see channel {}", self.config.channel),
                channel.map(|_| ()),
                "invite the app to the channel, or fix chat.slack.channel (a channel id: C…)",
            ));
        }
        checks.push(Check {
            what: format!(
                "interaction requests go to https://<gateway>{} (set it as the app's Request URL)",
                interactions::PATH
            ),
            ok: !self.config.signing_secret.expose_secret().is_empty(),
            fix: self
                .config
                .signing_secret
                .expose_secret()
                .is_empty()
                .then(|| "set chat.slack.signing_secret".into()),
        });
        checks
    }
}

fn check<E: std::fmt::Display>(what: String, result: Result<(), E>, fix: &str) -> Check {
    match result {
        Ok(()) => Check {
            what,
            ok: true,
            fix: None,
        },
        Err(e) => Check {
            what: format!("{what}: {e}"),
            ok: false,
            fix: Some(fix.to_owned()),
        },
    }
}

fn chat_error(e: SlackError) -> ChatError {
    use super::retry::Retryable;
    if e.is_refusal() {
        ChatError::Refused {
            backend: BACKEND,
            detail: e.to_string(),
        }
    } else {
        ChatError::Unavailable {
            backend: BACKEND,
            detail: e.to_string(),
        }
    }
}

impl Notifier for Slack {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn requested<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, Result<(), ChatError>> {
        Box::pin(self.post_card(approval))
    }

    fn progressed<'a>(&'a self, approval: &'a Approval, approvals: u32) -> BoxFuture<'a, ()> {
        Box::pin(self.update(approval, render::card(approval, approvals)))
    }

    fn decided<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let approvals = self.counted(approval).await;
            self.update(approval, render::decided(approval, approvals))
                .await
        })
    }

    fn finished<'a>(&'a self, approval: &'a Approval, call: &'a CallSummary) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(card) = self.card(approval).await else {
                return;
            };
            let text = card::finished(call, approval.spec.post_results);
            let reply = json!({"channel": card.channel, "thread_ts": card.message_id,
                "text": super::escape::mrkdwn(&text)});
            if let Err(e) = self.api.call("chat.postMessage", &reply).await {
                tracing::warn!(approval = %approval.id, error = %e, "slack: could not reply in the thread");
            }
        })
    }
}

impl ChatBackend for Slack {
    fn router(self: Arc<Self>, broker: Arc<Broker>) -> axum::Router {
        interactions::router(self, broker)
    }

    fn diagnose(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(self.diagnose_all())
    }
}
