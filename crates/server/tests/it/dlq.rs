//! The dead-letter queue (spec §5.8, §6.2, §11): entry shape, listing with filters and
//! pagination, deleting one or many, and retrying one or many.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const UNKNOWN_DLQ_ID: &str = "1700000000000-0";

#[tokio::test]
async fn a_dlq_entry_has_the_documented_shape() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let reply =
        Reply::Full { status: 404, headers: vec![("X-Reason".into(), "nope".into())], body: "404 Not Found".into() };
    receiver.script("/gone", vec![reply]);
    let created = server.now_ms();
    let headers = [("Content-Type", "application/json"), ("Upstash-Label", "dead"), ("Upstash-Method", "PATCH")];
    let (id, dlq_id) = dead_letter(&server, &receiver, "/gone", &headers, r#"{"a":1}"#).await;
    let (time, seq) = dlq_id.split_once('-').expect("<ms>-<seq>");
    assert!(time.parse::<i64>().is_ok() && seq.parse::<u64>().is_ok(), "{dlq_id}");

    let listed = get_ok(&server, "/v2/dlq").await;
    assert_eq!(listed.as_object().unwrap().len(), 1, "no cursor on the only page: {listed}");
    let mut entry = get_ok(&server, &format!("/v2/dlq/{dlq_id}")).await;
    assert_eq!(listed["messages"], json!([entry.clone()]));
    assert_no_nulls(&entry);
    let response_header = entry.as_object_mut().unwrap().remove("responseHeader").expect("responseHeader");
    assert_eq!(response_header["X-Reason"], json!(["nope"]));
    assert_eq!(response_header["Content-Length"], json!(["13"]));
    let expected = json!({
        "messageId": id,
        "dlqId": dlq_id,
        "url": receiver.url("/gone"),
        "method": "PATCH",
        "header": { "Content-Type": ["application/json"] },
        "body": r#"{"a":1}"#,
        "maxRetries": 0,
        "notBefore": created,
        "createdAt": created,
        "callerIP": "127.0.0.1",
        "callerIp": "127.0.0.1",
        "label": "dead",
        "labels": ["dead"],
        "responseStatus": 404,
        "responseBody": "404 Not Found",
    });
    assert_eq!(entry, expected);
}

/// Three DLQ entries, one second apart: `(message id, dlq id)` of `/a` label x (500),
/// `/b` label y (404) and `/a` label y (500).
async fn three_entries(server: &TestServer, receiver: &Receiver) -> Vec<(String, String)> {
    receiver.script("/a", vec![Reply::Status(500)]);
    receiver.script("/b", vec![Reply::Status(404)]);
    let mut entries = Vec::new();
    for (path, label) in [("/a", "x"), ("/b", "y"), ("/a", "y")] {
        entries.push(dead_letter(server, receiver, path, &[("Upstash-Label", label)], path).await);
        server.advance(Duration::from_secs(1));
    }
    entries
}

async fn listed(server: &TestServer, query: &str) -> Vec<String> {
    let json = get_ok(server, &format!("/v2/dlq?{query}")).await;
    assert!(json.get("cursor").is_none(), "{query}: {json}");
    dlq_ids(&json)
}

