//! Posting a card again and again (with backoff) until it works or the approval expires.

use crate::timestamp::now_ms;
use std::future::Future;
use std::time::Duration;

const FIRST_PAUSE: Duration = Duration::from_millis(250);
const LONGEST_PAUSE: Duration = Duration::from_secs(10);

/// An error that says whether trying again could help.
pub trait Retryable: std::fmt::Display {
    /// True when the server refused for good (bad token, no access): do not retry.
    fn is_refusal(&self) -> bool;
}

/// A backend's own error: only an unavailable server is worth another try.
impl Retryable for super::ChatError {
    fn is_refusal(&self) -> bool {
        !matches!(self, super::ChatError::Unavailable { .. })
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `expires_at` (Unix ms) is near
/// enough that no pause is left; returns the last error then.
pub async fn until_expiry<T, E, F, Fut>(expires_at: i64, mut attempt: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = FIRST_PAUSE;
    loop {
        let error = match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if e.is_refusal() => return Err(e),
            Err(e) => e,
        };
        let left = Duration::from_millis((expires_at - now_ms()).max(0) as u64);
        if left <= pause {
            return Err(error);
        }
        tracing::warn!(error = %error, retry_in = ?pause, "chat: posting failed, retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
