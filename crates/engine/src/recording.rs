//! Recording attempts' outcomes, and what delivery does while the store cannot write.
//!
//! An attempt happened once its request was sent, whether or not its outcome can be written.
//! So an outcome the store refuses (a full disk, a failed fsync) is kept and offered again,
//! after growing pauses, until the store takes it; the message stays claimed meanwhile and is
//! never delivered again for that reason. While outcomes cannot be written no new attempt
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

/// Whether the store currently takes attempts' outcomes.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: AtomicBool,
    recovered: Notify,
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
        shared.write_health.failed(&error);
        tracing::debug!(%error, %message_id, pause_ms = pause.as_millis() as u64, "an attempt's outcome was not recorded; offering it again");
        tokio::select! {
            // Real time, not the engine's clock: this waits for the disk, not for a message's time.
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => {
                tracing::warn!(%message_id, "stopping with an attempt not recorded; it is made again after restart");
                return;
            }
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
