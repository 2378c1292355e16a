//! Parsing of `Upstash-Flow-Control-Key` / `Upstash-Flow-Control-Value` (spec §4.2, §13).

use crate::duration::parse_duration;
use crate::error::{Invalid, Result};
use crate::message::FlowControl;

/// The longest rate period a key may have.
pub const MAX_PERIOD_SECS: u64 = 7 * 86_400;

/// Parses `parallelism=<n>, rate=<n>, period=<duration>` (any subset holding parallelism or
/// rate; `ratePerSecond` is an alias of `rate`; period defaults to one second).
pub fn parse_flow_control(key: &str, value: &str) -> Result<FlowControl> {
    let invalid = |why: &str| Invalid::new(format!("invalid Upstash-Flow-Control-Value {value:?}: {why}"));
    let key = key.trim();
    if key.is_empty() {
        return Err(Invalid::new("Upstash-Flow-Control-Key must not be empty"));
    }
    let mut flow = FlowControl { key: key.to_string(), parallelism: None, rate: None, period_secs: 1 };
    for part in value.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let (name, setting) = part
            .split_once('=')
            .map(|(name, setting)| (name.trim(), setting.trim()))
            .ok_or_else(|| invalid("expected name=value pairs"))?;
        let positive = || {
            setting
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(&format!("{name} must be a positive integer")))
        };
        match name.to_ascii_lowercase().as_str() {
            "parallelism" => flow.parallelism = Some(positive()?),
            "rate" | "ratepersecond" => flow.rate = Some(positive()?),
            "period" => {
                let period = parse_duration(setting).map_err(|_| invalid("period must be a duration"))?;
                let secs = period.as_secs_f64().ceil() as u64;
                if secs == 0 || secs > MAX_PERIOD_SECS {
                    return Err(invalid("period must be between 1s and 1 week"));
                }
                flow.period_secs = secs;
            }
            _ => return Err(invalid(&format!("unknown setting {name:?}"))),
        }
    }
    if flow.parallelism.is_none() && flow.rate.is_none() {
        return Err(invalid("parallelism or rate is required"));
    }
    Ok(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_combination() {
        let flow = parse_flow_control("k", "parallelism=3, rate=20, period=1h30m3s").unwrap();
        assert_eq!((flow.parallelism, flow.rate, flow.period_secs), (Some(3), Some(20), 5403));
        let flow = parse_flow_control("k", "parallelism=2").unwrap();
        assert_eq!((flow.parallelism, flow.rate, flow.period_secs), (Some(2), None, 1));
        let flow = parse_flow_control("k", "ratePerSecond=5,period=2").unwrap();
        assert_eq!((flow.rate, flow.period_secs), (Some(5), 2));
        assert_eq!(parse_flow_control("k", "rate=1,period=1d").unwrap().period_secs, 86_400);
    }

    #[test]
    fn rejects_incomplete_or_invalid_values() {
        for bad in ["", "period=10s", "parallelism=0", "rate=-1", "rate=x", "speed=3", "rate", "rate=1,period=8d"] {
            assert!(parse_flow_control("k", bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_flow_control(" ", "rate=1").is_err());
    }
}
