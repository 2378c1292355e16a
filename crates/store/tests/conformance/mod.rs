//! The conformance suite: what every store backend must do, written against the traits only.
//! A backend's test file implements [`Backend`] and calls [`run_all`].

pub mod listing;
pub mod resources;
pub mod schedules;
pub mod url_groups;
pub mod workflows;

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tern_core::{
    AttemptResponse, HeaderList, LogState, Message, MessageId, MessageState, PublishLimits, PublishOptions,
};
use tern_store::*;

/// Opens a store on a directory (or database) that survives [`Backend::reopen`].
#[async_trait]
pub trait Backend {
    async fn open(&mut self) -> Arc<dyn Store>;
    /// Shuts the store down and opens it again on the same data.
    async fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store>;
}

/// A stand-in for the engine's scheduler: it keeps the latest due time of every unfinished,
/// unclaimed message it heard of, and every change in order.
#[derive(Default)]
pub struct Recorder {
    due: Mutex<HashMap<MessageId, i64>>,
    claimed: Mutex<HashSet<MessageId>>,
    pub changes: Mutex<Vec<Change>>,
}

impl Scheduling for Recorder {
    fn committed(&self, changes: Vec<Change>) {
        let mut due = self.due.lock().unwrap();
        let mut claimed = self.claimed.lock().unwrap();
        for change in &changes {
            match change {
                Change::Scheduled(scheduled) => {
                    due.insert(scheduled.id, scheduled.due_at);
                    claimed.remove(&scheduled.id);
                }
                Change::Finished { id } => {
                    due.remove(id);
                    claimed.remove(id);
                }
                Change::Settling { .. } => {}
            }
        }
        self.changes.lock().unwrap().extend(changes);
    }

    fn hold_for_cancel(&self, id: MessageId) -> bool {
        if self.claimed.lock().unwrap().contains(&id) {
            return true;
        }
        self.due.lock().unwrap().remove(&id);
        false
    }

    fn release_hold(&self, _id: MessageId) {}
}

/// A store with a [`Recorder`] attached, claiming like the engine does.
pub struct TestStore {
    store: Arc<dyn Store>,
    pub recorder: Arc<Recorder>,
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl TestStore {
    async fn attach(store: Arc<dyn Store>, now: i64) -> TestStore {
        let recorder = Arc::new(Recorder::default());
        store.attach(recorder.clone(), now).await.unwrap();
        TestStore { store, recorder }
    }

    /// Takes the messages due at `now`, earliest first, and loads them.
    pub async fn claim_due(&self, now: i64, limit: usize) -> Vec<Arc<Message>> {
        let ids: Vec<MessageId> = {
            let mut due = self.recorder.due.lock().unwrap();
            let mut ready: Vec<(i64, MessageId)> =
                due.iter().filter(|(_, at)| **at <= now).map(|(id, at)| (*at, *id)).collect();
            ready.sort();
            ready.truncate(limit);
            let mut claimed = self.recorder.claimed.lock().unwrap();
            for (_, id) in &ready {
                due.remove(id);
                claimed.insert(*id);
            }
            ready.into_iter().map(|(_, id)| id).collect()
        };
        let mut messages = self.store.load_messages(ids.clone()).await.unwrap();
        messages.sort_by_key(|m| ids.iter().position(|id| *id == m.id));
        messages.into_iter().map(Arc::new).collect()
    }

    pub fn next_due_at(&self) -> Option<i64> {
        self.recorder.due.lock().unwrap().values().min().copied()
    }

    /// The changes reported since the last call.
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut *self.recorder.changes.lock().unwrap())
    }
}

async fn open(backend: &mut impl Backend, now: i64) -> TestStore {
    TestStore::attach(backend.open().await, now).await
}

async fn reopen(backend: &mut impl Backend, store: TestStore, now: i64) -> TestStore {
    TestStore::attach(backend.reopen(store.store).await, now).await
}

const USER: &str = "alice";
const OTHER: &str = "bob";

pub fn new_message(user: &str, url: &str, created_at: i64, due_at: i64, headers: &[(&str, &str)]) -> NewMessage {
    let options = PublishOptions::from_headers(headers.iter().copied(), true).unwrap();
    NewMessage {
        id: MessageId::generate(),
        user_id: user.to_string(),
        spec: options.to_spec(url.to_string(), Some("127.0.0.1".into()), &PublishLimits::default()),
        body: Bytes::from_static(b"{\"hello\":1}"),
        created_at,
        due_at,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: None,
    }
}

