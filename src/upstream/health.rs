//! Whether an upstream is reachable, and how long to wait before trying it again.

pub(super) use crate::backoff::Backoff;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether an upstream is reachable, mirrored in the `countersign_upstream_up` gauge.
pub(super) struct Health {
    upstream: String,
    up: AtomicBool,
}

impl Health {
    pub fn new(upstream: &str) -> Self {
        crate::telemetry::upstream_up(upstream, false);
        Health {
            upstream: upstream.to_owned(),
            up: AtomicBool::new(false),
        }
    }

    pub fn get(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            crate::telemetry::upstream_up(&self.upstream, up);
            tracing::info!(target: "countersign::upstream", upstream = %self.upstream, up, "upstream health changed");
        }
    }
}

/// Between reconnection attempts: 0.2 s doubling to 30 s.
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
}

/// A connection that stayed up this long resets the backoff.
pub(super) const STABLE: Duration = Duration::from_secs(60);
