//! tern-store: persistence behind small capability traits. The embedded SQLite backend
//! ([`sqlite::SqliteStore`]) is the default; [`postgres::PostgresStore`] keeps the same data in
//! a PostgreSQL database. Every backend passes the conformance suite in `tests/conformance`.
//!
//! Writes resolve after their commit is durable; many of them share one commit. An attempt's
//! start ([`MessageStore::record_attempt_started`]) is queued and committed in the background;
//! its outcome ([`MessageStore::record_attempt_outcome`]) is queued in order with the rest and
//! resolves once durable, handing the outcome back should it fail, so that the engine can offer
//! it again instead of repeating the delivery. Every committed change that matters for
//! scheduling is reported to the engine's scheduler ([`SchedulingSource::attach`]).

pub(crate) mod batch;
pub mod error;
pub mod model;
pub mod postgres;
pub mod sqlite;
pub mod workflows;

use async_trait::async_trait;
use std::sync::Arc;
use tern_core::{HeaderList, Message, MessageId};

pub use error::{NotRecorded, Result, StoreError};
pub use model::*;
pub use workflows::*;

/// Messages: durable inserts, reads, cancels and the record of attempts.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores new messages (deduplication and DLQ replacement are decided atomically), logs
    /// `CREATED`, and resolves once the commit is durable.
    async fn insert_messages(&self, messages: Vec<NewMessage>) -> Result<Vec<InsertOutcome>>;

    async fn get_message(&self, user_id: &str, id: MessageId) -> Result<Option<Message>>;

    /// About how many bytes [`MessageStore::get_message`] reads for the message (its bodies,
    /// headers and configuration), found without reading them; `None` when there is none.
    async fn message_bytes(&self, user_id: &str, id: MessageId) -> Result<Option<usize>>;

    /// Cancels unfinished messages (logging `CANCEL_REQUESTED` and `CANCELED`); a message with
    /// an attempt in flight ends as `CANCELED` when the attempt does. Durable on return.
    async fn cancel_messages(&self, user_id: &str, selection: CancelSelection, now: i64) -> Result<CancelOutcome>;

    /// Logs `ACTIVE` for an attempt that started at `at` and is still running (a shorter
    /// attempt's comes with its outcome: [`AttemptOutcome::active_at`]). Queued, committed in
    /// the background.
    async fn record_attempt_started(&self, message: &Message, at: i64) -> Result<()>;

    /// Records the end of an attempt and stores the callbacks it triggers; resolves once that
    /// is durable and the scheduler heard of the retry or the end. Should the write fail,
    /// nothing of it is stored and the outcome comes back with the error: the message stays
    /// claimed (the scheduler hears nothing) until the same outcome is recorded.
    async fn record_attempt_outcome(&self, outcome: AttemptOutcome) -> Result<(), NotRecorded>;
}

/// Connecting the scheduler: it hears of every unfinished message, then of every committed
/// change, with no gap between the two.
#[async_trait]
pub trait SchedulingSource: Send + Sync {
    /// Reports every unfinished message to `scheduling` (as [`Change`]s), then every change
    /// committed afterwards. `now` finishes cancels that waited for an attempt a crash cut off.
    async fn attach(&self, scheduling: Arc<dyn Scheduling>, now: i64) -> Result<()>;

    /// Loads messages by id (of any user) for their attempts; unknown ids are skipped.
    async fn load_messages(&self, ids: Vec<MessageId>) -> Result<Vec<Message>>;
}

#[async_trait]
pub trait QueueStore: Send + Sync {
    async fn upsert_queue(&self, user_id: &str, name: &str, parallelism: u32, paused: bool, now: i64) -> Result<()>;

    /// Deletes a queue and cancels its unfinished messages; false if it did not exist.
    async fn delete_queue(&self, user_id: &str, name: &str, now: i64) -> Result<bool>;

    async fn get_queue(&self, user_id: &str, name: &str) -> Result<Option<QueueRecord>>;

    async fn list_queues(&self, user_id: &str) -> Result<Vec<QueueRecord>>;

