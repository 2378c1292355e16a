//! Schedules: the writer's operations (upsert keeping creation time and pause, pause, delete,
//! and ticks applied with a compare-and-set on the tick they fire) and the reads.

use super::listing::PageFill;
use super::ops;
use super::query::{SqlFilter, paginate};
use super::rows::{headers_json, listed_body, listed_body_value};
use super::writer::{Context, Effects};
use crate::error::{Result, StoreError};
use crate::model::*;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use tern_core::{MessageId, MessageState};

const COLUMNS: &str = "id, user_id, cron, destination, queue_name, headers, body, caller_ip, created_at, paused,
    next_tick_at, last_tick_at, last_message_ids, error";

/// The states of the last tick's messages that are still stored, as a JSON array of `[id,
/// state code]`: read with the schedule, by the messages' primary key.
const LAST_STATES: &str = "(SELECT json_group_array(json_array(j.value, m.state))
    FROM json_each(s.last_message_ids) j JOIN messages m ON m.id = j.value)";

fn from_row(row: &Row<'_>) -> Result<ScheduleRecord> {
    let headers: String = row.get(5)?;
    // `NULL` only in a listing, which reads a long body on its own.
    let body: Option<Vec<u8>> = row.get(6)?;
    let last: Option<String> = row.get(12)?;
    let last_message_ids = match last {
        Some(json) => serde_json::from_str::<Vec<String>>(&json)?
            .iter()
            .map(|id| id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}"))))
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    Ok(ScheduleRecord {
        id: row.get(0)?,
        user_id: row.get(1)?,
        cron: row.get(2)?,
        destination: row.get(3)?,
        queue_name: row.get(4)?,
        headers: serde_json::from_str(&headers)?,
        body: body.map(Bytes::from).unwrap_or_default(),
        caller_ip: row.get(7)?,
        created_at: row.get(8)?,
        paused: row.get(9)?,
        next_tick_at: row.get(10)?,
        last_tick_at: row.get(11)?,
        last_message_ids,
        error: row.get(13)?,
    })
}

fn ids_json(ids: &[MessageId]) -> String {
    serde_json::to_string(&ids.iter().map(ToString::to_string).collect::<Vec<_>>()).expect("ids serialise")
}

fn exists(connection: &Connection, user_id: &str, id: &str) -> Result<bool> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM schedules WHERE user_id = ?1 AND id = ?2")?
        .query_row(params![user_id, id], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn upsert(
    connection: &Connection,
    schedule: &ScheduleRecord,
    limit: usize,
    dedup: Option<&DedupClaim>,
) -> Result<ScheduleUpsert> {
    // The messages' dedup table holds schedule ids too: the keys are made apart (the engine's
    // `schedule_dedup_key`), and expire and are purged alike. A schedule deleted since is no
    // answer: the creation goes ahead and claims the key anew.
    if let Some(dedup) = dedup
        && let Some(holder) = ops::claimed_dedup(connection, &schedule.user_id, &dedup.key, schedule.created_at)?
        && exists(connection, &schedule.user_id, &holder)?
    {
        return Ok(ScheduleUpsert::Deduplicated(holder));
    }
    let exists = exists(connection, &schedule.user_id, &schedule.id)?;
    if !exists {
        // Kept by triggers (schema.rs): counting the rows would make creation quadratic.
        let count: i64 = connection
            .prepare_cached("SELECT count FROM schedule_counts WHERE user_id = ?1")?
            .query_row([&schedule.user_id], |row| row.get(0))
            .optional()?
            .unwrap_or(0);
        if count as usize >= limit {
            return Ok(ScheduleUpsert::LimitReached);
        }
    }
    // An overwrite replaces every field but the creation time and the pause (spec §14).
    connection
        .prepare_cached(
            "INSERT INTO schedules (user_id, id, cron, destination, queue_name, headers, body, caller_ip, created_at,
                paused, next_tick_at, last_tick_at, last_message_ids, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, NULL, NULL)
             ON CONFLICT (user_id, id) DO UPDATE SET cron = excluded.cron, destination = excluded.destination,
                queue_name = excluded.queue_name, headers = excluded.headers, body = excluded.body,
                caller_ip = excluded.caller_ip, next_tick_at = excluded.next_tick_at, error = NULL",
        )?
        .execute(params![
            schedule.user_id,
            schedule.id,
            schedule.cron,
            schedule.destination,
            schedule.queue_name,
            headers_json(&schedule.headers).unwrap_or_else(|| "[]".into()),
            schedule.body.as_ref(),
            schedule.caller_ip,
            schedule.created_at,
            schedule.paused,
            schedule.next_tick_at,
        ])?;
    if let Some(dedup) = dedup {
        ops::claim_dedup(connection, &schedule.user_id, dedup, &schedule.id)?;
    }
    Ok(if exists { ScheduleUpsert::Replaced } else { ScheduleUpsert::Created })
}

pub fn delete(connection: &Connection, user_id: &str, id: &str) -> Result<bool> {
    Ok(connection
        .prepare_cached("DELETE FROM schedules WHERE user_id = ?1 AND id = ?2")?
        .execute(params![user_id, id])?
        > 0)
}

pub fn set_paused(
    connection: &Connection,
    user_id: &str,
    id: &str,
    paused: bool,
    next_tick_at: Option<i64>,
) -> Result<bool> {
    Ok(connection
        .prepare_cached("UPDATE schedules SET paused = ?3, next_tick_at = ?4 WHERE user_id = ?1 AND id = ?2")?
        .execute(params![user_id, id, paused, next_tick_at])?
        > 0)
}

/// Applies each tick whose schedule still waits for it, with its messages.
pub fn fire(context: Context<'_>, fires: Vec<ScheduleFire>, effects: &mut Effects) -> Result<Vec<bool>> {
    let mut applied = Vec::with_capacity(fires.len());
    let Context { connection, scheduling, next_seq } = context;
    for fire in fires {
        let ids: Vec<MessageId> = fire.messages.iter().map(|message| message.id).collect();
        let updated = connection
            .prepare_cached(
                "UPDATE schedules SET next_tick_at = ?4,
                    last_tick_at = CASE WHEN ?5 THEN ?3 ELSE last_tick_at END,
                    last_message_ids = CASE WHEN ?5 THEN ?6 ELSE last_message_ids END,
                    error = ?7
                 WHERE user_id = ?1 AND id = ?2 AND paused = 0 AND next_tick_at = ?3",
            )?
            .execute(params![
                fire.user_id,
                fire.id,
                fire.tick_at,
                fire.next_tick_at,
                fire.fired,
                ids_json(&ids),
                fire.error,
            ])?;
        if updated == 0 {
            applied.push(false);
            continue;
        }
        if !fire.messages.is_empty() {
            let context = Context { connection, scheduling, next_seq: &mut *next_seq };
            ops::insert_messages(context, fire.messages, effects)?;
        }
        applied.push(true);
    }
    Ok(applied)
}

fn states_from_row(row: &Row<'_>, index: usize) -> Result<Vec<(MessageId, MessageState)>> {
    let json: String = row.get(index)?;
    serde_json::from_str::<Vec<(String, i64)>>(&json)?
        .into_iter()
        .map(|(id, state)| {
            let id = id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?;
            let state = MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?;
            Ok((id, state))
        })
        .collect()
}

pub fn get(connection: &Connection, user_id: &str, id: &str) -> Result<Option<ScheduleWithStates>> {
    connection
        .prepare_cached(&format!("SELECT {COLUMNS}, {LAST_STATES} FROM schedules s WHERE user_id = ?1 AND id = ?2"))?
        .query_row(params![user_id, id], |row| {
            Ok(from_row(row)
                .and_then(|schedule| Ok(ScheduleWithStates { schedule, last_states: states_from_row(row, 14)? })))
        })
        .optional()?
        .transpose()
}

/// About how many bytes [`get`] reads for a schedule; `None` when there is none.
pub fn bytes(connection: &Connection, user_id: &str, id: &str) -> Result<Option<usize>> {
    let bytes: Option<i64> = connection
        .prepare_cached(
            "SELECT length(body) + length(headers) + length(destination) + length(cron) + length(id)
                + coalesce(length(queue_name), 0) + coalesce(length(caller_ip), 0)
                + coalesce(length(last_message_ids), 0) + coalesce(length(error), 0)
             FROM schedules WHERE user_id = ?1 AND id = ?2",
        )?
        .query_row(params![user_id, id], |row| row.get(0))
        .optional()?;
    Ok(bytes.map(|bytes| bytes.max(0) as usize))
}

/// A page of a user's schedules in creation order (an index range), with their last states;
/// long bodies are read only once the page has taken their row.
pub fn list(connection: &Connection, user_id: &str, page: &PageRequest) -> Result<Page<ScheduleWithStates>> {
    let mut sql = SqlFilter::new("s.user_id = ?", user_id.to_string());
    let order = paginate(&mut sql, page, "s.created_at", "s.id", false)?;
    let columns = COLUMNS.replacen("body", &listed_body("body"), 1);
    let query = format!(
        "SELECT {columns}, {LAST_STATES}, s.rowid, length(s.body), length(s.headers) FROM schedules s
         WHERE {} {order}",
        sql.clause()
    );
    let mut statement = connection.prepare(&query)?;
    let mut rows = statement.query(params_from_iter(sql.params()))?;
    let mut fill = PageFill::new(page);
    let mut schedules: Vec<ScheduleWithStates> = Vec::new();
    let mut cursor = None;
    while let Some(row) = rows.next()? {
        let (rowid, body_length, headers_length): (i64, i64, i64) = (row.get(15)?, row.get(16)?, row.get(17)?);
        let body_length = body_length.max(0) as usize;
        if !fill.take(body_length + headers_length.max(0) as usize) {
            cursor = schedules.last().map(|last| format!("{}-{}", last.schedule.created_at, last.schedule.id));
            break;
        }
        let mut schedule = from_row(row)?;
        let inline = std::mem::take(&mut schedule.body);
        schedule.body =
            listed_body_value(connection, ("schedules", "body", rowid), inline, Some(body_length), body_length)?;
        schedules.push(ScheduleWithStates { schedule, last_states: states_from_row(row, 14)? });
    }
    Ok(fill.page(schedules, cursor))
}

pub fn due(connection: &Connection, now: i64, limit: usize) -> Result<Vec<ScheduleRecord>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE paused = 0 AND next_tick_at IS NOT NULL AND next_tick_at <= ?1
         ORDER BY next_tick_at LIMIT ?2"
    ))?;
    let mut rows = statement.query(params![now, limit as i64])?;
    let mut schedules = Vec::new();
    while let Some(row) = rows.next()? {
        schedules.push(from_row(row)?);
    }
    Ok(schedules)
}

pub fn next_tick(connection: &Connection) -> Result<Option<i64>> {
    Ok(connection
        .prepare_cached("SELECT min(next_tick_at) FROM schedules WHERE paused = 0 AND next_tick_at IS NOT NULL")?
        .query_row([], |row| row.get(0))?)
}
