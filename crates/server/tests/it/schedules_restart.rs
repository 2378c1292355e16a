//! Schedules across restarts (spec §14): a graceful restart neither loses nor doubles a tick;
//! a tick that came due while tern was down fires once at start if it is less than a minute
//! old; older ones are not back-filled.

use crate::harness::*;
use crate::schedule_support::*;
use crate::timeline::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tern_engine::clock::{Clock, SystemClock};

#[tokio::test]
async fn a_restart_in_the_middle_of_a_minute_neither_loses_nor_doubles_a_tick() {
    let mut server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let id = create_ok(&server, &receiver.url("/every"), "* * * * *", &[], "").await;
    let first = next_minute(server.now_ms());
    expect_tick(&server, &receiver, "/every", 0, first).await;

    server.advance(Duration::from_secs(30));
    // Created just before the restart, fired only after it.
    let fresh = create_ok(&server, &receiver.url("/fresh"), "* * * * *", &[], "").await;
    server.restart().await;
    receiver.assert_count_stays(&server, "/every", 1).await;
    receiver.assert_count_stays(&server, "/fresh", 0).await;
    assert_eq!(schedule(&server, &id).await["lastScheduleTime"], first);
    expect_ticks(&server, &receiver, "/every", &id, &[first + MINUTE_MS, first + 2 * MINUTE_MS]).await;
    let fresh_requests = receiver.requests_to("/fresh");
    assert_eq!(
        fresh_requests.iter().map(|r| r.at_ms.unwrap()).collect::<Vec<_>>(),
        [first + MINUTE_MS, first + 2 * MINUTE_MS]
    );
    assert_eq!(fresh_requests[0].header("upstash-schedule-id"), Some(fresh.as_str()));
}

#[tokio::test]
async fn a_restart_right_at_a_tick_fires_it_exactly_once() {
    let mut server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let id = create_ok(&server, &receiver.url("/every"), "* * * * *", &[], "").await;
    let first = next_minute(server.now_ms());
    // The tick comes due and the server stops at once: it fired before the shutdown or fires
    // at start, never both.
    advance_to(&server, first);
    server.restart().await;
    let request = receiver.wait_for("/every", 1).await.remove(0);
    receiver.assert_count_stays(&server, "/every", 1).await;
    let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
    assert_eq!(message["createdAt"], first);
    assert_eq!(schedule(&server, &id).await["lastScheduleTime"], first);
    expect_ticks(&server, &receiver, "/every", &id, &[first + MINUTE_MS]).await;
}

#[tokio::test]
async fn a_tick_missed_while_down_fires_once_at_start_when_less_than_a_minute_old() {
    let mut server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let id = create_ok(&server, &receiver.url("/every"), "* * * * *", &[], "").await;
    let first = next_minute(server.now_ms());
    expect_tick(&server, &receiver, "/every", 0, first).await;
    server.advance(Duration::from_secs(10));

    // Down from 10 s after one tick to 10 s after the next.
    server.restart_after(Duration::from_secs(60)).await;
    let request = receiver.wait_for("/every", 2).await.remove(1);
    assert_eq!(request.at_ms, Some(first + MINUTE_MS + 10_000), "fired at start");
    receiver.assert_count_stays(&server, "/every", 2).await;
    let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
    assert_eq!(message["createdAt"], first + MINUTE_MS, "for the missed tick");
    let shown = schedule(&server, &id).await;
    assert_eq!(shown["lastScheduleTime"], first + MINUTE_MS);
    expect_ticks(&server, &receiver, "/every", &id, &[first + 2 * MINUTE_MS]).await;
}

#[tokio::test]
async fn ticks_missed_by_more_than_a_minute_are_not_back_filled() {
    let mut server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let every = create_ok(&server, &receiver.url("/every"), "* * * * *", &[], "").await;
    let first = next_minute(server.now_ms());
    // A daily schedule whose only tick falls 2 minutes after `first`, while tern is down.
    let daily_at = in_zone(chrono_tz::Tz::UTC, first + 2 * MINUTE_MS);
    let daily_cron = daily_at.format("%M %H * * *").to_string();
    let daily = create_ok(&server, &receiver.url("/daily"), &daily_cron, &[], "").await;
    assert_eq!(next_schedule_time(&server, &daily).await, Some(first + 2 * MINUTE_MS));
    expect_tick(&server, &receiver, "/every", 0, first).await;
    server.advance(Duration::from_secs(10));

    // Down for 3 min 20 s: the ticks 1, 2 and 3 minutes after `first` pass; only the last one
    // is less than a minute old at start, and it fires once.
    server.restart_after(Duration::from_secs(200)).await;
    let request = receiver.wait_for("/every", 2).await.remove(1);
    receiver.assert_count_stays(&server, "/every", 2).await;
    let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
    assert_eq!(message["createdAt"], first + 3 * MINUTE_MS, "only the tick of the last minute");
    assert_eq!(schedule(&server, &every).await["lastScheduleTime"], first + 3 * MINUTE_MS);
    receiver.assert_count_stays(&server, "/daily", 0).await;
    let shown = schedule(&server, &daily).await;
    assert!(shown.get("lastScheduleTime").is_none(), "the daily tick was skipped: {shown}");
    assert_eq!(shown["nextScheduleTime"], first + 2 * MINUTE_MS + DAY_MS);
    expect_ticks(&server, &receiver, "/every", &every, &[first + 4 * MINUTE_MS]).await;
}

