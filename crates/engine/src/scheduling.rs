//! The scheduler as the store and the dispatcher share it: one lock around [`Scheduler`], a
//! signal that wakes the dispatcher, and the store's view ([`Scheduling`]).

use crate::clock::Clock;
use crate::scheduler::Scheduler;
use std::sync::{Arc, Mutex, MutexGuard};
use tern_core::MessageId;
use tern_store::{Change, Scheduling};
use tokio::sync::Notify;

pub struct SharedScheduler {
    scheduler: Mutex<Scheduler>,
    clock: Arc<dyn Clock>,
    /// Wakes the dispatcher when something may have become startable.
    pub wake: Notify,
}

impl SharedScheduler {
    pub fn new(scheduler: Scheduler, clock: Arc<dyn Clock>) -> Self {
        SharedScheduler { scheduler: Mutex::new(scheduler), clock, wake: Notify::new() }
    }

    pub fn lock(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler.lock().expect("scheduler lock")
    }

    /// Runs `change` on the scheduler and wakes the dispatcher.
    pub fn update<T>(&self, change: impl FnOnce(&mut Scheduler, i64) -> T) -> T {
        let now = self.clock.now_ms();
        let result = change(&mut self.lock(), now);
        self.wake.notify_one();
        result
    }
}

impl Scheduling for SharedScheduler {
    fn committed(&self, changes: Vec<Change>) {
        self.update(|scheduler, now| {
            scheduler.outcomes_committed(&changes);
            scheduler.apply(changes, now);
        });
    }

    fn hold_for_cancel(&self, id: MessageId) -> bool {
        self.lock().hold_for_cancel(id)
    }

    fn release_hold(&self, id: MessageId) {
        self.update(|scheduler, _| scheduler.release_hold(id));
    }
}
