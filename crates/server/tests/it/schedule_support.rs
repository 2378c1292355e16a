//! Helpers of the schedule tests (spec §5.6, §6.3, §14): creating and reading schedules, and
//! walking the manual clock through their ticks. A tick is proven to fire exactly at its
//! instant: nothing has arrived 1 ms before, one request arrives when the clock reaches it,
//! stamped with that instant; and `nextScheduleTime` (the only tick the ticker will fire next)
//! names the expected next tick, so nothing can fire in between.

#![allow(dead_code)]

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use std::time::Duration;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// `POST /v2/schedules/{destination}` with `Upstash-Cron: cron` and extra headers.
pub async fn create_schedule(
    server: &TestServer,
    destination: &str,
    cron: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Value) {
    let mut request = server.post(&format!("/v2/schedules/{destination}")).header("Upstash-Cron", cron);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(body.to_string())).await
}

/// Creates a schedule, asserting a 200 `{"scheduleId"}` and nothing else; returns the id.
pub async fn create_ok(
    server: &TestServer,
    destination: &str,
    cron: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let (status, json) = create_schedule(server, destination, cron, headers, body).await;
    assert_eq!(status, StatusCode::OK, "create {cron:?} for {destination}: {json}");
    let object = json.as_object().unwrap_or_else(|| panic!("an object: {json}"));
    assert_eq!(object.len(), 1, "only scheduleId: {json}");
    json["scheduleId"].as_str().expect("scheduleId").to_string()
}

/// `GET /v2/schedules/{id}`, asserting a 200 and no `null` anywhere.
pub async fn schedule(server: &TestServer, id: &str) -> Value {
    let json = get_ok(server, &format!("/v2/schedules/{id}")).await;
    assert_no_nulls(&json);
    json
}

/// The `nextScheduleTime` of a schedule (`None` when absent, as for a paused one).
pub async fn next_schedule_time(server: &TestServer, id: &str) -> Option<i64> {
    schedule(server, id).await.get("nextScheduleTime").map(|next| next.as_i64().expect("an integer"))
}

/// `POST` or `PATCH` `/v2/schedules/{id}/{action}`; returns status and JSON.
pub async fn schedule_action(server: &TestServer, method: &str, id: &str, action: &str) -> (StatusCode, Value) {
    let method = method.parse().expect("a method");
    send(server.request(method, &format!("/v2/schedules/{id}/{action}"))).await
}

/// Pauses or resumes, asserting an empty 200.
pub async fn schedule_action_ok(server: &TestServer, method: &str, id: &str, action: &str) {
    let (status, json) = schedule_action(server, method, id, action).await;
    assert_eq!((status, json), (StatusCode::OK, Value::Null), "{method} {id}/{action}");
}

/// Waits until the schedule's `lastScheduleTime` is `tick` (the tick was stored).
pub async fn wait_for_last_tick(server: &TestServer, id: &str, tick: i64) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let shown = schedule(server, id).await;
        if shown["lastScheduleTime"] == tick {
            return shown;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never fired the tick {tick}: {shown}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first minute boundary strictly after `ms`.
pub fn next_minute(ms: i64) -> i64 {
    (ms.div_euclid(MINUTE_MS) + 1) * MINUTE_MS
}

/// The first hour boundary strictly after `ms`.
pub fn next_hour(ms: i64) -> i64 {
    (ms.div_euclid(HOUR_MS) + 1) * HOUR_MS
}

/// Moves the clock to exactly `at_ms`.
pub fn advance_to(server: &TestServer, at_ms: i64) {
    let now = server.now_ms();
    assert!(at_ms >= now, "the clock cannot go back from {now} to {at_ms}");
    server.advance(Duration::from_millis((at_ms - now) as u64));
}

/// Proves that the tick at `tick_ms` fires exactly then: `path` still has `seen` requests 1 ms
/// before, and gets one more when the clock reaches it, stamped `tick_ms`. Returns that request.
/// The receiver must stamp arrivals with the server clock.
pub async fn expect_tick(server: &TestServer, receiver: &Receiver, path: &str, seen: usize, tick_ms: i64) -> Recorded {
    advance_to(server, tick_ms - 1);
    receiver.assert_count_stays(server, path, seen).await;
    advance_to(server, tick_ms);
    let requests = receiver.wait_for(path, seen + 1).await;
    assert_eq!(requests.len(), seen + 1, "one request per tick at {path}: {requests:?}");
    let request = requests[seen].clone();
    assert_eq!(request.at_ms, Some(tick_ms), "the tick of {path} fired at its instant");
    request
}

/// Walks schedule `id` (delivering to `path`) through `ticks`: before each one its
/// `nextScheduleTime` names it, then [`expect_tick`]. Ends by checking that nothing more
/// arrives. Returns the requests of these ticks.
pub async fn expect_ticks(
    server: &TestServer,
    receiver: &Receiver,
    path: &str,
    id: &str,
    ticks: &[i64],
) -> Vec<Recorded> {
    let seen = receiver.requests_to(path).len();
    let mut requests = Vec::new();
    for (index, tick) in ticks.iter().enumerate() {
        assert_eq!(next_schedule_time(server, id).await, Some(*tick), "{id}: tick {index} is next");
        requests.push(expect_tick(server, receiver, path, seen + index, *tick).await);
    }
    receiver.assert_count_stays(server, path, seen + ticks.len()).await;
    requests
}

/// The `Upstash-Message-Id` of each request.
pub fn message_ids(requests: &[Recorded]) -> Vec<String> {
    requests.iter().map(|r| r.header("upstash-message-id").expect("Upstash-Message-Id").to_string()).collect()
}

/// Unix ms of a local time in `zone`; the earlier instant when the time is repeated.
pub fn local_ms(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    let naive = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, 0).unwrap();
    zone.from_local_datetime(&naive).earliest().expect("a valid local time").timestamp_millis()
}

