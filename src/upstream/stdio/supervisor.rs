//! The supervisor: owns the child across restarts. It spawns a child, handshakes, lets
//! requests flow until the child exits, fails what was in flight, and starts again with
//! backoff until shutdown.

use super::Shared;
use super::child::{self, Exit};
use super::handshake::{HandshakeError, handshake};
use crate::config::{EraPreference, StdioUpstreamConfig};
use crate::upstream::health;
use std::sync::Arc;
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Owns the child process across restarts.
pub(super) struct Supervisor {
    pub shared: Arc<Shared>,
    pub command: StdioUpstreamConfig,
    pub era: EraPreference,
    pub stop: CancellationToken,
}

impl Supervisor {
    /// Runs children until shutdown; `first` is signalled after the first handshake attempt.
    pub(super) async fn run(self, first: oneshot::Sender<()>) {
        let mut first = Some(first);
        let mut backoff = health::reconnect_backoff();
        let mut runs = 0u64;
        while !self.stop.is_cancelled() {
            if runs > 0 {
                crate::telemetry::upstream_restarted(&self.shared.name);
            }
            runs += 1;
            let started = Instant::now();
            self.run_child(&mut first).await;
            if started.elapsed() >= health::STABLE {
                backoff.reset();
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// Spawns, handshakes and waits for one child; returns once it is gone.
    async fn run_child(&self, first: &mut Option<oneshot::Sender<()>>) {
        let name = &self.shared.name;
        let mut running = match child::spawn(&self.command, &self.shared) {
            Ok(running) => running,
            Err(e) => {
                tracing::error!(target: "countersign::upstream", upstream = %name, command = %self.command.command, error = %e, "cannot start the upstream process (is the command on PATH, or its path right?)");
                first.take().map(|f| f.send(()));
                return;
            }
        };
        let handshake = tokio::select! {
            h = handshake(&self.shared, self.era, &running.writer) => h,
            status = running.child.wait() => Err(Exit::from(status).into()),
            _ = self.stop.cancelled() => Err(HandshakeError::ShutDown),
        };
        let why = match handshake {
            Ok((era, capabilities)) => {
                tracing::info!(target: "countersign::upstream", upstream = %name, era = era.as_str(), "upstream process ready");
                self.shared
                    .connected(running.writer.clone(), era, capabilities);
                first.take().map(|f| f.send(()));
                self.wait_for_exit(&mut running.child).await
            }
            Err(why) => {
                tracing::warn!(target: "countersign::upstream", upstream = %name, why = %why, "upstream handshake failed");
                first.take().map(|f| f.send(()));
                Gone::Handshake(why)
            }
        };
        self.shared.refuse_requests();
        child::stop(running).await;
        self.shared
            .inflight
            .fail_all(&format!("upstream {name} {why}"));
    }

    /// Waits until the child exits or shutdown; says why it is gone.
    async fn wait_for_exit(&self, child: &mut Child) -> Gone {
        tokio::select! {
            status = child.wait() => Gone::Exited(status.into()),
            _ = self.stop.cancelled() => Gone::ShutDown,
        }
    }
}

/// Why a child no longer serves requests; those in flight end with `upstream {name} {why}`.
#[derive(Debug, thiserror::Error)]
enum Gone {
    #[error(transparent)]
    Handshake(HandshakeError),
    /// The child ended after it was ready.
    #[error(transparent)]
    Exited(Exit),
    #[error("was shut down")]
    ShutDown,
}
