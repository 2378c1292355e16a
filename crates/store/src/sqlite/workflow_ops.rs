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
use crate::workflows::{RunEnd, RunEndOutcome, RunFilter};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use tern_core::workflow::{CallType, RunState};
use tern_core::{MessageId, MessageState};

/// The state of a run, if it exists.
pub fn run_state(connection: &Connection, user_id: &str, run_id: &str) -> Result<Option<RunState>> {
    let code: Option<i64> = connection
        .prepare_cached("SELECT state FROM workflow_runs WHERE user_id = ?1 AND run_id = ?2")?
        .query_row(params![user_id, run_id], |row| row.get(0))
        .optional()?;
    code.map(|code| RunState::from_code(code).ok_or_else(|| StoreError::Corrupt(format!("run state {code}"))))
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
    let state = run_state(connection, &message.user_id, &link.run_id)?;
    if let Some(run) = &message.run {
        return Ok((state.is_some() && !run.replace).then_some(InsertOutcome::RunExists));
    }
    if link.call_type == CallType::FailureCall {
        return Ok(None);
    }
    Ok((state != Some(RunState::RunStarted)).then_some(InsertOutcome::RunNotActive))
}

/// Records an admitted message of a run: creates the run of an Init (or replaces its
/// configuration), appends the message to its run's steps.
pub fn record(connection: &Connection, message: &NewMessage, id: &str) -> Result<()> {
    let Some(link) = &message.spec.workflow else {
        return Ok(());
    };
    if let Some(run) = &message.run {
        let config = serde_json::to_string(&run.config)?;
        let created = connection
            .prepare_cached(
                "INSERT INTO workflow_runs (user_id, run_id, url, created_at, state, config, labels, invoker,
                    caller_ip, flow_control_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (user_id, run_id) DO UPDATE SET config = excluded.config, labels = excluded.labels",
            )?
            .execute(params![
                message.user_id,
                run.run_id,
                run.url,
                message.created_at,
                RunState::RunStarted.code(),
                config,
                labels_column(&run.config.labels),
                run.invoker,
                message.spec.caller_ip,
                run.config.flow_control.as_ref().map(|flow| &flow.key),
            ])?;
        let steps: i64 = connection
            .prepare_cached("SELECT step_count FROM workflow_runs WHERE user_id = ?1 AND run_id = ?2")?
            .query_row(params![message.user_id, run.run_id], |row| row.get(0))?;
        if created == 0 || steps > 0 {
            // A replaced configuration: the run keeps its initial payload.
            return Ok(());
        }
    } else if link.call_type == CallType::FailureCall {
        return Ok(());
    }
    let position: i64 = connection
        .prepare_cached(
            "UPDATE workflow_runs SET step_count = step_count + 1, step_bytes = step_bytes + ?3
             WHERE user_id = ?1 AND run_id = ?2 RETURNING step_count - 1",
        )?
        .query_row(params![message.user_id, link.run_id, message.body.len() as i64], |row| row.get(0))?;
    connection
        .prepare_cached(
            "INSERT INTO workflow_steps (user_id, run_id, position, message_id, call_type, created_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            message.user_id,
            link.run_id,
            position,
            id,
            link.call_type.code(),
            message.created_at,
            message.body.as_ref()
        ])?;
    Ok(())
}

/// The run of a message that failed for good fails with it (unless it ended already); its
/// other unfinished messages are cancelled.
pub fn fail_run(context: Context<'_>, user_id: &str, run_id: &str, dlq_id: &str, at: i64, effects: &mut Effects) -> Result<()> {
    let failed = context
        .connection
        .prepare_cached(
            "UPDATE workflow_runs SET state = ?3, completed_at = ?4, dlq_id = ?5
             WHERE user_id = ?1 AND run_id = ?2 AND state = ?6",
        )?
        .execute(params![user_id, run_id, RunState::RunFailed.code(), at, dlq_id, RunState::RunStarted.code()])?;
    if failed > 0 {
        cancel_run_messages(context, user_id, run_id, at, false, effects)?;
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
    then: Vec<NewMessage>,
    effects: &mut Effects,
) -> Result<RunEndOutcome> {
    let Context { connection, scheduling, next_seq } = context;
    match run_state(connection, user_id, run_id)? {
        None => return Ok(RunEndOutcome::NotFound),
        Some(RunState::RunStarted) => {}
        Some(state) => return Ok(RunEndOutcome::AlreadyEnded(state)),
    }
    let (state, response, spare_running) = match &end {
        RunEnd::Success { response } => (RunState::RunSuccess, Some(response.as_ref()), true),
        RunEnd::Canceled => (RunState::RunCanceled, None, false),
    };
    connection
        .prepare_cached(
            "UPDATE workflow_runs SET state = ?3, completed_at = ?4, response = ?5 WHERE user_id = ?1 AND run_id = ?2",
        )?
        .execute(params![user_id, run_id, state.code(), now, response])?;
    let context = Context { connection, scheduling, next_seq: &mut *next_seq };
    cancel_run_messages(context, user_id, run_id, now, spare_running, effects)?;
    if !then.is_empty() {
        ops::insert_messages(Context { connection, scheduling, next_seq }, then, effects)?;
    }
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
    let query = format!("SELECT r.run_id FROM workflow_runs r WHERE {} ORDER BY r.created_at, r.run_id LIMIT {limit}", sql.clause());
    let run_ids: Vec<String> = connection
        .prepare(&query)?
        .query_map(params_from_iter(sql.params()), |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut cancelled = 0;
    for run_id in run_ids {
        let context = Context { connection, scheduling, next_seq: &mut *next_seq };
        if end_run(context, user_id, &run_id, RunEnd::Canceled, now, Vec::new(), effects)? == RunEndOutcome::Ended {
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
            &format!("EXISTS (SELECT 1 FROM json_each(?) WHERE instr({alias}.labels, ',' || json_each.value || ',') > 0)"),
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
