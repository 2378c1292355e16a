//! What each request in progress is waiting for: the server (its handler runs, or its answer's
//! body is producing the next frame), or the client (the handler waits for the next piece of
//! the request body; the answer waits for hyper to take its next frame, which hyper does only
//! once the client has made room for it: HTTP/2 flow control, a full socket on HTTP/1). A wait
//! counts from the last progress, so a client that trickles is waited on almost all the time.
//!
//! Only the bodies' own frames count as progress: HTTP/2 pings and settings a client answers
//! promptly say nothing about whether it takes its answers.

use super::connection::RequestGuard;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Buf, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Milliseconds since the listener started: one word, so that progress is a relaxed store.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { epoch: Instant::now() }
    }

    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

/// The server owes the next step (nothing is waited for from the client).
const SERVER: u64 = u64::MAX;
/// The handler has not answered yet.
const HANDLER: u64 = u64::MAX - 1;

/// The slowest a request body may arrive and still count as progress: one coming slower is
/// waited on (and its connection sheddable under pressure) as if it did not come at all.
const MIN_BODY_BYTES_PER_SEC: u64 = 8 * 1024;

/// One request's progress, shared by its guard and its two bodies.
#[derive(Debug)]
pub struct RequestProgress {
    clock: Clock,
    /// Since when the handler has been waiting for the next piece of the request body, or
    /// [`SERVER`] (it is not reading, or the last read gave it something).
    body: AtomicU64,
    /// [`HANDLER`] until the handler answers; then since when the answer's last frame was
    /// taken (hyper has not asked for the next yet), or [`SERVER`] while the body produces one.
    answer: AtomicU64,
}

/// What a request in progress waits for, and since when (clock milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    Server,
    Body(u64),
    Answer(u64),
}

impl RequestProgress {
    pub fn new(clock: Clock) -> RequestProgress {
        RequestProgress { clock, body: AtomicU64::new(SERVER), answer: AtomicU64::new(HANDLER) }
    }

    pub fn waiting(&self) -> Waiting {
        match self.answer.load(Ordering::Relaxed) {
            HANDLER => match self.body.load(Ordering::Relaxed) {
                SERVER => Waiting::Server,
                since => Waiting::Body(since),
            },
            SERVER => Waiting::Server,
            since => Waiting::Answer(since),
        }
    }

    fn body_pending(&self) {
        if self.body.load(Ordering::Relaxed) == SERVER {
            self.body.store(self.clock.now(), Ordering::Relaxed);
        }
    }

    fn body_progressed(&self) {
        self.body.store(SERVER, Ordering::Relaxed);
    }

    /// `bytes` of the body arrived: the wait moves on by the time they would take at
    /// [`MIN_BODY_BYTES_PER_SEC`] (up to now), so a body trickling slower stays waited on from
    /// long ago, however often a piece comes.
    fn body_arrived(&self, bytes: usize) {
        let now = self.clock.now();
        let since = match self.body.load(Ordering::Relaxed) {
            SERVER => now,
            since => since,
        };
        let credit = (bytes as u64).saturating_mul(1000) / MIN_BODY_BYTES_PER_SEC;
        self.body.store(since.saturating_add(credit).min(now), Ordering::Relaxed);
    }

    /// The handler answered, or hyper took a frame of the answer: the next step is hyper's
    /// asking for the next frame, once the client has made room.
    fn answer_taken(&self) {
        self.answer.store(self.clock.now(), Ordering::Relaxed);
    }

    fn answer_producing(&self) {
        self.answer.store(SERVER, Ordering::Relaxed);
    }
}

/// Lets a request's handler say that it waits on its own client's doing (its user's other
/// requests hold its share of a byte budget): such a wait counts as waiting on the client, so
/// that a connection parked in it can be shed and closed like one whose body does not arrive.
#[derive(Debug, Clone)]
pub struct WaitOnClient(std::sync::Arc<RequestProgress>);

impl WaitOnClient {
    pub fn new(progress: std::sync::Arc<RequestProgress>) -> Self {
        WaitOnClient(progress)
    }

    /// The wait starts now and lasts as long as what this returns.
    pub fn begin(&self) -> WaitingOnClient {
        self.0.body_pending();
        WaitingOnClient(std::sync::Arc::clone(&self.0))
    }
}

/// A wait on the client in progress; it ends when dropped.
pub struct WaitingOnClient(std::sync::Arc<RequestProgress>);

impl Drop for WaitingOnClient {
    fn drop(&mut self) {
        self.0.body_progressed();
    }
}

/// A request body that records when its handler waits for the client.
pub struct RequestBody<B> {
    body: B,
    progress: std::sync::Arc<RequestProgress>,
}

impl<B> RequestBody<B> {
    pub fn new(body: B, progress: std::sync::Arc<RequestProgress>) -> Self {
        RequestBody { body, progress }
    }
}

impl<B: HttpBody + Unpin> HttpBody for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        match &poll {
            Poll::Pending => self.progress.body_pending(),
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => self.progress.body_arrived(data.remaining()),
                None => self.progress.body_progressed(),
            },
            Poll::Ready(_) => self.progress.body_progressed(),
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for RequestBody<B> {
    fn drop(&mut self) {
        // Nobody reads it any more: the handler goes on without it.
        self.progress.body_progressed();
    }
}

/// The largest frame of an answer handed to hyper at once. hyper moves a frame into its write
/// buffer (HTTP/2: the stream's send buffer, whatever the client's window) as soon as there is
/// room for one byte, so a frame handed over is memory no budget sees any more: small frames
/// keep the rest of a large answer in the body, and in its handler's reservation, until the
/// client takes it.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// A response body that keeps its request in progress until hyper drops it, records when
/// hyper takes its frames, and hands data over in frames of at most [`MAX_FRAME_BYTES`].
pub struct GuardedBody {
    body: Body,
    guard: RequestGuard,
    /// What is left of a larger frame of `body`.
    rest: Bytes,
}

