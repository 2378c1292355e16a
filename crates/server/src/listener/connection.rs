//! What the listener knows of each open connection: its requests in progress and what each
//! waits for, since when it has been idle or receiving a request head, whether its socket is
//! blocked on a write, and whether it is closing. The connection limit picks here whom to shed.

use super::progress::{Clock, RequestProgress, Waiting};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The connection was shed while idle (or timed out): it is closing and starts no request.
const SHED: usize = usize::MAX;
/// Every request ended but the last answer may still sit in hyper's buffer: the connection is
/// not idle until the next flush completes.
const FLUSH_DUE: usize = 1 << (usize::BITS - 2);
/// The connection is closing, cut while its requests waited on the client: it starts no
/// request. Also set in [`SHED`].
const CUT: usize = 1 << (usize::BITS - 3);
/// The bits of the state word that count requests in progress.
const COUNT: usize = CUT - 1;
/// No request head has started arriving since the connection went idle.
const NO_HEAD: u64 = u64::MAX;
/// The last write to the socket completed.
const NOT_BLOCKED: u64 = u64::MAX;

/// The open connections, in the order they were accepted.
pub struct Registry {
    clock: Clock,
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<ConnectionState>>>,
    /// Signalled when a connection closes (the accept loop may be waiting for room). One that
    /// goes idle is not sheddable at once: [`Registry::shed_one`] says when it will be.
    closed: Notify,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            clock: Clock::new(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
            closed: Notify::new(),
        })
    }

    /// Connections whose socket is still open (closing ones count until they are closed).
    pub fn len(&self) -> usize {
        self.open.lock().expect("registry lock").len()
    }

    /// A connection that closes with the returned [`Registration`]. Its first request head must
    /// arrive within the header timeout, counted from now.
    pub fn register(self: &Arc<Self>) -> (Arc<ConnectionState>, Registration) {
        let now = self.clock.now();
        let state = Arc::new(ConnectionState {
            registry: Arc::clone(self),
            word: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            head_started: AtomicU64::new(now),
            http2: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            write_blocked: AtomicU64::new(NOT_BLOCKED),
            wake: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open.lock().expect("registry lock").insert(id, Arc::clone(&state));
        (state, Registration { registry: Arc::clone(self), id })
    }

    /// Closes one connection to make room for a new one, or says until when none may be closed
    /// (unless something changes first). In order:
    /// - the oldest connection idle for at least `grace` (a half-sent head, an idle keep-alive
    ///   connection): nothing is lost;
    /// - the connection whose requests have all waited on their client the longest, for at
    ///   least `grace` (a client that does not take its answers or send its body).
    ///
    /// A connection is never cut while the server works on one of its requests, and one that
    /// was just accepted (or just answered) has `grace` to send its request: a newcomer is not
    /// shed in favour of a connection that holds a slot without using it.
    pub fn shed_one(&self, grace: Duration) -> Result<(), Instant> {
        let now = self.clock.now();
        let grace = grace.as_millis() as u64;
        let mut retry = now + grace;
        let open = self.open.lock().expect("registry lock");
        for state in open.values() {
            if let Some(since) = state.idle_since() {
                if now.saturating_sub(since) >= grace && state.try_shed() {
                    return Ok(());
                }
                retry = retry.min(since + grace);
            }
        }
        let mut longest: Option<(u64, &Arc<ConnectionState>)> = None;
        for state in open.values() {
            if let Some(stall) = state.stall() {
                if now.saturating_sub(stall.since) < grace {
                    retry = retry.min(stall.since + grace);
                } else if longest.is_none_or(|(since, _)| stall.since < since) {
                    longest = Some((stall.since, state));
                }
            }
        }
        if let Some((_, state)) = longest
            && state.cut()
        {
            return Ok(());
        }
        Err(self.clock.instant(retry.max(now + 1)))
    }

    /// Waits until a connection closes (or did so since the last wait).
    pub async fn closed(&self) {
        self.closed.notified().await
    }
}

/// Removes its connection from the registry when dropped, after the socket is closed.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.open.lock().expect("registry lock").remove(&self.id);
        self.registry.closed.notify_one();
    }
}

/// Since when every request in progress on a connection has waited on its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// The oldest wait (clock milliseconds).
    pub since: u64,
    /// The oldest wait of an answer for the client to take, if any.
    pub answer_since: Option<u64>,
}