/// Waits until everything queued before it is committed: ops are applied in order.
async fn settle(store: &dyn Store) {
    store.delete_dlq(USER, Vec::new()).await.unwrap();
}

fn page(count: usize) -> PageRequest {
    PageRequest::first(count)
}

async fn log_states(store: &dyn Store, id: MessageId) -> Vec<LogState> {
    let filter = MessageFilter { message_ids: vec![id.to_string()], ..Default::default() };
    let mut page = page(100);
    page.order = Order::EarliestFirst;
    store.list_logs(USER, &filter, &page).await.unwrap().items.iter().map(|e| e.state).collect()
}

fn outcome(message: Arc<Message>, at: i64, status: u16, next: NextStep) -> AttemptOutcome {
    AttemptOutcome {
        message,
        active_at: None,
        finished_at: at,
        response: AttemptResponse { status, body: Bytes::from_static(b"404 Not Found"), ..Default::default() },
        next,
        callback: None,
        failure_callback: None,
    }
}

#[allow(dead_code, reason = "the PostgreSQL tests run the groups one by one, in parallel")]
pub async fn run_all(backend: &mut impl Backend) {
    messages(backend).await;
    resources::run_all(backend).await;
    url_groups::run_all(backend).await;
    schedules::run_all(backend).await;
    listing::run_all(backend).await;
    workflows::run_all(backend).await;
}

/// Messages: inserts, claims, attempts, cancels, logs, the DLQ, keys, retention, recovery.
pub async fn messages(backend: &mut impl Backend) {
    insert_get_and_isolation(backend).await;
    claims_follow_due_time(backend).await;
    deduplication_holds_for_its_window(backend).await;
    retries_become_due_again(backend).await;
    failures_enter_the_dlq(backend).await;
    callbacks_are_stored_with_the_outcome(backend).await;
    cancel_pending_and_in_flight(backend).await;
    cancel_by_filter(backend).await;
    logs_filter_and_paginate(backend).await;
    dlq_retry_consumes_the_entry(backend).await;
    keys_round_trip(backend).await;
    purge_applies_retention(backend).await;
    recovery_makes_unfinished_messages_due(backend).await;
}

async fn insert_get_and_isolation(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    let message = new_message(USER, "http://127.0.0.1:1/a?x=1", 1_000, 1_000, &[("Upstash-Label", "a,b")]);
    let id = message.id;
    assert_eq!(store.insert_messages(vec![message]).await.unwrap(), vec![InsertOutcome::Created]);
    let stored = store.get_message(USER, id).await.unwrap().unwrap();
    assert_eq!(stored.state, MessageState::Pending);
    assert_eq!(stored.spec.url, "http://127.0.0.1:1/a?x=1");
    assert_eq!(stored.spec.labels, vec!["a", "b"]);
    assert_eq!((stored.created_at, stored.not_before, stored.retried), (1_000, 1_000, 0));
    assert_eq!(stored.body, Bytes::from_static(b"{\"hello\":1}"));
    assert!(store.get_message(OTHER, id).await.unwrap().is_none());
    assert_eq!(log_states(&*store, id).await, vec![LogState::Created]);
    store.shutdown().await.unwrap();
}

async fn claims_follow_due_time(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let late = new_message(USER, "http://127.0.0.1:1/late", 0, 9_000, &[]);
    let early = new_message(USER, "http://127.0.0.1:1/early", 0, 10, &[]);
    let now = new_message(USER, "http://127.0.0.1:1/now", 0, 0, &[]);
    let ids = (late.id, early.id, now.id);
    store.insert_messages(vec![late, early, now]).await.unwrap();
    let claimed: Vec<_> = store.claim_due(100, 10).await.iter().map(|m| m.id).collect();
    assert_eq!(claimed, vec![ids.2, ids.1]);
    assert_eq!(store.next_due_at(), Some(9_000));
    assert!(store.claim_due(8_999, 10).await.is_empty());
    let claimed = store.claim_due(9_000, 10).await;
    assert_eq!(claimed[0].id, ids.0);
    assert_eq!(store.next_due_at(), None);
    store.shutdown().await.unwrap();
}

