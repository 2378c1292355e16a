//! FIFO queues, their API (spec §5.2, §5.5, §6.4, §19): enqueue creates the queue, upsert, get,
//! list, pause, resume, delete, names and limits. Ordering and parallelism are in
//! `queue_order.rs`.

use crate::harness::*;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

pub async fn upsert(server: &TestServer, body: Value) -> (StatusCode, Value) {
    send(server.post("/v2/queues").json(&body)).await
}

pub async fn upsert_ok(server: &TestServer, body: Value) {
    let (status, json) = upsert(server, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "upsert {body}: {json}");
    assert_eq!(json, Value::Null, "upsert answers with an empty body");
}

pub async fn queue_json(server: &TestServer, name: &str) -> Value {
    get_ok(server, &format!("/v2/queues/{name}")).await
}

/// POSTs `/v2/queues/{name}/{action}` (pause, resume) and asserts an empty 200.
pub async fn queue_action(server: &TestServer, name: &str, action: &str) {
    let (status, json) = send(server.post(&format!("/v2/queues/{name}/{action}"))).await;
    assert_eq!((status, json), (StatusCode::OK, Value::Null), "{action} {name}");
}

/// The message ids of the requests `path` got, in arrival order.
pub fn arrival_ids(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver.requests_to(path).iter().map(|r| r.header("upstash-message-id").expect("message id").to_string()).collect()
}

