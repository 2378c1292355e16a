//! The listings of logs and of the DLQ: keyset pages that also end by size. A listing reads
//! its rows as a stream, one at a time; it learns each row's body sizes first (a long body
//! does not come with its row), decides whether the row still fits the page, and stops reading
//! once the page is full. Long bodies are read after the rows (the connection answers one
//! statement at a time), each only as far as a trim asks. So a page never holds more than its
//! byte budget plus one item, whatever the stored bodies.

use super::client::GenericClient;
use super::query::{SqlFilter, message_filter, paginate, param};
use super::rows::{
    LISTED_MESSAGE_COLUMN_COUNT, ListedLengths, MESSAGE_COLUMN_COUNT, listed_body, listed_body_value,
    listed_message_columns, message_from_row, response_from_row, wanted,
};
use crate::error::{Result, StoreError};
use crate::model::*;
use bytes::Bytes;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tern_core::{AttemptResponse, LogState, Message, MessageId};

/// Where a page ends: after `count` items, or before the item that would take what the page
/// read past `max_bytes` — never before its first item, unless `fit_first`. A refused item
/// exists beyond the page, so the page then gets a cursor.
pub struct PageFill {
    count: usize,
    max_bytes: usize,
    fit_first: bool,
    taken: usize,
    bytes: usize,
    refused: Option<usize>,
}

impl PageFill {
    pub fn new(page: &PageRequest) -> Self {
        PageFill {
            count: page.count.max(1),
            max_bytes: page.max_bytes,
            fit_first: page.fit_first,
            taken: 0,
            bytes: 0,
            refused: None,
        }
    }

    /// Whether the next item, reading `bytes`, belongs on the page (it is then counted).
    pub fn take(&mut self, bytes: usize) -> bool {
        if self.taken == self.count {
            return false;
        }
        if self.bytes.saturating_add(bytes) > self.max_bytes && (self.taken > 0 || self.fit_first) {
            self.refused = Some(bytes);
            return false;
        }
        self.taken += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        true
    }

    /// The page ends here: `items` with `cursor`, and what a refused item needed.
    pub fn page<T>(&self, items: Vec<T>, cursor: Option<String>) -> Page<T> {
        Page { items, cursor, next_item_bytes: self.refused }
    }
}

/// How much of a message body a listing reads: up to the page's limit, except that a redacted
/// body is read whole if any of it is read (it is shown as a hash of all of it).
fn body_wanted(message: &Message, length: Option<usize>, limit: Option<usize>) -> usize {
    if message.spec.redact.body && limit != Some(0) { length.unwrap_or(0) } else { wanted(length, limit) }
}

/// A body a listed item shows: read already (trimmed), or too long to have come with its row
/// and read on its own once the rows are read.
enum Body {
    Read(Bytes),
    Long { length: Option<usize>, wanted: usize },
}

impl Body {
    /// `inline` as the row brought it (empty when the body was too long to come with it) for a
    /// body of `length` bytes of which `wanted` are read.
    fn new(inline: Bytes, length: Option<usize>, wanted: usize) -> Body {
        if wanted > 0 && length.unwrap_or(0) > inline.len() {
            return Body::Long { length, wanted };
        }
        Body::Read(inline.slice(..wanted.min(inline.len())))
    }

    /// The body of the message `id` (`column` is `body` or `response_body`).
    async fn of_message(self, c: &impl GenericClient, column: &str, id: &str) -> Result<Bytes> {
        match self {
            Body::Read(body) => Ok(body),
            Body::Long { length, wanted } => listed_body_value(c, (column, id), Bytes::new(), length, wanted).await,
        }
    }

    /// The response body of the log entry `seq`.
    async fn of_log(self, c: &impl GenericClient, seq: i64) -> Result<Bytes> {
        let wanted = match self {
            Body::Read(body) => return Ok(body),
            Body::Long { wanted, .. } => wanted,
        };
        let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
        let row = c
            .query_opt("SELECT substring(response_body FROM 1 FOR $2) FROM logs WHERE seq = $1", &[&seq, &wanted])
            .await?;
        let value: Option<Vec<u8>> = row.map(|row| row.try_get(0)).transpose()?.flatten();
        Ok(value.map(Bytes::from).unwrap_or_default())
    }
}