/// Unix ms of a UTC time.
pub fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    local_ms(Tz::UTC, y, mo, d, h, mi)
}

/// The instant `ms` in `zone`.
pub fn in_zone(zone: Tz, ms: i64) -> DateTime<Tz> {
    Utc.timestamp_millis_opt(ms).single().expect("a valid instant").with_timezone(&zone)
}

/// Every instant on a `step_ms` grid in `(from_ms, to_ms]` whose local time in `zone`
/// satisfies `matches`, in order: the expected ticks of a cron expression, found by brute force
/// (no DST gap or fold may matter in the window — those have their own tests).
pub fn instants_matching(
    zone: Tz,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
    matches: impl Fn(&DateTime<Tz>) -> bool,
) -> Vec<i64> {
    let mut ticks = Vec::new();
    let mut at = (from_ms.div_euclid(step_ms) + 1) * step_ms;
    while at <= to_ms {
        if matches(&in_zone(zone, at)) {
            ticks.push(at);
        }
        at += step_ms;
    }
    ticks
}

/// A schedule under test: its cron, where it delivers, and every tick expected from the
/// clock's start, in order — including at least one beyond the walked window.
pub struct Job {
    pub cron: String,
    pub path: String,
    pub ticks: Vec<i64>,
}

impl Job {
    pub fn new(cron: impl Into<String>, path: impl Into<String>, ticks: Vec<i64>) -> Job {
        Job { cron: cron.into(), path: path.into(), ticks }
    }

    fn next_after(&self, at_ms: i64) -> i64 {
        *self.ticks.iter().find(|tick| **tick > at_ms).unwrap_or_else(|| panic!("{}: no tick after {at_ms}", self.cron))
    }
}

/// Creates `jobs` now and walks the clock through every instant at which one of them is due,
/// up to `until_ms`: at each instant the jobs due then deliver exactly once, stamped with it,
/// and afterwards every job's `nextScheduleTime` is its next expected tick (so no job can fire
/// anywhere else). Ends by checking that every job got exactly its ticks. Returns the ids.
pub async fn walk(server: &TestServer, receiver: &Receiver, jobs: &[Job], until_ms: i64) -> Vec<String> {
    let mut ids = Vec::new();
    for job in jobs {
        ids.push(create_ok(server, &receiver.url(&job.path), &job.cron, &[], "").await);
    }
    let check_next = |at_ms: i64| {
        let ids = ids.clone();
        async move {
            let listed = get_ok(server, "/v2/schedules").await;
            for (job, id) in jobs.iter().zip(&ids) {
                let shown = listed.as_array().unwrap().iter().find(|s| s["scheduleId"] == id.as_str()).expect("listed");
                assert_eq!(shown["nextScheduleTime"], job.next_after(at_ms), "next tick of {:?} at {at_ms}", job.cron);
            }
        }
    };
    check_next(server.now_ms()).await;
    let mut instants: Vec<i64> = jobs.iter().flat_map(|job| job.ticks.iter().copied()).collect();
    instants.retain(|at| *at > server.now_ms() && *at <= until_ms);
    instants.sort_unstable();
    instants.dedup();
    for at in instants {
        advance_to(server, at);
        for job in jobs {
            let due = job.ticks.iter().filter(|tick| **tick <= at).count();
            if job.ticks.contains(&at) {
                receiver.wait_for(&job.path, due).await;
            }
            let got = receiver.requests_to(&job.path).len();
            assert_eq!(got, due, "{:?} delivered {got} times by {at}, expected {due}", job.cron);
        }
        check_next(at).await;
    }
    for (index, (job, id)) in jobs.iter().zip(&ids).enumerate() {
        let expected: Vec<i64> = job.ticks.iter().copied().filter(|tick| *tick <= until_ms).collect();
        if index == 0 {
            receiver.assert_count_stays(server, &job.path, expected.len()).await;
        }
        let requests = receiver.requests_to(&job.path);
        let stamps: Vec<i64> = requests.iter().map(|request| request.at_ms.expect("a stamping receiver")).collect();
        assert_eq!(stamps, expected, "the ticks of {:?}", job.cron);
        assert!(requests.iter().all(|r| r.header("upstash-schedule-id") == Some(id.as_str())), "{:?}", job.cron);
    }
    ids
}
