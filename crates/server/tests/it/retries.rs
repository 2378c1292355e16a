//! When attempts happen (spec §4.2, §10, §11, §17): the default backoff, `Upstash-Retries`,
//! `Upstash-Retry-Delay`, destination-steered delays, non-retryable errors, timeouts, the DLQ
//! after the last attempt, and `Upstash-Delay` / `Upstash-Not-Before`. All on the manual clock.

use crate::harness::*;
use crate::timeline::*;
use std::collections::BTreeSet;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn full(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    match Reply::with_headers(status, headers) {
        Reply::Full { status, headers, .. } => Reply::Full { status, headers, body: body.to_string() },
        other => other,
    }
}

#[tokio::test]
async fn default_backoff_waits_12_then_148_then_1808_seconds() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/fail", vec![Reply::Status(500)]);
    let id = server.publish_ok(&receiver.url("/fail"), &[], "backoff").await;
    assert_eq!(message_json(&server, &id).await["maxRetries"], 3, "three retries by default");
    receiver.wait_for("/fail", 1).await;

    // e^2.5 s = 12.18 s, e^5 s = 148.41 s, e^7.5 s = 1808.04 s (spec §10.2).
    expect_next_attempt_after(&server, &receiver, "/fail", &id, 1, 1, ms(12_182)).await;
    expect_next_attempt_after(&server, &receiver, "/fail", &id, 2, 2, ms(148_413)).await;
    expect_next_attempt_after(&server, &receiver, "/fail", &id, 3, 3, ms(1_808_042)).await;
    assert_eq!(retried_headers(&receiver, "/fail"), ["0", "1", "2", "3"]);

    let states = server.wait_for_state(&id, "FAILED").await;
    assert_eq!(states.iter().filter(|s| *s == "ACTIVE").count(), 4, "{states:?}");
    server.advance(DAY * 2);
    receiver.assert_count_stays(&server, "/fail", 4).await;
}

#[tokio::test]
async fn zero_retries_means_a_single_attempt() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/fail", vec![full(404, &[], "not here")]);
    let id = server.publish_ok(&receiver.url("/fail"), &[("Upstash-Retries", "0")], "once").await;
    assert_eq!(server.wait_for_state(&id, "FAILED").await, ["CREATED", "ACTIVE", "ERROR", "FAILED"]);
    assert_eq!(message_json(&server, &id).await["maxRetries"], 0);
    let entry = dlq_entry(&server, &id).await;
    assert_eq!(entry["responseStatus"], 404);
    assert_eq!(entry["responseBody"], "not here");
    server.advance(DAY * 2);
    receiver.assert_count_stays(&server, "/fail", 1).await;
    assert_eq!(server.log_states(&id).await.len(), 4, "nothing logged after FAILED");
}

#[tokio::test]
async fn exhausted_retries_fail_into_the_dlq_with_the_last_response() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script(
        "/fail",
        vec![
            full(500, &[], "attempt 0"),
            full(502, &[], "attempt 1"),
            full(503, &[], "attempt 2"),
            full(504, &[("X-Last", "yes")], "attempt 3"),
        ],
    );
    let headers = [("Upstash-Retries", "3"), ("Upstash-Retry-Delay", "1000")];
    let id = server.publish_ok(&receiver.url("/fail"), &headers, "doomed").await;
    receiver.wait_for("/fail", 1).await;
    for retry in 1..=3 {
        expect_next_attempt_after(&server, &receiver, "/fail", &id, retry, retry, SECOND).await;
    }
    let states = server.wait_for_state(&id, "FAILED").await;
    #[rustfmt::skip]
    let expected = [
        "CREATED",
        "ACTIVE", "ERROR", "RETRY",
        "ACTIVE", "ERROR", "RETRY",
        "ACTIVE", "ERROR", "RETRY",
        "ACTIVE", "ERROR", "FAILED",
    ];
    assert_eq!(states, expected);
    assert_eq!(retried_headers(&receiver, "/fail"), ["0", "1", "2", "3"]);

    let entry = dlq_entry(&server, &id).await;
    assert_eq!(entry["messageId"], id.as_str());
    assert!(entry["dlqId"].as_str().is_some_and(|d| !d.is_empty()), "{entry}");
    assert_eq!(entry["responseStatus"], 504);
    assert_eq!(entry["responseBody"], "attempt 3");
    assert_eq!(entry["responseHeader"]["X-Last"], serde_json::json!(["yes"]));
    assert_eq!(entry["body"], "doomed");
    assert_eq!(entry["maxRetries"], 3);
    let (_, listed) = send(server.get("/v2/dlq")).await;
    assert!(listed["messages"].as_array().unwrap().iter().any(|m| m["messageId"] == id.as_str()), "{listed}");

    let logs = log_entries(&server, &id).await;
    let errors: Vec<_> = logs.iter().filter(|e| e["state"] == "ERROR").map(|e| e["responseStatus"].clone()).collect();
    assert_eq!(errors, [500, 502, 503, 504]);
    server.advance(DAY * 2);
    receiver.assert_count_stays(&server, "/fail", 4).await;
}