/// A message decoded for a page of log entries, its body not read yet when long.
struct ListedMessage {
    message: Message,
    body: Body,
    /// The id as stored, to read a long body by.
    id: String,
}

/// A log entry's message: decoded already for an earlier entry of the page (its index among
/// the page's [`ListedMessage`]s), or just now.
enum Decoded {
    Shared(usize),
    New(Box<Message>),
}

/// A log entry taken on a page; `message` indexes the page's [`ListedMessage`]s.
struct ListedEntry {
    message: usize,
    seq: i64,
    time: i64,
    state: LogState,
    error: Option<String>,
    next_delivery_time: Option<i64>,
    response: Option<(AttemptResponse, Body)>,
}

pub async fn list_logs(
    c: &impl GenericClient,
    user_id: &str,
    filter: &MessageFilter,
    page: &PageRequest,
) -> Result<Page<LogEntry>> {
    let mut sql = SqlFilter::new("l.user_id = ?", user_id.to_string());
    sql.push_in("l.message_id", &filter.message_ids);
    let message_level = MessageFilter { message_ids: Vec::new(), from_ms: None, to_ms: None, ..filter.clone() };
    message_filter(&mut sql, &message_level, "m", None);
    let states: Vec<i64> = filter.states.iter().map(|state| state.code()).collect();
    sql.push_in("l.state", &states);
    if let Some(from) = filter.from_ms {
        sql.push("l.time >= ?", [param(from)]);
    }
    if let Some(to) = filter.to_ms {
        sql.push("l.time <= ?", [param(to)]);
    }
    let order = paginate(&mut sql, page, "l.time", "l.seq", true)?;
    // The message's own last response is not shown in a log entry: the entry has its own.
    let query = format!(
        "SELECT {}, l.seq, l.time, l.state, l.error, l.next_delivery_time, l.response_status, l.response_headers,
            {}, octet_length(l.response_body)::BIGINT, coalesce(octet_length(l.response_headers), 0)::BIGINT
         FROM logs l JOIN messages m ON m.id = l.message_id WHERE {} {order}",
        listed_message_columns("m", false),
        listed_body("l.response_body"),
        sql.clause()
    );
    let mut rows = Box::pin(c.query_raw(query.as_str(), &sql.params()).await?);
    let mut fill = PageFill::new(page);
    let mut messages: Vec<ListedMessage> = Vec::new();
    let mut entries: Vec<ListedEntry> = Vec::new();
    let mut cursor = None;
    // Entries of one message share one decoded copy of it (body included), however they
    // interleave with other messages' entries on the page: its index and the body bytes read.
    let mut decoded: HashMap<String, (usize, usize)> = HashMap::new();
    let base = LISTED_MESSAGE_COLUMN_COUNT;
    while let Some(row) = rows.try_next().await? {
        let (seq, time): (i64, i64) = (row.try_get(base)?, row.try_get(base + 1)?);
        let lengths = ListedLengths::from_row(&row, MESSAGE_COLUMN_COUNT)?;
        let (message, body_bytes) = match decoded.get(&lengths.id) {
            Some(&(index, body_bytes)) => (Decoded::Shared(index), body_bytes),
            None => {
                let message = message_from_row(&row, 0)?;
                let body_bytes = body_wanted(&message, lengths.body, page.body_limit);
                (Decoded::New(Box::new(message)), body_bytes)
            }
        };
        let response_length = row.try_get::<_, Option<i64>>(base + 8)?.map(|length| length.max(0) as usize);
        let response_bytes = wanted(response_length, page.body_limit);
        let headers_bytes = row.try_get::<_, i64>(base + 9)?.max(0) as usize;
        if !fill.take(body_bytes + response_bytes + lengths.other + headers_bytes) {
            cursor = entries.last().map(|entry| format!("{}-{}", entry.time, entry.seq));
            break;
        }
        let message = match message {
            Decoded::Shared(index) => index,
            Decoded::New(mut message) => {
                let inline = std::mem::take(&mut message.body);
                let body = Body::new(inline, lengths.body, body_bytes);
                decoded.insert(lengths.id.clone(), (messages.len(), body_bytes));
                messages.push(ListedMessage { message: *message, body, id: lengths.id });
                messages.len() - 1
            }
        };
        let response = response_from_row(&row, base + 5, None)?.map(|mut response| {
            let inline = std::mem::take(&mut response.body);
            (response, Body::new(inline, response_length, response_bytes))
        });
        let state: i64 = row.try_get(base + 2)?;
        entries.push(ListedEntry {
            message,
            seq,
            time,
            state: LogState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("log state {state}")))?,
            error: row.try_get(base + 3)?,
            next_delivery_time: row.try_get(base + 4)?,
            response,
        });
    }
    // The rest of the rows are not read; the long bodies are, now that the connection is free.
    drop(rows);
    let mut shared = Vec::with_capacity(messages.len());
    for ListedMessage { mut message, body, id } in messages {
        message.body = body.of_message(c, "body", &id).await?;
        shared.push(Arc::new(message));
    }
    let mut listed = Vec::with_capacity(entries.len());
    for entry in entries {
        let response = match entry.response {
            Some((mut response, body)) => {
                response.body = body.of_log(c, entry.seq).await?;
                Some(response)
            }
            None => None,
        };
        let message = shared.get(entry.message).ok_or_else(|| StoreError::Corrupt("listed message".into()))?;
        listed.push(LogEntry {
            time: entry.time,
            state: entry.state,
            error: entry.error,
            next_delivery_time: entry.next_delivery_time,
            response,
            message: Arc::clone(message),
        });
    }
    Ok(fill.page(listed, cursor))
}

