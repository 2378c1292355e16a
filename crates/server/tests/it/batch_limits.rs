//! A batch has a size limit of its own (`limits.max_batch_bytes`; spec §19: 100 MB per call)
//! while each of its messages stays within `limits.max_body_bytes`.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;

const BODY_LIMIT: usize = 64;
const BATCH_LIMIT: usize = 1024;

async fn small_limits() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.max_body_bytes = BODY_LIMIT;
        config.limits.max_batch_bytes = BATCH_LIMIT;
    })
    .await
}

#[tokio::test]
async fn a_batch_may_be_larger_than_one_message() {
    let server = small_limits().await;
    let receiver = Receiver::start().await;
    let items: Vec<_> = (0..4)
        .map(|i| json!({ "destination": receiver.url(&format!("/item{i}")), "body": "b".repeat(BODY_LIMIT) }))
        .collect();
    // Together larger than one message may be: each item is at the message limit.
    let (status, json) = send(server.post("/v2/batch").json(&items)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    for i in 0..4 {
        let delivered = receiver.wait_for(&format!("/item{i}"), 1).await;
        assert_eq!(delivered[0].body.len(), BODY_LIMIT);
    }
}

#[tokio::test]
async fn every_item_stays_within_the_message_limit_and_the_batch_within_its_own() {
    let server = small_limits().await;
    let receiver = Receiver::start().await;
    let items = json!([
        { "destination": receiver.url("/fits"), "body": "x" },
        { "destination": receiver.url("/too-big"), "body": "y".repeat(BODY_LIMIT + 1) },
    ]);
    let message = expect_error(server.post("/v2/batch").json(&items), StatusCode::PAYLOAD_TOO_LARGE, "64 bytes").await;
    assert!(message.contains("batch item 1"), "{message}");

    let items: Vec<_> =
        (0..20).map(|i| json!({ "destination": receiver.url(&format!("/many{i}")), "body": "z".repeat(40) })).collect();
    assert!(serde_json::to_vec(&items).unwrap().len() > BATCH_LIMIT);
    expect_error(server.post("/v2/batch").json(&items), StatusCode::PAYLOAD_TOO_LARGE, "1024 bytes").await;

    // Nothing of either was stored.
    assert_eq!(get_ok(&server, "/v2/logs").await["events"], json!([]));
    // A single publish keeps the message limit.
    let publish = server.post(&format!("/v2/publish/{}", receiver.url("/one"))).body("p".repeat(BODY_LIMIT + 1));
    expect_error(publish, StatusCode::PAYLOAD_TOO_LARGE, "64 bytes").await;
}

#[test]
fn the_default_batch_limit_is_the_specs_100_mb() {
    let config = tern_server::config::Config::defaults();
    assert_eq!(config.limits.max_batch_bytes, 100 << 20);
    assert!(config.limits.max_batch_bytes > config.limits.max_body_bytes);
}
