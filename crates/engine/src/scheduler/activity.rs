//! What the scheduler knows of the work in progress ([`Scheduler::activity`]): attempts running,
//! whether any has outlived its timeout, outcomes not yet committed, and whether the dispatcher
//! has anything it could start now. The engine adds the schedule ticker to make
//! [`crate::Activity`].
//!
//! The dispatcher reports each attempt's exchange here ([`Scheduler::exchange_started`],
//! [`Scheduler::exchange_ended`]) and the store's commits clear recorded outcomes
//! ([`Scheduler::outcomes_committed`]), all under the scheduler's lock, so one look at the
//! scheduler is a consistent picture: an attempt is running, or its outcome is being recorded,
//! or what it led to (a retry's timer, a callback, the end) is in the scheduler already.

use super::Scheduler;
use std::collections::{BTreeSet, HashSet};
use tern_core::MessageId;
use tern_store::Change;

/// The attempts' side of the bookkeeping.
#[derive(Debug, Default)]
pub(super) struct AttemptBook {
    /// Attempts waiting for their destination, by when their timeout ends them.
    deadlines: BTreeSet<(i64, MessageId)>,
    /// Messages whose attempt ended and whose outcome the store has not committed yet.
    recording: HashSet<MessageId>,
}

/// The scheduler's part of [`crate::Activity`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerActivity {
    /// Attempts started and not ended: reading their payload or waiting for their destination.
    pub attempts: usize,
    /// Of those, attempts whose timeout has passed: they end without anyone's help.
    pub attempts_timed_out: usize,
    /// Attempts that ended and whose outcome is not committed yet.
    pub outcomes_recording: usize,
    /// Whether the dispatcher has something to do now: a message or a rate window due, or a
    /// message ready to start, and a delivery slot free for it.
    pub starts_due: bool,
}

impl Scheduler {
    /// The attempt of `id` sends its request now; its timeout ends it at `deadline`.
    pub fn exchange_started(&mut self, id: MessageId, deadline: i64) {
        self.attempt_book.deadlines.insert((deadline, id));
    }

    /// The attempt of `id` (which timed out at `deadline`) got its answer or gave up: its
    /// slots are free and its outcome is being recorded.
    pub fn exchange_ended(&mut self, id: MessageId, deadline: i64, now: i64) {
        self.attempt_book.deadlines.remove(&(deadline, id));
        self.attempt_book.recording.insert(id);
        self.attempt_ended(id, now);
    }

    /// The attempt of `id` (which timed out at `deadline`) could not be made at all: it will
    /// start again, and has no outcome to record.
    pub fn exchange_dropped(&mut self, id: MessageId, deadline: i64) {
        self.attempt_book.deadlines.remove(&(deadline, id));
    }

    /// The store committed `changes`: outcomes among them are recorded. Called with the
    /// changes, before they are applied, under the same lock.
    pub fn outcomes_committed(&mut self, changes: &[Change]) {
        if self.attempt_book.recording.is_empty() {
            return;
        }
        for change in changes {
            let id = match change {
                Change::Scheduled(scheduled) => scheduled.id,
                Change::Finished { id } | Change::Settling { id, .. } => *id,
            };
            self.attempt_book.recording.remove(&id);
        }
    }

