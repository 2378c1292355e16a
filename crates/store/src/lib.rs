//! tern-store: persistence behind small capability traits. The embedded SQLite backend
//! ([`sqlite::SqliteStore`]) is the default; every backend passes the conformance suite in
//! `tests/conformance`.
//!
//! Writes that acknowledge a client (publish, cancel, DLQ changes, key rotation) resolve after
//! their commit is durable; many of them share one commit. Delivery bookkeeping
//! ([`MessageStore::record_attempt_started`], [`MessageStore::record_attempt_outcome`]) is queued
//! in order and committed in the background, so no delivery waits on an fsync.

pub mod error;
pub mod model;
pub mod sqlite;

use async_trait::async_trait;
use std::sync::Arc;
use tern_core::{Message, MessageId};
use tokio::sync::Notify;

pub use error::{Result, StoreError};
pub use model::*;

/// Messages: durable inserts, reads, cancels and the record of attempts.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores new messages (deduplication and DLQ replacement are decided atomically), logs
    /// `CREATED`, and resolves once the commit is durable.
    async fn insert_messages(&self, messages: Vec<NewMessage>) -> Result<Vec<InsertOutcome>>;

    async fn get_message(&self, user_id: &str, id: MessageId) -> Result<Option<Message>>;

    /// Cancels unfinished messages (logging `CANCEL_REQUESTED` and `CANCELED`); a message with
    /// an attempt in flight ends as `CANCELED` when the attempt does. Durable on return.
    async fn cancel_messages(&self, user_id: &str, selection: CancelSelection, now: i64) -> Result<CancelOutcome>;

    /// Logs `ACTIVE` for an attempt that starts now. Queued, committed in the background.
    async fn record_attempt_started(&self, message: &Message, at: i64) -> Result<()>;

    /// Records the end of an attempt and stores the callbacks it triggers. Queued, committed in
    /// the background; a retry becomes claimable once committed.
    async fn record_attempt_outcome(&self, outcome: AttemptOutcome) -> Result<()>;
}

/// Claiming due work. A claimed message belongs to the claimer until its outcome is recorded
/// (the embedded backend holds claims in memory; a shared backend would hold them as leases).
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Unfinished messages due at `now`, earliest first, at most `limit`.
    async fn claim_due(&self, now: i64, limit: usize) -> Result<Vec<Arc<Message>>>;

    /// When the earliest unclaimed message is due, if any.
    fn next_due_at(&self) -> Option<i64>;

    /// Notified whenever new or earlier work may have become claimable.
    fn work_signal(&self) -> Arc<Notify>;
}

#[async_trait]
pub trait LogStore: Send + Sync {
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

/// Everything the engine needs from a backend.
pub trait Store: MessageStore + WorkQueue + LogStore + DlqStore + KeyStore + Maintenance {}

impl<T: MessageStore + WorkQueue + LogStore + DlqStore + KeyStore + Maintenance> Store for T {}