pub async fn list_dlq(
    c: &impl GenericClient,
    user_id: &str,
    filter: &MessageFilter,
    page: &PageRequest,
) -> Result<Page<Message>> {
    let mut sql = SqlFilter::new("m.user_id = ?", user_id.to_string());
    sql.push_raw("m.dlq_id IS NOT NULL");
    message_filter(&mut sql, filter, "m", Some("m.dlq_at"));
    let order = paginate(&mut sql, page, "m.dlq_at", "m.id", false)?;
    let query = format!(
        "SELECT {}, m.dlq_at FROM messages m WHERE {} {order}",
        listed_message_columns("m", true),
        sql.clause()
    );
    let mut rows = Box::pin(c.query_raw(query.as_str(), &sql.params()).await?);
    let mut fill = PageFill::new(page);
    // Each taken message with its body and response body, and its id as stored.
    let mut taken: Vec<(Message, Body, Option<Body>, String)> = Vec::new();
    let mut last_key = None;
    let mut cursor = None;
    while let Some(row) = rows.try_next().await? {
        let mut message = message_from_row(&row, 0)?;
        let lengths = ListedLengths::from_row(&row, MESSAGE_COLUMN_COUNT)?;
        let body_bytes = body_wanted(&message, lengths.body, page.body_limit);
        let response_bytes = wanted(lengths.response_body, page.body_limit);
        if !fill.take(body_bytes + response_bytes + lengths.other) {
            cursor = last_key.map(|(dlq_at, id): (i64, MessageId)| format!("{dlq_at}-{id}"));
            break;
        }
        let body = Body::new(std::mem::take(&mut message.body), lengths.body, body_bytes);
        let response = message.last_response.as_mut().map(|response| {
            let inline = std::mem::take(&mut response.body);
            Body::new(inline, lengths.response_body, response_bytes)
        });
        last_key = Some((row.try_get(LISTED_MESSAGE_COLUMN_COUNT)?, message.id));
        taken.push((message, body, response, lengths.id));
    }
    // The rest of the rows are not read; the long bodies are, now that the connection is free.
    drop(rows);
    let mut messages = Vec::with_capacity(taken.len());
    for (mut message, body, response, id) in taken {
        message.body = body.of_message(c, "body", &id).await?;
        if let (Some(last_response), Some(body)) = (message.last_response.as_mut(), response) {
            last_response.body = body.of_message(c, "response_body", &id).await?;
        }
        messages.push(message);
    }
    Ok(fill.page(messages, cursor))
}
