//! The duration syntax of `Upstash-Delay`, `Upstash-Timeout`, flow-control `period` and the
//! callback variants (spec §0.4): Go-style compound durations (`1d10h30m`, `1.5s`, `500ms`)
//! plus a bare number meaning seconds.

use crate::error::{Invalid, Result};
use std::time::Duration;

/// Parses a QStash duration. Units: `d`, `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`; fractions are
/// allowed in every component; a bare number is seconds.
pub fn parse_duration(input: &str) -> Result<Duration> {
    let text = input.trim();
    let invalid = || Invalid::new(format!("invalid duration: {input:?}"));
    if text.is_empty() || text.starts_with('-') {
        return Err(invalid());
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_duration(seconds).ok_or_else(invalid);
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        if number_len == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "d" => 86_400e9,
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" | "μs" => 1e3,
            "ns" => 1.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total_nanos += number * nanos_per_unit;
    }
    seconds_to_duration(total_nanos / 1e9).ok_or_else(invalid)
}

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    // Ten thousand years: anything above is a typo, and it keeps the arithmetic in range.
    const MAX_SECONDS: f64 = 10_000.0 * 365.0 * 86_400.0;
    if !seconds.is_finite() || !(0.0..=MAX_SECONDS).contains(&seconds) {
        return None;
    }
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(input: &str) -> f64 {
        parse_duration(input).unwrap().as_secs_f64()
    }

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(secs("10s"), 10.0);
        assert_eq!(secs("5m"), 300.0);
        assert_eq!(secs("1d"), 86_400.0);
        assert_eq!(secs("1h30m3s"), 5403.0);
        assert_eq!(secs("1d10h30m"), 124_200.0);
        assert_eq!(secs("3d5h12m"), 277_920.0);
        assert_eq!(secs("60"), 60.0);
        assert_eq!(secs("1.5s"), 1.5);
        assert_eq!(secs("500ms"), 0.5);
        assert_eq!(secs("250us"), 0.00025);
        assert_eq!(secs("0"), 0.0);
        assert_eq!(secs(" 2h "), 7200.0);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "s", "10x", "-5s", "1h-3m", "abc", "10 s", "1..5s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    proptest::proptest! {
        #[test]
        fn compound_durations_add_up(d in 0u64..30, h in 0u64..24, m in 0u64..60, s in 0u64..60) {
            let text = format!("{d}d{h}h{m}m{s}s");
            proptest::prop_assert_eq!(
                parse_duration(&text).unwrap().as_secs(),
                d * 86_400 + h * 3600 + m * 60 + s
            );
        }

        #[test]
        fn never_panics(text in "\\PC{0,20}") {
            let _ = parse_duration(&text);
        }
    }
}
