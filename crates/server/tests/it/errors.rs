//! Malformed input of every kind answers a QStash-shaped `{"error": "..."}` with the right
//! status (spec §2, §3.1, §4.2, §0.6), and a rejected request changes nothing.

use crate::harness::*;
use crate::support::*;
use axum::http::{Method, StatusCode};
use reqwest::header::HeaderValue;

/// Asserts that the user has no log entries at all (nothing was stored).
async fn assert_no_logs(server: &TestServer) {
    let json = get_ok(server, "/v2/logs").await;
    assert_eq!(json["events"], serde_json::json!([]), "{json}");
    assert_eq!(json["logs"], serde_json::json!([]), "{json}");
}

#[tokio::test]
async fn bad_destinations_are_rejected() {
    let server = TestServer::start().await;
    for destination in ["ftp://x", "http://", "https://", "not%20a%20group", "bad!group", "a/b"] {
        let (status, message) = error_of(server.post(&format!("/v2/publish/{destination}")).body("x")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{destination}: {message}");
    }
    for path in ["/v2/publish/", "/v2/publish"] {
        let (status, message) = error_of(server.post(path).body("x")).await;
        assert_eq!((status, message.as_str()), (StatusCode::BAD_REQUEST, "a non-empty destination must be provided"));
    }
    let (status, message) = error_of(server.post("/v2/publish/non_existing_url_group").body("x")).await;
    assert_eq!((status, message.as_str()), (StatusCode::NOT_FOUND, "topic non_existing_url_group not found"));
    expect_error(server.post("/v2/publish/api/llm").body("{}"), StatusCode::BAD_REQUEST, "api").await;
    assert_no_logs(&server).await;
}

#[tokio::test]
async fn bad_publish_headers_are_rejected_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/never");
    let in_400_days = ((server.now_ms() / 1000) + 400 * 86_400).to_string();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("Upstash-Delay", "soon")], "upstash-delay"),
        (&[("Upstash-Delay", "-5s")], "upstash-delay"),
        (&[("Upstash-Timeout", "10x")], "upstash-timeout"),
        (&[("Upstash-Retries", "-1")], "upstash-retries"),
        (&[("Upstash-Retries", "1.5")], "upstash-retries"),
        (&[("Upstash-Retries", "abc")], "upstash-retries"),
        (&[("Upstash-Method", "TRACE")], "upstash-method"),
        (&[("Upstash-Method", "")], "upstash-method"),
        (&[("Upstash-Not-Before", "tomorrow")], "upstash-not-before"),
        (&[("Upstash-Retry-Delay", "pow(2")], "upstash-retry-delay"),
        (&[("Upstash-Retry-Delay", "foo(1)")], "upstash-retry-delay"),
        (&[("Upstash-Callback", "ftp://x/cb")], "callback"),
        (&[("Upstash-Callback", "not a url")], "callback"),
        (&[("Upstash-Failure-Callback", "http://")], "callback"),
        (&[("Upstash-Flow-Control-Key", "k")], "flow-control"),
        (&[("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", "")], "flow-control"),
        (&[("Upstash-Flow-Control-Value", "parallelism=1")], "flow-control"),
        (&[("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", "parallelism=abc")], "parallelism"),
        (&[("Upstash-Content-Based-Deduplication", "maybe")], "deduplication"),
        (&[("Upstash-Redact-Fields", "bodyy")], "redact"),
        (&[("Upstash-Delay", "366d")], "maximum delay"),
        (&[("Upstash-Not-Before", &in_400_days)], "maximum delay"),
    ];
    for (headers, fragment) in cases {
        let (status, json) = server.publish(&url, headers, "body").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?} answered {json}");
        let message = json["error"].as_str().unwrap_or_else(|| panic!("{headers:?}: no error text in {json}"));
        assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
        assert!(message.to_ascii_lowercase().contains(fragment), "{headers:?}: {message:?} lacks {fragment:?}");
    }
    // The same checks apply to options given as webhook-mode query keys.
    let (status, json) = server.publish(&format!("{url}?upstash-retries=abc"), &[], "body").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert_no_logs(&server).await;
    receiver.assert_count_stays(&server, "/never", 0).await;
}