    /// Every queue of every user (`(user id, queue)`), for the scheduler at start.
    async fn all_queues(&self) -> Result<Vec<(String, QueueRecord)>>;
}

#[async_trait]
pub trait FlowStore: Send + Sync {
    async fn save_flow(&self, user_id: &str, key: &str, settings: FlowSettings) -> Result<()>;

    /// Every key of every user (`(user id, key, settings)`), for the scheduler at start.
    async fn all_flows(&self) -> Result<Vec<(String, String, FlowSettings)>>;

    /// Records rate windows, queued like an attempt's start (not waited for). A window older
    /// than the stored one is ignored, so a late write never reopens a window.
    async fn save_flow_windows(&self, windows: Vec<FlowWindow>) -> Result<()>;

    /// Forgets idle keys (`(user id, key)`), except any that is paused or pinned by now.
    async fn forget_flows(&self, keys: Vec<(String, String)>) -> Result<()>;
}

#[async_trait]
pub trait UrlGroupStore: Send + Sync {
    /// Adds endpoints (creating the group); an endpoint whose URL exists is renamed. Refuses,
    /// writing nothing, a new group past `limits.groups` groups of the user or a group past
    /// `limits.endpoints` endpoints (counted, never read).
    async fn add_endpoints(
        &self,
        user_id: &str,
        group: &str,
        endpoints: Vec<Endpoint>,
        now: i64,
        limits: GroupLimits,
    ) -> Result<EndpointsAdded>;

    /// Removes endpoints matching by URL or name; a group left empty is deleted.
    async fn remove_endpoints(&self, user_id: &str, group: &str, endpoints: Vec<Endpoint>, now: i64) -> Result<()>;

    async fn delete_group(&self, user_id: &str, group: &str) -> Result<bool>;

    /// Replaces a group's default publish headers. False if the group does not exist.
    async fn set_group_headers(&self, user_id: &str, group: &str, headers: HeaderList, now: i64) -> Result<bool>;

    async fn get_group(&self, user_id: &str, group: &str) -> Result<Option<UrlGroup>>;

    /// [`UrlGroupStore::get_group`] for the engine itself (a schedule's tick): a burst of
    /// client reads must not hold it up.
    async fn get_group_for_engine(&self, user_id: &str, group: &str) -> Result<Option<UrlGroup>>;

    /// About how many bytes [`UrlGroupStore::get_group`] reads for the group (names, URLs,
    /// default headers), counted without reading them, to reserve first; `None` when there is
    /// no such group.
    async fn group_bytes(&self, user_id: &str, group: &str) -> Result<Option<usize>>;

    /// A page of the user's groups by name (the cursor is the last name; `page.order` and
    /// `page.body_limit` do not apply), each with its endpoints and default headers; it ends
    /// by `page.max_bytes` too, counting names, URLs and headers.
    async fn list_groups(&self, user_id: &str, page: &PageRequest) -> Result<Page<UrlGroup>>;
}

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates a schedule, or overwrites the one with the same id (keeping its creation time and
    /// pause); refuses a new one past `limit` schedules for the user. With `dedup`, a key still
    /// claimed (at the schedule's `created_at`) answers the schedule id that claimed it and
    /// writes nothing; otherwise the key is claimed for this schedule.
    async fn upsert_schedule(
        &self,
        schedule: ScheduleRecord,
        limit: usize,
        dedup: Option<DedupClaim>,
    ) -> Result<ScheduleUpsert>;

    /// A schedule with the states of its last tick's messages, read together.
    async fn get_schedule(&self, user_id: &str, id: &str) -> Result<Option<ScheduleWithStates>>;

    /// About how many bytes [`ScheduleStore::get_schedule`] reads for the schedule (its body,
    /// headers, URLs and last tick's ids), counted without reading them, to reserve first;
    /// `None` when there is no such schedule.
    async fn schedule_bytes(&self, user_id: &str, id: &str) -> Result<Option<usize>>;

    /// A page of the user's schedules in creation order (`page.order`), each with its last
    /// tick's states, read together; `page.body_limit` does not apply (schedules show whole
    /// bodies), `page.max_bytes` does.
    async fn list_schedules(&self, user_id: &str, page: &PageRequest) -> Result<Page<ScheduleWithStates>>;

    /// False if it did not exist.
    async fn delete_schedule(&self, user_id: &str, id: &str) -> Result<bool>;

    /// Pauses or resumes; a resumed schedule next fires at `next_tick_at`. False if unknown.
    async fn set_schedule_paused(
        &self,
        user_id: &str,
        id: &str,
        paused: bool,
        next_tick_at: Option<i64>,
    ) -> Result<bool>;

    /// Unpaused schedules whose next tick is due at `now`, earliest first (an index range, not a
    /// scan).
    async fn due_schedules(&self, now: i64, limit: usize) -> Result<Vec<ScheduleRecord>>;

    /// The earliest next tick of any unpaused schedule.
    async fn next_schedule_tick(&self) -> Result<Option<i64>>;

    /// Applies ticks atomically: each one only if its schedule still waits for that tick,
    /// together with the messages it produces. Returns which were applied.
    async fn fire_schedules(&self, fires: Vec<ScheduleFire>) -> Result<Vec<bool>>;
}

