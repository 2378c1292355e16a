//! What a small request may expand into is bounded while it is read and built, not after. A
//! batch counts its messages item by item (a URL group's endpoints included) and what they hold
//! of URLs and header lines (`limits.max_batch_bytes`, a group's endpoints and default headers
//! counted for each of its messages): the first item past a limit ends it with a 413, before the
//! rest is built. Headers given as JSON (a batch item's, a URL group's defaults) are counted line
//! by line as they are read, every line, whether a message keeps it or not.

use crate::harness::*;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

const HEADER_LIMIT: usize = 1024;
const BATCH_LIMIT: usize = 64 * 1024;

async fn limited(max_batch_messages: usize) -> TestServer {
    TestServer::start_with(|config| {
        config.limits.max_header_bytes = HEADER_LIMIT;
        config.limits.max_batch_bytes = BATCH_LIMIT;
        config.limits.max_batch_messages = max_batch_messages;
    })
    .await
}

/// Creates the URL group `name` with `count` endpoints that are never contacted.
async fn group(server: &TestServer, name: &str, count: usize) {
    let endpoints: Vec<Value> = (0..count).map(|i| json!({"url": format!("{NOWHERE}/{name}/{i}")})).collect();
    let (status, json) =
        send(server.post(&format!("/v2/topics/{name}/endpoints")).json(&json!({"endpoints": endpoints}))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

async fn nothing_stored(server: &TestServer) {
    assert_eq!(get_ok(server, "/v2/logs").await["events"], json!([]));
}

#[tokio::test]
async fn the_first_item_past_the_message_limit_ends_the_batch() {
    let server = limited(20).await;
    group(&server, "seven", 7).await;
    let to_group = json!({"destination": "seven", "headers": {"Upstash-Delay": "1h"}});
    // The fourth item is never built: built, its unknown group (404) or its bad header (400)
    // would be the answer.
    for fourth in
        [json!({"destination": "missing"}), json!({"destination": NOWHERE, "headers": {"Upstash-Delay": "soon"}})]
    {
        let items = json!([to_group, to_group, to_group, fourth]);
        let message =
            expect_error(server.post("/v2/batch").json(&items), StatusCode::PAYLOAD_TOO_LARGE, "at most 20 messages")
                .await;
        assert!(!message.contains("item"), "the batch as a whole: {message}");
    }
    nothing_stored(&server).await;
    let (status, json) = send(server.post("/v2/batch").json(&json!([to_group, to_group]))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn what_a_batchs_messages_hold_is_bounded_with_a_groups_defaults_counted_per_message() {
    let server = limited(1000).await;
    group(&server, "wide", 4).await;
    // Within the message's own bound, and copied into each of the group's four messages.
    let defaults = json!({"headers": {"Upstash-Forward-Big": "b".repeat(HEADER_LIMIT - 100)}});
    let (status, json) = send(server.request(Method::PATCH, "/v2/topics/wide").json(&defaults)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let item = json!({"destination": "wide", "headers": {"Upstash-Delay": "1h"}});
    // Thirty-two small items make 128 messages, each with its copy of the defaults: over
    // 120 KiB from a request of 2 KiB.
    let items = vec![item.clone(); 32];
    assert!(serde_json::to_vec(&items).unwrap().len() < 2048);
    let message = expect_error(
        server.post("/v2/batch").json(&items),
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("at most {BATCH_LIMIT} bytes of URLs and headers"),
    )
    .await;
    assert!(!message.contains("item"), "the batch as a whole: {message}");
    nothing_stored(&server).await;

    let (status, json) = send(server.post("/v2/batch").json(&vec![item; 4])).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json.as_array().map(|results| results.len()), Some(4), "{json}");
}

#[tokio::test]
async fn headers_given_as_json_are_bounded_as_they_are_read() {
    let server = limited(20).await;
    // Lines no message keeps count too: a name with many empty values is as many lines.
    let values = vec![""; HEADER_LIMIT / "X-Plain".len() + 1];
    let item = json!({"destination": NOWHERE, "headers": {"Upstash-Delay": "1h", "X-Plain": values}});
    let message = expect_error(
        server.post("/v2/batch").json(&json!([{"destination": NOWHERE}, item])),
        StatusCode::BAD_REQUEST,
        &format!("at most {HEADER_LIMIT} bytes"),
    )
    .await;
    assert!(message.starts_with("batch item 1: "), "{message}");
    let nameless = json!([{"destination": NOWHERE, "headers": {"": "x"}}]);
    expect_error(server.post("/v2/batch").json(&nameless), StatusCode::BAD_REQUEST, "batch item 0: a header name")
        .await;
    let shape = json!([{"destination": NOWHERE, "headers": {"X-A": 1}}]);
    expect_error(server.post("/v2/batch").json(&shape), StatusCode::BAD_REQUEST, "batch item 0: invalid headers").await;
    nothing_stored(&server).await;

    // A URL group's defaults are read with every publish to it: all their lines are bounded.
    group(&server, "g", 1).await;
    let patch = |body: Value| server.request(Method::PATCH, "/v2/topics/g").json(&body);
    let plain = json!({"headers": {"X-Plain": "p".repeat(HEADER_LIMIT)}});
    expect_error(patch(plain), StatusCode::BAD_REQUEST, &format!("at most {HEADER_LIMIT} bytes")).await;
    expect_error(patch(json!({"headers": {"X-A": [1]}})), StatusCode::BAD_REQUEST, "invalid headers").await;
    expect_error(patch(json!({"headers": null})), StatusCode::BAD_REQUEST, "invalid headers").await;
    expect_error(patch(json!(null)), StatusCode::BAD_REQUEST, "the body must be").await;
    assert!(get_ok(&server, "/v2/topics/g").await.get("headers").is_none(), "nothing was set");
    let fits = json!({"headers": {"X-Plain": ["p".repeat(100), "q".repeat(100)]}});
    assert_eq!(send(patch(fits)).await.0, StatusCode::OK);
    let shown = get_ok(&server, "/v2/topics/g").await;
    assert_eq!(shown["headers"], json!({"X-Plain": ["p".repeat(100), "q".repeat(100)]}), "{shown}");
}
