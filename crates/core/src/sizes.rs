//! How large what a tenant keeps may be: URLs (destinations, callbacks, URL-group endpoints),
//! flow-control keys and a message's header lines. Each is checked when it is accepted (400
//! beyond), so that what tern keeps per message, per endpoint and per key — on disk, and in
//! memory where the engine holds it (a flow-control key lives in the scheduler) — has a
//! configured bound.

use crate::error::{Invalid, Result};
use crate::options::{PublishLimits, PublishOptions};

/// The longest endpoint name of a URL group (names of queues, groups and schedules have the
/// same bound, `destination::validate_name`).
pub const MAX_ENDPOINT_NAME_BYTES: usize = 256;

/// A URL (`what`: "destination", "callback", "endpoint"…) of at most `max_url_bytes`.
pub fn check_url(url: &str, what: &str, limits: &PublishLimits) -> Result<()> {
    if url.len() > limits.max_url_bytes {
        return Err(Invalid::new(format!(
            "the {what} url is {} bytes long; at most {} bytes are allowed",
            url.len(),
            limits.max_url_bytes
        )));
    }
    Ok(())
}

/// A flow-control key of at most `max_flow_control_key_bytes`.
pub fn check_flow_control_key(key: &str, limits: &PublishLimits) -> Result<()> {
    if key.len() > limits.max_flow_control_key_bytes {
        return Err(Invalid::new(format!(
            "the flow-control key is {} bytes long; at most {} bytes are allowed",
            key.len(),
            limits.max_flow_control_key_bytes
        )));
    }
    Ok(())
}

/// An endpoint name of at most [`MAX_ENDPOINT_NAME_BYTES`].
pub fn check_endpoint_name(name: &str) -> Result<()> {
    if name.len() > MAX_ENDPOINT_NAME_BYTES {
        return Err(Invalid::new(format!(
            "the endpoint name is {} bytes long; at most {MAX_ENDPOINT_NAME_BYTES} bytes are allowed",
            name.len()
        )));
    }
    Ok(())
}

/// What publish options would store, against the limits: the callback URLs, the flow-control
/// key, and the header lines a message keeps (forwarded, passed through, and its callbacks'
/// configuration, which nests further callbacks: those are checked the same way).
pub fn check_options(options: &PublishOptions, limits: &PublishLimits) -> Result<()> {
    let header_bytes = kept_header_bytes(options);
    if header_bytes > limits.max_header_bytes {
        return Err(Invalid::new(format!(
            "the message's headers take {header_bytes} bytes; at most {} bytes are allowed",
            limits.max_header_bytes
        )));
    }
    check_single_options(options, limits)
}

/// The header lines a message configured by `options` keeps (forwarded, passed through, its
/// callbacks' configuration), and its labels.
fn kept_lines(options: &PublishOptions) -> impl Iterator<Item = usize> + '_ {
    [&options.forward, &options.passthrough, &options.callback_options, &options.failure_callback_options]
        .into_iter()
        .flat_map(|lines| lines.iter())
        .map(|(name, value)| name.len() + value.len())
        .chain(options.labels.iter().flatten().map(String::len))
}

/// The bytes of what [`kept_lines`] counts (names and values): what `max_header_bytes` bounds.
pub fn kept_header_bytes(options: &PublishOptions) -> usize {
    kept_lines(options).sum()
}

/// How many lines (and labels) [`kept_header_bytes`] counts: each is a separate allocation,
/// which takes memory beyond its bytes.
pub fn kept_header_lines(options: &PublishOptions) -> usize {
    kept_lines(options).count()
}

/// [`check_options`] without the header total (a nested callback's lines are part of its
/// source's).
fn check_single_options(options: &PublishOptions, limits: &PublishLimits) -> Result<()> {
    if let Some(url) = &options.callback {
        check_url(url, "callback", limits)?;
    }
    if let Some(url) = &options.failure_callback {
        check_url(url, "failure callback", limits)?;
    }
    if let Some(flow) = &options.flow_control {
        check_flow_control_key(&flow.key, limits)?;
    }
    for nested in [&options.callback_options, &options.failure_callback_options] {
        if !nested.is_empty() {
            // Parsed once already when `options` were: this cannot fail for another reason.
            check_single_options(&PublishOptions::from_headers(nested.iter(), true)?, limits)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PublishLimits {
        PublishLimits {
            max_url_bytes: 40,
            max_flow_control_key_bytes: 8,
            max_header_bytes: 64,
            ..PublishLimits::default()
        }
    }

    fn options(headers: &[(&str, &str)]) -> PublishOptions {
        PublishOptions::from_headers(headers.iter().copied(), true).unwrap()
    }

    #[test]
    fn urls_and_keys_are_bounded() {
        assert!(check_url("http://127.0.0.1:1/short", "destination", &limits()).is_ok());
        let long = format!("http://127.0.0.1:1/{}", "a".repeat(40));
        let error = check_url(&long, "destination", &limits()).unwrap_err();
        assert!(error.0.contains("destination url") && error.0.contains("at most 40 bytes"), "{error}");
        assert!(check_flow_control_key("12345678", &limits()).is_ok());
        assert!(check_flow_control_key("123456789", &limits()).is_err());
        assert!(check_endpoint_name(&"n".repeat(MAX_ENDPOINT_NAME_BYTES)).is_ok());
        assert!(check_endpoint_name(&"n".repeat(MAX_ENDPOINT_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn options_are_checked_down_to_nested_callbacks() {
        let fine = options(&[("Upstash-Callback", "http://127.0.0.1:1/cb"), ("Upstash-Forward-A", "1")]);
        assert!(check_options(&fine, &limits()).is_ok());
        let long_url = format!("http://127.0.0.1:1/{}", "c".repeat(40));
        let (big_value, long_label) = ("v".repeat(64), "l".repeat(65));
        for headers in [
            vec![("Upstash-Callback", long_url.as_str())],
            vec![("Upstash-Failure-Callback", long_url.as_str())],
            vec![("Upstash-Flow-Control-Key", "a-long-key"), ("Upstash-Flow-Control-Value", "rate=1")],
            vec![("Upstash-Callback", "http://127.0.0.1:1/cb"), ("Upstash-Callback-Callback", long_url.as_str())],
            vec![
                ("Upstash-Callback", "http://127.0.0.1:1/cb"),
                ("Upstash-Callback-Flow-Control-Key", "a-long-key"),
                ("Upstash-Callback-Flow-Control-Value", "rate=1"),
            ],
            vec![("Upstash-Forward-Big", big_value.as_str())],
            vec![("Upstash-Label", long_label.as_str())],
        ] {
            assert!(check_options(&options(&headers), &limits()).is_err(), "{headers:?}");
        }
    }
}
