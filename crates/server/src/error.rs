//! The API's error type and the one place errors become HTTP responses:
//! `{"error": "..."}` with the right status. Internal failures are logged and answered with a
//! generic message so that nothing internal leaks.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tern_core::Invalid;
use tern_engine::EngineError;
use tern_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 413 for a body beyond `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than the limit of {limit} bytes"))
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

impl From<Invalid> for ApiError {
    fn from(error: Invalid) -> Self {
        Self::bad_request(error.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidInput(message) => Self::bad_request(message),
            StoreError::Full(_) => {
                tracing::error!(%error, "a write was refused: the disk is full");
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "the server's disk is full: nothing was stored; try again once space is freed",
                )
            }
            StoreError::Unavailable(_) => {
                tracing::error!(%error, "a write was refused");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server's storage failed a write and refuses writes until it is restarted: nothing was stored",
                )
            }
            StoreError::Unreachable(_) => {
                tracing::error!(%error, "a request failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server's database cannot be reached: nothing was stored; try again shortly",
                )
            }
            other => Self::internal(other),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Invalid(invalid) => invalid.into(),
            EngineError::NotFound(message) => Self::not_found(message),
            EngineError::LimitExceeded(message) => Self::new(StatusCode::PRECONDITION_FAILED, message),
            EngineError::TooLarge(message) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, message),
            EngineError::Store(store) => store.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The body of every error answer.
pub fn error_json(message: &str) -> String {
    json!({ "error": message }).to_string()
}

/// What tern says about a request that hyper refused before any handler saw it (hyper's own
/// answer has the status and an empty body; the listener puts this in it).
pub fn unparsed_request_message(status: u16) -> Option<&'static str> {
    match status {
        400 => Some("malformed request: the request line or a header is not valid HTTP"),
        414 => Some("the request URI is too long"),
        431 => Some("the request headers are too large"),
        _ => None,
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
