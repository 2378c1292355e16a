//! Limits that keep what one tenant stores, and what one request creates, bounded (issue 15):
//! URL lengths, the header bytes a message keeps, flow-control keys (length, and number per
//! user: the engine keeps each in memory), and the messages of one batch. A value too long is
//! a 400, a count past its limit a 412, a request too large a 413 — each a QStash-shaped error,
//! with nothing stored.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;

const URL_LIMIT: usize = 200;
const HEADER_LIMIT: usize = 1024;
const KEY_LIMIT: usize = 16;

async fn limited() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.max_url_bytes = URL_LIMIT;
        config.limits.max_header_bytes = HEADER_LIMIT;
        config.limits.max_flow_control_key_bytes = KEY_LIMIT;
        config.limits.max_flow_control_keys = 2;
        config.limits.max_batch_messages = 4;
    })
    .await
}

/// A URL of exactly `length` bytes that is never contacted.
fn url_of_length(length: usize) -> String {
    let base = format!("{NOWHERE}/");
    format!("{base}{}", "u".repeat(length - base.len()))
}

async fn nothing_pending(server: &TestServer) {
    let logs = get_ok(server, "/v2/logs").await;
    assert_eq!(logs["events"], json!([]), "nothing was stored: {logs}");
}

#[tokio::test]
async fn urls_are_bounded_wherever_a_message_may_go() {
    let server = limited().await;
    let (fits, too_long) = (url_of_length(URL_LIMIT), url_of_length(URL_LIMIT + 1));

    for (what, request) in [
        ("a destination", server.post(&format!("/v2/publish/{too_long}")).header("Upstash-Delay", "1h")),
        ("an enqueued destination", server.post(&format!("/v2/enqueue/q/{too_long}"))),
        ("a callback", server.post(&format!("/v2/publish/{fits}")).header("Upstash-Callback", &too_long)),
        (
            "a failure callback",
            server.post(&format!("/v2/publish/{fits}")).header("Upstash-Failure-Callback", &too_long),
        ),
        (
            "a callback's callback",
            server
                .post(&format!("/v2/publish/{fits}"))
                .header("Upstash-Callback", &fits)
                .header("Upstash-Callback-Callback", &too_long),
        ),
        (
            "a schedule's destination",
            server.post(&format!("/v2/schedules/{too_long}")).header("Upstash-Cron", "* * * * *"),
        ),
        ("a batch item", server.post("/v2/batch").json(&json!([{"destination": fits}, {"destination": too_long}]))),
        (
            "a URL group's endpoint",
            server.post("/v2/topics/group/endpoints").json(&json!({"endpoints": [{"url": too_long}]})),
        ),
    ] {
        let message = expect_error(request, StatusCode::BAD_REQUEST, "url").await;
        assert!(message.contains(&format!("at most {URL_LIMIT} bytes")), "{what}: {message}");
    }
    let message = expect_error(
        server.post("/v2/batch").json(&json!([{"destination": fits}, {"destination": too_long}])),
        StatusCode::BAD_REQUEST,
        "batch item 1",
    )
    .await;
    assert!(message.contains("destination url"), "{message}");
    // An endpoint's name is bounded too (as names of groups and queues are).
    let named = json!({"endpoints": [{"url": fits, "name": "n".repeat(257)}]});
    expect_error(server.post("/v2/topics/group/endpoints").json(&named), StatusCode::BAD_REQUEST, "name").await;
    nothing_pending(&server).await;
    assert_eq!(get_ok(&server, "/v2/topics").await, json!([]));
    assert_eq!(get_ok(&server, "/v2/schedules").await, json!([]));

    // At the limit everything is accepted.
    server.publish_ok(&fits, &[("Upstash-Delay", "1h"), ("Upstash-Callback", &fits)], "ok").await;
    let (status, json) =
        send(server.post("/v2/topics/group/endpoints").json(&json!({"endpoints": [{"url": fits}]}))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json) = send(server.post(&format!("/v2/schedules/{fits}")).header("Upstash-Cron", "0 0 1 1 *")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn the_headers_a_message_keeps_are_bounded() {
    let server = limited().await;
    let receiver = Receiver::start().await;
    let big = "h".repeat(HEADER_LIMIT);
    let (status, json) = server.publish(NOWHERE, &[("Upstash-Delay", "1h"), ("Upstash-Forward-Big", &big)], "x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert!(json["error"].as_str().unwrap().contains(&format!("at most {HEADER_LIMIT} bytes")), "{json}");
    let items = json!([{"destination": NOWHERE, "headers": {"Upstash-Callback-Forward-Big": big}}]);
    expect_error(server.post("/v2/batch").json(&items), StatusCode::BAD_REQUEST, "batch item 0").await;
    nothing_pending(&server).await;

    // A URL group's default headers are copied into the message of every endpoint.
    let endpoints = json!({"endpoints": [{"url": receiver.url("/a")}, {"url": receiver.url("/b")}]});
    let (status, _) = send(server.post("/v2/topics/group/endpoints").json(&endpoints)).await;
    assert_eq!(status, StatusCode::OK);
    let defaults = json!({"headers": {"Upstash-Forward-Big": big}});
    let message = expect_error(
        server.request(axum::http::Method::PATCH, "/v2/topics/group").json(&defaults),
        StatusCode::BAD_REQUEST,
        "headers",
    )
    .await;
    assert!(message.contains(&format!("at most {HEADER_LIMIT} bytes")), "{message}");
    let fitting = json!({"headers": {"Upstash-Forward-Small": "s".repeat(HEADER_LIMIT / 2)}});
    let (status, json) = send(server.request(axum::http::Method::PATCH, "/v2/topics/group").json(&fitting)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    // Together with the publish's own headers they are bounded as one message's.
    let own = "o".repeat(HEADER_LIMIT / 2);
    let (status, json) = server.publish("group", &[("Upstash-Delay", "1h"), ("Upstash-Forward-Own", &own)], "x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let (status, json) = server.publish("group", &[("Upstash-Delay", "1h")], "x").await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

/// Publishes a delayed message naming the flow-control key `key` in `{prefix}-Key` (its own,
/// or its callback's, which then calls back to nowhere).
async fn publish_with_key(server: &TestServer, prefix: &str, key: &str) -> (StatusCode, serde_json::Value) {
    let (key_header, value_header) = (format!("{prefix}-Key"), format!("{prefix}-Value"));
    let headers = [
        ("Upstash-Delay", "1h"),
        ("Upstash-Callback", NOWHERE),
        (key_header.as_str(), key),
        (value_header.as_str(), "parallelism=1"),
    ];
    server.publish(NOWHERE, &headers, "x").await
}

/// A callback's key is counted when the message naming it is published, though the callback,
/// and with it the key's first message, comes later: callback keys once passed the limit one by
/// one, none of them existing yet when the next was checked.
#[tokio::test]
async fn callback_flow_control_keys_count_before_their_callbacks_exist() {
    let server = limited().await;
    let publish = |key| publish_with_key(&server, "Upstash-Callback-Flow-Control", key);
    assert_eq!(publish("callback-1").await.0, StatusCode::OK);
    assert_eq!(publish("callback-2").await.0, StatusCode::OK);
    let (status, json) = publish("callback-3").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{json}");
    assert_eq!(publish("callback-1").await.0, StatusCode::OK, "a key counted is usable");
}

/// A DLQ retry may name a flow-control key of its own: it counts like a publish's (retries once
/// created keys past the limit, one per retried entry).
#[tokio::test]
async fn keys_a_dlq_retry_names_count_against_the_limit() {
    let server = limited().await;
    let receiver = Receiver::start().await;
    receiver.script("/fail", vec![Reply::Status(500)]);
    let mut entries = Vec::new();
    for body in ["one", "two", "three"] {
        entries.push(dead_letter(&server, &receiver, "/fail", &[], body).await.1);
    }
    for (index, dlq_id) in entries.iter().enumerate() {
        let retry = server
            .post(&format!("/v2/dlq/retry/{dlq_id}"))
            .header("Upstash-Delay", "1h")
            .header("Upstash-Flow-Control-Key", format!("retry-{index}"))
            .header("Upstash-Flow-Control-Value", "rate=1");
        let (status, json) = send(retry).await;
        match index {
            0 | 1 => assert!(status.is_success(), "{status}: {json}"),
            _ => assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{json}"),
        }
    }
    let keys = get_ok(&server, "/v2/flowControl").await;
    assert_eq!(keys.as_array().map(Vec::len), Some(2), "{keys}");
}

#[tokio::test]
async fn flow_control_keys_are_bounded_in_length_and_number_per_user() {
    let server = limited().await;
    let publish = |key| publish_with_key(&server, "Upstash-Flow-Control", key);
    let long_key = "k".repeat(KEY_LIMIT + 1);
    let (status, json) = publish(&long_key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert!(json["error"].as_str().unwrap().contains("flow-control key"), "{json}");
    expect_error(
        server.post(&format!("/v2/flowControl/{long_key}/pause")),
        StatusCode::BAD_REQUEST,
        "flow-control key",
    )
    .await;

    assert_eq!(publish("first").await.0, StatusCode::OK);
    assert_eq!(publish("second").await.0, StatusCode::OK);
    let (status, json) = publish("third").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{json}");
    assert!(json["error"].as_str().unwrap().contains("flow-control key limit"), "{json}");
    assert_eq!(publish("first").await.0, StatusCode::OK, "a key the user has is always usable");

    // A batch, a callback's key and an operator's pin count alike.
    let items = json!([
        {"destination": NOWHERE, "headers": {"Upstash-Delay": "1h", "Upstash-Flow-Control-Key": "second", "Upstash-Flow-Control-Value": "rate=1"}},
        {"destination": NOWHERE, "headers": {"Upstash-Delay": "1h", "Upstash-Flow-Control-Key": "third", "Upstash-Flow-Control-Value": "rate=1"}},
    ]);
    expect_error(server.post("/v2/batch").json(&items), StatusCode::PRECONDITION_FAILED, "batch item 1").await;
    let callback_key = [
        ("Upstash-Delay", "1h"),
        ("Upstash-Callback", NOWHERE),
        ("Upstash-Callback-Flow-Control-Key", "third"),
        ("Upstash-Callback-Flow-Control-Value", "rate=1"),
    ];
    assert_eq!(server.publish(NOWHERE, &callback_key, "x").await.0, StatusCode::PRECONDITION_FAILED);
    expect_error(server.post("/v2/flowControl/third/pin?parallelism=1"), StatusCode::PRECONDITION_FAILED, "limit")
        .await;
    let (status, _) = send(server.post("/v2/flowControl/second/pin?parallelism=1")).await;
    assert_eq!(status, StatusCode::OK);

    let keys = get_ok(&server, "/v2/flowControl").await;
    let mut names: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k["flowControlKey"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["first", "second"]);
    // The limit is per user.
    let other = server.http.post(format!("{}/v2/publish/{NOWHERE}", server.url)).bearer_auth(OTHER_TOKEN);
    let other = other.header("Upstash-Delay", "1h").header("Upstash-Flow-Control-Key", "third");
    let (status, json) = send(other.header("Upstash-Flow-Control-Value", "rate=1").body("x")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn a_batch_is_bounded_by_the_messages_it_creates() {
    let server = limited().await;
    let receiver = Receiver::start().await;
    let item = json!({"destination": NOWHERE, "headers": {"Upstash-Delay": "1h"}});
    let message = expect_error(
        server.post("/v2/batch").json(&vec![item.clone(); 5]),
        StatusCode::PAYLOAD_TOO_LARGE,
        "at most 4 messages",
    )
    .await;
    assert!(!message.contains("item"), "the batch as a whole: {message}");
    // A URL group's endpoints count: two items to a group of three are six messages.
    let endpoints: Vec<_> = (0..3).map(|i| json!({"url": receiver.url(&format!("/{i}"))})).collect();
    let (status, _) = send(server.post("/v2/topics/three/endpoints").json(&json!({"endpoints": endpoints}))).await;
    assert_eq!(status, StatusCode::OK);
    let to_group = json!({"destination": "three", "headers": {"Upstash-Delay": "1h"}});
    expect_error(
        server.post("/v2/batch").json(&json!([to_group, to_group])),
        StatusCode::PAYLOAD_TOO_LARGE,
        "at most 4",
    )
    .await;
    // A batch of the wrong shape fails at its first element.
    let zeros = format!("[{}0]", "0,".repeat(100_000));
    expect_error(server.post("/v2/batch").body(zeros), StatusCode::BAD_REQUEST, "batch item 0: invalid type").await;
    nothing_pending(&server).await;

    let (status, json) = send(server.post("/v2/batch").json(&vec![item; 4])).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    // A single publish to a group is bounded by the group's size instead.
    let (status, json) = server.publish("three", &[("Upstash-Delay", "1h")], "x").await;
    assert_eq!((status, json.as_array().map(Vec::len)), (StatusCode::OK, Some(3)), "{json}");
}
