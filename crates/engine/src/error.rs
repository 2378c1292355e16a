//! The one error type of the engine layer; the server maps each variant to an HTTP status.

use tern_core::Invalid;
use tern_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    /// The request breaks a rule (400).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The named thing does not exist for this user (404).
    #[error("{0}")]
    NotFound(String),
    /// A configured maximum (queues, parallelism, URL groups) would be exceeded (412).
    #[error("{0}")]
    LimitExceeded(String),
    /// One request would create more than a request may (messages of a batch) (413).
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
