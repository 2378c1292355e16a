//! What the scheduler needs at start: every unfinished message, and the finished queue
//! messages whose callbacks still run. Cancels that waited for an attempt cut off by a crash
//! are finished here.

use super::writer::Effects;
use crate::error::{Result, StoreError};
use crate::model::*;
use rusqlite::{Connection, params};
use tern_core::{FlowControl, LogState, MessageId, MessageSpec, MessageState};

fn parse_id(text: &str) -> Result<MessageId> {
    text.parse().map_err(|()| StoreError::Corrupt(format!("message id {text:?}")))
}

pub fn scan(connection: &Connection, now: i64, effects: &mut Effects) -> Result<()> {
    let started = std::time::Instant::now();
    let waiting: Vec<(String, String)> = connection
        .prepare("SELECT id, user_id FROM messages WHERE state = ?1")?
        .query_map([MessageState::CancelRequested.code()], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, user_id) in waiting {
        connection.execute(
            "UPDATE messages SET state = ?2, finished_at = ?3, due_at = NULL WHERE id = ?1",
            params![id, MessageState::Canceled.code(), now],
        )?;
        connection.execute(
            "INSERT INTO logs (user_id, message_id, time, state) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, id, now, LogState::Canceled.code()],
        )?;
    }

    // A finished queue message keeps its place while one of its callbacks is unfinished.
    let mut settling = connection.prepare(
        "SELECT DISTINCT s.id, s.user_id, s.queue_name, s.seq FROM messages c JOIN messages s ON s.id = c.source_id
         WHERE c.state < 3 AND c.source_id IS NOT NULL AND s.state >= 3 AND s.queue_name IS NOT NULL",
    )?;
    let mut rows = settling.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        effects.changes.push(Change::Settling {
            id: parse_id(&id)?,
            user_id: row.get(1)?,
            queue_name: row.get(2)?,
            seq: row.get::<_, i64>(3)? as u64,
        });
    }

    // Sized once (the partial index counts them cheaply): the list grows to a million
    // entries and more after a long outage, and growing it step by step copies it each time.
    let count: i64 = connection.query_row("SELECT count(*) FROM messages WHERE state < 3", [], |row| row.get(0))?;
    effects.changes.reserve(count as usize);
    scan_unfinished(connection, effects)?;
    tracing::info!(changes = effects.changes.len(), micros = started.elapsed().as_micros() as u64, "recovery scan");
    Ok(())
}

/// Every unfinished message that waits for an attempt, in enqueue order.
fn scan_unfinished(connection: &Connection, effects: &mut Effects) -> Result<()> {
    let mut unfinished = connection.prepare(
        "SELECT id, user_id, due_at, seq, queue_name, source_id, flow_control_key, spec FROM messages
         WHERE state < 3 AND due_at IS NOT NULL ORDER BY seq",
    )?;
    let mut rows = unfinished.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let source: Option<String> = row.get(5)?;
        let flow_key: Option<String> = row.get(6)?;
        let flow_control: Option<FlowControl> = match flow_key {
            Some(_) => serde_json::from_str::<MessageSpec>(&row.get::<_, String>(7)?)?.flow_control,
            None => None,
        };
        effects.changes.push(Change::Scheduled(Scheduled {
            id: parse_id(&id)?,
            user_id: row.get(1)?,
            due_at: row.get(2)?,
            seq: row.get::<_, i64>(3)? as u64,
            queue_name: row.get(4)?,
            source: source.as_deref().map(parse_id).transpose()?,
            flow_control,
            is_new: false,
            message: None,
        }));
    }
    Ok(())
}

/// The next enqueue sequence number.
pub fn next_seq(connection: &Connection) -> Result<u64> {
    let max: Option<i64> = connection.query_row("SELECT max(seq) FROM messages", [], |row| row.get(0))?;
    Ok(max.map_or(0, |max| max as u64 + 1))
}
