use super::*;
use tern_core::FlowControl;
use tern_store::Change;

pub(super) fn scheduled(id: MessageId, due_at: i64, seq: u64) -> Scheduled {
    Scheduled {
        id,
        user_id: "u".into(),
        due_at,
        seq,
        queue_name: None,
        flow_control: None,
        source: None,
        is_new: true,
        message: None,
    }
}

fn queued(id: MessageId, seq: u64, queue: &str) -> Scheduled {
    Scheduled { queue_name: Some(queue.into()), ..scheduled(id, 0, seq) }
}

fn flowing(id: MessageId, seq: u64, key: &str, parallelism: Option<u32>, rate: Option<u32>) -> Scheduled {
    let flow = FlowControl { key: key.into(), parallelism, rate, period_secs: 1 };
    Scheduled { flow_control: Some(flow), ..scheduled(id, 0, seq) }
}

fn ids(n: usize) -> Vec<MessageId> {
    (0..n).map(|_| MessageId::generate()).collect()
}

fn started(scheduler: &mut Scheduler, now: i64) -> Vec<MessageId> {
    scheduler.poll(now, usize::MAX).into_iter().map(|start| start.id).collect()
}

fn add(scheduler: &mut Scheduler, items: Vec<Scheduled>) {
    scheduler.apply(items.into_iter().map(Change::Scheduled).collect(), 0);
}

fn finish(scheduler: &mut Scheduler, id: MessageId, now: i64) {
    scheduler.attempt_ended(id, now);
    scheduler.apply(vec![Change::Finished { id }], now);
}

#[test]
fn messages_start_when_due_in_due_order() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(3);
    add(&mut scheduler, vec![scheduled(m[0], 30, 1), scheduled(m[1], 10, 2), scheduled(m[2], 20, 3)]);
    assert_eq!(scheduler.next_wake(), Some(10));
    assert!(started(&mut scheduler, 9).is_empty());
    assert_eq!(started(&mut scheduler, 25), vec![m[1], m[2]]);
    assert_eq!(scheduler.next_wake(), Some(30));
    assert_eq!(scheduler.poll(30, 0).len(), 0, "a zero limit starts nothing");
    assert_eq!(started(&mut scheduler, 30), vec![m[0]]);
}

#[test]
fn a_fifo_queue_waits_for_the_head_through_its_retries() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(3);
    add(&mut scheduler, vec![queued(m[0], 1, "q"), queued(m[1], 2, "q"), queued(m[2], 3, "q")]);
    assert_eq!(started(&mut scheduler, 0), vec![m[0]]);
    // The head fails and waits 12 s for its retry: the queue stays blocked.
    scheduler.attempt_ended(m[0], 1);
    add(&mut scheduler, vec![with_due(Scheduled { is_new: false, ..queued(m[0], 1, "q") }, 12_000)]);
    assert!(started(&mut scheduler, 5_000).is_empty());
    assert_eq!(started(&mut scheduler, 12_000), vec![m[0]]);
    finish(&mut scheduler, m[0], 12_001);
    assert_eq!(started(&mut scheduler, 12_001), vec![m[1]]);
    assert_eq!(scheduler.queue_figures("u", "q").lag, 2);
    finish(&mut scheduler, m[1], 12_002);
    assert_eq!(started(&mut scheduler, 12_002), vec![m[2]]);
}

fn with_due(scheduled: Scheduled, due_at: i64) -> Scheduled {
    Scheduled { due_at, ..scheduled }
}

#[test]
fn queue_parallelism_bounds_the_window_and_pause_stops_it() {
    let mut scheduler = Scheduler::new(100, 0);
    scheduler.configure_queue("u", "q", 2, false);
    let m = ids(4);
    add(&mut scheduler, m.iter().enumerate().map(|(i, id)| queued(*id, i as u64, "q")).collect());
    assert_eq!(started(&mut scheduler, 0), vec![m[0], m[1]]);
    finish(&mut scheduler, m[1], 1);
    assert_eq!(started(&mut scheduler, 1), vec![m[2]]);
    scheduler.configure_queue("u", "q", 2, true);
    finish(&mut scheduler, m[0], 2);
    assert!(started(&mut scheduler, 2).is_empty(), "a paused queue starts nothing");
    scheduler.configure_queue("u", "q", 2, false);
    assert_eq!(started(&mut scheduler, 3), vec![m[3]]);
}