#[async_trait]
pub trait LogStore: Send + Sync {
    /// A page of log entries; see [`PageRequest`] for how far bodies are read and where a page
    /// ends.
    async fn list_logs(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<LogEntry>>;
}

#[async_trait]
pub trait DlqStore: Send + Sync {
    async fn list_dlq(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Message>>;

    async fn get_dlq(&self, user_id: &str, dlq_id: &str) -> Result<Option<Message>>;

    /// Removes the given entries; ids not in the DLQ are skipped. Returns how many were removed.
    async fn delete_dlq(&self, user_id: &str, dlq_ids: Vec<String>) -> Result<u64>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn load_keys(&self, user_id: &str) -> Result<Option<StoredKeys>>;

    /// Durable on return.
    async fn save_keys(&self, user_id: &str, keys: StoredKeys) -> Result<()>;
}

#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Deletes what retention no longer keeps, plus expired deduplication keys.
    async fn purge(&self, now: i64, retention: Retention) -> Result<PurgeStats>;

    /// Commits everything queued so far and stops accepting writes.
    async fn shutdown(&self) -> Result<()>;
}

/// Which backend keeps the data, and its settings.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// The embedded SQLite store: one process owns a data directory.
    Sqlite(sqlite::SqliteOptions),
    /// A PostgreSQL database, which several nodes may share.
    Postgres(postgres::PostgresOptions),
}

impl StorageConfig {
    /// The embedded store in `data_dir`, fsyncing every commit when `durable`.
    pub fn sqlite(data_dir: impl Into<std::path::PathBuf>, durable: bool) -> Self {
        StorageConfig::Sqlite(sqlite::SqliteOptions { data_dir: data_dir.into(), durable })
    }
}

/// Opens the configured backend (creating or migrating its schema); callers never name a
/// backend's type.
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn Store>> {
    match config {
        StorageConfig::Sqlite(options) => Ok(Arc::new(sqlite::SqliteStore::open(options.clone())?)),
        StorageConfig::Postgres(options) => Ok(Arc::new(postgres::PostgresStore::open(options.clone()).await?)),
    }
}

/// Everything the engine needs from a backend.
pub trait Store:
    MessageStore
    + SchedulingSource
    + LogStore
    + DlqStore
    + KeyStore
    + QueueStore
    + FlowStore
    + UrlGroupStore
    + ScheduleStore
    + WorkflowStore
    + Maintenance
{
}

impl<T> Store for T where
    T: MessageStore
        + SchedulingSource
        + LogStore
        + DlqStore
        + KeyStore
        + QueueStore
        + FlowStore
        + UrlGroupStore
        + ScheduleStore
        + WorkflowStore
        + Maintenance
{
}
