//! Schedules: the writer's operations (upsert keeping creation time and pause, pause, delete,
//! and ticks applied with a compare-and-set on the tick they fire) and the reads.

use super::client::GenericClient;
use super::listing::PageFill;
use super::ops;
use super::query::{SqlFilter, paginate};
use super::rows::{headers_json, listed_body};
use super::writer::Context;
use crate::batch::Effects;
use crate::error::{Result, StoreError};
use crate::model::*;
use bytes::Bytes;
use futures_util::TryStreamExt;
use tern_core::{MessageId, MessageState};
use tokio_postgres::Row;

const COLUMNS: &str = "id, user_id, cron, destination, queue_name, headers, body, caller_ip, created_at, paused,
    next_tick_at, last_tick_at, last_message_ids, error";

/// The states of the last tick's messages that are still stored, as a JSON array of `[id,
/// state code]` in the order of `last_message_ids`: read with the schedule, by the messages'
/// primary key.
const LAST_STATES: &str = "(SELECT coalesce(json_agg(json_build_array(j.value, m.state) ORDER BY j.n), '[]')::TEXT
    FROM json_array_elements_text(s.last_message_ids::JSON) WITH ORDINALITY j(value, n)
    JOIN messages m ON m.id = j.value)";

fn from_row(row: &Row) -> Result<ScheduleRecord> {
    let headers: String = row.try_get(5)?;
    // `NULL` only in a listing, which reads a long body on its own.
    let body: Option<Vec<u8>> = row.try_get(6)?;
    let last: Option<String> = row.try_get(12)?;
    let last_message_ids = match last {
        Some(json) => serde_json::from_str::<Vec<String>>(&json)?
            .iter()
            .map(|id| id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}"))))
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    Ok(ScheduleRecord {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        cron: row.try_get(2)?,
        destination: row.try_get(3)?,
        queue_name: row.try_get(4)?,
        headers: serde_json::from_str(&headers)?,
        body: body.map(Bytes::from).unwrap_or_default(),
        caller_ip: row.try_get(7)?,
        created_at: row.try_get(8)?,
        paused: row.try_get(9)?,
        next_tick_at: row.try_get(10)?,
        last_tick_at: row.try_get(11)?,
        last_message_ids,
        error: row.try_get(13)?,
    })
}

fn ids_json(ids: &[MessageId]) -> String {
    serde_json::to_string(&ids.iter().map(ToString::to_string).collect::<Vec<_>>()).expect("ids serialise")
}

async fn exists(c: &impl GenericClient, user_id: &str, id: &str) -> Result<bool> {
    Ok(c.query_opt("SELECT 1 FROM schedules WHERE user_id = $1 AND id = $2", &[&user_id, &id]).await?.is_some())
}

pub async fn upsert(
    c: &impl GenericClient,
    schedule: &ScheduleRecord,
    limit: usize,
    dedup: Option<&DedupClaim>,
) -> Result<ScheduleUpsert> {
    // The messages' dedup table holds schedule ids too: the keys are made apart (the engine's
    // `schedule_dedup_key`), and expire and are purged alike. A schedule deleted since is no
    // answer: the creation goes ahead and claims the key anew.
    if let Some(dedup) = dedup
        && let Some(holder) = ops::claimed_dedup(c, &schedule.user_id, &dedup.key, schedule.created_at).await?
        && exists(c, &schedule.user_id, &holder).await?
    {
        return Ok(ScheduleUpsert::Deduplicated(holder));
    }
    if !exists(c, &schedule.user_id, &schedule.id).await? {
        // Kept by triggers (schema.rs): counting the rows would make creation quadratic. The
        // count is read through an upsert of its row, which locks it until the commit: nodes
        // creating one user's schedules at once take turns, so none passes the limit.
        let count: i64 = c
            .query_one(
                "INSERT INTO schedule_counts (user_id, count) VALUES ($1, 0)
                 ON CONFLICT (user_id) DO UPDATE SET count = schedule_counts.count RETURNING count",
                &[&schedule.user_id],
            )
            .await?
            .try_get(0)?;
        if count.max(0) as usize >= limit {
            return Ok(ScheduleUpsert::LimitReached);
        }
    }
    // An overwrite replaces every field but the creation time and the pause (spec §14). Whether
    // the row was inserted (`xmax = 0`) answers Created or Replaced, even when another node
    // created the schedule since it was looked up.
    let created: bool = c
        .query_one(
            "INSERT INTO schedules (user_id, id, cron, destination, queue_name, headers, body, caller_ip, created_at,
                paused, next_tick_at, last_tick_at, last_message_ids, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL)
             ON CONFLICT (user_id, id) DO UPDATE SET cron = excluded.cron, destination = excluded.destination,
                queue_name = excluded.queue_name, headers = excluded.headers, body = excluded.body,
                caller_ip = excluded.caller_ip, next_tick_at = excluded.next_tick_at, error = NULL
             RETURNING (xmax = 0)",
            &[
                &schedule.user_id,
                &schedule.id,
                &schedule.cron,
                &schedule.destination,
                &schedule.queue_name,
                &headers_json(&schedule.headers).unwrap_or_else(|| "[]".into()),
                &schedule.body.as_ref(),
                &schedule.caller_ip,
                &schedule.created_at,
                &schedule.paused,
                &schedule.next_tick_at,
            ],
        )
        .await?
        .try_get(0)?;
    if let Some(dedup) = dedup {
        ops::claim_dedup(c, &schedule.user_id, dedup, &schedule.id).await?;
    }
    Ok(if created { ScheduleUpsert::Created } else { ScheduleUpsert::Replaced })
}

