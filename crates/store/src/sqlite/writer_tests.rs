//! The writer with its sync thread: what waits for what.

use super::*;
use crate::batch::Reply;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tern_core::{AttemptResponse, Message, MessageState, PublishLimits, PublishOptions};
use tokio::sync::oneshot;

/// A scheduler that calls every message it knows of running, and notes being asked about
/// one it has not heard of.
#[derive(Default)]
struct Scheduler {
    known: Mutex<Vec<MessageId>>,
    asked_about_unknown: AtomicBool,
}

impl Scheduling for Scheduler {
    fn committed(&self, changes: Vec<Change>) {
        let mut known = self.known.lock().unwrap();
        known.extend(changes.iter().filter_map(|change| match change {
            Change::Scheduled(scheduled) => Some(scheduled.id),
            _ => None,
        }));
    }
    fn hold_for_cancel(&self, id: MessageId) -> bool {
        let known = self.known.lock().unwrap().contains(&id);
        if !known {
            self.asked_about_unknown.store(true, Ordering::SeqCst);
        }
        known
    }
    fn release_hold(&self, _: MessageId) {}
}

/// A writer on a fresh database in `directory`, whose syncer runs `sync` (not running yet).
fn new_writer(directory: &std::path::Path, sync: impl FnMut() -> std::io::Result<()> + Send + 'static) -> Writer {
    let path = directory.join("writer.sqlite3");
    let mut connection = super::super::open_connection(&path, false).expect("open");
    super::super::schema::migrate(&mut connection).expect("migrate");
    Writer {
        connection,
        scheduling: None,
        next_seq: 0,
        catch_up: Arc::default(),
        syncer: Syncer::start_with(sync).expect("start the syncer"),
        lock: std::fs::File::create(directory.join("lock")).expect("lock file"),
    }
}

/// [`new_writer`], running on its own thread.
fn start_writer(
    directory: &std::path::Path,
    sync: impl FnMut() -> std::io::Result<()> + Send + 'static,
) -> (mpsc::Sender<WriteOp>, std::thread::JoinHandle<()>) {
    let writer = new_writer(directory, sync);
    let (sender, receiver) = mpsc::channel(16);
    (sender, std::thread::spawn(move || writer.run(receiver)))
}

fn new_message() -> NewMessage {
    let options = PublishOptions::from_headers(std::iter::empty::<(&str, &str)>(), true).unwrap();
    NewMessage {
        id: MessageId::generate(),
        user_id: "alice".into(),
        spec: options.to_spec("http://127.0.0.1:9/".into(), None, &PublishLimits::default()),
        body: bytes::Bytes::from_static(b"{}"),
        created_at: 1,
        due_at: 1,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: None,
    }
}

fn request<T>(sender: &mpsc::Sender<WriteOp>, make: impl FnOnce(Reply<T>) -> WriteOp) -> oneshot::Receiver<Result<T>> {
    let (reply, answer) = oneshot::channel();
    sender.blocking_send(make(reply)).expect("the writer runs");
    answer
}

#[test]
fn a_cancel_waits_until_the_scheduler_knows_every_earlier_batch() {
    cancelling_waits_for_earlier_batches(|reply| {
        let selection = CancelSelection::Filter { filter: Box::new(MessageFilter::default()), limit: None };
        WriteOp::Cancel { user_id: "alice".into(), selection, now: 2, reply: with_count(reply) }
    });
}

#[test]
fn a_queue_delete_waits_until_the_scheduler_knows_every_earlier_batch() {
    cancelling_waits_for_earlier_batches(|reply| WriteOp::DeleteQueue {
        user_id: "alice".into(),
        name: "q".into(),
        now: 2,
        reply: with_flag(reply),
    });
}

/// The op's reply, adapted to "done" (cancel and queue delete answer different types).
type Done = std::sync::mpsc::Sender<()>;

fn with_count(done: Done) -> Reply<CancelOutcome> {
    let (reply, answer) = oneshot::channel::<Result<CancelOutcome>>();
    std::thread::spawn(move || {
        assert_eq!(answer.blocking_recv().unwrap().expect("cancelled").cancelled, 1);
        let _ = done.send(());
    });
    reply
}

