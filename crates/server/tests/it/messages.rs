//! Messages (spec §5.4, §6.1): the shape of `GET /v2/messages/{id}`, how long finished
//! messages stay readable, and cancelling one or many.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_message_has_the_documented_shape() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = format!("{}?a=1", receiver.url("/shape"));
    let created = server.now_ms();
    let request = server
        .post(&format!("/v2/publish/{url}"))
        .header("Content-Type", "text/plain")
        .header("upstash-forward-test-header", "test-value")
        .header("Upstash-Forward-X-Multi", "one")
        .header("Upstash-Forward-X-Multi", "two, three")
        .header("Upstash-Forward-Upstash-Workflow-Sdk-Version", "1")
        .header("Upstash-Method", "put")
        .header("Upstash-Retries", "2")
        .header("Upstash-Retry-Delay", "1000 * (1 + retried)")
        .header("Upstash-Delay", "90s")
        .header("Upstash-Label", "a,b")
        .header("Upstash-Telemetry-Sdk", "ignored")
        .header("X-Not-Forwarded", "dropped")
        .body("hello");
    let (status, published) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    let id = published["messageId"].as_str().unwrap();
    assert_eq!(published, json!({ "messageId": id }));
    assert!(id.starts_with("msg_"), "{id}");

    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    let expected = json!({
        "messageId": id,
        "url": url,
        "method": "PUT",
        "header": {
            "Content-Type": ["text/plain"],
            "Test-Header": ["test-value"],
            "X-Multi": ["one", "two, three"],
            "Upstash-Workflow-Sdk-Version": ["1"],
        },
        "body": "hello",
        "maxRetries": 2,
        "retryDelayExpression": "1000 * (1 + retried)",
        "notBefore": created + 90_000,
        "createdAt": created,
        "callerIP": "127.0.0.1",
        "callerIp": "127.0.0.1",
        "label": "a",
        "labels": ["a", "b"],
    });
    assert_eq!(message, expected);
}

#[tokio::test]
async fn optional_message_fields_are_omitted_or_encoded() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let now = server.now_ms();

    // Defaults: no body, no labels, no flow control, notBefore = createdAt.
    let url = receiver.url("/opt");
    let id = server.publish_ok(&url, &[], "").await;
    server.wait_for_state(&id, "DELIVERED").await;
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    let expected = json!({
        "messageId": id, "url": url, "method": "POST", "maxRetries": 3,
        "notBefore": now, "createdAt": now, "callerIP": "127.0.0.1", "callerIp": "127.0.0.1",
    });
    assert_eq!(message, expected);

    let url = format!("{NOWHERE}/opt");

    // A body that is not UTF-8 comes back as base64 under bodyBase64.
    let bytes = vec![0xff, 0x00, 0xfe, b'a'];
    let request = server.post(&format!("/v2/publish/{url}")).header("Upstash-Delay", "1h").body(bytes.clone());
    let (_, published) = send(request).await;
    let id = published["messageId"].as_str().unwrap();
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!(message["bodyBase64"], json!(b64(&bytes)));
    assert!(message.get("body").is_none(), "{message}");
    assert_no_nulls(&message);

    // Flow control: only the values given, and the period (default 1 s).
    let flow = [("Upstash-Flow-Control-Key", "fk"), ("Upstash-Flow-Control-Value", "parallelism=2")];
    let id = publish_pending(&server, &url, &flow).await;
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!(
        (message["flowControlKey"].clone(), message["parallelism"].clone(), message["period"].clone()),
        (json!("fk"), json!(2), json!(1))
    );
    assert!(message.get("rate").is_none(), "{message}");
    let flow = [("Upstash-Flow-Control-Key", "rk"), ("Upstash-Flow-Control-Value", "rate=20, period=1h30m3s")];
    let id = publish_pending(&server, &url, &flow).await;
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!((message["rate"].clone(), message["period"].clone()), (json!(20), json!(5403)));
    assert!(message.get("parallelism").is_none(), "{message}");
    assert_no_nulls(&message);
}

#[tokio::test]
async fn finished_messages_stay_readable_for_the_visibility_window() {
    let server = TestServer::start_with(|config| config.retention.finished_message_visibility = "10m".into()).await;
    let receiver = Receiver::start().await;
    let id = server.publish_ok(&receiver.url("/done"), &[], "done").await;
    server.wait_for_state(&id, "DELIVERED").await;
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!((message["messageId"].as_str(), message["body"].as_str()), (Some(id.as_str()), Some("done")));
    server.advance(Duration::from_secs(600));
    get_ok(&server, &format!("/v2/messages/{id}")).await;
    server.advance(Duration::from_secs(1));
    expect_error(server.get(&format!("/v2/messages/{id}")), StatusCode::NOT_FOUND, &id).await;
    // A pending message never expires from view.
    let pending = publish_pending(&server, &receiver.url("/pending"), &[("Upstash-Delay", "2h")]).await;
    server.advance(Duration::from_secs(3600));
    get_ok(&server, &format!("/v2/messages/{pending}")).await;
}

#[tokio::test]
async fn cancelling_a_pending_message_stops_its_delivery() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let id = publish_pending(&server, &receiver.url("/cancelled"), &[]).await;
    let (status, json) = send(server.delete(&format!("/v2/messages/{id}"))).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "cancelled": 1 })));
    assert_eq!(server.log_states(&id).await, ["CREATED", "CANCEL_REQUESTED", "CANCELED"]);
    // Cancelling again finds it finished.
    let (status, json) = send(server.delete(&format!("/v2/messages/{id}"))).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "cancelled": 0 })));
    server.advance(Duration::from_secs(7200));
    receiver.assert_count_stays(&server, "/cancelled", 0).await;
    assert_eq!(server.log_states(&id).await, ["CREATED", "CANCEL_REQUESTED", "CANCELED"]);
}

