//! Conformance: schedules — overwrite rules, pause, due ticks, and ticks that fire at most once.

use super::*;

pub async fn run_all(backend: &mut impl Backend) {
    overwrite_keeps_creation_time_and_pause(backend).await;
    a_claimed_dedup_key_answers_the_first_schedule(backend).await;
    due_ticks_come_from_an_index_and_fire_once(backend).await;
    a_schedule_is_sized_before_it_is_read(backend).await;
}

pub fn schedule(user: &str, id: &str, next_tick_at: i64) -> ScheduleRecord {
    let mut headers = HeaderList::new();
    headers.push("Upstash-Retries", "1");
    ScheduleRecord {
        id: id.into(),
        user_id: user.into(),
        cron: "* * * * *".into(),
        destination: "http://127.0.0.1:1/tick".into(),
        queue_name: None,
        headers,
        body: Bytes::from_static(b"tick"),
        caller_ip: Some("10.0.0.1".into()),
        created_at: 100,
        paused: false,
        next_tick_at: Some(next_tick_at),
        last_tick_at: None,
        last_message_ids: Vec::new(),
        error: None,
    }
}

fn earliest_first(count: usize) -> PageRequest {
    PageRequest { order: Order::EarliestFirst, ..PageRequest::first(count) }
}

async fn overwrite_keeps_creation_time_and_pause(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    assert_eq!(store.upsert_schedule(schedule(USER, "a", 60_000), 2, None).await.unwrap(), ScheduleUpsert::Created);
    assert_eq!(store.upsert_schedule(schedule(USER, "b", 60_000), 2, None).await.unwrap(), ScheduleUpsert::Created);
    assert_eq!(
        store.upsert_schedule(schedule(USER, "c", 60_000), 2, None).await.unwrap(),
        ScheduleUpsert::LimitReached
    );
    assert_eq!(store.upsert_schedule(schedule(OTHER, "c", 60_000), 2, None).await.unwrap(), ScheduleUpsert::Created);
    assert!(store.set_schedule_paused(USER, "a", true, None).await.unwrap());
    assert!(!store.set_schedule_paused(USER, "nope", true, None).await.unwrap());

    let mut replacement = schedule(USER, "a", 120_000);
    replacement.created_at = 999;
    replacement.cron = "0 * * * *".into();
    replacement.body = Bytes::new();
    replacement.headers = HeaderList::new();
    assert_eq!(store.upsert_schedule(replacement, 2, None).await.unwrap(), ScheduleUpsert::Replaced, "at the limit");
    let stored = store.get_schedule(USER, "a").await.unwrap().unwrap().schedule;
    assert_eq!((stored.created_at, stored.paused), (100, true), "creation time and pause are kept");
    assert_eq!((stored.cron.as_str(), stored.body.len(), stored.headers.is_empty()), ("0 * * * *", 0, true));
    let listed = store.list_schedules(USER, &earliest_first(10)).await.unwrap();
    assert_eq!(listed.items.iter().map(|s| s.schedule.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(store.get_schedule(OTHER, "a").await.unwrap().is_none());
    assert!(store.delete_schedule(USER, "b").await.unwrap());
    assert!(!store.delete_schedule(USER, "b").await.unwrap());
    store.shutdown().await.unwrap();
}

async fn a_claimed_dedup_key_answers_the_first_schedule(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let claim = |expires_at| Some(DedupClaim { key: "k".into(), expires_at });
    assert_eq!(
        store.upsert_schedule(schedule(USER, "first", 60_000), 10, claim(1_000)).await.unwrap(),
        ScheduleUpsert::Created
    );
    let duplicate = store.upsert_schedule(schedule(USER, "second", 60_000), 10, claim(1_000)).await.unwrap();
    assert_eq!(duplicate, ScheduleUpsert::Deduplicated("first".into()));
    assert!(store.get_schedule(USER, "second").await.unwrap().is_none(), "a duplicate writes nothing");
    // Per user; and once the claim has expired the key is free again.
    let other = store.upsert_schedule(schedule(OTHER, "second", 60_000), 10, claim(1_000)).await.unwrap();
    assert_eq!(other, ScheduleUpsert::Created);
    let mut later = schedule(USER, "third", 60_000);
    later.created_at = 1_000;
    assert_eq!(store.upsert_schedule(later, 10, claim(2_000)).await.unwrap(), ScheduleUpsert::Created);
    let mut again = schedule(USER, "fourth", 60_000);
    again.created_at = 1_500;
    let duplicate = store.upsert_schedule(again.clone(), 10, claim(2_500)).await.unwrap();
    assert_eq!(duplicate, ScheduleUpsert::Deduplicated("third".into()));
    // A deleted schedule is no answer: the creation goes ahead.
    assert!(store.delete_schedule(USER, "third").await.unwrap());
    assert_eq!(store.upsert_schedule(again, 10, claim(2_500)).await.unwrap(), ScheduleUpsert::Created);
    assert!(store.get_schedule(USER, "fourth").await.unwrap().is_some());
    store.shutdown().await.unwrap();
}

async fn due_ticks_come_from_an_index_and_fire_once(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    store.upsert_schedule(schedule(USER, "early", 60_000), 10, None).await.unwrap();
    store.upsert_schedule(schedule(USER, "late", 180_000), 10, None).await.unwrap();
    store.upsert_schedule(schedule(USER, "paused", 30_000), 10, None).await.unwrap();
    store.set_schedule_paused(USER, "paused", true, Some(30_000)).await.unwrap();
    assert_eq!(store.next_schedule_tick().await.unwrap(), Some(60_000), "paused schedules do not count");
    assert!(store.due_schedules(59_999, 10).await.unwrap().is_empty());
    let due = store.due_schedules(60_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["early"]);

    let message = new_message(USER, "http://127.0.0.1:1/tick", 60_010, 60_000, &[]);
    let id = message.id;
    let fire = ScheduleFire {
        user_id: USER.into(),
        id: "early".into(),
        tick_at: 60_000,
        next_tick_at: Some(120_000),
        messages: vec![message],
        fired: true,
        error: None,
    };
    assert_eq!(store.fire_schedules(vec![fire.clone()]).await.unwrap(), [true]);
    let again =
        ScheduleFire { messages: vec![new_message(USER, "http://127.0.0.1:1/tick", 60_020, 60_000, &[])], ..fire };
    assert_eq!(store.fire_schedules(vec![again]).await.unwrap(), [false], "a tick fires at most once");
    let stored = store.get_schedule(USER, "early").await.unwrap().unwrap().schedule;
    assert_eq!(
        (stored.next_tick_at, stored.last_tick_at, stored.last_message_ids.clone()),
        (Some(120_000), Some(60_000), vec![id])
    );
    assert!(store.get_message(USER, id).await.unwrap().is_some());
    assert_eq!(store.claim_due(60_000, 10).await.len(), 1, "the produced message is scheduled");

    let skipped = ScheduleFire {
        user_id: USER.into(),
        id: "late".into(),
        tick_at: 180_000,
        next_tick_at: Some(240_000),
        messages: Vec::new(),
        fired: false,
        error: Some("topic g not found".into()),
    };
    assert_eq!(store.fire_schedules(vec![skipped]).await.unwrap(), [true]);
    let late = store.get_schedule(USER, "late").await.unwrap().unwrap().schedule;
    assert_eq!((late.last_tick_at, late.error.as_deref()), (None, Some("topic g not found")));
    let paused = ScheduleFire {
        user_id: USER.into(),
        id: "paused".into(),
        tick_at: 30_000,
        next_tick_at: Some(90_000),
        messages: Vec::new(),
        fired: true,
        error: None,
    };
    assert_eq!(store.fire_schedules(vec![paused]).await.unwrap(), [false], "a paused schedule does not fire");

    let store = reopen(backend, store, 0).await;
    assert_eq!(store.next_schedule_tick().await.unwrap(), Some(120_000), "ticks survive a restart");
    store.shutdown().await.unwrap();
}

/// `GET /v2/schedules/{id}` reserves a schedule's size before reading it: at least its body,
/// headers and URLs, of the user's own schedules only.
async fn a_schedule_is_sized_before_it_is_read(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let mut large = schedule(USER, "large", 60_000);
    large.body = Bytes::from(vec![b'b'; 10_000]);
    large.headers.push("Upstash-Forward-X", "h".repeat(2_000));
    large.destination = format!("http://127.0.0.1:1/{}", "d".repeat(3_000));
    store.upsert_schedule(large, 10, None).await.unwrap();
    let stored = store.get_schedule(USER, "large").await.unwrap().unwrap().schedule;
    let headers: usize = stored.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    let bytes = store.schedule_bytes(USER, "large").await.unwrap().expect("a size");
    assert!(bytes >= stored.body.len() + headers + stored.destination.len(), "{bytes}");
    assert!(store.schedule_bytes(OTHER, "large").await.unwrap().is_none());
    assert!(store.schedule_bytes(USER, "missing").await.unwrap().is_none());
    store.shutdown().await.unwrap();
}
