//! Finding a fresh child's era and capabilities, as configured: `server/discover` (a result
//! means modern), else `initialize` and `notifications/initialized` (legacy).

use super::Shared;
use super::child::{Exit, encode_line};
use crate::config::EraPreference;
use crate::jsonrpc;
use crate::protocol::Era;
use crate::upstream::messages;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long an `auto` upstream has to answer `server/discover` before it is taken as legacy.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `initialize` may take.
const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a child did not get through the handshake.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    /// A `modern` upstream did not answer `server/discover` with a result (`None`: not in time).
    #[error("server/discover failed: {0:?}")]
    Discover(Option<Value>),
    /// `initialize` was not answered with a result (`None`: not in time).
    #[error("initialize failed: {0:?}")]
    Initialize(Option<Value>),
    /// The child ended during the handshake.
    #[error(transparent)]
    Exited(#[from] Exit),
    #[error("shut down")]
    ShutDown,
}

/// Finds the child's era and capabilities, as configured.
pub(super) async fn handshake(
    shared: &Shared,
    era: EraPreference,
    writer: &mpsc::UnboundedSender<Vec<u8>>,
) -> Result<(Era, Value), HandshakeError> {
    if era != EraPreference::Legacy {
        let wait = if era == EraPreference::Auto {
            DISCOVER_TIMEOUT
        } else {
            INITIALIZE_TIMEOUT
        };
        match shared
            .call(writer, messages::discover_request(), wait)
            .await
        {
            Some(r) if r.get("result").is_some() => {
                return Ok((Era::Modern, capabilities_of(&r)));
            }
            r if era == EraPreference::Modern => {
                return Err(HandshakeError::Discover(r));
            }
            _ => {}
        }
    }
    let response = shared
        .call(writer, messages::initialize_request(), INITIALIZE_TIMEOUT)
        .await;
    match response {
        Some(r) if r.get("result").is_some() => {
            let _ = writer.send(encode_line(&jsonrpc::notification(
                "notifications/initialized",
                json!({}),
            )));
            Ok((Era::Legacy, capabilities_of(&r)))
        }
        r => Err(HandshakeError::Initialize(r)),
    }
}

impl Shared {
    /// Sends a handshake request and waits for its response (`None` on timeout).
    async fn call(
        &self,
        writer: &mpsc::UnboundedSender<Vec<u8>>,
        mut request: Value,
        wait: Duration,
    ) -> Option<Value> {
        let (rewrite, mut rx) = self.inflight.register(&mut request);
        let _ = writer.send(encode_line(&request));
        let response = tokio::time::timeout(wait, rx.recv()).await.ok().flatten();
        self.inflight.remove(rewrite.upstream_id);
        response
    }
}

fn capabilities_of(response: &Value) -> Value {
    response
        .pointer("/result/capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}))
}