#[tokio::test]
async fn cancelling_a_delivered_message_cancels_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let id = server.publish_ok(&receiver.url("/delivered"), &[], "x").await;
    server.wait_for_state(&id, "DELIVERED").await;
    let (status, json) = send(server.delete(&format!("/v2/messages/{id}"))).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "cancelled": 0 })));
    assert_eq!(server.log_states(&id).await, ["CREATED", "ACTIVE", "DELIVERED"]);
    let unknown = "msg_7hZCxZCuWyyTWPmSVBrNC1RADwpgWxPcak2rQD51EMjFMuzcW7qYXpPiDyw";
    expect_error(server.delete(&format!("/v2/messages/{unknown}")), StatusCode::NOT_FOUND, unknown).await;
}

/// Publishes pending messages to `NOWHERE`: `(path, label)` each; returns their ids.
async fn pending_set(server: &TestServer, specs: &[(&str, &str)]) -> Vec<String> {
    let mut ids = Vec::new();
    for (path, label) in specs {
        ids.push(publish_pending(server, &format!("{NOWHERE}{path}"), &[("Upstash-Label", label)]).await);
    }
    ids
}

async fn assert_pending(server: &TestServer, ids: &[&String], expected: bool) {
    for id in ids {
        assert_eq!(is_pending(server, id).await, expected, "{id}: {:?}", server.log_states(id).await);
    }
}

async fn bulk_cancel(request: reqwest::RequestBuilder) -> u64 {
    let (status, json) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json.as_object().map(|o| o.len()), Some(1), "only cancelled: {json}");
    json["cancelled"].as_u64().expect("cancelled")
}

#[tokio::test]
async fn bulk_cancel_by_ids_in_the_query_or_the_body() {
    let server = TestServer::start().await;
    let ids = pending_set(&server, &[("/a", "x"), ("/b", "x"), ("/c", "x"), ("/d", "x")]).await;
    let unknown = "msg_7hZCxZCuWyyTWPmSVBrNC1RADwpgWxPcak2rQD51EMjFMuzcW7qYXpPiDyw";
    let query = format!("/v2/messages?messageIds={}&messageIds={}&messageIds={unknown}", ids[0], ids[1]);
    assert_eq!(bulk_cancel(server.delete(&query)).await, 2);
    assert_pending(&server, &[&ids[0], &ids[1]], false).await;
    assert_pending(&server, &[&ids[2], &ids[3]], true).await;
    // Cancelled ones are skipped, not counted again.
    assert_eq!(bulk_cancel(server.delete(&format!("/v2/messages?messageIds={}", ids[0]))).await, 0);

    let body = json!({ "messageIds": [ids[2], unknown, "garbage"] }).to_string();
    assert_eq!(bulk_cancel(server.delete("/v2/messages").body(body)).await, 1);
    assert_pending(&server, &[&ids[2]], false).await;
    assert_pending(&server, &[&ids[3]], true).await;
    // An empty id list cancels nothing (it is not "all").
    let body = json!({ "messageIds": [] }).to_string();
    assert_eq!(bulk_cancel(server.delete("/v2/messages").body(body)).await, 0);
    assert_pending(&server, &[&ids[3]], true).await;
    assert_eq!(server.log_states(&ids[0]).await, ["CREATED", "CANCEL_REQUESTED", "CANCELED"]);
}

#[tokio::test]
async fn bulk_cancel_by_filter_or_all() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let delivered = server.publish_ok(&receiver.url("/now"), &[("Upstash-Label", "x")], "x").await;
    server.wait_for_state(&delivered, "DELIVERED").await;
    let ids = pending_set(&server, &[("/a", "x"), ("/b", "x"), ("/a", "y"), ("/c", "z"), ("/d", "w")]).await;

    assert_eq!(bulk_cancel(server.delete("/v2/messages?label=x")).await, 2);
    assert_pending(&server, &[&ids[0], &ids[1]], false).await;
    assert_pending(&server, &[&ids[2], &ids[3], &ids[4]], true).await;

    let url = format!("{NOWHERE}/a");
    assert_eq!(bulk_cancel(server.delete(&format!("/v2/messages?url={url}"))).await, 1);
    assert_pending(&server, &[&ids[2]], false).await;
    assert_pending(&server, &[&ids[3], &ids[4]], true).await;

    // No filter at all: everything still pending (an empty JSON body with a JSON content type).
    let request = server.delete("/v2/messages").header("Content-Type", "application/json");
    assert_eq!(bulk_cancel(request).await, 2);
    assert_pending(&server, &[&ids[3], &ids[4]], false).await;
    assert_eq!(server.log_states(&delivered).await, ["CREATED", "ACTIVE", "DELIVERED"]);
    assert_eq!(bulk_cancel(server.delete("/v2/messages")).await, 0);
}

#[tokio::test]
async fn bulk_cancel_counts_messages_waiting_for_a_retry() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/flaky", vec![Reply::Status(500)]);
    let retrying = server.publish_ok(&receiver.url("/flaky"), &[("Upstash-Retries", "3")], "x").await;
    server.wait_for_state(&retrying, "RETRY").await;
    let pending = publish_pending(&server, &receiver.url("/later"), &[]).await;
    assert_eq!(bulk_cancel(server.delete("/v2/messages/")).await, 2);
    assert!(server.log_states(&retrying).await.ends_with(&["CANCEL_REQUESTED".into(), "CANCELED".into()]));
    assert!(!is_pending(&server, &pending).await);
    server.advance(Duration::from_secs(7200));
    receiver.assert_count_stays(&server, "/flaky", 1).await;
    receiver.assert_count_stays(&server, "/later", 0).await;
}
