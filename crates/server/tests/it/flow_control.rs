//! Flow control (spec §4.2, §5.10, §6.7, §13): parallelism and rate limits carried by publish,
//! enqueue and batch items, measured at the receiver (concurrency; arrivals stamped with the
//! server's manual clock); live counters; pause, resume, pin, unpin, resetRate; retries; one
//! key never delays another; the user-wide parallelism ceiling.

use crate::harness::*;
use crate::support::*;
use crate::timeline::wait_for_count;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

fn flow_headers<'a>(key: &'a str, value: &'a str) -> [(&'a str, &'a str); 2] {
    [("Upstash-Flow-Control-Key", key), ("Upstash-Flow-Control-Value", value)]
}

async fn flow(server: &TestServer, key: &str) -> Value {
    get_ok(server, &format!("/v2/flowControl/{key}")).await
}

/// Waits until the key's info satisfies `check` (counters follow the dispatcher).
async fn wait_for_flow(server: &TestServer, key: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let info = flow(server, key).await;
        if check(&info) {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "{key}: never {what}: {info}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_waitlist(server: &TestServer, key: &str, size: u64) -> Value {
    wait_for_flow(server, key, &format!("waitListSize {size}"), |info| info["waitListSize"] == size).await
}

/// POSTs `/v2/flowControl/{key}/{action}` and asserts an empty 200.
async fn flow_action(server: &TestServer, key: &str, action: &str) {
    let (status, json) = send(server.post(&format!("/v2/flowControl/{key}/{action}"))).await;
    assert_eq!((status, json), (StatusCode::OK, Value::Null), "{action} {key}");
}

/// Posts a batch and asserts a 200.
async fn batch_ok(server: &TestServer, items: Value) -> Value {
    let (status, json) = send(server.post("/v2/batch").json(&items)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

#[tokio::test]
async fn parallelism_is_never_exceeded_across_publish_enqueue_and_batch() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/fc", vec![Reply::Hold(200)]);
    let url = receiver.url("/fc");
    let headers = flow_headers("par", "parallelism=2");
    for i in 0..4 {
        server.publish_ok(&url, &headers, &format!("published {i}")).await;
        server.enqueue_ok(&format!("q{i}"), &url, &headers, &format!("enqueued {i}")).await;
    }
    let items: Vec<Value> = (0..4)
        .map(|i| {
            json!({"destination": url, "body": format!("batched {i}"),
                   "headers": {"Upstash-Flow-Control-Key": "par", "Upstash-Flow-Control-Value": "parallelism=2"}})
        })
        .collect();
    batch_ok(&server, Value::Array(items)).await;

    receiver.wait_in_flight("/fc", 2).await;
    receiver.assert_count_stays(&server, "/fc", 2).await;
    let info = wait_for_waitlist(&server, "par", 10).await;
    assert_eq!((info["parallelismMax"].clone(), info["parallelismCount"].clone()), (json!(2), json!(2)), "{info}");
    for answered in 1..=10 {
        receiver.release("/fc", 1);
        receiver.wait_for("/fc", answered + 2).await;
        receiver.wait_in_flight("/fc", 2).await;
    }
    receiver.release("/fc", 2);
    let bodies: BTreeSet<String> =
        receiver.requests_to("/fc").iter().map(|r| String::from_utf8_lossy(&r.body).to_string()).collect();
    assert_eq!(bodies.len(), 12, "every message delivered once: {bodies:?}");
    assert!(bodies.contains("published 3") && bodies.contains("enqueued 3") && bodies.contains("batched 3"));
    assert_eq!(receiver.max_in_flight("/fc"), 2);
    wait_for_flow(&server, "par", "idle", |info| info["parallelismCount"] == 0 && info["waitListSize"] == 0).await;
}

#[tokio::test]
async fn rate_is_never_exceeded_in_any_window() {
    const RATE: usize = 3;
    const PERIOD_MS: i64 = 10_000;
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let url = receiver.url("/rate");
    let headers = flow_headers("rate", "rate=3, period=10s");
    let started = server.now_ms();
    for i in 0..4 {
        server.publish_ok(&url, &headers, &format!("p{i}")).await;
        server.enqueue_ok(&format!("rate-queue-{i}"), &url, &headers, "").await;
    }
    let item = json!({"destination": url, "headers": {"Upstash-Flow-Control-Key": "rate",
                      "Upstash-Flow-Control-Value": "rate=3, period=10s"}});
    batch_ok(&server, json!([item, item])).await;
    let mut total = 10;
    // The first window starts at once.
    receiver.wait_for("/rate", RATE).await;
    receiver.assert_count_stays(&server, "/rate", RATE).await;
    let info = wait_for_waitlist(&server, "rate", 7).await;
    assert_eq!(info["rateMax"], 3);
    assert_eq!(info["rateCount"], 3);
    assert_eq!(info["ratePeriod"], 10);
    assert_eq!(info["ratePeriodStart"], started / 1000);
    assert_eq!(info["parallelismMax"], 0, "no parallelism limit: {info}");

    // Steps that do not line up with the windows; more messages arrive mid-window. A new
    // window opens every 10 s (the first start after the last window ended) and takes three.
    for step in 1..=16 {
        server.advance(Duration::from_millis(2_500));
        if step == 2 {
            for i in 0..4 {
                server.publish_ok(&url, &headers, &format!("late {i}")).await;
            }
            total += 4;
        }
        let windows = 1 + step / 4;
        let expected = (RATE * windows).min(total);
        receiver.wait_for("/rate", expected).await;
        receiver.assert_count_stays(&server, "/rate", expected).await;
    }
    let mut stamps: Vec<i64> = receiver.requests_to("/rate").iter().map(|r| r.at_ms.expect("stamped")).collect();
    stamps.sort();
    assert_eq!(stamps.len(), total);
    for (i, start) in stamps.iter().enumerate() {
        let in_window = stamps[i..].iter().take_while(|t| **t < start + PERIOD_MS).count();
        assert!(in_window <= RATE, "{in_window} starts within {PERIOD_MS} ms from {start}: {stamps:?}");
    }
    // Full windows: 14 messages in 5 windows, one every 10 s.
    assert_eq!(stamps.last().unwrap() - stamps[0], 4 * PERIOD_MS, "{stamps:?}");
}

#[tokio::test]
async fn a_key_is_known_once_published_and_shows_live_counters() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/held", vec![Reply::Hold(200)]);
    expect_error(server.get("/v2/flowControl/live-a"), StatusCode::NOT_FOUND, "Flow Control key not found").await;
    let url = receiver.url("/held");
    let id = server.publish_ok(&url, &flow_headers("live-a", "parallelism=1, rate=5, period=1m"), "a").await;
    // Known right after the publish returned, with the message's settings.
    let info = flow(&server, "live-a").await;
    let expected_keys = BTreeSet::from([
        "flowControlKey",
        "waitListSize",
        "parallelismMax",
        "parallelismCount",
        "rateMax",
        "rateCount",
        "ratePeriod",
        "ratePeriodStart",
        "isPaused",
        "isPinnedParallelism",
        "isPinnedRate",
    ]);
    assert_eq!(info.as_object().unwrap().keys().map(String::as_str).collect::<BTreeSet<_>>(), expected_keys);
    assert_eq!(info["flowControlKey"], "live-a");
    assert_eq!((info["parallelismMax"].clone(), info["rateMax"].clone()), (json!(1), json!(5)));
    assert_eq!(info["ratePeriod"], 60);
    assert_eq!((info["isPaused"].clone(), info["isPinnedParallelism"].clone()), (json!(false), json!(false)));
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!(message["flowControlKey"], "live-a");
    assert_eq!((message["parallelism"].clone(), message["rate"].clone()), (json!(1), json!(5)));
    assert_eq!(message["period"], 60);

    receiver.wait_for("/held", 1).await;
    for body in ["b", "c"] {
        server.publish_ok(&url, &flow_headers("live-a", "parallelism=1, rate=5, period=1m"), body).await;
    }
    let info = wait_for_waitlist(&server, "live-a", 2).await;
    assert_eq!((info["parallelismCount"].clone(), info["rateCount"].clone()), (json!(1), json!(1)));
    assert_eq!(info["ratePeriodStart"], server.now_ms() / 1000);
    receiver.release("/held", 1);
    receiver.wait_for("/held", 2).await;
    let info = wait_for_waitlist(&server, "live-a", 1).await;
    assert_eq!((info["parallelismCount"].clone(), info["rateCount"].clone()), (json!(1), json!(2)));

    // A rate-only key: no parallelism, default period.
    server.publish_ok(&receiver.url("/other"), &flow_headers("live-b", "rate=7"), "b").await;
    let info = flow(&server, "live-b").await;
    assert_eq!((info["parallelismMax"].clone(), info["rateMax"].clone()), (json!(0), json!(7)));
    assert_eq!(info["ratePeriod"], 1);

    let list = get_ok(&server, "/v2/flowControl").await;
    let keys: BTreeSet<&str> = list.as_array().unwrap().iter().map(|i| i["flowControlKey"].as_str().unwrap()).collect();
    assert_eq!(keys, BTreeSet::from(["live-a", "live-b"]));
    let found = get_ok(&server, "/v2/flowControl?search=e-b").await;
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0], flow(&server, "live-b").await);
    assert_eq!(get_ok(&server, "/v2/flowControl?search=nothing").await, json!([]));
    // Keys belong to their user.
    let other = |path: &str| server.http.get(format!("{}{path}", server.url)).bearer_auth(OTHER_TOKEN);
    assert_eq!(send(other("/v2/flowControl")).await, (StatusCode::OK, json!([])));
    expect_error(other("/v2/flowControl/live-a"), StatusCode::NOT_FOUND, "Flow Control key not found").await;
    receiver.release("/held", 2);
}