#[tokio::test]
async fn the_dlq_list_filters_orders_and_paginates() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let entries = three_entries(&server, &receiver).await;
    let [(m1, d1), (_, d2), (_, d3)] = [&entries[0], &entries[1], &entries[2]].map(Clone::clone);
    let url_a = receiver.url("/a");

    assert_eq!(listed(&server, "").await, [d3.as_str(), d2.as_str(), d1.as_str()]);
    assert_eq!(listed(&server, "order=latestFirst").await, [d3.as_str(), d2.as_str(), d1.as_str()]);
    assert_eq!(listed(&server, "order=earliestFirst").await, [d1.as_str(), d2.as_str(), d3.as_str()]);
    assert_eq!(listed(&server, &format!("messageId={m1}")).await, [d1.as_str()]);
    assert_eq!(listed(&server, &format!("url={url_a}")).await, [d3.as_str(), d1.as_str()]);
    assert_eq!(listed(&server, "responseStatus=404").await, [d2.as_str()]);
    assert_eq!(listed(&server, "responseStatus=404,500").await, [d3.as_str(), d2.as_str(), d1.as_str()]);
    assert_eq!(listed(&server, "responseStatus=502").await, Vec::<String>::new());
    assert_eq!(listed(&server, "label=y").await, [d3.as_str(), d2.as_str()]);
    assert_eq!(listed(&server, &format!("label=y&url={url_a}")).await, [d3.as_str()]);
    assert_eq!(listed(&server, &format!("dlqIds={d1}&dlqIds={d3}")).await, [d3.as_str(), d1.as_str()]);
    assert_eq!(listed(&server, &format!("dlqIds={d2},{UNKNOWN_DLQ_ID}")).await, [d2.as_str()]);
    // The Go SDK's retired `api` filter is ignored.
    assert_eq!(listed(&server, "api=llm&label=x").await, [d1.as_str()]);

    let first = get_ok(&server, "/v2/dlq?count=2").await;
    assert_eq!(dlq_ids(&first), [d3.as_str(), d2.as_str()]);
    let cursor = first["cursor"].as_str().expect("a cursor while more remain");
    assert_eq!(listed(&server, &format!("count=2&cursor={cursor}")).await, [d1.as_str()]);
    let first = get_ok(&server, "/v2/dlq?count=2&order=earliestFirst").await;
    let cursor = first["cursor"].as_str().unwrap();
    assert_eq!(dlq_ids(&first), [d1.as_str(), d2.as_str()]);
    assert_eq!(listed(&server, &format!("count=2&order=earliestFirst&cursor={cursor}")).await, [d3.as_str()]);
    assert_eq!(listed(&server, "count=3").await.len(), 3);
}

#[tokio::test]
async fn the_dlq_page_size_is_the_configured_one() {
    let server = TestServer::start_with(|config| config.limits.dlq_page_size = 2).await;
    let receiver = Receiver::start().await;
    three_entries(&server, &receiver).await;
    for query in ["", "?count=50"] {
        let json = get_ok(&server, &format!("/v2/dlq{query}")).await;
        assert_eq!(json["messages"].as_array().unwrap().len(), 2, "{json}");
        assert!(json["cursor"].is_string(), "{json}");
    }
}

async fn delete_many(request: reqwest::RequestBuilder) -> Value {
    let (status, json) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

#[tokio::test]
async fn dlq_entries_are_deleted_one_or_many() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let mut entries = three_entries(&server, &receiver).await;
    entries.extend(three_entries(&server, &receiver).await);
    let d: Vec<String> = entries.iter().map(|(_, dlq_id)| dlq_id.clone()).collect();

    let (status, body) = send(server.delete(&format!("/v2/dlq/{}", d[0]))).await;
    assert_eq!((status, body), (StatusCode::OK, Value::Null));
    expect_error(server.delete(&format!("/v2/dlq/{}", d[0])), StatusCode::NOT_FOUND, &d[0]).await;
    expect_error(server.get(&format!("/v2/dlq/{}", d[0])), StatusCode::NOT_FOUND, &d[0]).await;

    let query = format!("/v2/dlq?dlqIds={}&dlqIds={}&dlqIds={UNKNOWN_DLQ_ID}&dlqIds={}", d[1], d[0], d[1]);
    assert_eq!(delete_many(server.delete(&query)).await, json!({ "deleted": 1 }));
    let body = json!({ "dlqIds": [d[2], UNKNOWN_DLQ_ID, d[1]] }).to_string();
    assert_eq!(delete_many(server.delete("/v2/dlq").body(body)).await, json!({ "deleted": 1 }));
    assert_eq!(listed(&server, "").await, [d[5].as_str(), d[4].as_str(), d[3].as_str()]);
    // Explicit ids win over filters; an empty id list deletes nothing.
    let query = format!("/v2/dlq?dlqIds={}&label=nomatch", d[3]);
    assert_eq!(delete_many(server.delete(&query)).await, json!({ "deleted": 1 }));
    let body = json!({ "dlqIds": [] }).to_string();
    assert_eq!(delete_many(server.delete("/v2/dlq").body(body)).await, json!({ "deleted": 0 }));
    assert_eq!(listed(&server, "").await, [d[5].as_str(), d[4].as_str()]);

    // Filters, one page at a time.
    assert_eq!(delete_many(server.delete("/v2/dlq?label=nomatch")).await, json!({ "deleted": 0 }));
    let page = delete_many(server.delete("/v2/dlq?count=1")).await;
    assert_eq!(page["deleted"], json!(1));
    let cursor = page["cursor"].as_str().expect("cursor while more match");
    assert_eq!(delete_many(server.delete(&format!("/v2/dlq?count=1&cursor={cursor}"))).await, json!({ "deleted": 1 }));
    assert_eq!(listed(&server, "").await, Vec::<String>::new());

    // A filter (on the trailing-slash path), then no filter at all: every entry.
    let more = three_entries(&server, &receiver).await;
    assert_eq!(delete_many(server.delete("/v2/dlq/?label=y")).await, json!({ "deleted": 2 }));
    assert_eq!(listed(&server, "").await, [more[0].1.as_str()]);
    assert_eq!(delete_many(server.delete("/v2/dlq")).await, json!({ "deleted": 1 }));
    assert_eq!(listed(&server, "").await, Vec::<String>::new());
}

