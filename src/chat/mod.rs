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

pub mod answer;
pub mod card;
pub mod db;
pub mod escape;
pub mod matrix;
pub mod mattermost;
pub mod retry;
pub mod slack;
pub mod tools;
pub mod webhook;

use crate::approval::Broker;
pub use crate::approval::{CallSummary, Notifier, NotifyError as ChatError};
pub use crate::config::chat::ChatConfig;
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One line of `countersign chat test`: what was checked, and what to fix when it failed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// On failure: what the operator should change.
    pub fix: Option<String>,
}

/// A chat system approvers use: a [`Notifier`] the broker tells about each approval, plus what
/// only chat has (callback routes, a background loop, a live check).
pub trait ChatBackend: Notifier {
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

/// The backends as the broker sees them: what to tell about each approval.
pub fn notifiers(chats: &[Arc<dyn ChatBackend>]) -> Vec<Arc<dyn Notifier>> {
    chats
        .iter()
        .map(|chat| chat.clone() as Arc<dyn Notifier>)
        .collect()
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
