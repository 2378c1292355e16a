//! Callbacks and failure callbacks (spec §4.1, §9): when they fire, the exact request and body,
//! their configuration headers, their own logs and retries, and cancellation.

use crate::harness::*;
use crate::timeline::*;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tern_core::signing;

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

fn full(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    Reply::Full {
        status,
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body: body.to_string(),
    }
}

/// Checks what every callback delivery has in common (spec §9.3): a JSON body, signed for the
/// callback URL, its own message id. Returns the parsed body and the callback's message id.
fn check_callback_request(server: &TestServer, request: &Recorded, url: &str, source_id: &str) -> (Value, String) {
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("user-agent"), Some("Upstash-QStash"));
    let id = request.header("upstash-message-id").expect("callback message id").to_string();
    assert_ne!(id, source_id, "a callback is a message of its own");
    let token = request.header("upstash-signature").expect("callbacks are signed");
    let claims = signing::verify(token, CURRENT_KEY, &request.body, Some(url), server.now_ms() / 1000)
        .unwrap_or_else(|e| panic!("callback signature for {url}: {e}"));
    assert_eq!(claims.sub, url);
    let body: Value = serde_json::from_slice(&request.body).expect("callback body is JSON");
    (body, id)
}

/// The keys of a JSON object.
fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().expect("an object").keys().cloned().collect()
}

/// The §9.2 fields of a callback for a plain URL (no topic, endpoint or schedule).
const CALLBACK_KEYS: [&str; 13] = [
    "status",
    "header",
    "body",
    "retried",
    "maxRetries",
    "sourceMessageId",
    "url",
    "method",
    "sourceHeader",
    "sourceBody",
    "notBefore",
    "createdAt",
    "callerIP",
];

/// Asserts the key set: the §9.2 fields plus `extra`. tern adds `error` (a description of the
/// failure) when the attempt failed; nothing else.
fn assert_callback_keys(body: &Value, extra: &[&str], failed: bool) {
    let mut expected: BTreeSet<String> = CALLBACK_KEYS.iter().chain(extra).map(|k| k.to_string()).collect();
    if failed {
        expected.insert("error".into());
    }
    assert_eq!(keys(body), expected, "{body}");
}

#[tokio::test]
async fn callback_follows_every_attempt_with_the_documented_body() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver
        .script("/dest", vec![full(500, &[("X-Resp", "first")], "fail"), full(200, &[("X-Resp", "second")], "yay")]);
    let (dest, callback_url, failure_url) = (receiver.url("/dest"), receiver.url("/cb?k=v"), receiver.url("/fcb"));
    let headers = [
        ("Content-Type", "text/plain"),
        ("Upstash-Forward-X-Src", "src"),
        ("Upstash-Retries", "1"),
        ("Upstash-Retry-Delay", "1000"),
        ("Upstash-Callback", callback_url.as_str()),
        ("Upstash-Failure-Callback", failure_url.as_str()),
    ];
    let id = server.publish_ok(&dest, &headers, "source body").await;
    let source = message_json(&server, &id).await;
    assert_eq!(source["callback"], callback_url.as_str());
    assert_eq!(source["failureCallback"], failure_url.as_str());

    // After the failed first attempt.
    let first = receiver.wait_for("/cb", 1).await.remove(0);
    assert_eq!(first.method, Method::POST, "callbacks default to POST");
    assert_eq!(first.target, "/cb?k=v");
    assert_eq!(first.header("upstash-retried"), Some("0"));
    let (body, first_id) = check_callback_request(&server, &first, &callback_url, &id);
    assert_callback_keys(&body, &[], true);
    assert_eq!(body["status"], 500);
    assert_eq!(body["header"]["X-Resp"], json!(["first"]));
    assert_eq!(body["body"], base64("fail"));
    assert_eq!(body["retried"], 0);
    assert_eq!(body["maxRetries"], 1);
    assert_eq!(body["sourceMessageId"], id.as_str());
    assert_eq!(body["url"], dest.as_str());
    assert_eq!(body["method"], "POST");
    assert_eq!(body["sourceHeader"], json!({"Content-Type": ["text/plain"], "X-Src": ["src"]}));
    assert_eq!(body["sourceBody"], base64("source body"));
    assert_eq!(body["notBefore"], source["notBefore"]);
    assert_eq!(body["createdAt"], source["createdAt"]);
    assert_eq!(body["callerIP"], "127.0.0.1");
    assert!(body.get("topicName").is_none() && body.get("dlqId").is_none(), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("500")), "{body}");
    // The callback is a message with its own logs.
    assert_eq!(server.wait_for_state(&first_id, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);
    assert_eq!(message_json(&server, &first_id).await["url"], callback_url.as_str());

    // After the successful retry.
    expect_next_attempt_after(&server, &receiver, "/dest", &id, 1, 1, SECOND).await;
    let second = receiver.wait_for("/cb", 2).await.remove(1);
    let (body, second_id) = check_callback_request(&server, &second, &callback_url, &id);
    assert_ne!(second_id, first_id);
    assert_callback_keys(&body, &[], false);
    assert_eq!(body["status"], 200);
    assert_eq!(body["header"]["X-Resp"], json!(["second"]));
    assert_eq!(body["body"], base64("yay"));
    assert_eq!(body["retried"], 1);
    assert_eq!(body["maxRetries"], 1);
    assert_eq!(body["sourceMessageId"], id.as_str());
    server.wait_for_state(&second_id, "DELIVERED").await;

    // Delivered: no failure callback, and no further callbacks.
    server.wait_for_state(&id, "DELIVERED").await;
    server.advance(DAY);
    receiver.assert_count_stays(&server, "/cb", 2).await;
    receiver.assert_count_stays(&server, "/fcb", 0).await;
}

