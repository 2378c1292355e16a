//! The accept loop: serves HTTP/1.1 and HTTP/2 (hyper-util's auto builder) on every accepted
//! connection, with deadlines no client can hold a connection open past, and a connection limit
//! that an attacker's idle connections cannot fill.
//!
//! - A request head must arrive within `header_read_timeout`: counted from the connection's
//!   start, and on a kept-alive connection from the first byte of the next request.
//! - A connection with no request in progress is closed after `idle_timeout`.
//! - A response write that makes no progress for `write_timeout` closes the connection (a client
//!   that stops reading); request bodies are bounded where they are read (`extract::Body`).
//! - At `max_connections`, a new connection sheds the oldest one with no request in progress
//!   (half-sent heads and idle keep-alive connections alike); when every connection is busy, it
//!   waits until one is done. A request in progress is never cut.
//! - Shutdown closes idle connections at once and lets running requests finish.

mod connection;
mod io;

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use connection::{ConnectionState, Registry};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

/// How long connections may take, and how many may be open.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

/// HTTP/2 pings a connection this often while a request is in progress, and closes it when a
/// ping goes unanswered this long: a peer that vanished does not hold a stream forever.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the accept loop pauses after an accept error other than a connection's own
/// (such as running out of file descriptors), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `stop` is cancelled; the task ends when every connection
/// has closed.
pub fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    // The header timeout is the listener's own (it also starts from a kept-alive connection's
    // next request, not from the end of its previous answer).
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    let limits = Arc::new(limits);
    tokio::spawn(async move {
        let registry = Registry::new();
        let connections = TaskTracker::new();
        let mut accept_errors = AcceptErrors::default();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        accept_errors.failed(error).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
            };
            // The new socket is open already: one over the limit at most, never more.
            if !make_room(&registry, limits.max_connections, &stop).await {
                break;
            }
            let (state, registration) = registry.register();
            let task = serve_connection(
                Arc::clone(&builder),
                stream,
                peer,
                app.clone(),
                state,
                Arc::clone(&limits),
                stop.clone(),
            );
            connections.spawn(async move {
                task.await;
                drop(registration);
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
    })
}

/// Waits until fewer than `max` connections are open, shedding idle ones; false if stopped.
async fn make_room(registry: &Registry, max: usize, stop: &CancellationToken) -> bool {
    while registry.len() >= max {
        if !registry.shed_oldest_idle() {
            tracing::debug!(max, "every connection has a request in progress; a new one waits");
        }
        // A shed connection signals when it has closed; a busy one when it goes idle.
        tokio::select! {
            () = registry.changed() => {}
            () = stop.cancelled() => return false,
        }
    }
    true
}

/// Accept errors other than a connection's own (such as running out of file descriptors),
/// logged at most once per [`ACCEPT_ERROR_LOG_EVERY`]: they repeat for as long as the cause.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<tokio::time::Instant>,
    unlogged: u64,
}

/// How often a lasting accept error is logged again.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

impl AcceptErrors {
    async fn failed(&mut self, error: std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
            return;
        }
        let now = tokio::time::Instant::now();
        if self.last_logged.is_none_or(|logged| now.duration_since(logged) >= ACCEPT_ERROR_LOG_EVERY) {
            tracing::error!(%error, since_last_logged = self.unlogged, "accepting a connection failed");
            (self.last_logged, self.unlogged) = (Some(now), 0);
        } else {
            self.unlogged += 1;
        }
        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
    }
}

async fn serve_connection<S>(
    builder: Arc<Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    app: S,
    state: Arc<ConnectionState>,
    limits: Arc<ConnectionLimits>,
    stop: CancellationToken,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io::ConnectionIo::new(stream, limits.write_timeout, Arc::clone(&state)));
    let service = ConnectionService { app, peer, state: Arc::clone(&state) };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = state.deadline(limits.header_read_timeout, limits.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = state.wake.notified() => {
                if state.is_shed() {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                if state.try_shed() {
                    tracing::debug!(%peer, "closing a connection that sent no request in time");
                    return;
                }
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                if state.try_shed() {
                    return;
                }
                // hyper closes it once the running requests are answered.
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The app as one connection serves it: each request carries the peer address and counts as
/// in progress until hyper is done with its response body.
struct ConnectionService<S> {
    app: S,
    peer: SocketAddr,
    state: Arc<ConnectionState>,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let guard = self.state.start_request(request.version() == hyper::Version::HTTP_2);
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let app = self.app.clone();
        Box::pin(async move {
            let Some(guard) = guard else {
                // Shed an instant ago: the connection is closing.
                let error = crate::error::ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the connection was closed to make room for others; retry",
                );
                return Ok(error.into_response());
            };
            let response = app.oneshot(request).await?;
            Ok(response.map(|body| axum::body::Body::new(GuardedBody { body, _guard: guard })))
        })
    }
}

/// A response body that keeps its request in progress until hyper drops it.
struct GuardedBody {
    body: axum::body::Body,
    _guard: connection::RequestGuard,
}

impl axum::body::HttpBody for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
