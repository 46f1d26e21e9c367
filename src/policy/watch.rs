//! [`Policies`]: the policy set every request reads, replaced whole when the files change.

use super::PolicyError;
use super::load::{self, PolicySet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often `watch` looks at the directory.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// A cheap-to-clone handle on the policy set in force.
///
/// Readers take an `Arc` to the whole set, so one call is evaluated against one version even
/// if a reload happens meanwhile. The lock is held only to clone or swap that `Arc`, never
/// across an `.await`, so a std lock is enough.
#[derive(Debug, Clone)]
pub struct Policies {
    current: Arc<RwLock<Arc<PolicySet>>>,
}

impl Policies {
    pub fn new(set: PolicySet) -> Self {
        Policies {
            current: Arc::new(RwLock::new(Arc::new(set))),
        }
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, set: PolicySet) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }

    /// Spawns a task (on the current Tokio runtime) that polls `dir` about every second and,
    /// when the files' contents change, loads them: a good set replaces the current one and its
    /// version is logged; a bad one is logged with its file, line and field, and the current set
    /// stays in force. Stops when `shutdown` is cancelled.
    pub fn watch(&self, dir: PathBuf, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(watch_loop(self.clone(), dir, shutdown))
    }
}

async fn watch_loop(policies: Policies, dir: PathBuf, shutdown: CancellationToken) {
    // The content hash (or read error) last looked at, so that each change is loaded, and each
    // problem logged, once.
    let mut seen = policies.current().version().to_owned();
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (d, s) = (dir.clone(), seen.clone());
        let Ok(Some((key, loaded))) = tokio::task::spawn_blocking(move || poll(&d, &s)).await
        else {
            continue;
        };
        seen = key;
        match loaded {
            Ok(set) => {
                tracing::info!(policy_version = set.version(), rules = set.rule_count(), dir = %dir.display(), "policies reloaded");
                policies.replace(set);
            }
            Err(error) => tracing::error!(
                %error,
                policy_version = policies.current().version(),
                "policy reload failed; the policies in force stay in force"
            ),
        }
    }
}

/// Loads `dir` if its contents differ from `seen`; returns the new key and the outcome.
fn poll(dir: &Path, seen: &str) -> Option<(String, Result<PolicySet, PolicyError>)> {
    match load::read_sources(dir) {
        Ok(sources) => {
            let version = load::version_of(&sources);
            (version != seen).then(|| (version, PolicySet::from_sources(sources)))
        }
        Err(error) => {
            let key = error.to_string();
            (key != seen).then(|| (key, Err(error)))
        }
    }
}
