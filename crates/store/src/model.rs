//! The values that cross the store boundary: what to write, what to select, what comes back.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tern_core::{AttemptResponse, FlowControl, HeaderList, LogState, Message, MessageId, MessageSpec, MessageState};

/// A message to store durably.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub user_id: String,
    pub spec: MessageSpec,
    pub body: Bytes,
    pub created_at: i64,
    /// When the first attempt is due (the message's `notBefore`).
    pub due_at: i64,
    pub dedup: Option<DedupClaim>,
    /// A DLQ entry this message replaces (DLQ retry): the message is stored only if the entry
    /// still exists, and the entry is removed in the same commit. The message then takes the
    /// entry's body, copied by the store without reading it into memory; `body` is ignored.
    pub consumes_dlq_entry: Option<String>,
    /// The workflow run this message starts (an Init message): created in the same commit.
    pub run: Option<crate::workflows::NewRun>,
    /// The limits of the run this message is appended to (a client's publish), checked in the
    /// commit that appends it.
    pub run_limits: Option<crate::workflows::RunLimits>,
}

/// A deduplication key that stays claimed until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupClaim {
    pub key: String,
    pub expires_at: i64,
}

/// What happened to one [`NewMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Created,
    /// An earlier message holds the deduplication key; nothing was stored.
    Duplicate(MessageId),
    /// The DLQ entry to replace is gone (retried or deleted concurrently); nothing was stored.
    DlqEntryGone,
    /// An Init message named a run that exists; nothing was stored.
    RunExists,
    /// The message continues a run that is unknown or has ended; nothing was stored.
    RunNotActive,
    /// The run holds the most messages it may; nothing was stored.
    RunStepLimit,
    /// The run's records would take more bytes than it may; nothing was stored.
    RunByteLimit,
}

impl InsertOutcome {
    /// Whether the outcome refuses the whole insert (a publish or a batch stores all of its
    /// messages or none): a message into a run that may not take it.
    pub fn refuses_insert(self) -> bool {
        matches!(self, Self::RunNotActive | Self::RunStepLimit | Self::RunByteLimit)
    }
}

/// What an attempt leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    Retry {
        at: i64,
    },
    /// Retries exhausted or non-retryable: the message moves to the DLQ under `dlq_id`.
    Failed {
        dlq_id: String,
    },
}

/// The end of one attempt, with the callback messages it triggers.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The message as it was claimed.
    pub message: Arc<Message>,
    /// When the attempt started, if its `ACTIVE` entry is not logged yet (the attempt ended
    /// before it was recorded on its own): logged first, with the outcome.
    pub active_at: Option<i64>,
    pub finished_at: i64,
    pub response: AttemptResponse,
    pub next: NextStep,
    /// The callback of this attempt, if the message has one.
    pub callback: Option<NewMessage>,
    /// The failure callback, when `next` is `Failed` and the message has one.
    pub failure_callback: Option<NewMessage>,
}

/// Which messages a cancel applies to.
#[derive(Debug, Clone)]
pub enum CancelSelection {
    Ids(Vec<MessageId>),
    /// Unfinished messages matching the filter (an empty filter matches all), oldest first, at
    /// most `limit` of them; those whose cancel already waits for a running attempt are left out.
    Filter {
        filter: Box<MessageFilter>,
        limit: Option<usize>,
    },
}

/// The result of a cancel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CancelOutcome {
    /// Messages whose cancel was recorded.
    pub cancelled: u64,
    /// Selected messages that exist at all (finished ones included), for 404 decisions.
    pub found: u64,
}

/// Filters shared by logs, the DLQ and bulk cancel. Within a field values are alternatives;
/// fields combine with AND. Not every endpoint uses every field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub message_ids: Vec<String>,
    pub urls: Vec<String>,
    pub topic_names: Vec<String>,
    pub queue_names: Vec<String>,
    pub schedule_ids: Vec<String>,
    pub labels: Vec<String>,
    pub flow_control_keys: Vec<String>,
    pub caller_ips: Vec<String>,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    /// DLQ entry ids (DLQ only).
    pub dlq_ids: Vec<String>,
    /// Workflow runs the messages belong to.
    pub workflow_run_ids: Vec<String>,
    /// Only messages of workflow runs (the DLQ's `source=workflow`).
    pub workflow_only: bool,
    /// Messages of the runs created at this time (Unix ms), as the SDK names a run.
    pub workflow_created_at: Option<i64>,
    /// DLQ entries of runs whose failure callback is in one of these states.
    pub failure_callback_states: Vec<MessageState>,
    /// Log entry states (logs only).
    pub states: Vec<LogState>,
    /// Status of the last response (DLQ only).
    pub response_statuses: Vec<u16>,
    /// Inclusive time bounds, Unix ms: log time, DLQ entry time, or creation time for cancel.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    LatestFirst,
    EarliestFirst,
}