/// Waits until the queue's `lag` is `lag` (lag drops asynchronously after a delivery).
pub async fn wait_for_lag(server: &TestServer, name: &str, lag: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let queue = queue_json(server, name).await;
        if queue["lag"] == lag {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "lag of {name} never became {lag}: {queue}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the message's log ends in `DELIVERED` or `CANCELED`; returns its states.
async fn wait_for_terminal(server: &TestServer, id: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let states = server.log_states(id).await;
        if states.last().is_some_and(|s| s == "DELIVERED" || s == "CANCELED") {
            return states;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never finished: {states:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().expect("an object").keys().map(String::as_str).collect()
}

#[tokio::test]
async fn enqueue_creates_the_queue_and_honours_the_publish_headers() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    expect_error(server.get("/v2/queues/created"), StatusCode::NOT_FOUND, "created").await;
    let created_at = server.now_ms();
    let headers = [
        ("Content-Type", "text/plain"),
        ("Upstash-Method", "PUT"),
        ("Upstash-Forward-X-Custom", "custom"),
        ("Upstash-Label", "queued"),
        ("Upstash-Retries", "1"),
    ];
    let (status, json) = server.enqueue("created", &receiver.url("/dest?x=1"), &headers, "queued body").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(keys(&json), BTreeSet::from(["messageId"]), "the publish response shape: {json}");
    let id = json["messageId"].as_str().unwrap().to_string();

    let request = receiver.wait_for("/dest", 1).await.remove(0);
    assert_eq!(request.method, Method::PUT);
    assert_eq!(request.target, "/dest?x=1");
    assert_eq!(request.header("x-custom"), Some("custom"));
    assert_eq!(request.header("content-type"), Some("text/plain"));
    assert_eq!(request.header("upstash-message-id"), Some(id.as_str()));
    assert_eq!(&request.body[..], b"queued body");
    server.wait_for_state(&id, "DELIVERED").await;

    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!(message["queueName"], "created");
    assert_eq!(message["maxRetries"], 1);
    assert_eq!(message["labels"], json!(["queued"]));
    let logs = get_ok(&server, &format!("/v2/logs?messageId={id}")).await;
    for entry in logs["events"].as_array().unwrap() {
        assert_eq!(entry["queueName"], "created", "{entry}");
    }
    let logs = get_ok(&server, "/v2/logs?queueName=created").await;
    assert_eq!(entry_ids(&logs).len(), 3, "CREATED, ACTIVE, DELIVERED of the one queued message: {logs}");

    // Created on the fly: parallelism 1, not paused.
    wait_for_lag(&server, "created", 0).await;
    let queue = queue_json(&server, "created").await;
    assert_eq!(queue["name"], "created");
    assert_eq!(queue["parallelism"], 1);
    assert_eq!(queue["paused"], false);
    assert_eq!(queue["createdAt"], created_at);
}

#[tokio::test]
async fn get_and_list_show_name_parallelism_lag_paused_and_times() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/held", vec![Reply::Hold(200)]);
    assert_eq!(get_ok(&server, "/v2/queues").await, json!([]));
    let first_created = server.now_ms();
    upsert_ok(&server, json!({"queueName": "b-wide", "parallelism": 2, "paused": false})).await;
    server.advance(Duration::from_secs(5));
    let second_created = server.now_ms();
    for i in 0..3 {
        server.enqueue_ok("a-auto", &receiver.url("/held"), &[], &format!("m{i}")).await;
    }
    receiver.wait_for("/held", 1).await;

    let list = get_ok(&server, "/v2/queues").await;
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 2, "{list:?}");
    let expected_keys = BTreeSet::from(["name", "parallelism", "lag", "paused", "createdAt", "updatedAt"]);
    for queue in list {
        assert_eq!(keys(queue), expected_keys, "{queue}");
        assert_no_nulls(queue);
    }
    let by_name = |name: &str| list.iter().find(|q| q["name"] == name).unwrap_or_else(|| panic!("{name} listed"));
    assert_eq!(
        by_name("b-wide"),
        &json!({"name": "b-wide", "parallelism": 2, "lag": 0, "paused": false,
                "createdAt": first_created, "updatedAt": first_created})
    );
    // Lag counts waiting and in-flight messages: one held, two waiting.
    assert_eq!(
        by_name("a-auto"),
        &json!({"name": "a-auto", "parallelism": 1, "lag": 3, "paused": false,
                "createdAt": second_created, "updatedAt": second_created})
    );
    assert_eq!(&queue_json(&server, "a-auto").await, by_name("a-auto"));
    // Queues belong to their user.
    let other = |path: &str| server.http.get(format!("{}{path}", server.url)).bearer_auth(OTHER_TOKEN);
    assert_eq!(send(other("/v2/queues")).await, (StatusCode::OK, json!([])));
    expect_error(other("/v2/queues/a-auto"), StatusCode::NOT_FOUND, "a-auto").await;

    receiver.release("/held", 1);
    receiver.wait_for("/held", 2).await;
    wait_for_lag(&server, "a-auto", 2).await;

    // An update keeps createdAt and moves updatedAt.
    server.advance(Duration::from_secs(7));
    upsert_ok(&server, json!({"queueName": "b-wide", "parallelism": 5, "paused": true})).await;
    let queue = queue_json(&server, "b-wide").await;
    assert_eq!(queue["parallelism"], 5);
    assert_eq!(queue["paused"], true);
    assert_eq!(queue["createdAt"], first_created);
    assert_eq!(queue["updatedAt"], server.now_ms());

    receiver.release("/held", 2);
    receiver.wait_for("/held", 3).await;
    wait_for_lag(&server, "a-auto", 0).await;
}

#[tokio::test]
async fn a_paused_queue_accepts_but_delivers_nothing_until_resumed() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    upsert_ok(&server, json!({"queueName": "p", "parallelism": 1, "paused": true})).await;
    assert_eq!(queue_json(&server, "p").await["paused"], true);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(server.enqueue_ok("p", &receiver.url("/p"), &[], &format!("m{i}")).await);
    }
    server.advance(Duration::from_secs(60));
    receiver.assert_count_stays(&server, "/p", 0).await;
    assert_eq!(queue_json(&server, "p").await["lag"], 3);
    for id in &ids {
        assert_eq!(server.log_states(id).await, ["CREATED"]);
    }
    // Pausing again is harmless.
    queue_action(&server, "p", "pause").await;
    receiver.assert_count_stays(&server, "/p", 0).await;

    queue_action(&server, "p", "resume").await;
    receiver.wait_for("/p", 3).await;
    assert_eq!(arrival_ids(&receiver, "/p"), ids, "resume continues in enqueue order");
    queue_action(&server, "p", "resume").await;
    assert_eq!(queue_json(&server, "p").await["paused"], false);
    wait_for_lag(&server, "p", 0).await;

    // Paused while the head is in flight: the head finishes, the next one waits.
    receiver.script("/p", vec![Reply::Hold(200)]);
    let head = server.enqueue_ok("p", &receiver.url("/p"), &[], "head").await;
    let next = server.enqueue_ok("p", &receiver.url("/p"), &[], "next").await;
    receiver.wait_for("/p", 4).await;
    queue_action(&server, "p", "pause").await;
    receiver.release("/p", 1);
    server.wait_for_state(&head, "DELIVERED").await;
    receiver.assert_count_stays(&server, "/p", 4).await;
    assert_eq!(queue_json(&server, "p").await["lag"], 1);
    queue_action(&server, "p", "resume").await;
    receiver.release("/p", 1);
    receiver.wait_for("/p", 5).await;
    server.wait_for_state(&next, "DELIVERED").await;
}