#[tokio::test]
async fn retry_delay_expressions_set_each_wait() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let cases: [(&str, &str, [u64; 3]); 3] = [
        ("/linear", "1000 * (1 + retried)", [1000, 2000, 3000]),
        ("/exponential", "pow(2, retried) * 1000", [1000, 2000, 4000]),
        ("/clamped", "max(1500, pow(retried, 2) * 1000)", [1500, 1500, 4000]),
    ];
    for (path, expression, delays) in cases {
        receiver.script(path, vec![Reply::Status(500)]);
        let headers = [("Upstash-Retries", "3"), ("Upstash-Retry-Delay", expression)];
        let id = server.publish_ok(&receiver.url(path), &headers, expression).await;
        assert_eq!(message_json(&server, &id).await["retryDelayExpression"], expression);
        receiver.wait_for(path, 1).await;
        for (retry, delay) in delays.into_iter().enumerate() {
            expect_next_attempt_after(&server, &receiver, path, &id, retry + 1, retry + 1, ms(delay)).await;
        }
        server.wait_for_state(&id, "FAILED").await;
        let planned: Vec<i64> = log_entries(&server, &id)
            .await
            .iter()
            .filter(|e| e["state"] == "RETRY")
            .map(|e| e["nextDeliveryTime"].as_i64().unwrap() - e["time"].as_i64().unwrap())
            .collect();
        assert_eq!(planned, delays.map(|d| d as i64), "{expression}");
        assert_eq!(retried_headers(&receiver, path), ["0", "1", "2", "3"], "{expression}");
    }
}

/// The wait the `RETRY` entry of a message planned (`nextDeliveryTime - time`).
async fn planned_wait(server: &TestServer, id: &str) -> i64 {
    let logs = log_entries(server, id).await;
    let retry = logs.iter().find(|e| e["state"] == "RETRY").expect("a RETRY entry");
    retry["nextDeliveryTime"].as_i64().unwrap() - retry["time"].as_i64().unwrap()
}

#[tokio::test]
async fn retry_after_seconds_steer_the_retry_over_the_expression() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/busy", vec![full(503, &[("Retry-After", "30")], "busy"), Reply::Status(200)]);
    // The response header wins over the message's own retry delay (spec §10.4).
    let headers = [("Upstash-Retry-Delay", "1000")];
    let id = server.publish_ok(&receiver.url("/busy"), &headers, "steered").await;
    receiver.wait_for("/busy", 1).await;
    expect_next_attempt_after(&server, &receiver, "/busy", &id, 1, 1, Duration::from_secs(30)).await;
    assert_eq!(planned_wait(&server, &id).await, 30_000);
    let states = server.wait_for_state(&id, "DELIVERED").await;
    assert_eq!(states, ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "DELIVERED"]);
}

#[tokio::test]
async fn retry_after_http_date_steers_the_retry() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let now = server.now_ms();
    let at_seconds = now / 1000 + 91;
    receiver.script("/busy", vec![full(429, &[("Retry-After", &http_date(at_seconds))], ""), Reply::Status(200)]);
    let id = server.publish_ok(&receiver.url("/busy"), &[], "dated").await;
    receiver.wait_for("/busy", 1).await;
    // The clock has not moved since the publish, so the attempt ended at `now`.
    let wait = at_seconds * 1000 - now;
    expect_next_attempt_after(&server, &receiver, "/busy", &id, 1, 1, ms(wait as u64)).await;
    assert_eq!(planned_wait(&server, &id).await, wait);
    server.wait_for_state(&id, "DELIVERED").await;
}

#[tokio::test]
async fn x_ratelimit_reset_steers_the_retry() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/limited", vec![full(429, &[("X-RateLimit-Reset", "45")], "slow down"), Reply::Status(200)]);
    let id = server.publish_ok(&receiver.url("/limited"), &[], "limited").await;
    receiver.wait_for("/limited", 1).await;
    expect_next_attempt_after(&server, &receiver, "/limited", &id, 1, 1, Duration::from_secs(45)).await;
    assert_eq!(planned_wait(&server, &id).await, 45_000);
    server.wait_for_state(&id, "DELIVERED").await;
}