#[tokio::test]
async fn retrying_one_entry_publishes_it_again() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/again", vec![Reply::Status(500), Reply::Status(200)]);
    let headers = [("Content-Type", "text/plain"), ("Upstash-Forward-X-Id", "7")];
    let (original, dlq_id) = dead_letter(&server, &receiver, "/again", &headers, "payload").await;
    let (status, json) = send(server.post(&format!("/v2/dlq/retry/{dlq_id}"))).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let new_id = json["messageId"].as_str().expect("messageId").to_string();
    assert_eq!(json, json!({ "messageId": new_id }));
    assert_ne!(new_id, original);

    expect_error(server.get(&format!("/v2/dlq/{dlq_id}")), StatusCode::NOT_FOUND, &dlq_id).await;
    expect_error(server.delete(&format!("/v2/dlq/{dlq_id}")), StatusCode::NOT_FOUND, &dlq_id).await;
    expect_error(server.post(&format!("/v2/dlq/retry/{dlq_id}")), StatusCode::NOT_FOUND, &dlq_id).await;
    assert_eq!(server.wait_for_state(&new_id, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);
    let requests = receiver.wait_for("/again", 2).await;
    assert_eq!(requests[1].body.as_ref(), b"payload");
    assert_eq!(requests[1].header("x-id"), Some("7"));
    assert_eq!(requests[1].header("upstash-message-id"), Some(new_id.as_str()));
    let message = get_ok(&server, &format!("/v2/messages/{new_id}")).await;
    assert_eq!((&message["url"], &message["maxRetries"]), (&json!(receiver.url("/again")), &json!(0)));
    assert_eq!(get_ok(&server, "/v2/dlq").await, json!({ "messages": [] }));
}

#[tokio::test]
async fn retry_overrides_apply_to_the_new_message() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let non_retryable = Reply::with_headers(489, &[("Upstash-NonRetryable-Error", "true")]);
    receiver.script("/override", vec![non_retryable, Reply::Status(500)]);
    let headers = [("Upstash-Retries", "3"), ("Content-Type", "text/plain")];
    let id = server.publish_ok(&receiver.url("/override"), &headers, "x").await;
    server.wait_for_state(&id, "FAILED").await;
    let entry = get_ok(&server, &format!("/v2/dlq?messageId={id}")).await;
    assert_eq!(entry["messages"][0]["maxRetries"], json!(3));
    let dlq_id = entry["messages"][0]["dlqId"].as_str().unwrap();

    // The retry request's own Content-Type (SDKs send one) is not an override.
    let request = server
        .post(&format!("/v2/dlq/retry/{dlq_id}"))
        .header("Upstash-Retries", "0")
        .header("Content-Type", "application/json");
    let (status, json) = send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let new_id = json["messageId"].as_str().unwrap();
    let retried = get_ok(&server, &format!("/v2/messages/{new_id}")).await;
    assert_eq!(retried["maxRetries"], json!(0));
    assert_eq!(retried["header"]["Content-Type"], json!(["text/plain"]), "{retried}");
    // With no retries left the 500 fails it at once (no RETRY), back into the DLQ.
    assert_eq!(server.wait_for_state(new_id, "FAILED").await, ["CREATED", "ACTIVE", "ERROR", "FAILED"]);
    let listed = get_ok(&server, "/v2/dlq").await;
    assert_eq!(listed["messages"][0]["messageId"], json!(new_id));
    assert_eq!(listed["messages"][0]["responseStatus"], json!(500));
}