#[tokio::test]
async fn a_paused_key_starts_nothing_until_resumed() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/p", vec![Reply::Hold(200)]);
    let url = receiver.url("/p");
    let headers = flow_headers("pz", "parallelism=5");
    server.publish_ok(&url, &headers, "running").await;
    receiver.wait_for("/p", 1).await;
    flow_action(&server, "pz", "pause").await;
    flow_action(&server, "pz", "pause").await;
    assert_eq!(flow(&server, "pz").await["isPaused"], true);
    for i in 0..3 {
        server.publish_ok(&url, &headers, &format!("waiting {i}")).await;
    }
    wait_for_waitlist(&server, "pz", 3).await;
    // The running attempt ends; the free slots stay unused while paused.
    receiver.release("/p", 1);
    wait_for_flow(&server, "pz", "idle", |info| info["parallelismCount"] == 0).await;
    server.advance(SECOND * 60);
    receiver.assert_count_stays(&server, "/p", 1).await;

    flow_action(&server, "pz", "resume").await;
    receiver.wait_for("/p", 4).await;
    flow_action(&server, "pz", "resume").await;
    let info = wait_for_waitlist(&server, "pz", 0).await;
    assert_eq!((info["isPaused"].clone(), info["parallelismCount"].clone()), (json!(false), json!(3)));
    receiver.release("/p", 3);

    for action in ["pause", "resume", "resetRate", "pin?rate=1", "unpin?rate=true"] {
        let (status, json) = send(server.post(&format!("/v2/flowControl/%20/{action}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action} of an empty key: {json}");
    }

    // Pausing a key nobody used yet makes it known, paused.
    flow_action(&server, "fresh", "pause").await;
    let info = flow(&server, "fresh").await;
    assert_eq!((info["isPaused"].clone(), info["waitListSize"].clone()), (json!(true), json!(0)));
    server.publish_ok(&receiver.url("/fresh"), &flow_headers("fresh", "rate=10"), "held back").await;
    wait_for_waitlist(&server, "fresh", 1).await;
    receiver.assert_count_stays(&server, "/fresh", 0).await;
    flow_action(&server, "fresh", "resume").await;
    receiver.wait_for("/fresh", 1).await;
}

#[tokio::test]
async fn a_pin_overrides_what_messages_carry_until_unpinned() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/pin", vec![Reply::Hold(200)]);
    let url = receiver.url("/pin");
    let narrow = flow_headers("pin", "parallelism=1");
    for body in ["a", "b"] {
        server.publish_ok(&url, &narrow, body).await;
    }
    receiver.wait_for("/pin", 1).await;
    wait_for_waitlist(&server, "pin", 1).await;

    flow_action(&server, "pin", "pin?parallelism=3&rate=20&period=120").await;
    let info = flow(&server, "pin").await;
    assert_eq!((info["parallelismMax"].clone(), info["rateMax"].clone()), (json!(3), json!(20)), "{info}");
    assert_eq!(info["ratePeriod"], 120);
    assert_eq!((info["isPinnedParallelism"].clone(), info["isPinnedRate"].clone()), (json!(true), json!(true)));
    receiver.wait_in_flight("/pin", 2).await;
    // Messages carrying parallelism 1 no longer narrow a pinned key.
    for body in ["c", "d"] {
        server.publish_ok(&url, &narrow, body).await;
    }
    receiver.wait_in_flight("/pin", 3).await;
    receiver.assert_count_stays(&server, "/pin", 3).await;
    assert_eq!(flow(&server, "pin").await["parallelismMax"], 3);

    // Unpinned, the pinned value stays until a message brings other settings.
    flow_action(&server, "pin", "unpin?parallelism=true").await;
    let info = flow(&server, "pin").await;
    assert_eq!((info["isPinnedParallelism"].clone(), info["isPinnedRate"].clone()), (json!(false), json!(true)));
    assert_eq!(info["parallelismMax"], 3);
    for body in ["e", "f", "g"] {
        server.publish_ok(&url, &flow_headers("pin", "parallelism=2, rate=1"), body).await;
    }
    let info = flow(&server, "pin").await;
    assert_eq!((info["parallelismMax"].clone(), info["rateMax"].clone()), (json!(2), json!(20)), "rate still pinned");
    flow_action(&server, "pin", "unpin?rate=true&parallelism=false").await;
    let info = flow(&server, "pin").await;
    assert_eq!((info["isPinnedParallelism"].clone(), info["isPinnedRate"].clone()), (json!(false), json!(false)));
    // Now at most two run: of four waiting, two start once the three running ones end.
    wait_for_waitlist(&server, "pin", 4).await;
    receiver.release("/pin", 3);
    receiver.wait_for("/pin", 5).await;
    receiver.wait_in_flight("/pin", 2).await;
    receiver.assert_count_stays(&server, "/pin", 5).await;
    receiver.release("/pin", 4);
    receiver.wait_for("/pin", 7).await;

    for bad in ["pin?parallelism=0", "pin?rate=abc", "pin?period=-1", "pin?speed=3", "pin", "unpin?rate=maybe"] {
        let (status, json) = send(server.post(&format!("/v2/flowControl/pin/{bad}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {json}");
    }
}

#[tokio::test]
async fn pin_and_reset_rate_start_a_fresh_rate_window() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let url = receiver.url("/rr");
    for i in 0..6 {
        server.publish_ok(&url, &flow_headers("rr", "rate=2, period=1h"), &i.to_string()).await;
    }
    receiver.wait_for("/rr", 2).await;
    receiver.assert_count_stays(&server, "/rr", 2).await;
    wait_for_waitlist(&server, "rr", 4).await;
    server.advance(SECOND * 60);

    flow_action(&server, "rr", "resetRate").await;
    receiver.wait_for("/rr", 4).await;
    receiver.assert_count_stays(&server, "/rr", 4).await;
    let info = wait_for_waitlist(&server, "rr", 2).await;
    assert_eq!((info["rateCount"].clone(), info["ratePeriodStart"].clone()), (json!(2), json!(server.now_ms() / 1000)));

    server.advance(SECOND * 60);
    flow_action(&server, "rr", "pin?rate=1").await;
    receiver.wait_for("/rr", 5).await;
    receiver.assert_count_stays(&server, "/rr", 5).await;
    let info = flow(&server, "rr").await;
    assert_eq!((info["rateMax"].clone(), info["rateCount"].clone()), (json!(1), json!(1)));
    assert_eq!(info["ratePeriod"], 3600, "pinning the rate alone keeps the period");
    // The last one waits for the pinned window to end.
    server.advance(SECOND * 3599);
    receiver.assert_count_stays(&server, "/rr", 5).await;
    server.advance(SECOND);
    receiver.wait_for("/rr", 6).await;
}

#[tokio::test]
async fn retries_re_enter_flow_control() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/flaky", vec![Reply::Status(500), Reply::Status(200)]);
    receiver.script("/held", vec![Reply::Hold(200)]);
    let headers = flow_headers("retry", "parallelism=1");
    let mut flaky_headers = headers.to_vec();
    flaky_headers.push(("Upstash-Retry-Delay", "2000"));
    let flaky = server.publish_ok(&receiver.url("/flaky"), &flaky_headers, "flaky").await;
    receiver.wait_for("/flaky", 1).await;
    wait_for_count(&server, &flaky, "RETRY", 1).await;
    // While the flaky message waits for its retry, its slot serves another message.
    server.publish_ok(&receiver.url("/held"), &headers, "held").await;
    receiver.wait_for("/held", 1).await;
    server.advance(SECOND * 3);
    // Due, but the key's only slot is taken: the retry waits in the waitlist.
    wait_for_waitlist(&server, "retry", 1).await;
    receiver.assert_count_stays(&server, "/flaky", 1).await;
    receiver.release("/held", 1);
    receiver.wait_for("/flaky", 2).await;
    server.wait_for_state(&flaky, "DELIVERED").await;
}

