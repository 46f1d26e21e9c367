//! The Mattermost backend: approval cards posted by a bot, Approve / Deny buttons whose clicks
//! Mattermost sends to the gateway (verified by single-use context tokens and the signed
//! `trigger_id`), a dialog for deny reasons, outcome patches, thread replies when the call ran,
//! and who saw the card. Where Mattermost cannot reach the gateway, `mode: reactions` decides
//! by ✅ / ❌ reactions and thread replies read from the bot's websocket.
//!
//! ```text
//! requested ──▶ POST /api/v4/posts (card + tokens) ──▶ channel members = audience
//! click ──▶ /mattermost/action: token → post/channel → trigger_id → approver → vote → update
//! deny  ──▶ dialogs/open ──▶ /mattermost/dialog: HMAC state → vote with reason
//! decided / finished ──▶ PUT …/patch (outcome) / reply in the thread
//! ```

mod api;
mod callback;
mod card;
mod cards;
mod diagnose;
mod dialog;
mod people;
mod posting;
mod trigger;
mod websocket;

use crate::approval::Notifier;
use crate::approval::{Approval, Broker, Directory, Sighting, Status, VoteSource};
use crate::chat::{CallSummary, ChatBackend, ChatError, Check};
use crate::store::Db;
use crate::tls::Tls;
use api::{Api, ApiError};
use futures::future::BoxFuture;
use people::People;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub use crate::config::chat::{MattermostConfig, MattermostMode as Mode};

const NAME: &str = "mattermost";
/// Where Mattermost sends clicks and dialog submissions, under `callback_url`.
pub const ACTION_PATH: &str = "/mattermost/action";
pub const DIALOG_PATH: &str = "/mattermost/dialog";
/// Answers `GET` so `chat test` can check the callback URL reaches this gateway.
pub const HEALTH_PATH: &str = "/mattermost/health";

/// Licence state for acknowledgements: unknown until asked.
const LICENCE_UNKNOWN: u8 = 0;
const LICENSED: u8 = 1;
const UNLICENSED: u8 = 2;

pub struct Mattermost {
    config: MattermostConfig,
    api: Api,
    /// For the websocket and the callback check (the REST client has its own copy).
    tls: Tls,
    keys: trigger::TriggerKeys,
    state_key: dialog::StateKey,
    db: crate::chat::db::LazyDb,
    /// The approvers' accounts, resolved to the user ids Mattermost vouches for.
    people: People,
    /// Channel names resolved to ids.
    channels: Mutex<HashMap<String, String>>,
    licence: AtomicU8,
    /// The bot's own user id (its reactions and posts are not approvers').
    bot_user_id: tokio::sync::OnceCell<String>,
    /// Usernames by user id, for events that carry only the id.
    usernames: Mutex<HashMap<String, String>>,
    /// Set when the gateway mounts the callbacks; cards posted by a process without it (none
    /// today) record no audience.
    broker: OnceLock<Weak<Broker>>,
    /// Cards being posted, which events on unknown posts wait for.
    posting: posting::Posting,
}

impl Mattermost {
    pub fn new(
        config: &crate::config::Config,
        mm: &MattermostConfig,
        tls: &Tls,
    ) -> anyhow::Result<Self> {
        if mm.mode == Mode::Buttons && mm.callback_url.is_none() {
            anyhow::bail!(
                "chat.mattermost.callback_url is required in buttons mode: the gateway's base URL as \
                 the Mattermost server reaches it (or set mode: reactions)"
            );
        }
        if mm.token.expose_secret().trim().is_empty() {
            anyhow::bail!("chat.mattermost.token is empty: give the bot account's access token");
        }
        Ok(Mattermost {
            api: Api::new(&mm.url, mm.token.expose_secret(), tls),
            tls: tls.clone(),
            keys: trigger::TriggerKeys::new(),
            state_key: dialog::StateKey::from_bot_token(mm.token.expose_secret()),
            db: crate::chat::db::LazyDb::new(&config.database.url),
            people: People::new(
                Directory::new(&config.approvers)
                    .accounts(NAME)
                    .into_iter()
                    .map(|(approver, account)| (approver.to_owned(), account.to_owned()))
                    .collect(),
            ),
            channels: Mutex::default(),
            licence: AtomicU8::new(LICENCE_UNKNOWN),
            bot_user_id: tokio::sync::OnceCell::new(),
            usernames: Mutex::default(),
            broker: OnceLock::new(),
            posting: posting::Posting::default(),
            config: mm.clone(),
        })
    }

    async fn db(&self) -> Result<&Db, ChatError> {
        self.db.get(NAME).await
    }

    fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.get().and_then(Weak::upgrade)
    }

    fn callback(&self, path: &str) -> Option<String> {
        let base = self.config.callback_url.as_deref()?;
        Some(format!("{}{path}", base.trim_end_matches('/')))
    }

    /// `@account` for an approver with a Mattermost account, else the approver id.
    fn shown(&self, approver: &str) -> String {
        match self.people.configured(approver) {
            Some(account) => format!("@{account}"),
            None => approver.to_owned(),
        }
    }

    /// Who a Mattermost user is: the approver their user id is bound to, else
    /// `mattermost:<username>` (the server's answer for the id, never a request's claim).
    async fn person(&self, user_id: &str) -> Person {
        if let Some(binding) = self.people.approver(&self.api, user_id).await {
            return Person::Approver(binding.approver);
        }
        let name = self.username(user_id).await;
        Person::Unmapped(format!("mattermost:{}", name.as_deref().unwrap_or(user_id)))
    }

    /// The card for `approval` as it stands; with fresh button tokens while it is pending (in
    /// buttons mode).
    async fn render(&self, approval: &Approval) -> Result<Value, ChatError> {
        let db = self.db().await?;
        let approved_by = cards::approvers(db, approval.id)
            .await?
            .iter()
            .map(|a| self.shown(a))
            .collect();
        let url = self.callback(ACTION_PATH);
        let tokens = match (&url, approval.status, self.config.mode) {
            (Some(_), Status::Pending, Mode::Buttons) => {
                Some(cards::issue(db, approval.id, approval.expires_at).await?)
            }
            _ => None,
        };
        let view = card::View {
            approval,
            approved_by,
            buttons: url.as_deref().zip(tokens.as_ref()),
        };
        Ok(card::render(&view))
    }

    /// The channel id to post `approval`'s card in.
    async fn channel_id(&self, approval: &Approval) -> Result<String, ChatError> {
        let wanted = approval
            .spec
            .channel
            .as_deref()
            .unwrap_or(&self.config.channel);
        let Some((team, name)) = wanted.split_once('/') else {
            return Ok(wanted.to_owned());
        };
        if let Some(id) = self.channels.lock().expect("channels lock").get(wanted) {
            return Ok(id.clone());
        }
        let channel = self
            .api
            .channel_by_name(team, name)
            .await
            .map_err(chat_error)?;
        let id = channel["id"]
            .as_str()
            .ok_or_else(|| refused(format!("channel {wanted} has no id")))?
            .to_owned();
        self.channels
            .lock()
            .expect("channels lock")
            .insert(wanted.to_owned(), id.clone());
        Ok(id)
    }

    async fn licensed(&self) -> bool {
        match self.licence.load(Ordering::Relaxed) {
            LICENSED => return true,
            UNLICENSED => return false,
            _ => {}
        }
        let licensed = self
            .api
            .client_license()
            .await
            .is_ok_and(|l| l["IsLicensed"] == "true");
        let state = if licensed { LICENSED } else { UNLICENSED };
        self.licence.store(state, Ordering::Relaxed);
        licensed
    }

    async fn bot_user_id(&self) -> Result<&String, ApiError> {
        self.bot_user_id
            .get_or_try_init(|| async {
                let me = self.api.me().await?;
                me["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::Shape {
                        path: "/api/v4/users/me".into(),
                        detail: "no id".into(),
                    })
            })
            .await
    }

    /// The username of a user id (cached), when the server says.
    async fn username(&self, user_id: &str) -> Option<String> {
        if let Some(name) = self.usernames.lock().expect("usernames lock").get(user_id) {
            return Some(name.clone());
        }
        let user = self.api.user(user_id).await.ok()?;
        let name = user["username"].as_str()?.to_owned();
        self.usernames
            .lock()
            .expect("usernames lock")
            .insert(user_id.to_owned(), name.clone());
        Some(name)
    }

    /// One attempt to post the card and remember it.
    async fn post_card(&self, approval: &Approval) -> Result<cards::Card, ChatError> {
        let channel_id = self.channel_id(approval).await?;
        let mut post = self.render(approval).await?;
        post["channel_id"] = json!(channel_id);
        let ask_ack = self.licensed().await;
        if ask_ack {
            post["metadata"] =
                json!({"priority": {"priority": "important", "requested_ack": true}});
        }
        let _posting = self.posting.begin();
        let created = match self.api.create_post(&post).await {
            // An unlicensed server refuses acknowledgement requests with 501: post without.
            Err(e) if ask_ack && e.status() == Some(501) => {
                self.licence.store(UNLICENSED, Ordering::Relaxed);
                post.as_object_mut().map(|p| p.remove("metadata"));
                self.api.create_post(&post).await
            }
            other => other,
        }
        .map_err(chat_error)?;
        let post_id = created["id"]
            .as_str()
            .ok_or_else(|| refused("the created post has no id".into()))?;
        let card = cards::Card {
            approval_id: approval.id,
            post_id: post_id.to_owned(),
            channel_id,
        };
        cards::save_card(self.db().await?, &card, crate::timestamp::now_ms()).await?;
        Ok(card)
    }

    /// Records the channel's members as the card's audience (`approval.seen`, how `audience`).
    async fn record_audience(&self, approval: &Approval, card: &cards::Card) {
        let Some(broker) = self.broker() else { return };
        let members = match self.api.channel_members(&card.channel_id).await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(approval = %approval.id, error = %e, "could not read the channel's members");
                return;
            }
        };
        let users: Vec<&str> = members
            .iter()
            .filter_map(|m| m["user_id"].as_str())
            .collect();
        let sighting = Sighting {
            who: format!("channel {}", card.channel_id),
            source: VoteSource::Mattermost,
            how: "audience".into(),
            evidence: json!({"post_id": card.post_id, "channel_id": card.channel_id, "members": users,
                             "complete": members.len() < 200}),
        };
        if let Err(e) = broker.seen(approval, sighting).await {
            tracing::error!(approval = %approval.id, error = %e, "could not record the card's audience");
        }
    }

    /// Replaces the card's message and props (best effort: logged on failure).
    async fn patch_card(&self, approval: &Approval) {
        let patched = async {
            let Some(card) = cards::card(self.db().await?, approval.id).await? else {
                return Ok(());
            };
            let patch = self.render(approval).await?;
            self.api
                .patch_post(&card.post_id, &patch)
                .await
                .map_err(chat_error)?;
            Ok::<(), ChatError>(())
        };
        if let Err(e) = patched.await {
            tracing::warn!(approval = %approval.id, error = %e, "could not update the Mattermost card");
        }
    }

    async fn reply_finished(
        &self,
        approval: &Approval,
        call: &CallSummary,
    ) -> Result<(), ChatError> {
        let Some(card) = cards::card(self.db().await?, approval.id).await? else {
            return Ok(());
        };
        let mut message = format!(
            ":checkered_flag: The call ran: **{}**; {}",
            call.outcome,
            call.timing()
        );
        if approval.spec.post_results
            && let Some(response) = &call.response
        {
            let result = response.get("result").unwrap_or(response);
            message.push('\n');
            message.push_str(&card::result_block(result));
        }
        let reply =
            json!({"channel_id": card.channel_id, "root_id": card.post_id, "message": message});
        self.api.create_post(&reply).await.map_err(chat_error)?;
        Ok(())
    }
}