#[tokio::test]
async fn failure_callback_fires_once_when_failed_with_the_dlq_id() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/dest", vec![full(500, &[], "nope")]);
    let (callback_url, failure_url) = (receiver.url("/cb"), receiver.url("/fcb"));
    let headers = [
        ("Upstash-Retries", "1"),
        ("Upstash-Retry-Delay", "1000"),
        ("Upstash-Callback", callback_url.as_str()),
        ("Upstash-Failure-Callback", failure_url.as_str()),
    ];
    let id = server.publish_ok(&receiver.url("/dest"), &headers, "doomed").await;
    receiver.wait_for("/cb", 1).await;
    receiver.assert_count_stays(&server, "/fcb", 0).await;

    expect_next_attempt_after(&server, &receiver, "/dest", &id, 1, 1, SECOND).await;
    server.wait_for_state(&id, "FAILED").await;
    let request = receiver.wait_for("/fcb", 1).await.remove(0);
    let callbacks = receiver.wait_for("/cb", 2).await;
    let (body, failure_id) = check_callback_request(&server, &request, &failure_url, &id);
    assert_callback_keys(&body, &["dlqId"], true);
    let entry = dlq_entry(&server, &id).await;
    assert_eq!(body["dlqId"], entry["dlqId"]);
    assert_eq!(body["status"], 500);
    assert_eq!(body["body"], base64("nope"));
    assert_eq!(body["retried"], 1);
    assert_eq!(body["maxRetries"], 1);
    assert_eq!(body["sourceMessageId"], id.as_str());
    assert_eq!(body["sourceBody"], base64("doomed"));
    let callback_ids: BTreeSet<_> =
        callbacks.iter().map(|r| r.header("upstash-message-id").unwrap().to_string()).collect();
    assert_eq!(callback_ids.len(), 2);
    assert!(!callback_ids.contains(&failure_id));
    // The last callback also reports the final attempt (retried == maxRetries).
    let last: Value = serde_json::from_slice(&callbacks[1].body).unwrap();
    assert_eq!((last["retried"].clone(), last["maxRetries"].clone()), (json!(1), json!(1)));
    assert!(last.get("dlqId").is_none());
    assert_eq!(server.wait_for_state(&failure_id, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);

    server.advance(DAY * 2);
    receiver.assert_count_stays(&server, "/fcb", 1).await;
    receiver.assert_count_stays(&server, "/cb", 2).await;
}