#[tokio::test]
async fn a_paused_queue_holds_messages_that_waited_for_their_flow_control_key() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (status, _) = send(server.post("/v2/flowControl/qk/pause")).await;
    assert_eq!(status, StatusCode::OK);
    upsert_ok(&server, json!({"queueName": "qf", "parallelism": 3})).await;
    let flow = [("Upstash-Flow-Control-Key", "qk"), ("Upstash-Flow-Control-Value", "parallelism=5")];
    for i in 0..3 {
        server.enqueue_ok("qf", &receiver.url("/qf"), &flow, &i.to_string()).await;
    }
    // Past the queue's window, waiting for the key.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while get_ok(&server, "/v2/flowControl/qk").await["waitListSize"] != 3 {
        assert!(tokio::time::Instant::now() < deadline, "the messages never reached the key's waitlist");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    queue_action(&server, "qf", "pause").await;
    assert_eq!(send(server.post("/v2/flowControl/qk/resume")).await.0, StatusCode::OK);
    receiver.assert_count_stays(&server, "/qf", 0).await;
    // Resumed with a narrower window: one at a time.
    upsert_ok(&server, json!({"queueName": "qf", "parallelism": 1})).await;
    receiver.wait_for("/qf", 3).await;
    assert_eq!(receiver.max_in_flight("/qf"), 1);
}

#[tokio::test]
async fn an_upsert_resumes_a_paused_queue_unless_it_says_paused() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    upsert_ok(&server, json!({"queueName": "u", "parallelism": 1})).await;
    queue_action(&server, "u", "pause").await;
    let first = server.enqueue_ok("u", &receiver.url("/u"), &[], "first").await;
    upsert_ok(&server, json!({"queueName": "u", "parallelism": 1, "paused": true})).await;
    receiver.assert_count_stays(&server, "/u", 0).await;
    assert_eq!(queue_json(&server, "u").await["paused"], true);

    // What the SDKs send: paused false.
    upsert_ok(&server, json!({"queueName": "u", "parallelism": 1, "paused": false})).await;
    receiver.wait_for("/u", 1).await;
    server.wait_for_state(&first, "DELIVERED").await;

    // Without the field at all.
    queue_action(&server, "u", "pause").await;
    let second = server.enqueue_ok("u", &receiver.url("/u"), &[], "second").await;
    receiver.assert_count_stays(&server, "/u", 1).await;
    upsert_ok(&server, json!({"queueName": "u", "parallelism": 2})).await;
    receiver.wait_for("/u", 2).await;
    server.wait_for_state(&second, "DELIVERED").await;
    let queue = queue_json(&server, "u").await;
    assert_eq!((queue["paused"].clone(), queue["parallelism"].clone()), (json!(false), json!(2)));
}

#[tokio::test]
async fn delete_cancels_pending_messages_and_is_idempotent() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/old", vec![Reply::Hold(200)]);
    upsert_ok(&server, json!({"queueName": "d", "parallelism": 2})).await;
    let running: Vec<String> = vec![
        server.enqueue_ok("d", &receiver.url("/old"), &[], "run 1").await,
        server.enqueue_ok("d", &receiver.url("/old"), &[], "run 2").await,
    ];
    let waiting = server.enqueue_ok("d", &receiver.url("/old"), &[], "waiting").await;
    let delayed = server.enqueue_ok("d", &receiver.url("/old"), &[("Upstash-Delay", "1h")], "delayed").await;
    receiver.wait_for("/old", 2).await;
    receiver.assert_count_stays(&server, "/old", 2).await;
    for id in &running {
        // Logged once the attempt has run a while (a short one's is logged with its outcome).
        server.wait_for_state(id, "ACTIVE").await;
    }

    let (status, json) = send(server.delete("/v2/queues/d")).await;
    assert_eq!((status, json), (StatusCode::OK, Value::Null));
    for id in [&waiting, &delayed] {
        assert_eq!(server.log_states(id).await, ["CREATED", "CANCEL_REQUESTED", "CANCELED"], "{id}");
    }
    expect_error(server.get("/v2/queues/d"), StatusCode::NOT_FOUND, "d").await;
    assert_eq!(get_ok(&server, "/v2/queues").await, json!([]));
    // Idempotent, also for a queue that never existed.
    for name in ["d", "never-was"] {
        let (status, json) = send(server.delete(&format!("/v2/queues/{name}"))).await;
        assert_eq!((status, json), (StatusCode::OK, Value::Null), "delete {name} again");
    }

    // The same name, enqueued again while the old messages still run: a new queue with the
    // defaults (parallelism 1, not paused) that starts once the old messages are done.
    let new: Vec<String> = vec![
        server.enqueue_ok("d", &receiver.url("/new"), &[], "new 1").await,
        server.enqueue_ok("d", &receiver.url("/new"), &[], "new 2").await,
    ];
    let queue = queue_json(&server, "d").await;
    assert_eq!((queue["parallelism"].clone(), queue["paused"].clone()), (json!(1), json!(false)), "{queue}");
    receiver.assert_count_stays(&server, "/new", 0).await;
    receiver.release("/old", 2);
    for id in &running {
        // The running attempt was not aborted; it got its answer (tern records it as delivered).
        let states = wait_for_terminal(&server, id).await;
        assert_eq!(states[..3], ["CREATED", "ACTIVE", "CANCEL_REQUESTED"], "{id} was running: {states:?}");
    }
    receiver.wait_for("/new", 2).await;
    assert_eq!(arrival_ids(&receiver, "/new"), new);
    server.advance(DAY);
    receiver.assert_count_stays(&server, "/old", 2).await;
}