impl Notifier for Mattermost {
    fn name(&self) -> &'static str {
        NAME
    }

    fn requested<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, Result<(), ChatError>> {
        Box::pin(async move {
            let card =
                crate::chat::retry::until_expiry(approval.expires_at, || self.post_card(approval))
                    .await?;
            if self.config.mode == Mode::Reactions {
                websocket::add_choice_reactions(self, &card).await;
            }
            self.record_audience(approval, &card).await;
            Ok(())
        })
    }

    fn progressed<'a>(&'a self, approval: &'a Approval, _approvals: u32) -> BoxFuture<'a, ()> {
        Box::pin(self.patch_card(approval))
    }

    fn decided<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, ()> {
        Box::pin(self.patch_card(approval))
    }

    fn finished<'a>(&'a self, approval: &'a Approval, call: &'a CallSummary) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.reply_finished(approval, call).await {
                tracing::warn!(approval = %approval.id, error = %e, "could not post the call's outcome to Mattermost");
            }
        })
    }
}

impl ChatBackend for Mattermost {
    fn router(self: Arc<Self>, broker: Arc<Broker>) -> axum::Router {
        let _ = self.broker.set(Arc::downgrade(&broker));
        callback::router(self, broker)
    }

    fn spawn(self: Arc<Self>, broker: Arc<Broker>, shutdown: tokio_util::sync::CancellationToken) {
        let _ = self.broker.set(Arc::downgrade(&broker));
        tokio::spawn(resolve_approvers(self.clone(), shutdown.clone()));
        if self.config.websocket || self.config.mode == Mode::Reactions {
            websocket::spawn(self, broker, shutdown);
        }
    }

    fn diagnose(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(diagnose::run(self))
    }
}

/// Resolves the approvers' accounts at start-up, trying again (with backoff) while the server
/// cannot be asked.
async fn resolve_approvers(mm: Arc<Mattermost>, shutdown: tokio_util::sync::CancellationToken) {
    let mut pause = std::time::Duration::from_millis(500);
    while !mm.people.resolve_all(&mm.api).await {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Who a Mattermost user is to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Person {
    /// A configured approver (whether they may vote on this call is the broker's decision).
    Approver(String),
    /// Anyone else, as `mattermost:<username>`.
    Unmapped(String),
}

impl Person {
    /// The name the broker and the audit log know them by.
    fn name(&self) -> &str {
        match self {
            Person::Approver(id) | Person::Unmapped(id) => id,
        }
    }

    fn is_approver(&self) -> bool {
        matches!(self, Person::Approver(_))
    }
}

fn unavailable(detail: String) -> ChatError {
    ChatError::Unavailable {
        backend: NAME,
        detail,
    }
}

fn refused(detail: String) -> ChatError {
    ChatError::Refused {
        backend: NAME,
        detail,
    }
}

fn chat_error(e: ApiError) -> ChatError {
    if e.retryable() {
        unavailable(e.to_string())
    } else {
        refused(e.to_string())
    }
}
