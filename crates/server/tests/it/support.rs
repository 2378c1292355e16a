//! Assertions and fixtures shared by the API tests: QStash-shaped errors, JSON without `null`,
//! pending (delayed) messages and DLQ entries.

#![allow(dead_code)]

use crate::harness::*;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::RequestBuilder;
use serde_json::Value;

/// A destination host that is never contacted: messages to it are published with a long
/// delay and the clock is never moved that far.
pub const NOWHERE: &str = "http://tern-test.invalid";

/// Sends `request` and asserts a QStash-shaped error: JSON content type and exactly
/// `{"error": "<non-empty text>"}`. Returns the status and the text.
pub async fn error_of(request: RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.expect("request reaches tern");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = response.bytes().await.expect("body");
    let text = String::from_utf8_lossy(&bytes).to_string();
    assert_eq!(content_type.as_deref(), Some("application/json"), "{status}: {text}");
    let json: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let object = json.as_object().unwrap_or_else(|| panic!("not an object: {text}"));
    assert_eq!(object.len(), 1, "{status}: only the error key expected: {text}");
    let message =
        object.get("error").and_then(|e| e.as_str()).unwrap_or_else(|| panic!("{status}: no error text: {text}"));
    assert!(!message.is_empty(), "empty error text");
    (status, message.to_string())
}

/// Asserts an error response with `status` whose text contains `fragment` (case-insensitive).
pub async fn expect_error(request: RequestBuilder, status: StatusCode, fragment: &str) -> String {
    let (got, message) = error_of(request).await;
    assert_eq!(got, status, "unexpected status, error {message:?}");
    assert!(
        message.to_ascii_lowercase().contains(&fragment.to_ascii_lowercase()),
        "error {message:?} does not mention {fragment:?}"
    );
    message
}

/// Asserts that `value` holds no `null` anywhere.
pub fn assert_no_nulls(value: &Value) {
    fn walk(value: &Value, path: &str) {
        match value {
            Value::Null => panic!("null at {path}"),
            Value::Array(items) => items.iter().enumerate().for_each(|(i, item)| walk(item, &format!("{path}[{i}]"))),
            Value::Object(map) => map.iter().for_each(|(key, item)| walk(item, &format!("{path}.{key}"))),
            _ => {}
        }
    }
    walk(value, "$");
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// The `messageId` of every log entry in a logs response, in order.
pub fn entry_ids(json: &Value) -> Vec<String> {
    json["events"].as_array().expect("events").iter().map(|e| e["messageId"].as_str().unwrap().to_string()).collect()
}

/// `(messageId, state)` of every log entry in a logs response, in order.
pub fn entry_states(json: &Value) -> Vec<(String, String)> {
    json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["messageId"].as_str().unwrap().to_string(), e["state"].as_str().unwrap().to_string()))
        .collect()
}

/// GETs `path` and asserts a 200 JSON answer.
pub async fn get_ok(server: &TestServer, path: &str) -> Value {
    let (status, json) = send(server.get(path)).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {json}");
    json
}

/// Publishes a message due in one hour to `url`; it stays pending while the clock stands.
pub async fn publish_pending(server: &TestServer, url: &str, headers: &[(&str, &str)]) -> String {
    let mut all = vec![("Upstash-Delay", "1h")];
    all.extend_from_slice(headers);
    server.publish_ok(url, &all, "pending").await
}

/// Whether the message is still waiting (its log ends with `CREATED`).
pub async fn is_pending(server: &TestServer, id: &str) -> bool {
    server.log_states(id).await.last().map(String::as_str) == Some("CREATED")
}

/// Publishes `body` with no retries to `path` on `receiver` (which should answer with an error),
/// waits until it failed, and returns its message id and DLQ id.
pub async fn dead_letter(
    server: &TestServer,
    receiver: &Receiver,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (String, String) {
    let mut all = vec![("Upstash-Retries", "0")];
    all.extend_from_slice(headers);
    let id = server.publish_ok(&receiver.url(path), &all, body).await;
    server.wait_for_state(&id, "FAILED").await;
    let json = get_ok(server, &format!("/v2/dlq?messageId={id}")).await;
    let dlq_id = json["messages"][0]["dlqId"].as_str().unwrap_or_else(|| panic!("no DLQ entry for {id}: {json}"));
    (id, dlq_id.to_string())
}

/// The `dlqId`s of a DLQ listing, in order.
pub fn dlq_ids(json: &Value) -> Vec<String> {
    json["messages"].as_array().expect("messages").iter().map(|m| m["dlqId"].as_str().unwrap().to_string()).collect()
}