/// A page request. Cursors are opaque strings produced by the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub cursor: Option<String>,
    pub count: usize,
    pub order: Order,
    /// The page also ends, with a cursor, before the item that would take what it read past
    /// this many bytes: bodies (message and response) as far as they are read, plus the
    /// stored headers and configuration (for URL groups: names, URLs and headers). It always
    /// holds at least one item (unless `fit_first`), so the bound on its memory is this plus
    /// one item.
    pub max_bytes: usize,
    /// The first item too must fit `max_bytes`: a page that cannot hold it comes back without
    /// items, and [`Page::next_item_bytes`] says what that item needs. A reader that holds a
    /// budget of `max_bytes` can then reserve that much and ask again.
    pub fit_first: bool,
    /// Read at most this many bytes of each body (the message's and a response's); the items
    /// then carry that prefix. `Some(0)` reads no body. Otherwise a body shown redacted is read
    /// whole all the same (it is shown as a hash of all of it).
    pub body_limit: Option<usize>,
}

impl PageRequest {
    /// The first page of up to `count` items, latest first, whole bodies, no byte bound.
    pub fn first(count: usize) -> Self {
        PageRequest {
            cursor: None,
            count,
            order: Order::default(),
            max_bytes: usize::MAX,
            fit_first: false,
            body_limit: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when more items may follow.
    pub cursor: Option<String>,
    /// When the page ended by size: what the item after it would have read (see
    /// [`PageRequest::max_bytes`]).
    pub next_item_bytes: Option<usize>,
}

impl<T> Page<T> {
    /// A page with `items` and `cursor`, not ended by size.
    pub fn new(items: Vec<T>, cursor: Option<String>) -> Self {
        Page { items, cursor, next_item_bytes: None }
    }
}

/// One log entry with the message it belongs to.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub time: i64,
    pub state: LogState,
    pub error: Option<String>,
    pub next_delivery_time: Option<i64>,
    pub response: Option<AttemptResponse>,
    pub message: Arc<Message>,
}

/// A user's signing keys as last rotated, with the configured pair they were derived from.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKeys {
    pub current: String,
    pub next: String,
    /// The configured keys at rotation time; when configuration changes, it wins again.
    pub configured_current: String,
    pub configured_next: String,
}

impl std::fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use tern_core::redact::SECRET;
        f.debug_struct("StoredKeys")
            .field("current", &SECRET)
            .field("next", &SECRET)
            .field("configured_current", &SECRET)
            .field("configured_next", &SECRET)
            .finish()
    }
}

/// How long finished data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Log entries, and finished messages that are not in the DLQ.
    pub logs: Duration,
    /// DLQ entries.
    pub dlq: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub logs: u64,
    pub messages: u64,
    pub dlq_entries: u64,
    pub dedup_keys: u64,
    /// Ended workflow runs, with their steps.
    pub runs: u64,
    /// Retention stopped at a chunk limit: call again to continue.
    pub more: bool,
}

/// What scheduling needs to know about an unfinished message.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub id: MessageId,
    pub user_id: String,
    pub due_at: i64,
    /// Enqueue order, increasing across the store.
    pub seq: u64,
    pub queue_name: Option<String>,
    pub flow_control: Option<FlowControl>,
    /// The message a callback reports on.
    pub source: Option<MessageId>,
    /// Scheduled for the first time (published), rather than retried or recovered.
    pub is_new: bool,
    /// The payload, when at hand.
    pub message: Option<Arc<Message>>,
}

/// A committed change that affects scheduling, reported in commit order.
#[derive(Debug, Clone)]
pub enum Change {
    /// A message to attempt at `due_at`: new, retried, or recovered at start.
    Scheduled(Scheduled),
    /// A message reached a final state.
    Finished { id: MessageId },
    /// (At start only.) A finished queue message whose callbacks still run keeps its place.
    Settling { id: MessageId, user_id: String, queue_name: String, seq: u64 },
}