pub async fn delete(c: &impl GenericClient, user_id: &str, id: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM schedules WHERE user_id = $1 AND id = $2", &[&user_id, &id]).await? > 0)
}

pub async fn set_paused(
    c: &impl GenericClient,
    user_id: &str,
    id: &str,
    paused: bool,
    next_tick_at: Option<i64>,
) -> Result<bool> {
    Ok(c.execute(
        "UPDATE schedules SET paused = $3, next_tick_at = $4 WHERE user_id = $1 AND id = $2",
        &[&user_id, &id, &paused, &next_tick_at],
    )
    .await?
        > 0)
}

/// Applies each tick whose schedule still waits for it, with its messages. The tick is a
/// condition of the update: when two nodes fire one tick at once, the second update waits for
/// the first's commit, then finds `next_tick_at` moved on and changes nothing, so only one
/// node stores the tick's messages.
pub async fn fire(context: Context<'_>, fires: Vec<ScheduleFire>, effects: &mut Effects) -> Result<Vec<bool>> {
    let mut applied = Vec::with_capacity(fires.len());
    for fire in fires {
        let ids: Vec<MessageId> = fire.messages.iter().map(|message| message.id).collect();
        let updated = context
            .tx
            .execute(
                "UPDATE schedules SET next_tick_at = $4,
                    last_tick_at = CASE WHEN $5::BOOLEAN THEN $3 ELSE last_tick_at END,
                    last_message_ids = CASE WHEN $5::BOOLEAN THEN $6::TEXT ELSE last_message_ids END,
                    error = $7
                 WHERE user_id = $1 AND id = $2 AND NOT paused AND next_tick_at = $3",
                &[
                    &fire.user_id,
                    &fire.id,
                    &fire.tick_at,
                    &fire.next_tick_at,
                    &fire.fired,
                    &ids_json(&ids),
                    &fire.error,
                ],
            )
            .await?;
        if updated == 0 {
            applied.push(false);
            continue;
        }
        if !fire.messages.is_empty() {
            ops::insert_messages(context, fire.messages, effects).await?;
        }
        applied.push(true);
    }
    Ok(applied)
}

fn states_from_row(row: &Row, index: usize) -> Result<Vec<(MessageId, MessageState)>> {
    let json: String = row.try_get(index)?;
    serde_json::from_str::<Vec<(String, i64)>>(&json)?
        .into_iter()
        .map(|(id, state)| {
            let id = id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?;
            let state = MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?;
            Ok((id, state))
        })
        .collect()
}

pub async fn get(c: &impl GenericClient, user_id: &str, id: &str) -> Result<Option<ScheduleWithStates>> {
    let query = format!("SELECT {COLUMNS}, {LAST_STATES} FROM schedules s WHERE user_id = $1 AND id = $2");
    let Some(row) = c.query_opt(&query, &[&user_id, &id]).await? else {
        return Ok(None);
    };
    Ok(Some(ScheduleWithStates { schedule: from_row(&row)?, last_states: states_from_row(&row, 14)? }))
}

