//! Byte budgets shared by every request: one for the request bodies being held, one for what
//! listings read for the responses being built and sent. Whatever holds memory for a client
//! reserves its bytes first, waiting in line while others hold the budget, and gives them back
//! when it is done — a body when its handler returns, a listing when its response body has
//! been sent or dropped. So the memory held for clients has a bound whatever their number;
//! clients beyond it wait instead of failing.
//!
//! The budget is shared fairly between users, as delivery slots are: a user may hold an equal
//! share among the users holding or waiting, and one share more stays free while configured
//! users hold nothing — so a tenant that keeps bodies from arriving (or answers from being
//! taken) holds its share and no more, and a newcomer finds room at once. A user holding
//! nothing may take more than a share for one reservation (a large batch), but never the share
//! kept free. Waiting reservations are served in order, skipping those of users at their share
//! (they wait on their own user's other requests, which the caller may tell its connection:
//! [`ByteBudget::reserve_noting`]); one within its share that does not fit yet holds the line,
//! so that smaller ones do not pass it forever. One beyond a share holds up only those beyond
//! theirs — else a tenant could hold everyone up with a large request while another holds what
//! it needs — and is served once those within their shares leave room.
//!
//! One reservation takes at most the whole budget, or half of it when several users are
//! configured (so that it never takes the share kept free); larger ones are served with that
//! much reserved, so the largest single request or entry is always served.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

use crate::listener::WaitOnClient;

/// A budget of bytes that reservations take from and give back to.
#[derive(Clone)]
pub struct ByteBudget {
    shared: Arc<Shared>,
}

struct Shared {
    /// Bytes in the whole budget.
    bytes: usize,
    /// Users configured (a share stays free while some of them hold nothing).
    configured_users: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: usize,
    /// The users holding or waiting for some.
    users: HashMap<Arc<str>, UserUse>,
    /// Reservations waiting, oldest first.
    waiting: VecDeque<Arc<Waiter>>,
}

#[derive(Default)]
struct UserUse {
    held: usize,
    waiting: usize,
}

impl State {
    fn user(&mut self, user: &Arc<str>) -> &mut UserUse {
        self.users.entry(Arc::clone(user)).or_default()
    }

    /// Forgets a user that neither holds nor waits.
    fn forget_if_done(&mut self, user: &Arc<str>) {
        if self.users.get(user).is_some_and(|used| used.held == 0 && used.waiting == 0) {
            self.users.remove(user);
        }
    }
}

struct Waiter {
    user: Arc<str>,
    bytes: usize,
    /// Set (under the state's lock) when its bytes are taken for it.
    granted: AtomicBool,
    wake: Notify,
}

impl std::fmt::Debug for ByteBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteBudget").field("bytes", &self.bytes()).field("usage", &self.usage()).finish()
    }
}

/// How much of a budget is taken, and how many reservations wait for room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetUsage {
    pub reserved_bytes: usize,
    pub waiting: usize,
}

impl ByteBudget {
    /// A budget of `bytes` (at least one) shared by `configured_users`.
    pub fn new(bytes: usize, configured_users: usize) -> Self {
        let bytes = bytes.max(1);
        let state = State { free: bytes, ..State::default() };
        ByteBudget { shared: Arc::new(Shared { bytes, configured_users, state: Mutex::new(state) }) }
    }

    /// The whole budget, in bytes.
    pub fn bytes(&self) -> usize {
        self.shared.bytes
    }

    pub fn usage(&self) -> BudgetUsage {
        let state = self.shared.lock();
        BudgetUsage { reserved_bytes: self.shared.bytes - state.free, waiting: state.waiting.len() }
    }

    /// The budget as `user` reserves from it; `waits` is told when a reservation waits on the
    /// user's own share.
    pub(crate) fn for_user(&self, user: &Arc<str>, waits: Option<WaitOnClient>) -> UserBudget {
        UserBudget { budget: self.clone(), user: Arc::clone(user), waits }
    }

    /// Reserves `bytes` (at least one; at most what one reservation may take) for `user`,
    /// waiting until they are free and within the user's share.
    pub async fn reserve(&self, user: &Arc<str>, bytes: usize) -> Reservation {
        self.reserve_noting(user, bytes, || ()).await
    }

