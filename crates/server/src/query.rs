//! Query strings of the management endpoints (spec §0.6): repeated keys and comma-separated
//! values, the shared filters, and pagination.

use crate::error::ApiError;
use crate::views::ShownBodies;
use tern_core::LogState;
use tern_store::{MessageFilter, Order, PageRequest};

/// Decoded query pairs in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

/// The filter keys every filtered endpoint understands.
pub const COMMON_FILTERS: &[&str] = &[
    "messageId",
    "url",
    "topicName",
    "queueName",
    "scheduleId",
    "label",
    "flowControlKey",
    "callerIp",
    "callerIP",
    "fromDate",
    "toDate",
];

/// Keys [`Query::filter`] reads beyond [`COMMON_FILTERS`].
const MORE_FILTERS: &[&str] =
    &["messageIds", "dlqIds", "host", "path", "state", "responseStatus", "workflowRunId", "workflowCreatedAt"];

/// The most values one filter may list (SQLite bounds the size of a statement).
const MAX_FILTER_VALUES: usize = 500;

/// The most ids one bulk call may name (bulk cancel, DLQ delete and retry): each is a value
/// the store's statements carry and an entry the call holds, and SQLite bounds a statement's
/// values (beyond them it would fail as an internal error).
pub const MAX_IDS: usize = 1000;