impl Stall {
    fn add(stall: Option<Stall>, since: u64, answer: bool) -> Option<Stall> {
        let (oldest, oldest_answer) = stall.map_or((since, None), |stall| (stall.since.min(since), stall.answer_since));
        let answer_since = if answer { Some(oldest_answer.map_or(since, |old| old.min(since))) } else { oldest_answer };
        Some(Stall { since: oldest, answer_since })
    }
}

/// One connection's state, shared by its task, its IO, its requests and the registry.
pub struct ConnectionState {
    registry: Arc<Registry>,
    /// Requests in progress, plus [`FLUSH_DUE`] and [`CUT`]; or [`SHED`]. One word, so that
    /// closing can never race with a request starting.
    word: AtomicUsize,
    /// Clock milliseconds since the connection was last idle.
    idle_since: AtomicU64,
    /// Clock milliseconds when the first byte of a request head arrived, or [`NO_HEAD`].
    head_started: AtomicU64,
    /// An HTTP/2 connection reads frames (pings, settings) between requests: only its first
    /// request is bound by the header timeout.
    http2: AtomicBool,
    /// What each request in progress waits for.
    requests: Mutex<Vec<Arc<RequestProgress>>>,
    /// Clock milliseconds since a write to the socket has been blocked, or [`NOT_BLOCKED`].
    write_blocked: AtomicU64,
    /// Wakes the connection's task: it went idle, a head started, or it is to close.
    pub wake: Notify,
}