#[test]
fn a_deleted_queue_used_again_while_its_messages_run_gets_the_defaults() {
    let mut scheduler = Scheduler::new(100, 0);
    scheduler.configure_queue("u", "q", 2, false);
    let m = ids(4);
    add(&mut scheduler, vec![queued(m[0], 1, "q"), queued(m[1], 2, "q")]);
    assert_eq!(started(&mut scheduler, 0), vec![m[0], m[1]]);
    scheduler.delete_queue("u", "q");
    // Enqueued again under the same name: a new queue, parallelism 1 and not paused.
    add(&mut scheduler, vec![queued(m[2], 3, "q"), queued(m[3], 4, "q")]);
    finish(&mut scheduler, m[0], 1);
    assert!(started(&mut scheduler, 1).is_empty(), "behind the old message still running");
    finish(&mut scheduler, m[1], 2);
    assert_eq!(started(&mut scheduler, 2), vec![m[2]]);
    finish(&mut scheduler, m[2], 3);
    assert_eq!(started(&mut scheduler, 3), vec![m[3]]);
}

#[test]
fn a_queue_paused_or_narrowed_while_its_messages_wait_for_their_key_holds_them() {
    let mut scheduler = Scheduler::new(100, 0);
    scheduler.configure_queue("u", "q", 3, false);
    scheduler.set_flow_paused("u", "k", true, 0);
    let m = ids(3);
    let flow = FlowControl { key: "k".into(), parallelism: Some(5), rate: None, period_secs: 1 };
    add(
        &mut scheduler,
        m.iter()
            .enumerate()
            .map(|(i, id)| Scheduled { flow_control: Some(flow.clone()), ..queued(*id, i as u64, "q") })
            .collect(),
    );
    assert!(started(&mut scheduler, 0).is_empty());
    assert_eq!(scheduler.flow_info("u", "k", 0).unwrap().wait_list_size, 3);
    scheduler.configure_queue("u", "q", 3, true);
    scheduler.set_flow_paused("u", "k", false, 1);
    assert!(started(&mut scheduler, 1).is_empty(), "the queue is paused");
    scheduler.configure_queue("u", "q", 1, false);
    assert_eq!(started(&mut scheduler, 2), vec![m[0]], "one at a time");
    finish(&mut scheduler, m[0], 3);
    assert_eq!(started(&mut scheduler, 3), vec![m[1]]);
}

#[test]
fn a_delayed_head_holds_its_queue() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(2);
    add(&mut scheduler, vec![with_due(queued(m[0], 1, "q"), 1_000), queued(m[1], 2, "q")]);
    assert!(started(&mut scheduler, 0).is_empty());
    assert_eq!(started(&mut scheduler, 1_000), vec![m[0]]);
}

#[test]
fn a_queue_message_holds_its_place_until_its_callbacks_finish() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(2);
    let callback = MessageId::generate();
    add(&mut scheduler, vec![queued(m[0], 1, "q"), queued(m[1], 2, "q")]);
    assert_eq!(started(&mut scheduler, 0), vec![m[0]]);
    scheduler.attempt_ended(m[0], 1);
    scheduler.apply(
        vec![
            Change::Scheduled(Scheduled { source: Some(m[0]), ..scheduled(callback, 1, 3) }),
            Change::Finished { id: m[0] },
        ],
        1,
    );
    assert_eq!(started(&mut scheduler, 1), vec![callback], "the next queue message waits for the callback");
    finish(&mut scheduler, callback, 2);
    assert_eq!(started(&mut scheduler, 2), vec![m[1]]);
}

#[test]
fn at_start_a_queue_message_waits_for_every_unfinished_callback() {
    // A finished head with two unfinished callbacks, as the store reports it at start.
    let mut scheduler = Scheduler::new(100, 0);
    let (head, next, callbacks) = (MessageId::generate(), MessageId::generate(), ids(2));
    let settling = Change::Settling { id: head, user_id: "u".into(), queue_name: "q".into(), seq: 1 };
    let found = |id, seq| Change::Scheduled(Scheduled { source: Some(head), is_new: false, ..scheduled(id, 0, seq) });
    let queued_next = Change::Scheduled(Scheduled { is_new: false, ..queued(next, 2, "q") });
    scheduler.apply(vec![settling, queued_next, found(callbacks[0], 3), found(callbacks[1], 4)], 0);
    assert_eq!(started(&mut scheduler, 0), vec![callbacks[0], callbacks[1]]);
    finish(&mut scheduler, callbacks[0], 1);
    assert!(started(&mut scheduler, 1).is_empty(), "one callback still runs");
    finish(&mut scheduler, callbacks[1], 2);
    assert_eq!(started(&mut scheduler, 2), vec![next]);

    // An unfinished head (waiting for a retry) with an unfinished callback.
    let mut scheduler = Scheduler::new(100, 0);
    let callback = MessageId::generate();
    let restored = |item: Scheduled| Change::Scheduled(Scheduled { is_new: false, ..item });
    scheduler.apply(
        vec![
            restored(with_due(queued(head, 1, "q"), 10)),
            restored(queued(next, 2, "q")),
            restored(Scheduled { source: Some(head), ..scheduled(callback, 0, 3) }),
        ],
        0,
    );
    assert_eq!(started(&mut scheduler, 10), vec![callback, head]);
    finish(&mut scheduler, head, 11);
    assert!(started(&mut scheduler, 11).is_empty(), "the callback still runs");
    finish(&mut scheduler, callback, 12);
    assert_eq!(started(&mut scheduler, 12), vec![next]);
}

