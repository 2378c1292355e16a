//! Managing schedules (spec §5.6, §6.3, §14): get and list with every field and nothing unset,
//! `lastScheduleStates` and `error` after ticks, 404s, delete (stops future ticks, idempotent,
//! leaves produced messages alone), pause and resume by `POST` and `PATCH` (paused ticks are
//! skipped, not queued up; both idempotent).

use crate::harness::*;
use crate::schedule_support::*;
use crate::support::*;
use crate::timeline::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().expect("an object").keys().map(String::as_str).collect()
}

/// Waits until `lastScheduleStates` of the schedule equals `states`.
async fn wait_for_states(server: &TestServer, id: &str, states: Value) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let shown = schedule(server, id).await;
        if shown["lastScheduleStates"] == states {
            return shown;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id}: states never became {states}: {shown}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn delete_ok(server: &TestServer, path: &str) {
    let (status, json) = send(server.delete(path)).await;
    assert_eq!((status, json), (StatusCode::OK, Value::Null), "DELETE {path}");
}

#[tokio::test]
async fn get_and_list_show_every_field_and_nothing_unset() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let (callback, failure) = (receiver.url("/cb?x=1"), receiver.url("/fcb"));
    let headers = [
        ("Upstash-Schedule-Id", "full"),
        ("Content-Type", "application/json"),
        ("Upstash-Forward-test-header", "test-value"),
        ("Upstash-Method", "PUT"),
        ("Upstash-Retries", "2"),
        ("Upstash-Retry-Delay", "1000 * (1 + retried)"),
        ("Upstash-Delay", "1m30s"),
        ("Upstash-Timeout", "20s"),
        ("Upstash-Callback", callback.as_str()),
        ("Upstash-Callback-Forward-X-Cb", "cb"),
        ("Upstash-Failure-Callback", failure.as_str()),
        ("Upstash-Failure-Callback-Forward-X-Fcb", "fcb"),
        ("Upstash-Queue-Name", "scheduled"),
        ("Upstash-Flow-Control-Key", "full-key"),
        ("Upstash-Flow-Control-Value", "parallelism=2,rate=10,period=1d"),
        ("Upstash-Label", "first,second"),
        // Only configuration is kept, not telemetry or the request's own headers.
        ("Upstash-Telemetry-Sdk", "tests"),
        ("X-Not-Forwarded", "no"),
    ];
    let destination = receiver.url("/full?a=1");
    let created_at = server.now_ms();
    let id = create_ok(&server, &destination, " */10 * * * * ", &headers, r#"{"hello":"world"}"#).await;
    let tick = (created_at.div_euclid(10 * MINUTE_MS) + 1) * 10 * MINUTE_MS;
    let mut expected = json!({
        "scheduleId": "full",
        "cron": "*/10 * * * *",
        "destination": destination,
        "createdAt": created_at,
        "method": "PUT",
        "retries": 2,
        "header": {"Content-Type": ["application/json"], "Test-Header": ["test-value"]},
        "callbackHeader": {"X-Cb": ["cb"]},
        "failureCallbackHeader": {"X-Fcb": ["fcb"]},
        "body": r#"{"hello":"world"}"#,
        "delay": 90,
        "timeout": 20,
        "callback": callback,
        "failureCallback": failure,
        "queueName": "scheduled",
        "callerIP": "127.0.0.1",
        "callerIp": "127.0.0.1",
        "isPaused": false,
        "flowControlKey": "full-key",
        "parallelism": 2,
        "rate": 10,
        "period": 86_400,
        "retryDelayExpression": "1000 * (1 + retried)",
        "label": "first",
        "labels": ["first", "second"],
        "nextScheduleTime": tick,
    });
    assert_eq!(schedule(&server, &id).await, expected);

    // A minimal schedule shows the required fields only (an empty header map at most).
    let minimal = create_ok(&server, "http://127.0.0.1:9/minimal", "0 0 1 1 *", &[], "").await;
    let shown = schedule(&server, &minimal).await;
    let required = [
        "scheduleId",
        "cron",
        "destination",
        "createdAt",
        "method",
        "retries",
        "callerIP",
        "callerIp",
        "isPaused",
        "nextScheduleTime",
    ];
    assert_eq!(keys(&shown), BTreeSet::from(required), "no empty header map: {shown}");
    assert_eq!((&shown["method"], &shown["retries"], &shown["isPaused"]), (&json!("POST"), &json!(3), &json!(false)));

    // After a tick: when it ran, the state of its message (waiting for its delay), the next one.
    advance_to(&server, tick);
    let shown = wait_for_last_tick(&server, &id, tick).await;
    let states = shown["lastScheduleStates"].as_object().unwrap_or_else(|| panic!("states: {shown}"));
    assert_eq!(states.len(), 1, "{shown}");
    let (message_id, state) = states.iter().next().unwrap();
    assert_eq!(state, "IN_PROGRESS");
    assert_eq!(message_json(&server, message_id).await["scheduleId"], "full");
    expected["lastScheduleTime"] = json!(tick);
    expected["nextScheduleTime"] = json!(tick + 10 * MINUTE_MS);
    expected["lastScheduleStates"] = json!({ message_id.as_str(): "IN_PROGRESS" });
    assert_eq!(shown, expected);
    let listed = get_ok(&server, "/v2/schedules").await;
    assert_no_nulls(&listed);
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&expected), "{listed:?}");
    assert!(listed.contains(&schedule(&server, &minimal).await), "{listed:?}");
    assert_eq!(send(server.get("/v2/schedules/")).await, (StatusCode::OK, Value::Array(listed)));
}

