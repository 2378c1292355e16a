//! Conversions between SQLite rows and domain values.

use crate::error::{Result, StoreError};
use crate::model::NewMessage;
use bytes::Bytes;
use rusqlite::{Connection, Row, params};
use tern_core::message::url_host_and_path;
use tern_core::{AttemptResponse, HeaderList, LogState, Message, MessageId, MessageState, Origin};

const MESSAGE_COLUMNS: [&str; MESSAGE_COLUMN_COUNT] = [
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
];

/// The columns [`message_from_row`] reads, in order; prefix with a table alias when joining.
pub fn message_columns(alias: &str) -> String {
    MESSAGE_COLUMNS.iter().map(|column| format!("{alias}.{column}")).collect::<Vec<_>>().join(", ")
}

/// Number of columns in [`message_columns`].
pub const MESSAGE_COLUMN_COUNT: usize = 15;

/// [`message_columns`] for a listing, followed by [`ListedLengths`]' columns: the bodies come
/// only when short (see [`listed_body`]); without `last_response` its columns are `NULL` (a log
/// entry shows its own response).
pub fn listed_message_columns(alias: &str, last_response: bool) -> String {
    let columns = MESSAGE_COLUMNS.iter().map(|column| match *column {
        "body" => listed_body(&format!("{alias}.body")),
        column if column.starts_with("response_") && !last_response => "NULL".to_string(),
        "response_body" => listed_body(&format!("{alias}.response_body")),
        column => format!("{alias}.{column}"),
    });
    let response = if last_response { format!("{alias}.response_body") } else { "NULL".to_string() };
    let headers = if last_response { format!("{alias}.response_headers") } else { "NULL".to_string() };
    let lengths = format!(
        "{alias}.rowid, length({alias}.body), length({response}), length({alias}.spec) + coalesce(length({headers}), 0)"
    );
    columns.chain(std::iter::once(lengths)).collect::<Vec<_>>().join(", ")
}

/// Number of columns in [`listed_message_columns`].
pub const LISTED_MESSAGE_COLUMN_COUNT: usize = MESSAGE_COLUMN_COUNT + 4;

/// Bodies up to this size come with their row; a longer one is read through incremental blob
/// I/O, only once its page has taken the row and only as far as a trim asks, so that a listing
/// never loads what it does not show.
const INLINE_BODY_BYTES: usize = 64 << 10;

/// A body column as listings select it: the value when short, else `NULL` (its length, read
/// from the record header without the value, says which).
pub fn listed_body(column: &str) -> String {
    format!("CASE WHEN length({column}) <= {INLINE_BODY_BYTES} THEN {column} END")
}

/// The sizes a listing reads before it decides whether a row fits its page.
#[derive(Debug, Clone, Copy)]
pub struct ListedLengths {
    pub rowid: i64,
    /// `None` for a `NULL` body.
    pub body: Option<usize>,
    pub response_body: Option<usize>,
    /// The stored configuration and response headers, which every listed item shows.
    pub other: usize,
}

impl ListedLengths {
    pub fn from_row(row: &Row<'_>, offset: usize) -> Result<Self> {
        let length = |index: usize| -> Result<Option<usize>> {
            Ok(row.get::<_, Option<i64>>(offset + index)?.map(|length| length.max(0) as usize))
        };
        Ok(ListedLengths {
            rowid: row.get(offset)?,
            body: length(1)?,
            response_body: length(2)?,
            other: length(3)?.unwrap_or(0),
        })
    }
}

/// How much of a body of `length` bytes a listing reads under `limit`.
pub fn wanted(length: Option<usize>, limit: Option<usize>) -> usize {
    length.unwrap_or(0).min(limit.unwrap_or(usize::MAX))
}

/// A listed body: the inline value trimmed to `wanted`, or that many bytes read from the
/// stored value (`table.column` of `rowid`) when it was too long to come inline.
pub fn listed_body_value(
    connection: &Connection,
    (table, column, rowid): (&str, &str, i64),
    inline: Bytes,
    length: Option<usize>,
    wanted: usize,
) -> Result<Bytes> {
    if length.is_none_or(|length| length <= INLINE_BODY_BYTES) {
        return Ok(inline.slice(..wanted.min(inline.len())));
    }
    let blob = connection.blob_open("main", table, column, rowid, true)?;
    let mut value = vec![0; wanted.min(blob.len())];
    blob.read_at_exact(&mut value, 0)?;
    Ok(Bytes::from(value))
}

pub fn message_from_row(row: &Row<'_>, offset: usize) -> Result<Message> {
    let id: String = row.get(offset)?;
    let state: i64 = row.get(offset + 2)?;
    let spec: String = row.get(offset + 9)?;
    // `NULL` only in a listing, which reads a long body on its own (`listed_body_value`).
    let body: Option<Vec<u8>> = row.get(offset + 10)?;
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
        body: body.map(Bytes::from).unwrap_or_default(),
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
/// Inserts a message's row; `run_key` is the workflow run it belongs to.
pub fn insert_message(
    connection: &Connection,
    message: &NewMessage,
    id: &str,
    seq: u64,
    run_key: Option<i64>,
) -> Result<()> {
    let spec = &message.spec;
    let (host, path) = url_host_and_path(&spec.url);
    let mut statement = connection.prepare_cached(
        "INSERT INTO messages (id, user_id, seq, state, due_at, retried, created_at, not_before, url, host, path,
            topic_name, queue_name, schedule_id, flow_control_key, labels, caller_ip, source_id, spec, body,
            workflow_run_id, workflow_run_key)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?5, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
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
        spec.workflow.as_ref().map(|link| &link.run_id),
        run_key,
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