fn with_flag(done: Done) -> Reply<bool> {
    let (reply, answer) = oneshot::channel::<Result<bool>>();
    std::thread::spawn(move || {
        assert!(answer.blocking_recv().unwrap().expect("deleted"), "the queue existed");
        let _ = done.send(());
    });
    reply
}

/// A queue message is inserted and its sync held back; then `cancelling` (which cancels it) is
/// sent. The cancel must not ask the scheduler about the message before it has heard of it.
fn cancelling_waits_for_earlier_batches(cancelling: impl FnOnce(Done) -> WriteOp) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let (entered, syncing) = std::sync::mpsc::channel::<()>();
    let (sender, thread) = start_writer(directory.path(), move || {
        let _ = entered.send(());
        gate.recv().map_err(std::io::Error::other)
    });

    let scheduler = Arc::new(Scheduler::default());
    go.send(()).unwrap();
    let attached = request(&sender, |reply| WriteOp::Attach { scheduling: scheduler.clone(), now: 0, reply });
    attached.blocking_recv().unwrap().expect("attached");
    syncing.recv().unwrap();

    let mut message = new_message();
    message.spec.queue_name = Some("q".into());
    let id = message.id;
    let inserted = request(&sender, |reply| WriteOp::Insert { messages: vec![message], reply });
    syncing.recv().expect("the insert's sync started and waits");
    let (done, cancelled) = std::sync::mpsc::channel();
    sender.blocking_send(cancelling(done)).expect("the writer runs");
    // Time for the writer to apply the cancel, were it not waiting for the insert to land.
    std::thread::sleep(Duration::from_millis(100));
    go.send(()).unwrap();
    assert_eq!(inserted.blocking_recv().unwrap().expect("inserted"), vec![InsertOutcome::Created]);
    go.send(()).unwrap();
    cancelled.recv_timeout(Duration::from_secs(10)).expect("the cancel was answered as expected");
    assert!(
        !scheduler.asked_about_unknown.load(Ordering::SeqCst),
        "the cancel asked the scheduler about {id} before it heard of it"
    );

    drop(go);
    drop(sender);
    thread.join().expect("the writer ends");
}

#[test]
fn after_a_failed_sync_nothing_more_is_written() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (sender, thread) = start_writer(directory.path(), || Err(std::io::Error::other("disk gone")));
    let first = request(&sender, |reply| WriteOp::Insert { messages: vec![new_message()], reply });
    assert!(first.blocking_recv().unwrap().is_err(), "its sync failed");
    let second = request(&sender, |reply| WriteOp::Insert { messages: vec![new_message()], reply });
    let error = second.blocking_recv().unwrap().expect_err("the store refuses writes");
    assert!(error.to_string().contains("until tern is restarted"), "{error}");
    drop(sender);
    thread.join().expect("the writer ends");

    let connection = super::super::open_connection(&directory.path().join("writer.sqlite3"), false).unwrap();
    let rows: i64 = connection.query_row("SELECT count(*) FROM messages", [], |row| row.get(0)).unwrap();
    assert_eq!(rows, 1, "the first batch was committed before its sync failed; the second never ran");
}

/// An insert op for `message`, and where its answer arrives.
fn insert(message: NewMessage) -> (WriteOp, oneshot::Receiver<Result<Vec<InsertOutcome>>>) {
    let (reply, answer) = oneshot::channel();
    (WriteOp::Insert { messages: vec![message], reply }, answer)
}

