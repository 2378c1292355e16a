//! FIFO order and parallelism of queues (spec §12): the head holds the queue through its
//! retries, its delay and its callbacks; parallelism N is never exceeded; a `kill -9` of the
//! real binary mid-queue keeps the order and loses nothing.

use crate::durability::TernProcess;
use crate::harness::*;
use crate::queues::*;
use crate::timeline::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// The message id of request `index` to `path`.
fn id_of(receiver: &Receiver, path: &str, index: usize) -> String {
    receiver.requests_to(path)[index].header("upstash-message-id").expect("message id").to_string()
}

#[tokio::test]
async fn the_next_message_waits_for_the_head_through_its_retries_and_callbacks() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/head", vec![Reply::Status(500)]);
    receiver.script("/cb", vec![Reply::Hold(200)]);
    receiver.script("/fcb", vec![Reply::Status(500), Reply::Status(200)]);
    let (callback, failure_callback) = (receiver.url("/cb"), receiver.url("/fcb"));
    let headers = [
        ("Upstash-Retries", "2"),
        ("Upstash-Retry-Delay", "1000"),
        ("Upstash-Callback", callback.as_str()),
        ("Upstash-Callback-Retries", "0"),
        ("Upstash-Failure-Callback", failure_callback.as_str()),
        ("Upstash-Failure-Callback-Retries", "1"),
        ("Upstash-Failure-Callback-Retry-Delay", "1000"),
    ];
    let head = server.enqueue_ok("fifo", &receiver.url("/head"), &headers, "head").await;
    let second = server.enqueue_ok("fifo", &receiver.url("/second"), &[], "second").await;

    // Three failed attempts, a second apart; each one's callback hangs.
    receiver.wait_for("/head", 1).await;
    for retry in 1..=2 {
        expect_next_attempt_after(&server, &receiver, "/head", &head, retry, retry, SECOND).await;
        receiver.assert_count_stays(&server, "/second", 0).await;
    }
    server.wait_for_state(&head, "FAILED").await;
    receiver.wait_for("/cb", 3).await;
    receiver.wait_for("/fcb", 1).await;
    let failure_id = id_of(&receiver, "/fcb", 0);
    wait_for_count(&server, &failure_id, "RETRY", 1).await;
    // Failed, but its callbacks are still running: the queue waits.
    receiver.assert_count_stays(&server, "/second", 0).await;
    assert_eq!(server.log_states(&second).await, ["CREATED"]);

    receiver.release("/cb", 3);
    for index in 0..3 {
        server.wait_for_state(&id_of(&receiver, "/cb", index), "DELIVERED").await;
    }
    // The failure callback still waits for its retry.
    receiver.assert_count_stays(&server, "/second", 0).await;

    expect_request_after(&server, &receiver, "/fcb", 1, SECOND).await;
    server.wait_for_state(&failure_id, "DELIVERED").await;
    receiver.wait_for("/second", 1).await;
    assert_eq!(server.wait_for_state(&second, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);
    assert_eq!(receiver.requests_to("/head").len(), 3);
}

#[tokio::test]
async fn after_a_restart_the_queue_still_waits_for_every_callback_of_the_head() {
    let mut server = TestServer::start_with(|config| config.delivery.shutdown_grace = "100ms".into()).await;
    let receiver = Receiver::start().await;
    receiver.script("/head", vec![Reply::Status(500)]);
    receiver.script("/cb", vec![Reply::Hold(200)]);
    receiver.script("/fcb", vec![Reply::Hold(200)]);
    let (callback, failure_callback) = (receiver.url("/cb"), receiver.url("/fcb"));
    let headers = [
        ("Upstash-Retries", "0"),
        ("Upstash-Callback", callback.as_str()),
        ("Upstash-Failure-Callback", failure_callback.as_str()),
    ];
    let head = server.enqueue_ok("settle", &receiver.url("/head"), &headers, "head").await;
    let next = server.enqueue_ok("settle", &receiver.url("/next"), &[], "next").await;
    server.wait_for_state(&head, "FAILED").await;
    receiver.wait_for("/cb", 1).await;
    receiver.wait_for("/fcb", 1).await;

    // Both callbacks are cut off by the restart and attempted again after it.
    server.restart().await;
    receiver.wait_for("/cb", 2).await;
    receiver.wait_for("/fcb", 2).await;
    // The requests from before the restart (released first, oldest first) still wait in the
    // stopped engine, which can record nothing: let them go, so that every request the
    // receiver holds is one of this engine's.
    receiver.release("/cb", 1);
    receiver.release("/fcb", 1);
    receiver.assert_count_stays(&server, "/next", 0).await;
    // The callback ends; the failure callback still runs, so the queue still waits.
    receiver.release("/cb", 1);
    server.wait_for_state(&id_of(&receiver, "/cb", 1), "DELIVERED").await;
    receiver.assert_count_stays(&server, "/next", 0).await;
    assert_eq!(server.log_states(&next).await, ["CREATED"]);
    receiver.release("/fcb", 1);
    server.wait_for_state(&id_of(&receiver, "/fcb", 1), "DELIVERED").await;
    receiver.wait_for("/next", 1).await;
}

