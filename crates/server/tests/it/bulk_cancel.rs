//! `count` on bulk cancel (spec §5.4.3): a filtered or "all" cancel cancels at most `count`
//! messages (clamped to 1–500), oldest first, so that a caller looping "until `cancelled` is 0"
//! works through everything; with explicit ids, `count` is refused.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;

async fn cancel(server: &TestServer, query: &str) -> serde_json::Value {
    let (status, json) = send(server.delete(&format!("/v2/messages?{query}"))).await;
    assert_eq!(status, StatusCode::OK, "DELETE /v2/messages?{query}: {json}");
    json
}

async fn is_cancelled(server: &TestServer, id: &str) -> bool {
    server.log_states(id).await.last().map(String::as_str) == Some("CANCELED")
}

#[tokio::test]
async fn count_limits_a_filtered_or_all_cancel_to_the_oldest_matches() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let mut ids = Vec::new();
    for (path, label) in [("/a", "other"), ("/b", "picked"), ("/c", "picked"), ("/d", "picked"), ("/e", "picked")] {
        ids.push(publish_pending(&server, &receiver.url(path), &[("Upstash-Label", label)]).await);
    }
    let cancelled_now = |expected: &'static [bool]| {
        let (server, ids) = (&server, &ids);
        async move {
            for (id, expected) in ids.iter().zip(expected) {
                assert_eq!(is_cancelled(server, id).await, *expected, "{id}: {:?}", server.log_states(id).await);
            }
        }
    };

    // All, one at a time: the oldest.
    assert_eq!(cancel(&server, "count=1").await, json!({ "cancelled": 1 }));
    cancelled_now(&[true, false, false, false, false]).await;
    // A filter, one at a time: its oldest match.
    assert_eq!(cancel(&server, "label=picked&count=1").await, json!({ "cancelled": 1 }));
    cancelled_now(&[true, true, false, false, false]).await;
    // 0 is lowered to 1, anything beyond 500 to 500.
    assert_eq!(cancel(&server, "label=picked&count=0").await, json!({ "cancelled": 1 }));
    cancelled_now(&[true, true, true, false, false]).await;
    assert_eq!(cancel(&server, "count=100000").await, json!({ "cancelled": 2 }));
    cancelled_now(&[true, true, true, true, true]).await;
    assert_eq!(cancel(&server, "count=1").await, json!({ "cancelled": 0 }));

    // A count that is not a number, or beside explicit ids, is refused and cancels nothing.
    let pending = publish_pending(&server, &receiver.url("/f"), &[]).await;
    for query in ["count=one", &format!("messageIds={pending}&count=1")] {
        expect_error(server.delete(&format!("/v2/messages?{query}")), StatusCode::BAD_REQUEST, "count").await;
    }
    let body = json!({ "messageIds": [pending] });
    expect_error(server.delete("/v2/messages?count=1").json(&body), StatusCode::BAD_REQUEST, "count").await;
    assert!(is_pending(&server, &pending).await);
    // Without count, everything that matches.
    assert_eq!(cancel(&server, "").await, json!({ "cancelled": 1 }));
}

#[tokio::test]
async fn a_count_loop_gets_past_a_message_whose_attempt_is_running() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/held", vec![Reply::Hold(200)]);
    let running = server.publish_ok(&receiver.url("/held"), &[], "x").await;
    receiver.wait_in_flight("/held", 1).await;
    let waiting = publish_pending(&server, &receiver.url("/later"), &[]).await;

    // The running message is the oldest: its cancel waits for the attempt...
    assert_eq!(cancel(&server, "count=1").await, json!({ "cancelled": 1 }));
    assert_eq!(server.log_states(&running).await.last().map(String::as_str), Some("CANCEL_REQUESTED"));
    // ...and the next call cancels the next message rather than counting that one again.
    assert_eq!(cancel(&server, "count=1").await, json!({ "cancelled": 1 }));
    assert!(is_cancelled(&server, &waiting).await);
    assert_eq!(cancel(&server, "count=1").await, json!({ "cancelled": 0 }));

    receiver.release("/held", 1);
    server.wait_for_state(&running, "CANCELED").await;
}
