//! What can go wrong with the audit log: [`AuditError`], and the typed causes it keeps.

use super::KeyError;
use std::sync::Arc;

/// Errors of the audit log. An append error means the event is not in the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the audit log could not be written: {0}")]
    WriteFailed(#[source] WriteFailure),
    #[error("the audit log writer has stopped; no event can be recorded")]
    WriterStopped,
    #[error("the event cannot be recorded: {0}")]
    InvalidEvent(String),
    #[error("invalid audit query: {0}")]
    InvalidQuery(String),
    #[error("verifying the audit log failed: {0}")]
    VerifyFailed(#[source] tokio::task::JoinError),
    #[error("audit event {seq} cannot be read: {reason} (run `countersign audit verify`)")]
    Corrupt { seq: i64, reason: String },
    #[error(
        "the audit log was tampered with: {0}; nothing more is appended until it is \
         investigated (run `countersign audit verify`)"
    )]
    Tampered(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the anchors file {path}: {source}")]
    Anchors {
        path: String,
        source: AnchorsFileError,
    },
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Store(crate::store::StoreError::Query(e))
    }
}

/// Why the writer did not record an append.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteFailure {
    /// The batch's transaction failed; every append in the batch shares this cause.
    #[error(transparent)]
    Database(Arc<sqlx::Error>),
    #[error("the writer answered no event")]
    NoEvent,
    #[error("the writer lost a transition")]
    LostTransition,
    #[error("the writer returned another transition")]
    OtherTransition,
}

/// Why the anchors file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AnchorsFileError {
    #[error(transparent)]
    Read(std::io::Error),
    #[error("line {line}: {source}")]
    Line {
        line: usize,
        source: serde_json::Error,
    },
}
