//! The integration-test harness: a real tern server in this process on 127.0.0.1 (its own
//! data directory, a [`ManualClock`] the test moves), and a recording [`Receiver`] that answers
//! with chosen statuses and headers, hangs, or holds a request until the test releases it. The
//! receiver counts the requests in progress per path (to measure concurrency) and can stamp
//! each arrival with the server's manual clock (to measure rates).
//!
//! Waiting helpers use real-time deadlines only as a guard against a hung test; the behaviour
//! under test (delays, backoff, timeouts) runs on the manual clock.
//!
//! Asserting that something does *not* happen: [`TestServer::settle`] waits until the engine
//! can do nothing more by itself ([`tern_engine::Activity::settled`]): nothing due that it could
//! start, no outcome being recorded, no schedule tick due, and every attempt it runs is a
//! request a receiver holds ([`Reply::Hang`], or [`Reply::Hold`] not yet released).
//! [`Receiver::assert_count_stays`] counts requests only then, so no machine is too slow for
//! it; a fixed pause would pass without the engine having had its turn. Pass `settle` every
//! receiver that holds requests, and let go of requests still held for an engine that was
//! restarted (it can no longer end them): otherwise the engine never settles, and the test
//! fails after [`DEADLINE`].
//!
//! Moving the clock: the engine reads the time when an attempt ends to plan the retry, so wait
//! for the message's `RETRY` log entry (`wait_for_state`) before advancing past a retry;
//! otherwise the retry may be planned from the already advanced time.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use reqwest::RequestBuilder;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tern_engine::Activity;
use tern_engine::clock::{Clock, ManualClock, SystemClock};
use tern_server::RunningServer;
use tern_server::config::Config;
use tern_server::dev::{DEV_USERS, dev_users};
use tokio::sync::{Notify, Semaphore};

/// How long a test waits for something that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The default dev user's token and keys.
pub const TOKEN: &str = DEV_USERS[0].1;
pub const CURRENT_KEY: &str = DEV_USERS[0].2;
pub const NEXT_KEY: &str = DEV_USERS[0].3;
/// A second user, for isolation tests.
pub const OTHER_TOKEN: &str = DEV_USERS[1].1;

/// The backend the servers of this test run use: `TERN_TEST_BACKEND=postgres` puts each on a
/// fresh database of the PostgreSQL server `TERN_TEST_POSTGRES_URL` names (`scripts/test` runs
/// the suite once per backend); otherwise each has an embedded store in its data directory.
pub fn on_postgres() -> bool {
    match std::env::var("TERN_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("TERN_TEST_BACKEND is \"sqlite\" or \"postgres\", not {other:?}"),
    }
}

/// Points `config` at the test run's backend: on PostgreSQL, a fresh database, whose URL is
/// kept in the data directory for a `tern` process started on it later
/// (`durability::TernProcess`).
pub async fn use_test_backend(config: &mut Config) {
    if !on_postgres() {
        return;
    }
    let server = tern_store::postgres::testing::server_url()
        .expect("TERN_TEST_BACKEND=postgres needs TERN_TEST_POSTGRES_URL (scripts/test sets both)");
    let url = tern_store::postgres::testing::create_database(&server).await.expect("a test database");
    std::fs::write(config.storage.data_dir.join("postgres-url"), &url).expect("keep the database's URL");
    config.storage.backend = tern_server::config::StorageBackend::Postgres;
    config.storage.postgres_url = url;
}

