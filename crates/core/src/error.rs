//! The one error type of the core layer: a rejected input, with a message meant for the API
//! caller. The server maps it to `400 {"error": "..."}`.

use thiserror::Error;

/// A value that does not follow the QStash rules. The message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Invalid(message.into())
    }
}

pub type Result<T, E = Invalid> = std::result::Result<T, E>;
