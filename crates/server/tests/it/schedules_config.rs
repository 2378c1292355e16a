//! What a schedule stores is what each tick publishes (spec §4.2, §5.6, §14, §23): method,
//! body, forwarded headers, `Content-Type`, retries and their delay expression, timeout,
//! callbacks with their configuration, delay, flow control, labels and redaction; deliveries
//! carry `Upstash-Schedule-Id` and the creator's IP; messages and logs are found by schedule.

use crate::harness::*;
use crate::schedule_support::*;
use crate::support::*;
use crate::timeline::*;
use axum::http::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// SHA-256 (hex) of `secret-body` and `Bearer secret`, computed independently of tern.
const SECRET_BODY: &str = "REDACTED:7c3029502007b2beae470d090221f0a8f7708be361be4662f4b649426e5767b3";
const SECRET_AUTH: &str = "REDACTED:bffde20413347b7a00e1363de3f97ca69e419dc0aea55f4a4a75018fab3a0e8e";

#[tokio::test]
async fn every_stored_setting_shapes_each_produced_message() {
    let server = TestServer::start_with(|config| config.server.trust_forwarded_for = true).await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    receiver.script("/job", vec![Reply::Hang, Reply::Status(500)]);
    let (callback_url, failure_url) = (receiver.url("/cb"), receiver.url("/fcb"));
    let headers = [
        ("X-Forwarded-For", "192.0.2.99 , 203.0.113.7"),
        ("Upstash-Method", "put"),
        ("Content-Type", "text/plain"),
        ("Upstash-Forward-X-Custom", "custom-value"),
        ("Upstash-Retries", "1"),
        ("Upstash-Retry-Delay", "2000 * (1 + retried)"),
        ("Upstash-Timeout", "5s"),
        ("Upstash-Delay", "30s"),
        ("Upstash-Callback", callback_url.as_str()),
        ("Upstash-Callback-Method", "PATCH"),
        ("Upstash-Callback-Forward-X-Cb", "cb-value"),
        ("Upstash-Failure-Callback", failure_url.as_str()),
        ("Upstash-Failure-Callback-Method", "PUT"),
        ("Upstash-Failure-Callback-Forward-X-Fcb", "fcb-value"),
        ("Upstash-Label", "nightly"),
    ];
    let id = create_ok(&server, &receiver.url("/job"), "*/10 * * * *", &headers, "scheduled payload").await;
    let tick = (server.now_ms().div_euclid(10 * MINUTE_MS) + 1) * 10 * MINUTE_MS;

    // The tick stores a message that waits for its delay.
    advance_to(&server, tick);
    wait_for_last_tick(&server, &id, tick).await;
    let request = expect_tick(&server, &receiver, "/job", 0, tick + 30_000).await;
    let message_id = request.header("upstash-message-id").unwrap().to_string();
    assert_eq!(request.method, Method::PUT);
    assert_eq!(request.body.as_ref(), b"scheduled payload");
    assert_eq!(request.header("content-type"), Some("text/plain"));
    assert_eq!(request.header("x-custom"), Some("custom-value"));
    assert_eq!(request.header("upstash-schedule-id"), Some(id.as_str()));
    assert_eq!(request.header("upstash-caller-ip"), Some("203.0.113.7"), "the creator's IP");
    assert_eq!(request.header("upstash-retried"), Some("0"));
    assert!(request.header("x-cb").is_none() && request.header("x-fcb").is_none(), "{request:?}");

    let message = message_json(&server, &message_id).await;
    let expected = json!({
        "messageId": message_id,
        "url": receiver.url("/job"),
        "scheduleId": id,
        "method": "PUT",
        "header": {"Content-Type": ["text/plain"], "X-Custom": ["custom-value"]},
        "callbackHeader": {"X-Cb": ["cb-value"]},
        "failureCallbackHeader": {"X-Fcb": ["fcb-value"]},
        "body": "scheduled payload",
        "maxRetries": 1,
        "retryDelayExpression": "2000 * (1 + retried)",
        "notBefore": tick + 30_000,
        "createdAt": tick,
        "callback": callback_url,
        "failureCallback": failure_url,
        "callerIP": "203.0.113.7",
        "callerIp": "203.0.113.7",
        "label": "nightly",
        "labels": ["nightly"],
    });
    assert_eq!(message, expected);
    let created = &log_entries(&server, &message_id).await[0];
    assert_eq!((&created["state"], &created["timeout"]), (&json!("CREATED"), &json!(5000)), "{created}");

    // The first attempt times out after 5 s; the callback hears of it.
    server.wait_for_state(&message_id, "ACTIVE").await;
    server.advance(Duration::from_secs(5) - MARGIN);
    receiver.assert_count_stays(&server, "/job", 1).await;
    assert_eq!(server.log_states(&message_id).await, ["CREATED", "ACTIVE"]);
    server.advance(MARGIN);
    wait_for_count(&server, &message_id, "RETRY", 1).await;
    let callback = receiver.wait_for("/cb", 1).await.remove(0);
    assert_eq!(callback.method, Method::PATCH);
    assert_eq!(callback.header("x-cb"), Some("cb-value"));
    let body: Value = serde_json::from_slice(&callback.body).unwrap();
    assert_eq!((&body["sourceMessageId"], &body["scheduleId"]), (&json!(message_id), &json!(id)), "{body}");
    assert_eq!(body["status"], 0, "no response before the timeout");

    // The retry comes after 2000 * (1 + 0) ms and fails: no retry remains.
    expect_request_after(&server, &receiver, "/job", 1, Duration::from_millis(2000)).await;
    assert_eq!(receiver.requests_to("/job")[1].header("upstash-retried"), Some("1"));
    let states = server.wait_for_state(&message_id, "FAILED").await;
    assert_eq!(states, ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR", "FAILED"]);
    let failure = receiver.wait_for("/fcb", 1).await.remove(0);
    assert_eq!(failure.method, Method::PUT);
    assert_eq!(failure.header("x-fcb"), Some("fcb-value"));
    let body: Value = serde_json::from_slice(&failure.body).unwrap();
    assert_eq!((&body["scheduleId"], &body["status"]), (&json!(id), &json!(500)), "{body}");
    assert!(body["dlqId"].is_string(), "{body}");
    let callbacks = receiver.wait_for("/cb", 2).await;
    assert_eq!(callbacks.len(), 2, "one callback per attempt");
    receiver.assert_count_stays(&server, "/fcb", 1).await;
    assert_eq!(dlq_entry(&server, &message_id).await["scheduleId"], id.as_str());
}

#[tokio::test]
async fn flow_control_applies_across_ticks() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    receiver.script("/flow", vec![Reply::Hold(200)]);
    let headers = [
        ("Upstash-Flow-Control-Key", "sched-flow"),
        ("Upstash-Flow-Control-Value", "parallelism=1, rate=10, period=1m"),
    ];
    let id = create_ok(&server, &receiver.url("/flow"), "* * * * *", &headers, "").await;
    let shown = schedule(&server, &id).await;
    assert_eq!(
        [&shown["flowControlKey"], &shown["parallelism"], &shown["rate"], &shown["period"]],
        [&json!("sched-flow"), &json!(1), &json!(10), &json!(60)]
    );

    // The first tick's delivery holds the key's only slot; the second tick's message waits.
    let first = next_minute(server.now_ms());
    let held = expect_tick(&server, &receiver, "/flow", 0, first).await;
    advance_to(&server, first + MINUTE_MS);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let info = get_ok(&server, "/v2/flowControl/sched-flow").await;
        if info["waitListSize"] == 1 {
            assert_eq!(info["parallelismCount"], 1, "{info}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the second tick never waited: {info}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.assert_count_stays(&server, "/flow", 1).await;
    receiver.release("/flow", 1);
    let second = receiver.wait_for("/flow", 2).await.remove(1);
    receiver.release("/flow", 1);
    for request in [&held, &second] {
        let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
        assert_eq!(
            [&message["flowControlKey"], &message["parallelism"], &message["rate"], &message["period"]],
            [&json!("sched-flow"), &json!(1), &json!(10), &json!(60)],
            "{message}"
        );
    }
    assert_eq!(
        message_json(&server, second.header("upstash-message-id").unwrap()).await["createdAt"],
        first + MINUTE_MS
    );
}

#[tokio::test]
async fn redacted_fields_are_hidden_in_the_schedule_and_its_messages_but_delivered() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let headers = [
        ("Upstash-Redact-Fields", "body, header[Authorization]"),
        ("Content-Type", "text/plain"),
        ("Upstash-Forward-Authorization", "Bearer secret"),
        ("Upstash-Forward-X-Visible", "visible"),
    ];
    let id = create_ok(&server, &receiver.url("/secret"), "* * * * *", &headers, "secret-body").await;
    let header = json!({"Authorization": [SECRET_AUTH], "Content-Type": ["text/plain"], "X-Visible": ["visible"]});
    let shown = schedule(&server, &id).await;
    assert_eq!((&shown["header"], &shown["body"]), (&header, &json!(SECRET_BODY)), "{shown}");
    let listed = get_ok(&server, "/v2/schedules").await;
    assert_eq!(listed, json!([shown]));
    for text in [shown.to_string(), listed.to_string()] {
        assert!(!text.contains("secret-body") && !text.contains("Bearer secret"), "{text}");
    }

    let first = next_minute(server.now_ms());
    let requests = expect_ticks(&server, &receiver, "/secret", &id, &[first, first + MINUTE_MS]).await;
    for request in &requests {
        assert_eq!(request.body.as_ref(), b"secret-body");
        assert_eq!(request.header("authorization"), Some("Bearer secret"));
        assert_eq!(request.header("x-visible"), Some("visible"));
        let message_id = request.header("upstash-message-id").unwrap();
        server.wait_for_state(message_id, "DELIVERED").await;
        let message = message_json(&server, message_id).await;
        assert_eq!((&message["header"], &message["body"]), (&header, &json!(SECRET_BODY)), "{message}");
        for entry in log_entries(&server, message_id).await {
            assert_eq!((&entry["header"], &entry["body"]), (&header, &json!(b64(SECRET_BODY))), "{entry}");
        }
    }
}

#[tokio::test]
async fn messages_carry_their_schedule_and_creator_and_logs_filter_by_schedule() {
    let server = TestServer::start_with(|config| config.server.trust_forwarded_for = true).await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let a = create_ok(&server, &receiver.url("/a"), "* * * * *", &[("X-Forwarded-For", "198.51.100.1")], "a").await;
    let b = create_ok(&server, &receiver.url("/b"), "* * * * *", &[("X-Forwarded-For", "198.51.100.2")], "b").await;
    assert_eq!(schedule(&server, &a).await["callerIP"], "198.51.100.1");
    assert_eq!(schedule(&server, &b).await["callerIp"], "198.51.100.2");

    let first = next_minute(server.now_ms());
    let mut produced = vec![Vec::new(), Vec::new()];
    for (index, tick) in [first, first + MINUTE_MS].into_iter().enumerate() {
        produced[0].push(expect_tick(&server, &receiver, "/a", index, tick).await);
        produced[1].push(receiver.wait_for("/b", index + 1).await.remove(index));
    }
    for ((id, ip), requests) in [(&a, "198.51.100.1"), (&b, "198.51.100.2")].into_iter().zip(&produced) {
        let mut ids = message_ids(requests);
        for (request, message_id) in requests.iter().zip(&ids) {
            assert_eq!(request.header("upstash-schedule-id"), Some(id.as_str()));
            assert_eq!(request.header("upstash-caller-ip"), Some(ip));
            server.wait_for_state(message_id, "DELIVERED").await;
            let message = message_json(&server, message_id).await;
            assert_eq!((&message["scheduleId"], &message["callerIP"]), (&json!(id), &json!(ip)), "{message}");
        }
        // Every entry of this schedule's messages, and nothing else.
        let logs = get_ok(&server, &format!("/v2/logs?scheduleId={id}")).await;
        let mut logged = entry_ids(&logs);
        assert!(logs["events"].as_array().unwrap().iter().all(|e| e["scheduleId"] == id.as_str()), "{logs}");
        assert_eq!(logged.len(), 6, "CREATED, ACTIVE, DELIVERED of two messages: {logs}");
        logged.sort();
        logged.dedup();
        ids.sort();
        assert_eq!(logged, ids);
    }
    let both = get_ok(&server, &format!("/v2/logs?scheduleId={a},{b}")).await;
    assert_eq!(entry_ids(&both).len(), 12);
    let none = get_ok(&server, "/v2/logs?scheduleId=scd_unknown").await;
    assert_eq!(none["events"], json!([]));
    let delivered = get_ok(&server, &format!("/v2/logs?scheduleId={a}&state=DELIVERED")).await;
    assert_eq!(entry_ids(&delivered).len(), 2, "{delivered}");
}
