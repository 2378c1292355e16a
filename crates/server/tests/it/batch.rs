//! Batch (spec §5.3): items to URLs, URL groups and queues answered in one aligned array
//! (nested arrays for groups), every item configured by its own headers, the SDKs' ways of
//! leaving `body` and `queue` unset, and validation that rejects the whole batch before
//! anything is stored.

use crate::harness::*;
use crate::support::*;
use crate::timeline::*;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

async fn batch(server: &TestServer, items: &Value) -> (StatusCode, Value) {
    send(server.post("/v2/batch").json(items)).await
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().unwrap_or_else(|| panic!("an object: {value}")).keys().map(String::as_str).collect()
}

fn id(element: &Value) -> String {
    element["messageId"].as_str().unwrap_or_else(|| panic!("a messageId: {element}")).to_string()
}

#[tokio::test]
async fn a_batch_mixes_urls_groups_and_queues_with_an_aligned_response() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/fails", vec![Reply::Status(500)]);
    let group = json!({"endpoints": [{"url": receiver.url("/g1"), "name": "one"}, {"url": receiver.url("/g2")}]});
    assert_eq!(send(server.post("/v2/topics/bg/endpoints").json(&group)).await.0, StatusCode::OK);
    let url = |path: &str| receiver.url(path);
    let items = json!([
        {"destination": url("/plain"), "body": "zero",
         "headers": {"Content-Type": "text/plain", "Upstash-Method": "PUT", "Upstash-Forward-X-Trace": "t0",
                     "upstash-forward-x-lower": "l0"}},
        {"destination": "bg", "body": "one", "headers": {"Upstash-Forward-X-Trace": "t1"}},
        {"destination": url("/queued"), "body": "two", "queue": "bq", "headers": {"upstash-method": "PATCH"}},
        {"destination": url("/later"), "body": "three", "headers": {"Upstash-Delay": "10s"}},
        {"destination": url("/fails"), "body": "four", "headers": {"Upstash-Retries": "0",
                     "Upstash-Failure-Callback": url("/failed"), "Upstash-Callback": url("/called")}},
        {"destination": url("/python"), "body": null, "queue": null, "headers": {}},
        {"destination": url("/go"), "body": "", "queue": ""},
        {"destination": format!("{}?x=1&y=two", url("/query")), "body": "seven",
         "headers": {"Upstash-Flow-Control-Key": "batch-key", "Upstash-Flow-Control-Value": "parallelism=1"}},
        {"destination": url("/dedup"), "body": "eight", "headers": {"Upstash-Deduplication-Id": "batch-dup"}},
        {"destination": url("/dedup"), "body": "nine", "headers": {"Upstash-Deduplication-Id": "batch-dup"}},
        {"destination": "bg", "queue": "bq", "body": "ten"},
    ]);
    let (status, json) = batch(&server, &items).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let response = json.as_array().expect("a JSON array");
    assert_eq!(response.len(), 11, "one element per item: {json}");
    for index in [0, 2, 3, 4, 5, 6, 7, 8] {
        assert_eq!(keys(&response[index]), BTreeSet::from(["messageId"]), "element {index}: {json}");
    }
    for index in [1, 10] {
        let nested = response[index].as_array().unwrap_or_else(|| panic!("element {index} is an array: {json}"));
        let urls: Vec<&Value> = nested.iter().map(|element| &element["url"]).collect();
        assert_eq!(urls, [&json!(url("/g1")), &json!(url("/g2"))], "endpoint order: {json}");
        assert!(nested.iter().all(|element| keys(element) == BTreeSet::from(["messageId", "url"])), "{json}");
    }
    assert_eq!(response[9], json!({"messageId": id(&response[8]), "deduplicated": true}));
    let all_ids: BTreeSet<String> = response
        .iter()
        .flat_map(|element| element.as_array().cloned().unwrap_or_else(|| vec![element.clone()]))
        .map(|element| id(&element))
        .collect();
    assert_eq!(all_ids.len(), 12, "a message per URL item and per endpoint, one duplicate: {json}");

    // Each item's own headers.
    let plain = receiver.wait_for("/plain", 1).await.remove(0);
    assert_eq!(plain.method, Method::PUT);
    assert_eq!((plain.header("x-trace"), plain.header("x-lower")), (Some("t0"), Some("l0")));
    assert_eq!(plain.header("content-type"), Some("text/plain"));
    assert_eq!(&plain.body[..], b"zero");
    for (index, path) in ["/g1", "/g2"].into_iter().enumerate() {
        let requests = receiver.wait_for(path, 2).await;
        assert!(requests.iter().all(|r| r.header("upstash-topic-name") == Some("bg")));
        let traced: Vec<&Recorded> = requests.iter().filter(|r| r.header("x-trace").is_some()).collect();
        assert_eq!(traced.len(), 1, "only item 1 forwards X-Trace");
        assert_eq!(traced[0].header("x-trace"), Some("t1"));
        assert_eq!(traced[0].header("upstash-message-id"), Some(id(&response[1][index]).as_str()));
        let queued = message_json(&server, &id(&response[10][index])).await;
        assert_eq!((queued["queueName"].clone(), queued["topicName"].clone()), (json!("bq"), json!("bg")));
    }
    let queued = receiver.wait_for("/queued", 1).await.remove(0);
    assert_eq!(queued.method, Method::PATCH);
    assert_eq!(message_json(&server, &id(&response[2])).await["queueName"], "bq");
    assert_eq!(get_ok(&server, "/v2/queues/bq").await["name"], "bq", "the queue was created");
    for (path, body) in [("/python", ""), ("/go", "")] {
        let request = receiver.wait_for(path, 1).await.remove(0);
        assert_eq!(String::from_utf8_lossy(&request.body), body);
    }
    for index in [5, 6] {
        assert!(message_json(&server, &id(&response[index])).await.get("queueName").is_none(), "no queue");
    }
    assert_eq!(receiver.wait_for("/query", 1).await[0].target, "/query?x=1&y=two");
    assert_eq!(message_json(&server, &id(&response[7])).await["flowControlKey"], "batch-key");
    assert_eq!(get_ok(&server, "/v2/flowControl/batch-key").await["parallelismMax"], 1);
    let failing = id(&response[4]);
    assert_eq!(server.wait_for_state(&failing, "FAILED").await, ["CREATED", "ACTIVE", "ERROR", "FAILED"]);
    receiver.wait_for("/called", 1).await;
    let failure = receiver.wait_for("/failed", 1).await.remove(0);
    let failure: Value = serde_json::from_slice(&failure.body).unwrap();
    assert_eq!(failure["sourceMessageId"], failing.as_str());
    assert_eq!(failure["dlqId"], dlq_entry(&server, &failing).await["dlqId"]);

    // The delayed item and the deduplicated one.
    expect_request_after(&server, &receiver, "/later", 0, Duration::from_secs(10)).await;
    let names: Vec<Value> =
        get_ok(&server, "/v2/queues").await.as_array().unwrap().iter().map(|q| q["name"].clone()).collect();
    assert_eq!(names, [json!("bq")], "no queue for items with a null or empty queue");
    receiver.assert_count_stays(&server, "/dedup", 1).await;
    assert_eq!(&receiver.requests_to("/dedup")[0].body[..], b"eight");
}