#[tokio::test]
async fn invalid_queue_names_are_rejected() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/never");
    for name in ["has%20space", "caf%C3%A9", "semi;colon", "star*"] {
        expect_error(server.post(&format!("/v2/enqueue/{name}/{url}")).body("x"), StatusCode::BAD_REQUEST, "queue")
            .await;
        expect_error(server.get(&format!("/v2/queues/{name}")), StatusCode::BAD_REQUEST, "queue").await;
        expect_error(server.delete(&format!("/v2/queues/{name}")), StatusCode::BAD_REQUEST, "queue").await;
        expect_error(server.post(&format!("/v2/queues/{name}/pause")), StatusCode::BAD_REQUEST, "queue").await;
    }
    for body in [
        json!({"queueName": "has space"}),
        json!({"queueName": "a/b"}),
        json!({"queueName": "ü"}),
        json!({"queueName": ""}),
        json!({"parallelism": 2}),
        json!({"queueName": "zero", "parallelism": 0}),
        json!({"queueName": "negative", "parallelism": -1}),
    ] {
        let (status, json) = upsert(&server, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{json}");
    }
    // Letters, digits, '.', '_' and '-' are fine.
    upsert_ok(&server, json!({"queueName": "Ok_name-1.2", "parallelism": 1})).await;
    server.enqueue_ok("Ok_name-1.2", &receiver.url("/fine"), &[], "fine").await;
    receiver.wait_for("/fine", 1).await;
    let names: Vec<Value> =
        get_ok(&server, "/v2/queues").await.as_array().unwrap().iter().map(|q| q["name"].clone()).collect();
    assert_eq!(names, [json!("Ok_name-1.2")], "nothing else was created");
    receiver.assert_count_stays(&server, "/never", 0).await;
}

#[tokio::test]
async fn queue_count_and_parallelism_limits_answer_412() {
    let server = TestServer::start_with(|config| {
        config.limits.max_queues = 2;
        config.limits.max_queue_parallelism = 3;
    })
    .await;
    let receiver = Receiver::start().await;
    upsert_ok(&server, json!({"queueName": "one", "parallelism": 1})).await;
    server.enqueue_ok("two", &receiver.url("/two"), &[], "auto-created").await;
    let (status, json) = upsert(&server, json!({"queueName": "three"})).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{json}");
    let (status, json) = server.enqueue("three", &receiver.url("/three"), &[], "no room").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{json}");
    expect_error(server.get("/v2/queues/three"), StatusCode::NOT_FOUND, "three").await;

    // Existing queues can still be updated and used at the count limit, up to max parallelism.
    upsert_ok(&server, json!({"queueName": "one", "parallelism": 3, "paused": false})).await;
    let (status, json) = upsert(&server, json!({"queueName": "one", "parallelism": 4})).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{json}");
    assert_eq!(queue_json(&server, "one").await["parallelism"], 3);
    server.enqueue_ok("one", &receiver.url("/one"), &[], "still fine").await;
    receiver.wait_for("/one", 1).await;

    // Deleting one makes room.
    assert_eq!(send(server.delete("/v2/queues/two")).await.0, StatusCode::OK);
    server.enqueue_ok("three", &receiver.url("/three"), &[], "now").await;
    receiver.wait_for("/three", 1).await;
    receiver.assert_count_stays(&server, "/three", 1).await;
}
