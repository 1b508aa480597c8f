//! Bounds on what callers can take: `/v1/*` requests in flight, and open connections.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use crate::telemetry::Metrics;

/// `/v1/*` requests handled at once. More are answered 503 at once rather
/// than queued, so a flood (or many slow request bodies) costs bounded
/// memory and the sender learns to back off. Health, readiness and metrics
/// stay outside the limit: a flood of API calls must not make a kubelet
/// restart the agent or Prometheus lose it.
pub const MAX_API_REQUESTS: usize = 64;

/// Longest one `/v1/*` request may hold its place, body included: a client
/// that sends its body a byte a minute must not keep a slot for good.
const API_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The places for `/v1/*` requests, and the gauge that shows them taken.
#[derive(Clone)]
pub(super) struct InFlight {
    pub(super) permits: Arc<Semaphore>,
    pub(super) metrics: Arc<Metrics>,
}

/// A taken place: counted in the gauge until dropped, also when the client
/// goes away and the request future is dropped mid-way.
struct Place {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.metrics.api_in_flight.dec();
    }
}

pub(super) async fn limit_in_flight(State(places): State<InFlight>, req: Request, next: Next) -> Response {
    let Ok(permit) = places.permits.try_acquire_owned() else {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("more than {MAX_API_REQUESTS} API requests in flight; retry in a moment"),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    };
    places.metrics.api_in_flight.inc();
    let place = Place {
        _permit: permit,
        metrics: places.metrics,
    };
    let response = match tokio::time::timeout(API_REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request not read and answered within {}s",
                API_REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    };
    drop(place);
    response
}

/// Connections the API keeps open at once: half the process's descriptor
/// limit, at most 1024. Past it, new connections wait in the kernel's backlog
/// instead of taking the descriptors that collectors, probes, sinks and the
/// bundle writer need: with a soft limit of 1024, a thousand idle API
/// connections made every new socket and file fail with EMFILE.
pub fn max_connections() -> usize {
    crate::telemetry::max_fds().map_or(512, |n| (n / 2).clamp(16, 1024) as usize)
}

/// A listener that stops accepting while `max` of its connections are open.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max: usize) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max)),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so this only waits for a place.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (LimitedConnection { io, _permit: permit }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its place until it is dropped.
pub struct LimitedConnection {
    io: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for LimitedConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
