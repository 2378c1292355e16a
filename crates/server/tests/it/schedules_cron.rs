//! The cron dialect (spec §14) fires at the right instants: every minute, steps, lists,
//! ranges, stepped ranges, month and weekday names, `7` as Sunday, both day fields restricted
//! (either matches), the `@` descriptors, and `CRON_TZ=`/`TZ=` zones with odd offsets. The
//! expected instants are found by brute force over local times (chrono-tz), independently of
//! the cron library; the clock walks through them (see [`walk`]).

use crate::harness::*;
use crate::schedule_support::*;
use chrono::{DateTime, Datelike, Timelike, Weekday};
use chrono_tz::Tz;

const UTC: Tz = Tz::UTC;

/// Whether a local time matches a cron expression.
type Matcher = Box<dyn Fn(&DateTime<Tz>) -> bool>;

fn at_minute(time: &DateTime<Tz>, hour: u32, minute: u32) -> bool {
    time.hour() == hour && time.minute() == minute
}

#[tokio::test]
async fn minute_and_hour_forms_fire_on_every_matching_minute_and_no_other() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    // From half a minute into an hour, through the next hour's first minute.
    let base = next_hour(server.now_ms());
    advance_to(&server, base + 30_000);
    let (from, until, horizon) = (server.now_ms(), base + HOUR_MS + MINUTE_MS, base + 3 * HOUR_MS);
    let minutes = |zone: Tz, matches: fn(u32) -> bool| {
        instants_matching(zone, from, horizon, MINUTE_MS, move |time: &DateTime<Tz>| matches(time.minute()))
    };
    let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
    let kathmandu: Tz = "Asia/Kathmandu".parse().unwrap();
    let jobs = [
        Job::new("* * * * *", "/every", minutes(UTC, |_| true)),
        Job::new("*/15 * * * *", "/step", minutes(UTC, |m| m % 15 == 0)),
        Job::new("*/25 * * * *", "/step25", minutes(UTC, |m| [0, 25, 50].contains(&m))),
        Job::new("5,35 * * * *", "/list", minutes(UTC, |m| m == 5 || m == 35)),
        Job::new("10-12 * * * *", "/range", minutes(UTC, |m| (10..=12).contains(&m))),
        Job::new("20-40/10 * * * *", "/stepped-range", minutes(UTC, |m| [20, 30, 40].contains(&m))),
        Job::new("1,7-9,50-59/4 * * * *", "/mixed", minutes(UTC, |m| [1, 7, 8, 9, 50, 54, 58].contains(&m))),
        Job::new("@hourly", "/hourly", minutes(UTC, |m| m == 0)),
        // India is 5:30 ahead of UTC, Nepal 5:45: local minutes 15 and 45 are UTC 45 and 15,
        // local minute 0 is UTC 15.
        Job::new("CRON_TZ=Asia/Kolkata 15,45 * * * *", "/kolkata", minutes(kolkata, |m| m == 15 || m == 45)),
        Job::new("TZ=Asia/Kathmandu 0 * * * *", "/kathmandu", minutes(kathmandu, |m| m == 0)),
    ];
    assert_eq!(jobs[8].ticks[..2].iter().map(|t| (t - base) / MINUTE_MS).collect::<Vec<_>>(), [15, 45]);
    assert_eq!((jobs[9].ticks[0] - base) / MINUTE_MS, 15);
    walk(&server, &receiver, &jobs, until).await;
}

#[tokio::test]
async fn weekday_names_seven_as_sunday_either_day_field_and_daily_forms_fire_on_their_days() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let from = server.now_ms();
    let (until, horizon) = (from + 8 * DAY_MS, from + 40 * DAY_MS);
    let days = |zone: Tz, matches: Matcher| instants_matching(zone, from, horizon, 30 * MINUTE_MS, matches);
    // Both day fields restricted: the day of the month in 3 days, or the weekday in 5 days.
    let in_three_days = in_zone(UTC, from + 3 * DAY_MS).day();
    let in_five_days = in_zone(UTC, from + 5 * DAY_MS).weekday();
    let weekday_name = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][in_five_days.num_days_from_monday() as usize];
    let new_york: Tz = "America/New_York".parse().unwrap();
    let jobs = [
        Job::new(
            "0 12 * * sat",
            "/saturday",
            days(UTC, Box::new(|t| t.weekday() == Weekday::Sat && at_minute(t, 12, 0))),
        ),
        Job::new(
            "30 6 * * MON-FRI",
            "/weekdays",
            days(UTC, Box::new(|t| t.weekday().num_days_from_monday() < 5 && at_minute(t, 6, 30))),
        ),
        Job::new("0 0 * * 7", "/seven", days(UTC, Box::new(|t| t.weekday() == Weekday::Sun && at_minute(t, 0, 0)))),
        Job::new(
            "0 18 * * 5-7",
            "/weekend",
            days(UTC, Box::new(|t| t.weekday().num_days_from_monday() >= 4 && at_minute(t, 18, 0))),
        ),
        Job::new(
            format!("0 9 {in_three_days} * {weekday_name}"),
            "/either",
            days(
                UTC,
                Box::new(move |t| (t.day() == in_three_days || t.weekday() == in_five_days) && at_minute(t, 9, 0)),
            ),
        ),
        Job::new("@daily", "/daily", days(UTC, Box::new(|t| at_minute(t, 0, 0)))),
        Job::new("@midnight", "/midnight", days(UTC, Box::new(|t| at_minute(t, 0, 0)))),
        Job::new("@weekly", "/weekly", days(UTC, Box::new(|t| t.weekday() == Weekday::Sun && at_minute(t, 0, 0)))),
        Job::new("CRON_TZ=America/New_York 0 4 * * *", "/new-york", days(new_york, Box::new(|t| at_minute(t, 4, 0)))),
    ];
    walk(&server, &receiver, &jobs, until).await;
}

#[tokio::test]
async fn month_names_and_the_monthly_and_yearly_forms_fire_in_their_months() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let from = server.now_ms();
    let (until, horizon) = (from + 2 * 366 * DAY_MS, from + 9 * 366 * DAY_MS);
    let hours = |matches: fn(&DateTime<Tz>) -> bool| instants_matching(UTC, from, horizon, 4 * HOUR_MS, matches);
    let jobs = [
        Job::new("@monthly", "/monthly", hours(|t| t.day() == 1 && at_minute(t, 0, 0))),
        Job::new(
            "0 8 1 jan,JUL *",
            "/jan-jul",
            hours(|t| [1, 7].contains(&t.month()) && t.day() == 1 && at_minute(t, 8, 0)),
        ),
        Job::new(
            "0 0 * feb-mar sun",
            "/feb-mar-sundays",
            hours(|t| [2, 3].contains(&t.month()) && t.weekday() == Weekday::Sun && at_minute(t, 0, 0)),
        ),
        Job::new("0 0 29 2 *", "/leap-day", hours(|t| t.month() == 2 && t.day() == 29 && at_minute(t, 0, 0))),
        Job::new("@yearly", "/yearly", hours(|t| t.month() == 1 && t.day() == 1 && at_minute(t, 0, 0))),
        Job::new("@annually", "/annually", hours(|t| t.month() == 1 && t.day() == 1 && at_minute(t, 0, 0))),
    ];
    walk(&server, &receiver, &jobs, until).await;
}
