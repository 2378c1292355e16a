//! A FIFO queue's scheduling state: its settings and its unfinished messages in enqueue order.

use super::{Key, Scheduler, lookup_key};
use std::collections::BTreeMap;
use std::sync::Arc;
use tern_core::MessageId;

#[derive(Debug)]
pub(super) struct QueueState {
    pub parallelism: u32,
    pub paused: bool,
    /// Unfinished messages (including running and settling ones) by enqueue sequence.
    pub order: BTreeMap<u64, MessageId>,
    /// Deleted: forget the state once the last running message finished.
    pub deleted: bool,
}

impl Default for QueueState {
    fn default() -> Self {
        QueueState { parallelism: 1, paused: false, order: BTreeMap::new(), deleted: false }
    }
}

impl QueueState {
    /// The first `parallelism` unfinished messages: the only ones that may run.
    pub fn window(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.order.values().take(self.parallelism as usize).copied()
    }

    pub fn admits(&self, seq: u64) -> bool {
        !self.paused && self.order.keys().take(self.parallelism as usize).any(|s| *s == seq)
    }

    pub fn forgettable(&self) -> bool {
        self.deleted
    }
}

/// Queue settings and figures for the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFigures {
    /// Unfinished messages (waiting and in flight).
    pub lag: u64,
}

impl Scheduler {
    pub(super) fn queue_state(&mut self, user: &Arc<str>, queue: &Arc<str>) -> &mut QueueState {
        let state = self.queues.entry((Arc::clone(user), Arc::clone(queue))).or_default();
        if state.deleted {
            // The name of a deleted queue whose messages still run is used again: a new queue
            // with the defaults (the store creates it so), behind the old messages still running.
            state.parallelism = 1;
            state.paused = false;
            state.deleted = false;
        }
        state
    }

    fn queue_key(&mut self, user: &str, queue: &str) -> Key {
        (self.user(user), Arc::from(queue))
    }

    /// Creates or changes a queue's settings; a paused queue starts nothing new.
    pub fn configure_queue(&mut self, user: &str, queue: &str, parallelism: u32, paused: bool) {
        let key = self.queue_key(user, queue);
        let state = self.queues.entry(key.clone()).or_default();
        state.parallelism = parallelism.max(1);
        state.paused = paused;
        state.deleted = false;
        self.slide(&key);
    }

    /// Forgets a deleted queue (its waiting messages are being cancelled separately).
    pub fn delete_queue(&mut self, user: &str, queue: &str) {
        let key = self.queue_key(user, queue);
        if let Some(state) = self.queues.get_mut(&key) {
            state.deleted = true;
            state.paused = true;
            if state.order.is_empty() {
                self.queues.remove(&key);
            }
        }
    }

    pub fn queue_figures(&self, user: &str, queue: &str) -> QueueFigures {
        let lag = self.queues.get(&lookup_key(user, queue)).map_or(0, |state| state.order.len() as u64);
        QueueFigures { lag }
    }
}

impl Scheduler {
    pub fn has_queue(&self, user: &str, queue: &str) -> bool {
        self.queues.get(&lookup_key(user, queue)).is_some_and(|state| !state.deleted)
    }

    /// A scan of every queue: only creating a queue asks (for the per-user limit).
    pub fn queue_count(&self, user: &str) -> usize {
        self.queues.iter().filter(|((u, _), state)| &**u == user && !state.deleted).count()
    }
}
