//! Waiters and run-scoped events on SQLite: registering a wait (consuming an event that came
//! first), notifying, expiring deadlines — each resolution publishing the wait step's result
//! to its run in the same commit — and the reads behind `GET /v2/waiters`.

use super::writer::{Context, Effects};
use super::{ops, run_records};
use crate::error::Result;
use crate::model::{Change, InsertOutcome, NewMessage};
use crate::workflows::{Event, NewWaiter, Notified, NotifyOutcome, RunLimits, WaitOutcome, WaiterView};
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tern_core::workflow::{RunState, wait_step_body};
use tern_core::{MessageId, MessageSpec};

/// A waiter read back for its resolution.
struct Stored {
    key: i64,
    run_key: i64,
    user_id: String,
    event_id: String,
    step: String,
    on_event: String,
    on_timeout: String,
    view: String,
}

const STORED_COLUMNS: &str = "waiter_key, run_key, user_id, event_id, step, on_event, on_timeout, view";

fn stored_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        key: row.get(0)?,
        run_key: row.get(1)?,
        user_id: row.get(2)?,
        event_id: row.get(3)?,
        step: row.get(4)?,
        on_event: row.get(5)?,
        on_timeout: row.get(6)?,
        view: row.get(7)?,
    })
}

/// The wait a resolution ends: whose, in which run (and its limits), on which event, and the
/// step waiting.
struct Wait<'a> {
    user_id: &'a str,
    run_key: i64,
    run_limits: RunLimits,
    event_id: &'a str,
    step: &'a str,
}

/// Publishes a wait step's result to its run: the event's `data`, or (without it) the timeout.
/// Returns the message's id, and why it could not be stored (its run has ended).
fn resolve(
    context: Context<'_>,
    wait: Wait<'_>,
    spec: &str,
    data: Option<&[u8]>,
    now: i64,
    effects: &mut Effects,
) -> Result<(MessageId, Option<String>)> {
    let Wait { user_id, run_key, run_limits, event_id, step } = wait;
    let step: serde_json::Value = serde_json::from_str(step)?;
    let spec: MessageSpec = serde_json::from_str(spec)?;
    let run_id = spec.workflow.as_ref().map(|link| link.run_id.clone()).unwrap_or_default();
    let message = NewMessage {
        id: MessageId::generate(),
        user_id: user_id.to_string(),
        spec,
        body: Bytes::from(wait_step_body(&step, event_id, data, data.is_none())),
        created_at: now,
        due_at: now,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: Some(run_limits),
    };
    let id = message.id;
    let outcome = ops::insert_into_run(context, vec![message], Some(run_key), effects)?;
    // The result is read from the store when it is due: a notify waking many waiters holds one
    // event body at a time, not one per waiter until the commit.
    if let Some(Change::Scheduled(scheduled)) = effects.changes.last_mut()
        && scheduled.id == id
    {
        scheduled.message = None;
    }
    let error = match outcome.first() {
        Some(InsertOutcome::Created) => None,
        Some(InsertOutcome::RunStepLimit | InsertOutcome::RunByteLimit) => {
            Some(format!("workflow run {run_id} cannot take more records"))
        }
        _ => Some(format!("workflow run {run_id} has ended")),
    };
    Ok((id, error))
}

pub fn add_waiter(context: Context<'_>, waiter: &NewWaiter, effects: &mut Effects) -> Result<WaitOutcome> {
    let Context { connection, scheduling, next_seq } = context;
    let run = run_records::latest_run(connection, &waiter.user_id, &waiter.run_id)?;
    let Some((run_key, RunState::RunStarted)) = run else {
        return Ok(WaitOutcome::RunNotActive);
    };
    let waiting: i64 = connection
        .prepare_cached("SELECT count(*) FROM workflow_waiters WHERE user_id = ?1")?
        .query_row([&waiter.user_id], |row| row.get(0))?;
    if waiting as usize >= waiter.max_waiters {
        return Ok(WaitOutcome::TooManyWaiters);
    }
    let on_event = serde_json::to_string(&waiter.on_event)?;
    // A webhook's call, which came without a token, is only for a wait for a webhook.
    let event: Option<(i64, Vec<u8>)> = connection
        .prepare_cached(
            "SELECT event_key, data FROM workflow_events WHERE run_key = ?1 AND event_id = ?2 AND webhook <= ?3
             ORDER BY event_key LIMIT 1",
        )?
        .query_row(params![run_key, waiter.event_id, waiter.webhook], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((key, data)) = event {
        connection.prepare_cached("DELETE FROM workflow_events WHERE event_key = ?1")?.execute([key])?;
        let context = Context { connection, scheduling, next_seq };
        let wait = Wait {
            user_id: &waiter.user_id,
            run_key,
            run_limits: waiter.run_limits,
            event_id: &waiter.event_id,
            step: &waiter.step,
        };
        let (id, _) = resolve(context, wait, &on_event, Some(&data), waiter.created_at, effects)?;
        return Ok(WaitOutcome::Resolved(id));
    }
    connection
        .prepare_cached(
            "INSERT INTO workflow_waiters (user_id, event_id, run_id, run_key, created_at, deadline, step, on_event,
                on_timeout, view, webhook)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            waiter.user_id,
            waiter.event_id,
            waiter.run_id,
            run_key,
            waiter.created_at,
            waiter.deadline,
            waiter.step,
            on_event,
            serde_json::to_string(&waiter.on_timeout)?,
            serde_json::to_string(&waiter.view)?,
            waiter.webhook,
        ])?;
    Ok(WaitOutcome::Waiting)
}