#[test]
fn flow_parallelism_is_never_exceeded() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(3);
    add(&mut scheduler, m.iter().enumerate().map(|(i, id)| flowing(*id, i as u64, "k", Some(2), None)).collect());
    assert_eq!(started(&mut scheduler, 0), vec![m[0], m[1]]);
    assert_eq!(scheduler.flow_info("u", "k", 0).unwrap().wait_list_size, 1);
    scheduler.attempt_ended(m[0], 1);
    assert_eq!(started(&mut scheduler, 1), vec![m[2]]);
    let info = scheduler.flow_info("u", "k", 1).unwrap();
    assert_eq!((info.parallelism_count, info.wait_list_size), (2, 0));
}

#[test]
fn flow_rate_is_never_exceeded_in_a_window() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(5);
    add(&mut scheduler, m.iter().enumerate().map(|(i, id)| flowing(*id, i as u64, "k", None, Some(2))).collect());
    assert_eq!(started(&mut scheduler, 0), vec![m[0], m[1]]);
    for id in &m[..2] {
        scheduler.attempt_ended(*id, 10);
    }
    assert!(started(&mut scheduler, 999).is_empty());
    assert_eq!(scheduler.next_wake(), Some(1000));
    assert_eq!(started(&mut scheduler, 1000), vec![m[2], m[3]]);
    assert_eq!(started(&mut scheduler, 2000), vec![m[4]]);
    let info = scheduler.flow_info("u", "k", 2000).unwrap();
    assert_eq!((info.rate_max, info.rate_count, info.rate_period_start_secs), (2, 1, 2));
}

#[test]
fn flow_pause_pin_and_reset() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(4);
    scheduler.set_flow_paused("u", "k", true, 0);
    add(&mut scheduler, m.iter().enumerate().map(|(i, id)| flowing(*id, i as u64, "k", None, Some(1))).collect());
    assert!(started(&mut scheduler, 0).is_empty());
    assert_eq!(scheduler.flow_info("u", "k", 0).unwrap().wait_list_size, 4);
    scheduler.set_flow_paused("u", "k", false, 1);
    assert_eq!(started(&mut scheduler, 1), vec![m[0]]);
    scheduler.pin_flow("u", "k", flow::FlowPin { rate: Some(2), ..Default::default() }, 2);
    assert_eq!(started(&mut scheduler, 2), vec![m[1], m[2]]);
    let info = scheduler.flow_info("u", "k", 2).unwrap();
    assert!(info.pinned_rate && info.rate_max == 2);
    // A message with other settings does not change a pinned rate.
    let late = MessageId::generate();
    add(&mut scheduler, vec![flowing(late, 9, "k", None, Some(50))]);
    assert_eq!(scheduler.flow_info("u", "k", 3).unwrap().rate_max, 2);
    scheduler.reset_flow_rate("u", "k", 3);
    assert_eq!(started(&mut scheduler, 3), vec![m[3], late]);
}

#[test]
fn a_blocked_key_does_not_delay_others() {
    let mut scheduler = Scheduler::new(100, 0);
    let busy = ids(50);
    add(&mut scheduler, busy.iter().enumerate().map(|(i, id)| flowing(*id, i as u64, "busy", Some(1), None)).collect());
    let other = MessageId::generate();
    let plain = MessageId::generate();
    add(&mut scheduler, vec![flowing(other, 100, "other", Some(1), None), scheduled(plain, 0, 101)]);
    let first = started(&mut scheduler, 0);
    assert_eq!(first, vec![busy[0], other, plain]);
}