/// About how many bytes [`get`] reads for a schedule; `None` when there is none.
pub async fn bytes(c: &impl GenericClient, user_id: &str, id: &str) -> Result<Option<usize>> {
    let row = c
        .query_opt(
            "SELECT octet_length(body)::BIGINT + octet_length(headers) + octet_length(destination) + octet_length(cron)
                + octet_length(id) + coalesce(octet_length(queue_name), 0) + coalesce(octet_length(caller_ip), 0)
                + coalesce(octet_length(last_message_ids), 0) + coalesce(octet_length(error), 0)
             FROM schedules WHERE user_id = $1 AND id = $2",
            &[&user_id, &id],
        )
        .await?;
    let bytes: Option<i64> = row.map(|row| row.try_get(0)).transpose()?;
    Ok(bytes.map(|bytes| bytes.max(0) as usize))
}

/// A page of a user's schedules in creation order (an index range), with their last states;
/// long bodies are read only once the page has taken their row.
pub async fn list(c: &impl GenericClient, user_id: &str, page: &PageRequest) -> Result<Page<ScheduleWithStates>> {
    let mut sql = SqlFilter::new("s.user_id = ?", user_id.to_string());
    let order = paginate(&mut sql, page, "s.created_at", "s.id", false)?;
    let columns = COLUMNS.replacen("body", &listed_body("body"), 1);
    let query = format!(
        "SELECT {columns}, {LAST_STATES}, octet_length(s.body)::BIGINT, octet_length(s.headers)::BIGINT
         FROM schedules s WHERE {} {order}",
        sql.clause()
    );
    // Rows arrive one at a time and reading stops once the page is full, so that the page
    // holds at most its byte budget plus one row.
    let mut rows = Box::pin(c.query_raw(&query, &sql.params()).await?);
    let mut fill = PageFill::new(page);
    let mut schedules: Vec<ScheduleWithStates> = Vec::new();
    let mut long = Vec::new();
    let mut cursor = None;
    while let Some(row) = rows.try_next().await? {
        let (body_length, headers_length): (i64, i64) = (row.try_get(15)?, row.try_get(16)?);
        let body_length = body_length.max(0) as usize;
        if !fill.take(body_length + headers_length.max(0) as usize) {
            cursor = schedules.last().map(|last| format!("{}-{}", last.schedule.created_at, last.schedule.id));
            break;
        }
        let schedule = from_row(&row)?;
        // A body too long to come inline came as `NULL`: schedules show whole bodies.
        if schedule.body.len() != body_length {
            long.push(schedules.len());
        }
        schedules.push(ScheduleWithStates { schedule, last_states: states_from_row(&row, 14)? });
    }
    // The connection answers one statement at a time: long bodies once the rows are done.
    drop(rows);
    for index in long {
        let schedule = &mut schedules[index].schedule;
        schedule.body = long_body(c, user_id, &schedule.id).await?;
    }
    Ok(fill.page(schedules, cursor))
}

/// A schedule's whole body, read on its own (empty if the schedule is gone since).
async fn long_body(c: &impl GenericClient, user_id: &str, id: &str) -> Result<Bytes> {
    let row = c.query_opt("SELECT body FROM schedules WHERE user_id = $1 AND id = $2", &[&user_id, &id]).await?;
    let body: Option<Vec<u8>> = row.map(|row| row.try_get(0)).transpose()?;
    Ok(body.map(Bytes::from).unwrap_or_default())
}

pub async fn due(c: &impl GenericClient, now: i64, limit: usize) -> Result<Vec<ScheduleRecord>> {
    let query = format!(
        "SELECT {COLUMNS} FROM schedules WHERE NOT paused AND next_tick_at IS NOT NULL AND next_tick_at <= $1
         ORDER BY next_tick_at LIMIT $2"
    );
    c.query(&query, &[&now, &(limit as i64)]).await?.iter().map(from_row).collect()
}

pub async fn next_tick(c: &impl GenericClient) -> Result<Option<i64>> {
    Ok(c.query_one("SELECT min(next_tick_at) FROM schedules WHERE NOT paused AND next_tick_at IS NOT NULL", &[])
        .await?
        .try_get(0)?)
}