async fn deduplication_holds_for_its_window(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let claim = DedupClaim { key: "k".into(), expires_at: 600_000 };
    let mut first = new_message(USER, "http://127.0.0.1:1/", 0, 0, &[]);
    first.dedup = Some(claim.clone());
    let mut second = new_message(USER, "http://127.0.0.1:1/", 1_000, 1_000, &[]);
    second.dedup = Some(claim.clone());
    let mut other_user = new_message(OTHER, "http://127.0.0.1:1/", 1_000, 1_000, &[]);
    other_user.dedup = Some(claim.clone());
    let first_id = first.id;
    let outcomes = store.insert_messages(vec![first, second, other_user]).await.unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::Created, InsertOutcome::Duplicate(first_id), InsertOutcome::Created]);
    let mut after_window = new_message(USER, "http://127.0.0.1:1/", 600_000, 600_000, &[]);
    after_window.dedup = Some(DedupClaim { key: "k".into(), expires_at: 1_200_000 });
    assert_eq!(store.insert_messages(vec![after_window]).await.unwrap(), vec![InsertOutcome::Created]);
    store.shutdown().await.unwrap();
}

async fn retries_become_due_again(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let message = new_message(USER, "http://127.0.0.1:1/", 0, 0, &[]);
    let id = message.id;
    store.insert_messages(vec![message]).await.unwrap();
    let claimed = store.claim_due(0, 1).await.remove(0);
    store.record_attempt_started(&claimed, 5).await.unwrap();
    store.record_attempt_outcome(outcome(claimed, 10, 500, NextStep::Retry { at: 12_000 })).await.unwrap();
    settle(&*store).await;
    assert!(store.claim_due(11_999, 10).await.is_empty());
    let retry = store.claim_due(12_000, 10).await.remove(0);
    assert_eq!((retry.id, retry.retried, retry.state), (id, 1, MessageState::Retry));
    assert_eq!(retry.last_response.as_ref().unwrap().status, 500);
    // An attempt that ended before its start was recorded: the outcome logs ACTIVE first.
    let delivered = AttemptOutcome { active_at: Some(12_050), ..outcome(retry, 12_100, 200, NextStep::Delivered) };
    store.record_attempt_outcome(delivered).await.unwrap();
    settle(&*store).await;
    let delivered = store.get_message(USER, id).await.unwrap().unwrap();
    assert_eq!((delivered.state, delivered.retried, delivered.finished_at), (MessageState::Delivered, 2, Some(12_100)));
    assert_eq!(
        log_states(&*store, id).await,
        vec![
            LogState::Created,
            LogState::Active,
            LogState::Error,
            LogState::Retry,
            LogState::Active,
            LogState::Delivered
        ]
    );
    store.shutdown().await.unwrap();
}

async fn failures_enter_the_dlq(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let message = new_message(USER, "http://127.0.0.1:1/fail", 0, 0, &[("Upstash-Retries", "0")]);
    let id = message.id;
    store.insert_messages(vec![message]).await.unwrap();
    let claimed = store.claim_due(0, 1).await.remove(0);
    let next = NextStep::Failed { dlq_id: "5-0".into() };
    store.record_attempt_outcome(outcome(claimed, 5, 404, next)).await.unwrap();
    settle(&*store).await;
    let entries = store.list_dlq(USER, &MessageFilter::default(), &page(10)).await.unwrap();
    assert_eq!(entries.items.len(), 1);
    assert!(entries.cursor.is_none());
    let entry = &entries.items[0];
    assert_eq!((entry.id, entry.dlq_id.as_deref(), entry.state), (id, Some("5-0"), MessageState::Failed));
    assert_eq!(entry.last_response.as_ref().unwrap().body, Bytes::from_static(b"404 Not Found"));
    assert!(store.list_dlq(OTHER, &MessageFilter::default(), &page(10)).await.unwrap().items.is_empty());
    let by_status = MessageFilter { response_statuses: vec![500], ..Default::default() };
    assert!(store.list_dlq(USER, &by_status, &page(10)).await.unwrap().items.is_empty());
    assert_eq!(store.get_dlq(USER, "5-0").await.unwrap().unwrap().id, id);
    assert_eq!(log_states(&*store, id).await, vec![LogState::Created, LogState::Error, LogState::Failed]);
    assert_eq!(store.delete_dlq(USER, vec!["5-0".into(), "nope".into()]).await.unwrap(), 1);
    assert!(store.get_dlq(USER, "5-0").await.unwrap().is_none());
    assert_eq!(store.delete_dlq(USER, vec!["5-0".into()]).await.unwrap(), 0);
    store.shutdown().await.unwrap();
}

