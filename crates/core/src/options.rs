//! The publish-time headers (spec §4): classifying every request header (§4.1) into the
//! configuration of a message ([`PublishOptions`]), and resolving that configuration with the
//! server's limits into a [`MessageSpec`].

use crate::destination::checked_url;
use crate::duration::parse_duration;
use crate::error::{Invalid, Result};
use crate::flow::parse_flow_control;
use crate::headers::{HeaderList, strip_prefix_ignore_case};
use crate::message::{CallbackTarget, FlowControl, MessageSpec, Origin};
use crate::redact::Redaction;
use crate::retry::RetryDelayExpr;
use std::time::Duration;

/// Request headers that describe the transport, never the message: not stored, not forwarded.
const TRANSPORT_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "accept-encoding",
    "user-agent",
    "accept",
];

/// How deep `Upstash-Callback-Callback-…` configuration may nest.
const MAX_CALLBACK_NESTING: usize = 8;

/// The configuration a publish request carries. Every field is optional so that options can be
/// layered (DLQ retry overrides, schedules); [`PublishOptions::to_spec`] applies the defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishOptions {
    pub method: Option<String>,
    pub delay: Option<Duration>,
    /// `Upstash-Not-Before`, Unix seconds.
    pub not_before: Option<i64>,
    pub retries: Option<u32>,
    pub retry_delay: Option<RetryDelayExpr>,
    pub timeout: Option<Duration>,
    pub callback: Option<String>,
    pub failure_callback: Option<String>,
    /// `Upstash-Callback-<X>` headers, kept as `Upstash-<X>` for the callback message.
    pub callback_options: HeaderList,
    pub failure_callback_options: HeaderList,
    /// `Content-Type` and `Upstash-Forward-*` headers (prefix stripped).
    pub forward: HeaderList,
    /// `Upstash-Workflow-*` and `Upstash-Feature-Set`, delivered verbatim.
    pub passthrough: HeaderList,
    pub deduplication_id: Option<String>,
    pub content_based_deduplication: bool,
    pub flow_control: Option<FlowControl>,
    pub labels: Option<Vec<String>>,
    pub redact: Option<Redaction>,
    pub header_forward: bool,
    pub cron: Option<String>,
    pub schedule_id: Option<String>,
    pub queue_name: Option<String>,
}

/// The limits and defaults of this server that publish options are resolved against.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishLimits {
    pub default_retries: u32,
    pub max_retries: u32,
    pub max_delay: Duration,
    /// The longest a destination may take to answer; `Upstash-Timeout` may only shorten it.
    pub max_timeout: Duration,
    /// The longest URL a message may go to or call back (`sizes`).
    pub max_url_bytes: usize,
    /// The longest flow-control key.
    pub max_flow_control_key_bytes: usize,
    /// The most bytes of header lines (names and values) a message keeps.
    pub max_header_bytes: usize,
}

impl Default for PublishLimits {
    fn default() -> Self {
        PublishLimits {
            default_retries: 3,
            max_retries: 5,
            max_delay: Duration::from_secs(365 * 86_400),
            max_timeout: Duration::from_secs(2 * 3600),
            max_url_bytes: 8192,
            max_flow_control_key_bytes: 1024,
            max_header_bytes: 65_536,
        }
    }
}

