//! What the engine is busy with at one moment ([`Engine::activity`]): for readiness checks and
//! metrics, and for tests, which must know that nothing more will happen by itself before they
//! assert that something did not happen.

use crate::Engine;
use crate::scheduler::SchedulerActivity;
use std::sync::Mutex;

/// A snapshot of the engine's work in progress. Taking one locks the scheduler and the
/// ticker's state briefly and reads nothing from the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Attempts started and not ended: reading their payload or waiting for their destination.
    pub attempts: usize,
    /// Of those, attempts whose timeout has passed: they end without anyone's help.
    pub attempts_timed_out: usize,
    /// Attempts that ended and whose outcome is not committed yet.
    pub outcomes_recording: usize,
    /// Whether the dispatcher has something to do now: a message or a rate window due, or a
    /// message ready to start, and a delivery slot free for it.
    pub starts_due: bool,
    /// Whether the schedule ticker is firing ticks, has one due, or has yet to look at a
    /// schedule created or resumed.
    pub ticking: bool,
}

impl Activity {
    /// Whether the engine will do nothing more by itself until its clock moves or a destination
    /// answers, given that the destinations hold `held` of its requests (received, and not to
    /// be answered without outside help). Every attempt must be one of those: an attempt still
    /// reading its payload, on its way, or whose answer is on its way back, is work in
    /// progress.
    pub fn settled(&self, held: usize) -> bool {
        self.attempts == held
            && self.attempts_timed_out == 0
            && self.outcomes_recording == 0
            && !self.starts_due
            && !self.ticking
    }
}

/// What the schedule ticker is doing, as [`Activity::ticking`] reads it.
#[derive(Debug, Default)]
pub(crate) struct TickerActivity(Mutex<TickerState>);

#[derive(Debug, Default)]
struct TickerState {
    /// Between the start of a pass (reading the due schedules) and the end of the next one's
    /// planning; the ticks of a pass reach the scheduler before it ends.
    busy: bool,
    /// The tick the ticker sleeps until.
    next_tick: Option<i64>,
    /// Wake-ups asked for (a schedule was created, changed or resumed), and how many of them
    /// the last pass had seen when it began.
    wakes_asked: u64,
    wakes_seen: u64,
}

impl TickerActivity {
    fn state(&self) -> std::sync::MutexGuard<'_, TickerState> {
        self.0.lock().expect("ticker activity lock")
    }

    /// A pass begins: what changed up to now is read by it.
    pub fn pass_started(&self) {
        let mut state = self.state();
        state.busy = true;
        state.wakes_seen = state.wakes_asked;
    }

    /// The pass is over: the ticker sleeps until `next_tick` or a wake-up.
    pub fn pass_ended(&self, next_tick: Option<i64>) {
        let mut state = self.state();
        state.busy = false;
        state.next_tick = next_tick;
    }

    /// Called before waking the ticker: it has work until a pass has seen the change.
    pub fn wake_asked(&self) {
        self.state().wakes_asked += 1;
    }

    fn ticking(&self, now: i64) -> bool {
        let state = self.state();
        state.busy || state.wakes_seen != state.wakes_asked || state.next_tick.is_some_and(|at| at <= now)
    }
}

impl Engine {
    /// What the engine is doing now. Cheap: no store access, two short locks.
    pub fn activity(&self) -> Activity {
        let now = self.shared.clock.now_ms();
        // The ticker first: a pass hands its ticks' messages to the scheduler before it ends, so
        // a pass that ends after this look has its messages seen by the next one.
        let ticking = self.shared.ticker.ticking(now);
        let SchedulerActivity { attempts, attempts_timed_out, outcomes_recording, starts_due } =
            self.shared.scheduler.lock().activity(now, self.shared.config.max_concurrent_deliveries);
        Activity { attempts, attempts_timed_out, outcomes_recording, starts_due, ticking }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_has_work_while_a_pass_runs_and_once_its_next_tick_is_due() {
        let ticker = TickerActivity::default();
        assert!(!ticker.ticking(0), "a ticker that never ran has nothing to do");
        ticker.pass_started();
        assert!(ticker.ticking(0));
        ticker.pass_ended(Some(100));
        assert!(!ticker.ticking(99));
        assert!(ticker.ticking(100), "the next tick is due: a pass is about to run");
        ticker.pass_started();
        ticker.pass_ended(None);
        assert!(!ticker.ticking(i64::MAX), "no schedule left");
    }

    #[test]
    fn a_wake_up_is_work_until_a_pass_that_began_after_it_ended() {
        let ticker = TickerActivity::default();
        ticker.wake_asked();
        assert!(ticker.ticking(0));
        ticker.pass_started();
        ticker.pass_ended(None);
        assert!(!ticker.ticking(0));
        // Asked while a pass runs (which may have read the schedules already): the next pass.
        ticker.pass_started();
        ticker.wake_asked();
        ticker.pass_ended(None);
        assert!(ticker.ticking(0));
        ticker.pass_started();
        ticker.pass_ended(None);
        assert!(!ticker.ticking(0));
    }
}
