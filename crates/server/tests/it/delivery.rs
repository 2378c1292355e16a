//! The request a destination receives (spec §7, §8).

use crate::harness::*;
use crate::support::expect_error;
use axum::http::Method;
use std::time::Duration;
use tern_core::signing;

#[tokio::test]
async fn delivers_the_exact_request_with_a_valid_signature() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let destination = receiver.url("/hook/a//b");
    let id = server
        .publish_ok(
            &format!("{destination}?x=1&y=%20z&qstash_token={TOKEN}&upstash-retries=0"),
            &[
                ("Content-Type", "application/json"),
                ("Upstash-Method", "PUT"),
                ("Upstash-Forward-X-Custom", "one, two"),
                ("Upstash-Forward-Upstash-Message-Id", "forged"),
                ("X-Not-Forwarded", "dropped"),
                ("Upstash-Telemetry-Sdk", "ignored"),
            ],
            r#"{"hello":"world"}"#,
        )
        .await;
    let request = receiver.wait_for("/hook/a//b", 1).await.remove(0);
    assert_eq!(request.method, Method::PUT);
    assert_eq!(request.target, "/hook/a//b?x=1&y=%20z");
    assert_eq!(request.body.as_ref(), br#"{"hello":"world"}"#);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-custom"), Some("one, two"));
    assert_eq!(request.header("upstash-message-id"), Some(id.as_str()));
    assert_eq!(request.header("upstash-retried"), Some("0"));
    assert_eq!(request.header("user-agent"), Some("Upstash-QStash"));
    assert_eq!(request.header("upstash-caller-ip"), Some("127.0.0.1"));
    assert!(request.header("x-not-forwarded").is_none());
    assert!(request.header("upstash-telemetry-sdk").is_none());
    assert!(request.header("authorization").is_none());

    let url = format!("{destination}?x=1&y=%20z");
    let token = request.header("upstash-signature").expect("signed");
    let claims = signing::verify(token, CURRENT_KEY, &request.body, Some(&url), server.now_ms() / 1000)
        .expect("signature verifies with the current key");
    assert_eq!(claims.nbf, 0);
    assert!(claims.jti.starts_with("jwt_"));
    assert!(signing::verify(token, NEXT_KEY, &request.body, None, server.now_ms() / 1000).is_err());
    assert_eq!(server.wait_for_state(&id, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);
}

#[tokio::test]
async fn every_method_is_delivered_with_its_body() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let path = format!("/{method}");
        server.publish_ok(&receiver.url(&path), &[("Upstash-Method", &method.to_lowercase())], "payload").await;
        let request = receiver.wait_for(&path, 1).await.remove(0);
        assert_eq!(request.method.as_str(), method);
        assert_eq!(request.body.as_ref(), b"payload");
    }
}

#[tokio::test]
async fn header_forward_mode_forwards_incoming_headers() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = format!("/v2/publish/{}?upstash-header-forward=true&qstash_token={TOKEN}", receiver.url("/webhook"));
    let response = server
        .http
        .post(format!("{}{url}", server.url))
        .header("X-Webhook-Signature", "abc")
        .header("Authorization", "Bearer the-senders-own")
        .body("event")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request = receiver.wait_for("/webhook", 1).await.remove(0);
    assert_eq!(request.header("x-webhook-signature"), Some("abc"));
    // The token came in the query, so the sender's own Authorization header is forwarded.
    assert_eq!(request.header("authorization"), Some("Bearer the-senders-own"));
    assert_eq!(request.target, "/webhook");
}

