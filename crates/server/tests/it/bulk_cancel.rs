//! `count` on bulk cancel (spec §5.4.3): a filtered or "all" cancel covers every match in one
//! call whatever `count` says. The official TS SDK (2.12.0) sends `count=100` with every such
//! cancel and documents that the server ignores it ("no batching loop is needed"), so honouring
//! it would leave all but 100 messages of a `cancel({ all: true })` pending.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;

async fn cancel(server: &TestServer, query: &str) -> serde_json::Value {
    let (status, json) = send(server.delete(&format!("/v2/messages?{query}"))).await;
    assert_eq!(status, StatusCode::OK, "DELETE /v2/messages?{query}: {json}");
    json
}

/// Publishes `count` pending messages in one batch; returns their ids.
async fn publish_many_pending(server: &TestServer, url: &str, count: usize, label: &str) -> Vec<String> {
    let items: Vec<_> = (0..count)
        .map(|i| {
            json!({ "destination": url, "headers": { "Upstash-Delay": "1h", "Upstash-Label": label }, "body": format!("{i}") })
        })
        .collect();
    let (status, json) = send(server.post("/v2/batch").json(&items)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json.as_array().expect("results").iter().map(|item| item["messageId"].as_str().expect("id").to_string()).collect()
}

#[tokio::test]
async fn a_filtered_or_all_cancel_covers_every_match_whatever_count_says() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let picked = publish_many_pending(&server, &receiver.url("/picked"), 130, "picked").await;
    let other = publish_many_pending(&server, &receiver.url("/other"), 120, "other").await;

    // What `messages.cancel({ filter: { label } })` of the TS SDK sends.
    assert_eq!(cancel(&server, "label=picked&count=100").await, json!({ "cancelled": 130 }));
    assert!(!is_pending(&server, &picked[129]).await);
    assert!(is_pending(&server, &other[0]).await, "the filter narrows");
    // What `messages.cancel({ all: true })` sends.
    assert_eq!(cancel(&server, "count=100").await, json!({ "cancelled": 120 }));
    assert!(!is_pending(&server, &other[119]).await);
    assert_eq!(cancel(&server, "count=1").await, json!({ "cancelled": 0 }));
}

#[tokio::test]
async fn a_message_whose_cancel_waits_for_its_attempt_is_not_cancelled_twice() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/held", vec![Reply::Hold(200)]);
    let running = server.publish_ok(&receiver.url("/held"), &[], "x").await;
    receiver.wait_in_flight("/held", 1).await;
    let waiting = publish_pending(&server, &receiver.url("/later"), &[]).await;

    assert_eq!(cancel(&server, "").await, json!({ "cancelled": 2 }));
    assert_eq!(server.log_states(&running).await.last().map(String::as_str), Some("CANCEL_REQUESTED"));
    assert!(!is_pending(&server, &waiting).await);
    // Its cancel is recorded already: a second call finds nothing left to cancel.
    assert_eq!(cancel(&server, "").await, json!({ "cancelled": 0 }));

    receiver.release("/held", 1);
    server.wait_for_state(&running, "CANCELED").await;
}

#[tokio::test]
async fn a_count_that_is_not_a_number_is_refused_and_cancels_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let pending = publish_pending(&server, &receiver.url("/f"), &[]).await;
    expect_error(server.delete("/v2/messages?count=one"), StatusCode::BAD_REQUEST, "count").await;
    assert!(is_pending(&server, &pending).await);
}