impl PublishOptions {
    /// Classifies request headers (spec §4.1). `authorization_is_token` says whether the
    /// `Authorization` header carried the QStash token, which is then never forwarded.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        authorization_is_token: bool,
    ) -> Result<Self> {
        Self::parse(headers, authorization_is_token, 0)
    }

    fn parse<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        authorization_is_token: bool,
        depth: usize,
    ) -> Result<Self> {
        let mut options = PublishOptions::default();
        let mut flow_key = None;
        let mut flow_value = None;
        let mut plain = HeaderList::new();
        let mut request_content_type = HeaderList::new();
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if TRANSPORT_HEADERS.contains(&lower.as_str()) {
                continue;
            }
            if lower == "authorization" {
                if !authorization_is_token {
                    plain.push(name, value);
                }
                continue;
            }
            if lower == "content-type" {
                request_content_type.push(name, value);
                continue;
            }
            if let Some(forwarded) = strip_prefix_ignore_case(name, "Upstash-Forward-") {
                if !forwarded.is_empty() {
                    options.forward.push(forwarded, value);
                }
                continue;
            }
            let invalid = |what: &str| Invalid::new(format!("invalid {name} header {value:?}: {what}"));
            match lower.as_str() {
                "upstash-method" => {
                    let method = value.trim().to_ascii_uppercase();
                    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                        return Err(invalid("expected GET, POST, PUT, PATCH or DELETE"));
                    }
                    options.method = Some(method);
                }
                "upstash-delay" => {
                    options.delay = Some(parse_duration(value).map_err(|e| invalid(&e.0))?);
                }
                "upstash-not-before" => {
                    let seconds = parse_integer(value).ok_or_else(|| invalid("expected Unix seconds"))?;
                    options.not_before = Some(seconds);
                }
                "upstash-retries" => {
                    let retries = parse_integer(value)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| invalid("expected a non-negative integer"))?;
                    options.retries = Some(retries);
                }
                "upstash-retry-delay" => {
                    options.retry_delay = Some(RetryDelayExpr::parse(value)?);
                }
                "upstash-timeout" => {
                    options.timeout = Some(parse_duration(value).map_err(|e| invalid(&e.0))?);
                }
                "upstash-callback" => {
                    options.callback = Some(checked_url(value.trim(), "callback")?);
                }
                "upstash-failure-callback" => {
                    options.failure_callback = Some(checked_url(value.trim(), "failure callback")?);
                }
                "upstash-deduplication-id" => {
                    options.deduplication_id = Some(value.trim()).filter(|id| !id.is_empty()).map(str::to_string);
                }
                "upstash-content-based-deduplication" => {
                    options.content_based_deduplication =
                        parse_bool(value).ok_or_else(|| invalid("expected true or false"))?;
                }
                "upstash-flow-control-key" => flow_key = Some(value),
                "upstash-flow-control-value" => flow_value = Some(value),
                "upstash-label" => {
                    let labels: Vec<String> =
                        value.split(',').map(str::trim).filter(|label| !label.is_empty()).map(str::to_string).collect();
                    options.labels = Some(labels).filter(|labels| !labels.is_empty());
                }
                "upstash-redact-fields" => options.redact = Some(Redaction::parse(value)?),
                "upstash-header-forward" => {
                    options.header_forward = parse_bool(value).ok_or_else(|| invalid("expected true or false"))?;
                }
                "upstash-cron" => options.cron = Some(value.trim().to_string()),
                "upstash-schedule-id" => options.schedule_id = Some(value.trim().to_string()),
                "upstash-queue-name" => options.queue_name = Some(value.trim().to_string()),
                "upstash-feature-set" => options.passthrough.push(name, value),
                _ => {
                    if let Some(rest) = strip_prefix_ignore_case(name, "Upstash-Callback-") {
                        options.callback_options.push(format!("Upstash-{rest}"), value);
                    } else if let Some(rest) = strip_prefix_ignore_case(name, "Upstash-Failure-Callback-") {
                        options.failure_callback_options.push(format!("Upstash-{rest}"), value);
                    } else if strip_prefix_ignore_case(name, "Upstash-Workflow-").is_some() {
                        options.passthrough.push(name, value);
                    } else if strip_prefix_ignore_case(name, "Upstash-").is_none() {
                        plain.push(name, value);
                    }
                    // Other Upstash-* headers (SDK telemetry, unknown options) are ignored.
                }
            }
        }
        // One Content-Type reaches the destination (it is a singleton field). A forwarded one
        // wins: the Python and Go SDKs send a `Content-Type` among a message's headers as
        // `Upstash-Forward-Content-Type`, while their JSON helpers set the request's own.
        if options.forward.get("content-type").is_none() {
            options.forward.0.splice(0..0, request_content_type.0);
        }
        if options.header_forward {
            options.forward.0.extend(plain.0);
        }
        options.flow_control = match (flow_key, flow_value) {
            (Some(key), Some(value)) => Some(parse_flow_control(key, value)?),
            (None, None) => None,
            _ => {
                return Err(Invalid::new(
                    "Upstash-Flow-Control-Key and Upstash-Flow-Control-Value must be given together",
                ));
            }
        };
        for (kind, nested) in
            [("callback", &options.callback_options), ("failure callback", &options.failure_callback_options)]
        {
            if nested.is_empty() {
                continue;
            }
            if depth >= MAX_CALLBACK_NESTING {
                return Err(Invalid::new("callback configuration is nested too deeply"));
            }
            Self::parse(nested.iter(), true, depth + 1)
                .map_err(|error| Invalid::new(format!("invalid {kind} configuration: {error}")))?;
        }
        Ok(options)
    }

    /// The flow-control keys messages of these options use: their own, and those of their
    /// callbacks (nested ones included), which are created when the callbacks are.
    pub fn flow_control_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.flow_control.iter().map(|flow| flow.key.clone()).collect();
        for nested in [&self.callback_options, &self.failure_callback_options] {
            if !nested.is_empty()
                && let Ok(options) = Self::from_headers(nested.iter(), true)
            {
                keys.extend(options.flow_control_keys());
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Resolves the options for a message to `url`, applying defaults and limits.
    pub fn to_spec(&self, url: String, caller_ip: Option<String>, limits: &PublishLimits) -> MessageSpec {
        MessageSpec {
            url,
            method: self.method.clone().unwrap_or_else(|| "POST".to_string()),
            headers: self.forward.clone(),
            passthrough: self.passthrough.clone(),
            max_retries: self.retries.unwrap_or(limits.default_retries).min(limits.max_retries),
            retry_delay: self.retry_delay.as_ref().map(|e| e.source().to_string()),
            timeout_ms: self.timeout_ms(limits),
            callback: self.callback.clone().map(|url| CallbackTarget { url, options: self.callback_options.clone() }),
            failure_callback: self
                .failure_callback
                .clone()
                .map(|url| CallbackTarget { url, options: self.failure_callback_options.clone() }),
            labels: self.labels.clone().unwrap_or_default(),
            flow_control: self.flow_control.clone(),
            redact: self.redact.clone().unwrap_or_default(),
            topic_name: None,
            endpoint_name: None,
            queue_name: None,
            schedule_id: None,
            caller_ip,
            origin: Origin::Publish,
            workflow: crate::workflow::WorkflowHeaders::parse(&self.passthrough).link(),
        }
    }

    fn timeout_ms(&self, limits: &PublishLimits) -> Option<u64> {
        self.timeout
            .filter(|timeout| !timeout.is_zero())
            .map(|timeout| timeout.min(limits.max_timeout).as_millis() as u64)
    }

    /// Replaces in `spec` every setting these options carry (DLQ retry overrides).
    pub fn override_spec(&self, spec: &mut MessageSpec, limits: &PublishLimits) {
        if let Some(method) = &self.method {
            spec.method = method.clone();
        }
        for (name, value) in self.forward.iter() {
            spec.headers.remove(name);
            spec.headers.push(name, value);
        }
        if let Some(retries) = self.retries {
            spec.max_retries = retries.min(limits.max_retries);
        }
        if let Some(expression) = &self.retry_delay {
            spec.retry_delay = Some(expression.source().to_string());
        }
        if self.timeout.is_some() {
            spec.timeout_ms = self.timeout_ms(limits);
        }
        if let Some(url) = &self.callback {
            spec.callback = Some(CallbackTarget { url: url.clone(), options: self.callback_options.clone() });
        }
        if let Some(url) = &self.failure_callback {
            spec.failure_callback =
                Some(CallbackTarget { url: url.clone(), options: self.failure_callback_options.clone() });
        }
        if let Some(labels) = &self.labels {
            spec.labels = labels.clone();
        }
        if let Some(flow) = &self.flow_control {
            spec.flow_control = Some(flow.clone());
        }
        if let Some(redact) = &self.redact {
            spec.redact = redact.clone();
        }
    }

    /// When the first attempt is due: `Upstash-Not-Before` wins over `Upstash-Delay`; past
    /// times mean now. Both are bounded by the maximum delay.
    pub fn first_delivery_at(&self, now_ms: i64, limits: &PublishLimits) -> Result<i64> {
        let max_ms = now_ms.saturating_add(limits.max_delay.as_millis() as i64);
        let at = if let Some(seconds) = self.not_before {
            seconds.saturating_mul(1000).max(now_ms)
        } else if let Some(delay) = self.delay {
            now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
        } else {
            now_ms
        };
        if at > max_ms {
            return Err(Invalid::new(format!(
                "the delivery time is too far in the future: the maximum delay is {}s",
                limits.max_delay.as_secs()
            )));
        }
        Ok(at)
    }
}

fn parse_integer(value: &str) -> Option<i64> {
    let value = value.trim();
    value.parse::<i64>().ok().filter(|n| *n >= 0)
}

/// `true`/`false` in any case, and `1`/`0` (spec §0.5).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(headers: &[(&str, &str)]) -> Result<PublishOptions> {
        PublishOptions::from_headers(headers.iter().copied(), true)
    }

    #[test]
    fn classifies_headers_as_the_spec_orders() {
        let options = parse(&[
            ("Authorization", "Bearer token"),
            ("Host", "localhost"),
            ("content-type", "application/json"),
            ("upstash-forward-x-a", "1, 2"),
            ("Upstash-Forward-Upstash-Workflow-Sdk-Version", "1"),
            ("Upstash-Method", "put"),
            ("Upstash-Retries", "2"),
            ("Upstash-Callback", "http://127.0.0.1:1/cb?foo=bar"),
            ("Upstash-Callback-Retries", "5"),
            ("Upstash-Callback-Forward-X-Cb", "yes"),
            ("Upstash-Failure-Callback-Method", "PUT"),
            ("Upstash-Workflow-RunId", "wfr_1"),
            ("Upstash-Telemetry-Sdk", "ts"),
            ("X-Plain", "dropped"),
        ])
        .unwrap();
        assert_eq!(
            options.forward.0,
            vec![
                ("content-type".into(), "application/json".into()),
                ("x-a".into(), "1, 2".into()),
                ("Upstash-Workflow-Sdk-Version".into(), "1".into()),
            ]
        );
        assert_eq!(options.method.as_deref(), Some("PUT"));
        assert_eq!(options.retries, Some(2));
        assert_eq!(options.callback.as_deref(), Some("http://127.0.0.1:1/cb?foo=bar"));
        assert_eq!(
            options.callback_options.0,
            vec![("Upstash-Retries".into(), "5".into()), ("Upstash-Forward-X-Cb".into(), "yes".into()),]
        );
        assert_eq!(options.failure_callback_options.0, vec![("Upstash-Method".into(), "PUT".into())]);
        assert_eq!(options.passthrough.0, vec![("Upstash-Workflow-RunId".into(), "wfr_1".into())]);
    }

    #[test]
    fn header_forward_mode_forwards_plain_headers_but_not_the_token() {
        let headers = [("Upstash-Header-Forward", "true"), ("X-Plain", "kept"), ("Authorization", "Bearer t")];
        let with_token = PublishOptions::from_headers(headers.iter().copied(), true).unwrap();
        assert_eq!(with_token.forward.0, vec![("X-Plain".into(), "kept".into())]);
        let without_token = PublishOptions::from_headers(headers.iter().copied(), false).unwrap();
        assert_eq!(without_token.forward.get("authorization"), Some("Bearer t"));
    }

    #[test]
    fn rejects_invalid_values_with_the_header_name() {
        for (name, value) in [
            ("Upstash-Method", "TRACE"),
            ("Upstash-Delay", "soon"),
            ("Upstash-Not-Before", "tomorrow"),
            ("Upstash-Retries", "-1"),
            ("Upstash-Retries", "1.5"),
            ("Upstash-Retry-Delay", "pow(2"),
            ("Upstash-Timeout", "10x"),
            ("Upstash-Callback", "ftp://x"),
            ("Upstash-Failure-Callback", "not a url"),
            ("Upstash-Content-Based-Deduplication", "maybe"),
            ("Upstash-Redact-Fields", "everything"),
            ("Upstash-Callback-Retries", "many"),
            ("Upstash-Callback-Failure-Callback-Delay", "x"),
        ] {
            let error = parse(&[(name, value)]).unwrap_err();
            assert!(!error.0.is_empty(), "{name}: {value} should be rejected");
        }
        assert!(parse(&[("Upstash-Flow-Control-Key", "k")]).is_err());
        assert!(parse(&[("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", "")]).is_err());
    }

    #[test]
    fn flow_control_keys_include_the_callbacks() {
        let options = parse(&[
            ("Upstash-Flow-Control-Key", "own"),
            ("Upstash-Flow-Control-Value", "rate=1"),
            ("Upstash-Callback", "http://127.0.0.1:1/cb"),
            ("Upstash-Callback-Flow-Control-Key", "callback"),
            ("Upstash-Callback-Flow-Control-Value", "rate=1"),
            ("Upstash-Failure-Callback", "http://127.0.0.1:1/fcb"),
            ("Upstash-Failure-Callback-Flow-Control-Key", "own"),
            ("Upstash-Failure-Callback-Flow-Control-Value", "rate=2"),
        ])
        .unwrap();
        assert_eq!(options.flow_control_keys(), vec!["callback".to_string(), "own".to_string()]);
        assert!(parse(&[]).unwrap().flow_control_keys().is_empty());
    }

    #[test]
    fn resolves_defaults_and_limits() {
        let limits = PublishLimits { max_retries: 5, max_timeout: Duration::from_secs(60), ..PublishLimits::default() };
        let spec = parse(&[]).unwrap().to_spec("http://x/".into(), None, &limits);
        assert_eq!((spec.method.as_str(), spec.max_retries, spec.timeout_ms), ("POST", 3, None));
        let spec = parse(&[("Upstash-Retries", "50"), ("Upstash-Timeout", "2m")]).unwrap().to_spec(
            "http://x/".into(),
            None,
            &limits,
        );
        assert_eq!((spec.max_retries, spec.timeout_ms), (5, Some(60_000)));
    }

    #[test]
    fn not_before_wins_over_delay_and_both_are_bounded() {
        let limits = PublishLimits::default();
        let now = 1_000_000_000_000;
        let delayed = parse(&[("Upstash-Delay", "10s")]).unwrap();
        assert_eq!(delayed.first_delivery_at(now, &limits).unwrap(), now + 10_000);
        let both = parse(&[("Upstash-Delay", "10s"), ("Upstash-Not-Before", "1000000005")]).unwrap();
        assert_eq!(both.first_delivery_at(now, &limits).unwrap(), now + 5_000);
        let past = parse(&[("Upstash-Not-Before", "5")]).unwrap();
        assert_eq!(past.first_delivery_at(now, &limits).unwrap(), now);
        let too_far = parse(&[("Upstash-Delay", "400d")]).unwrap();
        assert!(too_far.first_delivery_at(now, &limits).is_err());
    }

    #[test]
    fn overrides_replace_only_what_is_given() {
        let limits = PublishLimits::default();
        let mut spec = parse(&[("Upstash-Retries", "2"), ("Upstash-Forward-A", "1")]).unwrap().to_spec(
            "http://x/".into(),
            None,
            &limits,
        );
        parse(&[("Upstash-Retries", "0"), ("Upstash-Forward-B", "2")]).unwrap().override_spec(&mut spec, &limits);
        assert_eq!(spec.max_retries, 0);
        assert_eq!(spec.headers.get("a"), Some("1"));
        assert_eq!(spec.headers.get("b"), Some("2"));
    }
}
