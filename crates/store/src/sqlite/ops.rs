//! The writer's message operations: inserts (deduplication, DLQ replacement, sequence numbers),
//! the record of attempts, and cancels.

use super::query::{SqlFilter, message_filter};
use super::rows::{LogRow, LoggedResponse, callback_source, headers_json, insert_logs, insert_message};
use super::run_records::{self, Admission};
use super::schema::FIRST_TERMINAL_STATE;
use super::workflow_ops;
use super::writer::{Context, Effects};
use crate::error::{Result, StoreError};
use crate::model::*;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use std::collections::HashSet;
use std::sync::Arc;
use tern_core::{LogState, Message, MessageId, MessageState};

/// Messages due within this horizon of their insertion hand their payload to the scheduler.
const PAYLOAD_HORIZON_MS: i64 = 5_000;

fn log<'a>(user_id: &'a str, message_id: &'a str, time: i64, state: LogState) -> LogRow<'a> {
    LogRow { user_id, message_id, time, state, error: None, next_delivery_time: None, response: None }
}

pub fn log_attempt_started(connection: &Connection, user_id: &str, id: MessageId, at: i64) -> Result<()> {
    insert_logs(connection, &[log(user_id, &id.to_string(), at, LogState::Active)])
}

/// Who holds the user's deduplication key at `now` (a message id, or a schedule id for the
/// schedule keys), if its claim has not expired.
pub fn claimed_dedup(connection: &Connection, user_id: &str, key: &str, now: i64) -> Result<Option<String>> {
    Ok(connection
        .prepare_cached("SELECT message_id FROM dedup WHERE user_id = ?1 AND key = ?2 AND expires_at > ?3")?
        .query_row(params![user_id, key, now], |row| row.get(0))
        .optional()?)
}