#[tokio::test]
async fn status_489_with_the_non_retryable_header_fails_at_once() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/stop", vec![full(489, &[("Upstash-NonRetryable-Error", "true")], "do not retry")]);
    let failure_url = receiver.url("/failed");
    let headers = [("Upstash-Retries", "3"), ("Upstash-Failure-Callback", failure_url.as_str())];
    let id = server.publish_ok(&receiver.url("/stop"), &headers, "final").await;
    assert_eq!(server.wait_for_state(&id, "FAILED").await, ["CREATED", "ACTIVE", "ERROR", "FAILED"]);
    let entry = dlq_entry(&server, &id).await;
    assert_eq!(entry["responseStatus"], 489);
    assert_eq!(entry["responseBody"], "do not retry");
    let failure = receiver.wait_for("/failed", 1).await.remove(0);
    let report: serde_json::Value = serde_json::from_slice(&failure.body).unwrap();
    assert_eq!((&report["dlqId"], &report["status"], &report["retried"]), (&entry["dlqId"], &489.into(), &0.into()));
    server.advance(DAY * 2);
    receiver.assert_count_stays(&server, "/stop", 1).await;

    // Without the header, 489 is an ordinary failure and is retried.
    receiver.script("/plain489", vec![Reply::Status(489), Reply::Status(200)]);
    let headers = [("Upstash-Retries", "3"), ("Upstash-Retry-Delay", "1000")];
    let id = server.publish_ok(&receiver.url("/plain489"), &headers, "retryable").await;
    receiver.wait_for("/plain489", 1).await;
    expect_next_attempt_after(&server, &receiver, "/plain489", &id, 1, 1, SECOND).await;
    let states = server.wait_for_state(&id, "DELIVERED").await;
    assert_eq!(states, ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "DELIVERED"]);
    assert!(dlq_entries(&server, &id).await.is_empty());
}

#[tokio::test]
async fn an_attempt_that_exceeds_the_timeout_fails_and_is_retried() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/hang", vec![Reply::Hang]);
    let headers = [("Upstash-Timeout", "5s"), ("Upstash-Retries", "1"), ("Upstash-Retry-Delay", "1000")];
    let id = server.publish_ok(&receiver.url("/hang"), &headers, "slow").await;
    receiver.wait_for("/hang", 1).await;
    server.wait_for_state(&id, "ACTIVE").await;

    server.advance(Duration::from_secs(5) - MARGIN);
    receiver.assert_count_stays(&server, "/hang", 1).await;
    assert_eq!(server.log_states(&id).await, ["CREATED", "ACTIVE"], "still waiting for the answer");
    server.advance(MARGIN);
    wait_for_count(&server, &id, "RETRY", 1).await;
    let logs = log_entries(&server, &id).await;
    let error = logs.iter().find(|e| e["state"] == "ERROR").expect("ERROR entry");
    assert!(error["responseStatus"].as_u64().unwrap_or(0) == 0, "no response was received: {error}");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("timeout")), "{error}");

    // The retry runs and times out too; the message fails with status 0 in the DLQ.
    expect_request_after(&server, &receiver, "/hang", 1, SECOND).await;
    server.wait_for_state(&id, "ACTIVE").await;
    server.advance(Duration::from_secs(5));
    let states = server.wait_for_state(&id, "FAILED").await;
    assert_eq!(states, ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR", "FAILED"]);
    let entry = dlq_entry(&server, &id).await;
    assert_eq!(entry["responseStatus"], 0);
    assert!(entry.get("responseBody").is_none(), "{entry}");
}

#[tokio::test]
async fn delay_holds_the_first_attempt_until_due() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let id = server.publish_ok(&receiver.url("/later"), &[("Upstash-Delay", "30s")], "later").await;
    let message = message_json(&server, &id).await;
    let created = message["createdAt"].as_i64().unwrap();
    assert_eq!(message["notBefore"].as_i64().unwrap(), created + 30_000);
    let created_entry = &log_entries(&server, &id).await[0];
    assert_eq!(created_entry["nextDeliveryTime"].as_i64().unwrap(), created + 30_000);

    receiver.assert_count_stays(&server, "/later", 0).await;
    expect_request_after(&server, &receiver, "/later", 0, Duration::from_secs(30)).await;
    assert_eq!(server.wait_for_state(&id, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);

    // A message without delay shows its creation time as notBefore.
    let now_id = server.publish_ok(&receiver.url("/now"), &[], "now").await;
    let message = message_json(&server, &now_id).await;
    assert_eq!(message["notBefore"], message["createdAt"]);
    receiver.wait_for("/now", 1).await;
}