#[test]
fn a_failed_statement_rolls_its_whole_batch_back_and_hands_recorded_attempts_back() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut writer = new_writer(directory.path(), || Ok(()));
    let scheduler = Arc::new(Scheduler::default());
    writer.scheduling = Some(scheduler.clone());
    // A storage failure on demand: inserting a message for this URL fails its statement.
    writer
        .connection
        .execute_batch(
            "CREATE TEMP TRIGGER fail_on_purpose BEFORE INSERT ON main.messages
             WHEN NEW.url = 'http://127.0.0.1:9/fail'
             BEGIN SELECT RAISE(ABORT, 'failed on purpose'); END;",
        )
        .expect("trigger");

    let claimed = new_message();
    let (op, answer) = insert(claimed.clone());
    writer.commit_batch(vec![op]);
    assert_eq!(answer.blocking_recv().unwrap().expect("inserted"), vec![InsertOutcome::Created]);
    let claimed = Arc::new(Message {
        id: claimed.id,
        user_id: claimed.user_id,
        spec: claimed.spec,
        body: claimed.body,
        created_at: claimed.created_at,
        not_before: claimed.due_at,
        state: MessageState::Pending,
        retried: 0,
        due_at: Some(claimed.due_at),
        finished_at: None,
        dlq_id: None,
        last_response: None,
    });

    // One batch: a publish, the attempt of the message above, the failing publish, and a
    // publish after it.
    let before = new_message();
    let mut failing = new_message();
    failing.spec.url = "http://127.0.0.1:9/fail".into();
    let after = new_message();
    let rolled_back = [before.id, failing.id, after.id];
    let delivered = AttemptOutcome {
        message: claimed.clone(),
        active_at: Some(5),
        finished_at: 10,
        response: AttemptResponse { status: 200, ..Default::default() },
        next: NextStep::Delivered,
        callback: None,
        failure_callback: None,
    };
    let (before, before_answer) = insert(before);
    let (failing, failing_answer) = insert(failing);
    let (after, after_answer) = insert(after);
    let (reply, recorded) = tokio::sync::oneshot::channel();
    let attempt = WriteOp::AttemptFinished { outcome: Box::new(delivered), reply };
    writer.commit_batch(vec![before, attempt, failing, after]);
    for answer in [before_answer, failing_answer, after_answer] {
        let error = answer.blocking_recv().unwrap().expect_err("the batch failed");
        assert!(error.to_string().contains("failed on purpose"), "{error}");
    }
    let not_recorded = recorded.blocking_recv().unwrap().expect_err("the attempt's record failed");
    assert!(not_recorded.error.to_string().contains("failed on purpose"), "{not_recorded}");
    let handed_back = not_recorded.outcome.expect("the outcome comes back, to be recorded again");
    assert_eq!((handed_back.message.id, handed_back.next), (claimed.id, NextStep::Delivered));
    let known = scheduler.known.lock().unwrap().clone();
    assert_eq!(
        known,
        vec![claimed.id],
        "the scheduler heard only of the first publish: neither a retry (the engine records the \
         outcome again) nor a rolled-back publish"
    );

    // The writer goes on, and the sequence carries on where the last commit left it.
    let next = new_message();
    let next_id = next.id;
    let (op, answer) = insert(next);
    writer.commit_batch(vec![op]);
    assert_eq!(answer.blocking_recv().unwrap().expect("inserted"), vec![InsertOutcome::Created]);
    writer.syncer.stop();

    let connection = super::super::open_connection(&directory.path().join("writer.sqlite3"), false).unwrap();
    let rows = |sql: &str| -> Vec<(String, i64)> {
        let mut statement = connection.prepare(sql).unwrap();
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(
        rows("SELECT id, seq FROM messages ORDER BY seq"),
        vec![(claimed.id.to_string(), 0), (next_id.to_string(), 1)],
        "nothing of the failed batch is stored, and its sequence numbers are reused"
    );
    assert_eq!(
        rows("SELECT message_id, state FROM logs ORDER BY seq").len(),
        2,
        "one CREATED entry each for the two committed publishes; the attempt's entries are gone"
    );
    assert!(
        !rows("SELECT id, state FROM messages").iter().any(|(id, _)| rolled_back.iter().any(|r| r.to_string() == *id))
    );
    let state: i64 = connection
        .query_row("SELECT state FROM messages WHERE id = ?1", [claimed.id.to_string()], |row| row.get(0))
        .unwrap();
    assert_eq!(
        state,
        MessageState::Pending.code(),
        "the claimed message is still pending: its delivery was rolled back"
    );
}