/// Refuses (400) more than [`MAX_IDS`] ids of `what` ("message", "DLQ") in one call.
pub fn check_ids(ids: &[String], what: &str) -> Result<(), ApiError> {
    if ids.len() > MAX_IDS {
        return Err(ApiError::bad_request(format!("at most {MAX_IDS} {what} ids per call")));
    }
    Ok(())
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// Rejects keys outside `allowed` (and `qstash_token`), so that a misspelt filter can never
    /// widen a bulk operation.
    pub fn only(&self, allowed: &[&[&str]]) -> Result<(), ApiError> {
        for (key, _) in &self.0 {
            let known = key == "qstash_token" || allowed.iter().any(|group| group.contains(&key.as_str()));
            if !known {
                return Err(ApiError::bad_request(format!("unknown query parameter {key:?}")));
            }
        }
        Ok(())
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// The last value given for `key`.
    pub fn single(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`: repeated keys and comma-separated values (except for URLs, which
    /// may contain commas themselves).
    pub fn values(&self, key: &str) -> Vec<String> {
        let split = key != "url" && key != "workflowUrl";
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(
                |(_, value)| {
                    if split { value.split(',').map(str::to_string).collect() } else { vec![value.clone()] }
                },
            )
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
            .collect()
    }

    fn integer(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.single(key)
            .filter(|value| !value.trim().is_empty())
            .map(|value| {
                value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("{key} must be an integer, got {value:?}")))
            })
            .transpose()
    }

    /// The shared filters; `fromDate`/`toDate` are inclusive Unix milliseconds. A filter given
    /// without a value, or with too many, is refused rather than ignored: an ignored filter could
    /// widen a bulk cancel or delete to everything.
    pub fn filter(&self) -> Result<MessageFilter, ApiError> {
        let filter_keys = || COMMON_FILTERS.iter().chain(MORE_FILTERS);
        for (key, value) in &self.0 {
            if filter_keys().any(|filter| filter == key) && value.split(',').all(|part| part.trim().is_empty()) {
                return Err(ApiError::bad_request(format!("query parameter {key} has no value")));
            }
        }
        for key in filter_keys() {
            if self.values(key).len() > MAX_FILTER_VALUES {
                return Err(ApiError::bad_request(format!("at most {MAX_FILTER_VALUES} values for {key}")));
            }
        }
        let mut caller_ips = self.values("callerIp");
        caller_ips.extend(self.values("callerIP"));
        let mut message_ids = self.values("messageId");
        message_ids.extend(self.values("messageIds"));
        let mut statuses = Vec::new();
        for value in self.values("responseStatus") {
            statuses.push(
                value
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("responseStatus must be an integer, got {value:?}")))?,
            );
        }
        let mut states = Vec::new();
        for value in self.values("state") {
            states.extend(
                LogState::parse_filter(&value)
                    .ok_or_else(|| ApiError::bad_request(format!("unknown state {value:?}")))?,
            );
        }
        Ok(MessageFilter {
            message_ids,
            urls: self.values("url"),
            topic_names: self.values("topicName"),
            queue_names: self.values("queueName"),
            schedule_ids: self.values("scheduleId"),
            labels: self.values("label"),
            flow_control_keys: self.values("flowControlKey"),
            caller_ips,
            hosts: self.values("host"),
            paths: self.values("path"),
            dlq_ids: self.values("dlqIds"),
            workflow_run_ids: self.values("workflowRunId"),
            workflow_only: false,
            failure_callback_states: Vec::new(),
            workflow_created_at: self.integer("workflowCreatedAt")?,
            states,
            response_statuses: statuses,
            from_ms: self.integer("fromDate")?,
            to_ms: self.integer("toDate")?,
        })
    }

    /// `count` clamped to `1..=max`; `None` when absent.
    pub fn count(&self, max: usize) -> Result<Option<usize>, ApiError> {
        Ok(self.integer("count")?.map(|count| usize::try_from(count.max(1)).unwrap_or(usize::MAX).min(max)))
    }

    /// `cursor`, `count` (clamped to `1..=max`, default `max`) and `order`.
    pub fn page(&self, max: usize) -> Result<PageRequest, ApiError> {
        let count = self.count(max)?.unwrap_or(max);
        let order = match self.single("order").map(str::trim) {
            None | Some("") => Order::LatestFirst,
            Some(order) if order.eq_ignore_ascii_case("latestFirst") => Order::LatestFirst,
            Some(order) if order.eq_ignore_ascii_case("earliestFirst") => Order::EarliestFirst,
            Some(order) => {
                return Err(ApiError::bad_request(format!(
                    "order must be latestFirst or earliestFirst, got {order:?}"
                )));
            }
        };
        let cursor = self.single("cursor").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string);
        Ok(PageRequest { cursor, count, order, ..PageRequest::first(count) })
    }

    /// A listing's page: [`Query::page`] ending also at `max_bytes`, and `trimBody` (the
    /// Workflow API's: `-1` leaves bodies out, `n` shows their first `n` bytes), which the store
    /// then reads no further.
    pub fn listing(&self, max: usize, max_bytes: usize) -> Result<(PageRequest, ShownBodies), ApiError> {
        let shown = match self.integer("trimBody")? {
            None => ShownBodies::Whole,
            Some(-1) => ShownBodies::Excluded,
            Some(limit) if limit >= 0 => ShownBodies::Prefix(limit as usize),
            Some(_) => {
                return Err(ApiError::bad_request("trimBody must be -1 (no bodies) or a number of bytes"));
            }
        };
        let page = PageRequest { max_bytes, body_limit: shown.read_limit(), ..self.page(max)? };
        Ok((page, shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_values_come_repeated_or_comma_separated() {
        let query = Query::parse(Some("label=a&label=b,c&url=http://x/?a=1,2&state=IN_PROGRESS&callerIP=1.2.3.4"));
        let filter = query.filter().unwrap();
        assert_eq!(filter.labels, vec!["a", "b", "c"]);
        assert_eq!(filter.urls, vec!["http://x/?a=1,2"]);
        assert_eq!(filter.states, vec![LogState::Active, LogState::Retry, LogState::Error]);
        assert_eq!(filter.caller_ips, vec!["1.2.3.4"]);
    }

    #[test]
    fn pages_clamp_and_validate() {
        let page = Query::parse(Some("count=5000&order=earliestFirst&cursor=12-3")).page(1000).unwrap();
        assert_eq!((page.count, page.order, page.cursor.as_deref()), (1000, Order::EarliestFirst, Some("12-3")));
        assert_eq!(Query::parse(Some("count=0")).page(100).unwrap().count, 1);
        assert_eq!(Query::parse(None).page(100).unwrap().count, 100);
        assert!(Query::parse(Some("count=x")).page(100).is_err());
        assert!(Query::parse(Some("order=sideways")).page(100).is_err());
        assert!(Query::parse(Some("state=WAITING")).filter().is_err());
        assert!(Query::parse(Some("fromDate=yesterday")).filter().is_err());
    }

    #[test]
    fn unknown_keys_are_refused_when_asked() {
        let query = Query::parse(Some("labl=x&qstash_token=t"));
        assert!(query.only(&[COMMON_FILTERS]).is_err());
        assert!(Query::parse(Some("label=x&qstash_token=t")).only(&[COMMON_FILTERS]).is_ok());
    }
}