#[test]
fn user_parallelism_is_a_ceiling() {
    let mut scheduler = Scheduler::new(2, 0);
    let m = ids(3);
    add(&mut scheduler, m.iter().enumerate().map(|(i, id)| scheduled(*id, 0, i as u64)).collect());
    assert_eq!(started(&mut scheduler, 0).len(), 2);
    assert_eq!(scheduler.user_parallelism("u"), (2, 2));
    scheduler.attempt_ended(m[0], 1);
    assert_eq!(started(&mut scheduler, 1), vec![m[2]]);
}

#[test]
fn a_held_message_does_not_start_until_released() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(2);
    add(&mut scheduler, vec![scheduled(m[0], 0, 1), scheduled(m[1], 0, 2)]);
    assert!(!scheduler.hold_for_cancel(m[0]));
    assert_eq!(started(&mut scheduler, 0), vec![m[1]]);
    assert!(scheduler.hold_for_cancel(m[1]), "a running message reports so");
    scheduler.release_hold(m[0]);
    assert_eq!(started(&mut scheduler, 0), vec![m[0]]);
}

#[test]
fn cancelled_messages_leave_every_structure() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(3);
    add(&mut scheduler, vec![flowing(m[0], 1, "k", Some(1), None), flowing(m[1], 2, "k", Some(1), None)]);
    add(&mut scheduler, vec![with_due(queued(m[2], 3, "q"), 50)]);
    assert_eq!(started(&mut scheduler, 0), vec![m[0]]);
    scheduler.apply(vec![Change::Finished { id: m[1] }, Change::Finished { id: m[2] }], 0);
    assert_eq!(scheduler.flow_info("u", "k", 0).unwrap().wait_list_size, 0);
    assert_eq!(scheduler.queue_figures("u", "q").lag, 0);
    finish(&mut scheduler, m[0], 1);
    assert!(started(&mut scheduler, 100).is_empty());
    assert!(scheduler.is_empty());
}

#[test]
fn idle_keys_are_forgotten_and_busy_or_configured_ones_kept() {
    const DAY: i64 = 86_400_000;
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(4);
    // "delayed" has a message waiting for its time, "done" one that finished, "paused" is paused,
    // and "rated" allows one start a week.
    let rated = Scheduled {
        flow_control: Some(FlowControl {
            key: "rated".into(),
            parallelism: None,
            rate: Some(1),
            period_secs: 7 * 86_400,
        }),
        ..scheduled(m[3], 0, 4)
    };
    add(
        &mut scheduler,
        vec![
            with_due(flowing(m[0], 1, "delayed", Some(1), None), 3 * DAY),
            flowing(m[1], 2, "done", Some(1), None),
            rated,
        ],
    );
    assert_eq!(started(&mut scheduler, 0), vec![m[1], m[3]]);
    finish(&mut scheduler, m[1], 10);
    finish(&mut scheduler, m[3], 10);
    scheduler.set_flow_paused("u", "paused", true, 0);

    assert!(scheduler.forget_idle_flows(DAY - 1, DAY).is_empty(), "nothing idle for a day yet");
    assert_eq!(scheduler.forget_idle_flows(DAY + 10, DAY), vec![("u".to_string(), "done".to_string())]);
    assert!(scheduler.flow_info("u", "done", DAY + 10).is_none());
    for kept in ["delayed", "paused", "rated"] {
        assert!(scheduler.flow_info("u", kept, DAY + 10).is_some(), "{kept} is kept");
    }
    // Once its week-long window is over, the rated key goes too.
    assert_eq!(scheduler.forget_idle_flows(7 * DAY, DAY), vec![("u".to_string(), "rated".to_string())]);
    // The delayed message still starts under its key; a forgotten key used again comes back.
    assert_eq!(started(&mut scheduler, 7 * DAY), vec![m[0]]);
    add(&mut scheduler, vec![flowing(m[2], 5, "done", Some(1), None)]);
    assert_eq!(scheduler.flow_info("u", "done", 7 * DAY).unwrap().parallelism_max, 1);
}