    /// What is in progress at `now`, for a dispatcher that runs at most `max_attempts` at once.
    /// Costs a few lookups, plus a walk over the attempts that outlived their timeout.
    pub fn activity(&self, now: i64, max_attempts: usize) -> SchedulerActivity {
        let attempts = self.users.in_flight();
        let due = self.timers.first().is_some_and(|(at, _, _)| *at <= now)
            || self.flow_wakes.first().is_some_and(|(at, _)| *at <= now)
            || !self.ready.is_empty();
        SchedulerActivity {
            attempts,
            attempts_timed_out: self.attempt_book.deadlines.iter().take_while(|(deadline, _)| *deadline <= now).count(),
            outcomes_recording: self.attempt_book.recording.len(),
            // With every slot taken the dispatcher starts nothing until an attempt ends.
            starts_due: due && attempts < max_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_store::Scheduled;

    const MAX: usize = 10;

    fn message(id: MessageId, due_at: i64) -> Change {
        Change::Scheduled(Scheduled {
            id,
            user_id: "u".into(),
            due_at,
            seq: 1,
            queue_name: None,
            flow_control: None,
            source: None,
            is_new: true,
            message: None,
        })
    }

    fn idle() -> SchedulerActivity {
        SchedulerActivity::default()
    }

    #[test]
    fn a_due_message_is_work_to_do_until_it_starts() {
        let mut scheduler = Scheduler::new(100, 0);
        let id = MessageId::generate();
        scheduler.apply(vec![message(id, 1_000)], 0);
        assert_eq!(scheduler.activity(999, MAX), idle(), "not due yet");
        assert_eq!(scheduler.activity(1_000, MAX), SchedulerActivity { starts_due: true, ..idle() });
        assert_eq!(scheduler.poll(1_000, MAX).len(), 1);
        assert_eq!(scheduler.activity(1_000, MAX), SchedulerActivity { attempts: 1, ..idle() });
    }

    #[test]
    fn an_attempt_is_followed_from_its_start_to_the_commit_of_its_outcome() {
        let mut scheduler = Scheduler::new(100, 0);
        let id = MessageId::generate();
        scheduler.apply(vec![message(id, 0)], 0);
        scheduler.poll(0, MAX);
        scheduler.exchange_started(id, 5_000);
        assert_eq!(scheduler.activity(4_999, MAX), SchedulerActivity { attempts: 1, ..idle() });
        assert_eq!(
            scheduler.activity(5_000, MAX),
            SchedulerActivity { attempts: 1, attempts_timed_out: 1, ..idle() },
            "past its timeout the attempt ends by itself"
        );
        scheduler.exchange_ended(id, 5_000, 5_000);
        assert_eq!(scheduler.activity(5_000, MAX), SchedulerActivity { outcomes_recording: 1, ..idle() });
        // Another message's change does not end the recording; the attempt's own does.
        scheduler.outcomes_committed(&[Change::Finished { id: MessageId::generate() }]);
        assert_eq!(scheduler.activity(5_000, MAX).outcomes_recording, 1);
        let retry = message(id, 6_000);
        scheduler.outcomes_committed(std::slice::from_ref(&retry));
        scheduler.apply(vec![retry], 5_000);
        assert_eq!(scheduler.activity(5_000, MAX), idle());
        assert!(scheduler.activity(6_000, MAX).starts_due, "the retry's time");
    }

    #[test]
    fn nothing_is_due_while_every_slot_is_taken() {
        let mut scheduler = Scheduler::new(100, 0);
        let (running, waiting) = (MessageId::generate(), MessageId::generate());
        scheduler.apply(vec![message(running, 0), message(waiting, 0)], 0);
        assert_eq!(scheduler.poll(0, 1).len(), 1);
        assert_eq!(scheduler.activity(0, 1), SchedulerActivity { attempts: 1, ..idle() });
        assert_eq!(scheduler.activity(0, 2), SchedulerActivity { attempts: 1, starts_due: true, ..idle() });
    }

    #[test]
    fn a_rate_window_that_ends_is_work_to_do() {
        let mut scheduler = Scheduler::new(100, 0);
        let flow = tern_core::FlowControl { key: "k".into(), parallelism: None, rate: Some(1), period_secs: 1 };
        let ids = [MessageId::generate(), MessageId::generate()];
        let changes = ids.iter().enumerate().map(|(seq, id)| {
            let Change::Scheduled(scheduled) = message(*id, 0) else { unreachable!() };
            Change::Scheduled(Scheduled { seq: seq as u64, flow_control: Some(flow.clone()), ..scheduled })
        });
        scheduler.apply(changes.collect(), 0);
        assert_eq!(scheduler.poll(0, MAX).len(), 1, "the rate lets one start");
        scheduler.exchange_started(ids[0], 60_000);
        scheduler.exchange_ended(ids[0], 60_000, 10);
        scheduler.outcomes_committed(&[Change::Finished { id: ids[0] }]);
        scheduler.apply(vec![Change::Finished { id: ids[0] }], 10);
        assert_eq!(scheduler.poll(10, MAX).len(), 0);
        assert_eq!(scheduler.activity(999, MAX), idle(), "the second waits for the next window");
        assert!(scheduler.activity(1_000, MAX).starts_due);
    }
}
