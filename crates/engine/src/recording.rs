//! Recording attempts' outcomes, and what delivery does while the store cannot write.
//!
//! An attempt happened once its request was sent, whether or not its outcome can be written.
//! So an outcome the store refuses (a full disk, a failed fsync) is kept and offered again
//! until the store takes it; the message stays claimed meanwhile and is never delivered again
//! for that reason. One refused outcome at a time probes the store, after pauses growing to
//! [`LONGEST_PAUSE`]; the others wait until it gets through (or, should that one outcome be
//! the trouble, [`WAIT_AT_MOST`]), so a disk that stays full sees a write every few seconds,
//! not one per waiting outcome. While outcomes cannot be written no new attempt
//! starts either (its outcome could not be written), so a storage failure pauses delivery
//! instead of repeating it. Should tern stop or crash in that state, the attempts whose outcomes
//! were never written are made again after the restart: the attempts in flight at a crash.

use crate::Shared;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tern_store::{AttemptOutcome, NotRecorded, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The first pause before an outcome is offered again; it doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Long enough that a store that stays down costs nothing, short enough that delivery resumes
/// soon after space is freed.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// How long an outcome waits for the probing one before it tries on its own.
const WAIT_AT_MOST: Duration = Duration::from_secs(60);

/// Whether the store currently takes attempts' outcomes.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: AtomicBool,
    /// An outcome is probing the store (see the module's docs).
    probing: AtomicBool,
    recovered: Notify,
}

/// Held by the outcome that probes the store; dropping it lets another one probe.
struct Probe<'a>(&'a WriteHealth);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.probing.store(false, Ordering::Release);
    }
}

impl WriteHealth {
    /// True from an outcome the store refused until one it took.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Resolves once outcomes are written again (at once if they are).
    pub async fn recovered(&self) {
        let notified = self.recovered.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_failing() {
            notified.await;
        }
    }

    fn failed(&self, error: &StoreError) {
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::error!(%error, "attempts' outcomes cannot be recorded: delivery pauses until they can");
        }
    }

    fn try_probe(&self) -> Option<Probe<'_>> {
        (!self.probing.swap(true, Ordering::AcqRel)).then(|| Probe(self))
    }

    fn succeeded(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("attempts' outcomes are recorded again: delivery resumes");
            self.recovered.notify_waiters();
        }
    }
}

/// Records `outcome`, offering it again after each failure until the store takes it or the
/// engine stops (the attempt is then made again after the restart).
pub async fn record_outcome(shared: &Shared, outcome: AttemptOutcome, stop: &CancellationToken) {
    let message_id = outcome.message.id;
    let mut outcome = Box::new(outcome);
    let mut pause = FIRST_PAUSE;
    let began = tracing::enabled!(tracing::Level::TRACE).then(std::time::Instant::now);
    loop {
        let error = match shared.store.record_attempt_outcome(*outcome).await {
            Ok(()) => {
                shared.write_health.succeeded();
                // Until then a crash makes the attempt again: how long that window is under load
                // (BENCHMARKS.md, the crash scenario).
                if let Some(began) = began {
                    tracing::trace!(%message_id, micros = began.elapsed().as_micros() as u64, "outcome recorded");
                }
                return;
            }
            Err(NotRecorded { error, outcome: Some(back) }) if !matches!(error, StoreError::Closed) => {
                outcome = back;
                error
            }
            Err(NotRecorded { error, .. }) => {
                tracing::warn!(%error, %message_id, "the store closed before an attempt was recorded; it is made again after restart");
                return;
            }
        };
        let health = &shared.write_health;
        health.failed(&error);
        // Real time, not the engine's clock: this waits for the disk, not for a message's time.
        let waited = match health.try_probe() {
            Some(_probe) => {
                tracing::debug!(%error, %message_id, pause_ms = pause.as_millis() as u64, "an attempt's outcome was not recorded; offering it again");
                let waited = wait_or_stop(tokio::time::sleep(pause), stop).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
                waited
            }
            None => {
                let recovered = async {
                    let _ = tokio::time::timeout(WAIT_AT_MOST, health.recovered()).await;
                };
                wait_or_stop(recovered, stop).await
            }
        };
        if !waited {
            tracing::warn!(%message_id, "stopping with an attempt not recorded; it is made again after restart");
            return;
        }
    }
}

/// Waits for `wait`; false if the engine stops first.
async fn wait_or_stop(wait: impl std::future::Future<Output = ()>, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = wait => true,
        () = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_outcome_probes_the_store_at_a_time() {
        let health = WriteHealth::default();
        let first = health.try_probe();
        assert!(first.is_some());
        assert!(health.try_probe().is_none());
        assert!(health.try_probe().is_none(), "a refused probe does not end the first one's");
        drop(first);
        assert!(health.try_probe().is_some(), "once it ended, another outcome may probe");
    }

    #[tokio::test]
    async fn waiting_outcomes_and_the_dispatcher_hear_when_writes_work_again() {
        let health = std::sync::Arc::new(WriteHealth::default());
        health.recovered().await;
        health.failed(&StoreError::Full("test".into()));
        assert!(health.is_failing());
        let waiter = tokio::spawn({
            let health = std::sync::Arc::clone(&health);
            async move { health.recovered().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "still failing");
        health.succeeded();
        waiter.await.expect("the waiter heard of the recovery");
        assert!(!health.is_failing());
    }
}
