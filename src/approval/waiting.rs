//! Waiting for a decision: a held call waits on the ledger (woken when a decision is committed
//! or seen in the log), reporting progress to its client; a watch loop expires overdue
//! approvals, reads what other processes appended, and wakes the waiters of rows changed by
//! hand.

use super::{Approval, Broker, BrokerError, Status, table};
use crate::call::Progress;
use crate::timestamp::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// How often the broker looks for decisions made by other processes, and for expiries.
const POLL: Duration = Duration::from_millis(500);
/// How often a waiting call reports progress to its client, unless configured.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Per approval waited on, the sender that wakes its waiters.
pub(super) type Wakers = Arc<Mutex<HashMap<Uuid, watch::Sender<()>>>>;

/// An open approval, as a call waiting on it needs it.
struct Waiting {
    expires_at_ms: i64,
    approvals: usize,
    quorum: u32,
}

impl Waiting {
    fn of_row(approval: &Approval, approvals: i64) -> Waiting {
        Waiting {
            expires_at_ms: approval.expires_at,
            approvals: usize::try_from(approvals).unwrap_or_default(),
            quorum: approval.spec.quorum,
        }
    }

    fn progress_text(&self, id: Uuid) -> String {
        let left = (self.expires_at_ms - now_ms()).max(0) / 1000;
        format!(
            "waiting for approval {id}: {}/{} approvals, expires in {left} s",
            self.approvals, self.quorum
        )
    }
}

impl Broker {
    /// Sets how often a waiting call reports progress (at least once a second).
    pub fn set_progress_every(&self, every: Duration) {
        let ms = every.max(Duration::from_secs(1)).as_millis() as u64;
        self.progress_every_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn progress_every(&self) -> Duration {
        let ms = self
            .progress_every_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(ms)
    }

    /// Waits until the approval leaves `pending` (or expires), reporting progress to the client.
    pub async fn wait(&self, id: Uuid, progress: &Progress) -> Result<Approval, BrokerError> {
        let mut next_report = tokio::time::Instant::now();
        loop {
            // Subscribe before reading, so a decision between the two still wakes us.
            let mut wake = self.waker(id);
            // While the approval is open the ledger answers: a waiting call costs no database
            // read, however many wait. The row is read once it is decided.
            let changed = self
                .changed_rows
                .lock()
                .expect("changed rows lock")
                .remove(&id);
            let open = match self.open_in_ledger(id).filter(|_| !changed) {
                Some(open) => open,
                None => {
                    let approval = self.get(id).await?;
                    if approval.status != Status::Pending {
                        return Ok(approval);
                    }
                    Waiting::of_row(&approval, table::count_approvals(&self.db, id).await?)
                }
            };
            if open.expires_at_ms <= now_ms() {
                self.expire(id).await?;
                continue;
            }
            if tokio::time::Instant::now() >= next_report {
                progress.report(open.progress_text(id));
                next_report += self.progress_every();
            }
            let until_expiry = Duration::from_millis((open.expires_at_ms - now_ms()).max(0) as u64);
            let until_report = next_report.saturating_duration_since(tokio::time::Instant::now());
            let _ = tokio::time::timeout(until_expiry.min(until_report), wake.changed()).await;
        }
    }

    /// An approval the ledger holds open, as a waiter needs it.
    fn open_in_ledger(&self, id: Uuid) -> Option<Waiting> {
        let ledger = self.ledger.lock().expect("ledger lock");
        let entry = ledger.get(id).filter(|e| e.status == Status::Pending)?;
        Some(Waiting {
            expires_at_ms: entry.requested.expires_at_ms,
            approvals: entry.approvals(),
            quorum: entry.requested.quorum,
        })
    }

    fn waker(&self, id: Uuid) -> watch::Receiver<()> {
        let mut wakers = self.wakers.lock().expect("wakers lock");
        wakers
            .entry(id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    pub(super) fn wake(&self, id: Uuid) {
        wake(&self.wakers, id);
    }

    /// Until `shutdown`, twice a second: expires overdue approvals, and has the audit writer
    /// read what other processes (the CLI, another replica) appended, which wakes the local
    /// waiters of approvals decided there.
    pub fn spawn_watch(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(broker) = broker.upgrade() else {
                    break;
                };
                if let Err(e) = broker.watch_once().await {
                    tracing::warn!(error = %e, "could not check approvals");
                }
            }
        });
    }

    async fn watch_once(&self) -> Result<(), BrokerError> {
        self.expire_due().await?;
        if !self.wakers.lock().expect("wakers lock").is_empty() {
            // Even when the writer cannot catch up (forged events in the log), a changed row
            // wakes its waiters: they then fail at the grant, not wait to the expiry.
            let synced = self.audit.sync().await;
            self.find_changed_rows().await?;
            synced?;
        }
        Ok(())
    }

    /// Waiters read the ledger, not the working table: a row changed by hand to say decided
    /// would go unnoticed. So once per watch, one query (not one per waiter) looks for rows
    /// that say decided where the ledger, caught up with the log, still says pending; their
    /// waiters read the row, and the grant check refuses it and raises the alert.
    async fn find_changed_rows(&self) -> Result<(), BrokerError> {
        let waited: Vec<Uuid> = self
            .wakers
            .lock()
            .expect("wakers lock")
            .keys()
            .copied()
            .collect();
        let decided = table::decided_among(&self.db, &waited).await?;
        for id in decided {
            if self.open_in_ledger(id).is_some() {
                self.changed_rows
                    .lock()
                    .expect("changed rows lock")
                    .insert(id);
                self.wake(id);
            }
        }
        Ok(())
    }
}

pub(super) fn wake(wakers: &Wakers, id: Uuid) {
    if let Some(waker) = wakers.lock().expect("wakers lock").remove(&id) {
        let _ = waker.send(());
    }
}
