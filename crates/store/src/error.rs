//! The one error type of the store layer. Callers see most storage failures as a 500 with a
//! generic message; a full disk and a store that stopped writing are told apart, because the
//! operator's remedy differs (free space, or restart).

use crate::model::AttemptOutcome;
use std::sync::Arc;
use thiserror::Error;

/// Cloneable: one failed commit answers every write that shared it.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("storage backend failure: {0}")]
    Backend(String),
    /// A failure the database driver reported, kept as the source.
    #[error("storage backend failure: {0}")]
    Driver(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The disk (or the filesystem's quota) is full: nothing of the write was stored, and
    /// writes work again once there is space.
    #[error("the disk is full: {0}")]
    Full(String),
    /// A write may have been lost below the store (a failed fsync): every later write is
    /// refused until the process restarts and recovers what is on disk.
    #[error("the store refuses writes until tern is restarted: {0}")]
    Unavailable(String),
    /// The database cannot be reached (it is down, restarting, or the network is): nothing of
    /// the write was stored, and writes work again once it answers.
    #[error("the database cannot be reached: {0}")]
    Unreachable(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    /// A request value only the store can judge (a cursor it did not produce).
    #[error("{0}")]
    InvalidInput(String),
    #[error("the store has shut down")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(error.to_string()),
            _ => StoreError::Driver(Arc::new(error)),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let code = error.code();
        if code == Some(&SqlState::DISK_FULL) {
            return StoreError::Full(error.to_string());
        }
        // Text PostgreSQL cannot store (a NUL character) that a client sent.
        if code == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE) || code == Some(&SqlState::UNTRANSLATABLE_CHARACTER) {
            return StoreError::InvalidInput("a value contains a character that cannot be stored (NUL)".into());
        }
        // Class 08 is a connection exception; the others are the server going down.
        let connection_lost = code.is_some_and(|code| {
            code.code().starts_with("08")
                || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code)
        });
        let io_failure = std::error::Error::source(&error).is_some_and(|source| source.is::<std::io::Error>());
        if error.is_closed() || connection_lost || io_failure {
            return StoreError::Unreachable(error.to_string());
        }
        StoreError::Driver(Arc::new(error))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => error.into(),
            deadpool_postgres::PoolError::Timeout(_) => StoreError::Unreachable(error.to_string()),
            other => StoreError::Driver(Arc::new(other)),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// An attempt's outcome the store could not record, handed back with the reason: nothing of
/// it was stored, so the caller may offer the same outcome again. `outcome` is `None` only when
/// the store closed before it could answer.
#[derive(Debug, Error)]
#[error("the attempt's outcome was not recorded: {error}")]
pub struct NotRecorded {
    #[source]
    pub error: StoreError,
    pub outcome: Option<Box<AttemptOutcome>>,
}
