//! The last gate: attempts in flight per user, and delivery slots shared fairly between users.
//!
//! Attempts already running are never interrupted, and one to a destination that hangs holds
//! its slot until its timeout (up to hours). So sharing has to happen when attempts start: a
//! user may hold at most an equal share of the engine's delivery slots, counted over the users
//! with work (attempts in flight or messages waiting here), and — while some configured user
//! has no work — one more share is kept free, so that a user who starts sending finds slots at
//! once instead of waiting for others' timeouts. A lone user among several configured ones may
//! thus use half of the slots; with one configured user there is nobody to keep a share for.
//! Each user is further held to its own parallelism (`/v2/globalParallelism`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tern_core::MessageId;

/// How many delivery slots there are and how many users may ask for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSharing {
    /// Attempts that may run at once across all users.
    pub slots: u32,
    /// Configured users: while fewer have work, a share is kept free for the others.
    pub users: u32,
}

impl SlotSharing {
    /// No sharing limit beyond each user's parallelism.
    pub const UNSHARED: SlotSharing = SlotSharing { slots: u32::MAX, users: 1 };
}

#[derive(Debug, Default)]
struct UserState {
    /// Attempts in flight.
    active: u32,
    /// Messages in `waitlist` still waiting (it also holds ids gone since, skipped lazily).
    blocked: u32,
    waitlist: VecDeque<MessageId>,
}

impl UserState {
    fn has_work(&self) -> bool {
        self.active > 0 || self.blocked > 0
    }
}

#[derive(Debug)]
pub(super) struct Users {
    by_id: HashMap<Arc<str>, UserState>,
    /// Users with attempts in flight or messages waiting here.
    with_work: u32,
    parallelism: u32,
    sharing: SlotSharing,
}

impl Users {
    pub fn new(parallelism: u32, sharing: SlotSharing) -> Users {
        Users {
            by_id: HashMap::new(),
            with_work: 0,
            parallelism: parallelism.max(1),
            sharing: SlotSharing { slots: sharing.slots.max(1), users: sharing.users.max(1) },
        }
    }

    /// The shared key of `user`, known from now on.
    pub fn key(&mut self, user: &str) -> Arc<str> {
        match self.by_id.get_key_value(user) {
            Some((key, _)) => Arc::clone(key),
            None => {
                let key: Arc<str> = Arc::from(user);
                self.by_id.insert(Arc::clone(&key), UserState::default());
                key
            }
        }
    }

    /// How many attempts `user` may have in flight now.
    fn limit(&self, user: &str) -> u32 {
        let with_work = self.with_work + u32::from(!self.by_id.get(user).is_some_and(UserState::has_work));
        // One share more than the users with work, while configured users are left to take it.
        let shares = with_work.max((with_work + 1).min(self.sharing.users));
        (self.sharing.slots / shares).clamp(1, self.parallelism)
    }

    /// Starts an attempt of `user` if its limit allows.
    pub fn try_start(&mut self, user: &Arc<str>) -> bool {
        if self.by_id.get(user).is_some_and(|state| state.active >= self.limit(user)) {
            return false;
        }
        self.change(user, |state| state.active += 1);
        true
    }

    /// `id` waits for a slot of `user`.
    pub fn block(&mut self, user: &Arc<str>, id: MessageId) {
        self.change(user, |state| {
            state.waitlist.push_back(id);
            state.blocked += 1;
        });
    }

    /// A waiting message of `user` finished (cancelled) before it was let go.
    pub fn forget_blocked(&mut self, user: &Arc<str>) -> bool {
        self.change(user, |state| state.blocked = state.blocked.saturating_sub(1))
    }

    /// An attempt of `user` ended. True when sharing eased for everybody ([`Users::with_waiting`]).
    pub fn ended(&mut self, user: &Arc<str>) -> bool {
        self.change(user, |state| state.active = state.active.saturating_sub(1))
    }

    /// Lets go as many waiting messages of `user` as its limit allows now, oldest first; ids
    /// for which `still_waiting` is false are dropped on the way. The flag says whether `user`
    /// has no work left in the count (every limit grew, see [`Users::with_waiting`]), which
    /// happens when its last waiting messages go while none of its attempts runs.
    pub fn release(&mut self, user: &Arc<str>, still_waiting: impl Fn(MessageId) -> bool) -> (Vec<MessageId>, bool) {
        let limit = self.limit(user);
        let Some(state) = self.by_id.get_mut(user) else { return (Vec::new(), false) };
        let mut capacity = limit.saturating_sub(state.active);
        let mut released = Vec::new();
        while capacity > 0 {
            let Some(id) = state.waitlist.pop_front() else { break };
            if still_waiting(id) {
                released.push(id);
                capacity -= 1;
            }
        }
        let eased = self.change(user, |state| state.blocked = state.blocked.saturating_sub(released.len() as u32));
        (released, eased)
    }

    /// Users with messages waiting for a slot.
    pub fn with_waiting(&self) -> Vec<Arc<str>> {
        self.by_id.iter().filter(|(_, state)| state.blocked > 0).map(|(user, _)| Arc::clone(user)).collect()
    }

    /// Applies `update` to `user`'s state; true when a user stopped having work (every
    /// limit grew).
    fn change(&mut self, user: &Arc<str>, update: impl FnOnce(&mut UserState)) -> bool {
        let state = self.by_id.entry(Arc::clone(user)).or_default();
        let before = state.has_work();
        update(state);
        match (before, state.has_work()) {
            (false, true) => {
                self.with_work += 1;
                false
            }
            (true, false) => {
                self.with_work -= 1;
                true
            }
            _ => false,
        }
    }

    /// Attempts in flight across all users.
    pub fn in_flight(&self) -> usize {
        self.by_id.values().map(|state| state.active as usize).sum()
    }

    /// `(limit, in flight)` of a user for `/v2/globalParallelism`: its own parallelism.
    pub fn parallelism(&self, user: &str) -> (u32, u32) {
        (self.parallelism, self.by_id.get(user).map_or(0, |state| state.active))
    }
}
