//! Which message may start when: the in-memory scheduling state of every unfinished message.
//!
//! A message passes four gates, in order, before an attempt starts:
//! 1. **due time** — a timer set ordered by due time;
//! 2. **queue window** — a FIFO queue with parallelism N lets only its first N unfinished
//!    messages (in enqueue order) start; a message keeps its place through retries and until
//!    its callbacks finished, so order holds strictly;
//! 3. **flow control** — a key's parallelism (attempts in flight) and rate (starts per
//!    period window); blocked messages wait in the key's waitlist;
//! 4. **user parallelism** — attempts in flight per user (`/v2/globalParallelism`), and the
//!    user's fair share of the delivery slots (`users`).
//!
//! Blocked messages wait where they were blocked, not in the ready queue, so a busy or paused
//! key never delays others. Everything here is pure and synchronous; the dispatcher drives it
//! with the clock, and the store reports committed changes to it ([`Scheduler::apply`]).

mod activity;
pub mod flow;
mod queue;
mod users;

pub use activity::SchedulerActivity;
pub use flow::FlowInfo;
pub use users::SlotSharing;

use flow::FlowState;
use queue::QueueState;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tern_core::{Message, MessageId};
use tern_store::{Change, Scheduled};
use users::Users;

type Key = (Arc<str>, Arc<str>);

/// A [`Key`] to look one up with: a tuple of `Arc`s cannot be borrowed as a pair of `&str`.
fn lookup_key(user: &str, name: &str) -> Key {
    (Arc::from(user), Arc::from(name))
}

/// Messages due within this horizon of being scheduled keep their payload in memory.
const CACHE_HORIZON_MS: i64 = 5_000;
/// Rough bookkeeping bytes of a cached message besides its body.
const CACHE_OVERHEAD: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its due time.
    Timer,
    /// Due, waiting for its queue window.
    QueueBlocked,
    /// Due and past the queue gate; waiting for a delivery slot.
    Ready,
    FlowBlocked,
    UserBlocked,
    /// An attempt is running.
    Active,
    /// The attempt ended; its outcome is being committed.
    Recording,
    /// Finished, but still holding its queue place until its callbacks finish.
    Settling,
}

#[derive(Debug)]
struct Entry {
    user: Arc<str>,
    due_at: i64,
    seq: u64,
    queue: Option<Arc<str>>,
    flow: Option<Arc<str>>,
    source: Option<MessageId>,
    state: State,
    pending_callbacks: u32,
    /// A cancel is being committed: do not start.
    held: bool,
}

/// A message allowed to start now, with its payload when cached.
#[derive(Debug)]
pub struct Start {
    pub id: MessageId,
    pub message: Option<Arc<Message>>,
}

pub struct Scheduler {
    entries: HashMap<MessageId, Entry>,
    /// Waiting messages by due time, then enqueue order.
    timers: BTreeSet<(i64, u64, MessageId)>,
    ready: VecDeque<MessageId>,
    queues: HashMap<Key, QueueState>,
    flows: HashMap<Key, FlowState>,
    /// Keys in `flows` per user (`limits.max_flow_control_keys`).
    flow_counts: HashMap<Arc<str>, usize>,
    /// When rate-limited keys may start again.
    flow_wakes: BTreeSet<(i64, Key)>,
    /// Rate-limited keys whose window moved since [`Scheduler::take_flow_windows`].
    moved_windows: HashSet<Key>,
    users: Users,
    cache: HashMap<MessageId, Arc<Message>>,
    cache_bytes: usize,
    cache_budget: usize,
    attempt_book: activity::AttemptBook,
}

impl Scheduler {
    /// A scheduler whose users share no slots beyond their own parallelism (see
    /// [`Scheduler::with_sharing`]).
    pub fn new(user_parallelism: u32, cache_budget: usize) -> Self {
        Self::with_sharing(user_parallelism, SlotSharing::UNSHARED, cache_budget)
    }

    pub fn with_sharing(user_parallelism: u32, sharing: SlotSharing, cache_budget: usize) -> Self {
        Scheduler {
            entries: HashMap::new(),
            timers: BTreeSet::new(),
            ready: VecDeque::new(),
            queues: HashMap::new(),
            flows: HashMap::new(),
            flow_counts: HashMap::new(),
            flow_wakes: BTreeSet::new(),
            moved_windows: HashSet::new(),
            users: Users::new(user_parallelism, sharing),
            cache: HashMap::new(),
            cache_bytes: 0,
            cache_budget,
            attempt_book: activity::AttemptBook::default(),
        }
    }

