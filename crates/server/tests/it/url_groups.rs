//! URL groups, called topics (spec §5.7, §6.5, §15, §16, §19): endpoints added, renamed and
//! removed, get and list shapes, delete, validation, limits, and the fan-out — one independent
//! message per endpoint, deduplicated per endpoint, published or enqueued.

use crate::harness::*;
use crate::support::*;
use crate::timeline::*;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

async fn add(server: &TestServer, group: &str, endpoints: Value) -> (StatusCode, Value) {
    send(server.post(&format!("/v2/topics/{group}/endpoints")).json(&json!({ "endpoints": endpoints }))).await
}

async fn add_ok(server: &TestServer, group: &str, endpoints: Value) {
    let (status, json) = add(server, group, endpoints.clone()).await;
    assert_eq!((status, json), (StatusCode::OK, Value::Null), "add {endpoints} to {group}");
}

async fn remove(server: &TestServer, group: &str, endpoints: Value) -> (StatusCode, Value) {
    send(server.delete(&format!("/v2/topics/{group}/endpoints")).json(&json!({ "endpoints": endpoints }))).await
}

/// The `(messageId, url)` pairs of a fan-out response, asserting its shape.
fn fanned_out(json: &Value, deduplicated: bool) -> Vec<(String, String)> {
    let elements = json.as_array().unwrap_or_else(|| panic!("a JSON array: {json}"));
    elements
        .iter()
        .map(|element| {
            let keys: BTreeSet<&str> = element.as_object().unwrap().keys().map(String::as_str).collect();
            let expected: BTreeSet<&str> = if deduplicated {
                BTreeSet::from(["messageId", "url", "deduplicated"])
            } else {
                BTreeSet::from(["messageId", "url"])
            };
            assert_eq!(keys, expected, "{element}");
            if deduplicated {
                assert_eq!(element["deduplicated"], true);
            }
            (element["messageId"].as_str().unwrap().to_string(), element["url"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test]
async fn endpoints_are_added_renamed_and_kept_in_insertion_order() {
    let server = TestServer::start().await;
    let (u1, u2, u3) = ("http://127.0.0.1:9", "https://example.com/two?a=1", "http://localhost:1/three/");
    let created = server.now_ms();
    add_ok(&server, "orders", json!([{"url": u1, "name": "First endpoint"}, {"url": u2}])).await;
    let group = get_ok(&server, "/v2/topics/orders").await;
    assert_eq!(
        group,
        json!({"name": "orders", "createdAt": created, "updatedAt": created,
               "endpoints": [{"name": "First endpoint", "url": u1}, {"url": u2}]})
    );

    server.advance(Duration::from_secs(5));
    add_ok(&server, "orders", json!([{"url": u3, "name": "third"}, {"url": u1, "name": "renamed"}])).await;
    add_ok(&server, "orders", json!([{"url": u2, "name": "second"}])).await;
    let group = get_ok(&server, "/v2/topics/orders").await;
    assert_eq!(
        group["endpoints"],
        json!([{"name": "renamed", "url": u1}, {"name": "second", "url": u2}, {"name": "third", "url": u3}])
    );
    assert_eq!((group["createdAt"].clone(), group["updatedAt"].clone()), (json!(created), json!(server.now_ms())));

    add_ok(&server, "audit", json!([{"url": u3}])).await;
    let list = get_ok(&server, "/v2/topics").await;
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 2);
    for group in list {
        assert_no_nulls(group);
        let expected = get_ok(&server, &format!("/v2/topics/{}", group["name"].as_str().unwrap())).await;
        assert_eq!(group, &expected);
    }
    let names: BTreeSet<&str> = list.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["audit", "orders"]));
    // Groups belong to their user.
    let other =
        |method, path: &str| server.http.request(method, format!("{}{path}", server.url)).bearer_auth(OTHER_TOKEN);
    assert_eq!(send(other(Method::GET, "/v2/topics")).await, (StatusCode::OK, json!([])));
    expect_error(other(Method::GET, "/v2/topics/orders"), StatusCode::NOT_FOUND, "orders").await;
    expect_error(other(Method::POST, "/v2/publish/orders"), StatusCode::NOT_FOUND, "topic orders not found").await;
}

#[tokio::test]
async fn endpoints_are_removed_by_url_or_name_and_an_emptied_group_is_deleted() {
    let server = TestServer::start().await;
    let endpoints = json!([{"url": "http://127.0.0.1:9/a", "name": "a"}, {"url": "http://127.0.0.1:9/b", "name": "b"},
                          {"url": "http://127.0.0.1:9/c"}]);
    add_ok(&server, "shrink", endpoints).await;
    let (status, json) = remove(&server, "shrink", json!([{"url": "http://127.0.0.1:9/a"}])).await;
    assert_eq!((status, json), (StatusCode::OK, Value::Null));
    let (status, _) = remove(&server, "shrink", json!([{"name": "b"}])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get_ok(&server, "/v2/topics/shrink").await["endpoints"], json!([{"url": "http://127.0.0.1:9/c"}]));
    let (status, json) = remove(&server, "shrink", json!([{}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an endpoint to remove needs a url or a name: {json}");

    let (status, _) = remove(&server, "shrink", json!([{"url": "http://127.0.0.1:9/c"}])).await;
    assert_eq!(status, StatusCode::OK);
    expect_error(server.get("/v2/topics/shrink"), StatusCode::NOT_FOUND, "shrink").await;
    assert_eq!(get_ok(&server, "/v2/topics").await, json!([]));
    expect_error(server.post("/v2/publish/shrink").body("x"), StatusCode::NOT_FOUND, "topic shrink not found").await;

    // Delete is idempotent.
    add_ok(&server, "gone", json!([{"url": "http://127.0.0.1:9/x"}])).await;
    for _ in 0..2 {
        let (status, json) = send(server.delete("/v2/topics/gone")).await;
        assert_eq!((status, json), (StatusCode::OK, Value::Null));
        expect_error(server.get("/v2/topics/gone"), StatusCode::NOT_FOUND, "gone").await;
    }
    assert_eq!(send(server.delete("/v2/topics/never-was")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn invalid_names_and_urls_are_rejected_and_unknown_groups_answer_404() {
    let server = TestServer::start().await;
    let good = json!([{"url": "http://127.0.0.1:9/ok"}]);
    for name in ["has%20space", "caf%C3%A9", "semi;colon"] {
        let (status, json) = add(&server, name, good.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {json}");
        expect_error(server.post(&format!("/v2/publish/{name}")).body("x"), StatusCode::BAD_REQUEST, "name").await;
    }
    for endpoints in [
        json!([{"url": "ftp://example.com"}]),
        json!([{"url": "not a url"}]),
        json!([{"url": ""}]),
        json!([{"url": "http://"}]),
        json!([{"name": "no url"}]),
        json!([{"url": "http://127.0.0.1:9/fine"}, {"url": "example.com"}]),
        json!([]),
    ] {
        let (status, json) = add(&server, "valid", endpoints.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{endpoints}: {json}");
    }
    let (status, json) = send(server.post("/v2/topics/valid/endpoints").body("not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert_eq!(get_ok(&server, "/v2/topics").await, json!([]), "nothing was created");

    let (status, message) = error_of(server.post("/v2/publish/nope").body("x")).await;
    assert_eq!((status, message.as_str()), (StatusCode::NOT_FOUND, "topic nope not found"));
    let (status, message) = error_of(server.post("/v2/enqueue/q/nope").body("x")).await;
    assert_eq!((status, message.as_str()), (StatusCode::NOT_FOUND, "topic nope not found"));
    let logs = get_ok(&server, "/v2/logs").await;
    assert_eq!(logs["events"], json!([]), "nothing stored: {logs}");
}

#[tokio::test]
async fn a_publish_fans_out_into_independent_messages_one_per_endpoint() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/c", vec![Reply::Status(500)]);
    let urls = [receiver.url("/a"), receiver.url("/b"), receiver.url("/c")];
    let endpoints = json!([{"url": urls[0], "name": "alpha"}, {"url": urls[1]}, {"url": urls[2], "name": "gamma"}]);
    add_ok(&server, "fan", endpoints).await;
    let callback = receiver.url("/cb");
    let headers = [("Upstash-Retries", "0"), ("Upstash-Callback", callback.as_str()), ("Content-Type", "text/plain")];
    let (status, json) = server.publish("fan", &headers, "fan body").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let messages = fanned_out(&json, false);
    let returned_urls: Vec<&str> = messages.iter().map(|(_, url)| url.as_str()).collect();
    assert_eq!(returned_urls, urls.iter().map(String::as_str).collect::<Vec<_>>(), "endpoint order");
    let ids: Vec<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 3, "one message id per endpoint");

    for (path, id) in ["/a", "/b", "/c"].iter().zip(&ids) {
        let request = receiver.wait_for(path, 1).await.remove(0);
        assert_eq!(request.header("upstash-message-id"), Some(*id));
        assert_eq!(request.header("upstash-topic-name"), Some("fan"));
        assert_eq!(&request.body[..], b"fan body");
    }
    assert_eq!(server.wait_for_state(ids[0], "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);
    assert_eq!(server.wait_for_state(ids[1], "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);
    assert_eq!(server.wait_for_state(ids[2], "FAILED").await, ["CREATED", "ACTIVE", "ERROR", "FAILED"]);

    // Each message carries its group and endpoint name (omitted when unnamed).
    for (id, endpoint_name) in ids.iter().zip([Some("alpha"), None, Some("gamma")]) {
        let message = message_json(&server, id).await;
        assert_eq!(message["topicName"], "fan");
        assert_eq!(message.get("endpointName").and_then(Value::as_str), endpoint_name, "{message}");
        for entry in log_entries(&server, id).await {
            assert_eq!(entry["topicName"], "fan", "{entry}");
            assert_eq!(entry.get("endpointName").and_then(Value::as_str), endpoint_name, "{entry}");
        }
    }
    let logged = get_ok(&server, "/v2/logs?topicName=fan").await;
    let logged: BTreeSet<String> = entry_ids(&logged).into_iter().collect();
    assert_eq!(logged, ids.iter().map(|id| id.to_string()).collect(), "logs filter by topicName");

    // Only the failing endpoint's message is dead-lettered.
    let entry = dlq_entry(&server, ids[2]).await;
    assert_eq!((entry["topicName"].clone(), entry["endpointName"].clone()), (json!("fan"), json!("gamma")));
    assert!(dlq_entries(&server, ids[0]).await.is_empty() && dlq_entries(&server, ids[1]).await.is_empty());

    // Every endpoint message has its own callback.
    let callbacks = receiver.wait_for("/cb", 3).await;
    let mut sources = BTreeSet::new();
    for request in &callbacks {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["topicName"], "fan");
        sources.insert(body["sourceMessageId"].as_str().unwrap().to_string());
    }
    assert_eq!(sources, ids.iter().map(|id| id.to_string()).collect());

    server.advance(DAY);
    for path in ["/a", "/b", "/c"] {
        receiver.assert_count_stays(&server, path, 1).await;
    }
    receiver.assert_count_stays(&server, "/cb", 3).await;
}

#[tokio::test]
async fn messages_of_a_deleted_group_are_still_delivered() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    add_ok(&server, "brief", json!([{"url": receiver.url("/x")}, {"url": receiver.url("/y")}])).await;
    let (status, json) = server.publish("brief", &[("Upstash-Delay", "30s")], "later").await;
    assert_eq!(status, StatusCode::OK);
    let messages = fanned_out(&json, false);
    assert_eq!(send(server.delete("/v2/topics/brief")).await.0, StatusCode::OK);
    server.advance(Duration::from_secs(31));
    for (path, (id, _)) in ["/x", "/y"].iter().zip(&messages) {
        let request = receiver.wait_for(path, 1).await.remove(0);
        assert_eq!(request.header("upstash-topic-name"), Some("brief"));
        server.wait_for_state(id, "DELIVERED").await;
    }
}

#[tokio::test]
async fn deduplication_applies_per_endpoint() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    add_ok(&server, "dedup", json!([{"url": receiver.url("/one")}, {"url": receiver.url("/two")}])).await;
    let headers = [("Upstash-Deduplication-Id", "same")];
    let (status, json) = server.publish("dedup", &headers, "x").await;
    assert_eq!(status, StatusCode::OK);
    let first = fanned_out(&json, false);
    let (status, json) = server.publish("dedup", &headers, "x").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(fanned_out(&json, true), first, "the original ids, each deduplicated");

    // A new endpoint gets a message; the known ones are still duplicates.
    add_ok(&server, "dedup", json!([{"url": receiver.url("/three")}])).await;
    let (status, json) = server.publish("dedup", &headers, "x").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(fanned_out(&json!([json[0], json[1]]), true), first);
    let third = fanned_out(&json!([json[2]]), false);
    assert_eq!(third[0].1, receiver.url("/three"));

    // Content-based deduplication too.
    let content = [("Upstash-Content-Based-Deduplication", "true")];
    let (status, json) = server.publish("dedup", &content, "same body").await;
    assert_eq!(status, StatusCode::OK);
    let by_content = fanned_out(&json, false);
    let (status, json) = server.publish("dedup", &content, "same body").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(fanned_out(&json, true), by_content);

    receiver.wait_for("/three", 2).await;
    for path in ["/one", "/two", "/three"] {
        receiver.assert_count_stays(&server, path, 2).await;
    }
}

#[tokio::test]
async fn an_enqueue_to_a_group_puts_every_endpoint_message_in_the_queue() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/first", vec![Reply::Hold(200)]);
    add_ok(&server, "queued", json!([{"url": receiver.url("/first")}, {"url": receiver.url("/second")}])).await;
    let (status, json) = server.enqueue("gq", "queued", &[], "via queue").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let messages = fanned_out(&json, false);
    for (id, _) in &messages {
        let message = message_json(&server, id).await;
        assert_eq!((message["queueName"].clone(), message["topicName"].clone()), (json!("gq"), json!("queued")));
    }
    // Parallelism 1: the second endpoint's message waits for the first.
    receiver.wait_for("/first", 1).await;
    receiver.assert_count_stays(&server, "/second", 0).await;
    assert_eq!(get_ok(&server, "/v2/queues/gq").await["lag"], 2);
    receiver.release("/first", 1);
    let request = receiver.wait_for("/second", 1).await.remove(0);
    assert_eq!(request.header("upstash-message-id"), Some(messages[1].0.as_str()));
    assert_eq!(request.header("upstash-topic-name"), Some("queued"));
}

#[tokio::test]
async fn group_and_endpoint_limits_answer_412() {
    let server = TestServer::start_with(|config| {
        config.limits.max_url_groups = 1;
        config.limits.max_endpoints_per_group = 2;
    })
    .await;
    add_ok(&server, "only", json!([{"url": "http://127.0.0.1:9/1"}])).await;
    // The same URL twice in one request is one endpoint (the later name wins).
    add_ok(&server, "only", json!([{"url": "http://127.0.0.1:9/2"}, {"url": "http://127.0.0.1:9/2", "name": "two"}]))
        .await;
    assert_eq!(
        get_ok(&server, "/v2/topics/only").await["endpoints"],
        json!([{"url": "http://127.0.0.1:9/1"}, {"url": "http://127.0.0.1:9/2", "name": "two"}])
    );
    let (status, json) = add(&server, "only", json!([{"url": "http://127.0.0.1:9/3"}])).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{json}");
    let (status, json) = add(&server, "second", json!([{"url": "http://127.0.0.1:9/1"}])).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{json}");
    // Renaming an existing endpoint adds nothing.
    add_ok(&server, "only", json!([{"url": "http://127.0.0.1:9/2", "name": "renamed"}])).await;
    assert_eq!(get_ok(&server, "/v2/topics/only").await["endpoints"].as_array().unwrap().len(), 2);
    expect_error(server.get("/v2/topics/second"), StatusCode::NOT_FOUND, "second").await;
    assert_eq!(send(server.delete("/v2/topics/only")).await.0, StatusCode::OK);
    add_ok(&server, "second", json!([{"url": "http://127.0.0.1:9/1"}])).await;
}