/// The scheduler, as the store sees it: told about every committed change, and asked inside a
/// cancel's transaction whether the message is running.
pub trait Scheduling: Send + Sync {
    fn committed(&self, changes: Vec<Change>);
    /// Keeps `id` from starting while its cancel commits; true if an attempt is running.
    fn hold_for_cancel(&self, id: MessageId) -> bool;
    /// The cancel's commit failed: `id` may start again.
    fn release_hold(&self, id: MessageId);
}

/// A flow-control key's settings as kept across restarts: the last configuration a message
/// brought, the operator's pause and pins, and the rate window a restart must not reopen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSettings {
    pub parallelism: Option<u32>,
    pub rate: Option<u32>,
    pub period_secs: u64,
    pub paused: bool,
    pub pinned_parallelism: bool,
    pub pinned_rate: bool,
    /// When the current rate window began, if one is open; or when the operator last reset
    /// the window (with a count of 0), so that a window from before the reset, written late,
    /// cannot take its place.
    pub window_start: Option<i64>,
    /// Attempts started in that window.
    pub window_count: u32,
}

/// A rate-limited key's window after attempts started in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowWindow {
    pub user_id: String,
    pub key: String,
    pub start: i64,
    pub count: u32,
}

/// A FIFO queue's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    pub name: String,
    pub parallelism: u32,
    pub paused: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One endpoint of a URL group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: Option<String>,
    pub url: String,
}

/// How many URL groups a user, and endpoints a group, may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    pub groups: usize,
    pub endpoints: usize,
}

/// What adding endpoints did; at a limit nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointsAdded {
    Added,
    /// The group is new and the user has `GroupLimits::groups` groups.
    GroupLimitReached,
    /// The group would have more than `GroupLimits::endpoints` endpoints.
    EndpointLimitReached,
}

/// A URL group ("topic") with its endpoints in insertion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGroup {
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub endpoints: Vec<Endpoint>,
    /// Publish headers applied to every publish to the group, under the request's own.
    pub default_headers: HeaderList,
}

/// A schedule as stored: when it fires, where to, and the publish it repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub id: String,
    pub user_id: String,
    /// The cron expression as given (trimmed), `CRON_TZ=` prefix included.
    pub cron: String,
    /// A URL (with its query) or a URL-group name.
    pub destination: String,
    pub queue_name: Option<String>,
    /// The publish headers the schedule was created with (configuration, forwarded headers).
    pub headers: HeaderList,
    pub body: Bytes,
    /// The creator's IP, sent as `Upstash-Caller-Ip` with every produced message.
    pub caller_ip: Option<String>,
    pub created_at: i64,
    pub paused: bool,
    /// The next tick to fire (Unix ms).
    pub next_tick_at: Option<i64>,
    pub last_tick_at: Option<i64>,
    /// The messages the last tick produced.
    pub last_message_ids: Vec<MessageId>,
    /// Why the last tick produced nothing, if it failed.
    pub error: Option<String>,
}

/// A schedule with the states of the messages its last tick produced (those still stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleWithStates {
    pub schedule: ScheduleRecord,
    pub last_states: Vec<(MessageId, MessageState)>,
}

/// What creating a schedule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleUpsert {
    Created,
    /// An existing schedule was overwritten (its creation time and pause kept).
    Replaced,
    /// The user already has the maximum number of schedules.
    LimitReached,
    /// The deduplication key was claimed by this earlier creation; nothing was written.
    Deduplicated(String),
}

/// The outcome of one tick of a schedule, applied only if the schedule still waits for
/// `tick_at` (so a tick fires at most once, whatever happens around it).
#[derive(Debug, Clone)]
pub struct ScheduleFire {
    pub user_id: String,
    pub id: String,
    /// The tick processed: the schedule's `next_tick_at` when it was read.
    pub tick_at: i64,
    /// The tick after it.
    pub next_tick_at: Option<i64>,
    /// Messages to store (none when the tick was missed long ago, or failed).
    pub messages: Vec<NewMessage>,
    /// Whether the tick counts as fired (`lastScheduleTime`).
    pub fired: bool,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_stored_keys_hides_them() {
        let keys = StoredKeys {
            current: "sig_aSecret".into(),
            next: "sig_bSecret".into(),
            configured_current: "sig_cSecret".into(),
            configured_next: "sig_dSecret".into(),
        };
        let printed = format!("{keys:?}");
        assert!(!printed.contains("Secret"), "{printed}");
    }
}
