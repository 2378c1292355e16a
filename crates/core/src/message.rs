//! The message model: what was published (a [`MessageSpec`]), where it is in its life
//! ([`MessageState`]), and the log states the API reports ([`LogState`]).

use crate::headers::HeaderList;
use crate::ids::MessageId;
use crate::redact::Redaction;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The flow-control settings a message carries (spec §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowControl {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    pub period_secs: u64,
}

/// A callback destination with the `Upstash-*` configuration of the callback message itself
/// (`Upstash-Callback-Retries: 2` is kept here as `Upstash-Retries: 2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackTarget {
    pub url: String,
    #[serde(default, skip_serializing_if = "HeaderList::is_empty")]
    pub options: HeaderList,
}

impl CallbackTarget {
    /// The headers forwarded to the callback destination (`Upstash-Forward-*` options, prefix
    /// stripped), as `GET /v2/messages` shows them in `callbackHeader`.
    pub fn forwarded_headers(&self) -> HeaderList {
        self.options
            .iter()
            .filter_map(|(name, value)| {
                crate::headers::strip_prefix_ignore_case(name, "Upstash-Forward-")
                    .map(|name| (name.to_string(), value.to_string()))
            })
            .collect()
    }
}

/// Why a message exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Origin {
    /// Published, enqueued, produced by a schedule or retried from the DLQ.
    #[default]
    Publish,
    /// The callback of one attempt of `source`.
    Callback { source: MessageId },
    /// The failure callback of `source`.
    FailureCallback { source: MessageId },
}

/// Everything a publish fixed about a message; it never changes afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSpec {
    pub url: String,
    pub method: String,
    /// Headers delivered to the destination and shown as `header`: `Content-Type` and the
    /// `Upstash-Forward-*` headers with the prefix stripped.
    #[serde(default, skip_serializing_if = "HeaderList::is_empty")]
    pub headers: HeaderList,
    /// Protocol headers delivered verbatim but not shown (`Upstash-Workflow-*`).
    #[serde(default, skip_serializing_if = "HeaderList::is_empty")]
    pub passthrough: HeaderList,
    pub max_retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_callback: Option<CallbackTarget>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<FlowControl>,
    #[serde(default, skip_serializing_if = "Redaction::is_empty")]
    pub redact: Redaction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_ip: Option<String>,
    #[serde(default)]
    pub origin: Origin,
    /// The workflow run the message belongs to, and what it is for in the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<crate::workflow::WorkflowLink>,
}

/// Where a stored message is in its life. `Active` (an attempt running) is not stored: after a
/// crash an interrupted attempt simply becomes due again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageState {
    /// Waiting for its first attempt.
    Pending,
    /// Waiting for a retry.
    Retry,
    /// A cancel arrived while an attempt was running; it ends when the attempt does.
    CancelRequested,
    Delivered,
    Failed,
    Canceled,
}

impl MessageState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed | Self::Canceled)
    }

    pub fn code(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Retry => 1,
            Self::CancelRequested => 2,
            Self::Delivered => 3,
            Self::Failed => 4,
            Self::Canceled => 5,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Pending,
            1 => Self::Retry,
            2 => Self::CancelRequested,
            3 => Self::Delivered,
            4 => Self::Failed,
            5 => Self::Canceled,
            _ => return None,
        })
    }
}

/// The states of log entries (spec §17), spelled as every SDK expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogState {
    Created,
    Active,
    Retry,
    Error,
    Delivered,
    Failed,
    CancelRequested,
    Canceled,
}

impl LogState {
    pub const ALL: [LogState; 8] = [
        Self::Created,
        Self::Active,
        Self::Retry,
        Self::Error,
        Self::Delivered,
        Self::Failed,
        Self::CancelRequested,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Active => "ACTIVE",
            Self::Retry => "RETRY",
            Self::Error => "ERROR",
            Self::Delivered => "DELIVERED",
            Self::Failed => "FAILED",
            Self::CancelRequested => "CANCEL_REQUESTED",
            Self::Canceled => "CANCELED",
        }
    }

    pub fn code(self) -> i64 {
        Self::ALL.iter().position(|state| *state == self).unwrap_or(0) as i64
    }

    pub fn from_code(code: i64) -> Option<Self> {
        usize::try_from(code).ok().and_then(|i| Self::ALL.get(i).copied())
    }

    /// Parses a `state` filter value; `IN_PROGRESS` stands for ACTIVE, RETRY and ERROR and
    /// `CANCELLED` is accepted for `CANCELED`.
    pub fn parse_filter(value: &str) -> Option<Vec<LogState>> {
        let upper = value.trim().to_ascii_uppercase();
        match upper.as_str() {
            "IN_PROGRESS" => Some(vec![Self::Active, Self::Retry, Self::Error]),
            "CANCELLED" => Some(vec![Self::Canceled]),
            _ => Self::ALL.iter().find(|state| state.as_str() == upper).map(|state| vec![*state]),
        }
    }
}

/// What one attempt got back: the response (status 0 when none arrived) and an error text for
/// failed attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "HeaderList::is_empty")]
    pub headers: HeaderList,
    #[serde(default, skip_serializing_if = "Bytes::is_empty")]
    pub body: Bytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A stored message with its current state.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub user_id: String,
    pub spec: MessageSpec,
    pub body: Bytes,
    pub created_at: i64,
    /// The earliest first delivery (`createdAt` when not delayed).
    pub not_before: i64,
    pub state: MessageState,
    /// Attempts already made; the next attempt is sent with `Upstash-Retried: retried`.
    pub retried: u32,
    /// When the next attempt is due, while not terminal.
    pub due_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub dlq_id: Option<String>,
    pub last_response: Option<AttemptResponse>,
}

impl Message {
    /// The URL host, as the `host` filters compare it.
    pub fn host(&self) -> String {
        url_host_and_path(&self.spec.url).0
    }
}

/// Host (without port) and path of a destination URL, for the `host` and `path` filters.
pub fn url_host_and_path(url: &str) -> (String, String) {
    match url::Url::parse(url) {
        Ok(parsed) => (parsed.host_str().unwrap_or_default().to_string(), parsed.path().to_string()),
        Err(_) => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_round_trip() {
        for code in 0..6 {
            assert_eq!(MessageState::from_code(code).unwrap().code(), code);
        }
        for state in LogState::ALL {
            assert_eq!(LogState::from_code(state.code()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn state_filters_expand_aliases() {
        assert_eq!(
            LogState::parse_filter("in_progress"),
            Some(vec![LogState::Active, LogState::Retry, LogState::Error])
        );
        assert_eq!(LogState::parse_filter("CANCELLED"), Some(vec![LogState::Canceled]));
        assert_eq!(LogState::parse_filter("DELIVERED"), Some(vec![LogState::Delivered]));
        assert_eq!(LogState::parse_filter("PENDING"), None);
    }
}
