//! Conversions between SQLite rows and domain values.

use crate::error::{Result, StoreError};
use crate::model::NewMessage;
use bytes::Bytes;
use rusqlite::{Connection, Row, params};
use tern_core::message::url_host_and_path;
use tern_core::{AttemptResponse, HeaderList, LogState, Message, MessageId, MessageState, Origin};

/// The columns [`message_from_row`] reads, in order; prefix with a table alias when joining.
pub fn message_columns(alias: &str) -> String {
    [
        "id",
        "user_id",
        "state",
        "due_at",
        "retried",
        "created_at",
        "not_before",
        "finished_at",
        "dlq_id",
        "spec",
        "body",
        "response_status",
        "response_headers",
        "response_body",
        "response_error",
    ]
    .iter()
    .map(|column| format!("{alias}.{column}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// Number of columns in [`message_columns`].
pub const MESSAGE_COLUMN_COUNT: usize = 15;

pub fn message_from_row(row: &Row<'_>, offset: usize) -> Result<Message> {
    let id: String = row.get(offset)?;
    let state: i64 = row.get(offset + 2)?;
    let spec: String = row.get(offset + 9)?;
    let body: Vec<u8> = row.get(offset + 10)?;
    Ok(Message {
        id: id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?,
        user_id: row.get(offset + 1)?,
        state: MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
        due_at: row.get(offset + 3)?,
        retried: row.get(offset + 4)?,
        created_at: row.get(offset + 5)?,
        not_before: row.get(offset + 6)?,
        finished_at: row.get(offset + 7)?,
        dlq_id: row.get(offset + 8)?,
        spec: serde_json::from_str(&spec)?,
        body: Bytes::from(body),
        last_response: response_from_row(row, offset + 11, Some(offset + 14))?,
    })
}

/// Reads `status, headers, body[, error]` columns; `None` when no status was stored.
pub fn response_from_row(row: &Row<'_>, offset: usize, error_column: Option<usize>) -> Result<Option<AttemptResponse>> {
    let status: Option<u16> = row.get(offset)?;
    let Some(status) = status else {
        return Ok(None);
    };
    let headers: Option<String> = row.get(offset + 1)?;
    let body: Option<Vec<u8>> = row.get(offset + 2)?;
    let error = match error_column {
        Some(column) => row.get(column)?,
        None => None,
    };
    Ok(Some(AttemptResponse {
        status,
        headers: headers.map(|json| serde_json::from_str(&json)).transpose()?.unwrap_or_default(),
        body: body.map(Bytes::from).unwrap_or_default(),
        error,
    }))
}

pub fn headers_json(headers: &HeaderList) -> Option<String> {
    (!headers.is_empty()).then(|| serde_json::to_string(headers).expect("headers serialise"))
}

/// Labels stored as `,a,b,` so that one label matches with `instr`.
pub fn labels_column(labels: &[String]) -> Option<String> {
    (!labels.is_empty()).then(|| format!(",{},", labels.join(",")))
}

/// The message a callback reports on, if `spec` is a callback's.
pub fn callback_source(spec: &tern_core::MessageSpec) -> Option<MessageId> {
    match spec.origin {
        Origin::Callback { source } | Origin::FailureCallback { source } => Some(source),
        Origin::Publish => None,
    }
}

/// Stores a new message under `id` (its id as text, which the caller also logs with).
pub fn insert_message(connection: &Connection, message: &NewMessage, id: &str, seq: u64) -> Result<()> {
    let spec = &message.spec;
    let (host, path) = url_host_and_path(&spec.url);
    let mut statement = connection.prepare_cached(
        "INSERT INTO messages (id, user_id, seq, state, due_at, retried, created_at, not_before, url, host, path,
            topic_name, queue_name, schedule_id, flow_control_key, labels, caller_ip, source_id, spec, body)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?5, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?;
    statement.execute(params![
        id,
        message.user_id,
        seq as i64,
        MessageState::Pending.code(),
        message.due_at,
        message.created_at,
        spec.url,
        host,
        path,
        spec.topic_name,
        spec.queue_name,
        spec.schedule_id,
        spec.flow_control.as_ref().map(|flow| &flow.key),
        labels_column(&spec.labels),
        spec.caller_ip,
        callback_source(spec).map(|id| id.to_string()),
        serde_json::to_string(spec)?,
        message.body.as_ref(),
    ])?;
    Ok(())
}

/// One log row to append.
#[derive(Clone, Copy)]
pub struct LogRow<'a> {
    pub user_id: &'a str,
    /// The message's id as text (formatted once per op, not per row).
    pub message_id: &'a str,
    pub time: i64,
    pub state: LogState,
    pub error: Option<&'a str>,
    pub next_delivery_time: Option<i64>,
    pub response: Option<LoggedResponse<'a>>,
}

/// A response as log rows store it, its headers already in JSON: an attempt's outcome writes
/// the same response to the message row and to one or two log rows, serialised once.
#[derive(Clone, Copy)]
pub struct LoggedResponse<'a> {
    pub status: u16,
    pub headers: Option<&'a str>,
    pub body: &'a [u8],
}

/// Appends `logs` in order (so their sequence numbers follow it), one statement each: a
/// multi-row `INSERT` measured more instructions per row than this (SQLite runs its `VALUES`
/// list as a coroutine).
pub fn insert_logs(connection: &Connection, logs: &[LogRow<'_>]) -> Result<()> {
    let mut statement = connection.prepare_cached(
        "INSERT INTO logs (user_id, message_id, time, state, error, next_delivery_time,
            response_status, response_headers, response_body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for log in logs {
        statement.execute(params![
            log.user_id,
            log.message_id,
            log.time,
            log.state.code(),
            log.error,
            log.next_delivery_time,
            log.response.map(|response| response.status),
            log.response.and_then(|response| response.headers),
            log.response.map(|response| response.body),
        ])?;
    }
    Ok(())
}