async fn callbacks_are_stored_with_the_outcome(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    store.insert_messages(vec![new_message(USER, "http://127.0.0.1:1/", 0, 0, &[])]).await.unwrap();
    let claimed = store.claim_due(0, 1).await.remove(0);
    let mut result = outcome(claimed, 7, 200, NextStep::Delivered);
    let callback = new_message(USER, "http://127.0.0.1:1/callback", 7, 7, &[]);
    let callback_id = callback.id;
    result.callback = Some(callback);
    store.record_attempt_outcome(result).await.unwrap();
    settle(&*store).await;
    let due: Vec<_> = store.claim_due(7, 10).await.iter().map(|m| m.id).collect();
    assert_eq!(due, vec![callback_id]);
    store.shutdown().await.unwrap();
}

async fn cancel_pending_and_in_flight(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let pending = new_message(USER, "http://127.0.0.1:1/", 0, 50_000, &[]);
    let flying = new_message(USER, "http://127.0.0.1:1/", 0, 0, &[]);
    let (pending_id, flying_id) = (pending.id, flying.id);
    store.insert_messages(vec![pending, flying]).await.unwrap();
    let claimed = store.claim_due(0, 10).await.remove(0);
    assert_eq!(claimed.id, flying_id);

    let result = store.cancel_messages(OTHER, CancelSelection::Ids(vec![pending_id]), 10).await.unwrap();
    assert_eq!(result, CancelOutcome { cancelled: 0, found: 0 });
    let result = store.cancel_messages(USER, CancelSelection::Ids(vec![pending_id, flying_id]), 10).await.unwrap();
    assert_eq!(result, CancelOutcome { cancelled: 2, found: 2 });
    assert_eq!(store.get_message(USER, pending_id).await.unwrap().unwrap().state, MessageState::Canceled);
    assert_eq!(store.get_message(USER, flying_id).await.unwrap().unwrap().state, MessageState::CancelRequested);
    assert!(store.claim_due(100_000, 10).await.is_empty());
    // A filtered cancel neither selects nor counts a message whose cancel waits for its attempt.
    let one = CancelSelection::Filter { filter: Box::default(), limit: Some(1) };
    assert_eq!(store.cancel_messages(USER, one, 10).await.unwrap(), CancelOutcome { cancelled: 0, found: 0 });
    assert_eq!(
        log_states(&*store, pending_id).await,
        vec![LogState::Created, LogState::CancelRequested, LogState::Canceled]
    );

    store.record_attempt_outcome(outcome(claimed.clone(), 20, 500, NextStep::Retry { at: 30 })).await.unwrap();
    settle(&*store).await;
    assert_eq!(store.get_message(USER, flying_id).await.unwrap().unwrap().state, MessageState::Canceled);
    assert!(store.claim_due(100_000, 10).await.is_empty());
    let cancelled_logs = vec![LogState::Created, LogState::CancelRequested, LogState::Error, LogState::Canceled];
    assert_eq!(log_states(&*store, flying_id).await, cancelled_logs);

    // An outcome that arrives for a finished message (a second record of the same attempt)
    // changes neither the message nor its log.
    store.record_attempt_outcome(outcome(claimed, 50, 200, NextStep::Delivered)).await.unwrap();
    settle(&*store).await;
    let finished = store.get_message(USER, flying_id).await.unwrap().unwrap();
    assert_eq!((finished.state, finished.finished_at), (MessageState::Canceled, Some(20)));
    assert_eq!(log_states(&*store, flying_id).await, cancelled_logs);
    let again = store.cancel_messages(USER, CancelSelection::Ids(vec![pending_id]), 40).await.unwrap();
    assert_eq!(again, CancelOutcome { cancelled: 0, found: 1 });
    store.shutdown().await.unwrap();
}

async fn cancel_by_filter(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let messages: Vec<_> = (0..5)
        .map(|i| {
            let label = if i % 2 == 0 { "even" } else { "odd" };
            new_message(USER, &format!("http://127.0.0.1:1/{i}"), i, 90_000, &[("Upstash-Label", label)])
        })
        .collect();
    let ids: Vec<MessageId> = messages.iter().map(|message| message.id).collect();
    store.insert_messages(messages).await.unwrap();
    let odd = MessageFilter { labels: vec!["odd".into()], ..Default::default() };
    let result =
        store.cancel_messages(USER, CancelSelection::Filter { filter: Box::new(odd), limit: None }, 10).await.unwrap();
    assert_eq!(result.cancelled, 2);
    let by_path =
        MessageFilter { paths: vec!["/0".into(), "/2".into()], hosts: vec!["127.0.0.1".into()], ..Default::default() };
    let result = store
        .cancel_messages(USER, CancelSelection::Filter { filter: Box::new(by_path), limit: Some(1) }, 10)
        .await
        .unwrap();
    assert_eq!(result.cancelled, 1);
    // The oldest match went first.
    assert_eq!(store.get_message(USER, ids[0]).await.unwrap().unwrap().state, MessageState::Canceled);
    assert_eq!(store.get_message(USER, ids[2]).await.unwrap().unwrap().state, MessageState::Pending);
    let all = CancelSelection::Filter { filter: Box::default(), limit: None };
    assert_eq!(store.cancel_messages(OTHER, all.clone(), 10).await.unwrap().cancelled, 0);
    assert_eq!(store.cancel_messages(USER, all.clone(), 10).await.unwrap().cancelled, 2);
    assert_eq!(store.cancel_messages(USER, all, 10).await.unwrap().cancelled, 0);
    assert!(store.claim_due(100_000, 10).await.is_empty());
    store.shutdown().await.unwrap();
}

