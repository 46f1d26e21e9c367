//! The Matrix backend: a bot account posts each card as an `m.room.message` (plain body and
//! HTML) into the rule's room and seeds ✅ and ❌ reactions; approvers react, or reply
//! `approve` / `deny: <reason>`; a `/sync` loop turns those into votes. The bot edits the card
//! (`m.replace`) with the outcome and replies in its thread after the call ran.
//!
//! Rooms must be unencrypted and should not be federated: the bot refuses encrypted rooms (it
//! checks before every card, and stops writing to a room once the sync loop sees encryption
//! turned on there), and a reaction's `sender` is only as trustworthy as the homeserver that
//! asserts it.

mod client;
mod render;
mod sync;
mod sync_state;

pub use client::{MatrixClient, MatrixError};

use super::db::{CardRef, LazyDb, card_of, save_card};
use super::retry::Retryable;
use super::{CallSummary, ChatBackend, ChatError, Check, card};
use crate::approval::Notifier;
use crate::approval::{Approval, Broker};
use crate::store::Db;
use crate::timestamp::now_ms;
use crate::tls::Tls;
use futures::future::BoxFuture;
use secrecy::ExposeSecret as _;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub use crate::config::chat::MatrixConfig;

const BACKEND: &str = "matrix";

pub struct Matrix {
    config: MatrixConfig,
    client: MatrixClient,
    db: LazyDb,
    bot: OnceCell<String>,
    /// Rooms the bot has joined.
    joined_rooms: Mutex<HashSet<String>>,
    /// Rooms the sync loop saw encryption turned on in: nothing more is written there.
    encrypted_rooms: Mutex<HashSet<String>>,
}

impl Matrix {
    pub fn new(config: MatrixConfig, database_url: &str, tls: &Tls) -> Self {
        Matrix {
            client: MatrixClient::new(&config.homeserver, config.access_token.expose_secret(), tls),
            config,
            db: LazyDb::new(database_url),
            bot: OnceCell::new(),
            joined_rooms: Mutex::default(),
            encrypted_rooms: Mutex::default(),
        }
    }

    fn sync_timeout(&self) -> Duration {
        Duration::from_secs(self.config.sync_timeout_secs)
    }

    /// The bot's user id and the database, once both are reachable; and the default room
    /// joined and checked.
    async fn prepare(&self) -> Result<(String, &Db), MatrixError> {
        let bot = self.bot().await?.to_owned();
        self.ensure_room(&self.config.room).await?;
        let db = self.db.get(BACKEND).await.map_err(db_down)?;
        Ok((bot, db))
    }

    async fn bot(&self) -> Result<&str, MatrixError> {
        let bot = self.bot.get_or_try_init(|| self.client.whoami()).await?;
        Ok(bot)
    }

    /// Joins `room` (once) and refuses it when it is encrypted: the bot cannot read or write
    /// end-to-end encrypted events, and a plaintext card there would leak what the room's
    /// members chose to encrypt. Encryption can be turned on at any time, so the room's state
    /// is asked every time.
    async fn ensure_room(&self, room: &str) -> Result<(), MatrixError> {
        if self.known_encrypted(room) {
            return Err(MatrixError::EncryptedRoom(room.to_owned()));
        }
        if !self.joined_rooms.lock().expect("rooms lock").contains(room) {
            self.client.join(room).await?;
            self.joined_rooms
                .lock()
                .expect("rooms lock")
                .insert(room.to_owned());
        }
        if self.client.is_encrypted(room).await? {
            self.mark_encrypted(room);
            return Err(MatrixError::EncryptedRoom(room.to_owned()));
        }
        Ok(())
    }

    /// Whether the sync loop (or a check) has seen encryption turned on in `room`.
    fn known_encrypted(&self, room: &str) -> bool {
        self.encrypted_rooms
            .lock()
            .expect("rooms lock")
            .contains(room)
    }

    /// Encryption is on in `room` (an `m.room.encryption` state event): no more cards, edits or
    /// replies go there.
    fn mark_encrypted(&self, room: &str) {
        let fresh = self
            .encrypted_rooms
            .lock()
            .expect("rooms lock")
            .insert(room.to_owned());
        if fresh {
            tracing::error!(
                room,
                "matrix: the room is now end-to-end encrypted; Countersign posts nothing more there (use an unencrypted room)"
            );
        }
    }

