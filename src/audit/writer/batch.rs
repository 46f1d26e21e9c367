//! Which requests share a commit: as many as are queued, up to [`MAX_BATCH`] events, with
//! transitions together only when they decide on disjoint state; deferred appends wait a
//! little for company.

use super::{Request, Work};
use crate::audit::{DEFER_AT_MOST, MAX_BATCH};
use tokio::sync::mpsc;

/// The requests one commit answers.
pub(super) struct Batch {
    pub(super) requests: Vec<Request>,
    events: usize,
    /// The conflict keys of the batch's transitions (`None`: one that shares with none).
    transitions: Vec<Option<(&'static str, String)>>,
}

impl Batch {
    /// The batch that `first` opens, with the requests that share its commit. Also returns the
    /// request that came next but must wait for the following batch, if any.
    pub(super) async fn gather(
        first: Request,
        requests: &mut mpsc::Receiver<Request>,
    ) -> (Batch, Option<Request>) {
        let mut batch = Batch::of(first);
        // Let appenders that are ready to run queue their events too, so they share this
        // commit (one fsync) instead of each waiting for the next.
        tokio::task::yield_now().await;
        let mut carry = batch.take_queued(requests);
        if carry.is_none() && batch.can_wait() {
            carry = batch.wait_for_company(requests).await;
        }
        (batch, carry)
    }

    fn of(first: Request) -> Batch {
        Batch {
            events: first.events(),
            transitions: first.conflict_key().into_iter().collect(),
            requests: vec![first],
        }
    }

    /// Adds the requests already queued, until one does not fit (returned).
    fn take_queued(&mut self, requests: &mut mpsc::Receiver<Request>) -> Option<Request> {
        while !self.is_full() {
            let Ok(request) = requests.try_recv() else {
                break;
            };
            if let Err(request) = self.add(request) {
                return Some(request);
            }
        }
        None
    }

    /// Nothing here is on a call's path: waits up to [`DEFER_AT_MOST`] for something that is,
    /// adding what comes until one does not fit (returned).
    async fn wait_for_company(
        &mut self,
        requests: &mut mpsc::Receiver<Request>,
    ) -> Option<Request> {
        let deadline = tokio::time::Instant::now() + DEFER_AT_MOST;
        while self.can_wait() {
            let request = tokio::select! {
                request = requests.recv() => request,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(request) = request else { break };
            if let Err(request) = self.add(request) {
                return Some(request);
            }
        }
        None
    }

    /// Whether a transition with `key` may join the batch's transitions: all of one kind,
    /// every key different.
    fn may_join(&self, key: &Option<(&'static str, String)>) -> bool {
        let Some((kind, key)) = key else {
            return self.transitions.is_empty();
        };
        self.transitions
            .iter()
            .all(|other| matches!(other, Some((k, o)) if k == kind && o != key))
    }

    fn is_full(&self) -> bool {
        self.events >= MAX_BATCH
    }

    /// Whether every request may wait for company (all deferred).
    fn can_wait(&self) -> bool {
        !self.is_full()
            && self
                .requests
                .iter()
                .all(|r| matches!(r.work, Work::Deferred(_)))
    }

    /// Adds `request`, or hands it back when it must wait for the next batch: over the size
    /// limit, a second transition, or an observer to attach.
    fn add(&mut self, request: Request) -> Result<(), Request> {
        let key = request.conflict_key();
        let fits = self.events + request.events() <= MAX_BATCH
            && key.as_ref().is_none_or(|key| self.may_join(key))
            && !matches!(request.work, Work::Attach(..));
        if !fits {
            return Err(request);
        }
        self.events += request.events();
        self.transitions.extend(key);
        self.requests.push(request);
        Ok(())
    }
}

impl Request {
    fn events(&self) -> usize {
        match &self.work {
            Work::Append(events) | Work::Deferred(events) => events.len(),
            // A transition appends a few events; count it as one.
            Work::Transition(_) => 1,
            Work::Attach(..) => 0,
        }
    }

    /// For a transition, its conflict key (`Some(None)`: it shares a batch with none).
    fn conflict_key(&self) -> Option<Option<(&'static str, String)>> {
        match &self.work {
            Work::Transition(t) => Some(t.conflict_key()),
            _ => None,
        }
    }
}