/// `GET` on the real binary, asserting a 200 JSON answer.
async fn get_from(http: &reqwest::Client, base: &str, path: &str) -> serde_json::Value {
    let (status, json) = send(http.get(format!("{base}{path}")).bearer_auth(TOKEN)).await;
    assert_eq!(status, axum::http::StatusCode::OK, "GET {path}: {json}");
    json
}

/// The real binary, on the wall clock, starts with a schedule whose stored tick is 5 minutes
/// old: it fires the tick of the last minute at once (and only that one). It is killed (-9) right
/// after that tick's delivery arrived — the tick is committed, its delivery unanswered — and
/// started again: the delivery is made again (same message), the tick is not fired again.
/// Later ticks may come due on the wall clock meanwhile; each tick has at most one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_right_after_a_tick_does_not_fire_it_again() {
    use crate::durability::TernProcess;
    let receiver = Receiver::start().await;
    receiver.script("/crash", vec![Reply::Hang]);
    let wall_now = SystemClock.now_ms();
    let mut server = TestServer::start_at(wall_now - 5 * MINUTE_MS, |_| {}).await;
    let id = create_ok(&server, &receiver.url("/crash"), "* * * * *", &[], "crash").await;
    assert!(next_schedule_time(&server, &id).await.unwrap() < wall_now - 3 * MINUTE_MS);
    server.shutdown().await;
    let stderr = server.data_dir().join("tern-stderr.log");

    let started = SystemClock.now_ms();
    let mut first = TernProcess::start(server.data_dir(), stderr.clone()).await;
    let fired = receiver.wait_for("/crash", 1).await.remove(0);
    first.kill();
    let arrived = SystemClock.now_ms();
    let fired_id = fired.header("upstash-message-id").unwrap().to_string();
    let first_run = receiver.requests_to("/crash").len();

    receiver.script("/crash", vec![Reply::Status(200)]);
    let second = TernProcess::start(server.data_dir(), stderr).await;
    let http = http_client();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let logs = get_from(&http, &second.url, &format!("/v2/logs?messageId={fired_id}")).await;
        if logs["events"][0]["state"] == "DELIVERED" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{fired_id} never delivered again: {}", second.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Delivered, the message is finished: every attempt the second run made of it has arrived.
    let again = receiver.requests_to("/crash");
    let redelivered = again[first_run..].iter().filter(|r| r.header("upstash-message-id") == Some(fired_id.as_str()));
    assert_eq!(redelivered.count(), 1, "the fired tick's message is delivered once after the restart");

    // One message per tick; the first is the tick of the minute before the first start.
    let created = get_from(&http, &second.url, &format!("/v2/logs?scheduleId={id}&state=CREATED")).await;
    let created: BTreeSet<String> =
        created["events"].as_array().unwrap().iter().map(|e| e["messageId"].as_str().unwrap().to_string()).collect();
    let delivered: BTreeSet<String> = message_ids(&receiver.requests_to("/crash")).into_iter().collect();
    assert!(delivered.is_subset(&created), "delivered {delivered:?}, created {created:?}");
    let mut ticks = BTreeMap::new();
    for message_id in &created {
        let message = get_from(&http, &second.url, &format!("/v2/messages/{message_id}")).await;
        let tick = message["createdAt"].as_i64().unwrap();
        assert!(ticks.insert(tick, message_id.clone()).is_none(), "tick {tick} fired twice: {created:?}");
    }
    let (first_tick, first_message) = ticks.iter().next().unwrap();
    assert_eq!(first_message, &fired_id);
    assert_eq!(first_tick % MINUTE_MS, 0);
    assert!(
        (started - MINUTE_MS..=arrived).contains(first_tick),
        "{first_tick}: the tick of the minute before {started}"
    );
}