#[tokio::test]
async fn a_paused_or_saturated_key_does_not_delay_other_messages() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/busy", vec![Reply::Hold(200)]);
    flow_action(&server, "stuck", "pause").await;
    for i in 0..20 {
        server.publish_ok(&receiver.url("/stuck"), &flow_headers("stuck", "parallelism=10"), &i.to_string()).await;
        server.publish_ok(&receiver.url("/busy"), &flow_headers("busy", "parallelism=1"), &i.to_string()).await;
    }
    receiver.wait_for("/busy", 1).await;
    for i in 0..5 {
        server.publish_ok(&receiver.url("/free"), &flow_headers("free", "parallelism=10"), &i.to_string()).await;
        server.publish_ok(&receiver.url("/plain"), &[], &i.to_string()).await;
        server.enqueue_ok("fair", &receiver.url("/queued"), &[], &i.to_string()).await;
    }
    receiver.wait_for("/free", 5).await;
    receiver.wait_for("/plain", 5).await;
    receiver.wait_for("/queued", 5).await;
    wait_for_waitlist(&server, "stuck", 20).await;
    wait_for_waitlist(&server, "busy", 19).await;
    receiver.assert_count_stays(&server, "/stuck", 0).await;
    receiver.assert_count_stays(&server, "/busy", 1).await;
    receiver.release("/busy", 20);
}

