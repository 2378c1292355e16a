//! Redaction (spec §23): message get, logs and the DLQ show `REDACTED:<sha256 hex>` for the
//! chosen fields, while destinations (also on DLQ retry) get the original values.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// SHA-256 (hex) of the values used below, computed independently of tern.
const SECRET_BODY: &str = "REDACTED:7c3029502007b2beae470d090221f0a8f7708be361be4662f4b649426e5767b3";
const SECRET_AUTH: &str = "REDACTED:bffde20413347b7a00e1363de3f97ca69e419dc0aea55f4a4a75018fab3a0e8e";
const TEXT_PLAIN: &str = "REDACTED:dc23933049d8b06808e15916d9cc735bd5c82fc87e5f3a970442f6fc04f5a275";
/// `pending`, the body `publish_pending` sends.
const PENDING: &str = "REDACTED:62a2fed3d6e08c44835fce71f02210b1ddabfb066e39edf1e6c261988f824dd3";
const VISIBLE: &str = "REDACTED:d42ef1497900bc6e542c641a896c88694d15069b8a11247f66ba7342b6c21cd9";

fn secret_headers(redact: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("Upstash-Redact-Fields", redact),
        ("Content-Type", "text/plain"),
        ("Upstash-Forward-Authorization", "Bearer secret"),
        ("Upstash-Forward-X-Visible", "visible"),
    ]
}

fn assert_original_delivery(request: &Recorded) {
    assert_eq!(request.body.as_ref(), b"secret-body");
    assert_eq!(request.header("authorization"), Some("Bearer secret"));
    assert_eq!(request.header("x-visible"), Some("visible"));
    assert_eq!(request.header("content-type"), Some("text/plain"));
}

/// Asserts that every log entry of `id` shows `header` and the base64 of `body`.
async fn assert_logs_show(server: &TestServer, id: &str, header: &Value, body: &str) {
    let logs = get_ok(server, &format!("/v2/logs?messageId={id}")).await;
    let entries = logs["events"].as_array().unwrap();
    assert!(!entries.is_empty());
    for entry in entries {
        assert_eq!(&entry["header"], header, "{entry}");
        assert_eq!(entry["body"], json!(b64(body)), "{entry}");
    }
}

#[tokio::test]
async fn the_body_and_one_header_are_redacted_everywhere_but_delivered() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/secret", vec![Reply::Status(500), Reply::Status(200)]);
    let headers = secret_headers("body,header[Authorization]");
    let (id, dlq_id) = dead_letter(&server, &receiver, "/secret", &headers, "secret-body").await;
    assert_original_delivery(&receiver.requests_to("/secret")[0]);

    let header = json!({
        "Authorization": [SECRET_AUTH],
        "Content-Type": ["text/plain"],
        "X-Visible": ["visible"],
    });
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!((&message["header"], &message["body"]), (&header, &json!(SECRET_BODY)));
    assert_logs_show(&server, &id, &header, SECRET_BODY).await;
    let listed = get_ok(&server, "/v2/dlq").await;
    let entry = get_ok(&server, &format!("/v2/dlq/{dlq_id}")).await;
    assert_eq!(listed["messages"][0], entry);
    assert_eq!((&entry["header"], &entry["body"]), (&header, &json!(SECRET_BODY)));
    assert!(!entry.to_string().contains("secret-body") && !entry.to_string().contains("Bearer secret"));

    // A retry from the DLQ delivers the original values and stays redacted.
    let (status, retried) = send(server.post(&format!("/v2/dlq/retry/{dlq_id}"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let retried = retried["messageId"].as_str().unwrap();
    server.wait_for_state(retried, "DELIVERED").await;
    assert_original_delivery(&receiver.requests_to("/secret")[1]);
    let message = get_ok(&server, &format!("/v2/messages/{retried}")).await;
    assert_eq!((&message["header"], &message["body"]), (&header, &json!(SECRET_BODY)));
}

#[tokio::test]
async fn all_headers_can_be_redacted() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let id = server.publish_ok(&receiver.url("/headers"), &secret_headers("header"), "secret-body").await;
    server.wait_for_state(&id, "DELIVERED").await;
    assert_original_delivery(&receiver.requests_to("/headers")[0]);
    let header = json!({
        "Authorization": [SECRET_AUTH],
        "Content-Type": [TEXT_PLAIN],
        "X-Visible": [VISIBLE],
    });
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!((&message["header"], &message["body"]), (&header, &json!("secret-body")));
    assert_logs_show(&server, &id, &header, "secret-body").await;
}

#[tokio::test]
async fn the_docs_spellings_are_accepted() {
    let server = TestServer::start().await;
    let url = format!("{NOWHERE}/docs");
    let id = publish_pending(&server, &url, &secret_headers("headers[x-visible], body")).await;
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    let header = json!({
        "Authorization": ["Bearer secret"],
        "Content-Type": ["text/plain"],
        "X-Visible": [VISIBLE],
    });
    assert_eq!((&message["header"], &message["body"]), (&header, &json!(PENDING)));
    let id = publish_pending(&server, &url, &secret_headers("headers")).await;
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!(message["header"]["X-Visible"], json!([VISIBLE]));
    assert_eq!(message["header"]["Authorization"], json!([SECRET_AUTH]));
}
