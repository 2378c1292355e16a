//! Waiters and run-scoped events on PostgreSQL: registering a wait (consuming an event that
//! came first), notifying, expiring deadlines — each resolution publishing the wait step's
//! result to its run in the same commit — and the reads behind `GET /v2/waiters`.

use super::client::GenericClient;
use super::writer::Context;
use super::{ops, run_records};
use crate::batch::Effects;
use crate::error::Result;
use crate::model::{Change, InsertOutcome, NewMessage};
use crate::workflows::{Event, NewWaiter, Notified, NotifyOutcome, RunLimits, WaitOutcome, WaiterView};
use bytes::Bytes;
use tern_core::workflow::{RunState, wait_step_body};
use tern_core::{MessageId, MessageSpec};
use tokio_postgres::Row;

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

fn stored_from_row(row: &Row) -> Result<Stored> {
    Ok(Stored {
        key: row.try_get(0)?,
        run_key: row.try_get(1)?,
        user_id: row.try_get(2)?,
        event_id: row.try_get(3)?,
        step: row.try_get(4)?,
        on_event: row.try_get(5)?,
        on_timeout: row.try_get(6)?,
        view: row.try_get(7)?,
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
async fn resolve(
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
    let outcome = ops::insert_into_run(context, vec![message], Some(run_key), effects).await?;
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

pub async fn add_waiter(context: Context<'_>, waiter: &NewWaiter, effects: &mut Effects) -> Result<WaitOutcome> {
    let tx = context.tx;
    let run = run_records::latest_run(tx, &waiter.user_id, &waiter.run_id).await?;
    let Some((run_key, RunState::RunStarted)) = run else {
        return Ok(WaitOutcome::RunNotActive);
    };
    let waiting: i64 = tx
        .query_one("SELECT count(*) FROM workflow_waiters WHERE user_id = $1", &[&waiter.user_id])
        .await?
        .try_get(0)?;
    if waiting as usize >= waiter.max_waiters {
        return Ok(WaitOutcome::TooManyWaiters);
    }
    let on_event = serde_json::to_string(&waiter.on_event)?;
    // A webhook's call, which came without a token, is only for a wait for a webhook.
    let event = tx
        .query_opt(
            "SELECT event_key, data FROM workflow_events WHERE run_key = $1 AND event_id = $2 AND webhook <= $3
             ORDER BY event_key LIMIT 1",
            &[&run_key, &waiter.event_id, &waiter.webhook],
        )
        .await?;
    if let Some(event) = event {
        let (key, data): (i64, Vec<u8>) = (event.try_get(0)?, event.try_get(1)?);
        tx.execute("DELETE FROM workflow_events WHERE event_key = $1", &[&key]).await?;
        let wait = Wait {
            user_id: &waiter.user_id,
            run_key,
            run_limits: waiter.run_limits,
            event_id: &waiter.event_id,
            step: &waiter.step,
        };
        let (id, _) = resolve(context, wait, &on_event, Some(&data), waiter.created_at, effects).await?;
        return Ok(WaitOutcome::Resolved(id));
    }
    tx.execute(
        "INSERT INTO workflow_waiters (user_id, event_id, run_id, run_key, created_at, deadline, step, on_event,
            on_timeout, view, webhook)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &waiter.user_id,
            &waiter.event_id,
            &waiter.run_id,
            &run_key,
            &waiter.created_at,
            &waiter.deadline,
            &waiter.step,
            &on_event,
            &serde_json::to_string(&waiter.on_timeout)?,
            &serde_json::to_string(&waiter.view)?,
            &waiter.webhook,
        ],
    )
    .await?;
    Ok(WaitOutcome::Waiting)
}

pub async fn notify(
    context: Context<'_>,
    event: &Event,
    now: i64,
    max_stored: usize,
    run_limits: RunLimits,
    effects: &mut Effects,
) -> Result<NotifyOutcome> {
    let tx = context.tx;
    let (user_id, event_id, run_id) = (event.user_id.as_str(), event.event_id.as_str(), event.run_id.as_deref());
    let (data, webhook) = (&event.data[..], event.from_webhook);
    // A run-scoped event is for the running run with that id.
    let run_key = match run_id {
        Some(run_id) => match run_records::latest_run(tx, user_id, run_id).await? {
            Some((key, RunState::RunStarted)) => Some(key),
            _ => return Ok(NotifyOutcome::RunNotActive),
        },
        None => None,
    };
    let waiters: Vec<Stored> = tx
        .query(
            &format!(
                "SELECT {STORED_COLUMNS} FROM workflow_waiters
                 WHERE user_id = $1 AND event_id = $2 AND ($3::BIGINT IS NULL OR run_key = $3) AND webhook >= $4
                 ORDER BY waiter_key"
            ),
            &[&user_id, &event_id, &run_key, &webhook],
        )
        .await?
        .iter()
        .map(stored_from_row)
        .collect::<Result<_>>()?;
    if waiters.is_empty() {
        let Some(run_key) = run_key else { return Ok(NotifyOutcome::Woke(Vec::new())) };
        // Counted by kind: webhook calls cannot crowd out the run's own notifies.
        let stored: i64 = tx
            .query_one(
                "SELECT count(*) FROM workflow_events WHERE run_key = $1 AND webhook = $2",
                &[&run_key, &webhook],
            )
            .await?
            .try_get(0)?;
        if stored as usize >= max_stored {
            return Ok(NotifyOutcome::TooManyStored);
        }
        tx.execute(
            "INSERT INTO workflow_events (run_key, event_id, created_at, data, webhook) VALUES ($1, $2, $3, $4, $5)",
            &[&run_key, &event_id, &now, &data, &webhook],
        )
        .await?;
        return Ok(NotifyOutcome::Stored);
    }
    let mut woke = Vec::with_capacity(waiters.len());
    for waiter in waiters {
        tx.execute("DELETE FROM workflow_waiters WHERE waiter_key = $1", &[&waiter.key]).await?;
        let wait = Wait { user_id, run_key: waiter.run_key, run_limits, event_id, step: &waiter.step };
        let (message_id, error) = resolve(context, wait, &waiter.on_event, Some(data), now, effects).await?;
        woke.push(Notified { waiter: serde_json::from_str(&waiter.view)?, message_id, error });
    }
    Ok(NotifyOutcome::Woke(woke))
}

pub async fn expire(
    context: Context<'_>,
    now: i64,
    limit: usize,
    run_limits: RunLimits,
    effects: &mut Effects,
) -> Result<u64> {
    let tx = context.tx;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let due: Vec<Stored> = tx
        .query(
            &format!("SELECT {STORED_COLUMNS} FROM workflow_waiters WHERE deadline <= $1 ORDER BY deadline LIMIT $2"),
            &[&now, &limit],
        )
        .await?
        .iter()
        .map(stored_from_row)
        .collect::<Result<_>>()?;
    for waiter in &due {
        tx.execute("DELETE FROM workflow_waiters WHERE waiter_key = $1", &[&waiter.key]).await?;
        let wait = Wait {
            user_id: &waiter.user_id,
            run_key: waiter.run_key,
            run_limits,
            event_id: &waiter.event_id,
            step: &waiter.step,
        };
        resolve(context, wait, &waiter.on_timeout, None, now, effects).await?;
    }
    Ok(due.len() as u64)
}

/// Forgets what an ended run waited for and the events it did not take.
pub async fn forget_run(c: &impl GenericClient, run_key: i64) -> Result<()> {
    c.execute("DELETE FROM workflow_waiters WHERE run_key = $1", &[&run_key]).await?;
    c.execute("DELETE FROM workflow_events WHERE run_key = $1", &[&run_key]).await?;
    Ok(())
}

pub async fn waiters(
    c: &impl GenericClient,
    user_id: &str,
    event_id: &str,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<WaiterView>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            "SELECT view FROM workflow_waiters WHERE user_id = $1 AND event_id = $2 ORDER BY waiter_key LIMIT $3",
            &[&user_id, &event_id, &limit],
        )
        .await?;
    let (mut views, mut bytes) = (Vec::new(), 0usize);
    for row in &rows {
        let view: &str = row.try_get(0)?;
        if !views.is_empty() && bytes.saturating_add(view.len()) > max_bytes {
            break;
        }
        bytes += view.len();
        views.push(serde_json::from_str(view)?);
    }
    Ok(views)
}

pub async fn next_deadline(c: &impl GenericClient) -> Result<Option<i64>> {
    Ok(c.query_one("SELECT min(deadline) FROM workflow_waiters", &[]).await?.try_get(0)?)
}
