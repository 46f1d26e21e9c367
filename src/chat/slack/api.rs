//! The Slack Web API methods the backend calls (`chat.postMessage`, `chat.update`,
//! `views.open`, `auth.test`, `conversations.info`).

use crate::chat::retry::Retryable;
use crate::tls::Tls;
use serde_json::Value;
use std::time::Duration;

const CALL_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("cannot reach Slack: {}", crate::tls::explain(.0))]
    Transport(#[from] reqwest::Error),
    #[error("Slack answered HTTP {0}")]
    Http(u16),
    /// `{"ok": false, "error": "…"}`: `invalid_auth`, `channel_not_found`, `ratelimited`, …
    #[error("Slack refused {method}: {error}")]
    Api { method: String, error: String },
}

impl Retryable for SlackError {
    fn is_refusal(&self) -> bool {
        match self {
            SlackError::Transport(_) => false,
            SlackError::Http(status) => (400..500).contains(status) && *status != 429,
            SlackError::Api { error, .. } => !matches!(
                error.as_str(),
                "ratelimited" | "service_unavailable" | "fatal_error" | "internal_error"
            ),
        }
    }
}

pub struct SlackApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl SlackApi {
    pub fn new(base: &str, token: &str, tls: &Tls) -> Self {
        SlackApi {
            http: tls.client(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// Calls `method` with a JSON body; the answer when Slack says `ok`.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .timeout(CALL_LIMIT)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(SlackError::Http(status.as_u16()));
        }
        let answer: Value = response.json().await?;
        if answer["ok"] != true {
            return Err(SlackError::Api {
                method: method.to_owned(),
                error: answer["error"].as_str().unwrap_or("unknown").to_owned(),
            });
        }
        Ok(answer)
    }
}
