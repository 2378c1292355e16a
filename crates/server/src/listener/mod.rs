//! The accept loop: serves HTTP/1.1 and HTTP/2 (hyper-util's auto builder) on every accepted
//! connection, with deadlines no client can hold a connection open past, and a connection limit
//! that an attacker's idle or stalled connections cannot fill.
//!
//! - A request head must arrive within `header_read_timeout`: counted from the connection's
//!   start, and on a kept-alive connection from the first byte of the next request.
//! - A connection with no request in progress is closed after `idle_timeout`.
//! - An answer that makes no progress for `write_timeout` closes the connection (a client that
//!   stops reading): on HTTP/1 a socket write that stays blocked, on HTTP/2 an answer whose next
//!   frame the client's flow control never makes room for (its pings do not count). Request
//!   bodies are bounded where they are read (`extract::Body`).
//! - At `max_connections`, a new connection sheds first the oldest one idle for a moment
//!   (half-sent heads and idle keep-alive connections alike), then the one whose requests have
//!   all waited longest on their client (answers not taken, bodies not sent), if for more than
//!   a moment; otherwise it waits. A request the server is working on is never cut, and a
//!   connection just accepted has a moment to send its request.
//! - Shutdown closes idle connections at once and lets running requests finish.

mod connection;
mod io;
mod progress;

pub(crate) use progress::WaitOnClient;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use connection::{ConnectionState, Registry};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use progress::{GuardedBody, RequestBody};
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

/// How long a connection is left alone when the limit is reached: one just accepted (or just
/// answered) has this long to send its request, and one waiting on its client is cut only after
/// waiting this long since its last progress (a client that takes a little of its answer now
/// and then is cut most of the time).
const SHEDDING_GRACE: Duration = Duration::from_secs(1);

/// Requests one HTTP/2 connection may have in progress at once.
const HTTP2_MAX_STREAMS: u32 = 100;

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
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        // What a stream may buffer beyond its client's window, and streams per connection:
        // together they bound what an HTTP/2 connection buffers outside the byte budgets.
        .max_send_buf_size(progress::MAX_FRAME_BYTES)
        .max_concurrent_streams(HTTP2_MAX_STREAMS);
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

/// Waits until fewer than `max` connections are open, shedding idle or stalled ones; false if
/// stopped.
async fn make_room(registry: &Registry, max: usize, stop: &CancellationToken) -> bool {
    let mut logged = false;
    while registry.len() >= max {
        match registry.shed_one(SHEDDING_GRACE) {
            // Until it has closed: the signal of an earlier close must not shed another.
            Ok(()) => {
                while registry.len() >= max {
                    tokio::select! {
                        () = registry.closed() => {}
                        () = stop.cancelled() => return false,
                    }
                }
            }
            Err(retry) => {
                if !logged {
                    tracing::debug!(max, "every connection is busy or was active a moment ago; a new one waits");
                    logged = true;
                }
                tokio::select! {
                    () = registry.closed() => {}
                    () = tokio::time::sleep_until(retry) => {}
                    () = stop.cancelled() => return false,
                }
            }
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
        let deadline = state.deadline(limits.header_read_timeout, limits.idle_timeout, limits.write_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = state.wake.notified() => {
                if state.is_closing() {
                    tracing::debug!(%peer, "closing a connection to make room for others");
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                if state.try_shed() {
                    tracing::debug!(%peer, "closing a connection that sent no request in time");
                    return;
                }
                if state.answer_stalled(limits.write_timeout) {
                    tracing::debug!(%peer, "closing an HTTP/2 connection whose client does not take its answer");
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
/// in progress until hyper is done with its response body; both bodies record what the request
/// waits for.
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
        let Some(guard) = self.state.start_request(request.version() == hyper::Version::HTTP_2) else {
            // Closed an instant ago to make room: the answer is not likely to be read.
            let error = crate::error::ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the connection was closed to make room for others; retry",
            );
            return Box::pin(std::future::ready(Ok(error.into_response())));
        };
        let progress = Arc::clone(guard.progress());
        let mut request = request.map(|body| Body::new(RequestBody::new(body, Arc::clone(&progress))));
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(WaitOnClient::new(progress));
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(request).await?;
            Ok(response.map(|body| Body::new(GuardedBody::new(body, guard))))
        })
    }
}