pub fn notify(
    context: Context<'_>,
    event: &Event,
    now: i64,
    max_stored: usize,
    run_limits: RunLimits,
    effects: &mut Effects,
) -> Result<NotifyOutcome> {
    let Context { connection, scheduling, next_seq } = context;
    let (user_id, event_id, run_id) = (event.user_id.as_str(), event.event_id.as_str(), event.run_id.as_deref());
    let (data, webhook) = (&event.data[..], event.from_webhook);
    // A run-scoped event is for the running run with that id.
    let run_key = match run_id {
        Some(run_id) => match run_records::latest_run(connection, user_id, run_id)? {
            Some((key, RunState::RunStarted)) => Some(key),
            _ => return Ok(NotifyOutcome::RunNotActive),
        },
        None => None,
    };
    let waiters: Vec<Stored> = connection
        .prepare_cached(&format!(
            "SELECT {STORED_COLUMNS} FROM workflow_waiters INDEXED BY workflow_waiters_event
             WHERE user_id = ?1 AND event_id = ?2 AND (?3 IS NULL OR run_key = ?3) AND webhook >= ?4
             ORDER BY waiter_key"
        ))?
        .query_map(params![user_id, event_id, run_key, webhook], stored_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    if waiters.is_empty() {
        let Some(run_key) = run_key else { return Ok(NotifyOutcome::Woke(Vec::new())) };
        // Counted by kind: webhook calls cannot crowd out the run's own notifies.
        let stored: i64 = connection
            .prepare_cached("SELECT count(*) FROM workflow_events WHERE run_key = ?1 AND webhook = ?2")?
            .query_row(params![run_key, webhook], |row| row.get(0))?;
        if stored as usize >= max_stored {
            return Ok(NotifyOutcome::TooManyStored);
        }
        connection
            .prepare_cached(
                "INSERT INTO workflow_events (run_key, event_id, created_at, data, webhook) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![run_key, event_id, now, data, webhook])?;
        return Ok(NotifyOutcome::Stored);
    }
    let mut woke = Vec::with_capacity(waiters.len());
    for waiter in waiters {
        connection.prepare_cached("DELETE FROM workflow_waiters WHERE waiter_key = ?1")?.execute([waiter.key])?;
        let context = Context { connection, scheduling, next_seq: &mut *next_seq };
        let wait = Wait { user_id, run_key: waiter.run_key, run_limits, event_id, step: &waiter.step };
        let (message_id, error) = resolve(context, wait, &waiter.on_event, Some(data), now, effects)?;
        woke.push(Notified { waiter: serde_json::from_str(&waiter.view)?, message_id, error });
    }
    Ok(NotifyOutcome::Woke(woke))
}

pub fn expire(
    context: Context<'_>,
    now: i64,
    limit: usize,
    run_limits: RunLimits,
    effects: &mut Effects,
) -> Result<u64> {
    let Context { connection, scheduling, next_seq } = context;
    let due: Vec<Stored> = connection
        .prepare_cached(&format!(
            "SELECT {STORED_COLUMNS} FROM workflow_waiters INDEXED BY workflow_waiters_deadline
             WHERE deadline <= ?1 ORDER BY deadline LIMIT ?2"
        ))?
        .query_map(params![now, limit as i64], stored_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    for waiter in &due {
        connection.prepare_cached("DELETE FROM workflow_waiters WHERE waiter_key = ?1")?.execute([waiter.key])?;
        let context = Context { connection, scheduling, next_seq: &mut *next_seq };
        let wait = Wait {
            user_id: &waiter.user_id,
            run_key: waiter.run_key,
            run_limits,
            event_id: &waiter.event_id,
            step: &waiter.step,
        };
        resolve(context, wait, &waiter.on_timeout, None, now, effects)?;
    }
    Ok(due.len() as u64)
}

/// Forgets what an ended run waited for and the events it did not take.
pub fn forget_run(connection: &Connection, run_key: i64) -> Result<()> {
    connection.prepare_cached("DELETE FROM workflow_waiters WHERE run_key = ?1")?.execute([run_key])?;
    connection.prepare_cached("DELETE FROM workflow_events WHERE run_key = ?1")?.execute([run_key])?;
    Ok(())
}

pub fn waiters(
    connection: &Connection,
    user_id: &str,
    event_id: &str,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<WaiterView>> {
    let mut statement = connection.prepare_cached(
        "SELECT view FROM workflow_waiters WHERE user_id = ?1 AND event_id = ?2 ORDER BY waiter_key LIMIT ?3",
    )?;
    let mut rows = statement.query(params![user_id, event_id, limit as i64])?;
    let (mut views, mut bytes) = (Vec::new(), 0usize);
    while let Some(row) = rows.next()? {
        let view: String = row.get(0)?;
        if !views.is_empty() && bytes.saturating_add(view.len()) > max_bytes {
            break;
        }
        bytes += view.len();
        views.push(serde_json::from_str(&view)?);
    }
    Ok(views)
}

pub fn next_deadline(connection: &Connection) -> Result<Option<i64>> {
    Ok(connection.prepare_cached("SELECT min(deadline) FROM workflow_waiters")?.query_row([], |row| row.get(0))?)
}
