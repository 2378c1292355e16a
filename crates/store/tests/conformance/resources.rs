//! Conformance: what the scheduler hears, queues and flow-control settings.

use super::*;

pub async fn run_all(backend: &mut impl Backend) {
    scheduling_hears_every_committed_change(backend).await;
    queues_are_kept_and_deleting_one_cancels_its_messages(backend).await;
    flow_settings_survive_and_follow_messages_unless_pinned(backend).await;
    recovery_keeps_a_settling_queue_message_in_place(backend).await;
}

fn scheduled(change: &Change) -> &Scheduled {
    match change {
        Change::Scheduled(scheduled) => scheduled,
        other => panic!("expected a scheduled change, got {other:?}"),
    }
}

async fn scheduling_hears_every_committed_change(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let soon = new_message(
        USER,
        "http://127.0.0.1:1/soon",
        0,
        0,
        &[("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", "rate=5")],
    );
    let mut later = new_message(USER, "http://127.0.0.1:1/later", 0, 3_600_000, &[]);
    later.spec.queue_name = Some("q".into());
    let ids = (soon.id, later.id);
    store.insert_messages(vec![soon, later]).await.unwrap();
    let changes = store.take_changes();
    assert_eq!(changes.len(), 2);
    let (first, second) = (scheduled(&changes[0]), scheduled(&changes[1]));
    assert_eq!((first.id, first.is_new, first.due_at), (ids.0, true, 0));
    assert!(first.message.is_some(), "a message due now comes with its payload");
    assert_eq!(first.flow_control.as_ref().unwrap().rate, Some(5));
    assert_eq!((second.id, second.queue_name.as_deref()), (ids.1, Some("q")));
    assert!(second.message.is_none(), "a delayed message is loaded when due");
    assert!(second.seq > first.seq, "sequence numbers follow insertion");
    assert_eq!(store.get_queue(USER, "q").await.unwrap().unwrap().parallelism, 1, "enqueueing creates the queue");

    let claimed = store.claim_due(0, 1).await.remove(0);
    let mut result = outcome(claimed, 5, 200, NextStep::Delivered);
    let callback = new_message(USER, "http://127.0.0.1:1/callback", 5, 5, &[]);
    let mut callback = callback;
    callback.spec.origin = tern_core::Origin::Callback { source: ids.0 };
    let callback_id = callback.id;
    result.callback = Some(callback);
    store.record_attempt_outcome(result).await.unwrap();
    settle(&*store).await;
    let changes = store.take_changes();
    assert_eq!(scheduled(&changes[0]).id, callback_id);
    assert_eq!(scheduled(&changes[0]).source, Some(ids.0), "a callback names its source");
    assert!(
        matches!(changes[1], Change::Finished { id } if id == ids.0),
        "the source ends after its callbacks are known"
    );
    store.shutdown().await.unwrap();
}