#[tokio::test]
async fn callback_configuration_headers_shape_each_callback() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/dest", vec![Reply::Status(500)]);
    let (callback_url, failure_url) = (receiver.url("/cb"), receiver.url("/fcb"));
    let headers = [
        ("Upstash-Retries", "0"),
        ("Upstash-Callback", callback_url.as_str()),
        ("Upstash-Callback-Method", "PUT"),
        ("Upstash-Callback-Delay", "10s"),
        ("Upstash-Callback-Forward-X-Cb", "cb-value"),
        ("Upstash-Failure-Callback", failure_url.as_str()),
        ("Upstash-Failure-Callback-Method", "PATCH"),
        ("Upstash-Failure-Callback-Forward-Y-Fcb", "fcb-value"),
    ];
    let id = server.publish_ok(&receiver.url("/dest"), &headers, "configured").await;
    let message = message_json(&server, &id).await;
    assert_eq!(message["callback"], callback_url.as_str());
    assert_eq!(message["failureCallback"], failure_url.as_str());
    assert_eq!(message["callbackHeader"], json!({"X-Cb": ["cb-value"]}));
    assert_eq!(message["failureCallbackHeader"], json!({"Y-Fcb": ["fcb-value"]}));
    assert!(message["header"].get("X-Cb").is_none() && message["header"].get("Y-Fcb").is_none(), "{message}");
    let destination = receiver.wait_for("/dest", 1).await.remove(0);
    assert!(destination.header("x-cb").is_none() && destination.header("y-fcb").is_none());

    // The failure callback is not delayed; it carries only its own forwarded header.
    server.wait_for_state(&id, "FAILED").await;
    let failure = receiver.wait_for("/fcb", 1).await.remove(0);
    assert_eq!(failure.method, Method::PATCH);
    assert_eq!(failure.header("y-fcb"), Some("fcb-value"));
    assert!(failure.header("x-cb").is_none());
    check_callback_request(&server, &failure, &failure_url, &id);

    // The callback waits for its delay.
    receiver.assert_count_stays(&server, "/cb", 0).await;
    expect_request_after(&server, &receiver, "/cb", 0, Duration::from_secs(10)).await;
    let callback = receiver.requests_to("/cb").remove(0);
    assert_eq!(callback.method, Method::PUT);
    assert_eq!(callback.header("x-cb"), Some("cb-value"));
    assert!(callback.header("y-fcb").is_none());
    let (body, callback_id) = check_callback_request(&server, &callback, &callback_url, &id);
    assert_eq!(body["status"], 500);
    let callback_message = message_json(&server, &callback_id).await;
    assert_eq!(callback_message["method"], "PUT");
    assert_eq!(callback_message["header"]["X-Cb"], json!(["cb-value"]));
}

#[tokio::test]
async fn a_failing_callback_is_retried_per_its_own_configuration() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/cb", vec![full(500, &[], "callback down")]);
    let callback_url = receiver.url("/cb");
    let headers = [
        ("Upstash-Retries", "3"),
        ("Upstash-Callback", callback_url.as_str()),
        ("Upstash-Callback-Retries", "1"),
        ("Upstash-Callback-Retry-Delay", "2000"),
    ];
    let id = server.publish_ok(&receiver.url("/dest"), &headers, "fine").await;
    let first = receiver.wait_for("/cb", 1).await.remove(0);
    let callback_id = first.header("upstash-message-id").unwrap().to_string();
    let callback_message = message_json(&server, &callback_id).await;
    assert_eq!(callback_message["maxRetries"], 1);
    assert_eq!(callback_message["retryDelayExpression"], "2000");

    expect_next_attempt_after(&server, &receiver, "/cb", &callback_id, 1, 1, Duration::from_secs(2)).await;
    let states = server.wait_for_state(&callback_id, "FAILED").await;
    assert_eq!(states, ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR", "FAILED"]);
    assert_eq!(retried_headers(&receiver, "/cb"), ["0", "1"]);
    let requests = receiver.requests_to("/cb");
    assert_eq!(requests[1].header("upstash-message-id"), Some(callback_id.as_str()), "a retry, not a new callback");
    assert_eq!(requests[0].body, requests[1].body, "the retry resends the same report");
    assert_eq!(dlq_entry(&server, &callback_id).await["responseBody"], "callback down");
    // The source is unaffected by its callback's failure.
    assert_eq!(server.log_states(&id).await, ["CREATED", "ACTIVE", "DELIVERED"]);
    server.advance(DAY * 2);
    receiver.assert_count_stays(&server, "/cb", 2).await;

    // Without callback retries configured, the callback gets the source's retries.
    let other_url = receiver.url("/cb2");
    let headers = [("Upstash-Retries", "2"), ("Upstash-Callback", other_url.as_str())];
    server.publish_ok(&receiver.url("/dest"), &headers, "defaults").await;
    let request = receiver.wait_for("/cb2", 1).await.remove(0);
    let other_id = request.header("upstash-message-id").unwrap();
    assert_eq!(message_json(&server, other_id).await["maxRetries"], 2);
}

async fn cancel(server: &TestServer, id: &str) {
    let (status, json) = send(server.delete(&format!("/v2/messages/{id}"))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["cancelled"], 1);
}

