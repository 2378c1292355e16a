//! The listings of logs and of the DLQ: keyset pages that also end by size. A listing reads
//! row by row; it learns each row's body sizes from the record header first, decides whether
//! the row still fits the page, and only then reads the bodies, and only as far as a trim asks
//! (long bodies through incremental blob I/O). So a page never holds more than its byte budget
//! plus one item, whatever the stored bodies.

use super::query::{SqlFilter, message_filter, paginate};
use super::rows::{
    LISTED_MESSAGE_COLUMN_COUNT, ListedLengths, MESSAGE_COLUMN_COUNT, listed_body, listed_body_value,
    listed_message_columns, message_from_row, response_from_row, wanted,
};
use crate::error::{Result, StoreError};
use crate::model::*;
use rusqlite::{Connection, params_from_iter};
use std::collections::HashMap;
use std::sync::Arc;
use tern_core::{LogState, Message};

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

/// A log entry's message: decoded already for an earlier entry of the page, or just now (its
/// long body not read yet).
enum Decoded {
    Shared(Arc<Message>),
    New(Box<Message>),
}

pub fn list_logs(
    connection: &Connection,
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
        sql.push("l.time >= ?", [rusqlite::types::Value::Integer(from)]);
    }
    if let Some(to) = filter.to_ms {
        sql.push("l.time <= ?", [rusqlite::types::Value::Integer(to)]);
    }
    let order = paginate(&mut sql, page, "l.time", "l.seq", true)?;
    // The message's own last response is not shown in a log entry: the entry has its own.
    let query = format!(
        "SELECT {}, l.seq, l.time, l.state, l.error, l.next_delivery_time, l.response_status, l.response_headers,
            {}, length(l.response_body), coalesce(length(l.response_headers), 0)
         FROM logs l JOIN messages m ON m.id = l.message_id WHERE {} {order}",
        listed_message_columns("m", false),
        listed_body("l.response_body"),
        sql.clause()
    );
    let mut statement = connection.prepare(&query)?;
    let mut rows = statement.query(params_from_iter(sql.params()))?;
    let mut fill = PageFill::new(page);
    let mut entries: Vec<LogEntry> = Vec::new();
    let mut cursor = None;
    let mut last_key = None;
    // Entries of one message share one decoded copy of it (body included), however they
    // interleave with other messages' entries on the page.
    let mut decoded: HashMap<String, Arc<Message>> = HashMap::new();
    let base = LISTED_MESSAGE_COLUMN_COUNT;
    while let Some(row) = rows.next()? {
        let (seq, time): (i64, i64) = (row.get(base)?, row.get(base + 1)?);
        let id: String = row.get(0)?;
        let lengths = ListedLengths::from_row(row, MESSAGE_COLUMN_COUNT)?;
        let (message, body_bytes) = match decoded.get(&id) {
            Some(message) => (Decoded::Shared(Arc::clone(message)), message.body.len()),
            None => {
                let message = message_from_row(row, 0)?;
                let body_bytes = body_wanted(&message, lengths.body, page.body_limit);
                (Decoded::New(Box::new(message)), body_bytes)
            }
        };
        let response_length = row.get::<_, Option<i64>>(base + 8)?.map(|length| length.max(0) as usize);
        let response_bytes = wanted(response_length, page.body_limit);
        let headers_bytes = row.get::<_, i64>(base + 9)?.max(0) as usize;
        if !fill.take(body_bytes + response_bytes + lengths.other + headers_bytes) {
            cursor = last_key.map(|(time, seq)| format!("{time}-{seq}"));
            break;
        }
        let message = match message {
            Decoded::Shared(message) => message,
            Decoded::New(mut message) => {
                let body = std::mem::take(&mut message.body);
                let place = ("messages", "body", lengths.rowid);
                message.body = listed_body_value(connection, place, body, lengths.body, body_bytes)?;
                let message = Arc::new(*message);
                decoded.insert(id, Arc::clone(&message));
                message
            }
        };
        let mut response = response_from_row(row, base + 5, None)?;
        if let Some(response) = response.as_mut() {
            let body = std::mem::take(&mut response.body);
            let place = ("logs", "response_body", seq);
            response.body = listed_body_value(connection, place, body, response_length, response_bytes)?;
        }
        let state: i64 = row.get(base + 2)?;
        entries.push(LogEntry {
            time,
            state: LogState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("log state {state}")))?,
            error: row.get(base + 3)?,
            next_delivery_time: row.get(base + 4)?,
            response,
            message,
        });
        last_key = Some((time, seq));
    }
    Ok(fill.page(entries, cursor))
}

pub fn list_dlq(
    connection: &Connection,
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
    let mut statement = connection.prepare(&query)?;
    let mut rows = statement.query(params_from_iter(sql.params()))?;
    let mut fill = PageFill::new(page);
    let mut messages: Vec<Message> = Vec::new();
    let mut last_key = None;
    let mut cursor = None;
    while let Some(row) = rows.next()? {
        let mut message = message_from_row(row, 0)?;
        let lengths = ListedLengths::from_row(row, MESSAGE_COLUMN_COUNT)?;
        let body_bytes = body_wanted(&message, lengths.body, page.body_limit);
        let response_bytes = wanted(lengths.response_body, page.body_limit);
        if !fill.take(body_bytes + response_bytes + lengths.other) {
            cursor = last_key.map(|(dlq_at, id): (i64, tern_core::MessageId)| format!("{dlq_at}-{id}"));
            break;
        }
        let body = std::mem::take(&mut message.body);
        message.body =
            listed_body_value(connection, ("messages", "body", lengths.rowid), body, lengths.body, body_bytes)?;
        if let Some(response) = message.last_response.as_mut() {
            let body = std::mem::take(&mut response.body);
            let place = ("messages", "response_body", lengths.rowid);
            response.body = listed_body_value(connection, place, body, lengths.response_body, response_bytes)?;
        }
        last_key = Some((row.get(LISTED_MESSAGE_COLUMN_COUNT)?, message.id));
        messages.push(message);
    }
    Ok(fill.page(messages, cursor))
}
