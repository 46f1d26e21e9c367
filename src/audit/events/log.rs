//! The payloads of `audit.*` events: reads of the log, its signing keys, and alerts.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// `audit.read`: someone read the log (who saw what is part of the record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRead {
    /// `cli`, `http` or `console`.
    pub via: String,
    /// The auditor API's or console's route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The CLI command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub query: Value,
    /// How the reader was authenticated (console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<Value>,
    /// The operating-system account that ran the CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
}

/// `audit.key`: a public key that signs heads from now on. A key introduced by another
/// (`introduced_by`, a rotation) is trusted by a verifier once a head signed by the
/// introducing key covers this event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKeyEvent {
    pub key_id: String,
    /// Raw Ed25519 public key, hex.
    pub public_key: String,
    #[serde(default)]
    pub introduced_by: Option<String>,
}

/// `audit.alert`: the gateway saw its working state disagree with the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditAlert {
    pub what: String,
    #[serde(default)]
    pub approval_id: Option<Uuid>,
    pub detail: String,
}