    /// [`ByteBudget::reserve`], calling `waits_on_own_share` if the reservation has to wait
    /// while its user holds others (it waits on that user's requests, not on the server); what
    /// it returns is dropped once the bytes are reserved.
    pub async fn reserve_noting<G>(
        &self,
        user: &Arc<str>,
        bytes: usize,
        waits_on_own_share: impl FnOnce() -> G,
    ) -> Reservation {
        let bytes = bytes.clamp(1, self.shared.largest_reservation());
        let waiter =
            Arc::new(Waiter { user: Arc::clone(user), bytes, granted: AtomicBool::new(false), wake: Notify::new() });
        let holds_others = {
            let mut state = self.shared.lock();
            state.waiting.push_back(Arc::clone(&waiter));
            let used = state.user(user);
            used.waiting += 1;
            let holds_others = used.held > 0;
            self.shared.grant(&mut state);
            holds_others
        };
        // Gives the bytes back, or leaves the line, if the wait is dropped.
        let mut cancel = CancelWait { shared: &self.shared, waiter: Some(&waiter) };
        let mut noted = None;
        if holds_others && !waiter.granted.load(Ordering::Acquire) {
            noted = Some(waits_on_own_share());
        }
        while !waiter.granted.load(Ordering::Acquire) {
            waiter.wake.notified().await;
        }
        drop(noted);
        cancel.waiter = None;
        Reservation { shared: Arc::clone(&self.shared), user: Arc::clone(user), bytes }
    }
}

/// A budget as one user reserves from it.
#[derive(Clone, Debug)]
pub struct UserBudget {
    budget: ByteBudget,
    user: Arc<str>,
    waits: Option<WaitOnClient>,
}

impl UserBudget {
    /// The most one reservation takes (a larger one is served with that much reserved).
    pub fn largest_reservation(&self) -> usize {
        self.budget.shared.largest_reservation()
    }

    /// Reserves `bytes` for the user ([`ByteBudget::reserve`]).
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        self.budget.reserve_noting(&self.user, bytes, || self.waits.as_ref().map(WaitOnClient::begin)).await
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("budget lock")
    }

    /// The most one reservation takes: the whole budget, or half of it when several users are
    /// configured (a share stays free for them).
    fn largest_reservation(&self) -> usize {
        if self.configured_users > 1 { (self.bytes / 2).max(1) } else { self.bytes }
    }

    /// Bytes each user may hold now, and the bytes kept free for configured users holding
    /// nothing.
    fn share(&self, state: &State) -> (usize, usize) {
        let active = state.users.len().max(1);
        if self.configured_users > active {
            let share = (self.bytes / (active + 1)).max(1);
            (share, share)
        } else {
            ((self.bytes / active).max(1), 0)
        }
    }

    /// Takes their bytes for the waiting reservations that may have them now, in order.
    fn grant(&self, state: &mut State) {
        let (share, kept_free) = self.share(state);
        // A reservation larger than a share waits; later ones as large wait behind it.
        let mut large_waiting = false;
        let mut index = 0;
        while index < state.waiting.len() {
            let waiter = &state.waiting[index];
            let held = state.users.get(&waiter.user).map_or(0, |used| used.held);
            let within_share = held + waiter.bytes <= share;
            // A user holding nothing may exceed its share, but not into the share kept free.
            let large = !within_share && held == 0;
            let needs_free = if large { waiter.bytes + kept_free } else { waiter.bytes };
            if (within_share || (large && !large_waiting)) && needs_free <= state.free {
                let waiter = state.waiting.remove(index).expect("in line");
                state.free -= waiter.bytes;
                let used = state.user(&waiter.user);
                used.held += waiter.bytes;
                used.waiting -= 1;
                waiter.granted.store(true, Ordering::Release);
                waiter.wake.notify_one();
                continue;
            }
            if within_share {
                // It may have the next free bytes: later ones must not take them first.
                return;
            }
            // Beyond a share, it does not hold up those within theirs (which could be held
            // up for as long as other users hold what it needs).
            large_waiting |= large;
            index += 1;
        }
    }

    /// Gives back `bytes` of `user`'s and lets the waiting have them.
    fn give_back(&self, user: &Arc<str>, bytes: usize) {
        let mut state = self.lock();
        state.free += bytes;
        state.user(user).held -= bytes;
        state.forget_if_done(user);
        self.grant(&mut state);
    }
}

/// A wait for room that ends before its bytes are taken leaves the line; one that ends just
/// after gives them back.
struct CancelWait<'a> {
    shared: &'a Shared,
    waiter: Option<&'a Arc<Waiter>>,
}

impl Drop for CancelWait<'_> {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter else { return };
        let granted = {
            let mut state = self.shared.lock();
            let before = state.waiting.len();
            state.waiting.retain(|other| !Arc::ptr_eq(other, waiter));
            if state.waiting.len() < before {
                state.user(&waiter.user).waiting -= 1;
                state.forget_if_done(&waiter.user);
            }
            // Leaving may let the ones behind it have room.
            self.shared.grant(&mut state);
            waiter.granted.load(Ordering::Acquire)
        };
        if granted {
            self.shared.give_back(&waiter.user, waiter.bytes);
        }
    }
}

/// Bytes taken from a budget, given back when dropped.
pub struct Reservation {
    shared: Arc<Shared>,
    user: Arc<str>,
    bytes: usize,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("user", &self.user).field("bytes", &self.bytes).finish()
    }
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back what exceeds `bytes` (keeping at least one).
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.max(1);
        if self.bytes > keep {
            self.shared.give_back(&self.user, self.bytes - keep);
            self.bytes = keep;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.give_back(&self.user, self.bytes);
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
