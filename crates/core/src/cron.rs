//! Cron expressions of schedules (spec §14): five fields (minute, hour, day of month, month, day
//! of week) with lists, ranges, steps, month and weekday names and `7` as Sunday, or the
//! `@hourly`-style descriptors; evaluated in UTC or in the IANA zone of a leading
//! `CRON_TZ=<zone>` (`TZ=` also accepted). Parsing and evaluation are croner's; time-zone rules
//! are chrono-tz's. Across daylight-saving changes croner follows Vixie cron: a fixed time that
//! falls into a skipped hour runs right after the gap, one in a repeated hour runs once; interval
//! patterns skip the gap and run in both passes of a repeated hour.

use crate::error::{Invalid, Result};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

#[derive(Debug, Clone)]
pub struct CronSchedule {
    source: String,
    zone: Tz,
    cron: Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

const DESCRIPTORS: &[&str] = &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];

impl CronSchedule {
    pub fn parse(input: &str) -> Result<Self> {
        let source = input.trim().to_string();
        let invalid = |why: String| Invalid::new(format!("invalid cron expression {source:?}: {why}"));
        let (zone, expression) = match ["CRON_TZ=", "TZ="].iter().find_map(|prefix| source.strip_prefix(prefix)) {
            Some(rest) => {
                let (name, expression) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let zone: Tz = name.parse().map_err(|_| invalid(format!("unknown time zone {name:?}")))?;
                (zone, expression.trim())
            }
            None => (Tz::UTC, source.as_str()),
        };
        if expression.starts_with('@') {
            let lower = expression.to_ascii_lowercase();
            if !DESCRIPTORS.contains(&lower.as_str()) {
                return Err(invalid(format!("unknown descriptor, expected one of {}", DESCRIPTORS.join(", "))));
            }
        } else {
            let fields = expression.split_whitespace().count();
            if fields != 5 {
                return Err(invalid(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), got {fields}"
                )));
            }
        }
        let expression = if expression.eq_ignore_ascii_case("@midnight") { "@daily" } else { expression };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|error| invalid(error.to_string()))?;
        Ok(CronSchedule { source, zone, cron })
    }

    /// [`parse`](Self::parse), and the first occurrence after `now_ms`: valid fields can still
    /// describe no day at all (`0 0 31 2 *`), which must be refused rather than never fire.
    /// (Proving that takes croner a search of thousands of years, ~20 ms: done once, at
    /// creation, not on every tick.)
    pub fn parse_with_next(input: &str, now_ms: i64) -> Result<(Self, i64)> {
        let schedule = Self::parse(input)?;
        match schedule.next_after(now_ms) {
            Some(next) => Ok((schedule, next)),
            None => Err(Invalid::new(format!(
                "invalid cron expression {:?}: it matches no date (a day that does not exist in that month?)",
                schedule.source
            ))),
        }
    }

    /// The expression as given, trimmed (what the API shows).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first occurrence strictly after `after_ms` (Unix ms), if there is one.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = Utc.timestamp_millis_opt(after_ms).single()?.with_timezone(&self.zone);
        let next: DateTime<Tz> = self.cron.find_next_occurrence(&after, false).ok()?;
        Some(next.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        let naive = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, 0).unwrap();
        zone.from_local_datetime(&naive).earliest().unwrap().timestamp_millis()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        at(Tz::UTC, y, mo, d, h, mi)
    }

    fn next(expression: &str, after: i64) -> i64 {
        CronSchedule::parse(expression).unwrap().next_after(after).unwrap()
    }

    fn nexts(expression: &str, after: i64, count: usize) -> Vec<i64> {
        let schedule = CronSchedule::parse(expression).unwrap();
        let mut times = Vec::new();
        let mut cursor = after;
        for _ in 0..count {
            cursor = schedule.next_after(cursor).unwrap();
            times.push(cursor);
        }
        times
    }

    #[test]
    fn every_dialect_form() {
        // 2026-11-23 is a Monday.
        let start = utc(2026, 11, 23, 10, 7);
        assert_eq!(next("* * * * *", start), utc(2026, 11, 23, 10, 8));
        assert_eq!(next("*/15 * * * *", start), utc(2026, 11, 23, 10, 15));
        assert_eq!(nexts("5,35 * * * *", start, 2), [utc(2026, 11, 23, 10, 35), utc(2026, 11, 23, 11, 5)]);
        assert_eq!(next("0 9-17 * * *", start), utc(2026, 11, 23, 11, 0));
        assert_eq!(nexts("0 8-12/2 * * *", start, 2), [utc(2026, 11, 23, 12, 0), utc(2026, 11, 24, 8, 0)]);
        assert_eq!(next("0 0 1 * *", start), utc(2026, 12, 1, 0, 0));
        assert_eq!(next("0 0 1 jan *", start), utc(2027, 1, 1, 0, 0));
        assert_eq!(next("0 0 * FEB-MAR *", start), utc(2027, 2, 1, 0, 0));
        assert_eq!(next("0 12 * * sat", start), utc(2026, 11, 28, 12, 0));
        assert_eq!(next("0 12 * * mon-fri", start), utc(2026, 11, 23, 12, 0));
        assert_eq!(next("0 0 * * 7", start), utc(2026, 11, 29, 0, 0), "7 is Sunday");
        assert_eq!(next("0 0 * * 0", start), utc(2026, 11, 29, 0, 0));
        // Both day fields restricted: either matching fires.
        assert_eq!(next("0 0 25 * mon", start), utc(2026, 11, 25, 0, 0));
        assert_eq!(next("@hourly", start), utc(2026, 11, 23, 11, 0));
        assert_eq!(next("@daily", start), utc(2026, 11, 24, 0, 0));
        assert_eq!(next("@midnight", start), utc(2026, 11, 24, 0, 0));
        assert_eq!(next("@weekly", start), utc(2026, 11, 29, 0, 0));
        assert_eq!(next("@monthly", start), utc(2026, 12, 1, 0, 0));
        assert_eq!(next("@yearly", start), utc(2027, 1, 1, 0, 0));
        assert_eq!(next("@annually", start), utc(2027, 1, 1, 0, 0));
        assert_eq!(next(" */10 * * * * ", start), utc(2026, 11, 23, 10, 10));
        assert_eq!(CronSchedule::parse(" */10 * * * * ").unwrap().source(), "*/10 * * * *");
    }

    #[test]
    fn time_zones_follow_their_rules() {
        let new_york: Tz = "America/New_York".parse().unwrap();
        let start = utc(2026, 11, 23, 0, 0);
        assert_eq!(next("CRON_TZ=America/New_York 0 4 * * *", start), at(new_york, 2026, 11, 23, 4, 0));
        assert_eq!(next("TZ=Asia/Tokyo 30 9 * * *", start), utc(2026, 11, 23, 0, 30), "09:30 in Tokyo is 00:30 UTC");
    }

    #[test]
    fn a_skipped_hour_runs_fixed_times_after_the_gap() {
        // New York springs forward on 2026-03-08: 02:00 becomes 03:00.
        let new_york: Tz = "America/New_York".parse().unwrap();
        let before = at(new_york, 2026, 3, 8, 0, 0);
        assert_eq!(next("CRON_TZ=America/New_York 30 2 * * *", before), at(new_york, 2026, 3, 8, 3, 0));
        // Berlin springs forward on 2026-03-29; the hourly pattern skips the missing hour.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let times = nexts("CRON_TZ=Europe/Berlin 0 * * * *", at(berlin, 2026, 3, 29, 1, 30), 2);
        assert_eq!(times, [at(berlin, 2026, 3, 29, 3, 0), at(berlin, 2026, 3, 29, 4, 0)]);
        assert_eq!(times[0] - at(berlin, 2026, 3, 29, 1, 30), 30 * 60_000, "one real half hour later");
    }

    #[test]
    fn a_repeated_hour_runs_fixed_times_once() {
        // New York falls back on 2026-11-01: 01:00-02:00 happens twice.
        let new_york: Tz = "America/New_York".parse().unwrap();
        let start = at(new_york, 2026, 11, 1, 0, 0);
        let times = nexts("CRON_TZ=America/New_York 30 1 * * *", start, 2);
        assert_eq!(times[1] - times[0], 25 * 3_600_000, "once on the long day, then a day later");
        // Berlin falls back on 2026-10-25: the every-30-minutes pattern runs in both passes.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let start = at(berlin, 2026, 10, 25, 1, 45);
        let times = nexts("CRON_TZ=Europe/Berlin */30 * * * *", start, 5);
        let gaps: Vec<i64> = times.windows(2).map(|pair| (pair[1] - pair[0]) / 60_000).collect();
        assert_eq!(gaps, [30, 30, 30, 30], "the repeated hour is walked through in real time");
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        for (bad, hint) in [
            ("* * * *", "5 fields"),
            ("* * * * * *", "5 fields"),
            ("61 * * * *", "invalid cron"),
            ("* 25 * * *", "invalid cron"),
            ("* * * foo *", "invalid cron"),
            ("@sometimes", "descriptor"),
            ("CRON_TZ=Mars/Olympus 0 * * * *", "unknown time zone"),
            ("", "5 fields"),
            ("0 0 31 2 *", "matches no date"),
            ("0 0 30 2 *", "matches no date"),
            ("0 0 31 4,6,9,11 *", "matches no date"),
        ] {
            let error = CronSchedule::parse_with_next(bad, 0).unwrap_err().0;
            assert!(error.contains(hint), "{bad:?}: {error}");
        }
    }
}
