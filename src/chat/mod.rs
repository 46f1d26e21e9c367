//! Chat backends: where approval cards are posted, and how approvers answer from chat.
//!
//! The broker tells every configured backend about an approval's life (requested, a vote
//! counted, decided, the call finished). Backends answer with votes through
//! [`Broker::vote`](crate::approval::Broker::vote) and report who saw a card through
//! [`Broker::seen`](crate::approval::Broker::seen). Each backend keeps its own state (message
//! ids, single-use tokens, sync positions) in its own tables.
//!
//! ```text
//! broker ──requested/progressed/decided/finished──▶ backend ──▶ chat server
//! broker ◀──────────── vote / seen ──────────────── backend ◀── click, reaction, reply
//! ```

pub mod card;
pub mod db;
pub mod escape;
pub mod matrix;
pub mod mattermost;
pub mod reply;
pub mod retry;
pub mod slack;
pub mod tools;
pub mod webhook;

use crate::approval::{Approval, Broker};
pub use crate::config::chat::ChatConfig;
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a backend could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The chat server could not be reached or answered with an error (after retries).
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// The chat server refused the request (bad token, no access to the channel, …).
    #[error("{backend} refused: {detail}")]
    Refused {
        backend: &'static str,
        detail: String,
    },
    #[error("chat store: {0}")]
    Store(#[from] sqlx::Error),
}

/// How an approved call ended, for the card's thread.
#[derive(Debug, Clone)]
pub struct CallSummary {
    /// `ok`, `tool_error`, `upstream_error`, `timeout`, `cancelled`, …
    pub outcome: String,
    /// The tool's own time, from sending the call upstream to its answer.
    pub tool_time: Duration,
    /// From the call's arrival to its answer, including the wait for approval.
    pub total_time: Duration,
    /// The upstream's JSON-RPC response; posted only when the policy's `post_results` says so.
    pub response: Option<Value>,
}

impl CallSummary {
    /// "the tool ran 2 ms, 35.7 s after the request": the tool's own time apart from the wait.
    pub fn timing(&self) -> String {
        format!(
            "the tool ran {} ms, {:.1} s after the request",
            self.tool_time.as_millis(),
            self.total_time.as_secs_f64()
        )
    }
}

/// One line of `countersign chat test`: what was checked, and what to fix when it failed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// On failure: what the operator should change.
    pub fix: Option<String>,
}

/// A chat system approvers use. Notifications other than [`ChatBackend::requested`] are
/// best effort: they are logged when they fail, and never change a decision.
pub trait ChatBackend: Send + Sync + 'static {
    /// The backend's name in configuration, audit events and `Ballot::source`: `mattermost`,
    /// `matrix`, `slack`, `webhook`.
    fn name(&self) -> &'static str;

    /// Posts the card for a new approval into `approval.spec.channel` (or the backend's default
    /// channel), retrying with backoff until the approval expires. An error means nobody could
    /// be asked: the broker cancels the approval and the call is refused (fail closed).
    fn requested<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, Result<(), ChatError>>;

    /// A vote counted without deciding: show the quorum progress.
    fn progressed<'a>(&'a self, approval: &'a Approval, approvals: u32) -> BoxFuture<'a, ()>;

    /// The approval ended (approved, denied, expired or cancelled): show the outcome, by whom
    /// and when, and remove the buttons.
    fn decided<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, ()>;

    /// The approved call ran: reply in the card's thread with its status and duration (and its
    /// result when `approval.spec.post_results`).
    fn finished<'a>(&'a self, approval: &'a Approval, call: &'a CallSummary) -> BoxFuture<'a, ()>;

    /// Callback endpoints the chat server calls (button clicks, dialogs), mounted on the
    /// gateway's listener. They must verify every request themselves.
    fn router(self: Arc<Self>, _broker: Arc<Broker>) -> axum::Router {
        axum::Router::new()
    }

    /// Background work until `shutdown` (a websocket or `/sync` loop).
    fn spawn(self: Arc<Self>, _broker: Arc<Broker>, _shutdown: CancellationToken) {}

    /// Checks the configuration against the live server, for `countersign chat test`.
    fn diagnose(&self) -> BoxFuture<'_, Vec<Check>>;
}

/// Checks every configured chat server's URL against the TLS settings (the CA files load, an
/// `http://` URL is loopback); the TLS setup to reach them, or `None` when no chat is
/// configured.
pub fn check_servers(config: &crate::config::Config) -> anyhow::Result<Option<crate::tls::Tls>> {
    let chat = &config.chat;
    let servers = [
        chat.mattermost
            .as_ref()
            .map(|m| ("chat.mattermost.url", &m.url)),
        chat.matrix
            .as_ref()
            .map(|m| ("chat.matrix.homeserver", &m.homeserver)),
        chat.slack
            .as_ref()
            .map(|s| ("chat.slack.api_base", &s.api_base)),
        chat.webhook.as_ref().map(|w| ("chat.webhook.url", &w.url)),
    ];
    let servers: Vec<_> = servers.into_iter().flatten().collect();
    if servers.is_empty() {
        return Ok(None);
    }
    let tls = config.tls.setup()?;
    for (field, url) in servers {
        tls.check_url(field, url)?;
    }
    Ok(Some(tls))
}

/// The configured backends, ready to post.
pub fn backends(config: &crate::config::Config) -> anyhow::Result<Vec<Arc<dyn ChatBackend>>> {
    let Some(tls) = check_servers(config)? else {
        return Ok(Vec::new());
    };
    let ChatConfig {
        mattermost,
        matrix,
        slack,
        webhook,
    } = &config.chat;
    let mut backends: Vec<Arc<dyn ChatBackend>> = Vec::new();
    let database = &config.database.url;
    if let Some(mm) = mattermost {
        backends.push(Arc::new(mattermost::Mattermost::new(config, mm, &tls)?));
    }
    if let Some(matrix) = matrix {
        backends.push(Arc::new(matrix::Matrix::new(
            matrix.clone(),
            database,
            &tls,
        )));
    }
    if let Some(slack) = slack {
        backends.push(Arc::new(slack::Slack::new(slack.clone(), database, &tls)));
    }
    if let Some(webhook) = webhook {
        backends.push(Arc::new(webhook::Webhook::new(webhook.clone(), &tls)));
    }
    Ok(backends)
}

/// `countersign chat test NAME`: checks one configured backend against its server and says
/// what to fix. True when every check passed.
pub async fn test(config: &crate::config::Config, name: &str) -> anyhow::Result<bool> {
    let backends = backends(config)?;
    let Some(backend) = backends.iter().find(|b| b.name() == name) else {
        let configured: Vec<_> = backends.iter().map(|b| b.name()).collect();
        anyhow::bail!(
            "no chat backend {name:?} is configured (configured: {}); add a `chat.{name}` section",
            if configured.is_empty() {
                "none".into()
            } else {
                configured.join(", ")
            }
        );
    };
    let checks = backend.diagnose().await;
    for check in &checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        println!("{mark} {}", check.what);
        if let Some(fix) = &check.fix {
            println!("     fix: {fix}");
        }
    }
    Ok(checks.iter().all(|c| c.ok))
}