#[tokio::test]
async fn cancelled_messages_fire_no_callbacks() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/fail", vec![Reply::Status(500)]);
    receiver.script("/hang", vec![Reply::Hang]);
    let (callback_url, failure_url) = (receiver.url("/cb"), receiver.url("/fcb"));
    let callbacks = [("Upstash-Callback", callback_url.as_str()), ("Upstash-Failure-Callback", failure_url.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        callbacks.iter().copied().chain(extra.iter().copied()).collect()
    };

    // Cancelled before its first attempt.
    let delayed = server.publish_ok(&receiver.url("/delayed"), &with(&[("Upstash-Delay", "10s")]), "d").await;
    cancel(&server, &delayed).await;
    assert_eq!(server.log_states(&delayed).await, ["CREATED", "CANCEL_REQUESTED", "CANCELED"]);

    // Cancelled while waiting for a retry: only the first attempt's callback.
    let retry = [("Upstash-Retries", "2"), ("Upstash-Retry-Delay", "1000")];
    let retrying = server.publish_ok(&receiver.url("/fail"), &with(&retry), "r").await;
    receiver.wait_for("/cb", 1).await;
    wait_for_count(&server, &retrying, "RETRY", 1).await;
    cancel(&server, &retrying).await;
    server.wait_for_state(&retrying, "CANCELED").await;

    // Cancelled while an attempt is in flight: the attempt ends, no callback follows.
    let timeout = [("Upstash-Retries", "2"), ("Upstash-Timeout", "5s")];
    let in_flight = server.publish_ok(&receiver.url("/hang"), &with(&timeout), "h").await;
    receiver.wait_for("/hang", 1).await;
    server.wait_for_state(&in_flight, "ACTIVE").await;
    cancel(&server, &in_flight).await;
    server.advance(Duration::from_secs(5));
    let states = server.wait_for_state(&in_flight, "CANCELED").await;
    assert_eq!(states.first().map(String::as_str), Some("CREATED"));
    assert!(!states.contains(&"RETRY".to_string()) && !states.contains(&"FAILED".to_string()), "{states:?}");

    server.advance(DAY * 2);
    receiver.assert_count_stays(&server, "/delayed", 0).await;
    receiver.assert_count_stays(&server, "/fail", 1).await;
    receiver.assert_count_stays(&server, "/hang", 1).await;
    receiver.assert_count_stays(&server, "/cb", 1).await;
    receiver.assert_count_stays(&server, "/fcb", 0).await;
    let reported: Value = serde_json::from_slice(&receiver.requests_to("/cb")[0].body).unwrap();
    assert_eq!(reported["sourceMessageId"], retrying.as_str());
}

#[tokio::test]
async fn callbacks_report_attempts_without_a_response_and_nest_only_when_configured() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/hang", vec![Reply::Hang]);
    let (callback_url, nested_url) = (receiver.url("/cb"), receiver.url("/cb-of-cb"));
    let headers = [
        ("Upstash-Retries", "0"),
        ("Upstash-Timeout", "5s"),
        ("Upstash-Callback", callback_url.as_str()),
        ("Upstash-Callback-Callback", nested_url.as_str()),
    ];
    let id = server.publish_ok(&receiver.url("/hang"), &headers, "no answer").await;
    server.wait_for_state(&id, "ACTIVE").await;
    server.advance(Duration::from_secs(5));
    server.wait_for_state(&id, "FAILED").await;

    let request = receiver.wait_for("/cb", 1).await.remove(0);
    let (body, callback_id) = check_callback_request(&server, &request, &callback_url, &id);
    assert_eq!(body["status"], 0, "no response: status 0");
    assert_eq!(body["header"], json!({}));
    assert_eq!(body["body"], "");
    assert_eq!(body["maxRetries"], 0);

    // `Upstash-Callback-Callback` configures a callback of the callback message.
    let nested = receiver.wait_for("/cb-of-cb", 1).await.remove(0);
    let (nested_body, nested_id) = check_callback_request(&server, &nested, &nested_url, &callback_id);
    assert_eq!(nested_body["sourceMessageId"], callback_id.as_str());
    assert_eq!(nested_body["url"], callback_url.as_str());
    assert_eq!(nested_body["status"], 200);
    assert_eq!(nested_body["sourceBody"], base64(&request.body));
    // The nested callback has no callback of its own.
    server.wait_for_state(&nested_id, "DELIVERED").await;
    server.advance(DAY);
    receiver.assert_count_stays(&server, "/cb", 1).await;
    receiver.assert_count_stays(&server, "/cb-of-cb", 1).await;
}