/// A plain client for tests that talk to a `tern` process. reqwest is built without a default
/// TLS provider, so one is installed first (a second install is refused harmlessly).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub struct TestServer {
    pub url: String,
    pub clock: Arc<ManualClock>,
    pub config: Config,
    pub http: reqwest::Client,
    running: Option<RunningServer>,
    _data_dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with the dev users and default settings.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `configure` may change first.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_at(SystemClock.now_ms(), configure).await
    }

    /// A server whose clock starts at `start_ms` (Unix ms) rather than now — for calendar and
    /// daylight-saving tests. Deliveries are signed with that time as `iat`.
    pub async fn start_at(start_ms: i64, configure: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::defaults();
        config.users = dev_users();
        config.storage.data_dir = data_dir.path().to_path_buf();
        config.server.listen = "127.0.0.1:0".into();
        use_test_backend(&mut config).await;
        configure(&mut config);
        let clock = Arc::new(ManualClock::new(start_ms));
        let running = Self::launch(&config, &clock, "127.0.0.1:0").await;
        TestServer {
            url: format!("http://{}", running.address),
            clock,
            config,
            http: http_client(),
            running: Some(running),
            _data_dir: data_dir,
        }
    }

    async fn launch(config: &Config, clock: &Arc<ManualClock>, address: &str) -> RunningServer {
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind");
        let clock: Arc<dyn Clock> = clock.clone();
        tern_server::start(config, listener, clock).await.expect("server starts")
    }

    /// Shuts the server down gracefully and starts it again on the same data and address.
    pub async fn restart(&mut self) {
        self.restart_after(Duration::ZERO).await;
    }

    /// Shuts the server down gracefully, moves the clock by `down_for` while it is down, and
    /// starts it again on the same data and address.
    pub async fn restart_after(&mut self, down_for: Duration) {
        let address = self.shutdown().await;
        self.advance(down_for);
        self.running = Some(Self::launch(&self.config, &self.clock, &address.to_string()).await);
    }

    /// Shuts the server down gracefully (for good, or until [`TestServer::restart_after`]);
    /// returns the address it listened on. Its data directory stays until the server is dropped.
    pub async fn shutdown(&mut self) -> std::net::SocketAddr {
        let running = self.running.take().expect("running");
        let address = running.address;
        running.shutdown().await.expect("clean shutdown");
        address
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url)).bearer_auth(TOKEN)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Publishes `body` to `destination` with extra headers; returns status and JSON body.
    pub async fn publish(&self, destination: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
        let mut request = self.post(&format!("/v2/publish/{destination}")).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }

    /// Publishes and returns the new message id (asserting a 200).
    pub async fn publish_ok(&self, destination: &str, headers: &[(&str, &str)], body: &str) -> String {
        let (status, json) = self.publish(destination, headers, body).await;
        assert_eq!(status, StatusCode::OK, "publish failed: {json}");
        json["messageId"].as_str().expect("messageId").to_string()
    }

    /// Enqueues `body` into `queue` for `destination` with extra headers; returns status and JSON.
    pub async fn enqueue(
        &self,
        queue: &str,
        destination: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let mut request = self.post(&format!("/v2/enqueue/{queue}/{destination}")).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }

    /// Enqueues and returns the new message id (asserting a 200).
    pub async fn enqueue_ok(&self, queue: &str, destination: &str, headers: &[(&str, &str)], body: &str) -> String {
        let (status, json) = self.enqueue(queue, destination, headers, body).await;
        assert_eq!(status, StatusCode::OK, "enqueue failed: {json}");
        json["messageId"].as_str().expect("messageId").to_string()
    }

    /// The log states of one message, oldest first. Without bodies (`trimBody=-1`), so that
    /// large bodies do not end the page early.
    pub async fn log_states(&self, message_id: &str) -> Vec<String> {
        let prefix = self.config.server.path_prefix.trim_end_matches('/');
        let path = format!("{prefix}/v2/logs?messageId={message_id}&order=earliestFirst&trimBody=-1");
        let (status, json) = send(self.get(&path)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|entry| entry["state"].as_str().expect("state").to_string())
            .collect()
    }

    /// What the engine is doing now.
    pub fn activity(&self) -> Activity {
        self.running.as_ref().expect("running").engine.activity()
    }

    /// Waits until the engine is settled: it will do nothing more by itself until the clock
    /// moves or a receiver answers. Nothing is due that it could start, no outcome is being
    /// recorded, no schedule tick is due, and each attempt it runs is a request one of
    /// `receivers` holds ([`Reply::Hang`], or [`Reply::Hold`] not yet released) — so pass every
    /// receiver the test's messages go to. Fails after [`DEADLINE`] (a hung test, or a request
    /// held elsewhere).
    pub async fn settle(&self, receivers: &[&Receiver]) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            // The receivers first: a request they stop holding afterwards shows as an attempt
            // still running or an outcome being recorded.
            let held: usize = receivers.iter().map(|receiver| receiver.held()).sum();
            let activity = self.activity();
            if activity.settled(held) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the engine never settled: {activity:?}, {held} requests held by the receivers"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How much of the server's byte budgets (request bodies, listings) is taken now.
    pub fn memory_usage(&self) -> tern_server::MemoryUsage {
        self.running.as_ref().expect("running").memory_usage()
    }

    /// Waits until the server's budgets satisfy `condition` (`what` names it in the failure).
    pub async fn wait_for_memory(&self, what: &str, condition: impl Fn(&tern_server::MemoryUsage) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let usage = self.memory_usage();
            if condition(&usage) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never: {what}; {usage:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the message's log ends with `state`; returns all its states.
    pub async fn wait_for_state(&self, message_id: &str, state: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let states = self.log_states(message_id).await;
            if states.last().map(String::as_str) == Some(state) {
                return states;
            }
            assert!(tokio::time::Instant::now() < deadline, "{message_id} never reached {state}: {states:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends a request and reads its status and JSON body (`Value::Null` when the body is empty).
pub async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request reaches tern");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let bytes = response.bytes().await.expect("body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, json)
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The server's manual clock when the request arrived (receivers started with a clock).
    pub at_ms: Option<i64>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Never answers (until the connection is dropped).
    Hang,
    /// Waits until the test releases it ([`Receiver::release`]), then answers with the status.
    Hold(u16),
    /// Waits like [`Reply::Hold`], then answers with a [`Reply::Status`] or [`Reply::Full`].
    Held(Box<Reply>),
    /// Answers with the status after a real-time pause (a slow destination).
    After(Duration, u16),
}

impl Reply {
    pub fn with_headers(status: u16, headers: &[(&str, &str)]) -> Reply {
        Reply::Full {
            status,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: String::new(),
        }
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Recorded>>,
    /// Replies per path (without query), consumed in order; the last one repeats.
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    arrived: Notify,
    /// Per path: the gate of held requests.
    gates: Mutex<HashMap<String, Gate>>,
    /// Requests that hang now.
    hanging: Mutex<usize>,
    /// Per path: requests in progress now, and the most ever in progress at once.
    flights: Mutex<HashMap<String, (usize, usize)>>,
    /// Stamps arrivals when set.
    clock: Option<Arc<ManualClock>>,
}

/// Where [`Reply::Hold`] requests to one path wait for their release.
struct Gate {
    permits: Arc<Semaphore>,
    /// Requests waiting at the gate.
    waiting: usize,
    /// Releases not yet used by a request.
    unused: usize,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { permits: Arc::new(Semaphore::new(0)), waiting: 0, unused: 0 }
    }
}

impl Gate {
    /// Waiting requests no release lets go yet.
    fn held(&self) -> usize {
        self.waiting.saturating_sub(self.unused)
    }
}

impl ReceiverState {
    fn with_gate<T>(&self, path: &str, action: impl FnOnce(&mut Gate) -> T) -> T {
        action(self.gates.lock().unwrap().entry(path.to_string()).or_default())
    }

    /// Waits for a release of `path`, counted as held until one is given.
    async fn hold(self: &Arc<Self>, path: &str) {
        let permits = self.with_gate(path, |gate| {
            gate.waiting += 1;
            Arc::clone(&gate.permits)
        });
        // Tern may give up first (its timeout), which drops this future.
        let mut waiting = Waiting { state: Arc::clone(self), path: path.to_string(), released: false };
        permits.acquire_owned().await.expect("gates are never closed").forget();
        waiting.released = true;
    }
}

/// A request at a gate; when it leaves, it is no longer waiting (and used a release if it got
/// one).
struct Waiting {
    state: Arc<ReceiverState>,
    path: String,
    released: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.state.with_gate(&self.path, |gate| {
            gate.waiting -= 1;
            if self.released {
                gate.unused -= 1;
            }
        });
    }
}

/// A request that hangs, counted until tern gives up on it.
struct Hanging(Arc<ReceiverState>);

impl Hanging {
    fn enter(state: &Arc<ReceiverState>) -> Hanging {
        *state.hanging.lock().unwrap() += 1;
        Hanging(Arc::clone(state))
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        *self.0.hanging.lock().unwrap() -= 1;
    }
}

/// Counts a request as in progress until it is answered (or tern gives up on it).
struct InFlight {
    state: Arc<ReceiverState>,
    path: String,
}

impl InFlight {
    fn enter(state: &Arc<ReceiverState>, path: &str) -> InFlight {
        let mut flights = state.flights.lock().unwrap();
        let (now, max) = flights.entry(path.to_string()).or_default();
        *now += 1;
        *max = (*max).max(*now);
        InFlight { state: Arc::clone(state), path: path.to_string() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((now, _)) = self.state.flights.lock().unwrap().get_mut(&self.path) {
            *now -= 1;
        }
    }
}

/// A recording HTTP destination on 127.0.0.1.
#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_stamping(None).await
    }

    /// A receiver that stamps every arrival with `clock` (the server's, see [`Recorded::at_ms`]).
    pub async fn start_with_clock(clock: &Arc<ManualClock>) -> Receiver {
        Self::start_stamping(Some(Arc::clone(clock))).await
    }

    async fn start_stamping(clock: Option<Arc<ManualClock>>) -> Receiver {
        let state = Arc::new(ReceiverState { clock, ..ReceiverState::default() });
        let app = axum::Router::new().fallback(record).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, state }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers requests to `path` with `replies` in order, repeating the last one. Paths
    /// without a script answer 200 `ok`.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.state.scripts.lock().unwrap().insert(path.to_string(), replies.into());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.target.split('?').next() == Some(path)).collect()
    }

    /// Waits until `path` got at least `count` requests; returns them all.
    pub async fn wait_for(&self, path: &str, count: usize) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let arrived = self.state.arrived.notified();
            let requests = self.requests_to(path);
            if requests.len() >= count {
                return requests;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{path} got {} of {count} requests: {:?}", requests.len(), self.requests());
            }
        }
    }

    /// Lets `count` requests held at `path` ([`Reply::Hold`]) answer, oldest first; releases
    /// given before a request arrives are used by the next ones.
    pub fn release(&self, path: &str, count: usize) {
        self.state.with_gate(path, |gate| {
            gate.unused += count;
            gate.permits.add_permits(count);
        });
    }

    /// Requests this receiver holds now, on every path: they hang ([`Reply::Hang`]) or wait for
    /// a release not given yet ([`Reply::Hold`]). Others (arriving, answering, or answering
    /// after a pause) are not held: they end without the test's help.
    pub fn held(&self) -> usize {
        let holding: usize = self.state.gates.lock().unwrap().values().map(Gate::held).sum();
        holding + *self.state.hanging.lock().unwrap()
    }

    /// Requests to `path` in progress now (arrived, not yet answered).
    pub fn in_flight(&self, path: &str) -> usize {
        self.state.flights.lock().unwrap().get(path).map_or(0, |(now, _)| *now)
    }

    /// The most requests to `path` ever in progress at once.
    pub fn max_in_flight(&self, path: &str) -> usize {
        self.state.flights.lock().unwrap().get(path).map_or(0, |(_, max)| *max)
    }

    /// Forgets the most requests ever in progress at `path`: from now on it counts from those
    /// in progress now.
    pub fn reset_max_in_flight(&self, path: &str) {
        if let Some((now, max)) = self.state.flights.lock().unwrap().get_mut(path) {
            *max = *now;
        }
    }

    /// Waits until `path` has exactly `count` requests in progress.
    pub async fn wait_in_flight(&self, path: &str, count: usize) {
        self.wait_in_flight_until(path, &format!("exactly {count}"), |now| now == count).await
    }

    /// Waits until `path` has at least `count` requests in progress.
    pub async fn wait_in_flight_at_least(&self, path: &str, count: usize) {
        self.wait_in_flight_until(path, &format!("at least {count}"), |now| now >= count).await
    }

    async fn wait_in_flight_until(&self, path: &str, expected: &str, reached: impl Fn(usize) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !reached(self.in_flight(path)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} has {} requests in progress, expected {expected}",
                self.in_flight(path)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Asserts that `path` has exactly `count` requests once `server` settled with this
    /// receiver ([`TestServer::settle`]): nothing more arrives unless the test moves the clock
    /// or lets a held request answer.
    pub async fn assert_count_stays(&self, server: &TestServer, path: &str, count: usize) {
        server.settle(&[self]).await;
        assert_eq!(self.requests_to(path).len(), count, "unexpected requests to {path}: {:?}", self.requests_to(path));
    }
}