#[tokio::test]
async fn bulk_retry_by_ids_body_or_filter() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let entries = three_entries(&server, &receiver).await;
    receiver.script("/a", vec![Reply::Status(200)]);
    receiver.script("/b", vec![Reply::Status(200)]);
    let d: Vec<&String> = entries.iter().map(|(_, dlq_id)| dlq_id).collect();

    let retry = |request: reqwest::RequestBuilder| async move {
        let (status, json) = send(request).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        let responses = json["responses"].as_array().expect("responses").clone();
        assert!(json.get("cursor").is_none(), "{json}");
        responses.iter().map(|r| r["messageId"].as_str().expect("messageId").to_string()).collect::<Vec<_>>()
    };
    // Nothing matches: an empty list, never an error.
    assert!(retry(server.post("/v2/dlq/retry?label=nomatch")).await.is_empty());
    // One unknown explicit id fails the whole request, and nothing is retried.
    let query = format!("/v2/dlq/retry?dlqIds={}&dlqIds={UNKNOWN_DLQ_ID}", d[0]);
    expect_error(server.post(&query), StatusCode::NOT_FOUND, UNKNOWN_DLQ_ID).await;
    assert_eq!(listed(&server, "").await.len(), 3);

    let new_ids = retry(server.post(&format!("/v2/dlq/retry?dlqIds={}", d[0]))).await;
    assert_eq!(new_ids.len(), 1);
    let body = json!({ "dlqIds": [d[1]] }).to_string();
    let more = retry(server.post("/v2/dlq/retry/").body(body)).await;
    assert_eq!(more.len(), 1);
    assert_eq!(listed(&server, "").await, [d[2].as_str()]);
    let last = retry(server.post("/v2/dlq/retry?label=y")).await;
    assert_eq!(last.len(), 1);
    let all: BTreeSet<String> = new_ids.into_iter().chain(more).chain(last).collect();
    assert_eq!(all.len(), 3);
    for id in &all {
        server.wait_for_state(id, "DELIVERED").await;
    }
    assert_eq!(get_ok(&server, "/v2/dlq").await, json!({ "messages": [] }));
    assert!(retry(server.post("/v2/dlq/retry")).await.is_empty());
}

/// Explicit ids are bounded per call, as for bulk cancel (SQLite bounds the values a statement
/// carries: a long enough list was once an internal error), however many name one entry.
#[tokio::test]
async fn bulk_dlq_calls_name_at_most_a_thousand_ids() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let entries = three_entries(&server, &receiver).await;
    receiver.script("/a", vec![Reply::Status(200)]);
    let d: Vec<&String> = entries.iter().map(|(_, dlq_id)| dlq_id).collect();
    let unknown: Vec<String> = (0..1000).map(|i| format!("1700000000000-{i}")).collect();
    // The query's ids and the body's count together.
    let body = json!({ "dlqIds": unknown }).to_string();
    let too_many = [
        server.delete(&format!("/v2/dlq?dlqIds={}", d[0])).body(body.clone()),
        server.post(&format!("/v2/dlq/retry?dlqIds={}", d[0])).body(body),
    ];
    for request in too_many {
        expect_error(request, StatusCode::BAD_REQUEST, "at most 1000 DLQ ids per call").await;
    }
    assert_eq!(listed(&server, "").await.len(), 3, "nothing deleted or retried");

    // A thousand is fine: one entry named a thousand times is retried once.
    let body = json!({ "dlqIds": vec![d[0]; 1000] }).to_string();
    let (status, json) = send(server.post("/v2/dlq/retry").body(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(json["responses"].as_array().map(Vec::len), Some(1), "{json}");
    let mut ids = unknown[..999].to_vec();
    ids.push(d[1].clone());
    let (status, json) = send(server.delete("/v2/dlq").body(json!({ "dlqIds": ids }).to_string())).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "deleted": 1 })));
    assert_eq!(listed(&server, "").await, [d[2].as_str()]);
}
