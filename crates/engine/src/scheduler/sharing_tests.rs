//! Delivery slots shared between users (`users.rs`).

use super::tests::scheduled;
use super::*;
use tern_store::Change;

fn of_user(user: &str, id: MessageId, seq: u64) -> Scheduled {
    Scheduled { user_id: user.into(), ..scheduled(id, 0, seq) }
}

/// Adds `count` due messages of `user`; returns their ids.
fn publish(scheduler: &mut Scheduler, user: &str, count: usize) -> Vec<MessageId> {
    let ids: Vec<MessageId> = (0..count).map(|_| MessageId::generate()).collect();
    let changes = ids.iter().enumerate().map(|(i, id)| Change::Scheduled(of_user(user, *id, i as u64))).collect();
    scheduler.apply(changes, 0);
    ids
}

fn started(scheduler: &mut Scheduler) -> Vec<MessageId> {
    scheduler.poll(0, usize::MAX).into_iter().map(|start| start.id).collect()
}

fn in_flight(scheduler: &Scheduler, user: &str) -> u32 {
    scheduler.user_parallelism(user).1
}

/// Twelve slots among four configured users, each user allowed all twelve on its own.
fn four_users() -> Scheduler {
    Scheduler::with_sharing(12, SlotSharing { slots: 12, users: 4 }, 0)
}

#[test]
fn users_arriving_one_after_another_leave_a_share_free_for_the_last_one() {
    let mut scheduler = four_users();
    publish(&mut scheduler, "a", 20);
    assert_eq!(started(&mut scheduler).len(), 6, "alone among four users: half the slots");
    publish(&mut scheduler, "b", 20);
    assert_eq!(started(&mut scheduler).len(), 2, "b: what leaves a third of the slots free");
    publish(&mut scheduler, "c", 20);
    assert_eq!(started(&mut scheduler).len(), 1, "c: what leaves a quarter free");
    let d = publish(&mut scheduler, "d", 5);
    assert_eq!(started(&mut scheduler), d[..3], "d, the last configured user, takes its share at once");
    let in_flight: Vec<u32> = ["a", "b", "c", "d"].iter().map(|user| in_flight(&scheduler, user)).collect();
    assert_eq!(in_flight, [6, 2, 1, 3]);
}

#[test]
fn a_slot_a_user_over_its_share_frees_goes_to_the_users_waiting() {
    let mut scheduler = four_users();
    let a = publish(&mut scheduler, "a", 20);
    assert_eq!(started(&mut scheduler).len(), 6);
    let b = publish(&mut scheduler, "b", 20);
    assert_eq!(started(&mut scheduler).len(), 2);
    // a holds 6 where its share is now 4: the slots it frees go to b, up to b's share.
    scheduler.attempt_ended(a[0], 1);
    scheduler.attempt_ended(a[1], 1);
    let next = started(&mut scheduler);
    assert!(next.len() == 2 && next.iter().all(|id| b.contains(id)), "b takes the two slots a freed: {next:?}");
    scheduler.attempt_ended(a[2], 1);
    assert_eq!(started(&mut scheduler), [a[6]], "at 3 of its 4, a starts one");
    assert_eq!((in_flight(&scheduler, "a"), in_flight(&scheduler, "b")), (4, 4), "a third kept free");
}

/// Ends attempts and records them as finished.
fn finish(scheduler: &mut Scheduler, ids: &[MessageId]) {
    for id in ids {
        scheduler.attempt_ended(*id, 1);
        scheduler.apply(vec![Change::Finished { id: *id }], 1);
    }
}

#[test]
fn when_a_user_has_no_more_work_the_others_shares_grow() {
    let mut scheduler = four_users();
    let a = publish(&mut scheduler, "a", 20);
    assert_eq!(started(&mut scheduler).len(), 6);
    let b = publish(&mut scheduler, "b", 2);
    assert_eq!(started(&mut scheduler), b);
    finish(&mut scheduler, &a[..3]);
    started(&mut scheduler);
    assert_eq!(in_flight(&scheduler, "a"), 4, "a third of the slots while b has work");
    finish(&mut scheduler, &b);
    started(&mut scheduler);
    assert_eq!(in_flight(&scheduler, "a"), 6, "half again once b has none");
}

#[test]
fn with_one_configured_user_every_slot_may_be_used() {
    let mut scheduler = Scheduler::with_sharing(100, SlotSharing { slots: 12, users: 1 }, 0);
    publish(&mut scheduler, "a", 20);
    assert_eq!(started(&mut scheduler).len(), 12);
}

#[test]
fn a_users_own_parallelism_stays_a_ceiling_below_its_share() {
    let mut scheduler = Scheduler::with_sharing(2, SlotSharing { slots: 12, users: 4 }, 0);
    publish(&mut scheduler, "a", 5);
    assert_eq!(started(&mut scheduler).len(), 2);
}

#[test]
fn a_cancelled_waiting_message_no_longer_counts_as_work() {
    let mut scheduler = four_users();
    let a = publish(&mut scheduler, "a", 20);
    assert_eq!(started(&mut scheduler).len(), 6);
    let b = publish(&mut scheduler, "b", 3);
    assert_eq!(started(&mut scheduler), b[..2]);
    // b's third waits for room and is cancelled.
    assert!(!scheduler.hold_for_cancel(b[2]));
    scheduler.apply(vec![Change::Finished { id: b[2] }], 1);
    finish(&mut scheduler, &a[..2]);
    assert!(started(&mut scheduler).is_empty(), "a holds its third (4) while b has work");
    finish(&mut scheduler, &b[..2]);
    started(&mut scheduler);
    assert_eq!(in_flight(&scheduler, "a"), 6, "b has no work left: a may use half again");
}

#[test]
fn a_user_left_without_work_by_a_release_lets_the_others_grow() {
    let mut scheduler = Scheduler::with_sharing(100, SlotSharing { slots: 6, users: 4 }, 0);
    let m: Vec<MessageId> = (0..5).map(|_| MessageId::generate()).collect();
    let (c1, b1, a1, b2, a2) = (m[0], m[1], m[2], m[3], m[4]);
    let users = ["c", "b", "a", "b", "a"];
    let changes =
        m.iter().zip(users).enumerate().map(|(i, (id, user))| Change::Scheduled(of_user(user, *id, i as u64)));
    scheduler.apply(changes.collect(), 0);
    assert_eq!(started(&mut scheduler), [c1, b1, a1], "three users with work: one slot each");
    // b's second message waits for b's slot and is being cancelled; b's attempt ends, which
    // lets it go (to be skipped: it is held) and leaves b without work.
    assert!(!scheduler.hold_for_cancel(b2));
    scheduler.attempt_ended(b1, 1);
    assert_eq!(started(&mut scheduler), [a2], "with two users left, a may have two in flight");
}