    async fn post_card(&self, approval: &Approval) -> Result<(), MatrixError> {
        let room = approval
            .spec
            .channel
            .as_deref()
            .unwrap_or(&self.config.room);
        self.ensure_room(room).await?;
        let event_id = self
            .client
            .send_event(room, "m.room.message", &render::card(approval, 0))
            .await?;
        let card = CardRef {
            approval_id: approval.id,
            channel: room.to_owned(),
            message_id: event_id.clone(),
        };
        let db = self.db.get(BACKEND).await.map_err(db_down)?;
        save_card(db, BACKEND, &card, now_ms())
            .await
            .map_err(|e| db_down(e.into()))?;
        for key in [render::APPROVE, render::DENY] {
            let seed = render::reaction(&event_id, key);
            if let Err(e) = self.client.send_event(room, "m.reaction", &seed).await {
                tracing::warn!(error = %e, "matrix: could not seed the {key} reaction");
            }
        }
        Ok(())
    }

    async fn card(&self, approval: &Approval) -> Option<CardRef> {
        let db = self.db.get(BACKEND).await.ok()?;
        match card_of(db, BACKEND, approval.id).await {
            Ok(card) => card,
            Err(e) => {
                tracing::warn!(approval = %approval.id, error = %e, "matrix: cannot look up the card");
                None
            }
        }
    }

    /// Replaces the card's content; logged when it fails (best effort).
    async fn edit_card(&self, approval: &Approval, new_content: serde_json::Value) {
        let Some(card) = self.card(approval).await else {
            return;
        };
        if self.known_encrypted(&card.channel) {
            tracing::warn!(approval = %approval.id, room = %card.channel, "matrix: not editing a card in a room now encrypted");
            return;
        }
        let edit = render::edit(&card.message_id, new_content);
        if let Err(e) = self
            .client
            .send_event(&card.channel, "m.room.message", &edit)
            .await
        {
            tracing::warn!(approval = %approval.id, error = %e, "matrix: could not edit the card");
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
        let mut checks = Vec::new();
        let bot = self.client.whoami().await;
        checks.push(check(
            format!(
                "homeserver {} accepts the access token",
                self.config.homeserver
            ),
            bot.as_ref().map(|_| ()),
            "check chat.matrix.homeserver and the bot's access token",
        ));
        if bot.is_err() {
            return checks;
        }
        let joined = self.client.join(&self.config.room).await;
        checks.push(check(
            format!("the bot can join room {}", self.config.room),
            joined.as_ref().map(|_| ()),
            "invite the bot to the room, or fix chat.matrix.room (a room id: !…:server)",
        ));
        if joined.is_err() {
            return checks;
        }
        let encrypted = self.client.is_encrypted(&self.config.room).await;
        let unencrypted = match encrypted {
            Ok(false) => Ok(()),
            Ok(true) => Err("the room is end-to-end encrypted".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        checks.push(check(
            format!("room {} is unencrypted", self.config.room),
            unencrypted,
            "use an unencrypted, invite-only room (encryption cannot be switched off once on)",
        ));
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

fn db_down(e: ChatError) -> MatrixError {
    MatrixError::Database(e.to_string())
}

fn chat_error(e: MatrixError) -> ChatError {
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

impl Notifier for Matrix {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn requested<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, Result<(), ChatError>> {
        Box::pin(async move {
            super::retry::until_expiry(approval.expires_at, || self.post_card(approval))
                .await
                .map_err(chat_error)
        })
    }

    fn progressed<'a>(&'a self, approval: &'a Approval, approvals: u32) -> BoxFuture<'a, ()> {
        Box::pin(self.edit_card(approval, render::card(approval, approvals)))
    }

    fn decided<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let approvals = self.counted(approval).await;
            self.edit_card(approval, render::decided(approval, approvals))
                .await
        })
    }

    fn finished<'a>(&'a self, approval: &'a Approval, call: &'a CallSummary) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(card) = self.card(approval).await else {
                return;
            };
            if self.known_encrypted(&card.channel) {
                return;
            }
            let text = card::finished(call, approval.spec.post_results);
            let reply = render::thread_reply(&card.message_id, &text);
            if let Err(e) = self
                .client
                .send_event(&card.channel, "m.room.message", &reply)
                .await
            {
                tracing::warn!(approval = %approval.id, error = %e, "matrix: could not reply in the thread");
            }
        })
    }
}

impl ChatBackend for Matrix {
    fn spawn(self: Arc<Self>, broker: Arc<Broker>, shutdown: CancellationToken) {
        tokio::spawn(sync::run(self, broker, shutdown));
    }

    fn diagnose(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(self.diagnose_all())
    }
}
