//! Bounded waiting, for the integration tests: poll a condition at a
//! short interval until it holds, bounded in attempts and in time, and fail naming what was
//! awaited (and what was last seen) when it never does.
//!
//! An attempt is a closure returning a future (`|| async move { … }`), not an async closure:
//! the future of a wait then stays `Send` where it must (a spawned task, a boxed driver).

#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How often a condition is polled unless said otherwise.
pub const INTERVAL: Duration = Duration::from_millis(25);

/// What one attempt at a condition returns: `Some(value)` or `Ok(value)` once it holds,
/// `None` or `Err(what was seen instead)` while it does not.
pub trait Attempt {
    type Value;
    type Seen;
    fn into_result(self) -> Result<Self::Value, Option<Self::Seen>>;
}

impl<T> Attempt for Option<T> {
    type Value = T;
    type Seen = Infallible;
    fn into_result(self) -> Result<T, Option<Infallible>> {
        self.ok_or(None)
    }
}

impl<T, E> Attempt for Result<T, E> {
    type Value = T;
    type Seen = E;
    fn into_result(self) -> Result<T, Option<E>> {
        self.map_err(Some)
    }
}

type ValueOf<F> = <<F as Future>::Output as Attempt>::Value;
type SeenOf<F> = <<F as Future>::Output as Attempt>::Seen;

/// Polls `attempt` every [`INTERVAL`] until it holds, for at most `timeout`; its value. Panics
/// naming `what` (and the last thing seen) if it never does.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, attempt: F) -> ValueOf<Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output: Attempt<Seen: Display>>,
{
    eventually_every(what, timeout, INTERVAL, attempt).await
}

/// [`eventually`], polling every `interval` (for costly probes: a process, a chat server).
pub async fn eventually_every<F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    attempt: F,
) -> ValueOf<Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output: Attempt<Seen: Display>>,
{
    match poll(timeout, interval, attempt).await {
        Ok(value) => value,
        Err(seen) => timed_out(what, timeout, seen),
    }
}

/// Polls `attempt` every [`INTERVAL`] for at most `timeout`: its value once it holds, or what
/// was last seen (`None` if nothing) when it never did. For waits whose end the test judges
/// itself, or where not holding is the expected answer.
pub async fn within<F, Fut>(
    timeout: Duration,
    attempt: F,
) -> Result<ValueOf<Fut>, Option<SeenOf<Fut>>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output: Attempt>,
{
    poll(timeout, INTERVAL, attempt).await
}

async fn poll<F, Fut>(
    timeout: Duration,
    interval: Duration,
    mut attempt: F,
) -> Result<ValueOf<Fut>, Option<SeenOf<Fut>>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output: Attempt>,
{
    let deadline = Instant::now() + timeout;
    let mut seen = None;
    for _ in 0..max_attempts(timeout, interval) {
        let left = deadline.saturating_duration_since(Instant::now());
        // An attempt that hangs is cut off at the deadline too (the last one gets an interval).
        match tokio::time::timeout(left.max(interval), attempt()).await {
            Ok(outcome) => match outcome.into_result() {
                Ok(value) => return Ok(value),
                Err(now) => seen = now.or(seen),
            },
            Err(_) => break,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(interval.min(left)).await;
    }
    Err(seen)
}

/// [`eventually_every`] for code that runs outside an async runtime: polls `attempt` every
/// `interval`, blocking the thread between attempts.
pub fn eventually_blocking<A>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> A,
) -> A::Value
where
    A: Attempt<Seen: Display>,
{
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = None;
    for _ in 0..max_attempts(timeout, interval) {
        match attempt().into_result() {
            Ok(value) => return value,
            Err(now) => seen = now.or(seen),
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(interval.min(left));
    }
    timed_out(what, timeout, seen)
}

fn timed_out(what: &str, timeout: Duration, seen: Option<impl Display>) -> ! {
    match seen {
        Some(seen) => panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}"),
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// One attempt per interval, and a last one at the deadline.
fn max_attempts(timeout: Duration, interval: Duration) -> u128 {
    timeout.as_millis() / interval.as_millis().max(1) + 2
}