async fn logs_filter_and_paginate(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let message = new_message(USER, "http://127.0.0.1:1/logs", i * 10, i * 10, &[("Upstash-Label", "page")]);
        ids.push(message.id);
        store.insert_messages(vec![message]).await.unwrap();
    }
    let filter = MessageFilter { labels: vec!["page".into()], ..Default::default() };
    let first = store.list_logs(USER, &filter, &page(2)).await.unwrap();
    assert_eq!(first.items.iter().map(|e| e.message.id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
    let mut next = page(2);
    next.cursor = first.cursor.clone();
    let second = store.list_logs(USER, &filter, &next).await.unwrap();
    assert_eq!(second.items.iter().map(|e| e.message.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
    next.cursor = second.cursor.clone();
    let third = store.list_logs(USER, &filter, &next).await.unwrap();
    assert_eq!(third.items.len(), 1);
    assert!(third.cursor.is_none());

    let mut earliest = page(10);
    earliest.order = Order::EarliestFirst;
    let ascending = store.list_logs(USER, &filter, &earliest).await.unwrap();
    assert_eq!(ascending.items[0].message.id, ids[0]);
    let window = MessageFilter { from_ms: Some(10), to_ms: Some(30), ..filter.clone() };
    assert_eq!(store.list_logs(USER, &window, &page(10)).await.unwrap().items.len(), 3);
    let by_time_cursor = PageRequest { cursor: Some("20".into()), ..page(10) };
    assert_eq!(store.list_logs(USER, &filter, &by_time_cursor).await.unwrap().items.len(), 3);
    let delivered = MessageFilter { states: vec![LogState::Delivered], ..filter.clone() };
    assert!(store.list_logs(USER, &delivered, &page(10)).await.unwrap().items.is_empty());
    let wrong_label = MessageFilter { labels: vec!["pag".into()], ..Default::default() };
    assert!(store.list_logs(USER, &wrong_label, &page(10)).await.unwrap().items.is_empty());
    assert!(store.list_logs(OTHER, &filter, &page(10)).await.unwrap().items.is_empty());
    let bad_cursor = PageRequest { cursor: Some("x-y".into()), ..page(10) };
    assert!(matches!(store.list_logs(USER, &filter, &bad_cursor).await, Err(StoreError::InvalidInput(_))));
    store.shutdown().await.unwrap();
}

async fn dlq_retry_consumes_the_entry(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    store.insert_messages(vec![new_message(USER, "http://127.0.0.1:1/", 0, 0, &[])]).await.unwrap();
    let claimed = store.claim_due(0, 1).await.remove(0);
    store.record_attempt_outcome(outcome(claimed, 1, 500, NextStep::Failed { dlq_id: "1-7".into() })).await.unwrap();
    settle(&*store).await;
    let mut retry = new_message(USER, "http://127.0.0.1:1/", 2, 2, &[]);
    retry.consumes_dlq_entry = Some("1-7".into());
    // The entry's body is the retry's, whatever the message says: the store copies it.
    retry.body = Bytes::new();
    let retry_id = retry.id;
    let mut twice = new_message(USER, "http://127.0.0.1:1/", 2, 2, &[]);
    twice.consumes_dlq_entry = Some("1-7".into());
    let outcomes = store.insert_messages(vec![retry, twice]).await.unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::Created, InsertOutcome::DlqEntryGone]);
    assert!(store.get_dlq(USER, "1-7").await.unwrap().is_none());
    let retried = store.get_message(USER, retry_id).await.unwrap().unwrap();
    assert_eq!(retried.body, Bytes::from_static(b"{\"hello\":1}"), "the entry's body");
    let payload_is_right = store.take_changes().iter().all(|change| match change {
        Change::Scheduled(scheduled) if scheduled.id == retry_id => {
            scheduled.message.as_ref().is_none_or(|message| message.body == retried.body)
        }
        _ => true,
    });
    assert!(payload_is_right, "a payload handed to the scheduler carries the entry's body");
    let claimed = store.claim_due(2, 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].body, retried.body, "what is delivered is the entry's body");
    store.shutdown().await.unwrap();
}

