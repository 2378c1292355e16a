//! The last gate: attempts in flight per user, and delivery slots shared fairly between users.
//!
//! Attempts already running are never interrupted, and one to a destination that hangs holds
//! its slot until its timeout (up to hours). So sharing has to happen when attempts start:
//! - a user may hold at most an equal share of the engine's delivery slots, counted over the
//!   users with work (attempts in flight or messages waiting here);
//! - while some configured user has no work, one more share of the slots is kept free for it
//!   (whoever holds the others), so that a user who starts sending finds slots at once instead
//!   of waiting for others' timeouts — also when users arrive one after another and the first
//!   ones hold more than their share now is;
//! - a user with nothing in flight may always start one attempt while any slot is free.
//!
//! A lone user among several configured ones may thus use half of the slots; with one
//! configured user there is nobody to keep a share for. Each user is further held to its own
//! parallelism (`/v2/globalParallelism`).

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
    /// Attempts in flight across all users.
    in_flight: u32,
    /// Every user may have more room than when it last looked ([`Users::take_eased`]).
    eased: bool,
    parallelism: u32,
    sharing: SlotSharing,
}

impl Users {
    pub fn new(parallelism: u32, sharing: SlotSharing) -> Users {
        Users {
            by_id: HashMap::new(),
            with_work: 0,
            in_flight: 0,
            eased: false,
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

    /// How many more attempts `user` may start now.
    fn room(&self, user: &str) -> u32 {
        let state = self.by_id.get(user);
        let active = state.map_or(0, |state| state.active);
        let with_work = self.with_work + u32::from(!state.is_some_and(UserState::has_work));
        let free = self.sharing.slots.saturating_sub(self.in_flight);
        // One share more than the users with work, while configured users are left to take it.
        let shares = with_work.max((with_work + 1).min(self.sharing.users));
        let share = (self.sharing.slots / shares).clamp(1, self.parallelism);
        let kept_free = if with_work < self.sharing.users { self.sharing.slots / (with_work + 1) } else { 0 };
        let room = share.saturating_sub(active).min(free.saturating_sub(kept_free));
        if active == 0 { room.max(free.min(1)) } else { room }
    }

    /// Starts an attempt of `user` if the sharing allows.
    pub fn try_start(&mut self, user: &Arc<str>) -> bool {
        if self.room(user) == 0 {
            return false;
        }
        self.in_flight += 1;
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
    pub fn forget_blocked(&mut self, user: &Arc<str>) {
        self.change(user, |state| state.blocked = state.blocked.saturating_sub(1));
    }

    /// An attempt of `user` ended.
    pub fn ended(&mut self, user: &Arc<str>) {
        if self.by_id.get(user).is_some_and(|state| state.active > 0) {
            self.in_flight -= 1;
        }
        self.change(user, |state| state.active = state.active.saturating_sub(1));
    }

    /// Whether every user may have more room than when it last looked (a user lost its work,
    /// or no configured user is left without work): the users waiting should be let go as far
    /// as they now may ([`Users::with_waiting`]). Resets the flag.
    pub fn take_eased(&mut self) -> bool {
        std::mem::take(&mut self.eased)
    }

    /// Lets go as many waiting messages of `user` as its room allows now, oldest first; ids
    /// for which `still_waiting` is false are dropped on the way.
    pub fn release(&mut self, user: &Arc<str>, still_waiting: impl Fn(MessageId) -> bool) -> Vec<MessageId> {
        let mut capacity = self.room(user);
        let Some(state) = self.by_id.get_mut(user) else { return Vec::new() };
        let mut released = Vec::new();
        while capacity > 0 {
            let Some(id) = state.waitlist.pop_front() else { break };
            if still_waiting(id) {
                released.push(id);
                capacity -= 1;
            }
        }
        self.change(user, |state| state.blocked = state.blocked.saturating_sub(released.len() as u32));
        released
    }

    /// Users with messages waiting for a slot.
    pub fn with_waiting(&self) -> Vec<Arc<str>> {
        self.by_id.iter().filter(|(_, state)| state.blocked > 0).map(|(user, _)| Arc::clone(user)).collect()
    }

    /// Applies `update` to `user`'s state and notes when every user may now have more room: a
    /// user stopped having work (the shares grew), or the last configured user without work
    /// got some (no share needs to be kept free any more).
    fn change(&mut self, user: &Arc<str>, update: impl FnOnce(&mut UserState)) {
        let state = self.by_id.entry(Arc::clone(user)).or_default();
        let before = state.has_work();
        update(state);
        match (before, state.has_work()) {
            (false, true) => {
                self.with_work += 1;
                self.eased |= self.with_work == self.sharing.users;
            }
            (true, false) => {
                self.with_work -= 1;
                self.eased = true;
            }
            _ => {}
        }
    }

    /// Attempts in flight across all users.
    pub fn in_flight(&self) -> usize {
        self.in_flight as usize
    }

    /// `(limit, in flight)` of a user for `/v2/globalParallelism`: its own parallelism.
    pub fn parallelism(&self, user: &str) -> (u32, u32) {
        (self.parallelism, self.by_id.get(user).map_or(0, |state| state.active))
    }
}