#[tokio::test]
async fn global_parallelism_is_a_ceiling_per_user() {
    let server = TestServer::start_with(|config| config.delivery.user_parallelism = 3).await;
    let receiver = Receiver::start().await;
    receiver.script("/g", vec![Reply::Hold(200)]);
    assert_eq!(get_ok(&server, "/v2/globalParallelism").await, json!({"parallelismMax": 3, "parallelismCount": 0}));
    for i in 0..4 {
        server.publish_ok(&receiver.url("/g"), &[], &i.to_string()).await;
        server.publish_ok(&receiver.url("/g"), &flow_headers("wide", "parallelism=10"), &i.to_string()).await;
    }
    receiver.wait_in_flight("/g", 3).await;
    receiver.assert_count_stays(&server, "/g", 3).await;
    assert_eq!(get_ok(&server, "/v2/globalParallelism").await, json!({"parallelismMax": 3, "parallelismCount": 3}));
    // Another user's deliveries do not count against this one's.
    let other = server.http.get(format!("{}/v2/globalParallelism", server.url)).bearer_auth(OTHER_TOKEN);
    let (status, other) = send(other).await;
    assert_eq!((status, other), (StatusCode::OK, json!({"parallelismMax": 3, "parallelismCount": 0})));
    for answered in 1..=5 {
        receiver.release("/g", 1);
        receiver.wait_for("/g", answered + 3).await;
        receiver.wait_in_flight("/g", 3).await;
    }
    receiver.release("/g", 3);
    assert_eq!(receiver.max_in_flight("/g"), 3);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while get_ok(&server, "/v2/globalParallelism").await["parallelismCount"] != 0 {
        assert!(tokio::time::Instant::now() < deadline, "deliveries never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pauses_and_pins_of_keys_and_queues_survive_a_restart() {
    let mut server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/key", vec![Reply::Hold(200)]);
    flow_action(&server, "kept", "pause").await;
    flow_action(&server, "kept", "pin?parallelism=2&rate=9&period=30").await;
    let (status, _) =
        send(server.post("/v2/queues").json(&json!({"queueName": "kept-q", "parallelism": 4, "paused": true}))).await;
    assert_eq!(status, StatusCode::OK);
    for i in 0..3 {
        server.publish_ok(&receiver.url("/key"), &flow_headers("kept", "parallelism=1"), &i.to_string()).await;
    }
    server.enqueue_ok("kept-q", &receiver.url("/queue"), &[], "queued").await;
    wait_for_waitlist(&server, "kept", 3).await;
    let queue_before = get_ok(&server, "/v2/queues/kept-q").await;

    server.restart().await;

    assert_eq!(get_ok(&server, "/v2/queues/kept-q").await, queue_before);
    let info = wait_for_waitlist(&server, "kept", 3).await;
    assert_eq!(info["isPaused"], true);
    assert_eq!((info["parallelismMax"].clone(), info["rateMax"].clone()), (json!(2), json!(9)));
    assert_eq!((info["isPinnedParallelism"].clone(), info["isPinnedRate"].clone()), (json!(true), json!(true)));
    assert_eq!(info["ratePeriod"], 30);
    receiver.assert_count_stays(&server, "/key", 0).await;
    receiver.assert_count_stays(&server, "/queue", 0).await;

    // The pinned parallelism (2), not the messages' (1).
    flow_action(&server, "kept", "resume").await;
    receiver.wait_in_flight("/key", 2).await;
    receiver.assert_count_stays(&server, "/key", 2).await;
    receiver.release("/key", 3);
    let (status, _) = send(server.post("/v2/queues/kept-q/resume")).await;
    assert_eq!(status, StatusCode::OK);
    receiver.wait_for("/queue", 1).await;
}

#[tokio::test]
async fn a_restart_continues_the_open_rate_window() {
    let mut server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let url = receiver.url("/windowed");
    for i in 0..4 {
        server.publish_ok(&url, &flow_headers("windowed", "rate=2, period=1h"), &i.to_string()).await;
    }
    let opened = server.now_ms();
    for request in receiver.wait_for("/windowed", 2).await {
        server.wait_for_state(request.header("upstash-message-id").unwrap(), "DELIVERED").await;
    }
    wait_for_waitlist(&server, "windowed", 2).await;

    // Ten minutes later the hour's two starts are still spent: a restart opens no new window.
    server.restart_after(Duration::from_secs(600)).await;
    let info = wait_for_waitlist(&server, "windowed", 2).await;
    assert_eq!((info["rateCount"].clone(), info["ratePeriodStart"].clone()), (json!(2), json!(opened / 1000)));
    receiver.assert_count_stays(&server, "/windowed", 2).await;
    server.advance(Duration::from_secs(50 * 60 - 1));
    receiver.assert_count_stays(&server, "/windowed", 2).await;
    server.advance(SECOND);
    let stamps: Vec<i64> = receiver.wait_for("/windowed", 4).await.iter().map(|r| r.at_ms.unwrap()).collect();
    assert_eq!(&stamps[2..], [opened + 3_600_000; 2], "the next window opens when the hour is over");
}

#[tokio::test]
async fn idle_keys_are_forgotten_after_a_day_unless_paused_or_pinned() {
    let mut server = TestServer::start().await;
    let receiver = Receiver::start().await;
    for key in ["idle", "paused", "pinned"] {
        let id = server.publish_ok(&receiver.url("/f"), &flow_headers(key, "parallelism=1"), "x").await;
        server.wait_for_state(&id, "DELIVERED").await;
    }
    assert_eq!(send(server.post("/v2/flowControl/paused/pause")).await.0, StatusCode::OK);
    assert_eq!(send(server.post("/v2/flowControl/pinned/pin?parallelism=3")).await.0, StatusCode::OK);

    // A day later the next retention pass forgets only the plain key.
    server.advance(Duration::from_secs(24 * 3600 + 60));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while send(server.get("/v2/flowControl/idle")).await.0 != StatusCode::NOT_FOUND {
        assert!(tokio::time::Instant::now() < deadline, "the idle key was never forgotten");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(flow(&server, "paused").await["isPaused"], json!(true));
    assert_eq!(flow(&server, "pinned").await["parallelismMax"], json!(3));

    // Forgotten in the store too: a restart does not bring it back.
    server.restart().await;
    expect_error(server.get("/v2/flowControl/idle"), StatusCode::NOT_FOUND, "not found").await;
    let keys: BTreeSet<String> = get_ok(&server, "/v2/flowControl")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|info| info["flowControlKey"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, BTreeSet::from(["paused".to_string(), "pinned".to_string()]));
    // A forgotten key used again starts afresh.
    let id = server.publish_ok(&receiver.url("/f"), &flow_headers("idle", "rate=5"), "x").await;
    server.wait_for_state(&id, "DELIVERED").await;
    assert_eq!(flow(&server, "idle").await["rateMax"], json!(5));
}