#[tokio::test]
async fn not_before_wins_over_delay() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let now_seconds = server.now_ms() / 1000;
    let (a_at, b_at) = (now_seconds + 60, now_seconds + 30);
    // A: the delay alone would deliver it after 10 s; B: the delay alone would wait an hour.
    let a_before = a_at.to_string();
    let a = server
        .publish_ok(&receiver.url("/a"), &[("Upstash-Delay", "10s"), ("Upstash-Not-Before", &a_before)], "a")
        .await;
    let b_before = b_at.to_string();
    let b = server
        .publish_ok(&receiver.url("/b"), &[("Upstash-Delay", "1h"), ("Upstash-Not-Before", &b_before)], "b")
        .await;
    assert_eq!(message_json(&server, &a).await["notBefore"].as_i64().unwrap(), a_at * 1000);
    assert_eq!(message_json(&server, &b).await["notBefore"].as_i64().unwrap(), b_at * 1000);

    server.advance(Duration::from_secs(11));
    receiver.assert_count_stays(&server, "/a", 0).await;
    let until_b = (b_at * 1000 - server.now_ms()) as u64;
    expect_request_after(&server, &receiver, "/b", 0, ms(until_b)).await;
    receiver.assert_count_stays(&server, "/a", 0).await;
    let until_a = (a_at * 1000 - server.now_ms()) as u64;
    expect_request_after(&server, &receiver, "/a", 0, ms(until_a)).await;

    // A not-before in the past means now.
    let past = server.publish_ok(&receiver.url("/past"), &[("Upstash-Not-Before", "1000")], "past").await;
    receiver.wait_for("/past", 1).await;
    assert_eq!(server.wait_for_state(&past, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);
}

#[tokio::test]
async fn messages_due_at_the_same_time_are_all_delivered() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let due_seconds = server.now_ms() / 1000 + 20;
    let not_before = due_seconds.to_string();
    const COUNT: usize = 60;
    let mut ids = BTreeSet::new();
    for i in 0..COUNT {
        // Half by not-before, half by a delay that lands on the same millisecond.
        let delay = format!("{}ms", due_seconds * 1000 - server.now_ms());
        let header =
            if i % 2 == 0 { ("Upstash-Not-Before", not_before.as_str()) } else { ("Upstash-Delay", delay.as_str()) };
        ids.insert(server.publish_ok(&receiver.url("/same"), &[header], &format!("message {i}")).await);
    }
    for id in &ids {
        assert_eq!(message_json(&server, id).await["notBefore"].as_i64().unwrap(), due_seconds * 1000);
    }
    let until_due = (due_seconds * 1000 - server.now_ms()) as u64;
    server.advance(ms(until_due) - MARGIN);
    receiver.assert_count_stays(&server, "/same", 0).await;
    server.advance(MARGIN);
    let requests = receiver.wait_for("/same", COUNT).await;
    receiver.assert_count_stays(&server, "/same", COUNT).await;
    let delivered: BTreeSet<String> =
        requests.iter().map(|r| r.header("upstash-message-id").unwrap().to_string()).collect();
    assert_eq!(delivered, ids);
    let bodies: BTreeSet<_> = requests.iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies.len(), COUNT);
}

#[tokio::test]
async fn retries_and_timeouts_are_clamped_to_the_configured_maximum() {
    let server = TestServer::start_with(|config| {
        config.limits.max_retries = 2;
        config.limits.max_timeout = "3s".into();
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script("/fail", vec![Reply::Status(500)]);
    let headers = [("Upstash-Retries", "50"), ("Upstash-Retry-Delay", "1000")];
    let id = server.publish_ok(&receiver.url("/fail"), &headers, "many").await;
    assert_eq!(message_json(&server, &id).await["maxRetries"], 2);
    receiver.wait_for("/fail", 1).await;
    for retry in 1..=2 {
        expect_next_attempt_after(&server, &receiver, "/fail", &id, retry, retry, SECOND).await;
    }
    server.wait_for_state(&id, "FAILED").await;
    server.advance(DAY);
    receiver.assert_count_stays(&server, "/fail", 3).await;

    // A longer Upstash-Timeout, or none at all, means the configured maximum.
    receiver.script("/hang", vec![Reply::Hang]);
    for timeout in [Some("1h"), None] {
        let mut all = vec![("Upstash-Retries", "0")];
        all.extend(timeout.map(|t| ("Upstash-Timeout", t)));
        let id = server.publish_ok(&receiver.url("/hang"), &all, "slow").await;
        server.wait_for_state(&id, "ACTIVE").await;
        server.advance(Duration::from_secs(3) - MARGIN);
        server.settle(&[&receiver]).await;
        assert_eq!(server.log_states(&id).await, ["CREATED", "ACTIVE"], "{all:?}");
        server.advance(MARGIN);
        assert_eq!(server.wait_for_state(&id, "FAILED").await, ["CREATED", "ACTIVE", "ERROR", "FAILED"]);
    }
}
