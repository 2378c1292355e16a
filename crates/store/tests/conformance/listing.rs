//! Conformance: listings end by size as well as by count, with a cursor that continues; bodies
//! are read only as far as asked; schedules list a page at a time with their last states.

use super::schedules::schedule;
use super::*;

pub async fn run_all(backend: &mut impl Backend) {
    log_pages_end_by_size_and_continue(backend).await;
    dlq_pages_end_by_size_and_continue(backend).await;
    bodies_are_read_only_as_far_as_asked(backend).await;
    schedules_are_listed_by_pages_with_their_last_states(backend).await;
}

/// `length` bytes that differ along the body, so that a wrong offset shows.
fn body_of(length: usize) -> Bytes {
    Bytes::from((0..length).map(|i| (i % 251) as u8).collect::<Vec<_>>())
}

/// Asserts equal bodies, naming their lengths rather than printing them.
#[track_caller]
fn assert_body(actual: &Bytes, expected: &Bytes, what: &str) {
    assert!(
        actual == expected,
        "{what}: {} bytes where {} were expected, or other bytes",
        actual.len(),
        expected.len()
    );
}

/// Past the size of a body that comes with its row: read on its own.
const LONG: usize = 100_000;

fn earliest(max_bytes: usize) -> PageRequest {
    PageRequest { order: Order::EarliestFirst, max_bytes, ..page(100) }
}

/// Follows cursors from `first` to the end; returns each page's items.
async fn all_pages<T, F, Fut>(first: PageRequest, mut list: F) -> Vec<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Page<T>>,
{
    let mut request = first;
    let mut pages = Vec::new();
    loop {
        let page = list(request.clone()).await;
        assert!(!page.items.is_empty(), "a page always holds an item");
        pages.push(page.items);
        match page.cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return pages,
        }
    }
}

async fn log_pages_end_by_size_and_continue(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let sizes = [LONG, LONG, 10, LONG, LONG, LONG];
    let mut ids = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let mut message = new_message(USER, "http://127.0.0.1:1/big", i as i64 * 10, 1_000_000, &[]);
        message.body = body_of(*size);
        ids.push(message.id);
        store.insert_messages(vec![message]).await.unwrap();
    }
    let filter = MessageFilter::default();
    let pages = all_pages(earliest(250_000), |request| {
        let (store, filter) = (&store, &filter);
        async move { store.list_logs(USER, filter, &request).await.unwrap() }
    })
    .await;
    let sizes_by_page: Vec<Vec<usize>> =
        pages.iter().map(|page| page.iter().map(|entry| entry.message.body.len()).collect()).collect();
    assert_eq!(sizes_by_page, vec![vec![LONG, LONG, 10], vec![LONG, LONG], vec![LONG]], "cut before passing the bytes");
    let listed: Vec<MessageId> = pages.iter().flatten().map(|entry| entry.message.id).collect();
    assert_eq!(listed, ids, "every entry once, in order");
    for entry in pages.iter().flatten() {
        let size = entry.message.body.len();
        assert_body(&entry.message.body, &body_of(size), "whole bodies by default");
    }

    // A budget below one body: one entry a page, still continuing.
    let latest = PageRequest { max_bytes: 1, ..page(100) };
    let pages = all_pages(latest, |request| {
        let (store, filter) = (&store, &filter);
        async move { store.list_logs(USER, filter, &request).await.unwrap() }
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![1; 6]);
    let listed: Vec<MessageId> = pages.iter().flatten().map(|entry| entry.message.id).rev().collect();
    assert_eq!(listed, ids);
    // The count still ends a page of small entries.
    let small = store.list_logs(USER, &filter, &PageRequest { max_bytes: 1 << 30, ..page(4) }).await.unwrap();
    assert_eq!((small.items.len(), small.cursor.is_some()), (4, true));
    store.shutdown().await.unwrap();
}

/// Fails `message` at `at` with a response body of `response` bytes, under `dlq_id`.
async fn fail(store: &TestStore, at: i64, response: usize, dlq_id: &str) {
    let claimed = store.claim_due(at, 1).await.remove(0);
    let mut result = outcome(claimed, at, 500, NextStep::Failed { dlq_id: dlq_id.into() });
    result.response.body = body_of(response);
    store.record_attempt_outcome(result).await.unwrap();
    settle(&**store).await;
}

async fn dlq_pages_end_by_size_and_continue(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    // Bodies and responses both count: LONG + 10, 10 + LONG, then LONG + LONG.
    for (i, (body, response)) in [(LONG, 10), (10, LONG), (LONG, LONG)].into_iter().enumerate() {
        let at = i as i64 * 10;
        let mut message = new_message(USER, "http://127.0.0.1:1/dlq", at, at, &[("Upstash-Retries", "0")]);
        message.body = body_of(body);
        store.insert_messages(vec![message]).await.unwrap();
        fail(&store, at, response, &format!("{at}-dlq")).await;
    }
    let filter = MessageFilter::default();
    let pages = all_pages(earliest(250_000), |request| {
        let (store, filter) = (&store, &filter);
        async move { store.list_dlq(USER, filter, &request).await.unwrap() }
    })
    .await;
    let dlq_ids: Vec<Vec<&str>> =
        pages.iter().map(|page| page.iter().map(|m| m.dlq_id.as_deref().unwrap()).collect()).collect();
    assert_eq!(dlq_ids, vec![vec!["0-dlq", "10-dlq"], vec!["20-dlq"]]);
    let last = &pages[1][0];
    assert_body(&last.body, &body_of(LONG), "the body");
    assert_body(&last.last_response.as_ref().unwrap().body, &body_of(LONG), "the response");
    store.shutdown().await.unwrap();
}