#[tokio::test]
async fn a_configured_max_delay_is_enforced() {
    let server = TestServer::start_with(|config| config.limits.max_delay = "1h".into()).await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/late");
    let (status, json) = server.publish(&url, &[("Upstash-Delay", "61m")], "x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert!(json["error"].as_str().unwrap().contains("maximum delay is 3600s"), "{json}");
    assert_no_logs(&server).await;
    server.publish_ok(&url, &[("Upstash-Delay", "1h")], "x").await;
}

#[tokio::test]
async fn oversized_bodies_answer_413() {
    let server = TestServer::start_with(|config| config.limits.max_body_bytes = 16).await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/big");
    let request = server.post(&format!("/v2/publish/{url}")).body("x".repeat(17));
    expect_error(request, StatusCode::PAYLOAD_TOO_LARGE, "16 bytes").await;
    // Bulk-operation JSON bodies share the limit.
    let body = serde_json::json!({ "messageIds": ["msg_aaaaaaaaaaaaaaaaaaaaaaaa"] }).to_string();
    expect_error(server.delete("/v2/messages").body(body), StatusCode::PAYLOAD_TOO_LARGE, "limit").await;
    assert_no_logs(&server).await;
    // Exactly at the limit is fine.
    server.publish_ok(&url, &[], &"y".repeat(16)).await;
    assert_eq!(receiver.wait_for("/big", 1).await[0].body.len(), 16);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_json() {
    let server = TestServer::start().await;
    for path in ["/v2/nothing", "/nothing", "/v2/dlq/retry/a/b", "/v3/publish/http://127.0.0.1/x"] {
        expect_error(server.get(path), StatusCode::NOT_FOUND, "").await;
    }
    for (method, path) in [
        (Method::GET, "/v2/publish/http://127.0.0.1:9/x"),
        (Method::PUT, "/v2/messages/msg_x"),
        (Method::POST, "/v2/messages"),
        (Method::POST, "/v2/keys"),
        (Method::GET, "/v2/keys/rotate"),
        (Method::DELETE, "/v2/logs"),
        (Method::GET, "/v2/dlq/retry/1-0"),
    ] {
        let (status, message) = error_of(server.request(method.clone(), path)).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {message}");
    }
}

#[tokio::test]
async fn a_path_name_that_is_not_utf8_is_a_json_400() {
    let server = TestServer::start().await;
    for path in ["/v2/queues/%FF", "/v2/topics/%FF", "/v2/messages/%FF", "/v2/schedules/%FF", "/v2/flowControl/%FF"] {
        expect_error(server.get(path), StatusCode::BAD_REQUEST, "invalid path").await;
    }
}

#[tokio::test]
async fn a_nul_in_a_path_name_is_a_json_400_and_other_writes_go_on() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    for path in ["/v2/queues/a%00b", "/v2/topics/a%00b", "/v2/schedules/a%00b", "/v2/dlq/a%00b"] {
        expect_error(server.get(path), StatusCode::BAD_REQUEST, "NUL").await;
    }
    expect_error(server.delete("/v2/dlq/a%00b"), StatusCode::BAD_REQUEST, "NUL").await;
    // A webhook call needs no token: its path is checked all the same.
    let hook = "/v2/workflows/hooks/defaultUser/wfr_a%00b/event";
    expect_error(server.request(Method::POST, hook), StatusCode::BAD_REQUEST, "NUL").await;
    server.publish_ok(&receiver.url("/after"), &[], "still stored").await;
    receiver.wait_for("/after", 1).await;
}

#[tokio::test]
async fn a_non_utf8_header_value_is_rejected() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let value = HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let request = server.post(&format!("/v2/publish/{}", receiver.url("/x"))).header("Upstash-Forward-Name", value);
    expect_error(request, StatusCode::BAD_REQUEST, "utf-8").await;
    assert_no_logs(&server).await;
}

