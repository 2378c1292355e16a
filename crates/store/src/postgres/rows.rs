//! Conversions between PostgreSQL rows and domain values, and the inserts of messages and log
//! entries (the embedded store's `sqlite/rows.rs`, in PostgreSQL's dialect).

use super::client::GenericClient;
use crate::error::{Result, StoreError};
use crate::model::NewMessage;
use bytes::Bytes;
use tern_core::message::url_host_and_path;
use tern_core::{AttemptResponse, HeaderList, LogState, Message, MessageId, MessageState, Origin};
use tokio_postgres::Row;

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
        "response_status" if !last_response => "NULL::BIGINT".to_string(),
        "response_body" if !last_response => "NULL::BYTEA".to_string(),
        column if column.starts_with("response_") && !last_response => "NULL::TEXT".to_string(),
        "response_body" => listed_body(&format!("{alias}.response_body")),
        column => format!("{alias}.{column}"),
    });
    let response = if last_response { format!("{alias}.response_body") } else { "NULL::BYTEA".to_string() };
    let headers = if last_response { format!("{alias}.response_headers") } else { "NULL::TEXT".to_string() };
    let lengths = format!(
        "{alias}.id, octet_length({alias}.body)::BIGINT, octet_length({response})::BIGINT, \
         (octet_length({alias}.spec) + coalesce(octet_length({headers}), 0))::BIGINT"
    );
    columns.chain(std::iter::once(lengths)).collect::<Vec<_>>().join(", ")
}

/// Number of columns in [`listed_message_columns`].
pub const LISTED_MESSAGE_COLUMN_COUNT: usize = MESSAGE_COLUMN_COUNT + 4;

/// Bodies up to this size come with their row; a longer one is read on its own, only once its
/// page has taken the row and only as far as a trim asks (bodies are stored uncompressed, so
/// `substring` reads just the chunks it returns), so that a listing never loads what it does not
/// show.
const INLINE_BODY_BYTES: usize = 64 << 10;

/// A body column as listings select it: the value when short, else `NULL` (its length says
/// which).
pub fn listed_body(column: &str) -> String {
    format!("CASE WHEN octet_length({column}) <= {INLINE_BODY_BYTES} THEN {column} END")
}

/// The sizes a listing reads before it decides whether a row fits its page.
#[derive(Debug, Clone)]
pub struct ListedLengths {
    /// The message's id as stored, to read a long body by.
    pub id: String,
    /// `None` for a `NULL` body.
    pub body: Option<usize>,
    pub response_body: Option<usize>,
    /// The stored configuration and response headers, which every listed item shows.
    pub other: usize,
}

