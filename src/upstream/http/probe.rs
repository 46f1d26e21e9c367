//! Finding the upstream's era: as configured, or `server/discover` (a result means modern)
//! then `initialize` (legacy). An upstream that is down at start is probed again with backoff
//! until it answers.

use super::{Route, Shared};
use crate::config::EraPreference;
use crate::jsonrpc;
use crate::protocol::Era;
use crate::upstream::{UpstreamError, health, messages};
use serde_json::Value;
use std::sync::Arc;

impl Shared {
    /// Finds the era (as configured, or `server/discover` then `initialize`).
    pub(super) async fn probe(self: &Arc<Self>) -> Result<(), UpstreamError> {
        if self.era_preference != EraPreference::Legacy {
            match self.discover().await? {
                Some(capabilities) => {
                    self.set_server(Era::Modern, capabilities);
                    self.health.set(true);
                    return Ok(());
                }
                None if self.era_preference == EraPreference::Modern => {
                    return Err(
                        self.protocol_error("server/discover was not answered with a result")
                    );
                }
                None => {
                    tracing::debug!(upstream = %self.name, "not a modern server; trying initialize")
                }
            }
        }
        self.initialize().await?;
        tokio::spawn(self.clone().listen());
        Ok(())
    }

    /// Probes with backoff until the upstream answers or the transport stops.
    pub(super) async fn probe_until_up(self: Arc<Self>) {
        let mut backoff = health::reconnect_backoff();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.stop.cancelled() => return,
            }
            match self.probe().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(upstream = %self.name, error = %e, "upstream still not reachable")
                }
            }
        }
    }

    /// A modern `server/discover`: the result's capabilities, `None` for any other answer (the
    /// server is not modern), an error when the upstream could not be reached.
    async fn discover(&self) -> Result<Option<Value>, UpstreamError> {
        let mut request = messages::discover_request();
        let id = self.mint();
        jsonrpc::set_id(&mut request, id.into());
        let response = self.post(&request, &Route::Modern).await?;
        let answer = self.single_response(response, id).await;
        let result = answer.as_ref().ok().and_then(|a| a.get("result"));
        Ok(result.map(|r| {
            r.get("capabilities")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()))
        }))
    }
}