#[tokio::test]
async fn bad_bulk_cancel_requests_cancel_nothing() {
    let server = TestServer::start().await;
    let id = publish_pending(&server, &format!("{NOWHERE}/a"), &[("Upstash-Label", "x")]).await;
    for body in ["{", "[1, 2]", r#"{"messageIds": "a"}"#, "null x"] {
        expect_error(server.delete("/v2/messages").body(body), StatusCode::BAD_REQUEST, "json").await;
    }
    for query in ["labl=x", "label=x&host2=y", "state=CREATED", "dlqIds=1-0"] {
        expect_error(server.delete(&format!("/v2/messages?{query}")), StatusCode::BAD_REQUEST, "").await;
    }
    expect_error(server.delete("/v2/messages?fromDate=yesterday"), StatusCode::BAD_REQUEST, "fromDate").await;
    // A filter without a value, or with too many, is refused rather than dropped.
    for query in ["label=", "messageId=", "url=&label=x", "label=,"] {
        expect_error(server.delete(&format!("/v2/messages?{query}")), StatusCode::BAD_REQUEST, "no value").await;
    }
    let many = (0..501).map(|i| format!("label=l{i}")).collect::<Vec<_>>().join("&");
    expect_error(server.delete(&format!("/v2/messages?{many}")), StatusCode::BAD_REQUEST, "at most").await;
    // `messageId` narrows a filtered cancel like every other filter.
    let (status, json) = send(server.delete("/v2/messages?label=x&messageId=msg_other")).await;
    assert_eq!((status, json), (StatusCode::OK, serde_json::json!({ "cancelled": 0 })));
    assert!(is_pending(&server, &id).await, "{:?}", server.log_states(&id).await);
    // The same message is still cancellable.
    let (status, json) = send(server.delete("/v2/messages?label=x")).await;
    assert_eq!((status, json), (StatusCode::OK, serde_json::json!({ "cancelled": 1 })));
}

#[tokio::test]
async fn bad_dlq_requests_delete_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/dead", vec![Reply::Status(500)]);
    let (_, dlq_id) = dead_letter(&server, &receiver, "/dead", &[], "x").await;
    for query in ["labl=x", "host=127.0.0.1", "path=/dead", "state=FAILED"] {
        expect_error(server.delete(&format!("/v2/dlq?{query}")), StatusCode::BAD_REQUEST, "").await;
        expect_error(server.post(&format!("/v2/dlq/retry?{query}")), StatusCode::BAD_REQUEST, "").await;
        expect_error(server.get(&format!("/v2/dlq?{query}")), StatusCode::BAD_REQUEST, "").await;
    }
    expect_error(server.delete("/v2/dlq").body("{"), StatusCode::BAD_REQUEST, "json").await;
    expect_error(server.delete("/v2/dlq").body(r#"{"dlqIds": 5}"#), StatusCode::BAD_REQUEST, "json").await;
    expect_error(server.get("/v2/dlq?responseStatus=abc"), StatusCode::BAD_REQUEST, "responseStatus").await;
    let json = get_ok(&server, "/v2/dlq").await;
    assert_eq!(dlq_ids(&json), [dlq_id]);
}

#[tokio::test]
async fn bad_listing_parameters_are_rejected() {
    let server = TestServer::start().await;
    for path in ["/v2/logs", "/v2/events", "/v2/dlq"] {
        expect_error(server.get(&format!("{path}?order=sideways")), StatusCode::BAD_REQUEST, "order").await;
        expect_error(server.get(&format!("{path}?cursor=abc")), StatusCode::BAD_REQUEST, "cursor").await;
        expect_error(server.get(&format!("{path}?cursor=x-1")), StatusCode::BAD_REQUEST, "cursor").await;
        expect_error(server.get(&format!("{path}?count=many")), StatusCode::BAD_REQUEST, "count").await;
        expect_error(server.get(&format!("{path}?fromDate=yesterday")), StatusCode::BAD_REQUEST, "fromDate").await;
    }
    expect_error(server.get("/v2/logs?cursor=12-x"), StatusCode::BAD_REQUEST, "cursor").await;
    expect_error(server.get("/v2/logs?cursor=12-"), StatusCode::BAD_REQUEST, "cursor").await;
    expect_error(server.get("/v2/logs?state=WAITING"), StatusCode::BAD_REQUEST, "state").await;
    expect_error(server.delete("/v2/dlq?order=sideways"), StatusCode::BAD_REQUEST, "order").await;
}

#[tokio::test]
async fn unknown_messages_and_dlq_entries_answer_404() {
    let server = TestServer::start().await;
    for id in ["msg_26hZCxZCuWyyTWPmSVBrNC1RADwpgWxPcak2rQD51EMjFMuzcW7qYXpPiDyw", "garbage", "1-0"] {
        expect_error(server.get(&format!("/v2/messages/{id}")), StatusCode::NOT_FOUND, id).await;
        expect_error(server.delete(&format!("/v2/messages/{id}")), StatusCode::NOT_FOUND, id).await;
        expect_error(server.get(&format!("/v2/dlq/{id}")), StatusCode::NOT_FOUND, id).await;
        expect_error(server.delete(&format!("/v2/dlq/{id}")), StatusCode::NOT_FOUND, id).await;
        expect_error(server.post(&format!("/v2/dlq/retry/{id}")), StatusCode::NOT_FOUND, id).await;
    }
}
