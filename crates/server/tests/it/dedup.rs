//! Deduplication (spec §16): explicit ids and content hashes suppress duplicates for the
//! window, per destination URL and per user; a duplicate answers 202 with the first id.

use crate::harness::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_deduplication_id_suppresses_duplicates_for_the_window() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/dedup");
    let dedup = [("Upstash-Deduplication-Id", "order-42")];
    let first = server.publish_ok(&url, &dedup, "one").await;
    let (status, json) = server.publish(&url, &dedup, "two").await;
    assert_eq!((status, json), (StatusCode::ACCEPTED, json!({ "messageId": first, "deduplicated": true })));
    server.wait_for_state(&first, "DELIVERED").await;
    receiver.assert_count_stays(&server, "/dedup", 1).await;
    assert_eq!(receiver.requests_to("/dedup")[0].body.as_ref(), b"one");

    // Only the first message exists.
    let (_, logs) = send(server.get("/v2/logs")).await;
    let ids: Vec<&str> = logs["events"].as_array().unwrap().iter().map(|e| e["messageId"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == first), "{ids:?}");

    // The same id for another URL is not a duplicate.
    let other = server.publish_ok(&receiver.url("/dedup-other"), &dedup, "three").await;
    assert_ne!(other, first);
    receiver.wait_for("/dedup-other", 1).await;

    // Still a duplicate just before the window (10 minutes) ends, a new message after it.
    server.advance(Duration::from_secs(599));
    let (status, json) = server.publish(&url, &dedup, "four").await;
    assert_eq!((status, json["messageId"].as_str()), (StatusCode::ACCEPTED, Some(first.as_str())));
    server.advance(Duration::from_secs(2));
    let (status, json) = server.publish(&url, &dedup, "five").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let fresh = json["messageId"].as_str().unwrap().to_string();
    assert_ne!(fresh, first);
    assert_eq!(json, json!({ "messageId": fresh }));
    let requests = receiver.wait_for("/dedup", 2).await;
    assert_eq!(requests[1].body.as_ref(), b"five");
    // And that new message starts a new window.
    let (status, json) = server.publish(&url, &dedup, "six").await;
    assert_eq!((status, json["messageId"].as_str()), (StatusCode::ACCEPTED, Some(fresh.as_str())));
}

#[tokio::test]
async fn deduplication_ids_are_per_user() {
    let server = TestServer::start().await;
    let url = format!("{}/x", crate::support::NOWHERE);
    let headers = [("Upstash-Deduplication-Id", "shared"), ("Upstash-Delay", "1h")];
    let mine = server.publish_ok(&url, &headers, "x").await;
    let request = server
        .http
        .request(Method::POST, format!("{}/v2/publish/{url}", server.url))
        .bearer_auth(OTHER_TOKEN)
        .header("Upstash-Deduplication-Id", "shared")
        .header("Upstash-Delay", "1h")
        .body("x");
    let (status, json) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_ne!(json["messageId"].as_str(), Some(mine.as_str()));
}

#[tokio::test]
async fn content_based_deduplication_hashes_body_headers_and_destination() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/content");
    let headers = [
        ("Upstash-Content-Based-Deduplication", "true"),
        ("Content-Type", "text/plain"),
        ("Upstash-Forward-X-Key", "1"),
    ];
    let first = server.publish_ok(&url, &headers, "same").await;
    let (status, json) = server.publish(&url, &headers, "same").await;
    assert_eq!((status, json), (StatusCode::ACCEPTED, json!({ "messageId": first, "deduplicated": true })));
    // The Python SDK spells the flag `True`.
    let mut python = headers;
    python[0].1 = "True";
    let (status, _) = server.publish(&url, &python, "same").await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let mut created = vec![first.clone()];
    created.push(server.publish_ok(&url, &headers, "different").await);
    let mut other_header = headers;
    other_header[2].1 = "2";
    created.push(server.publish_ok(&url, &other_header, "same").await);
    let mut other_type = headers;
    other_type[1].1 = "application/json";
    created.push(server.publish_ok(&url, &other_type, "same").await);
    created.push(server.publish_ok(&receiver.url("/content-2"), &headers, "same").await);
    // Without the flag nothing is deduplicated.
    created.push(server.publish_ok(&url, &headers[1..], "same").await);
    created.push(server.publish_ok(&url, &headers[1..], "same").await);
    let mut unique = created.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), created.len(), "{created:?}");
    receiver.wait_for("/content", 6).await;
    receiver.assert_count_stays(&server, "/content", 6).await;
}