async fn keys_round_trip(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    assert!(store.load_keys(USER).await.unwrap().is_none());
    let keys = StoredKeys {
        current: "sig_b".into(),
        next: "sig_c".into(),
        configured_current: "sig_a".into(),
        configured_next: "sig_b".into(),
    };
    store.save_keys(USER, keys.clone()).await.unwrap();
    assert_eq!(store.load_keys(USER).await.unwrap(), Some(keys));
    assert!(store.load_keys(OTHER).await.unwrap().is_none());
    store.shutdown().await.unwrap();
}

async fn purge_applies_retention(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let done = new_message(USER, "http://127.0.0.1:1/done", 0, 0, &[]);
    let failed = new_message(USER, "http://127.0.0.1:1/failed", 0, 0, &[]);
    let waiting = new_message(USER, "http://127.0.0.1:1/waiting", 0, 10_000_000, &[]);
    let mut deduplicated = new_message(USER, "http://127.0.0.1:1/dedup", 0, 10_000_000, &[]);
    deduplicated.dedup = Some(DedupClaim { key: "d".into(), expires_at: 100 });
    let ids = (done.id, failed.id, waiting.id);
    store.insert_messages(vec![done, failed, waiting, deduplicated]).await.unwrap();
    let mut claimed = store.claim_due(0, 10).await;
    claimed.sort_by_key(|m| m.spec.url.clone());
    store.record_attempt_outcome(outcome(claimed[0].clone(), 1, 200, NextStep::Delivered)).await.unwrap();
    store
        .record_attempt_outcome(outcome(claimed[1].clone(), 1, 500, NextStep::Failed { dlq_id: "1-1".into() }))
        .await
        .unwrap();
    settle(&*store).await;
    let retention = Retention { logs: Duration::from_millis(1_000), dlq: Duration::from_millis(5_000) };
    let stats = store.purge(2_000, retention).await.unwrap();
    assert_eq!((stats.messages, stats.dlq_entries, stats.dedup_keys), (1, 0, 1));
    assert!(stats.logs >= 4);
    assert!(store.get_message(USER, ids.0).await.unwrap().is_none());
    assert!(store.get_dlq(USER, "1-1").await.unwrap().is_some());
    assert!(store.get_message(USER, ids.2).await.unwrap().is_some());
    let stats = store.purge(6_000, retention).await.unwrap();
    assert_eq!((stats.dlq_entries, stats.messages), (1, 1));
    assert!(store.get_message(USER, ids.1).await.unwrap().is_none());
    assert!(store.get_message(USER, ids.2).await.unwrap().is_some());
    store.shutdown().await.unwrap();
}

async fn recovery_makes_unfinished_messages_due(backend: &mut impl Backend) {
    let store = open(backend, 0).await;
    let in_flight = new_message(USER, "http://127.0.0.1:1/flight", 0, 0, &[]);
    let delayed = new_message(USER, "http://127.0.0.1:1/delayed", 0, 60_000, &[]);
    let cancelling = new_message(USER, "http://127.0.0.1:1/cancel", 0, 0, &[]);
    let ids = (in_flight.id, delayed.id, cancelling.id);
    store.insert_messages(vec![in_flight, delayed, cancelling]).await.unwrap();
    assert_eq!(store.claim_due(0, 10).await.len(), 2);
    store.cancel_messages(USER, CancelSelection::Ids(vec![ids.2]), 5).await.unwrap();

    let store = reopen(backend, store, 100).await;
    assert_eq!(store.get_message(USER, ids.2).await.unwrap().unwrap().state, MessageState::Canceled);
    assert_eq!(store.next_due_at(), Some(0));
    let due: Vec<_> = store.claim_due(100, 10).await.iter().map(|m| m.id).collect();
    assert_eq!(due, vec![ids.0]);
    let due: Vec<_> = store.claim_due(60_000, 10).await.iter().map(|m| m.id).collect();
    assert_eq!(due, vec![ids.1]);
    store.shutdown().await.unwrap();
}
