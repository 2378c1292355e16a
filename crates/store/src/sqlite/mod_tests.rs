//! Tests of the SQLite store's reader pool and what only this backend promises.

use super::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reads_holding_every_client_connection_do_not_hold_up_the_engine() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(SqliteOptions::new(directory.path())).expect("open");
    let readers = Arc::clone(&store.readers);
    // Client reads that block until released, one per client connection.
    let (started, reads_started) = std::sync::mpsc::channel();
    let mut releases = Vec::new();
    let mut client_reads = Vec::new();
    for _ in 0..CLIENT_READERS {
        let (release, released) = std::sync::mpsc::channel::<()>();
        releases.push(release);
        let (started, readers) = (started.clone(), Arc::clone(&readers));
        client_reads.push(tokio::spawn(async move {
            readers
                .read(move |_| {
                    started.send(()).expect("report");
                    // Returns once the test drops the sender.
                    let _ = released.recv();
                    Ok(())
                })
                .await
        }));
    }
    for _ in 0..CLIENT_READERS {
        reads_started.recv_timeout(Duration::from_secs(10)).expect("a client read started");
    }
    assert_eq!(readers.client_permits.available_permits(), 0, "every client connection is busy");

    let engine_read = readers.read_for_engine(|connection| Ok(connection.query_row("SELECT 1", [], |row| row.get(0))?));
    let answer: i64 = tokio::time::timeout(Duration::from_secs(10), engine_read)
        .await
        .expect("the engine's read does not wait for client reads")
        .expect("read");
    assert_eq!(answer, 1);
    // A schedule's tick reads its URL group the same way.
    let group = tokio::time::timeout(Duration::from_secs(10), store.get_group_for_engine("u", "g"))
        .await
        .expect("a tick's URL-group read does not wait for client reads")
        .expect("read");
    assert!(group.is_none());

    drop(releases);
    for read in client_reads {
        read.await.expect("task").expect("client read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_read_with_their_last_states_without_an_engine_connection() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(SqliteOptions::new(directory.path())).expect("open");
    let schedule = ScheduleRecord {
        id: "s".into(),
        user_id: "u".into(),
        cron: "* * * * *".into(),
        destination: "http://127.0.0.1:1/".into(),
        queue_name: None,
        headers: HeaderList::new(),
        body: bytes::Bytes::from_static(b"tick"),
        caller_ip: None,
        created_at: 0,
        paused: false,
        next_tick_at: Some(60_000),
        last_tick_at: None,
        last_message_ids: Vec::new(),
        error: None,
    };
    store.upsert_schedule(schedule, 10, None).await.expect("create");
    let options = tern_core::PublishOptions::from_headers(std::iter::empty::<(&str, &str)>(), true).expect("options");
    let spec = options.to_spec("http://127.0.0.1:1/".into(), None, &tern_core::PublishLimits::default());
    let id = MessageId::generate();
    let message = NewMessage {
        id,
        user_id: "u".into(),
        spec,
        body: bytes::Bytes::new(),
        created_at: 60_000,
        due_at: 60_000,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: None,
    };
    let fire = ScheduleFire {
        user_id: "u".into(),
        id: "s".into(),
        tick_at: 60_000,
        next_tick_at: Some(120_000),
        messages: vec![message],
        fired: true,
        error: None,
    };
    store.fire_schedules(vec![fire]).await.expect("fire");

    // Every engine connection busy until released.
    let (started, reads_started) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let mut engine_reads = Vec::new();
    for _ in 0..ENGINE_READERS {
        let (started, released, readers) = (started.clone(), Arc::clone(&released), Arc::clone(&store.readers));
        engine_reads.push(tokio::spawn(async move {
            readers
                .read_for_engine(move |_| {
                    started.send(()).expect("report");
                    let _ = released.lock().expect("release lock").recv();
                    Ok(())
                })
                .await
        }));
    }
    for _ in 0..ENGINE_READERS {
        reads_started.recv_timeout(Duration::from_secs(10)).expect("an engine read started");
    }

    let expected = vec![(id, tern_core::MessageState::Pending)];
    let page = PageRequest { order: Order::EarliestFirst, ..PageRequest::first(10) };
    let listed = tokio::time::timeout(Duration::from_secs(10), store.list_schedules("u", &page))
        .await
        .expect("listing schedules waits for no engine connection")
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].last_states, expected, "the states come with the schedule");
    let one = tokio::time::timeout(Duration::from_secs(10), store.get_schedule("u", "s"))
        .await
        .expect("reading a schedule waits for no engine connection")
        .expect("get")
        .expect("the schedule");
    assert_eq!(one.last_states, expected);

    drop(release);
    for read in engine_reads {
        read.await.expect("task").expect("engine read");
    }
}