async fn record(State(state): State<Arc<ReceiverState>>, request: Request) -> Response {
    let at_ms = state.clock.as_ref().map(|clock| clock.now_ms());
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let _in_flight = InFlight::enter(&state, &path);
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let target = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let recorded = Recorded { method: parts.method, target, headers: parts.headers, body, at_ms };
    state.requests.lock().unwrap().push(recorded);
    state.arrived.notify_waiters();
    let reply = {
        let mut scripts = state.scripts.lock().unwrap();
        scripts
            .get_mut(&path)
            .and_then(|queue| if queue.len() > 1 { queue.pop_front() } else { queue.front().cloned() })
    };
    match reply {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Reply::Hang) => {
            let _hanging = Hanging::enter(&state);
            std::future::pending().await
        }
        Some(Reply::Hold(status)) => {
            state.hold(&path).await;
            status_reply(status)
        }
        Some(Reply::Held(reply)) => {
            state.hold(&path).await;
            immediate_reply(*reply)
        }
        Some(Reply::After(pause, status)) => {
            tokio::time::sleep(pause).await;
            status_reply(status)
        }
        Some(reply) => immediate_reply(reply),
    }
}

/// The response of a reply that needs no waiting.
fn immediate_reply(reply: Reply) -> Response {
    match reply {
        Reply::Status(status) => status_reply(status),
        Reply::Full { status, headers, body } => {
            let mut response = (StatusCode::from_u16(status).expect("status"), body).into_response();
            for (name, value) in headers {
                response.headers_mut().append(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    value.parse().expect("value"),
                );
            }
            response
        }
        other => panic!("{other:?} is not answered at once"),
    }
}

fn status_reply(status: u16) -> Response {
    let status = StatusCode::from_u16(status).expect("status");
    (status, status.canonical_reason().unwrap_or_default().to_string()).into_response()
}
