//! The gateway's own legacy session with the upstream: opened with `initialize`, shared by
//! every request routed through it, renewed when the server forgets it (404), ended with
//! `DELETE` at shutdown. Requests in it are cancelled with `notifications/cancelled`.

use super::{Route, Shared};
use crate::jsonrpc;
use crate::protocol::{self, Era};
use crate::upstream::{UpstreamError, messages};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A legacy session the gateway opened with `initialize`.
#[derive(Debug)]
pub(super) struct Session {
    /// `Mcp-Session-Id`; a server may run without one.
    pub id: Option<String>,
    /// The negotiated protocol version, sent as `MCP-Protocol-Version`.
    pub version: String,
}

impl Shared {
    pub(super) fn current_session(&self) -> Option<Arc<Session>> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current session, opening one if there is none.
    pub(super) async fn session(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        if let Some(session) = self.current_session() {
            return Ok(session);
        }
        let _init = self.session_init.lock().await;
        match self.current_session() {
            Some(session) => Ok(session),
            None => self.initialize_locked().await,
        }
    }

    /// Replaces a session the server no longer knows (404), unless another request already did.
    pub(super) async fn renew_session(
        self: &Arc<Self>,
        stale: &Arc<Session>,
    ) -> Result<Arc<Session>, UpstreamError> {
        let _init = self.session_init.lock().await;
        match self.current_session() {
            Some(current) if !Arc::ptr_eq(&current, stale) => Ok(current),
            _ => {
                tracing::info!(target: "countersign::upstream", upstream = %self.name, "legacy session expired; initializing again");
                self.initialize_locked().await
            }
        }
    }

    pub(super) async fn initialize(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        let _init = self.session_init.lock().await;
        self.initialize_locked().await
    }

    /// `initialize` + `notifications/initialized`; stores the session and the capabilities.
    /// The caller holds `session_init`.
    async fn initialize_locked(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        let mut request = messages::initialize_request();
        let id = self.mint();
        jsonrpc::set_id(&mut request, id.into());
        let response = self.post(&request, &Route::Handshake).await?;
        let session_id = response
            .headers()
            .get(protocol::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = self.single_response(response, id).await?;
        let Some(result) = answer.get("result") else {
            return Err(self.protocol_error(format!("initialize answered {answer}")));
        };
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(protocol::LATEST_LEGACY_VERSION);
        let session = Arc::new(Session {
            id: session_id,
            version: version.to_owned(),
        });
        let capabilities = result
            .get("capabilities")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        if self.read_server().0 != Some(Era::Modern) {
            self.set_server(Era::Legacy, capabilities);
        }
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());

        let initialized = jsonrpc::notification(
            "notifications/initialized",
            Value::Object(Default::default()),
        );
        let response = self
            .post(&initialized, &Route::Legacy(session.clone()))
            .await?;
        self.expect_accepted(response).await?;
        self.health.set(true);
        Ok(session)
    }

    /// Cancels a legacy request with `notifications/cancelled` (in the background: this runs
    /// when an exchange is dropped).
    pub(super) fn cancel_legacy(self: &Arc<Self>, upstream_id: i64, reason: &str) {
        let (Ok(runtime), Some(session)) = (
            tokio::runtime::Handle::try_current(),
            self.current_session(),
        ) else {
            return;
        };
        let shared = self.clone();
        let notification = messages::cancelled_notification(upstream_id, reason);
        runtime.spawn(async move {
            let sent = shared.post(&notification, &Route::Legacy(session)).await;
            if let Err(e) = async { shared.expect_accepted(sent?).await }.await {
                tracing::debug!(upstream = %shared.name, error = %e, "could not cancel a request");
            }
        });
    }

    /// `DELETE` the session at shutdown (best effort).
    pub(super) async fn end_session(&self) {
        let Some(session) = self.current_session() else {
            return;
        };
        let delete = self
            .client
            .delete(self.url.clone())
            .headers(super::headers::for_session(&session))
            .send();
        let _ = tokio::time::timeout(Duration::from_secs(1), delete).await;
    }
}
