//! The Mattermost REST API v4, as far as Countersign uses it. Every call carries the bot's
//! token except the two the server serves without a session (client config and licence).

use crate::tls::Tls;
use serde_json::{Value, json};
use std::time::Duration;

/// Longest one REST request may take; retries are the caller's business.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused, DNS, timeout.
    #[error("cannot reach Mattermost at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// An HTTP error status, with the server's own message.
    #[error("{method} {path} answered {status}: {message}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    /// A success status with a body that is not the JSON expected.
    #[error("{path}: unexpected answer: {detail}")]
    Shape { path: String, detail: String },
}

impl ApiError {
    /// Whether trying again later may help (the server is down or overloaded).
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || *status == 429,
            ApiError::Shape { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A REST client for one server and one bot token.
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str, tls: &Tls) -> Self {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: tls
                .http()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("an HTTP client builds"),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        authenticated: bool,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if authenticated {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ApiError::Unreachable {
            url: self.base.clone(),
            detail: crate::tls::explain(&e.without_url()),
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(ApiError::Status {
                method: method_name(&method),
                path: path.split('?').next().unwrap_or(path).to_owned(),
                status,
                message,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ApiError::Shape {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// `POST /api/v4/posts`: the created post (its `integration`s stripped by the server).
    pub async fn create_post(&self, post: &Value) -> Result<Value, ApiError> {
        self.send(reqwest::Method::POST, "/api/v4/posts", Some(post), true)
            .await
    }

    /// `PUT /api/v4/posts/{id}/patch`; `props`, when present, replaces the whole map.
    pub async fn patch_post(&self, post_id: &str, patch: &Value) -> Result<Value, ApiError> {
        let path = format!("/api/v4/posts/{post_id}/patch");
        self.send(reqwest::Method::PUT, &path, Some(patch), true)
            .await
    }

    /// `GET /api/v4/channels/{id}`.
    pub async fn channel(&self, channel_id: &str) -> Result<Value, ApiError> {
        let path = format!("/api/v4/channels/{channel_id}");
        self.send(reqwest::Method::GET, &path, None, true).await
    }

    /// `GET /api/v4/teams/name/{team}/channels/name/{channel}`.
    pub async fn channel_by_name(&self, team: &str, channel: &str) -> Result<Value, ApiError> {
        let path = format!("/api/v4/teams/name/{team}/channels/name/{channel}");
        self.send(reqwest::Method::GET, &path, None, true).await
    }

    /// `GET /api/v4/channels/{id}/members` (first 200).
    pub async fn channel_members(&self, channel_id: &str) -> Result<Vec<Value>, ApiError> {
        let path = format!("/api/v4/channels/{channel_id}/members?page=0&per_page=200");
        let members = self.send(reqwest::Method::GET, &path, None, true).await?;
        match members {
            Value::Array(rows) => Ok(rows),
            other => Err(ApiError::Shape {
                path,
                detail: format!("expected a list of channel members, got {other}"),
            }),
        }
    }

    /// `GET /api/v4/config/client?format=old`, served without a session.
    pub async fn client_config(&self) -> Result<Value, ApiError> {
        self.send(
            reqwest::Method::GET,
            "/api/v4/config/client?format=old",
            None,
            false,
        )
        .await
    }

    /// `GET /api/v4/license/client?format=old`: `IsLicensed` is `"true"` on a licensed server.
    pub async fn client_license(&self) -> Result<Value, ApiError> {
        self.send(
            reqwest::Method::GET,
            "/api/v4/license/client?format=old",
            None,
            false,
        )
        .await
    }

    /// `POST /api/v4/actions/dialogs/open`.
    pub async fn open_dialog(&self, dialog: &Value) -> Result<(), ApiError> {
        self.send(
            reqwest::Method::POST,
            "/api/v4/actions/dialogs/open",
            Some(dialog),
            true,
        )
        .await
        .map(drop)
    }

    /// `POST /api/v4/reactions` as the bot.
    pub async fn add_reaction(
        &self,
        user_id: &str,
        post_id: &str,
        emoji: &str,
    ) -> Result<(), ApiError> {
        let body = json!({"user_id": user_id, "post_id": post_id, "emoji_name": emoji});
        self.send(
            reqwest::Method::POST,
            "/api/v4/reactions",
            Some(&body),
            true,
        )
        .await
        .map(drop)
    }

    /// `GET /api/v4/users/me`: the bot's own user.
    pub async fn me(&self) -> Result<Value, ApiError> {
        self.send(reqwest::Method::GET, "/api/v4/users/me", None, true)
            .await
    }

    /// `GET /api/v4/users/{id}`.
    pub async fn user(&self, user_id: &str) -> Result<Value, ApiError> {
        let path = format!("/api/v4/users/{user_id}");
        self.send(reqwest::Method::GET, &path, None, true).await
    }

    /// `POST /api/v4/users/usernames`: the users with these usernames; unknown names are left
    /// out of the answer.
    pub async fn users_by_usernames(&self, usernames: &[&str]) -> Result<Vec<Value>, ApiError> {
        let path = "/api/v4/users/usernames";
        let users = self
            .send(reqwest::Method::POST, path, Some(&json!(usernames)), true)
            .await?;
        match users {
            Value::Array(users) => Ok(users),
            other => Err(ApiError::Shape {
                path: path.into(),
                detail: format!("expected a list of users, got {other}"),
            }),
        }
    }

    /// `GET /api/v4/system/ping`.
    pub async fn ping(&self) -> Result<Value, ApiError> {
        self.send(reqwest::Method::GET, "/api/v4/system/ping", None, false)
            .await
    }

    /// The websocket URL of the server (`ws://` or `wss://` for `http://` or `https://`).
    pub fn websocket_url(&self) -> String {
        let ws = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{ws}/api/v4/websocket")
    }

    pub fn token(&self) -> &str {
        &self.token
    }
}

fn method_name(method: &reqwest::Method) -> &'static str {
    match *method {
        reqwest::Method::GET => "GET",
        reqwest::Method::POST => "POST",
        reqwest::Method::PUT => "PUT",
        reqwest::Method::DELETE => "DELETE",
        _ => "HTTP",
    }
}