/// Claims the key for `holder` until the claim's expiry.
pub fn claim_dedup(connection: &Connection, user_id: &str, claim: &DedupClaim, holder: &str) -> Result<()> {
    connection
        .prepare_cached("INSERT OR REPLACE INTO dedup (user_id, key, message_id, expires_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![user_id, claim.key, holder, claim.expires_at])?;
    Ok(())
}

pub fn insert_messages(
    context: Context<'_>,
    messages: Vec<NewMessage>,
    effects: &mut Effects,
) -> Result<Vec<InsertOutcome>> {
    insert_into_run(context, messages, None, effects)
}

/// [`insert_messages`] for messages the store makes itself for run `own_run` (a wait's result,
/// an invoke's reply): they go to that run, not to the latest with their run id.
pub fn insert_into_run(
    context: Context<'_>,
    messages: Vec<NewMessage>,
    own_run: Option<i64>,
    effects: &mut Effects,
) -> Result<Vec<InsertOutcome>> {
    let connection = context.connection;
    let mut outcomes = Vec::with_capacity(messages.len());
    for message in messages {
        let run_key = match run_records::admit(connection, &message, own_run)? {
            Admission::Admitted(key) => key,
            Admission::Refused(refused) => {
                outcomes.push(refused);
                continue;
            }
        };
        if let Some(dedup) = &message.dedup {
            let existing = claimed_dedup(connection, &message.user_id, &dedup.key, message.created_at)?;
            if let Some(id) = existing.and_then(|id| id.parse().ok()) {
                outcomes.push(InsertOutcome::Duplicate(id));
                continue;
            }
        }
        let mut body_from = None;
        if let Some(dlq_id) = &message.consumes_dlq_entry {
            let entry: Option<i64> = connection
                .prepare_cached(
                    "UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE user_id = ?1 AND dlq_id = ?2 RETURNING rowid",
                )?
                .query_row(params![message.user_id, dlq_id], |row| row.get(0))
                .optional()?;
            let Some(entry) = entry else {
                outcomes.push(InsertOutcome::DlqEntryGone);
                continue;
            };
            body_from = Some(entry);
        }
        if let Some(dedup) = &message.dedup {
            claim_dedup(connection, &message.user_id, dedup, &message.id.to_string())?;
        }
        store_new_message(connection, context.next_seq, message, body_from, run_key, effects)?;
        outcomes.push(InsertOutcome::Created);
    }
    Ok(outcomes)
}

/// Stores `message` (its spec's) with the body of the stored row `body_from`, copied within
/// SQLite, in workflow run `run_key`: the store's own copy of a message (a failure callback
/// called again).
pub fn insert_copy(
    context: Context<'_>,
    message: NewMessage,
    body_from: i64,
    run_key: i64,
    effects: &mut Effects,
) -> Result<()> {
    store_new_message(context.connection, context.next_seq, message, Some(body_from), Some(run_key), effects)
}

/// Inserts the row (creating its queue and flow-control key on first use, recording it in its
/// workflow run `run_key` as admitted), logs `CREATED` and schedules the message once committed.
/// With `body_from`, the body is that row's, copied within SQLite (a DLQ retry): the scheduler
/// then gets no payload, the body being read from the store when the message is due; so too
/// for a run's Init that takes up a failed run, whose body the store copies from its records.
fn store_new_message(
    connection: &Connection,
    next_seq: &mut u64,
    message: NewMessage,
    body_from: Option<i64>,
    run_key: Option<i64>,
    effects: &mut Effects,
) -> Result<()> {
    let seq = *next_seq;
    *next_seq += 1;
    let id = message.id.to_string();
    let run_key = run_records::start_run(connection, &message, run_key)?;
    insert_message(connection, &message, &id, seq, run_key)?;
    run_records::record(connection, &message, &id, run_key)?;
    let body_copied = body_from.is_some() || message.run.as_ref().is_some_and(|run| run.continues.is_some());
    if let Some(rowid) = body_from {
        connection
            .prepare_cached("UPDATE messages SET body = (SELECT body FROM messages WHERE rowid = ?1) WHERE id = ?2")?
            .execute(params![rowid, id])?;
    }
    insert_logs(
        connection,
        &[LogRow {
            next_delivery_time: Some(message.due_at),
            ..log(&message.user_id, &id, message.created_at, LogState::Created)
        }],
    )?;
    let spec = &message.spec;
    if let Some(queue) = &spec.queue_name {
        connection
            .prepare_cached(
                "INSERT OR IGNORE INTO queues (user_id, name, parallelism, paused, created_at, updated_at)
                 VALUES (?1, ?2, 1, 0, ?3, ?3)",
            )?
            .execute(params![message.user_id, queue, message.created_at])?;
    }
    if let Some(flow) = &spec.flow_control {
        connection
            .prepare_cached(
                "INSERT INTO flow_keys (user_id, key, parallelism, rate, period_secs) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id, key) DO UPDATE SET
                    parallelism = CASE WHEN pinned_parallelism THEN parallelism ELSE excluded.parallelism END,
                    rate = CASE WHEN pinned_rate THEN rate ELSE excluded.rate END,
                    period_secs = CASE WHEN pinned_rate THEN period_secs ELSE excluded.period_secs END",
            )?
            .execute(params![message.user_id, flow.key, flow.parallelism, flow.rate, flow.period_secs as i64])?;
    }
    let payload = (!body_copied && message.due_at <= message.created_at + PAYLOAD_HORIZON_MS).then(|| {
        Arc::new(Message {
            id: message.id,
            user_id: message.user_id.clone(),
            spec: message.spec.clone(),
            body: message.body.clone(),
            created_at: message.created_at,
            not_before: message.due_at,
            state: MessageState::Pending,
            retried: 0,
            due_at: Some(message.due_at),
            finished_at: None,
            dlq_id: None,
            last_response: None,
        })
    });
    effects.changes.push(Change::Scheduled(Scheduled {
        id: message.id,
        source: callback_source(&message.spec),
        user_id: message.user_id,
        due_at: message.due_at,
        seq,
        queue_name: message.spec.queue_name,
        flow_control: message.spec.flow_control,
        is_new: true,
        message: payload,
    }));
    Ok(())
}

/// Records how an attempt ended: the message's new state and response, and its log entries.
///
/// The row is updated only from the states an attempt can end in, so no read comes first: a
/// pending or retrying row takes the outcome; failing that, a row whose cancel waited for this
/// attempt (`CANCEL_REQUESTED`) becomes `CANCELED`, with no retry and no callback; a row that
/// is gone or already finished is left alone.
pub fn finish_attempt(context: Context<'_>, outcome: &AttemptOutcome, effects: &mut Effects) -> Result<()> {
    let connection = context.connection;
    let message = &outcome.message;
    let id = message.id.to_string();
    let at = outcome.finished_at;
    let response = &outcome.response;
    let retried = message.retried + 1;
    let user_id = message.user_id.as_str();
    let headers = headers_json(&response.headers);
    let update = |from: [MessageState; 2], state: MessageState, due_at: Option<i64>, dlq_id: Option<&str>| {
        let finished_at = state.is_terminal().then_some(at);
        connection
            .prepare_cached(
                "UPDATE messages SET state = ?2, due_at = ?3, retried = ?4, finished_at = ?5, dlq_id = ?6,
                    dlq_at = CASE WHEN ?6 IS NULL THEN NULL ELSE ?5 END,
                    response_status = ?7, response_headers = ?8, response_body = ?9, response_error = ?10
                 WHERE id = ?1 AND state IN (?11, ?12)",
            )?
            .execute(params![
                id,
                state.code(),
                due_at,
                retried,
                finished_at,
                dlq_id,
                response.status,
                headers,
                response.body.as_ref(),
                response.error,
                from[0].code(),
                from[1].code(),
            ])
            .map(|rows| rows > 0)
    };
    let (state, due_at, dlq_id) = match &outcome.next {
        NextStep::Delivered => (MessageState::Delivered, None, None),
        NextStep::Retry { at: retry_at } => (MessageState::Retry, Some(*retry_at), None),
        NextStep::Failed { dlq_id } => (MessageState::Failed, None, Some(dlq_id.as_str())),
    };
    let cancelled = if update([MessageState::Pending, MessageState::Retry], state, due_at, dlq_id)? {
        false
    } else if update([MessageState::CancelRequested; 2], MessageState::Canceled, None, None)? {
        true
    } else {
        effects.changes.push(Change::Finished { id: message.id });
        return Ok(());
    };
    let logged = LoggedResponse { status: response.status, headers: headers.as_deref(), body: &response.body };
    // ACTIVE (unless logged while the attempt ran), then what the attempt led to, appended in
    // one call: one statement-cache lookup for them all (one per call measured 1 % more of the
    // writer's instructions).
    let mut logs = Vec::with_capacity(3);
    if let Some(active_at) = outcome.active_at {
        logs.push(log(user_id, &id, active_at, LogState::Active));
    }
    let error_log = LogRow {
        error: Some(response.error.as_deref().unwrap_or("delivery failed")),
        response: Some(logged),
        ..log(user_id, &id, at, LogState::Error)
    };

    if cancelled {
        if outcome.next != NextStep::Delivered {
            logs.push(error_log);
        }
        logs.push(log(user_id, &id, at, LogState::Canceled));
        insert_logs(connection, &logs)?;
        effects.changes.push(Change::Finished { id: message.id });
        return Ok(());
    }
    match &outcome.next {
        NextStep::Delivered => {
            logs.push(LogRow { response: Some(logged), ..log(user_id, &id, at, LogState::Delivered) });
            effects.changes.push(Change::Finished { id: message.id });
        }
        NextStep::Retry { at: retry_at } => {
            let retry_at = *retry_at;
            logs.push(error_log);
            logs.push(LogRow { next_delivery_time: Some(retry_at), ..log(user_id, &id, at, LogState::Retry) });
            let mut retrying = Message::clone(message);
            retrying.state = MessageState::Retry;
            retrying.retried = retried;
            retrying.due_at = Some(retry_at);
            retrying.last_response = Some(response.clone());
            let payload = (retry_at <= at + PAYLOAD_HORIZON_MS).then(|| Arc::new(retrying));
            effects.changes.push(Change::Scheduled(scheduled(message, retry_at, payload)));
        }
        NextStep::Failed { .. } => {
            logs.push(error_log);
            logs.push(LogRow { state: LogState::Failed, ..error_log });
            effects.changes.push(Change::Finished { id: message.id });
        }
    }
    insert_logs(connection, &logs)?;
    // What the message does to its run, and its callbacks, reach its own run.
    let run_key = match &message.spec.workflow {
        Some(_) => run_records::run_of_message(connection, &id)?,
        None => None,
    };
    if let (NextStep::Failed { dlq_id }, Some(link), Some(key)) = (&outcome.next, &message.spec.workflow, run_key)
        && link.call_type.continues_run()
    {
        let finished = effects.changes.pop();
        let context = Context { connection, scheduling: context.scheduling, next_seq: &mut *context.next_seq };
        workflow_ops::fail_run(context, key, &id, dlq_id, at, effects)?;
        effects.changes.extend(finished);
    }
    // The scheduler must learn of the callbacks before the source's final change, so that a
    // queue message keeps its place until its callbacks finished.
    let callbacks: Vec<NewMessage> =
        [&outcome.callback, &outcome.failure_callback].into_iter().flatten().cloned().collect();
    if !callbacks.is_empty() {
        let finished = effects.changes.pop();
        for callback in callbacks {
            // A callback continuing a run that has ended meanwhile has nothing left to do.
            if let Admission::Admitted(key) = run_records::admit(connection, &callback, run_key)? {
                store_new_message(connection, context.next_seq, callback, None, key, effects)?;
            }
        }
        effects.changes.extend(finished);
    }
    Ok(())
}

/// A message's scheduling facts for a retry (or a re-attempt), keeping its place and payload.
fn scheduled(message: &Message, due_at: i64, payload: Option<Arc<Message>>) -> Scheduled {
    Scheduled {
        id: message.id,
        user_id: message.user_id.clone(),
        due_at,
        seq: 0,
        queue_name: message.spec.queue_name.clone(),
        flow_control: message.spec.flow_control.clone(),
        source: callback_source(&message.spec),
        is_new: false,
        message: payload,
    }
}

pub fn cancel(
    context: Context<'_>,
    user_id: &str,
    selection: CancelSelection,
    now: i64,
    effects: &mut Effects,
) -> Result<CancelOutcome> {
    let connection = context.connection;
    let candidates: Vec<(String, i64)> = match selection {
        CancelSelection::Ids(ids) => {
            let mut statement =
                connection.prepare_cached("SELECT id, state FROM messages WHERE id = ?1 AND user_id = ?2")?;
            let mut found = Vec::new();
            for id in ids {
                found.extend(
                    statement
                        .query_row(params![id.to_string(), user_id], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()?,
                );
            }
            found
        }
        CancelSelection::Filter { filter, limit } => {
            let mut sql = SqlFilter::new("m.user_id = ?", user_id.to_string());
            sql.push_raw(&format!("m.state < {FIRST_TERMINAL_STATE}"));
            // A message whose cancel already waits for its running attempt is not selected (nor
            // counted) again: a `limit` always reaches the next message, and a caller who
            // cancels until nothing is left gets there.
            sql.push_raw(&format!("m.state <> {}", MessageState::CancelRequested.code()));
            message_filter(&mut sql, &filter, "m", Some("m.created_at"));
            let limit = limit.map(|n| n as i64).unwrap_or(-1);
            let query =
                format!("SELECT m.id, m.state FROM messages m WHERE {} ORDER BY m.seq LIMIT {limit}", sql.clause());
            let mut statement = connection.prepare(&query)?;
            let rows = statement.query_map(params_from_iter(sql.params()), |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        }
    };
    // An attempt whose retry was recorded earlier in this batch has ended, although the
    // scheduler (which hears of the batch only after the commit) still counts it running.
    let retried_in_batch: HashSet<MessageId> = effects
        .changes
        .iter()
        .filter_map(|change| match change {
            Change::Scheduled(scheduled) if !scheduled.is_new => Some(scheduled.id),
            _ => None,
        })
        .collect();
    let mut outcome = CancelOutcome::default();
    for (id, state) in candidates {
        outcome.found += 1;
        let state = MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?;
        if state.is_terminal() {
            continue;
        }
        outcome.cancelled += 1;
        if state == MessageState::CancelRequested {
            continue;
        }
        let message_id: MessageId = id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?;
        insert_logs(connection, &[log(user_id, &id, now, LogState::CancelRequested)])?;
        let running = !retried_in_batch.contains(&message_id)
            && context.scheduling.is_some_and(|scheduling| scheduling.hold_for_cancel(message_id));
        if running {
            connection
                .prepare_cached("UPDATE messages SET state = ?2 WHERE id = ?1")?
                .execute(params![id, MessageState::CancelRequested.code()])?;
        } else {
            effects.held.push(message_id);
            connection
                .prepare_cached("UPDATE messages SET state = ?2, finished_at = ?3, due_at = NULL WHERE id = ?1")?
                .execute(params![id, MessageState::Canceled.code(), now])?;
            insert_logs(connection, &[log(user_id, &id, now, LogState::Canceled)])?;
            effects.changes.push(Change::Finished { id: message_id });
        }
    }
    Ok(outcome)
}

/// Deletes a queue and cancels its unfinished messages. Returns whether it existed.
pub fn delete_queue(context: Context<'_>, user_id: &str, name: &str, now: i64, effects: &mut Effects) -> Result<bool> {
    let existed = context
        .connection
        .prepare_cached("DELETE FROM queues WHERE user_id = ?1 AND name = ?2")?
        .execute(params![user_id, name])?
        > 0;
    let filter = MessageFilter { queue_names: vec![name.to_string()], ..MessageFilter::default() };
    cancel(context, user_id, CancelSelection::Filter { filter: Box::new(filter), limit: None }, now, effects)?;
    Ok(existed)
}