impl GuardedBody {
    /// The handler's answer: from now on hyper is to take it.
    pub fn new(body: Body, guard: RequestGuard) -> Self {
        guard.progress().answer_taken();
        GuardedBody { body, guard, rest: Bytes::new() }
    }

    /// The next frame of at most [`MAX_FRAME_BYTES`] of `data`; the rest is kept for later.
    fn split(&mut self, mut data: Bytes) -> Frame<Bytes> {
        if data.len() > MAX_FRAME_BYTES {
            self.rest = data.split_off(MAX_FRAME_BYTES);
        }
        Frame::data(data)
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if !self.rest.is_empty() {
            self.guard.progress().answer_taken();
            let rest = std::mem::take(&mut self.rest);
            return Poll::Ready(Some(Ok(self.split(rest))));
        }
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        match poll {
            Poll::Pending => {
                self.guard.progress().answer_producing();
                Poll::Pending
            }
            Poll::Ready(frame) => {
                self.guard.progress().answer_taken();
                Poll::Ready(frame.map(|frame| {
                    frame.map(|frame| match frame.into_data() {
                        Ok(data) => self.split(data),
                        Err(frame) => frame,
                    })
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::connection::Registry;
    use futures_util::FutureExt;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    /// A body fed through a channel, like hyper's `Incoming`.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), receiver))
        });
        (sender, Body::from_stream(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_reading_its_body_waits_on_the_client_unless_it_arrives_fast_enough() {
        let registry = Registry::new();
        let (state, _registration) = registry.register();
        let guard = state.start_request(false).unwrap();
        let progress = Arc::clone(guard.progress());
        assert_eq!(progress.waiting(), Waiting::Server, "the handler runs");
        let (sender, body) = channel_body();
        let mut body = RequestBody::new(body, Arc::clone(&progress));
        let start = Clock::new();
        let waiting_since = |progress: &RequestProgress| match progress.waiting() {
            Waiting::Body(since) => progress.clock.instant(since),
            other => panic!("{other:?}"),
        };

        assert!(body.frame().now_or_never().is_none());
        assert_eq!(waiting_since(&progress), start.instant(0));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(body.frame().now_or_never().is_none());
        assert_eq!(waiting_since(&progress), start.instant(0), "polling again is no progress");

        // A trickle is hardly progress: the wait moves on by what the bytes would take at the
        // slowest rate that counts.
        sender.send(Bytes::from_static(b"piece")).await.unwrap();
        assert!(body.frame().await.is_some());
        assert_eq!(waiting_since(&progress), start.instant(0));
        let two_seconds = vec![0u8; 2 * MIN_BODY_BYTES_PER_SEC as usize];
        sender.send(Bytes::from(two_seconds)).await.unwrap();
        assert!(body.frame().await.is_some());
        assert_eq!(waiting_since(&progress), start.instant(0) + Duration::from_secs(2));
        // Faster than that, the wait starts now at the earliest.
        sender.send(Bytes::from(vec![0u8; 8 * MIN_BODY_BYTES_PER_SEC as usize])).await.unwrap();
        assert!(body.frame().await.is_some());
        assert_eq!(waiting_since(&progress), start.instant(0) + Duration::from_secs(3));

        drop(sender);
        assert!(body.frame().await.is_none());
        assert_eq!(progress.waiting(), Waiting::Server, "the whole body arrived");
        drop(body);
        assert_eq!(progress.waiting(), Waiting::Server, "a dropped body is not waited for");
    }

    #[tokio::test]
    async fn an_answer_is_handed_over_in_small_frames() {
        let registry = Registry::new();
        let (state, _registration) = registry.register();
        let guard = state.start_request(false).unwrap();
        let whole: Vec<u8> = (0..MAX_FRAME_BYTES * 2 + 10).map(|i| i as u8).collect();
        let mut answer = GuardedBody::new(Body::from(whole.clone()), guard);
        let mut frames = Vec::new();
        while let Some(frame) = answer.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames.iter().map(Bytes::len).collect::<Vec<_>>(), [MAX_FRAME_BYTES, MAX_FRAME_BYTES, 10]);
        assert_eq!(frames.concat(), whole);
        assert!(answer.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_waits_on_the_client_from_its_last_frame_taken() {
        let registry = Registry::new();
        let (state, _registration) = registry.register();
        let guard = state.start_request(true).unwrap();
        let progress = Arc::clone(guard.progress());
        let (sender, body) = channel_body();
        let start = Clock::new();
        tokio::time::advance(Duration::from_secs(2)).await;
        let mut answer = GuardedBody::new(body, guard);
        let answered = start.instant(0) + Duration::from_secs(2);
        let waiting_since = |progress: &RequestProgress| match progress.waiting() {
            Waiting::Answer(since) => progress.clock.instant(since),
            other => panic!("{other:?}"),
        };
        assert_eq!(waiting_since(&progress), answered, "hyper is to take the answer");

        assert!(answer.frame().now_or_never().is_none());
        assert_eq!(progress.waiting(), Waiting::Server, "the server produces the next frame");
        tokio::time::advance(Duration::from_secs(5)).await;
        sender.send(Bytes::from_static(b"frame")).await.unwrap();
        assert!(answer.frame().await.is_some());
        assert_eq!(waiting_since(&progress), answered + Duration::from_secs(5));
        drop(answer);
        assert!(state.try_shed(), "the request ended with its answer");
    }
}