    /// Unfinished messages known (pending, running, or settling).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn user(&mut self, user: &str) -> Arc<str> {
        self.users.key(user)
    }

    /// Applies changes the store committed, in commit order.
    pub fn apply(&mut self, changes: Vec<Change>, now: i64) {
        // At start the store reports every unfinished message at once: sizing the table for
        // them first spares it a dozen rounds of growing (each a new, larger allocation that
        // the kernel zeroes and every entry moved into), which took a quarter of a restart's
        // CPU time with a million pending messages.
        self.entries.reserve(changes.len());
        for change in changes {
            match change {
                Change::Scheduled(scheduled) => self.schedule(scheduled, now),
                Change::Finished { id } => self.finish(id),
                Change::Settling { id, user_id, queue_name, seq } => {
                    let user = self.user(&user_id);
                    let queue: Arc<str> = Arc::from(queue_name.as_str());
                    self.queue_state(&user, &queue).order.insert(seq, id);
                    self.entries.insert(
                        id,
                        Entry {
                            user,
                            due_at: now,
                            seq,
                            queue: Some(queue),
                            flow: None,
                            source: None,
                            state: State::Settling,
                            pending_callbacks: 0,
                            held: false,
                        },
                    );
                }
            }
        }
    }

    fn schedule(&mut self, scheduled: Scheduled, now: i64) {
        let user = self.user(&scheduled.user_id);
        let known = self.entries.contains_key(&scheduled.id);
        let flow = scheduled.flow_control.as_ref().map(|flow| {
            // Every message of a key shares the key's one copy.
            let ((_, key), state) = self.flow_entry(&user, &flow.key);
            // A retry (a known message) never reconfigures: only new and recovered ones do.
            if scheduled.is_new || (!state.settings_known && !known) {
                state.configure(flow);
            }
            state.settings_known |= scheduled.is_new;
            if !known {
                state.messages += 1;
            }
            state.last_used = now;
            key
        });
        let id = scheduled.id;
        let mut seq = scheduled.seq;
        if let Some(entry) = self.entries.get_mut(&id) {
            // A retry of a message we know: it keeps its queue place.
            entry.due_at = scheduled.due_at;
            entry.state = State::Timer;
            seq = entry.seq;
        } else {
            let queue = scheduled.queue_name.as_deref().map(Arc::<str>::from);
            if let Some(queue) = &queue {
                self.queue_state(&user, queue).order.insert(scheduled.seq, id);
            }
            // Every unfinished callback holds its source's queue place, also those found again
            // at start (after the source's `Settling` or `Scheduled` change).
            if let Some(source) = scheduled.source
                && let Some(source) = self.entries.get_mut(&source)
            {
                source.pending_callbacks += 1;
            }
            self.entries.insert(
                id,
                Entry {
                    user,
                    due_at: scheduled.due_at,
                    seq: scheduled.seq,
                    queue,
                    flow,
                    source: scheduled.source,
                    state: State::Timer,
                    pending_callbacks: 0,
                    held: false,
                },
            );
        }
        if let Some(message) = scheduled.message
            && scheduled.due_at <= now + CACHE_HORIZON_MS
        {
            self.cache_insert(id, message);
        }
        self.timers.insert((scheduled.due_at, seq, id));
    }

    fn cache_insert(&mut self, id: MessageId, message: Arc<Message>) {
        let size = message.body.len() + CACHE_OVERHEAD;
        if self.cache_bytes + size > self.cache_budget {
            return;
        }
        self.cache_bytes += size;
        if let Some(previous) = self.cache.insert(id, message) {
            self.cache_bytes -= previous.body.len() + CACHE_OVERHEAD;
        }
    }

    fn cache_take(&mut self, id: MessageId) -> Option<Arc<Message>> {
        let message = self.cache.remove(&id)?;
        self.cache_bytes -= message.body.len() + CACHE_OVERHEAD;
        Some(message)
    }

    /// A message reached a final state (delivered, failed, cancelled) and its record committed.
    fn finish(&mut self, id: MessageId) {
        let Some(mut entry) = self.entries.remove(&id) else { return };
        self.timers.remove(&(entry.due_at, entry.seq, id));
        self.cache_take(id);
        self.unblock_counts(&entry);
        if let Some(source) = entry.source
            && let Some(parent) = self.entries.get_mut(&source)
        {
            parent.pending_callbacks = parent.pending_callbacks.saturating_sub(1);
            if parent.pending_callbacks == 0 && parent.state == State::Settling {
                self.finish(source);
            }
        }
        if let Some(queue) = entry.queue.clone() {
            if entry.pending_callbacks > 0 {
                entry.state = State::Settling;
                self.entries.insert(id, entry);
                return;
            }
            let key = (Arc::clone(&entry.user), queue);
            if let Some(state) = self.queues.get_mut(&key) {
                state.order.remove(&entry.seq);
            }
            self.slide(&key);
        }
        if let Some(flow) = &entry.flow
            && let Some(state) = self.flows.get_mut(&(Arc::clone(&entry.user), Arc::clone(flow)))
        {
            state.messages = state.messages.saturating_sub(1);
        }
    }

    /// Forgets a blocked message's place in a waitlist count (its id is skipped lazily).
    fn unblock_counts(&mut self, entry: &Entry) {
        if entry.state == State::UserBlocked {
            self.users.forget_blocked(&entry.user);
            if self.users.take_eased() {
                self.release_waiting_users();
            }
        }
        if entry.state == State::FlowBlocked
            && let Some(flow) = &entry.flow
            && let Some(state) = self.flows.get_mut(&(Arc::clone(&entry.user), Arc::clone(flow)))
        {
            state.waiting = state.waiting.saturating_sub(1);
        }
    }

    /// Moves due messages forward and returns up to `limit` that may start now.
    pub fn poll(&mut self, now: i64, limit: usize) -> Vec<Start> {
        while let Some(&(due_at, _, id)) = self.timers.first() {
            if due_at > now {
                break;
            }
            self.timers.pop_first();
            self.offer(id);
        }
        while let Some((at, key)) = self.flow_wakes.first().cloned() {
            if at > now {
                break;
            }
            self.flow_wakes.pop_first();
            self.release_flow(&key, now);
        }
        let mut started = Vec::new();
        while started.len() < limit {
            let Some(id) = self.ready.pop_front() else {
                // Starting or waiting may have eased the sharing (the last user without work got
                // some): users waiting for room may start now.
                if self.users.take_eased() {
                    self.release_waiting_users();
                    if !self.ready.is_empty() {
                        continue;
                    }
                }
                break;
            };
            let Some(entry) = self.entries.get(&id) else { continue };
            if entry.state != State::Ready || entry.held {
                continue;
            }
            // Its queue may have been paused or narrowed since the message passed the queue
            // gate (while it waited for its flow-control key or the user's parallelism).
            if let Some(queue) = &entry.queue
                && !self.queues.get(&(Arc::clone(&entry.user), Arc::clone(queue))).is_some_and(|q| q.admits(entry.seq))
            {
                self.entries.get_mut(&id).expect("entry").state = State::QueueBlocked;
                continue;
            }
            let user = Arc::clone(&entry.user);
            if let Some(flow) = entry.flow.clone() {
                let key = (Arc::clone(&user), flow);
                let state = self.flows.get_mut(&key).expect("flow state of a scheduled key");
                if let Some(retry_at) = state.blocked_until(now) {
                    state.waitlist.push_back(id);
                    state.waiting += 1;
                    if let Some(at) = retry_at {
                        self.flow_wakes.insert((at, key));
                    }
                    self.entries.get_mut(&id).expect("entry").state = State::FlowBlocked;
                    continue;
                }
            }
            if !self.users.try_start(&user) {
                self.users.block(&user, id);
                self.entries.get_mut(&id).expect("entry").state = State::UserBlocked;
                continue;
            }
            let entry = self.entries.get_mut(&id).expect("entry");
            entry.state = State::Active;
            if let Some(flow) = entry.flow.clone() {
                let key = (user, flow);
                let state = self.flows.get_mut(&key).expect("flow state");
                state.started(now);
                if state.rate.is_some() {
                    self.moved_windows.insert(key.clone());
                }
                if state.waiting > 0
                    && let Some(at) = state.rate_window_end(now)
                {
                    self.flow_wakes.insert((at, key));
                }
            }
            started.push(Start { id, message: self.cache_take(id) });
        }
        started
    }

    /// A due message: through the queue gate into the ready queue, or blocked by its queue.
    fn offer(&mut self, id: MessageId) {
        let Some(entry) = self.entries.get(&id) else { return };
        if let Some(queue) = &entry.queue {
            let key = (Arc::clone(&entry.user), Arc::clone(queue));
            let allowed = self.queues.get(&key).is_some_and(|state| state.admits(entry.seq));
            if !allowed {
                self.entries.get_mut(&id).expect("entry").state = State::QueueBlocked;
                return;
            }
        }
        self.entries.get_mut(&id).expect("entry").state = State::Ready;
        self.ready.push_back(id);
    }

    /// Re-offers the queue's window after it moved, was resumed or resized.
    fn slide(&mut self, key: &Key) {
        let Some(state) = self.queues.get(key) else { return };
        let window: Vec<MessageId> = state.window().collect();
        for id in window {
            if self.entries.get(&id).is_some_and(|entry| entry.state == State::QueueBlocked) {
                self.offer(id);
            }
        }
        if let Some(state) = self.queues.get(key)
            && state.order.is_empty()
            && state.forgettable()
        {
            self.queues.remove(key);
        }
    }

    /// Lets waitlisted messages of a key go as far as its limits allow.
    fn release_flow(&mut self, key: &Key, now: i64) {
        let Some(state) = self.flows.get_mut(key) else { return };
        let mut capacity = state.capacity(now);
        let mut released = Vec::new();
        while capacity > 0 {
            let Some(id) = state.waitlist.pop_front() else { break };
            if self.entries.get(&id).is_some_and(|entry| entry.state == State::FlowBlocked) {
                state.waiting = state.waiting.saturating_sub(1);
                released.push(id);
                capacity -= 1;
            }
        }
        // Released messages open a new window when they start; the wake for the rest is set
        // then (in `poll`), so only an already open window schedules one here.
        if state.waiting > 0
            && state.window_start.is_some()
            && let Some(at) = state.rate_window_end(now)
        {
            self.flow_wakes.insert((at, key.clone()));
        }
        for id in released.into_iter().rev() {
            self.entries.get_mut(&id).expect("entry").state = State::Ready;
            self.ready.push_front(id);
        }
    }

    /// Lets `user`'s waiting messages go as far as its room allows; returns how many went.
    fn release_one_user(&mut self, user: &Arc<str>) -> usize {
        let entries = &self.entries;
        let released =
            self.users.release(user, |id| entries.get(&id).is_some_and(|entry| entry.state == State::UserBlocked));
        let count = released.len();
        for id in released.into_iter().rev() {
            self.entries.get_mut(&id).expect("entry").state = State::Ready;
            self.ready.push_front(id);
        }
        count
    }

    /// The attempt of `id` ended (its outcome is being recorded): its slots are free.
    pub fn attempt_ended(&mut self, id: MessageId, now: i64) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        if entry.state != State::Active {
            return;
        }
        entry.state = State::Recording;
        let user = Arc::clone(&entry.user);
        let flow = entry.flow.clone();
        self.users.ended(&user);
        // The slot goes to the user's own waiting messages if its room allows; otherwise it is
        // free for the others waiting (held back while the free slots were a kept-free share).
        let took_it_back = self.release_one_user(&user) > 0;
        if self.users.take_eased() || !took_it_back {
            self.release_waiting_users();
        }
        if let Some(flow) = flow {
            let key = (user, flow);
            if let Some(state) = self.flows.get_mut(&key) {
                state.active = state.active.saturating_sub(1);
            }
            self.release_flow(&key, now);
        }
    }

    /// A started message could not be loaded: it goes back to wait until `at`.
    pub fn defer(&mut self, id: MessageId, at: i64, now: i64) {
        self.attempt_ended(id, now);
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.state = State::Timer;
            entry.due_at = at;
            self.timers.insert((at, entry.seq, id));
        }
    }

    /// A claimed message turned out to be gone from the store: forget it entirely.
    pub fn abandon(&mut self, id: MessageId, now: i64) {
        self.attempt_ended(id, now);
        self.finish(id);
    }

    /// When something next becomes possible without outside events.
    pub fn next_wake(&self) -> Option<i64> {
        let timer = self.timers.first().map(|(at, _, _)| *at);
        let flow = self.flow_wakes.first().map(|(at, _)| *at);
        match (timer, flow) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Inside a cancel's transaction: keeps `id` from starting. Returns whether an attempt is
    /// running (the cancel then waits for it).
    pub fn hold_for_cancel(&mut self, id: MessageId) -> bool {
        match self.entries.get_mut(&id) {
            Some(entry) if matches!(entry.state, State::Active | State::Recording) => true,
            Some(entry) => {
                entry.held = true;
                false
            }
            None => false,
        }
    }

    /// The cancel's commit failed: the message may start again.
    pub fn release_hold(&mut self, id: MessageId) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.held = false;
            if entry.state == State::Ready {
                self.ready.push_back(id);
            }
        }
    }

    /// Lets every user with waiting messages go as far as its room now allows.
    fn release_waiting_users(&mut self) {
        // Releasing can leave a user without work, which lets the others grow again; users
        // only lose work here, so this ends.
        loop {
            for user in self.users.with_waiting() {
                self.release_one_user(&user);
            }
            if !self.users.take_eased() {
                return;
            }
        }
    }

    /// In-flight attempts of a user and the limit (`/v2/globalParallelism`).
    pub fn user_parallelism(&self, user: &str) -> (u32, u32) {
        self.users.parallelism(user)
    }
}

#[cfg(test)]
mod sharing_tests;
#[cfg(test)]
mod tests;
