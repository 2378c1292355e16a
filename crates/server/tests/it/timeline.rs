//! Helpers for tests that walk a message through time on the manual clock: waiting until an
//! attempt has been recorded, proving that nothing happens just before a due time and that the
//! next request arrives just after it, and reading messages and DLQ entries.

#![allow(dead_code)]

use crate::harness::*;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use std::time::Duration;

/// How far before a due time the tests look for early requests, and how far past it they go.
pub const MARGIN: Duration = Duration::from_millis(100);

/// The log entries of one message, oldest first.
pub async fn log_entries(server: &TestServer, message_id: &str) -> Vec<Value> {
    let (status, json) = send(server.get(&format!("/v2/logs?messageId={message_id}&order=earliestFirst"))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["events"].as_array().expect("events").clone()
}

/// Waits until the message's log holds `count` entries in `state`; returns all its states.
///
/// Counting (rather than looking at the last entry) matters while a message is retried: the
/// `ACTIVE` entry of an attempt is written asynchronously, so right after a request arrived the
/// log may still end with the `RETRY` of the previous attempt.
pub async fn wait_for_count(server: &TestServer, message_id: &str, state: &str, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let states = server.log_states(message_id).await;
        let seen = states.iter().filter(|s| *s == state).count();
        if seen >= count {
            assert_eq!(seen, count, "{message_id}: more {state} entries than expected: {states:?}");
            return states;
        }
        assert!(tokio::time::Instant::now() < deadline, "{message_id} never logged {state} {count} times: {states:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After the `retry_number`-th `RETRY` of `message_id` was logged (so the retry is planned),
/// proves that `path` gets no new request until `delay` has passed on the clock and exactly one
/// right after it. `seen` is the number of requests `path` got so far.
pub async fn expect_next_attempt_after(
    server: &TestServer,
    receiver: &Receiver,
    path: &str,
    message_id: &str,
    retry_number: usize,
    seen: usize,
    delay: Duration,
) {
    wait_for_count(server, message_id, "RETRY", retry_number).await;
    expect_request_after(server, receiver, path, seen, delay).await;
}

/// Moves the clock to just before `delay` from now, checks that `path` still has `seen`
/// requests, then moves just past it and waits for request `seen + 1`.
pub async fn expect_request_after(server: &TestServer, receiver: &Receiver, path: &str, seen: usize, delay: Duration) {
    server.advance(delay.saturating_sub(MARGIN));
    receiver.assert_count_stays(server, path, seen).await;
    server.advance(MARGIN * 2);
    receiver.wait_for(path, seen + 1).await;
}

/// `GET /v2/messages/{id}`, asserting a 200.
pub async fn message_json(server: &TestServer, message_id: &str) -> Value {
    let (status, json) = send(server.get(&format!("/v2/messages/{message_id}"))).await;
    assert_eq!(status, StatusCode::OK, "GET message {message_id}: {json}");
    json
}

/// The DLQ entries of one message (`GET /v2/dlq?messageId=`).
pub async fn dlq_entries(server: &TestServer, message_id: &str) -> Vec<Value> {
    let (status, json) = send(server.get(&format!("/v2/dlq?messageId={message_id}"))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["messages"].as_array().expect("messages").clone()
}

/// The one DLQ entry of a failed message.
pub async fn dlq_entry(server: &TestServer, message_id: &str) -> Value {
    let mut entries = dlq_entries(server, message_id).await;
    assert_eq!(entries.len(), 1, "one DLQ entry for {message_id}: {entries:?}");
    entries.remove(0)
}

pub fn base64(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// The values of the `Upstash-Retried` header of every request `path` got, in order.
pub fn retried_headers(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver
        .requests_to(path)
        .iter()
        .map(|request| request.header("upstash-retried").unwrap_or("missing").to_string())
        .collect()
}

/// An RFC 1123 date (`Sun, 06 Nov 1994 08:49:37 GMT`) for Unix seconds, as `Retry-After` carries.
pub fn http_date(unix_seconds: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[test]
fn http_dates_are_rfc_1123() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
}