#[test]
fn a_recovered_key_without_stored_settings_takes_them_from_its_messages() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(4);
    let recovered =
        |id, seq, parallelism| Scheduled { is_new: false, ..flowing(id, seq, "k", Some(parallelism), None) };
    // No stored row (forgotten while a publish raced it): the newest recovered message's limits.
    add(&mut scheduler, vec![recovered(m[0], 1, 3), recovered(m[1], 2, 1)]);
    assert_eq!(scheduler.flow_info("u", "k", 0).unwrap().parallelism_max, 1);
    // A retry of the older one does not bring its limits back.
    assert_eq!(started(&mut scheduler, 0), vec![m[0]]);
    scheduler.attempt_ended(m[0], 1);
    add(&mut scheduler, vec![with_due(recovered(m[0], 1, 3), 5)]);
    assert_eq!(scheduler.flow_info("u", "k", 0).unwrap().parallelism_max, 1);
    // A stored row wins over recovered messages.
    scheduler.restore_flow("u", "stored", &tern_store::FlowSettings { parallelism: Some(5), ..Default::default() });
    let stored = Scheduled { is_new: false, ..flowing(m[2], 3, "stored", Some(2), None) };
    add(&mut scheduler, vec![stored]);
    assert_eq!(scheduler.flow_info("u", "stored", 0).unwrap().parallelism_max, 5);
    // A new message's settings replace what recovery found.
    add(&mut scheduler, vec![flowing(m[3], 4, "k", Some(4), None)]);
    assert_eq!(scheduler.flow_info("u", "k", 0).unwrap().parallelism_max, 4);
}

#[test]
fn the_windows_of_rate_limited_keys_are_handed_out_once_after_they_move() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(3);
    add(
        &mut scheduler,
        vec![
            flowing(m[0], 1, "rated", None, Some(5)),
            flowing(m[1], 2, "rated", None, Some(5)),
            flowing(m[2], 3, "plain", Some(9), None),
        ],
    );
    assert!(scheduler.take_flow_windows().is_empty(), "nothing started yet");
    assert_eq!(started(&mut scheduler, 40), m);
    let window = tern_store::FlowWindow { user_id: "u".into(), key: "rated".into(), start: 40, count: 2 };
    assert_eq!(scheduler.take_flow_windows(), vec![window], "the latest state of each moved key, once");
    assert!(scheduler.take_flow_windows().is_empty());
}

#[test]
fn a_reset_window_is_saved_as_one_of_no_starts_and_restored_as_none() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(3);
    add(&mut scheduler, m.iter().enumerate().map(|(i, id)| flowing(*id, i as u64, "k", None, Some(1))).collect());
    assert_eq!(started(&mut scheduler, 10), vec![m[0]]);
    let open = scheduler.flow_settings("u", "k");
    assert_eq!((open.window_start, open.window_count), (Some(10), 1));
    // The operator's save after a reset carries the reset's time with no starts: the store
    // keeps it over the older window, however late the dispatcher writes that one.
    scheduler.reset_flow_rate("u", "k", 20);
    let reset = scheduler.flow_settings("u", "k");
    assert_eq!((reset.window_start, reset.window_count), (Some(20), 0));
    // Read back at a restart, it opens no window: the rate's starts are all available.
    let mut restarted = Scheduler::new(100, 0);
    restarted.restore_flow("u", "k", &reset);
    add(&mut restarted, vec![flowing(m[1], 1, "k", None, Some(1))]);
    assert_eq!(started(&mut restarted, 30), vec![m[1]]);
    let reopened = restarted.flow_settings("u", "k");
    assert_eq!((reopened.window_start, reopened.window_count), (Some(30), 1));
}

#[test]
fn messages_of_a_key_share_its_name_and_keys_are_counted_per_user() {
    let mut scheduler = Scheduler::new(100, 0);
    let m = ids(3);
    add(&mut scheduler, m.iter().enumerate().map(|(i, id)| flowing(*id, i as u64, "k", Some(1), None)).collect());
    let (key, _) = scheduler.flows.get_key_value(&lookup_key("u", "k")).expect("the key");
    assert_eq!(Arc::strong_count(&key.1), 4, "one copy of the name: the key's, shared by its three messages");
    assert_eq!(scheduler.flow_count("u"), 1);
    scheduler.pin_flow("u", "pinned", flow::FlowPin { parallelism: Some(1), ..Default::default() }, 0);
    assert_eq!(scheduler.flow_count("u"), 2);
    assert!(scheduler.has_flow("u", "pinned") && !scheduler.has_flow("v", "k"));
    assert_eq!(scheduler.flow_count("v"), 0);
    for id in m {
        scheduler.apply(vec![Change::Finished { id }], 0);
    }
    let day = 86_400_000;
    assert_eq!(scheduler.forget_idle_flows(2 * day, day), vec![("u".to_string(), "k".to_string())]);
    assert_eq!(scheduler.flow_count("u"), 1, "a forgotten key no longer counts");
}
