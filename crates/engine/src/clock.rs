//! Time, injected: the engine and the server read the time and sleep only through a [`Clock`],
//! so tests can move time forward by hours in an instant with a [`ManualClock`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;

    /// Resolves once `now_ms() >= at_ms`.
    fn sleep_until(&self, at_ms: i64) -> Sleep;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or_default()
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep {
        Box::pin(async move {
            // Sleep in bounded steps and look again, so a wall-clock jump cannot stretch a wait.
            loop {
                let remaining = at_ms - SystemClock.now_ms();
                if remaining <= 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(remaining.min(60_000) as u64)).await;
            }
        })
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    changes: watch::Sender<i64>,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        ManualClock { now: AtomicI64::new(start_ms), changes: watch::Sender::new(start_ms) }
    }

    /// Starts at the current wall-clock time (signatures stay verifiable by real receivers).
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    pub fn advance(&self, by: Duration) {
        let now = self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst) + by.as_millis() as i64;
        self.changes.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep {
        let mut changes = self.changes.subscribe();
        Box::pin(async move {
            while *changes.borrow_and_update() < at_ms {
                if changes.changed().await.is_err() {
                    // The clock is gone: nothing will ever wake this sleeper.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleepers_wake_when_time_passes() {
        let clock = std::sync::Arc::new(ManualClock::new(1_000));
        let sleeper = tokio::spawn(clock.sleep_until(1_500));
        tokio::task::yield_now().await;
        clock.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now_ms(), 1_500);
        clock.sleep_until(0).await;
    }

    #[tokio::test]
    async fn system_clock_sleeps_until_the_deadline() {
        let at = SystemClock.now_ms() + 20;
        SystemClock.sleep_until(at).await;
        assert!(SystemClock.now_ms() >= at);
    }
}