async fn bodies_are_read_only_as_far_as_asked(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let mut long = new_message(USER, "http://127.0.0.1:1/long", 0, 0, &[("Upstash-Retries", "0")]);
    long.body = body_of(2 * LONG);
    let mut short = new_message(USER, "http://127.0.0.1:1/short", 1, 1_000_000, &[]);
    short.body = Bytes::from_static(b"hello world");
    let mut redacted =
        new_message(USER, "http://127.0.0.1:1/redacted", 2, 1_000_000, &[("Upstash-Redact-Fields", "body")]);
    redacted.body = body_of(LONG);
    let (long_id, short_id, redacted_id) = (long.id, short.id, redacted.id);
    store.insert_messages(vec![long, short, redacted]).await.unwrap();
    fail(&store, 5, LONG, "5-long").await;

    let filter = MessageFilter::default();
    for limit in [None, Some(0), Some(10), Some(3 * LONG)] {
        let request = PageRequest { body_limit: limit, ..page(100) };
        let cut = |length: usize| length.min(limit.unwrap_or(usize::MAX));
        let entries = store.list_logs(USER, &filter, &request).await.unwrap().items;
        assert_eq!(entries.len(), 5, "CREATED ×3, ERROR, FAILED and nothing cut by size");
        for entry in &entries {
            let message = &entry.message;
            let expected = match message.id {
                id if id == long_id => body_of(cut(2 * LONG)),
                id if id == short_id => Bytes::from_static(b"hello world").slice(..cut(11)),
                // Read whole for its hash, unless nothing of it is read.
                id if id == redacted_id && limit == Some(0) => Bytes::new(),
                id if id == redacted_id => body_of(LONG),
                id => panic!("unexpected message {id}"),
            };
            assert_body(&message.body, &expected, &format!("{limit:?}: the body of {}", message.spec.url));
            if let Some(response) = &entry.response {
                assert_body(&response.body, &body_of(cut(LONG)), &format!("{limit:?}: a logged response"));
            }
        }
        let dlq = store.list_dlq(USER, &filter, &request).await.unwrap().items;
        assert_eq!(dlq.len(), 1);
        assert_body(&dlq[0].body, &body_of(cut(2 * LONG)), &format!("{limit:?}: the DLQ entry's body"));
        let response = &dlq[0].last_response.as_ref().unwrap().body;
        assert_body(response, &body_of(cut(LONG)), &format!("{limit:?}: its response"));
    }
    // A trimmed page counts what it read: 3 × 10 bytes and a redacted body fit where the whole
    // bodies do not.
    let trimmed = PageRequest { body_limit: Some(10), max_bytes: LONG + 2_000, ..page(100) };
    let listed = store.list_logs(USER, &filter, &trimmed).await.unwrap();
    assert_eq!(listed.items.len(), 5);
    assert!(listed.cursor.is_none());
    store.shutdown().await.unwrap();
}

async fn schedules_are_listed_by_pages_with_their_last_states(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let sizes = [LONG, 10, LONG, LONG, LONG];
    for (i, size) in sizes.iter().enumerate() {
        // Ids against creation order: the listing follows creation.
        let mut record = schedule(USER, &format!("s{}", 9 - i), 60_000);
        record.created_at = 100 + i as i64;
        record.body = body_of(*size);
        store.upsert_schedule(record, 100, None).await.unwrap();
    }
    store.upsert_schedule(schedule(OTHER, "theirs", 60_000), 100, None).await.unwrap();
    let produced = new_message(USER, "http://127.0.0.1:1/tick", 60_000, 60_000, &[]);
    let produced_id = produced.id;
    let fire = ScheduleFire {
        user_id: USER.into(),
        id: "s7".into(),
        tick_at: 60_000,
        next_tick_at: Some(120_000),
        messages: vec![produced],
        fired: true,
        error: None,
    };
    assert_eq!(store.fire_schedules(vec![fire]).await.unwrap(), [true]);

    let pages = all_pages(earliest(250_000), |request| {
        let store = &store;
        async move { store.list_schedules(USER, &request).await.unwrap() }
    })
    .await;
    let ids: Vec<Vec<&str>> = pages.iter().map(|page| page.iter().map(|s| s.schedule.id.as_str()).collect()).collect();
    assert_eq!(ids, vec![vec!["s9", "s8", "s7"], vec!["s6", "s5"]]);
    for (listed, size) in pages.iter().flatten().zip(sizes) {
        assert_body(&listed.schedule.body, &body_of(size), "whole bodies");
        let expected = if listed.schedule.id == "s7" { vec![(produced_id, MessageState::Pending)] } else { vec![] };
        assert_eq!(listed.last_states, expected, "{}: the last tick's states", listed.schedule.id);
    }
    let one = store.get_schedule(USER, "s7").await.unwrap().unwrap();
    assert_eq!(one.last_states, vec![(produced_id, MessageState::Pending)]);
    assert_eq!(one.schedule.last_message_ids, vec![produced_id]);
    store.shutdown().await.unwrap();
}
