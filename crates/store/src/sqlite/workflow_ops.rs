//! The writer's operations that end workflow runs: failing a run with its message, ending or
//! cancelling runs — each with their unfinished messages, their waits, and the reply to the run
//! that invoked them. (Admitting and recording a run's messages is `run_records`.)

use super::ops;
use super::query::SqlFilter;
use super::run_records;
use super::schema::FIRST_TERMINAL_STATE;
use super::writer::{Context, Effects};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::workflows::{RunEnd, RunEndOutcome, RunFilter, RunInvoker};
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};
use tern_core::workflow::{CallType, InvokedEnd, RunState, invoke_result_body};
use tern_core::{MessageId, MessageState};

/// Run `key` fails with its message `failed` that failed for good (unless it ended already):
/// its other unfinished messages are cancelled, its waits forgotten and its invoker told.
pub fn fail_run(
    context: Context<'_>,
    key: i64,
    failed: &str,
    dlq_id: &str,
    at: i64,
    effects: &mut Effects,
) -> Result<()> {
    let Context { connection, scheduling, next_seq } = context;
    let user_id: Option<String> = connection
        .prepare_cached(
            "UPDATE workflow_runs SET state = ?2, completed_at = ?3, dlq_id = ?4, failed_message_id = ?5
             WHERE run_key = ?1 AND state = ?6 RETURNING user_id",
        )?
        .query_row(params![key, RunState::RunFailed.code(), at, dlq_id, failed, RunState::RunStarted.code()], |row| {
            row.get(0)
        })
        .optional()?;
    let Some(user_id) = user_id else { return Ok(()) };
    super::waiters::forget_run(connection, key)?;
    cancel_run_messages(
        Context { connection, scheduling, next_seq: &mut *next_seq },
        &user_id,
        key,
        at,
        false,
        effects,
    )?;
    reply_to_invoker(Context { connection, scheduling, next_seq }, key, InvokedEnd::Failed, at, effects)
}

/// Calls the failure function of the run that failed with DLQ entry `dlq_id` again: its failure
/// callback is stored anew (the body copied), in that run. Returns the run's id and creation
/// time; `None` when the entry is gone or the run had no failure callback.
pub fn call_failure_function_again(
    context: Context<'_>,
    user_id: &str,
    dlq_id: &str,
    now: i64,
    effects: &mut Effects,
) -> Result<Option<(String, i64)>> {
    let connection = context.connection;
    let Some(key) = run_records::failed_run_key(connection, user_id, dlq_id)? else { return Ok(None) };
    let (run_id, created_at, failure): (String, i64, Option<String>) = connection
        .prepare_cached("SELECT run_id, created_at, failure_message_id FROM workflow_runs WHERE run_key = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    let found: Option<(i64, String)> = match failure {
        Some(id) => connection
            .prepare_cached("SELECT rowid, spec FROM messages WHERE id = ?1 AND user_id = ?2")?
            .query_row(params![id, user_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?,
        None => None,
    };
    let Some((rowid, spec)) = found else { return Ok(None) };
    let message = NewMessage {
        id: MessageId::generate(),
        user_id: user_id.to_string(),
        spec: serde_json::from_str(&spec)?,
        body: bytes::Bytes::new(),
        created_at: now,
        due_at: now,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: None,
    };
    ops::insert_copy(context, message, rowid, key, effects)?;
    Ok(Some((run_id, created_at)))
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
    let (user_id, reply, invoker_key): (String, Option<String>, Option<i64>) = context
        .connection
        .prepare_cached("SELECT user_id, invoker_reply, invoker_run_key FROM workflow_runs WHERE run_key = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    let (Some(reply), Some(invoker_key)) = (reply, invoker_key) else { return Ok(()) };
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
        run_limits: None,
    };
    let connection = context.connection;
    let (id, body, at) = (message.id.to_string(), message.body.clone(), message.created_at);
    let outcomes = ops::insert_into_run(context, vec![message], Some(invoker_key), effects)?;
    if outcomes.first() == Some(&InsertOutcome::RunNotActive) {
        // The invoker has ended: nothing continues it, but its logs show how the run it
        // invoked ended (the reply as a record, never delivered).
        run_records::append(connection, invoker_key, &id, CallType::Step, at, &body)?;
    }
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
    let key = match run_records::latest_run(connection, user_id, run_id)? {
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
    super::waiters::forget_run(connection, key)?;
    let context = Context { connection, scheduling, next_seq: &mut *next_seq };
    cancel_run_messages(context, user_id, key, now, spare_running, effects)?;
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
    if !filter.urls.is_empty() {
        let test = match filter.url_exact {
            true => format!("{alias}.url = ?"),
            false => format!("substr({alias}.url, 1, length(?)) = ?"),
        };
        let tests = vec![format!("({test})"); filter.urls.len()].join(" OR ");
        let values = filter.urls.iter().flat_map(|url| {
            let twice = if filter.url_exact { 1 } else { 2 };
            std::iter::repeat_n(Value::Text(url.clone()), twice)
        });
        sql.push(&format!("({tests})"), values.collect::<Vec<_>>());
    }
    if !filter.message_ids.is_empty() {
        let marks = vec!["?"; filter.message_ids.len()].join(", ");
        sql.push(
            &format!(
                "EXISTS (SELECT 1 FROM workflow_steps s INDEXED BY workflow_steps_message
                 WHERE s.message_id IN ({marks}) AND s.run_key = {alias}.run_key)"
            ),
            filter.message_ids.iter().cloned().map(Value::Text),
        );
    }
    sql.push_in(&format!("{alias}.host"), &filter.hosts);
    sql.push_in(&format!("{alias}.path"), &filter.paths);
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
    key: i64,
    now: i64,
    spare_running: bool,
    effects: &mut Effects,
) -> Result<()> {
    let ids: Vec<String> = context
        .connection
        .prepare_cached(&format!(
            "SELECT id FROM messages INDEXED BY messages_workflow_run
             WHERE workflow_run_key = ?1 AND state < {FIRST_TERMINAL_STATE} AND state <> ?2 ORDER BY seq"
        ))?
        .query_map(params![key, MessageState::CancelRequested.code()], |row| row.get(0))?
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