#[tokio::test]
async fn a_retrying_head_keeps_its_place_before_later_messages() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/flaky", vec![Reply::Status(503), Reply::Status(200)]);
    let head = server.enqueue_ok("keep", &receiver.url("/flaky"), &[("Upstash-Retry-Delay", "5000")], "head").await;
    receiver.wait_for("/flaky", 1).await;
    wait_for_count(&server, &head, "RETRY", 1).await;
    // Enqueued while the head waits for its retry: it must not overtake it.
    let later = server.enqueue_ok("keep", &receiver.url("/later"), &[], "later").await;
    receiver.assert_count_stays(&server, "/later", 0).await;
    expect_request_after(&server, &receiver, "/flaky", 1, Duration::from_secs(5)).await;
    server.wait_for_state(&head, "DELIVERED").await;
    receiver.wait_for("/later", 1).await;
    server.wait_for_state(&later, "DELIVERED").await;
}

#[tokio::test]
async fn a_delayed_head_holds_the_queue_until_it_is_due() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let head = server.enqueue_ok("hold", &receiver.url("/a"), &[("Upstash-Delay", "10s")], "head").await;
    let next = server.enqueue_ok("hold", &receiver.url("/b"), &[], "next").await;
    receiver.assert_count_stays(&server, "/b", 0).await;
    expect_request_after(&server, &receiver, "/a", 0, Duration::from_secs(10)).await;
    server.wait_for_state(&head, "DELIVERED").await;
    receiver.wait_for("/b", 1).await;
    server.wait_for_state(&next, "DELIVERED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_n_is_never_exceeded_under_load() {
    const TOTAL: usize = 40;
    let server = Arc::new(TestServer::start().await);
    let receiver = Receiver::start().await;
    receiver.script("/work", vec![Reply::Hold(200)]);
    upsert_ok(&server, json!({"queueName": "wide", "parallelism": 3, "paused": false})).await;
    // Four publishers at once.
    let ids = Arc::new(Mutex::new(Vec::new()));
    let publishers: Vec<_> = (0..4)
        .map(|worker| {
            let (server, receiver, ids) = (Arc::clone(&server), receiver.clone(), Arc::clone(&ids));
            tokio::spawn(async move {
                for i in 0..TOTAL / 4 {
                    let id = server.enqueue_ok("wide", &receiver.url("/work"), &[], &format!("{worker}-{i}")).await;
                    ids.lock().unwrap().push(id);
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    receiver.wait_in_flight("/work", 3).await;
    receiver.assert_count_stays(&server, "/work", 3).await;
    assert_eq!(queue_json(&server, "wide").await["lag"], TOTAL as u64);

    // Answers trickle in one or two at a time; the window refills to exactly three.
    let mut answered = 0;
    for step in 0..8 {
        let release = 1 + step % 2;
        receiver.release("/work", release);
        answered += release;
        receiver.wait_for("/work", answered + 3).await;
        receiver.wait_in_flight("/work", 3).await;
    }
    receiver.assert_count_stays(&server, "/work", answered + 3).await;
    assert_eq!(receiver.max_in_flight("/work"), 3);
    wait_for_lag(&server, "wide", (TOTAL - answered) as u64).await;

    // Wider: five at once.
    upsert_ok(&server, json!({"queueName": "wide", "parallelism": 5})).await;
    receiver.wait_in_flight("/work", 5).await;
    receiver.assert_count_stays(&server, "/work", answered + 5).await;
    assert_eq!(receiver.max_in_flight("/work"), 5);

    // Narrower: nothing starts until fewer than two run.
    upsert_ok(&server, json!({"queueName": "wide", "parallelism": 2})).await;
    receiver.reset_max_in_flight("/work");
    receiver.release("/work", 3);
    answered += 3;
    receiver.wait_in_flight("/work", 2).await;
    receiver.assert_count_stays(&server, "/work", answered + 2).await;
    receiver.release("/work", 1);
    answered += 1;
    receiver.wait_for("/work", answered + 2).await;
    receiver.wait_in_flight("/work", 2).await;

    // The rest drains two at a time.
    receiver.reset_max_in_flight("/work");
    receiver.release("/work", TOTAL);
    receiver.wait_for("/work", TOTAL).await;
    wait_for_lag(&server, "wide", 0).await;
    assert!(receiver.max_in_flight("/work") <= 2, "{} in flight at once", receiver.max_in_flight("/work"));
    let delivered: HashSet<String> = arrival_ids(&receiver, "/work").into_iter().collect();
    let enqueued: HashSet<String> = ids.lock().unwrap().iter().cloned().collect();
    assert_eq!(delivered, enqueued, "each message delivered once");
    receiver.assert_count_stays(&server, "/work", TOTAL).await;
}

/// The `Upstash-Message-Id` of every request the receiver got, in arrival order.
fn arrivals(receiver: &Receiver) -> Vec<String> {
    receiver.requests().iter().filter_map(|r| r.header("upstash-message-id").map(str::to_string)).collect()
}

/// Enqueues messages one after another (so enqueue order is acknowledgement order) until the
/// server stops answering; returns the acknowledged ids in order.
fn enqueue_in_order(url: String, destination: String) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let http = http_client();
    let ids = Arc::clone(&acknowledged);
    let publisher = tokio::spawn(async move {
        for i in 0.. {
            let request = http
                .post(format!("{url}/v2/enqueue/crash/{destination}"))
                .bearer_auth(TOKEN)
                .body(format!("message {i}"));
            let Ok(response) = request.send().await else { return };
            if !response.status().is_success() {
                return;
            }
            let Ok(json) = response.json::<Value>().await else { return };
            ids.lock().unwrap().push(json["messageId"].as_str().expect("messageId").to_string());
        }
    });
    (acknowledged, publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_survives_kill_9_mid_queue() {
    const KILL_AFTER: usize = 120;
    let data_dir = tempfile::tempdir().expect("data directory");
    let stderr = data_dir.path().join("tern-stderr.log");
    let data = data_dir.path().join("data");
    let receiver = Receiver::start().await;
    // A slow destination: the queue (parallelism 1) falls behind the publisher.
    receiver.script("/slow", vec![Reply::After(Duration::from_millis(15), 200)]);

    let mut first = TernProcess::start(&data, stderr.clone()).await;
    let (acknowledged, publisher) = enqueue_in_order(first.url.clone(), receiver.url("/slow"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < KILL_AFTER || receiver.requests().len() < 3 {
        assert!(!publisher.is_finished(), "publishing stopped; stderr:\n{}", first.stderr_text());
        assert!(tokio::time::Instant::now() < deadline, "publishing stalled; stderr:\n{}", first.stderr_text());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill();
    publisher.await.expect("publisher task");
    let acknowledged = acknowledged.lock().unwrap().clone();
    let before_kill = arrivals(&receiver);
    let arrived: HashSet<&String> = before_kill.iter().collect();
    let waiting = acknowledged.iter().filter(|id| !arrived.contains(id)).count();
    eprintln!(
        "queue crash test: {} enqueues acknowledged, {} requests before the kill, {waiting} never sent",
        acknowledged.len(),
        before_kill.len()
    );
    assert!(waiting > 0, "the kill must leave messages waiting in the queue");

    receiver.script("/slow", vec![Reply::Status(200)]);
    let second = TernProcess::start(&data, stderr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen: HashSet<String> = arrivals(&receiver).into_iter().collect();
        if acknowledged.iter().all(|id| seen.contains(id)) {
            break;
        }
        let missing = acknowledged.iter().filter(|id| !seen.contains(*id)).count();
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} acknowledged messages never arrived; stderr:\n{}",
            acknowledged.len(),
            second.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Arrivals in order: one at a time, each message's first arrival after every earlier
    // message's; only a message in flight at the kill may arrive again, right after.
    let all = arrivals(&receiver);
    let mut firsts: Vec<&String> = Vec::new();
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for (index, id) in all.iter().enumerate() {
        *counts.entry(id).or_default() += 1;
        if counts[id] == 1 {
            firsts.push(id);
        } else {
            assert_eq!(&all[index - 1], id, "{id} arrived again, but not right after its previous attempt");
        }
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!("queue crash test: {} requests in all, arrived again: {duplicated:?}", all.len());
    assert!(duplicated.len() <= 1, "only the message in flight at the kill may arrive twice: {duplicated:?}");
    assert_eq!(receiver.max_in_flight("/slow"), 1, "parallelism 1 before and after the crash");
    // The publish in flight at the kill may have been stored too: it comes last.
    assert_eq!(&firsts[..acknowledged.len()], acknowledged.iter().collect::<Vec<_>>(), "FIFO across the crash");
    assert!(firsts.len() <= acknowledged.len() + 1, "{} unexpected messages", firsts.len() - acknowledged.len());
}
