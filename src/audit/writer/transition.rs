//! Transitions: state changes that commit with the events recording them, decided inside the
//! writer's transaction on the state as of the verified head.

use super::commit::BatchError;
use super::{Request, Work};
use crate::audit::{NewEvent, Prepared, prepare};
use futures::future::BoxFuture;
use std::any::Any;

/// A state change that commits with the events recording it. The writer calls [`decide`]
/// with the chain lock held and every earlier event already seen by the observers, then
/// [`write`] in the same transaction; the caller gets the transition back, holding what it
/// decided.
///
/// [`decide`]: Transition::decide
/// [`write`]: Transition::write
pub trait Transition: Any + Send {
    /// The events to append (none: nothing happens, and `write` is still called).
    fn decide(&mut self) -> Vec<NewEvent>;

    /// Writes the working-state change in the writer's transaction.
    fn write<'c>(
        &'c mut self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// What this transition decides on, as (kind, key): transitions of one kind with different
    /// keys decide on disjoint state, so they may share a commit, each deciding as if alone.
    /// `None` (the default): it commits in a batch with no other transition.
    fn conflict_key(&self) -> Option<(&'static str, String)> {
        None
    }
}

/// Each request's events, in order: an append's as queued; a transition's as it decides them
/// now, after which it writes its change in `tx`.
pub(super) async fn take_events(
    tx: &mut sqlx::AnyConnection,
    batch: &mut [Request],
) -> Result<Vec<Vec<Prepared>>, BatchError> {
    let mut owned: Vec<Vec<Prepared>> = Vec::with_capacity(batch.len());
    for request in batch.iter_mut() {
        match &mut request.work {
            Work::Append(events) | Work::Deferred(events) => owned.push(std::mem::take(events)),
            Work::Transition(transition) => {
                let events = transition
                    .decide()
                    .into_iter()
                    .map(prepare)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| BatchError::Invalid(e.to_string()))?;
                transition.write(&mut *tx).await?;
                owned.push(events);
            }
            Work::Attach(..) => owned.push(Vec::new()),
        }
    }
    Ok(owned)
}
