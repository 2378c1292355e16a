use super::*;
use futures_util::FutureExt;

fn user(name: &str) -> Arc<str> {
    Arc::from(name)
}

/// Reserves now if it can; `None` if the reservation has to wait.
fn reserve_now(budget: &ByteBudget, who: &str, bytes: usize) -> Option<Reservation> {
    budget.reserve(&user(who), bytes).now_or_never()
}

/// A reservation that waits in line, as its own task.
async fn reserve_waiting(budget: &ByteBudget, who: &str, bytes: usize) -> tokio::task::JoinHandle<Reservation> {
    let waiting = budget.usage().waiting;
    let task = tokio::spawn({
        let (budget, who) = (budget.clone(), user(who));
        async move { budget.reserve(&who, bytes).await }
    });
    while budget.usage().waiting == waiting {
        assert!(!task.is_finished(), "{bytes} bytes for {who} did not wait");
        tokio::task::yield_now().await;
    }
    task
}

#[tokio::test]
async fn reservations_wait_for_room_and_give_it_back() {
    let budget = ByteBudget::new(10, 1);
    let first = reserve_now(&budget, "a", 6).unwrap();
    assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 6, waiting: 0 });
    let second = reserve_waiting(&budget, "a", 6).await;
    assert!(!second.is_finished());
    drop(first);
    let second = second.await.unwrap();
    assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 6, waiting: 0 });
    drop(second);
    assert_eq!(budget.usage().reserved_bytes, 0);
}

#[tokio::test]
async fn a_reservation_beyond_the_budget_takes_all_of_it_and_can_shrink() {
    let budget = ByteBudget::new(4, 1);
    let mut whole = reserve_now(&budget, "a", 100).unwrap();
    assert_eq!(whole.bytes(), 4);
    whole.shrink_to(2);
    assert_eq!(budget.usage().reserved_bytes, 2);
    let empty = reserve_now(&budget, "a", 0).unwrap();
    assert_eq!(empty.bytes(), 1, "every reservation takes a byte");
}

#[tokio::test]
async fn a_user_holding_its_share_waits_while_another_is_served_at_once() {
    // Three users configured: alone, one may hold half (a share stays free for the others).
    let budget = ByteBudget::new(100, 3);
    let mut hog: Vec<Reservation> = (0..5).map(|_| reserve_now(&budget, "hog", 10).unwrap()).collect();
    let over = reserve_waiting(&budget, "hog", 10).await;
    assert_eq!(budget.usage().reserved_bytes, 50);

    // Two users now, a third of the budget each: the newcomer is served, the hog still waits.
    let newcomer: Vec<Reservation> = (0..3).map(|_| reserve_now(&budget, "new", 10).unwrap()).collect();
    assert!(reserve_now(&budget, "new", 10).is_none(), "beyond its share");
    drop(newcomer);
    assert!(!over.is_finished(), "the hog is beyond its share");

    // Alone again, the hog's share is half: still beyond it until it gives some back.
    drop(hog.pop());
    let over = over.await.unwrap();
    assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 50, waiting: 0 });
    drop(over);
}

#[tokio::test]
async fn a_user_holding_nothing_may_exceed_its_share_but_not_take_the_share_kept_free() {
    // Three users configured, two holding or waiting: a third each, one of them kept free.
    let budget = ByteBudget::new(100, 3);
    let b = reserve_now(&budget, "b", 10).unwrap();
    let large = reserve_now(&budget, "a", 45).expect("beyond its share, but the kept share stays free");
    assert!(reserve_now(&budget, "a", 1).is_none(), "beyond its share now");
    let c = reserve_now(&budget, "c", 40).expect("every configured user holds some: nothing is kept free");
    drop((b, large, c));

    let b = reserve_now(&budget, "b", 30).unwrap();
    let a = reserve_waiting(&budget, "a", 45).await;
    assert!(!a.is_finished(), "it would have taken the share kept free");
    drop(b);
    drop(a.await.unwrap());
}

