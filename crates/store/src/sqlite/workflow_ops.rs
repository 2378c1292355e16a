//! The writer's workflow operations: admitting and recording the messages of runs (an Init
//! creates its run, a step is appended to it), failing a run with its message, and ending or
//! cancelling runs with their unfinished messages.

use super::ops;
use super::query::SqlFilter;
use super::rows::labels_column;
use super::schema::FIRST_TERMINAL_STATE;
use super::writer::{Context, Effects};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::workflows::{Continuation, RunEnd, RunEndOutcome, RunFilter, RunInvoker};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use tern_core::workflow::{CallType, InvokedEnd, RunState, invoke_result_body};
use tern_core::{MessageId, MessageState};

/// The latest run with this id (its key and state), if there is one: a run id names one
/// started run at a time, and a new run once the last one ended.
pub fn latest_run(connection: &Connection, user_id: &str, run_id: &str) -> Result<Option<(i64, RunState)>> {
    let row: Option<(i64, i64)> = connection
        .prepare_cached(
            "SELECT run_key, state FROM workflow_runs WHERE user_id = ?1 AND run_id = ?2 ORDER BY run_key DESC LIMIT 1",
        )?
        .query_row(params![user_id, run_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    row.map(|(key, code)| {
        let state = RunState::from_code(code).ok_or_else(|| StoreError::Corrupt(format!("run state {code}")))?;
        Ok((key, state))
    })
    .transpose()
}

/// Whether `message` may be stored as far as its run is concerned: an Init names a new run
/// (or replaces the configuration of one), any other message of a run continues a started
/// one — except a failure callback, which reports on a run that has just failed. `Some` is
/// the refusal.
pub fn admit(connection: &Connection, message: &NewMessage) -> Result<Option<InsertOutcome>> {
    let Some(link) = &message.spec.workflow else {
        return Ok(None);
    };
    let state = latest_run(connection, &message.user_id, &link.run_id)?.map(|(_, state)| state);
    if let Some(run) = &message.run {
        let started = state == Some(RunState::RunStarted);
        if started && !run.replace {
            return Ok(Some(InsertOutcome::RunExists));
        }
        if let Some(continuation) = &run.continues
            && failed_run_key(connection, &message.user_id, &continuation.dlq_id)?.is_none()
        {
            return Ok(Some(InsertOutcome::DlqEntryGone));
        }
        return Ok(None);
    }
    if link.call_type == CallType::FailureCall {
        return Ok(None);
    }
    Ok((state != Some(RunState::RunStarted)).then_some(InsertOutcome::RunNotActive))
}

/// Records an admitted message of a run: an Init starts its run (or replaces the configuration
/// of the started one), a message continuing the run is appended to its steps.
pub fn record(connection: &Connection, message: &NewMessage, id: &str) -> Result<()> {
    let Some(link) = &message.spec.workflow else {
        return Ok(());
    };
    let latest = latest_run(connection, &message.user_id, &link.run_id)?;
    if link.call_type == CallType::FailureCall && message.run.is_none() {
        // Not a step: the run's failure callback, shown with the run.
        if let Some((key, _)) = latest {
            connection
                .prepare_cached("UPDATE workflow_runs SET failure_message_id = ?2 WHERE run_key = ?1")?
                .execute(params![key, id])?;
        }
        return Ok(());
    }
    let run_key = match (&message.run, latest) {
        (Some(run), Some((key, RunState::RunStarted))) if run.replace => {
            // The run keeps its initial payload; only its configuration changes.
            connection
                .prepare_cached("UPDATE workflow_runs SET config = ?2, labels = ?3 WHERE run_key = ?1")?
                .execute(params![key, serde_json::to_string(&run.config)?, labels_column(&run.config.labels)])?;
            return Ok(());
        }
        (Some(run), _) => {
            connection
                .prepare_cached(
                    "INSERT INTO workflow_runs (user_id, run_id, url, created_at, state, config, labels, invoker,
                        caller_ip, flow_control_key, invoker_reply)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    message.user_id,
                    run.run_id,
                    run.url,
                    message.created_at,
                    RunState::RunStarted.code(),
                    serde_json::to_string(&run.config)?,
                    labels_column(&run.config.labels),
                    run.invoker.as_ref().map(|invoker| &invoker.view),
                    message.spec.caller_ip,
                    run.config.flow_control.as_ref().map(|flow| &flow.key),
                    run.invoker.as_ref().map(serde_json::to_string).transpose()?,
                ])?;
            let key = connection.last_insert_rowid();
            if let Some(continuation) = &run.continues
                && !take_up(connection, &message.user_id, continuation, key)?
            {
                // The Init carries the failed message again, with the steps before it copied.
                return Ok(());
            }
            key
        }
        (None, Some((key, RunState::RunStarted))) => key,
        // Not admitted (see `admit`): nothing to record.
        (None, _) => return Ok(()),
    };
    let position: i64 = connection
        .prepare_cached(
            "UPDATE workflow_runs SET step_count = step_count + 1, step_bytes = step_bytes + ?2
             WHERE run_key = ?1 RETURNING step_count - 1",
        )?
        .query_row(params![run_key, message.body.len() as i64], |row| row.get(0))?;
    connection
        .prepare_cached(
            "INSERT INTO workflow_steps (run_key, position, message_id, call_type, created_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![run_key, position, id, link.call_type.code(), message.created_at, message.body.as_ref()])?;
    Ok(())
}

/// The run that failed with the DLQ entry `dlq_id`, while the entry exists.
fn failed_run_key(connection: &Connection, user_id: &str, dlq_id: &str) -> Result<Option<i64>> {
    Ok(connection
        .prepare_cached(
            "SELECT r.run_key FROM workflow_runs r INDEXED BY workflow_runs_dlq
             WHERE r.dlq_id = ?1 AND r.user_id = ?2
               AND EXISTS (SELECT 1 FROM messages m WHERE m.dlq_id = ?1 AND m.user_id = ?2)",
        )?
        .query_row(params![dlq_id, user_id], |row| row.get(0))
        .optional()?)
}

/// Starts run `key` where the failed run of `continuation` was: with its initial payload
/// (restart), or with every step it recorded before the message that failed (resume), and
/// removes the DLQ entry. Returns whether the new run's Init must still be recorded: it is the
/// failed message again, recorded where that one was; a restarted run's Init is delivered with
/// the initial payload alone, the one record it sees.
fn take_up(connection: &Connection, user_id: &str, continuation: &Continuation, key: i64) -> Result<bool> {
    let failed = failed_run_key(connection, user_id, &continuation.dlq_id)?
        .ok_or_else(|| StoreError::Corrupt("a DLQ entry admitted for a resume is gone".into()))?;
    let failed_position: Option<i64> = connection
        .prepare_cached(
            "SELECT s.position FROM workflow_steps s JOIN messages m ON m.id = s.message_id
             WHERE s.run_key = ?1 AND m.dlq_id = ?2",
        )?
        .query_row(params![failed, continuation.dlq_id], |row| row.get(0))
        .optional()?;
    let (copied, record) = match failed_position {
        Some(position) if continuation.resume && position > 0 => (position, true),
        _ => (1, false),
    };
    connection
        .prepare_cached(
            "INSERT INTO workflow_steps (run_key, position, message_id, call_type, created_at, body)
             SELECT ?1, position, message_id, call_type, created_at, body FROM workflow_steps
             WHERE run_key = ?2 AND position < ?3",
        )?
        .execute(params![key, failed, copied])?;
    connection
        .prepare_cached(
            "UPDATE workflow_runs SET (step_count, step_bytes) =
                (SELECT count(*), coalesce(sum(length(body)), 0) FROM workflow_steps WHERE run_key = ?1)
             WHERE run_key = ?1",
        )?
        .execute([key])?;
    connection
        .prepare_cached("UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE user_id = ?1 AND dlq_id = ?2")?
        .execute(params![user_id, continuation.dlq_id])?;
    Ok(record)
}

/// The run of a message that failed for good (the started run with its id) fails with it,
/// unless it ended already; its other unfinished messages are cancelled.
pub fn fail_run(
    context: Context<'_>,
    user_id: &str,
    run_id: &str,
    dlq_id: &str,
    at: i64,
    effects: &mut Effects,
) -> Result<()> {
    let Context { connection, scheduling, next_seq } = context;
    let Some((key, RunState::RunStarted)) = latest_run(connection, user_id, run_id)? else {
        return Ok(());
    };
    connection
        .prepare_cached("UPDATE workflow_runs SET state = ?2, completed_at = ?3, dlq_id = ?4 WHERE run_key = ?1")?
        .execute(params![key, RunState::RunFailed.code(), at, dlq_id])?;
    super::waiters::forget_run(connection, user_id, run_id)?;
    cancel_run_messages(
        Context { connection, scheduling, next_seq: &mut *next_seq },
        user_id,
        run_id,
        at,
        false,
        effects,
    )?;
    reply_to_invoker(Context { connection, scheduling, next_seq }, key, InvokedEnd::Failed, at, effects)
}

/// Tells the run that invoked run `key` (if one did) how it ended: publishes the invoker's
/// step result (dropped when the invoker's run has ended too).
fn reply_to_invoker(
    context: Context<'_>,
    key: i64,
    end: InvokedEnd<'_>,
    now: i64,
    effects: &mut Effects,
) -> Result<()> {
    let (user_id, reply): (String, Option<String>) = context
        .connection
        .prepare_cached("SELECT user_id, invoker_reply FROM workflow_runs WHERE run_key = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let Some(reply) = reply else { return Ok(()) };
    let invoker: RunInvoker = serde_json::from_str(&reply)?;
    let invoked: serde_json::Value = serde_json::from_str(&invoker.invoked)?;
    let message = NewMessage {
        id: MessageId::generate(),
        user_id,
        spec: invoker.reply,
        body: invoke_result_body(&invoker.step, &invoked, end).into(),
        created_at: now,
        due_at: now,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
    };
    ops::insert_messages(context, vec![message], effects)?;
    Ok(())
}

/// Ends a started run (see `WorkflowStore::end_run`).
pub fn end_run(
    context: Context<'_>,
    user_id: &str,
    run_id: &str,
    end: RunEnd,
    now: i64,
    effects: &mut Effects,
) -> Result<RunEndOutcome> {
    let Context { connection, scheduling, next_seq } = context;
    let key = match latest_run(connection, user_id, run_id)? {
        None => return Ok(RunEndOutcome::NotFound),
        Some((key, RunState::RunStarted)) => key,
        Some((_, state)) => return Ok(RunEndOutcome::AlreadyEnded(state)),
    };
    let (state, response, spare_running, invoked_end) = match &end {
        RunEnd::Success { response } => {
            (RunState::RunSuccess, Some(response.as_ref()), true, InvokedEnd::Returned(response.as_ref()))
        }
        RunEnd::Canceled => (RunState::RunCanceled, None, false, InvokedEnd::Canceled),
    };
    connection
        .prepare_cached("UPDATE workflow_runs SET state = ?2, completed_at = ?3, response = ?4 WHERE run_key = ?1")?
        .execute(params![key, state.code(), now, response])?;
    super::waiters::forget_run(connection, user_id, run_id)?;
    let context = Context { connection, scheduling, next_seq: &mut *next_seq };
    cancel_run_messages(context, user_id, run_id, now, spare_running, effects)?;
    reply_to_invoker(Context { connection, scheduling, next_seq }, key, invoked_end, now, effects)?;
    Ok(RunEndOutcome::Ended)
}

/// Cancels the started runs matching `filter`, oldest first, at most `limit` of them.
pub fn cancel_runs(
    context: Context<'_>,
    user_id: &str,
    filter: &RunFilter,
    limit: Option<usize>,
    now: i64,
    effects: &mut Effects,
) -> Result<u64> {
    let Context { connection, scheduling, next_seq } = context;
    let mut sql = SqlFilter::new("r.user_id = ?", user_id.to_string());
    let started = RunFilter { states: vec![RunState::RunStarted], ..filter.clone() };
    run_filter(&mut sql, &started, "r");
    let limit = limit.map_or(-1, |n| n as i64);
    let query = format!(
        "SELECT r.run_id FROM workflow_runs r WHERE {} ORDER BY r.created_at, r.run_id LIMIT {limit}",
        sql.clause()
    );
    let run_ids: Vec<String> = connection
        .prepare(&query)?
        .query_map(params_from_iter(sql.params()), |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut cancelled = 0;
    for run_id in run_ids {
        let context = Context { connection, scheduling, next_seq: &mut *next_seq };
        if end_run(context, user_id, &run_id, RunEnd::Canceled, now, effects)? == RunEndOutcome::Ended {
            cancelled += 1;
        }
    }
    Ok(cancelled)
}

/// The conditions of `filter` on the runs table (aliased `alias`).
pub fn run_filter(sql: &mut SqlFilter, filter: &RunFilter, alias: &str) {
    sql.push_in(&format!("{alias}.run_id"), &filter.run_ids);
    if let Some(url) = &filter.url {
        if filter.url_exact {
            sql.push(&format!("{alias}.url = ?"), [Value::Text(url.clone())]);
        } else {
            sql.push(
                &format!("substr({alias}.url, 1, length(?)) = ?"),
                [Value::Text(url.clone()), Value::Text(url.clone())],
            );
        }
    }
    let states: Vec<i64> = filter.states.iter().map(|state| state.code()).collect();
    sql.push_in(&format!("{alias}.state"), &states);
    if !filter.labels.is_empty() {
        let labels = serde_json::to_string(&filter.labels).expect("labels serialise");
        sql.push(
            &format!(
                "EXISTS (SELECT 1 FROM json_each(?) WHERE instr({alias}.labels, ',' || json_each.value || ',') > 0)"
            ),
            [Value::Text(labels)],
        );
    }
    if let Some(created_at) = filter.created_at {
        sql.push(&format!("{alias}.created_at = ?"), [Value::Integer(created_at)]);
    }
    if let Some(from) = filter.from_ms {
        sql.push(&format!("{alias}.created_at >= ?"), [Value::Integer(from)]);
    }
    if let Some(to) = filter.to_ms {
        sql.push(&format!("{alias}.created_at <= ?"), [Value::Integer(to)]);
    }
    sql.push_in(&format!("{alias}.caller_ip"), &filter.caller_ips);
    sql.push_in(&format!("{alias}.flow_control_key"), &filter.flow_control_keys);
}

/// Cancels the unfinished messages of a run; with `spare_running`, not those whose attempt is
/// running (the delivery that ends the run successfully waits for its own answer).
fn cancel_run_messages(
    context: Context<'_>,
    user_id: &str,
    run_id: &str,
    now: i64,
    spare_running: bool,
    effects: &mut Effects,
) -> Result<()> {
    let ids: Vec<String> = context
        .connection
        .prepare_cached(&format!(
            "SELECT id FROM messages INDEXED BY messages_workflow_run
             WHERE user_id = ?1 AND workflow_run_id = ?2 AND state < {FIRST_TERMINAL_STATE} AND state <> ?3 ORDER BY seq"
        ))?
        .query_map(params![user_id, run_id, MessageState::CancelRequested.code()], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut selected = Vec::with_capacity(ids.len());
    for id in ids {
        let id: MessageId = id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?;
        // Asking holds a message that is not running, as the cancel itself would.
        let running = spare_running && context.scheduling.is_some_and(|scheduling| scheduling.hold_for_cancel(id));
        if !running {
            selected.push(id);
        }
    }
    if !selected.is_empty() {
        ops::cancel(context, user_id, CancelSelection::Ids(selected), now, effects)?;
    }
    Ok(())
}
