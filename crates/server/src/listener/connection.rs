//! What the listener knows of each open connection: whether a request is in progress, since
//! when it has been idle or receiving a request head, and whether it was shed. The connection
//! limit picks the oldest idle connection here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The connection was shed (or timed out): it is closing and starts no request.
const SHED: usize = usize::MAX;
/// Every request ended but the last answer may still sit in hyper's buffer: the connection is
/// not idle until the next flush completes.
const FLUSH_DUE: usize = 1 << (usize::BITS - 2);
/// No request head has started arriving since the connection went idle.
const NO_HEAD: u64 = u64::MAX;

/// The open connections, in the order they were accepted.
pub struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<ConnectionState>>>,
    /// Signalled when a connection closes or goes idle (the accept loop may be waiting for room).
    changed: Notify,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Connections whose socket is still open (shed ones count until they are closed).
    pub fn len(&self) -> usize {
        self.open.lock().expect("registry lock").len()
    }

    /// A connection that closes with the returned [`Registration`]. Its first request head must
    /// arrive within the header timeout, counted from now.
    pub fn register(self: &Arc<Self>) -> (Arc<ConnectionState>, Registration) {
        let now = self.now_ms();
        let state = Arc::new(ConnectionState {
            registry: Arc::clone(self),
            word: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            head_started: AtomicU64::new(now),
            http2: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open.lock().expect("registry lock").insert(id, Arc::clone(&state));
        (state, Registration { registry: Arc::clone(self), id })
    }

    /// Sheds the oldest connection with no request in progress; false when every connection
    /// is busy.
    pub fn shed_oldest_idle(&self) -> bool {
        self.open.lock().expect("registry lock").values().any(|state| state.try_shed())
    }

    /// Waits until a connection closes or goes idle (or did so since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await
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
        self.registry.changed.notify_one();
    }
}

/// One connection's state, shared by its task, its IO, its requests and the registry.
pub struct ConnectionState {
    registry: Arc<Registry>,
    /// Requests in progress, plus [`FLUSH_DUE`]; or [`SHED`]. One word, so that shedding can
    /// never race with a request starting.
    word: AtomicUsize,
    /// Registry milliseconds since the connection was last idle.
    idle_since: AtomicU64,
    /// Registry milliseconds when the first byte of a request head arrived, or [`NO_HEAD`].
    head_started: AtomicU64,
    /// An HTTP/2 connection reads frames (pings, settings) between requests: only its first
    /// request is bound by the header timeout.
    http2: AtomicBool,
    /// Wakes the connection's task: it went idle, a head started, or it was shed.
    pub wake: Notify,
}

impl ConnectionState {
    /// A request starts; `None` if the connection was shed (it is closing).
    pub fn start_request(self: &Arc<Self>, http2: bool) -> Option<RequestGuard> {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| (word != SHED).then(|| word + 1)).ok()?;
        Some(RequestGuard(Arc::clone(self)))
    }

    fn end_request(&self) {
        // HTTP/2 streams end in tasks of their own, possibly after the connection's last flush:
        // waiting for another flush could wait forever, so the connection is idle at once.
        let http2 = self.http2.load(Ordering::Relaxed);
        let previous = self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let count = (word & !FLUSH_DUE) - 1;
            Some(match count {
                0 if http2 => 0,
                0 => FLUSH_DUE,
                _ => count | (word & FLUSH_DUE),
            })
        });
        if http2 && previous.is_ok_and(|word| word & !FLUSH_DUE == 1) {
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
        self.idle_since.store(self.registry.now_ms(), Ordering::Relaxed);
        self.head_started.store(NO_HEAD, Ordering::Relaxed);
        self.wake.notify_one();
        self.registry.changed.notify_one();
    }

    /// Bytes arrived: on an idle HTTP/1 connection they start a request head, which must be
    /// complete within the header timeout.
    pub fn bytes_read(&self) {
        if self.word.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == NO_HEAD
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_started.store(self.registry.now_ms(), Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// Marks an idle connection shed; false if a request is in progress (or it already was).
    pub fn try_shed(&self) -> bool {
        let shed = self.word.compare_exchange(0, SHED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if shed {
            self.wake.notify_one();
        }
        shed
    }

    pub fn is_shed(&self) -> bool {
        self.word.load(Ordering::Acquire) == SHED
    }

    /// When the connection is to be closed if nothing happens first: none while a request is in
    /// progress (the body, write and handler bounds apply then).
    pub fn deadline(&self, header_read_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        if self.word.load(Ordering::Acquire) != 0 {
            return None;
        }
        let registry = &self.registry;
        let idle = registry.instant(self.idle_since.load(Ordering::Relaxed)) + idle_timeout;
        match self.head_started.load(Ordering::Relaxed) {
            NO_HEAD => Some(idle),
            started => Some(idle.min(registry.instant(started) + header_read_timeout)),
        }
    }
}

/// A request in progress; ends when dropped (with the response body, once hyper has taken it).
pub struct RequestGuard(Arc<ConnectionState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_idle_connections_are_shed_oldest_first() {
        let registry = Registry::new();
        let (first, _a) = registry.register();
        let (second, _b) = registry.register();
        let busy = first.start_request(false).expect("starts");
        assert!(registry.shed_oldest_idle(), "the second connection is idle");
        assert!(second.is_shed() && !first.is_shed());
        assert!(second.start_request(false).is_none(), "a shed connection starts nothing");
        assert!(!registry.shed_oldest_idle(), "the first connection is busy");
        drop(busy);
        assert!(!first.try_shed(), "its answer may still be unflushed");
        first.flushed();
        assert!(first.try_shed());
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
        let (header, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        let registry = Registry::new();
        let start = Instant::now();
        let (state, _registration) = registry.register();
        assert_eq!(state.deadline(header, idle), Some(start + header), "the first head is due at once");
        let request = state.start_request(false).unwrap();
        assert_eq!(state.deadline(header, idle), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(request);
        assert_eq!(state.deadline(header, idle), None, "not idle before the answer is flushed");
        state.flushed();
        assert_eq!(state.deadline(header, idle), Some(start + Duration::from_secs(70)));
        tokio::time::advance(Duration::from_secs(20)).await;
        state.bytes_read();
        assert_eq!(state.deadline(header, idle), Some(start + Duration::from_secs(35)));
    }
}