async fn queues_are_kept_and_deleting_one_cancels_its_messages(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    store.upsert_queue(USER, "b", 2, false, 10).await.unwrap();
    store.upsert_queue(USER, "a", 1, true, 10).await.unwrap();
    store.upsert_queue(USER, "a", 3, false, 20).await.unwrap();
    store.upsert_queue(OTHER, "c", 1, false, 10).await.unwrap();
    let queues = store.list_queues(USER).await.unwrap();
    assert_eq!(queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(
        (queues[0].parallelism, queues[0].paused, queues[0].created_at, queues[0].updated_at),
        (3, false, 10, 20)
    );
    assert_eq!(store.all_queues().await.unwrap().len(), 3);

    let mut queued = new_message(USER, "http://127.0.0.1:1/", 0, 60_000, &[]);
    queued.spec.queue_name = Some("a".into());
    let id = queued.id;
    store.insert_messages(vec![queued]).await.unwrap();
    store.take_changes();
    assert!(store.delete_queue(USER, "a", 30).await.unwrap());
    assert!(!store.delete_queue(USER, "a", 30).await.unwrap());
    assert!(store.get_queue(USER, "a").await.unwrap().is_none());
    assert_eq!(store.get_message(USER, id).await.unwrap().unwrap().state, MessageState::Canceled);
    assert!(matches!(store.take_changes()[..], [Change::Finished { id: finished }] if finished == id));
    assert_eq!(log_states(&*store, id).await, [LogState::Created, LogState::CancelRequested, LogState::Canceled]);
    store.shutdown().await.unwrap();
}

async fn flow_settings_survive_and_follow_messages_unless_pinned(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    fn flow(value: &str) -> [(&str, &str); 2] {
        [("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", value)]
    }
    store.insert_messages(vec![new_message(USER, "http://127.0.0.1:1/", 0, 0, &flow("parallelism=2"))]).await.unwrap();
    let settings = store.all_flows().await.unwrap();
    assert_eq!(settings.len(), 1);
    assert_eq!((settings[0].0.as_str(), settings[0].1.as_str()), (USER, "k"));
    assert_eq!((settings[0].2.parallelism, settings[0].2.rate, settings[0].2.period_secs), (Some(2), None, 1));
    let pinned = FlowSettings { parallelism: Some(7), pinned_parallelism: true, paused: true, ..settings[0].2.clone() };
    store.save_flow(USER, "k", pinned).await.unwrap();
    store
        .insert_messages(vec![new_message(
            USER,
            "http://127.0.0.1:1/",
            0,
            0,
            &flow("parallelism=1, rate=3, period=1m"),
        )])
        .await
        .unwrap();
    let settings = &store.all_flows().await.unwrap()[0].2;
    assert_eq!(
        (settings.parallelism, settings.rate, settings.period_secs, settings.paused),
        (Some(7), Some(3), 60, true)
    );

    // Rate windows: kept across a message's upsert; a late (older) write changes nothing.
    let window = |start, count| FlowWindow { user_id: USER.into(), key: "k".into(), start, count };
    store.save_flow_windows(vec![window(1_000, 1), window(1_000, 2)]).await.unwrap();
    store.save_flow_windows(vec![window(1_000, 1), window(500, 3)]).await.unwrap();
    store.insert_messages(vec![new_message(USER, "http://127.0.0.1:1/", 0, 0, &flow("rate=3"))]).await.unwrap();
    let settings = store.all_flows().await.unwrap()[0].2.clone();
    assert_eq!((settings.window_start, settings.window_count), (Some(1_000), 2));
    store.save_flow_windows(vec![window(61_000, 1)]).await.unwrap();
    settle(&*store).await;
    let settings = store.all_flows().await.unwrap()[0].2.clone();
    assert_eq!((settings.window_start, settings.window_count), (Some(61_000), 1), "a newer window replaces it");
    // The operator's save keeps a newer stored window: its snapshot may be older than a window
    // the dispatcher wrote meanwhile. A snapshot without a window leaves the window alone.
    let older = FlowSettings { window_start: Some(1_000), window_count: 3, paused: false, ..settings.clone() };
    store.save_flow(USER, "k", older).await.unwrap();
    let saved = store.all_flows().await.unwrap()[0].2.clone();
    assert_eq!((saved.paused, saved.window_start, saved.window_count), (false, Some(61_000), 1));
    store.save_flow(USER, "k", FlowSettings { window_start: None, window_count: 0, ..saved.clone() }).await.unwrap();
    assert_eq!(store.all_flows().await.unwrap()[0].2.window_start, Some(61_000));
    // A reset is a window of no starts from the reset on: it replaces what came before it, and
    // a window from before it, written late, does not undo it.
    store.save_flow(USER, "k", FlowSettings { window_start: Some(70_000), window_count: 0, ..saved }).await.unwrap();
    store.save_flow_windows(vec![window(61_000, 2)]).await.unwrap();
    settle(&*store).await;
    let settings = store.all_flows().await.unwrap()[0].2.clone();
    assert_eq!((settings.window_start, settings.window_count), (Some(70_000), 0));

    // Forgetting keeps a paused or pinned key, and drops a plain one.
    let plain = [("Upstash-Flow-Control-Key", "plain"), ("Upstash-Flow-Control-Value", "rate=1")];
    store.insert_messages(vec![new_message(USER, "http://127.0.0.1:1/", 0, 0, &plain)]).await.unwrap();
    store.forget_flows(vec![(USER.into(), "k".into()), (USER.into(), "plain".into())]).await.unwrap();
    let keys: Vec<String> = store.all_flows().await.unwrap().into_iter().map(|(_, key, _)| key).collect();
    assert_eq!(keys, ["k"]);
    store.shutdown().await.unwrap();
}

async fn recovery_keeps_a_settling_queue_message_in_place(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let mut head = new_message(USER, "http://127.0.0.1:1/", 0, 0, &[]);
    head.spec.queue_name = Some("q".into());
    let head_id = head.id;
    store.insert_messages(vec![head]).await.unwrap();
    let claimed = store.claim_due(0, 1).await.remove(0);
    let mut result = outcome(claimed, 5, 200, NextStep::Delivered);
    let mut callback = new_message(USER, "http://127.0.0.1:1/callback", 5, 600_000, &[]);
    callback.spec.origin = tern_core::Origin::Callback { source: head_id };
    result.callback = Some(callback);
    store.record_attempt_outcome(result).await.unwrap();
    settle(&*store).await;

    let store = reopen(backend, store, 10).await;
    let changes = store.take_changes();
    let settling = changes.iter().find_map(|change| match change {
        Change::Settling { id, queue_name, .. } => Some((*id, queue_name.clone())),
        _ => None,
    });
    assert_eq!(settling, Some((head_id, "q".to_string())));
    assert!(
        changes.iter().any(|change| matches!(change, Change::Scheduled(s) if s.source == Some(head_id) && !s.is_new))
    );
    store.shutdown().await.unwrap();
}
