//! A URL group's default publish headers (`PATCH /v2/topics/{name}`, from QStash's webhook
//! guide): applied under each publish's own headers — publish, enqueue, batch and schedule ticks alike.

use crate::harness::*;
use crate::schedule_support::*;
use crate::support::*;
use crate::timeline::message_json;
use axum::http::StatusCode;
use serde_json::{Value, json};

async fn patch(server: &TestServer, group: &str, body: Value) -> (StatusCode, Value) {
    send(server.request(axum::http::Method::PATCH, &format!("/v2/topics/{group}")).json(&body)).await
}

/// The message ids of a fan-out response, in endpoint order.
fn fanned_out(json: &Value) -> Vec<String> {
    json.as_array()
        .unwrap_or_else(|| panic!("an array: {json}"))
        .iter()
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn default_headers_configure_every_publish_to_the_group_under_its_own() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let endpoints = json!({"endpoints": [{"url": receiver.url("/a")}, {"url": receiver.url("/b")}]});
    let (status, _) = send(server.post("/v2/topics/hooks/endpoints").json(&endpoints)).await;
    assert_eq!(status, StatusCode::OK);
    // The webhook guide's example: forward every incoming header, and a retry count.
    let defaults = json!({"headers": {"Upstash-Header-Forward": ["true"], "Upstash-Retries": "0", "X-Default": "d"}});
    assert_eq!(patch(&server, "hooks", defaults).await, (StatusCode::OK, Value::Null));
    let group = get_ok(&server, "/v2/topics/hooks").await;
    let shown = json!({"Upstash-Header-Forward": ["true"], "Upstash-Retries": ["0"], "X-Default": ["d"]});
    assert_eq!(group["headers"], shown, "{group}");

    // A sender that cannot set Upstash-* headers: its own headers go through as they are.
    let (status, json) = server.publish("hooks", &[("X-Webhook-Signature", "sig")], "event").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    for (path, id) in ["/a", "/b"].iter().zip(fanned_out(&json)) {
        let request = receiver.wait_for(path, 1).await.remove(0);
        assert_eq!(request.header("x-webhook-signature"), Some("sig"));
        assert_eq!(request.header("x-default"), Some("d"));
        assert_eq!(message_json(&server, &id).await["maxRetries"], 0);
    }

    // The request's own headers win over the defaults, and a batch item gets them too.
    let own = [("Upstash-Retries", "2"), ("X-Default", "mine")];
    let (_, json) = server.publish("hooks", &own, "own").await;
    let id = &fanned_out(&json)[0];
    assert_eq!(receiver.wait_for("/a", 2).await[1].header("x-default"), Some("mine"));
    assert_eq!(message_json(&server, id).await["maxRetries"], 2);
    let batch = json!([{"destination": "hooks", "headers": {"X-Item": "i"}, "body": "batched"}]);
    let (status, json) = send(server.post("/v2/batch").json(&batch)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let request = receiver.wait_for("/b", 3).await.remove(2);
    assert_eq!((request.header("x-item"), request.header("x-default")), (Some("i"), Some("d")));
    // Enqueued to the group: the same defaults.
    let (status, json) = server.enqueue("queued", "hooks", &[], "enqueued").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let arrivals = receiver.wait_for("/a", 4).await;
    let enqueued = arrivals.iter().find(|request| request.body.as_ref() == b"enqueued").expect("enqueued arrival");
    assert_eq!(enqueued.header("x-default"), Some("d"));
    assert_eq!(message_json(&server, &fanned_out(&json)[0]).await["maxRetries"], 0);

    // An empty object clears them (here through the docs' other name of the resource).
    let clear = server.request(axum::http::Method::PATCH, "/v2/url-groups/hooks").json(&json!({"headers": {}}));
    assert_eq!(send(clear).await.0, StatusCode::OK);
    assert!(get_ok(&server, "/v2/topics/hooks").await.get("headers").is_none());
    let (_, json) = server.publish("hooks", &[("X-Webhook-Signature", "sig")], "plain").await;
    let request = receiver.wait_for("/a", 5).await.remove(4);
    assert_eq!((request.header("x-webhook-signature"), request.header("x-default")), (None, None));
    assert_eq!(message_json(&server, &fanned_out(&json)[0]).await["maxRetries"], 3, "the default retries");
}

#[tokio::test]
async fn a_schedule_to_the_group_gets_the_defaults_at_each_tick() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let endpoints = json!({"endpoints": [{"url": receiver.url("/tick")}]});
    assert_eq!(send(server.post("/v2/topics/ticks/endpoints").json(&endpoints)).await.0, StatusCode::OK);
    let id = create_ok(&server, "ticks", "* * * * *", &[], "tick").await;
    // Set after the schedule was created: a tick reads the group as it is then. A default
    // deduplication header does not deduplicate ticks (each would repeat the last one's body).
    let defaults = json!({"headers": {
        "Upstash-Forward-X-Default": "d",
        "Upstash-Retries": "1",
        "Upstash-Content-Based-Deduplication": "true"
    }});
    assert_eq!(patch(&server, "ticks", defaults).await.0, StatusCode::OK);
    let first = next_minute(server.now_ms());
    for (seen, tick) in [first, first + MINUTE_MS].into_iter().enumerate() {
        let request = expect_tick(&server, &receiver, "/tick", seen, tick).await;
        assert_eq!(request.header("x-default"), Some("d"));
        assert_eq!(request.header("upstash-schedule-id"), Some(id.as_str()));
        let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
        assert_eq!(message["maxRetries"], 1);
    }
}

#[tokio::test]
async fn invalid_defaults_and_unknown_groups_are_refused() {
    let server = TestServer::start().await;
    let endpoints = json!({"endpoints": [{"url": "http://127.0.0.1:9/x"}]});
    assert_eq!(send(server.post("/v2/topics/g/endpoints").json(&endpoints)).await.0, StatusCode::OK);
    let patch_request = |group: &str, body: Value| {
        server.request(axum::http::Method::PATCH, &format!("/v2/topics/{group}")).json(&body)
    };
    expect_error(patch_request("missing", json!({"headers": {}})), StatusCode::NOT_FOUND, "topic missing not found")
        .await;
    let bad_retries = json!({"headers": {"Upstash-Retries": "many"}});
    expect_error(patch_request("g", bad_retries), StatusCode::BAD_REQUEST, "retries").await;
    for refused in ["Upstash-Cron", "Upstash-Schedule-Id", "Upstash-Queue-Name", "Upstash-Not-Before"] {
        let body = json!({"headers": {refused: "1"}});
        expect_error(patch_request("g", body), StatusCode::BAD_REQUEST, &format!("{refused} cannot be a default"))
            .await;
    }
    expect_error(patch_request("g", json!({"other": 1})), StatusCode::BAD_REQUEST, "headers").await;
    let empty = server.request(axum::http::Method::PATCH, "/v2/topics/g");
    expect_error(empty, StatusCode::BAD_REQUEST, "headers").await;
    assert!(get_ok(&server, "/v2/topics/g").await.get("headers").is_none(), "nothing was stored");
}