impl ListedLengths {
    pub fn from_row(row: &Row, offset: usize) -> Result<Self> {
        let length = |index: usize| -> Result<Option<usize>> {
            Ok(row.try_get::<_, Option<i64>>(offset + index)?.map(|length| length.max(0) as usize))
        };
        Ok(ListedLengths {
            id: row.try_get(offset)?,
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
/// stored value (`column` of the message `id`, `body` or `response_body`) when it was too long
/// to come inline.
pub async fn listed_body_value(
    c: &impl GenericClient,
    (column, id): (&str, &str),
    inline: Bytes,
    length: Option<usize>,
    wanted: usize,
) -> Result<Bytes> {
    if length.is_none_or(|length| length <= INLINE_BODY_BYTES) {
        return Ok(inline.slice(..wanted.min(inline.len())));
    }
    debug_assert!(column == "body" || column == "response_body");
    let wanted = i64::try_from(wanted).unwrap_or(i64::MAX).min(i32::MAX as i64) as i32;
    let row = c
        .query_opt(&format!("SELECT substring({column} FROM 1 FOR $2) FROM messages WHERE id = $1"), &[&id, &wanted])
        .await?;
    let value: Option<Vec<u8>> = row.map(|row| row.try_get(0)).transpose()?.flatten();
    Ok(value.map(Bytes::from).unwrap_or_default())
}

pub fn message_from_row(row: &Row, offset: usize) -> Result<Message> {
    let id: String = row.try_get(offset)?;
    let state: i64 = row.try_get(offset + 2)?;
    let spec: String = row.try_get(offset + 9)?;
    // `NULL` only in a listing, which reads a long body on its own (`listed_body_value`).
    let body: Option<Vec<u8>> = row.try_get(offset + 10)?;
    let retried: i64 = row.try_get(offset + 4)?;
    Ok(Message {
        id: parse_id(&id)?,
        user_id: row.try_get(offset + 1)?,
        state: MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
        due_at: row.try_get(offset + 3)?,
        retried: u32::try_from(retried).map_err(|_| StoreError::Corrupt(format!("retried {retried}")))?,
        created_at: row.try_get(offset + 5)?,
        not_before: row.try_get(offset + 6)?,
        finished_at: row.try_get(offset + 7)?,
        dlq_id: row.try_get(offset + 8)?,
        spec: serde_json::from_str(&spec)?,
        body: body.map(Bytes::from).unwrap_or_default(),
        last_response: response_from_row(row, offset + 11, Some(offset + 14))?,
    })
}

pub fn parse_id(text: &str) -> Result<MessageId> {
    text.parse().map_err(|()| StoreError::Corrupt(format!("message id {text:?}")))
}

/// Reads `status, headers, body[, error]` columns; `None` when no status was stored.
pub fn response_from_row(row: &Row, offset: usize, error_column: Option<usize>) -> Result<Option<AttemptResponse>> {
    let status: Option<i64> = row.try_get(offset)?;
    let Some(status) = status else {
        return Ok(None);
    };
    let headers: Option<String> = row.try_get(offset + 1)?;
    let body: Option<Vec<u8>> = row.try_get(offset + 2)?;
    let error = match error_column {
        Some(column) => row.try_get(column)?,
        None => None,
    };
    Ok(Some(AttemptResponse {
        status: u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("status {status}")))?,
        headers: headers.map(|json| serde_json::from_str(&json)).transpose()?.unwrap_or_default(),
        body: body.map(Bytes::from).unwrap_or_default(),
        error,
    }))
}

pub fn headers_json(headers: &HeaderList) -> Option<String> {
    (!headers.is_empty()).then(|| serde_json::to_string(headers).expect("headers serialise"))
}

/// Labels stored as `,a,b,` so that one label matches with `strpos`.
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

/// Inserts a message's row under `id` (its id as text, which the caller also logs with);
/// `run_key` is the workflow run it belongs to. Returns the enqueue sequence number the
/// database gave it (increasing across every node).
pub async fn insert_message(
    c: &impl GenericClient,
    message: &NewMessage,
    id: &str,
    run_key: Option<i64>,
) -> Result<u64> {
    let spec = &message.spec;
    let (host, path) = url_host_and_path(&spec.url);
    let row = c
        .query_one(
            "INSERT INTO messages (id, user_id, state, due_at, retried, created_at, not_before, url, host, path,
                topic_name, queue_name, schedule_id, flow_control_key, labels, caller_ip, source_id, spec, body,
                workflow_run_id, workflow_run_key)
             VALUES ($1, $2, $3, $4, 0, $5, $4, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
             RETURNING seq",
            &[
                &id,
                &message.user_id,
                &MessageState::Pending.code(),
                &message.due_at,
                &message.created_at,
                &spec.url,
                &host,
                &path,
                &spec.topic_name,
                &spec.queue_name,
                &spec.schedule_id,
                &spec.flow_control.as_ref().map(|flow| &flow.key),
                &labels_column(&spec.labels),
                &spec.caller_ip,
                &callback_source(spec).map(|id| id.to_string()),
                &serde_json::to_string(spec)?,
                &message.body.as_ref(),
                &spec.workflow.as_ref().map(|link| &link.run_id),
                &run_key,
            ],
        )
        .await?;
    Ok(row.try_get::<_, i64>(0)? as u64)
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

/// Appends `logs` in order (so their sequence numbers follow it). The statements go out
/// together (pipelined): the database runs them in the order sent.
pub async fn insert_logs(c: &impl GenericClient, logs: &[LogRow<'_>]) -> Result<()> {
    let inserts = logs.iter().map(|log| async move {
        let status = log.response.map(|response| response.status as i64);
        c.execute(
            "INSERT INTO logs (user_id, message_id, time, state, error, next_delivery_time,
                response_status, response_headers, response_body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &log.user_id,
                &log.message_id,
                &log.time,
                &log.state.code(),
                &log.error,
                &log.next_delivery_time,
                &status,
                &log.response.and_then(|response| response.headers),
                &log.response.map(|response| response.body),
            ],
        )
        .await
    });
    futures_util::future::try_join_all(inserts).await?;
    Ok(())
}