#[tokio::test]
async fn private_destinations_can_be_refused_by_the_operator() {
    // Accepted while private destinations are allowed (the default), due after the operator
    // has restricted them: the attempt is refused at delivery and no request leaves.
    let receiver = Receiver::start().await;
    let mut server = TestServer::start().await;
    let id = server
        .publish_ok(&format!("{}/x", receiver.base), &[("Upstash-Delay", "1m"), ("Upstash-Retries", "0")], "x")
        .await;
    server.config.delivery.allow_private_destinations = false;
    server.restart_after(Duration::from_secs(60)).await;
    server.wait_for_state(&id, "FAILED").await;
    let (_, logs) = send(server.get(&format!("/v2/logs?messageId={id}&state=ERROR"))).await;
    assert!(logs["events"][0]["error"].as_str().unwrap().contains("private address"), "{logs}");
    assert!(receiver.requests().is_empty());
    // Retrying it from the DLQ by id is refused up front, like a new publish; a bulk retry
    // leaves it where it is instead of failing the others.
    let (_, dlq) = send(server.get("/v2/dlq")).await;
    let dlq_id = dlq["messages"][0]["dlqId"].as_str().expect("the failed message is in the DLQ").to_string();
    let retry = server.post(&format!("/v2/dlq/retry/{dlq_id}"));
    expect_error(retry, axum::http::StatusCode::BAD_REQUEST, "private address").await;
    let (status, json) = send(server.post("/v2/dlq/retry")).await;
    assert_eq!((status, &json["responses"]), (axum::http::StatusCode::CREATED, &serde_json::json!([])), "{json}");
    let (_, dlq) = send(server.get("/v2/dlq")).await;
    assert_eq!(dlq["messages"][0]["dlqId"], dlq_id.as_str(), "still in the DLQ");

    // New private destinations are refused at publish.
    for private in ["http://127.0.0.1:9/x", "http://[::1]:9/x", "http://localhost:9/x", "http://10.1.2.3/x"] {
        let (status, json) = server.publish(private, &[], "x").await;
        assert_eq!(status, axum::http::StatusCode::BAD_REQUEST, "{private}: {json}");
        assert!(json["error"].as_str().unwrap().contains("private address"), "{json}");
    }
    // And so are private callbacks. (Delayed a week: were the check missing, nothing would be
    // sent to the public destination before the server stops.)
    for callback in ["Upstash-Callback", "Upstash-Failure-Callback"] {
        let headers = [(callback, "http://127.0.0.1:9/cb"), ("Upstash-Delay", "7d")];
        let (status, json) = server.publish("http://example.com/x", &headers, "x").await;
        assert_eq!(status, axum::http::StatusCode::BAD_REQUEST, "{callback}: {json}");
        assert!(json["error"].as_str().unwrap().contains("private address"), "{json}");
    }
}

#[tokio::test]
async fn the_caller_ip_is_the_last_forwarded_entry_only_behind_a_trusted_proxy() {
    let receiver = Receiver::start().await;
    // A client's own header line, then the one its proxy appended.
    let forwarded = [("X-Forwarded-For", "203.0.113.9, 10.0.0.1"), ("X-Forwarded-For", "198.51.100.7")];
    for (trusted, expected) in [(true, "198.51.100.7"), (false, "127.0.0.1")] {
        let server = TestServer::start_with(|config| config.server.trust_forwarded_for = trusted).await;
        let path = format!("/trusted-{trusted}");
        server.publish_ok(&receiver.url(&path), &forwarded, "x").await;
        let request = receiver.wait_for(&path, 1).await.remove(0);
        assert_eq!(request.header("upstash-caller-ip"), Some(expected), "trusted: {trusted}");
    }
}

/// A destination whose first connection is reset as soon as a request arrives on it (a
/// kept-alive connection it closed just as tern reused it looks like that) and whose next one
/// answers 200: the request is sent again at once, within the same attempt.
#[tokio::test]
async fn a_request_reset_under_it_is_sent_again_once_on_a_fresh_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = std::sync::Arc::clone(&connections);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let first = accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 << 10];
                let mut read = 0;
                while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                if first {
                    // Closing with unread data pending makes the kernel send a reset.
                    socket.set_zero_linger().expect("linger");
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = socket.write_all(answer).await;
            });
        }
    });
    let server = TestServer::start().await;
    let id = server.publish_ok(&format!("http://{address}/reset"), &[("Upstash-Retries", "0")], "x").await;
    assert_eq!(server.wait_for_state(&id, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2, "one reset, one answered");
}
