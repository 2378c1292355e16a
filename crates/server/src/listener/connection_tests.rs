use super::*;
use crate::listener::progress::{GuardedBody, RequestBody};
use axum::body::Body;
use futures_util::FutureExt;
use http_body_util::BodyExt;

const GRACE: Duration = Duration::from_secs(1);

/// An answer the handler gave, which hyper has not taken further.
fn answered(guard: RequestGuard) -> GuardedBody {
    GuardedBody::new(Body::from("answer"), guard)
}

/// A request body the handler waits for, from now on.
fn reading(guard: &RequestGuard) -> RequestBody<Body> {
    let mut body = RequestBody::new(
        Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>()),
        Arc::clone(guard.progress()),
    );
    assert!(body.frame().now_or_never().is_none());
    body
}

use axum::body::Bytes;

#[tokio::test(start_paused = true)]
async fn idle_connections_are_shed_oldest_first_once_idle_for_the_grace() {
    let registry = Registry::new();
    let (first, _a) = registry.register();
    let (second, _b) = registry.register();
    let (third, _c) = registry.register();
    let busy = first.start_request(false).expect("starts");
    let start = Instant::now();
    assert_eq!(registry.shed_one(GRACE), Err(start + GRACE), "newcomers have a moment to send their request");
    tokio::time::advance(GRACE).await;
    assert_eq!(registry.shed_one(GRACE), Ok(()));
    assert!(second.is_closing() && !third.is_closing() && !first.is_closing(), "the oldest idle one");
    assert!(second.start_request(false).is_none(), "a shed connection starts nothing");
    assert_eq!(registry.shed_one(GRACE), Ok(()));
    assert!(third.is_closing());
    assert!(registry.shed_one(GRACE).is_err(), "the first connection's handler runs");
    drop(busy);
    assert!(!first.try_shed(), "its answer may still be unflushed");
    first.flushed();
    assert!(registry.shed_one(GRACE).is_err(), "it was answered a moment ago");
    tokio::time::advance(GRACE).await;
    assert_eq!(registry.shed_one(GRACE), Ok(()));
    assert!(first.is_closing());
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_is_idle_when_its_last_stream_ends() {
    let registry = Registry::new();
    let (state, _registration) = registry.register();
    let first = state.start_request(true).unwrap();
    let second = state.start_request(true).unwrap();
    drop(first);
    assert!(!state.try_shed(), "a stream is still in progress");
    drop(second);
    assert!(state.try_shed(), "no flush to wait for");
}

#[tokio::test(start_paused = true)]
async fn deadlines_follow_idle_time_and_request_heads() {
    let (header, idle, write) = (Duration::from_secs(5), Duration::from_secs(60), Duration::from_secs(30));
    let registry = Registry::new();
    let start = Instant::now();
    let (state, _registration) = registry.register();
    assert_eq!(state.deadline(header, idle, write), Some(start + header), "the first head is due at once");
    let request = state.start_request(false).unwrap();
    assert_eq!(state.deadline(header, idle, write), None, "HTTP/1 writes are timed by the socket");
    tokio::time::advance(Duration::from_secs(10)).await;
    drop(request);
    assert_eq!(state.deadline(header, idle, write), None, "not idle before the answer is flushed");
    state.flushed();
    assert_eq!(state.deadline(header, idle, write), Some(start + Duration::from_secs(70)));
    tokio::time::advance(Duration::from_secs(20)).await;
    state.bytes_read();
    assert_eq!(state.deadline(header, idle, write), Some(start + Duration::from_secs(35)));
}

#[tokio::test(start_paused = true)]
async fn connections_waiting_on_their_clients_are_cut_longest_first_never_while_the_server_works() {
    let registry = Registry::new();
    let start = Instant::now();
    let (not_taking, _a) = registry.register();
    let (working, _b) = registry.register();
    let (not_sending, _c) = registry.register();
    let answer = answered(not_taking.start_request(true).unwrap());
    let handler = working.start_request(true).unwrap();
    tokio::time::advance(GRACE / 2).await;
    let upload = not_sending.start_request(false).unwrap();
    let body = reading(&upload);

    assert_eq!(registry.shed_one(GRACE), Err(start + GRACE), "nobody has waited long enough yet");
    tokio::time::advance(GRACE).await;
    assert_eq!(registry.shed_one(GRACE), Ok(()));
    assert!(not_taking.is_closing() && !not_sending.is_closing(), "the longest wait is cut first");
    assert!(not_taking.start_request(true).is_none(), "a cut connection starts nothing");
    assert_eq!(registry.shed_one(GRACE), Ok(()));
    assert!(not_sending.is_closing());
    assert!(registry.shed_one(GRACE).is_err(), "a running handler is never cut");
    assert!(!working.is_closing());

    drop((answer, body, upload));
    assert!(not_taking.is_closing() && not_sending.is_closing(), "closing for good");
    drop(handler);
    assert!(working.try_shed(), "idle again");
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_shed_before_stalled_ones() {
    let registry = Registry::new();
    let (stalled, _a) = registry.register();
    let answer = answered(stalled.start_request(true).unwrap());
    let (idle, _b) = registry.register();
    tokio::time::advance(GRACE * 5).await;
    assert_eq!(registry.shed_one(GRACE), Ok(()));
    assert!(idle.is_closing() && !stalled.is_closing());
    drop(answer);
}

#[tokio::test(start_paused = true)]
async fn every_stream_must_wait_on_the_client_and_the_oldest_wait_counts() {
    let registry = Registry::new();
    let (state, _registration) = registry.register();
    let old = answered(state.start_request(true).unwrap());
    tokio::time::advance(Duration::from_secs(3)).await;
    let handler = state.start_request(true).unwrap();
    assert_eq!(state.stall(), None, "the server works on a stream");
    let new = answered(handler);
    let stall = state.stall().expect("every stream waits");
    assert_eq!(stall.since, 0, "a new stream's progress is not the old one's");
    assert_eq!(stall.answer_since, Some(0));
    drop((old, new));
    assert_eq!(state.stall(), None, "idle");
}

#[tokio::test(start_paused = true)]
async fn an_http1_answer_waits_on_the_client_while_the_socket_is_blocked() {
    let registry = Registry::new();
    let (state, _registration) = registry.register();
    let answer = answered(state.start_request(false).unwrap());
    assert_eq!(state.stall(), None, "hyper is writing it");
    tokio::time::advance(Duration::from_secs(2)).await;
    state.write_polled(false);
    assert_eq!(state.stall(), Some(Stall { since: 2000, answer_since: Some(2000) }));
    tokio::time::advance(Duration::from_secs(2)).await;
    state.write_polled(false);
    assert_eq!(state.stall().map(|stall| stall.since), Some(2000), "still blocked since");
    state.write_polled(true);
    assert_eq!(state.stall(), None, "the client took some");
    drop(answer);
    state.write_polled(false);
    assert_eq!(state.stall(), Some(Stall { since: 4000, answer_since: Some(4000) }), "the last of it is unflushed");
    let pipelined = state.start_request(false).unwrap();
    assert_eq!(
        state.stall().map(|stall| stall.since),
        Some(4000),
        "hyper runs the next handler once the last answer is written"
    );
    state.write_polled(true);
    assert_eq!(state.stall(), None, "the next handler runs");
    drop(pipelined);
    state.write_polled(true);
    state.flushed();
    assert_eq!(state.stall(), None, "idle");
}

#[tokio::test(start_paused = true)]
async fn an_http2_answer_not_taken_for_the_write_timeout_closes_the_connection() {
    let (header, idle, write) = (Duration::from_secs(5), Duration::from_secs(60), Duration::from_secs(30));
    let registry = Registry::new();
    let start = Instant::now();
    let (state, _registration) = registry.register();
    let handler = state.start_request(true).unwrap();
    assert_eq!(state.deadline(header, idle, write), Some(start + write), "looked at again later");
    tokio::time::advance(Duration::from_secs(10)).await;
    let answer = answered(handler);
    assert_eq!(state.deadline(header, idle, write), Some(start + Duration::from_secs(40)));
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(!state.answer_stalled(write));
    let running = state.start_request(true).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!state.answer_stalled(write), "the server works on another stream");
    drop(running);
    assert!(state.answer_stalled(write));
    drop(answer);
}
