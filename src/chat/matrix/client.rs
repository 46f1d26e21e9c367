//! The few Matrix client-server API calls the backend needs, over plain `reqwest`.

use crate::tls::Tls;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest one call may take (a `/sync` long poll: this plus its own timeout).
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Why a Matrix call failed.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("homeserver URL is not usable: {0}")]
    BadHomeserver(String),
    /// Countersign will not use an end-to-end encrypted room: it cannot read or write it.
    #[error("room {0} is end-to-end encrypted; Countersign needs an unencrypted room")]
    EncryptedRoom(String),
    /// The backend's own database (card ids, sync position) is unavailable.
    #[error("{0}")]
    Database(String),
    #[error("cannot reach the homeserver: {}", crate::tls::explain(.0))]
    Transport(#[from] reqwest::Error),
    /// The homeserver answered with an error (`errcode` as Matrix names it).
    #[error("homeserver answered {status} {errcode}: {message}")]
    Status {
        status: u16,
        errcode: String,
        message: String,
    },
}

impl crate::chat::retry::Retryable for MatrixError {
    /// True when retrying cannot help (bad token, no access, bad request).
    fn is_refusal(&self) -> bool {
        match self {
            MatrixError::BadHomeserver(_) | MatrixError::EncryptedRoom(_) => true,
            MatrixError::Database(_) => false,
            MatrixError::Status { status, .. } => (400..500).contains(status) && *status != 429,
            MatrixError::Transport(_) => false,
        }
    }
}

/// A logged-in bot account on one homeserver.
pub struct MatrixClient {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Makes transaction ids unique within this process (with the start time, across restarts).
    txn: AtomicU64,
    started: u128,
}

impl MatrixClient {
    pub fn new(homeserver: &str, token: &str, tls: &Tls) -> Self {
        MatrixClient {
            http: tls.client(),
            base: homeserver.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            txn: AtomicU64::new(0),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        }
    }

    /// The bot's own user id.
    pub async fn whoami(&self) -> Result<String, MatrixError> {
        let me = self.get(self.url(&["account", "whoami"])?, &[]).await?;
        Ok(me["user_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Joins a room (a no-op when already joined); returns its room id.
    pub async fn join(&self, room: &str) -> Result<String, MatrixError> {
        let url = self.url(&["join", room])?;
        let joined = self.send(reqwest::Method::POST, url, &json!({})).await?;
        Ok(joined["room_id"].as_str().unwrap_or(room).to_owned())
    }

    /// True when the room has end-to-end encryption switched on.
    pub async fn is_encrypted(&self, room: &str) -> Result<bool, MatrixError> {
        let url = self.url(&["rooms", room, "state", "m.room.encryption", ""])?;
        match self.get(url, &[]).await {
            Ok(_) => Ok(true),
            Err(MatrixError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends one event into a room; returns its event id.
    pub async fn send_event(
        &self,
        room: &str,
        kind: &str,
        content: &Value,
    ) -> Result<String, MatrixError> {
        let txn = format!(
            "cs{}.{}",
            self.started,
            self.txn.fetch_add(1, Ordering::Relaxed)
        );
        let url = self.url(&["rooms", room, "send", kind, &txn])?;
        let sent = self.send(reqwest::Method::PUT, url, content).await?;
        Ok(sent["event_id"].as_str().unwrap_or_default().to_owned())
    }

    /// One `/sync` long poll: at most `timeout` without news.
    pub async fn sync(&self, since: Option<&str>, timeout: Duration) -> Result<Value, MatrixError> {
        let filter = json!({
            "room": {"timeline": {"limit": 100}, "state": {"lazy_load_members": true}},
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        })
        .to_string();
        let timeout_ms = timeout.as_millis().to_string();
        let mut query = vec![
            ("filter", filter.as_str()),
            ("timeout", timeout_ms.as_str()),
        ];
        if let Some(since) = since {
            query.push(("since", since));
        }
        self.get_within(self.url(&["sync"])?, &query, timeout + CALL_LIMIT)
            .await
    }

    /// `{homeserver}/_matrix/client/v3/{segments…}`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, MatrixError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| MatrixError::BadHomeserver(format!("{}: {e}", self.base)))?;
        url.path_segments_mut()
            .map_err(|()| MatrixError::BadHomeserver(self.base.clone()))?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        Ok(url)
    }

    /// One event of a room.
    pub async fn event(&self, room: &str, event_id: &str) -> Result<Value, MatrixError> {
        self.get(self.url(&["rooms", room, "event", event_id])?, &[])
            .await
    }

    /// One page of a room's events going forward from `from` (a `/sync` token) up to `to`.
    pub async fn messages_between(
        &self,
        room: &str,
        from: &str,
        to: &str,
    ) -> Result<Value, MatrixError> {
        let url = self.url(&["rooms", room, "messages"])?;
        let query = [("dir", "f"), ("from", from), ("to", to), ("limit", "100")];
        self.get(url, &query).await
    }

    async fn get(&self, url: reqwest::Url, query: &[(&str, &str)]) -> Result<Value, MatrixError> {
        self.get_within(url, query, CALL_LIMIT).await
    }

    async fn get_within(
        &self,
        mut url: reqwest::Url,
        query: &[(&str, &str)],
        limit: Duration,
    ) -> Result<Value, MatrixError> {
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = self.http.get(url).timeout(limit).bearer_auth(&self.token);
        answer(request.send().await?).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: &Value,
    ) -> Result<Value, MatrixError> {
        let request = self
            .http
            .request(method, url)
            .timeout(CALL_LIMIT)
            .bearer_auth(&self.token)
            .json(body);
        answer(request.send().await?).await
    }
}

async fn answer(response: reqwest::Response) -> Result<Value, MatrixError> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    Err(MatrixError::Status {
        status: status.as_u16(),
        errcode: body["errcode"].as_str().unwrap_or("?").to_owned(),
        message: body["error"].as_str().unwrap_or_default().to_owned(),
    })
}
