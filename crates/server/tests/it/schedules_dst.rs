//! Daylight-saving changes (spec §14, `CRON_TZ` with real zone rules), on servers whose clock
//! starts just before a transition. The behaviour is Vixie cron's: a fixed time that falls into
//! a skipped hour fires once, right after the gap; a fixed time in a repeated hour fires once
//! (in the first pass); interval patterns skip the gap and fire in both passes of a repeated
//! hour. An every-minute UTC schedule proves that the ticker ran at each minute in between.

use crate::harness::*;
use crate::schedule_support::*;
use axum::http::StatusCode;
use chrono_tz::Tz;

fn zone(name: &str) -> Tz {
    name.parse().unwrap()
}

/// Every minute boundary in `(from, to]`.
fn every_minute(from: i64, to: i64) -> Vec<i64> {
    instants_matching(Tz::UTC, from, to, MINUTE_MS, |_| true)
}

async fn delete(server: &TestServer, id: &str) {
    let (status, _) = send(server.delete(&format!("/v2/schedules/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn new_york_skipped_hour_fires_a_fixed_time_once_right_after_the_gap() {
    // 2026-03-08: at 02:00 EST (07:00 UTC) New York clocks jump to 03:00 EDT.
    let new_york = zone("America/New_York");
    let gap = utc_ms(2026, 3, 8, 7, 0);
    assert_eq!(gap, local_ms(new_york, 2026, 3, 8, 3, 0));
    assert_eq!(gap - local_ms(new_york, 2026, 3, 8, 1, 59), MINUTE_MS, "01:59 EST is a minute before 03:00 EDT");
    let start = utc_ms(2026, 3, 8, 6, 25);
    let server = TestServer::start_at(start, |_| {}).await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let until = utc_ms(2026, 3, 8, 7, 35);
    // 02:30 exists again the next days: 06:30 UTC (EDT).
    let next_day = utc_ms(2026, 3, 9, 6, 30);
    assert_eq!(next_day, local_ms(new_york, 2026, 3, 9, 2, 30));
    let jobs = [
        Job::new("* * * * *", "/heartbeat", every_minute(start, until + HOUR_MS)),
        Job::new("CRON_TZ=America/New_York 30 2 * * *", "/fixed", vec![gap, next_day, next_day + DAY_MS]),
        // 01:30 EST, then 03:00, 03:30 EDT…: 02:00 and 02:30 do not exist.
        Job::new(
            "CRON_TZ=America/New_York */30 * * * *",
            "/interval",
            (0..6).map(|i| utc_ms(2026, 3, 8, 6, 30) + i * 30 * MINUTE_MS).collect(),
        ),
        // 03:00 EDT exists and fires once, at the same instant as the shifted 02:30.
        Job::new("CRON_TZ=America/New_York 0 3 * * *", "/three", vec![gap, utc_ms(2026, 3, 9, 7, 0)]),
    ];
    let ids = walk(&server, &receiver, &jobs, until).await;
    delete(&server, &ids[0]).await;
    delete(&server, &ids[2]).await;
    expect_ticks(&server, &receiver, "/fixed", &ids[1], &[next_day]).await;
}

#[tokio::test]
async fn berlin_repeated_hour_fires_a_fixed_time_once_and_an_interval_in_both_passes() {
    // 2026-10-25: at 03:00 CEST (01:00 UTC) Berlin clocks go back to 02:00 CET, so local
    // 02:00-03:00 happens twice: 00:00-01:00 UTC and 01:00-02:00 UTC.
    let berlin = zone("Europe/Berlin");
    let first_pass = utc_ms(2026, 10, 25, 0, 30);
    assert_eq!(first_pass, local_ms(berlin, 2026, 10, 25, 2, 30), "02:30 CEST");
    assert_eq!(in_zone(berlin, first_pass + HOUR_MS).format("%H:%M %Z").to_string(), "02:30 CET");
    let start = utc_ms(2026, 10, 24, 23, 55);
    let server = TestServer::start_at(start, |_| {}).await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let until = utc_ms(2026, 10, 25, 2, 35);
    // The next day 02:30 is CET only: 01:30 UTC.
    let next_day = utc_ms(2026, 10, 26, 1, 30);
    assert_eq!(next_day, local_ms(berlin, 2026, 10, 26, 2, 30));
    let jobs = [
        Job::new("* * * * *", "/heartbeat", every_minute(start, until + HOUR_MS)),
        Job::new("CRON_TZ=Europe/Berlin 30 2 * * *", "/fixed", vec![first_pass, next_day, next_day + DAY_MS]),
        // 02:00, 02:30 CEST, 02:00, 02:30 CET, 03:00 CET…: every real half hour.
        Job::new(
            "CRON_TZ=Europe/Berlin */30 * * * *",
            "/interval",
            (0..8).map(|i| utc_ms(2026, 10, 25, 0, 0) + i * 30 * MINUTE_MS).collect(),
        ),
        // 03:30 happens once, after the repeated hour: CET.
        Job::new(
            "CRON_TZ=Europe/Berlin 30 3 * * *",
            "/after",
            vec![utc_ms(2026, 10, 25, 2, 30), utc_ms(2026, 10, 26, 2, 30)],
        ),
    ];
    let ids = walk(&server, &receiver, &jobs, until).await;
    delete(&server, &ids[0]).await;
    delete(&server, &ids[2]).await;
    delete(&server, &ids[3]).await;
    expect_ticks(&server, &receiver, "/fixed", &ids[1], &[next_day]).await;
}

#[tokio::test]
async fn fixed_times_in_the_other_two_transitions() {
    // New York falls back on 2026-11-01 (01:00-02:00 twice): 01:30 fires in the first pass
    // (EDT, 05:30 UTC) only; the next day 01:30 EST is 06:30 UTC.
    let new_york = zone("America/New_York");
    let server = TestServer::start_at(utc_ms(2026, 11, 1, 5, 0), |_| {}).await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let id = create_ok(&server, &receiver.url("/ny"), "CRON_TZ=America/New_York 30 1 * * *", &[], "").await;
    let ticks = [utc_ms(2026, 11, 1, 5, 30), utc_ms(2026, 11, 2, 6, 30)];
    assert_eq!(ticks[1], local_ms(new_york, 2026, 11, 2, 1, 30));
    expect_ticks(&server, &receiver, "/ny", &id, &ticks).await;

    // Berlin springs forward on 2026-03-29 (02:00 CET becomes 03:00 CEST, 01:00 UTC): 02:30
    // fires right after the gap, then at 02:30 CEST (00:30 UTC) the next day.
    let berlin = zone("Europe/Berlin");
    let server = TestServer::start_at(utc_ms(2026, 3, 29, 0, 0), |_| {}).await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let id = create_ok(&server, &receiver.url("/berlin"), "CRON_TZ=Europe/Berlin 30 2 * * *", &[], "").await;
    let ticks = [utc_ms(2026, 3, 29, 1, 0), utc_ms(2026, 3, 30, 0, 30)];
    assert_eq!(ticks[0], local_ms(berlin, 2026, 3, 29, 3, 0));
    assert_eq!(ticks[1], local_ms(berlin, 2026, 3, 30, 2, 30));
    expect_ticks(&server, &receiver, "/berlin", &id, &ticks).await;
}
