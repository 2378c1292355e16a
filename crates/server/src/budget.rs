//! Byte budgets shared by every request: one for the request bodies being held, one for what
//! listings read for the responses being built and sent. Whatever holds memory for a client
//! reserves its bytes first, waiting in line (first come, first served) while others hold the
//! budget, and gives them back when it is done — a body when its handler returns, a listing
//! when its response body has been sent or dropped. So the memory held for clients has a
//! bound whatever their number; clients beyond it wait instead of failing.
//!
//! A reservation larger than the whole budget waits for all of it (it then runs alone), so
//! the largest single request or entry is always served.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budgets count in units of this many bytes (a semaphore counts at most `u32::MAX` permits
/// per acquisition).
const UNIT: usize = 1024;

/// A budget of bytes that reservations take from and give back to.
#[derive(Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    /// Units in the whole budget.
    units: u32,
    /// Reservations waiting for room (for tests and diagnostics).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for ByteBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteBudget").field("bytes", &self.bytes()).field("usage", &self.usage()).finish()
    }
}

/// How much of a budget is taken, and how many reservations wait for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetUsage {
    pub reserved_bytes: usize,
    pub waiting: usize,
}

impl ByteBudget {
    /// A budget of `bytes` (rounded up to whole units; at least one).
    pub fn new(bytes: usize) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize) as u32;
        ByteBudget { permits: Arc::new(Semaphore::new(units as usize)), units, waiting: Arc::default() }
    }

    /// The whole budget, in bytes.
    pub fn bytes(&self) -> usize {
        self.units as usize * UNIT
    }

    pub fn usage(&self) -> BudgetUsage {
        let free = self.permits.available_permits();
        BudgetUsage {
            reserved_bytes: (self.units as usize).saturating_sub(free) * UNIT,
            waiting: self.waiting.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Reserves `bytes` (the whole budget at most), waiting until they are free.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let units = bytes.div_ceil(UNIT).clamp(1, self.units as usize) as u32;
        let permits = Arc::clone(&self.permits);
        let permit = match permits.clone().try_acquire_many_owned(units) {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = Waiting::new(&self.waiting);
                permits.acquire_many_owned(units).await.expect("a budget's semaphore is never closed")
            }
        };
        Reservation { permit }
    }
}

/// Counts a reservation as waiting while it exists (also when its future is dropped).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Bytes taken from a budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits() * UNIT
    }

    /// Gives back what exceeds `bytes` (keeping at least one unit).
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT).max(1);
        let held = self.permit.num_permits();
        if held > keep {
            drop(self.permit.split(held - keep));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_give_it_back() {
        let budget = ByteBudget::new(10 * UNIT);
        let first = budget.reserve(6 * UNIT).await;
        assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 6 * UNIT, waiting: 0 });
        let second = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(6 * UNIT).await }
        });
        while budget.usage().waiting == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished());
        drop(first);
        let second = second.await.unwrap();
        assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 6 * UNIT, waiting: 0 });
        drop(second);
        assert_eq!(budget.usage().reserved_bytes, 0);
    }

    #[tokio::test]
    async fn a_reservation_beyond_the_budget_takes_all_of_it_and_can_shrink() {
        let budget = ByteBudget::new(4 * UNIT);
        let mut whole = budget.reserve(100 * UNIT).await;
        assert_eq!(whole.bytes(), 4 * UNIT);
        whole.shrink_to(UNIT + 1);
        assert_eq!(whole.bytes(), 2 * UNIT);
        assert_eq!(budget.usage().reserved_bytes, 2 * UNIT);
        let empty = budget.reserve(0).await;
        assert_eq!(empty.bytes(), UNIT, "every reservation takes a unit");
    }
}