#[tokio::test]
async fn last_schedule_states_follow_the_last_tick_and_a_deleted_group_is_an_error() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    receiver.script("/held", vec![Reply::Hold(200)]);
    receiver.script("/bad", vec![Reply::Status(500)]);
    let group = json!({"endpoints": [{"url": receiver.url("/held")}, {"url": receiver.url("/bad")}]});
    let (status, json) = send(server.post("/v2/topics/team/endpoints").json(&group)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let id = create_ok(&server, "team", "* * * * *", &[("Upstash-Retries", "0")], "").await;

    let first = next_minute(server.now_ms());
    let held = expect_tick(&server, &receiver, "/held", 0, first).await;
    let bad = receiver.wait_for("/bad", 1).await.remove(0);
    let (held, bad) = (held.header("upstash-message-id").unwrap(), bad.header("upstash-message-id").unwrap());
    server.wait_for_state(bad, "FAILED").await;
    wait_for_states(&server, &id, json!({held: "IN_PROGRESS", bad: "FAIL"})).await;
    receiver.release("/held", 1);
    server.wait_for_state(held, "DELIVERED").await;
    let shown = wait_for_states(&server, &id, json!({held: "SUCCESS", bad: "FAIL"})).await;
    assert!(shown.get("error").is_none(), "{shown}");

    // The group is gone at the next tick: the tick counts, with an error and no messages.
    delete_ok(&server, "/v2/topics/team").await;
    advance_to(&server, first + MINUTE_MS);
    let shown = wait_for_last_tick(&server, &id, first + MINUTE_MS).await;
    assert_eq!(shown["error"], "topic team not found", "{shown}");
    assert!(shown.get("lastScheduleStates").is_none(), "no messages: {shown}");
    assert_eq!(shown["nextScheduleTime"], first + 2 * MINUTE_MS);
    receiver.assert_count_stays(&server, "/held", 1).await;

    // Back again: the next tick delivers and clears the error.
    let group = json!({"endpoints": [{"url": receiver.url("/back")}]});
    let (status, json) = send(server.post("/v2/topics/team/endpoints").json(&group)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let back = expect_tick(&server, &receiver, "/back", 0, first + 2 * MINUTE_MS).await;
    let back = back.header("upstash-message-id").unwrap();
    server.wait_for_state(back, "DELIVERED").await;
    let shown = wait_for_states(&server, &id, json!({back: "SUCCESS"})).await;
    assert!(shown.get("error").is_none(), "{shown}");
}

#[tokio::test]
async fn unknown_schedules_are_404_and_other_users_see_none() {
    let server = TestServer::start().await;
    expect_error(server.get("/v2/schedules/nope"), StatusCode::NOT_FOUND, "Schedule not found").await;
    for method in [axum::http::Method::POST, axum::http::Method::PATCH] {
        for action in ["pause", "resume"] {
            let request = server.request(method.clone(), &format!("/v2/schedules/nope/{action}"));
            expect_error(request, StatusCode::NOT_FOUND, "Schedule not found").await;
        }
    }
    delete_ok(&server, "/v2/schedules/nope").await;

    let id = create_ok(&server, "http://127.0.0.1:9/mine", "0 * * * *", &[], "").await;
    let other = |method: axum::http::Method, path: String| {
        server.http.request(method, format!("{}{path}", server.url)).bearer_auth(OTHER_TOKEN)
    };
    let get = other(axum::http::Method::GET, format!("/v2/schedules/{id}"));
    expect_error(get, StatusCode::NOT_FOUND, "Schedule not found").await;
    assert_eq!(send(other(axum::http::Method::GET, "/v2/schedules".into())).await, (StatusCode::OK, json!([])));
    let pause = other(axum::http::Method::PATCH, format!("/v2/schedules/{id}/pause"));
    expect_error(pause, StatusCode::NOT_FOUND, "Schedule not found").await;
    let (status, _) = send(other(axum::http::Method::DELETE, format!("/v2/schedules/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(schedule(&server, &id).await["isPaused"], false, "untouched by the other user");
}

#[tokio::test]
async fn delete_stops_future_ticks_but_not_produced_messages_and_is_idempotent() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let heartbeat = create_ok(&server, &receiver.url("/heartbeat"), "* * * * *", &[], "").await;
    let victim = create_ok(&server, &receiver.url("/victim"), "* * * * *", &[("Upstash-Delay", "30s")], "").await;

    let first = next_minute(server.now_ms());
    expect_tick(&server, &receiver, "/heartbeat", 0, first).await;
    wait_for_last_tick(&server, &victim, first).await;
    delete_ok(&server, &format!("/v2/schedules/{victim}")).await;
    expect_error(server.get(&format!("/v2/schedules/{victim}")), StatusCode::NOT_FOUND, "Schedule not found").await;
    delete_ok(&server, &format!("/v2/schedules/{victim}")).await;
    let listed = get_ok(&server, "/v2/schedules").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["scheduleId"], heartbeat.as_str());

    // What the last tick produced is still delivered; later ticks produce nothing.
    let produced = expect_tick(&server, &receiver, "/victim", 0, first + 30_000).await;
    assert_eq!(produced.header("upstash-schedule-id"), Some(victim.as_str()));
    for (index, tick) in [first + MINUTE_MS, first + 2 * MINUTE_MS].into_iter().enumerate() {
        expect_tick(&server, &receiver, "/heartbeat", index + 1, tick).await;
    }
    receiver.assert_count_stays(&server, "/victim", 1).await;
}

#[tokio::test]
async fn pause_skips_ticks_without_queueing_them_and_resume_fires_from_the_next_tick() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let heartbeat = create_ok(&server, &receiver.url("/heartbeat"), "* * * * *", &[], "").await;
    let paused = create_ok(&server, &receiver.url("/paused"), "* * * * *", &[], "").await;
    let delayed = create_ok(&server, &receiver.url("/delayed"), "* * * * *", &[("Upstash-Delay", "30s")], "").await;

    let first = next_minute(server.now_ms());
    expect_tick(&server, &receiver, "/heartbeat", 0, first).await;
    receiver.wait_for("/paused", 1).await;
    wait_for_last_tick(&server, &delayed, first).await;
    schedule_action_ok(&server, "POST", &paused, "pause").await;
    schedule_action_ok(&server, "PATCH", &delayed, "pause").await;
    for id in [&paused, &delayed] {
        let shown = schedule(&server, id).await;
        assert_eq!(shown["isPaused"], true);
        assert!(shown.get("nextScheduleTime").is_none(), "no next tick while paused: {shown}");
        assert_eq!(shown["lastScheduleTime"], first);
    }
    // Pausing again changes nothing.
    schedule_action_ok(&server, "PATCH", &paused, "pause").await;
    schedule_action_ok(&server, "POST", &delayed, "pause").await;
    assert_eq!(schedule(&server, &paused).await["isPaused"], true);

    // A message produced before the pause is still delivered.
    expect_tick(&server, &receiver, "/delayed", 0, first + 30_000).await;
    // Paused ticks are skipped: the heartbeat proves that the ticker ran.
    for (index, tick) in (1..=3).map(|i| first + i * MINUTE_MS).enumerate() {
        expect_tick(&server, &receiver, "/heartbeat", index + 1, tick).await;
    }
    receiver.assert_count_stays(&server, "/paused", 1).await;
    receiver.assert_count_stays(&server, "/delayed", 1).await;

    // Resumed half-way through a minute: no burst of the missed ticks, the next tick fires.
    server.advance(Duration::from_secs(30));
    schedule_action_ok(&server, "PATCH", &paused, "resume").await;
    let resumed_next = first + 4 * MINUTE_MS;
    assert_eq!(schedule(&server, &paused).await["isPaused"], false);
    assert_eq!(next_schedule_time(&server, &paused).await, Some(resumed_next));
    receiver.assert_count_stays(&server, "/paused", 1).await;
    schedule_action_ok(&server, "POST", &paused, "resume").await;
    assert_eq!(next_schedule_time(&server, &paused).await, Some(resumed_next), "resuming again changes nothing");
    let request = expect_tick(&server, &receiver, "/paused", 1, resumed_next).await;
    let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
    assert_eq!(message["createdAt"], resumed_next);
    receiver.wait_for("/heartbeat", 5).await;
    receiver.assert_count_stays(&server, "/delayed", 1).await;
    assert_eq!(schedule(&server, &heartbeat).await["isPaused"], false);

    // Paused by PATCH, resumed by POST: the same.
    schedule_action_ok(&server, "PATCH", &paused, "pause").await;
    expect_tick(&server, &receiver, "/heartbeat", 5, first + 5 * MINUTE_MS).await;
    receiver.assert_count_stays(&server, "/paused", 2).await;
    schedule_action_ok(&server, "POST", &paused, "resume").await;
    expect_ticks(&server, &receiver, "/paused", &paused, &[first + 6 * MINUTE_MS]).await;
}