#[tokio::test]
async fn a_single_item_batch_answers_an_array() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (status, json) = batch(&server, &json!([{"destination": receiver.url("/one"), "body": "only"}])).await;
    assert_eq!(status, StatusCode::OK);
    let response = json.as_array().unwrap_or_else(|| panic!("an array: {json}"));
    assert_eq!(response.len(), 1);
    let request = receiver.wait_for("/one", 1).await.remove(0);
    assert_eq!(request.header("upstash-message-id"), Some(id(&response[0]).as_str()));
}

/// Everything a batch could have stored, for checking that a rejected one stored nothing.
async fn assert_nothing_stored(server: &TestServer, receiver: &Receiver) {
    assert_eq!(get_ok(server, "/v2/logs").await["events"], json!([]), "no message was stored");
    assert_eq!(get_ok(server, "/v2/queues").await, json!([]), "no queue was created");
    assert_eq!(get_ok(server, "/v2/flowControl").await, json!([]), "no flow-control key was created");
    server.advance(Duration::from_secs(3600));
    for path in ["/good", "/grouped"] {
        receiver.assert_count_stays(server, path, 0).await;
    }
}

#[tokio::test]
async fn an_invalid_item_rejects_the_whole_batch_and_stores_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let endpoints = json!({"endpoints": [{"url": receiver.url("/grouped")}]});
    assert_eq!(send(server.post("/v2/topics/known/endpoints").json(&endpoints)).await.0, StatusCode::OK);
    let good = json!({"destination": receiver.url("/good"), "body": "good", "queue": "would-be-created",
                      "headers": {"Upstash-Deduplication-Id": "kept-free", "Upstash-Flow-Control-Key": "would-be",
                                  "Upstash-Flow-Control-Value": "rate=1"}});
    let grouped = json!({"destination": "known", "body": "grouped"});
    let bad_items = [
        ("a non-http URL", json!({"destination": "ftp://example.com/x"})),
        ("a URL without host", json!({"destination": "http://"})),
        ("an empty destination", json!({"destination": ""})),
        ("no destination", json!({"body": "lost"})),
        ("a bad delay", json!({"destination": receiver.url("/bad"), "headers": {"Upstash-Delay": "soon"}})),
        ("bad retries", json!({"destination": receiver.url("/bad"), "headers": {"Upstash-Retries": "-1"}})),
        ("a bad method", json!({"destination": receiver.url("/bad"), "headers": {"Upstash-Method": "FETCH"}})),
        (
            "bad flow control",
            json!({"destination": receiver.url("/bad"), "headers":
            {"Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": "parallelism=0"}}),
        ),
        ("a bad callback", json!({"destination": receiver.url("/bad"), "headers": {"Upstash-Callback": "nope"}})),
        ("a bad queue name", json!({"destination": receiver.url("/bad"), "queue": "bad queue"})),
        ("a bad group name", json!({"destination": "bad*group"})),
    ];
    for (what, bad) in bad_items {
        let items = json!([good, grouped, bad, good]);
        let (status, message) = error_of(server.post("/v2/batch").json(&items)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {message}");
        assert!(message.contains("item 2"), "{what}: the error names the item: {message:?}");
    }
    // An unknown URL group is a 404, as for a publish (spec §3.1), naming the item.
    let items = json!([good, grouped, {"destination": "unknown-group"}]);
    let (status, message) = error_of(server.post("/v2/batch").json(&items)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{message}");
    assert_eq!(message, "batch item 2: topic unknown-group not found");
    for (what, body) in [("an empty array", "[]"), ("not JSON", "not json"), ("an object", "{}"), ("null", "null")] {
        let (status, message) = error_of(server.post("/v2/batch").body(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {message}");
    }
    assert_nothing_stored(&server, &receiver).await;

    // The good item's deduplication id was not claimed by any rejected batch.
    let (status, json) = batch(&server, &json!([good])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json[0].get("deduplicated").is_none(), "{json}");
    receiver.wait_for("/good", 1).await;
}

#[tokio::test]
async fn a_batch_past_the_queue_limit_stores_nothing() {
    let server = TestServer::start_with(|config| config.limits.max_queues = 1).await;
    let receiver = Receiver::start().await;
    let items = json!([
        {"destination": receiver.url("/good"), "queue": "first"},
        {"destination": receiver.url("/good"), "queue": "first"},
        {"destination": receiver.url("/good"), "queue": "second"},
    ]);
    let (status, message) = error_of(server.post("/v2/batch").json(&items)).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{message}");
    assert!(message.contains("item 2"), "the error names the item: {message:?}");
    assert_nothing_stored(&server, &receiver).await;
}
