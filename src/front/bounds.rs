//! Bounds at the HTTP edge: how many connections are open at once, how long a client may take
//! to send a request's headers and its body, and how long requests in flight get when the
//! gateway stops. A slow or idle client holds a connection for a bounded time, never a worker.

use crate::config::ServerConfig;
use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// The limits of the HTTP listener (`server.*` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl EdgeLimits {
    pub fn from_config(server: &ServerConfig) -> Self {
        EdgeLimits {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(server.body_read_timeout_secs),
            max_connections: server.max_connections,
            shutdown_grace: Duration::from_secs(server.shutdown_grace_secs),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`; then stops accepting, lets
/// the requests in flight finish for at most `shutdown_grace`, and closes what is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: EdgeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let hard_stop = CancellationToken::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    while let Some((slot, stream, peer)) = next_connection(&listener, &slots, &shutdown).await {
        let service = hyper::service::service_fn({
            let router = router.clone();
            let deadline = limits.body_read_timeout;
            move |request: hyper::Request<Incoming>| {
                let request = request.map(|body| Body::new(DeadlineBody::new(body, deadline)));
                router.clone().call(request)
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let hard_stop = hard_stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                _ = hard_stop.cancelled() => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    drain(graceful, limits.shutdown_grace).await;
    hard_stop.cancel();
    Ok(())
}

/// The next client, with the connection slot it holds; `None` once `shutdown` is cancelled.
/// Past the limit, new clients wait in the listen backlog until a connection closes.
async fn next_connection(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => return None,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((slot, stream, peer)),
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Lets the requests in flight finish for at most `grace`.
async fn drain(graceful: GracefulShutdown, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "requests still in flight after the shutdown grace: closing their connections"
        );
    }
}

/// A request body that must arrive whole within a deadline set when its headers arrived, so
/// that a client sending a byte a second cannot hold a request open.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

/// The body did not arrive within `server.body_read_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimeout(pub Duration);

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(this.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether reading a body failed because of its deadline (anywhere in the error's chain).
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_that_trickles_past_its_deadline_fails() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, axum::Error>>(1);
        let body = http_body_util::StreamBody::new(rx);
        let body = DeadlineBody::new(body, Duration::from_millis(300));
        let feeder = tokio::spawn(async move {
            use futures::SinkExt;
            for _ in 0..10 {
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let err = body.collect().await.unwrap_err();
        assert!(is_body_timeout(&*err), "{err}");
        feeder.abort();
    }

    #[tokio::test]
    async fn a_body_within_its_deadline_arrives() {
        let body = DeadlineBody::new(Body::from("hello"), Duration::from_secs(2));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }
}