impl ConnectionState {
    /// A request starts; `None` if the connection is closing.
    pub fn start_request(self: &Arc<Self>, http2: bool) -> Option<RequestGuard> {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        let previous = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| (word & CUT == 0).then(|| word + 1))
            .ok()?;
        let progress = Arc::new(RequestProgress::new(self.registry.clock));
        self.requests.lock().expect("requests lock").push(Arc::clone(&progress));
        if http2 && previous == 0 {
            // Busy now: its task looks out for answers the client does not take.
            self.wake.notify_one();
        }
        Some(RequestGuard { connection: Arc::clone(self), progress })
    }

    fn end_request(&self, progress: &Arc<RequestProgress>) {
        let mut requests = self.requests.lock().expect("requests lock");
        if let Some(index) = requests.iter().position(|request| Arc::ptr_eq(request, progress)) {
            requests.swap_remove(index);
        }
        drop(requests);
        // HTTP/2 streams end in tasks of their own, possibly after the connection's last flush:
        // waiting for another flush could wait forever, so the connection is idle at once.
        let http2 = self.http2.load(Ordering::Relaxed);
        let next = |word: usize| {
            let (count, flags) = ((word & COUNT) - 1, word & (FLUSH_DUE | CUT));
            match count {
                0 if http2 => flags & CUT,
                0 => flags | FLUSH_DUE,
                _ => count | flags,
            }
        };
        let previous = self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| Some(next(word)));
        if previous.is_ok_and(|word| next(word) == 0) {
            self.went_idle();
        }
    }

    /// The IO flushed everything hyper had written: once no request is in progress, the
    /// connection is idle from now.
    pub fn flushed(&self) {
        if self.word.load(Ordering::Acquire) != FLUSH_DUE
            || self.word.compare_exchange(FLUSH_DUE, 0, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            return;
        }
        self.went_idle();
    }

    fn went_idle(&self) {
        self.idle_since.store(self.registry.clock.now(), Ordering::Relaxed);
        self.head_started.store(NO_HEAD, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Bytes arrived: on an idle HTTP/1 connection they start a request head, which must be
    /// complete within the header timeout.
    pub fn bytes_read(&self) {
        if self.word.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == NO_HEAD
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_started.store(self.registry.clock.now(), Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// A write to the socket completed (`true`) or would block.
    pub fn write_polled(&self, completed: bool) {
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if completed && blocked != NOT_BLOCKED {
            self.write_blocked.store(NOT_BLOCKED, Ordering::Relaxed);
        } else if !completed && blocked == NOT_BLOCKED {
            self.write_blocked.store(self.registry.clock.now(), Ordering::Relaxed);
        }
    }

    /// Marks an idle connection shed; false if a request is in progress (or it is closing).
    pub fn try_shed(&self) -> bool {
        let shed = self.word.compare_exchange(0, SHED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if shed {
            self.wake.notify_one();
        }
        shed
    }

    /// Marks the connection closing whatever its requests wait for; false if it already was.
    fn cut(&self) -> bool {
        let cut = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| match word {
                _ if word & CUT != 0 => None,
                0 => Some(SHED),
                _ => Some(word | CUT),
            })
            .is_ok();
        if cut {
            self.wake.notify_one();
        }
        cut
    }

    pub fn is_closing(&self) -> bool {
        self.word.load(Ordering::Acquire) & CUT != 0
    }

    /// Since when the connection has been idle, if it is.
    fn idle_since(&self) -> Option<u64> {
        (self.word.load(Ordering::Acquire) == 0).then(|| self.idle_since.load(Ordering::Relaxed))
    }

    /// Since when every request in progress has waited on the client; `None` while the server
    /// works on one, when nothing is in progress, or when the connection is closing.
    pub fn stall(&self) -> Option<Stall> {
        let word = self.word.load(Ordering::Acquire);
        if word == 0 || word & CUT != 0 {
            return None;
        }
        let http2 = self.http2.load(Ordering::Relaxed);
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if !http2 && blocked != NOT_BLOCKED {
            // HTTP/1 answers go out in order, and hyper runs the next request's handler only
            // once the last answer is written: nothing moves until the client reads.
            return Some(Stall { since: blocked, answer_since: Some(blocked) });
        }
        if word & FLUSH_DUE != 0 {
            // Being written: the socket takes it.
            return None;
        }
        let mut stall = None;
        for request in self.requests.lock().expect("requests lock").iter() {
            stall = match request.waiting() {
                Waiting::Server => return None,
                Waiting::Body(since) => Stall::add(stall, since, false),
                // Over HTTP/1 the socket takes it (or is blocked, above).
                Waiting::Answer(_) if !http2 => return None,
                Waiting::Answer(since) => Stall::add(stall, since, true),
            };
        }
        stall
    }

    /// The HTTP/2 connection has had an answer waiting for the client to take it for at least
    /// `write_timeout`, while every other request waits on the client too. (An HTTP/1 client
    /// that does not take its answer leaves a socket write blocked, which the IO times out.)
    pub fn answer_stalled(&self, write_timeout: Duration) -> bool {
        self.http2.load(Ordering::Relaxed)
            && self.stall().and_then(|stall| stall.answer_since).is_some_and(|since| {
                self.registry.clock.now().saturating_sub(since) >= write_timeout.as_millis() as u64
            })
    }

    /// When the connection is to be closed (or looked at again) if nothing happens first.
    /// Idle, it has the header and idle timeouts; busy over HTTP/2, an answer the client does
    /// not take has `write_timeout` (request bodies and HTTP/1 writes are bounded elsewhere).
    pub fn deadline(
        &self,
        header_read_timeout: Duration,
        idle_timeout: Duration,
        write_timeout: Duration,
    ) -> Option<Instant> {
        let word = self.word.load(Ordering::Acquire);
        let clock = &self.registry.clock;
        if word & CUT != 0 {
            return None;
        }
        if word != 0 {
            if !self.http2.load(Ordering::Relaxed) {
                return None;
            }
            return Some(match self.stall().and_then(|stall| stall.answer_since) {
                Some(since) => clock.instant(since) + write_timeout,
                // Nothing waits on the client yet: anything that starts to will have waited
                // less than `write_timeout` by then.
                None => Instant::now() + write_timeout,
            });
        }
        let idle = clock.instant(self.idle_since.load(Ordering::Relaxed)) + idle_timeout;
        match self.head_started.load(Ordering::Relaxed) {
            NO_HEAD => Some(idle),
            started => Some(idle.min(clock.instant(started) + header_read_timeout)),
        }
    }
}

/// A request in progress; ends when dropped (with the response body, once hyper has taken it).
pub struct RequestGuard {
    connection: Arc<ConnectionState>,
    progress: Arc<RequestProgress>,
}

impl RequestGuard {
    pub fn progress(&self) -> &Arc<RequestProgress> {
        &self.progress
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.connection.end_request(&self.progress);
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