#[tokio::test]
async fn one_reservation_takes_at_most_half_when_several_users_are_configured() {
    let budget = ByteBudget::new(100, 2);
    let half = reserve_now(&budget, "a", 1_000).unwrap();
    assert_eq!(half.bytes(), 50);
    let other = reserve_now(&budget, "b", 50).expect("the other half stays for the others");
    drop((half, other));
}

#[tokio::test]
async fn a_wait_on_the_users_own_share_is_noted_until_it_ends() {
    let budget = ByteBudget::new(100, 1);
    let noted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let note = || {
        let noted = Arc::clone(&noted);
        move || {
            noted.fetch_add(1, Ordering::SeqCst);
            scopeguard(move || noted.fetch_sub(1, Ordering::SeqCst))
        }
    };
    let first = budget.reserve_noting(&user("a"), 80, note()).now_or_never().unwrap();
    assert_eq!(noted.load(Ordering::SeqCst), 0, "it did not wait");
    // Another user's wait is the server's: not noted.
    let other = tokio::spawn({
        let (budget, noted) = (budget.clone(), note());
        async move { budget.reserve_noting(&user("b"), 30, noted).await }
    });
    while budget.usage().waiting == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(noted.load(Ordering::SeqCst), 0, "a user holding nothing waits on the others");
    let own = tokio::spawn({
        let (budget, noted) = (budget.clone(), note());
        async move { budget.reserve_noting(&user("a"), 30, noted).await }
    });
    while noted.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    drop(first);
    let (other, own) = (other.await.unwrap(), own.await.unwrap());
    assert_eq!(noted.load(Ordering::SeqCst), 0, "the wait ended with the reservation");
    drop((other, own));
}

/// Runs `end` when dropped.
fn scopeguard(end: impl FnOnce() -> usize) -> impl Drop {
    struct Guard<F: FnOnce() -> usize>(Option<F>);
    impl<F: FnOnce() -> usize> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(end) = self.0.take() {
                end();
            }
        }
    }
    Guard(Some(end))
}

#[tokio::test]
async fn a_reservation_within_its_share_is_not_passed_by_later_ones() {
    let budget = ByteBudget::new(100, 2);
    let a = reserve_now(&budget, "a", 50).unwrap();
    let b = reserve_now(&budget, "b", 30).unwrap();
    // c's 22 are within its share (a quarter, once d waits too) but not free: it holds the
    // line, and d's 10, free, wait behind it.
    let c = reserve_waiting(&budget, "c", 22).await;
    let d = reserve_waiting(&budget, "d", 10).await;
    assert!(!d.is_finished(), "passed a reservation that was first in line");
    drop(b);
    let (c, d) = (c.await.unwrap(), d.await.unwrap());
    assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 82, waiting: 0 });
    drop((a, c, d));
}

#[tokio::test]
async fn a_wait_given_up_leaves_the_line_to_those_behind_it() {
    let budget = ByteBudget::new(100, 1);
    let a = reserve_now(&budget, "a", 80).unwrap();
    let first = reserve_waiting(&budget, "b", 25).await;
    let behind = reserve_waiting(&budget, "c", 10).await;
    assert!(!behind.is_finished());
    first.abort();
    let behind = behind.await.unwrap();
    assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 90, waiting: 0 });
    drop((a, behind));
    assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 0, waiting: 0 });
}

#[tokio::test]
async fn a_reservation_beyond_a_share_holds_up_only_those_beyond_theirs() {
    // Four users configured, three holding or waiting: a quarter each, a quarter kept free.
    let budget = ByteBudget::new(100, 4);
    let a = reserve_now(&budget, "a", 45).unwrap();
    // b's 40 are beyond its share and need the kept share free too: they wait...
    let b = reserve_waiting(&budget, "b", 40).await;
    // ...without holding up c within its share, while a holds what b needs.
    let c = reserve_now(&budget, "c", 20).expect("within its share, and free");
    drop(a);
    let b = b.await.unwrap();
    assert_eq!(budget.usage(), BudgetUsage { reserved_bytes: 60, waiting: 0 });
    drop((b, c));
}
